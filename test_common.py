"""Tests for common.py: device/dtype selection on CPU, the GPU peak table, user errors vs bugs, the one
writer of whole files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import common
from common import ConfigError

REPO = Path(__file__).resolve().parent


# -----------------------------------------------------------------------------
# Device and dtype (CPU here; GPU paths are exercised by bench/train on a GPU machine)


def test_device_and_dtype_on_cpu():
    assert common.pick_device("cpu") == "cpu"
    assert common.pick_dtype("cpu") == "float32"
    assert common.pick_dtype("cpu", "bfloat16") == "bfloat16"
    with pytest.raises(common.ConfigError, match="float8"):
        common.pick_dtype("cpu", "float8")
    with pytest.raises(common.ConfigError, match="tpu"):
        common.pick_device("tpu")
    assert common.peak_flops("cpu") is None
    common.synchronize("cpu")  # a no-op that must not fail
    if not torch.cuda.is_available():
        assert common.pick_device("auto") in ("mps", "cpu")
        with pytest.raises(common.ConfigError, match="CUDA is not available"):
            common.pick_device("cuda")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_dtypes_on_cpu_are_allowed_with_a_warning(capsys, dtype):
    assert common.pick_dtype("cpu", dtype) == dtype
    assert f"{dtype} on a CPU is much slower" in capsys.readouterr().err
    assert common.pick_dtype("cpu", "float32") == "float32"
    assert capsys.readouterr().err == ""


def test_autocast_float32_is_a_no_op_and_bfloat16_applies():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with common.autocast("cpu", "float32"):
        assert (a @ b).dtype == torch.float32
    with common.autocast("cpu", "bfloat16"):
        assert (a @ b).dtype == torch.bfloat16


def test_peak_flops_table_prefers_the_most_specific_name():
    assert common.peak_flops_for_name("NVIDIA H100 80GB HBM3") == 989.4e12  # SXM
    assert common.peak_flops_for_name("NVIDIA H100 PCIe") == 756e12
    assert common.peak_flops_for_name("NVIDIA H100 NVL") == 835e12
    assert common.peak_flops_for_name("NVIDIA A100-SXM4-80GB") == 312e12  # not the A10 entry
    assert common.peak_flops_for_name("NVIDIA L40S") == 362.05e12  # not the L4 entry
    assert common.peak_flops_for_name("NVIDIA L4") == 121e12
    assert common.peak_flops_for_name("NVIDIA GeForce RTX 4090") == 165.2e12
    assert common.peak_flops_for_name("Tesla T4") == 65e12
    assert common.peak_flops_for_name("Some Future GPU") is None
    assert common.peak_flops_for_name("nvidia h200") == common.peak_flops_for_name("NVIDIA H200")


# -----------------------------------------------------------------------------

def test_run_command_prints_user_errors_as_one_line_and_keeps_bugs_loud(capsys):
    def bad_option():
        raise ConfigError("unknown config key 'lr': did you mean 'learning_rate'?")

    assert common.run_command(bad_option) == 1
    assert capsys.readouterr().err == "error: unknown config key 'lr': did you mean 'learning_rate'?\n"
    assert common.run_command(lambda: None) == 0

    # A ValueError from deep inside a library is a bug (ours or theirs), not a user's mistake:
    # it must keep its traceback even though many user errors used to be ValueErrors.
    for bug in (KeyError("a bug"), ValueError("shape mismatch inside torch")):
        def fail(bug=bug):
            raise bug

        with pytest.raises(type(bug)):
            common.run_command(fail)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("under_torchrun", [False, True])
@pytest.mark.parametrize("fails", [False, True])
def test_run_command_under_torchrun_flushes_then_skips_the_interpreter_shutdown(tmp_path, under_torchrun, fails):
    # Under torchrun the process must end without the interpreter's shutdown (where gloo's
    # worker threads can abort it), yet keep its buffered output and its exit status.
    script = tmp_path / "script.py"
    script.write_text(
        "import atexit, sys\n"
        "import common\n"
        "atexit.register(lambda: print('shutdown ran', file=sys.stderr))\n"
        "def main():\n"
        "    print('result line')  # a pipe buffers it: only a flush gets it out before os._exit\n"
        f"    if {fails}:\n"
        "        raise common.ConfigError('bad option')\n"
        "sys.exit(common.run_command(main))\n")
    env = {k: v for k, v in os.environ.items() if k != "RANK"}
    env["PYTHONPATH"] = str(Path(common.__file__).parent)
    if under_torchrun:
        env["RANK"] = "0"
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == (1 if fails else 0), result.stderr
    assert result.stdout == "result line\n"
    assert ("error: bad option" in result.stderr) == fails
    assert ("shutdown ran" in result.stderr) == (not under_torchrun)


def test_run_command_stops_quietly_when_the_reader_of_stdout_goes_away(tmp_path):
    # `python sample.py | head -1`: head exits after one line and the next write fails.
    script = tmp_path / "script.py"
    script.write_text("import sys\nimport common\n"
                      "def main():\n"
                      "    for i in range(100_000):\n"
                      "        print('a line of generated text', i)\n"
                      "sys.exit(common.run_command(main))\n")
    env = dict(os.environ, PYTHONPATH=str(Path(common.__file__).parent))
    with subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout.readline() == "a line of generated text 0\n"
        process.stdout.close()  # what head does after its line
        stderr = process.stderr.read()
        status = process.wait(timeout=60)
    assert stderr == "" and status == 1


# -----------------------------------------------------------------------------
# Files written whole


def test_open_atomic_leaves_the_old_file_or_the_new_one_never_half(tmp_path):
    path = tmp_path / "sub" / "state.bin"
    common.write_atomic(path, b"old")
    assert path.read_bytes() == b"old"
    with pytest.raises(KeyboardInterrupt):  # killed half-way through writing the new one
        with common.open_atomic(path) as f:
            f.write(b"half of the ne")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old" and sorted(p.name for p in path.parent.iterdir()) == ["state.bin"]
    common.write_atomic(path, "new text, é")  # text is written as UTF-8
    assert path.read_text(encoding="utf-8") == "new text, é"


def test_every_file_written_whole_goes_through_open_atomic():
    # One writer: the only renames into place are open_atomic's and the finished download's (a
    # resumable .part, its own pattern, with the same fsync-rename-fsync at its last step).
    renames = {path.name for path in REPO.glob("*.py") if not path.name.startswith("test_")
               and "os.replace(" in path.read_text(encoding="utf-8")}
    assert renames == {"common.py", "download.py"}
    download_source = (REPO / "download.py").read_text(encoding="utf-8")
    assert "fsync_file(part)" in download_source and "fsync_directory(dest.parent)" in download_source
