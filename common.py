"""
What every script shares that is neither the model nor the training loop: the device, the
precision, and how a user's mistake is reported.

1. User errors: `UserError` is the base class of every problem a user can fix (a bad option, a
   missing dataset or checkpoint, a failed download). Each module that can raise one derives its
   own from it: `ConfigError` here, `CheckpointError` in checkpoint.py, `DataError` in data.py,
   `DownloadError` in download.py, `TrainingError` in train.py. `run_command()` runs a script's
   main() and turns exactly those into one line naming the fix; any other exception is a bug and
   keeps its whole traceback. It also stops quietly when the reader of stdout goes away, and
   ends a process that torchrun started (`started_by_torchrun()`) without the interpreter's
   shutdown, which gloo's threads could abort.
2. Device and dtype: which device to run on (cuda, then mps, then cpu), which precision
   (bfloat16 where the GPU supports it, float16 on older GPUs, float32 elsewhere), the autocast
   context that applies it, a `synchronize()` that is a no-op on CPU so timing code has no
   `if cuda` branches, and `peak_flops()` for model-FLOPs-utilisation (MFU).
3. Files written whole: `open_atomic()` / `write_atomic()`, the one way every checkpoint,
   dataset file, meta.json, exported weight file and summary is written (temporary file, fsync,
   rename, directory fsync), so a crash at any moment leaves the old file or the new one, never
   half of one; `fsync_file()` and `fsync_directory()` give the appended metrics log and a
   finished download the same durability at their last step.

Config parsing is in configurator.py, checkpoints in checkpoint.py, data in data.py.
Design choices: plain functions with explicit arguments (tests call them directly), no work at
import time.
"""

import contextlib
import os
import sys
from pathlib import Path

import torch

# -----------------------------------------------------------------------------
# User errors


class UserError(Exception):
    """A problem the user can fix. The message names what went wrong and what to do about it."""


class ConfigError(UserError):
    """A setting that cannot be used: unknown key, wrong type, value out of range, no such device."""


def started_by_torchrun():
    """Whether torchrun started this process: it sets RANK, LOCAL_RANK and WORLD_SIZE in the
    environment of each process it starts."""
    return "RANK" in os.environ


def run_command(main):
    """Run main() for a script's `if __name__ == "__main__"`; return the exit status.

    A UserError's message already names the problem and the fix, so it is printed as one line
    (exit status 1). Anything else is a bug, in this code or in a library, and keeps its
    traceback: catching a broad built-in such as ValueError here would hide those. A reader that
    closes stdout early (a pipe into `head`) ends the script quietly with status 1.

    Under torchrun (RANK set) the process then ends with os._exit, once its output is flushed,
    skipping the interpreter's shutdown. gloo's worker threads (the CPU backend) can still be
    releasing the last collective's tensors when main() returns; a thread that asks for the GIL
    while Python shuts down is killed, and killing it inside a C++ destructor aborts the process
    ("terminate called without an active exception", exit -6), failing a run whose work and
    files were all done. By then every checkpoint and log line is written and closed.
    """
    status = 0
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        status = 1
    except BrokenPipeError:
        # Whoever read stdout stopped (`python sample.py | head`): stop quietly, as Unix tools
        # do. Python would print a traceback, and again when it flushes stdout at exit; pointing
        # stdout at /dev/null silences that second one (the recipe in Python's `signal` docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    if started_by_torchrun():  # see above
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


# -----------------------------------------------------------------------------
# Device and dtype

DTYPES = ("float32", "bfloat16", "float16")


def pick_device(device="auto"):
    """Return the device string to use: `device` itself, or for "auto" the best available.

    cuda first (by far the fastest), then Apple's mps, then cpu. Asking for a device that is
    not there is an error now rather than a confusing failure on the first tensor op.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    device_type = device.split(":")[0]
    if device_type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={device!r} is not a device this code runs on; "
                          "use --device=auto, cpu, cuda (or cuda:N) or mps")
    if device_type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was requested but CUDA is not available; "
                          "use --device=cpu or --device=auto")
    if device_type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={device!r} was requested but MPS is not available; "
                          "use --device=cpu or --device=auto")
    return device


def pick_dtype(device, dtype="auto"):
    """Return the compute dtype name ("bfloat16", "float16" or "float32") for `device`.

    bfloat16 has float32's exponent range, so it trains without loss scaling; it needs an
    Ampere-or-newer GPU. Older GPUs get float16, which is fast but can overflow, so train.py
    must pair it with a GradScaler. CPU and MPS stay in float32: reduced precision there is
    slower or unsupported for many ops, and small CPU runs are about correctness, not speed.
    """
    if dtype != "auto":
        if dtype not in DTYPES:
            raise ConfigError(f"dtype={dtype!r} is not supported; use one of {', '.join(DTYPES)} or auto")
        if dtype != "float32" and device.split(":")[0] == "cpu":
            # Allowed (CPU autocast supports both), but only CPUs with native 16-bit arithmetic
            # (e.g. AMX) gain from it; others convert back and forth. A quick-start training
            # step on an AVX2 AMD EPYC: 40 ms in float32, ~500 ms in bfloat16, ~600 in float16.
            print(f"warning: {dtype} on a CPU is much slower than float32 unless the processor "
                  "has native 16-bit arithmetic; use --dtype=float32 (or auto)", file=sys.stderr)
        return dtype
    if device.split(":")[0] == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def autocast(device, dtype):
    """Context manager that runs matmuls in `dtype` (weights and optimizer stay float32).

    Autocast is "mixed" precision: matmuls and convolutions run in the low-precision dtype
    while reductions such as softmax and layer norm stay in float32, where precision matters.
    For float32 there is nothing to do, so we return a do-nothing context.
    """
    if dtype == "float32":
        return contextlib.nullcontext()
    device_type = device.split(":")[0]
    return torch.autocast(device_type=device_type, dtype=getattr(torch, dtype))


def synchronize(device):
    """Wait until all queued GPU work is done (GPU calls return before the work finishes).

    Without this, timing a step measures how fast Python queues kernels, not how fast they run.
    On CPU work is synchronous already, so this is a no-op and callers need no `if cuda` branch.
    """
    device_type = device.split(":")[0]
    if device_type == "cuda":
        torch.cuda.synchronize(device)
    elif device_type == "mps":
        torch.mps.synchronize()


def allow_tf32(device):
    """On NVIDIA GPUs, let float32 matmuls use TensorFloat-32 (10-bit mantissa): several times
    faster, and precise enough for the float32 parts of mixed-precision training."""
    if device.split(":")[0] == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


# Peak dense (no 2:4 sparsity) tensor-core throughput in FLOP/s for 16-bit matmuls with
# float32 accumulation: bfloat16 where the GPU has it, float16 on V100 and T4 (no bfloat16).
# MFU = achieved FLOP/s / this number. Vendor datasheets often print the "with sparsity"
# figure, which is twice the dense one; these are the dense figures.
# Matching is by substring of torch.cuda.get_device_name(), first match wins, so more
# specific names come first ("H100 NVL" before "H100", "L40S" before "L4", "A100" before "A10").
PEAK_FLOPS_BF16 = (
    # (name substring, FLOP/s, source)
    ("H100 NVL", 835e12, "NVIDIA H100 datasheet, H100 NVL: 1,671 TFLOPS bf16 with sparsity / 2"),
    ("H100 PCIe", 756e12, "NVIDIA H100 datasheet, H100 PCIe: 1,513 TFLOPS bf16 with sparsity / 2"),
    ("H100", 989.4e12, "NVIDIA H100 datasheet, H100 SXM: 1,979 TFLOPS bf16 with sparsity / 2"),
    ("H200", 989.4e12, "NVIDIA H200 datasheet: 1,979 TFLOPS bf16 with sparsity / 2"),
    ("A100", 312e12, "NVIDIA A100 datasheet: 312 TFLOPS bf16 dense (SXM and PCIe)"),
    ("L40S", 362.05e12, "NVIDIA L40S datasheet: 733 TFLOPS bf16 with sparsity / 2"),
    ("L40", 181.05e12, "NVIDIA L40 datasheet: 362.1 TFLOPS bf16 with sparsity / 2"),
    ("L4", 121e12, "NVIDIA L4 datasheet: 242 TFLOPS bf16 with sparsity / 2"),
    ("A10G", 125e12, "AWS A10G: no NVIDIA datasheet; assumed equal to the A10 (may be lower)"),
    ("A10", 125e12, "NVIDIA A10 datasheet: 125 TFLOPS bf16 dense"),
    ("RTX 4090", 165.2e12, "NVIDIA Ada Lovelace whitepaper: 165.2 TFLOPS bf16, fp32 accumulate"),
    ("RTX 3090", 71e12, "NVIDIA Ampere GA102 whitepaper: 71 TFLOPS bf16, fp32 accumulate"),
    ("V100", 125e12, "NVIDIA V100 datasheet: 125 TFLOPS fp16 tensor (no bf16 on V100)"),
    ("T4", 65e12, "NVIDIA T4 datasheet: 65 TFLOPS fp16 tensor (no bf16 on T4)"),
)


def peak_flops_for_name(gpu_name):
    """Return the peak dense 16-bit FLOP/s for a GPU name, or None if it is not in the table."""
    for substring, flops, _source in PEAK_FLOPS_BF16:
        if substring.lower() in gpu_name.lower():
            return flops
    return None


def peak_flops(device):
    """Return the peak dense bf16 FLOP/s of the GPU behind `device`, or None.

    None on CPU and MPS (no meaningful published peak) and for GPUs not in the table; callers
    should then skip MFU rather than report a made-up number.
    """
    if device.split(":")[0] != "cuda":
        return None
    return peak_flops_for_name(torch.cuda.get_device_name(torch.device(device)))


# -----------------------------------------------------------------------------
# Files written whole


@contextlib.contextmanager
def open_atomic(path, mode="wb", encoding=None):
    """
    `with open_atomic(path) as f: ...` writes `path` so that nothing is ever half-written.

    A large file takes seconds to write; a run killed halfway (Ctrl-C, out of time, out of memory,
    a power cut) would leave a truncated file in place of the last good one. So the bytes go to a
    temporary file beside `path` (a rename across filesystems would be a copy), which is forced to
    disk (fsync) before os.replace renames it over `path`. The rename is atomic: readers see the
    old file or the new one, never half. If the block raises, the temporary file is removed and
    `path` is untouched. f.name is the temporary file, for a check before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()  # Python's buffer -> the OS
            os.fsync(f.fileno())  # the OS's cache -> the disk, before the rename makes it visible
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. KeyboardInterrupt: no leftover that looks like a file
        raise
    fsync_directory(path.parent)


def write_atomic(path, data):
    """Write bytes, or text as UTF-8, to path with open_atomic()."""
    with open_atomic(path, "w" if isinstance(data, str) else "wb",
                     encoding="utf-8" if isinstance(data, str) else None) as f:
        f.write(data)


def fsync_file(path):
    """Force a file written earlier to disk (the last step of an appended log or a download)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_directory(directory):
    """A rename is an entry in its directory: fsync the directory so the entry survives a power
    cut. (Windows cannot open a directory this way, and its rename is durable enough.)"""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
