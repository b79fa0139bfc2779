"""
Shared helpers for train.py, sample.py, bench.py and eval.py: one implementation of each.

Three things live here, because every script needs them and copies would drift apart:

1. Device and dtype: which device to run on (cuda, then mps, then cpu), which precision
   (bfloat16 where the GPU supports it, float16 on older GPUs, float32 elsewhere), the
   autocast context that applies it, a `synchronize()` that is a no-op on CPU so timing code
   has no `if cuda` branches, and `peak_flops()` for model-FLOPs-utilisation (MFU).
2. Configuration: a run is configured by a dataclass. `parse_config()` reads config files
   (plain Python assignments, executed into a fresh dict, never into globals()) and
   `--key=value` overrides, checks every name and type against the dataclass, and returns a
   new instance. A typo is an error that names the closest valid key, not a silent new variable.
3. Checkpoints: `save_checkpoint()` writes atomically (a killed run never leaves a half-written
   file where the last good one was) and `load_checkpoint()` loads with weights_only=True, so a
   checkpoint can hold tensors, numbers, strings and containers, but never code that runs
   when the file is opened.
4. The command line: `run_command()` runs a script's main() so that the problems a user can fix
   end in one line naming the problem and the fix, not a traceback.

Design choices: plain functions with explicit arguments (tests call them directly), no work at
import time, and every error message names what went wrong and what to do about it.
"""

import ast
import contextlib
import dataclasses
import difflib
import inspect
import os
import pickle
import re
import sys
import types
import typing

import torch

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
# Configuration


class ConfigError(ValueError):
    """A config file or --key=value argument that does not fit the config dataclass."""


def parse_config(defaults, argv):
    """Return a new config: `defaults` (a dataclass instance) updated from `argv`, in order.

    argv items are either config file paths (`config/train_shakespeare_char.py`) or
    `--key=value` overrides. Later items override earlier ones, so
    `config/foo.py --batch_size=8` takes foo.py's settings but batch_size=8.
    Every key must be a field of the dataclass and every value must fit the field's type.
    """
    if not dataclasses.is_dataclass(defaults) or isinstance(defaults, type):
        raise TypeError(f"parse_config expects a dataclass instance, got {defaults!r}")
    type_hints = typing.get_type_hints(type(defaults))
    field_types = {f.name: type_hints[f.name] for f in dataclasses.fields(defaults) if f.init}

    overrides = {}
    for arg in argv:
        if arg.startswith("--"):
            key, value = _parse_override(arg, field_types)
            overrides[key] = value
        else:
            overrides.update(_read_config_file(arg, field_types))
    # replace() builds a new instance, so `defaults` is never modified.
    return dataclasses.replace(defaults, **overrides)


def _parse_override(arg, field_types):
    """Turn "--key=value" into (key, typed value)."""
    if "=" not in arg:
        _check_known_key(arg[2:], field_types, source="on the command line")
        raise ConfigError(f"{arg!r} has no value: write {arg}=VALUE "
                          f"(for a flag, {arg}=True or {arg}=False)")
    # Split on the first "=" only, so a value may itself contain "=" (--prompt="a=b").
    key, raw_value = arg[2:].split("=", 1)
    _check_known_key(key, field_types, source="on the command line")
    expected = field_types[key]
    try:
        # literal_eval understands Python literals (3, 3e-4, True, None, 'text', (1, 2))
        # and, unlike eval, can never run code.
        value = ast.literal_eval(raw_value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = raw_value
    if not _fits(value, expected) and _accepts_str(expected):
        # For text fields the raw string is what was meant: --out_dir=out-foo (not a literal)
        # or --run_name=2024 (a literal int, but the field wants text).
        value = raw_value
    return key, _convert(key, value, expected, source=f"--{key}={raw_value}")


def _read_config_file(path, field_types):
    """Execute a config file into a fresh dict and return its settings, checked and typed."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path} "
                          "(arguments without -- are config file paths; overrides are written --key=value)")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    # A fresh namespace, never globals(): the file can only produce settings, and we look at
    # each one. compile() with the path makes tracebacks point at the config file's lines.
    namespace = {}
    exec(compile(source, path, "exec"), namespace)

    settings = {}
    for key, value in namespace.items():
        # Skip private helpers (_x, __builtins__) and things that are not settings:
        # `import math` or a helper function/class in the file.
        not_a_setting = inspect.ismodule(value) or inspect.isroutine(value) or inspect.isclass(value)
        if key.startswith("_") or not_a_setting:
            continue
        _check_known_key(key, field_types, source=f"in {path}")
        settings[key] = _convert(key, value, field_types[key], source=f"{path}: {key} = {value!r}")
    return settings


def _check_known_key(key, field_types, source):
    if key not in field_types:
        raise ConfigError(f"unknown config key {key!r} {source}" + _valid_keys_hint(key, field_types))


def _valid_keys_hint(key, field_types):
    # difflib catches typos (learning_rte -> learning_rate); with no close match, list them all.
    close = difflib.get_close_matches(key, field_types, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return "; valid keys are: " + ", ".join(sorted(field_types))


def _convert(key, value, expected, source):
    """Return `value` converted to the field type `expected`, or raise ConfigError."""
    if not _fits(value, expected):
        hint = " (write True or False)" if _is_bool_type(expected) else ""
        raise ConfigError(f"{source}: {key} expects {_type_name(expected)}, "
                          f"got {value!r} ({type(value).__name__}){hint}")
    # An int for a float field is fine (--lr=1 means 1.0), but store a real float so the
    # dataclass holds what its annotation says.
    if _float_wanted(value, expected):
        return float(value)
    # literal_eval gives a list for [1, 2] and a tuple for (1, 2); store what the field says.
    if typing.get_origin(expected) in (list, tuple) and value is not None:
        return typing.get_origin(expected)(value)
    return value


def _fits(value, expected):
    """Does `value` fit the type annotation `expected`? (the few types configs use)"""
    if expected is typing.Any:
        return True
    origin = typing.get_origin(expected)
    args = typing.get_args(expected)
    if origin is typing.Union or origin is types.UnionType:  # Optional[int], int | None
        return any(_fits(value, arg) for arg in args)
    if origin is typing.Literal:  # Literal["auto", "float32", ...]
        return value in args
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[float, float]
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return all(_fits(v, args[0]) for v in value) if args else True
    if expected is type(None):
        return value is None
    # bool is a subclass of int in Python, so check it first and strictly:
    # --compile=1 is rejected rather than guessed.
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(expected, type):
        return isinstance(value, expected)
    return True  # an annotation we do not understand: do not block the user


def _float_wanted(value, expected):
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    is_union = typing.get_origin(expected) in (typing.Union, types.UnionType)
    options = typing.get_args(expected) if is_union else (expected,)
    return float in options and int not in options


def _accepts_str(expected):
    origin = typing.get_origin(expected)
    if origin is typing.Union or origin is types.UnionType:
        return any(_accepts_str(arg) for arg in typing.get_args(expected))
    if origin is typing.Literal:
        return any(isinstance(arg, str) for arg in typing.get_args(expected))
    return expected is str


def _is_bool_type(expected):
    return expected is bool or bool in typing.get_args(expected)


def _type_name(expected):
    origin = typing.get_origin(expected)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_type_name(arg) for arg in typing.get_args(expected))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in typing.get_args(expected))
    if expected is type(None):
        return "None"
    if isinstance(expected, type) and origin is None:
        return expected.__name__
    return str(expected).replace("typing.", "")


def config_to_dict(config):
    """Return the config as a plain dict: what a checkpoint stores (weights_only can load it)."""
    return dataclasses.asdict(config)


def print_config(config, file=None):
    """Print one `key = value` line per field.

    The output is itself a valid config file, so a run's settings can be pasted into
    config/*.py to reproduce it.
    """
    file = sys.stdout if file is None else file
    values = config_to_dict(config)
    width = max((len(key) for key in values), default=0)
    for key, value in values.items():
        print(f"{key:<{width}} = {value!r}", file=file)


# -----------------------------------------------------------------------------
# Command line


def run_command(main, expected):
    """Run main() for a script's `if __name__ == "__main__"`; return the exit status.

    `expected` are the exception types of problems the user can fix: a bad option, a missing
    file or checkpoint, a failed download. Their messages already name the problem and the fix,
    so they are printed as one line (exit status 1). Any other exception is a bug and keeps its
    traceback.
    """
    try:
        main()
    except expected as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


# -----------------------------------------------------------------------------
# Checkpoints


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be saved or loaded; the message names the file and what to do."""


def save_checkpoint(obj, path):
    """Save `obj` (dicts/lists/numbers/strings/tensors) to `path` atomically.

    torch.save writes a large file over seconds; a run killed halfway (Ctrl-C, out of time,
    out of memory) would leave a truncated file in place of the last good checkpoint. So we
    write a temporary file in the same directory, force it to disk, and only then rename it
    over `path`. os.replace is atomic: readers see the old file or the new one, never half.
    The temp file must be in the same directory because a rename across filesystems is a copy.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp_path = path + ".tmp"
    try:
        with open(tmp_path, "wb") as f:
            torch.save(obj, f)
            f.flush()  # Python's buffer -> the OS
            os.fsync(f.fileno())  # the OS's cache -> the disk, before the rename makes it visible
        _refuse_unloadable(tmp_path, final_path=path)
        os.replace(tmp_path, path)
    except BaseException:
        # Whatever went wrong (including KeyboardInterrupt), the old checkpoint at `path` is
        # untouched; remove the partial temp file so it cannot be mistaken for a checkpoint.
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise
    _fsync_directory(directory)


def _refuse_unloadable(tmp_path, final_path):
    """Fail at save time, not at resume time, if load_checkpoint would refuse the file.

    weights_only loading accepts tensors, numbers, strings and containers only. A numpy
    scalar (np.float32 loss) or a dataclass instance would be saved fine and refused on load,
    hours later. get_unsafe_globals_in_checkpoint reads only the small pickle part of the file.
    """
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path)
    if unsafe:
        raise CheckpointError(
            f"not saving {final_path}: it would contain {', '.join(unsafe)}, which "
            "load_checkpoint (weights_only=True) refuses. Store only tensors, numbers, strings, "
            "lists and dicts: e.g. float(x) for numpy numbers, config_to_dict(cfg) for a config.")


def _fsync_directory(directory):
    # The rename is an entry in the directory; fsync the directory so it survives a power cut.
    # Windows cannot open a directory this way, and its rename is durable enough for us.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path, map_location="cpu",
                    if_missing="train a model first (which writes it), check out_dir, "
                               "or start fresh with --init_from=scratch"):
    """Load a checkpoint saved by save_checkpoint; raise CheckpointError if it cannot be used.

    weights_only=True means torch refuses anything but tensors, numbers, strings and
    containers. A .pt file is a pickle, and a plain pickle can run any code when loaded, so a
    downloaded checkpoint must never be loaded with weights_only=False unless you trust it.
    map_location="cpu" loads onto the CPU first, so a checkpoint saved on a GPU loads anywhere.
    if_missing: the advice when there is no file; the default is train.py's (resuming).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}: {if_missing}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file; "
                              "point to the .pt file inside it (e.g. out_dir/ckpt.pt)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if refused:
            raise CheckpointError(
                f"refused to load {path}: it holds code or Python objects outside plain tensors "
                f"and containers ({refused.group(1)}). Nothing in it was run. Only load it with "
                "torch.load(weights_only=False) if you trust where it came from.") from e
        raise _corrupt_error(path, e) from e
    except PermissionError:
        raise
    except Exception as e:  # torch raises RuntimeError, EOFError, OSError, ... for damaged files
        raise _corrupt_error(path, e) from e


def _corrupt_error(path, error):
    # torch's own messages run to several sentences; the first one says what failed.
    reason = str(error).strip().split(". ")[0].splitlines()[0] if str(error).strip() else ""
    detail = f"{type(error).__name__}: {reason[:200]}" if reason else type(error).__name__
    return CheckpointError(
        f"cannot load {path}: it is truncated or corrupt (was the run killed while writing?) "
        f"[{detail}]. Delete it and resume from another checkpoint, "
        "or start fresh with --init_from=scratch")


# -----------------------------------------------------------------------------
# A trained model for inference (sample.py, eval.py)


def load_model(init_from, out_dir, device):
    """Return (model in eval mode on `device`, its tokenizer, a description of where it came from).

    init_from="resume" reads out_dir/ckpt.pt, written by train.py, which carries the dataset's
    tokenizer description ("meta"), so a checkpoint is usable without its dataset folder.
    Anything else is a GPT-2 name (gpt2, gpt2-medium, ...) or a Hugging Face GPT-2 folder.
    """
    from model import GPT, GPTConfig
    from tokenizer import GPT2Tokenizer, tokenizer_from_meta

    if init_from == "resume":
        path = os.path.join(out_dir, "ckpt.pt")
        checkpoint = load_checkpoint(path, if_missing="train one first (`python train.py` writes "
                                     "out/ckpt.pt), point --out_dir at a training run, or use "
                                     "--init_from=gpt2 for OpenAI's weights")
        model = GPT(GPTConfig(**checkpoint["model_args"]))
        model.load_state_dict(checkpoint["model"])
        if "meta" not in checkpoint:
            raise CheckpointError(f"{path} does not say which tokenizer it was trained with "
                                  "(no 'meta'); it was not written by this project's train.py")
        meta = checkpoint["meta"]
        source = f"{path} (iteration {checkpoint['iter_num']}, dataset {meta.get('name', '?')})"
    else:
        model = GPT.from_pretrained(init_from)
        meta = {"tokenizer": "gpt2"}
        source = init_from
    tokenizer = tokenizer_from_meta(meta) if meta["tokenizer"] != "gpt2" else GPT2Tokenizer()
    if tokenizer.vocab_size != model.config.vocab_size:
        raise CheckpointError(
            f"{source}: the model's vocabulary has {model.config.vocab_size} tokens but its "
            f"{tokenizer.name} tokenizer has {tokenizer.vocab_size}; the checkpoint and its "
            "tokenizer do not belong together")
    return model.to(device).eval(), tokenizer, source
