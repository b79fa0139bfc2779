"""Tests for common.py: config parsing, device/dtype selection on CPU, checkpoint save/load."""

import dataclasses
import io
import os
from typing import Optional

import pytest
import torch

import common
from common import CheckpointError, ConfigError, load_checkpoint, parse_config, save_checkpoint


@dataclasses.dataclass
class RunConfig:
    out_dir: str = "out"
    batch_size: int = 12
    learning_rate: float = 6e-4
    compile: bool = True
    max_iters: Optional[int] = 5000
    init_from: str = "scratch"
    prompt: str = "\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -----------------------------------------------------------------------------
# Config parsing


def test_config_file_then_overrides_later_wins(tmp_path):
    config_file = write(tmp_path, "small.py", "batch_size = 4\nout_dir = 'out-small'\nlearning_rate = 1e-3\n")
    defaults = RunConfig()
    config = parse_config(defaults, [config_file, "--batch_size=8", "--batch_size=16"])
    assert config.batch_size == 16  # the last --batch_size wins over the earlier one and the file
    assert config.out_dir == "out-small"  # from the file
    assert config.learning_rate == 1e-3  # from the file
    assert config.compile is True  # untouched default
    assert defaults.batch_size == 12  # a new instance is returned; defaults are not modified


def test_override_before_file_is_overridden_by_file(tmp_path):
    config_file = write(tmp_path, "small.py", "batch_size = 4\n")
    assert parse_config(RunConfig(), ["--batch_size=8", config_file]).batch_size == 4


def test_config_file_ignores_private_names_imports_and_functions(tmp_path):
    config_file = write(tmp_path, "calc.py",
                        "import math\n_tokens = 2 ** 10\ndef helper():\n    return 1\n"
                        "class Helper:\n    pass\nbatch_size = _tokens // 256\n")
    assert parse_config(RunConfig(), [config_file]).batch_size == 4


def test_config_file_runs_in_fresh_namespace(tmp_path):
    # A file assigning a name must never leak into common's module globals (nanoGPT's slip).
    config_file = write(tmp_path, "leak.py", "batch_size = 3\n")
    parse_config(RunConfig(), [config_file])
    assert not hasattr(common, "batch_size")


def test_value_containing_equals_sign():
    assert parse_config(RunConfig(), ["--prompt=a=b"]).prompt == "a=b"
    assert parse_config(RunConfig(), ["--prompt='x = 1'"]).prompt == "x = 1"


def test_str_field_takes_raw_string_when_not_a_literal():
    config = parse_config(RunConfig(), ["--out_dir=out-foo", "--init_from=gpt2"])
    assert config.out_dir == "out-foo"
    assert config.init_from == "gpt2"
    # A literal that is not text still means text for a str field.
    assert parse_config(RunConfig(), ["--out_dir=2024"]).out_dir == "2024"


def test_int_accepted_for_float_and_converted():
    config = parse_config(RunConfig(), ["--learning_rate=1"])
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert parse_config(RunConfig(), ["--learning_rate=3e-4"]).learning_rate == 3e-4


def test_float_field_rejects_text():
    with pytest.raises(ConfigError) as excinfo:
        parse_config(RunConfig(), ["--learning_rate=abc"])
    message = str(excinfo.value)
    assert "learning_rate" in message and "abc" in message and "float" in message


def test_type_mismatch_names_key_value_and_expected_type():
    with pytest.raises(ConfigError) as excinfo:
        parse_config(RunConfig(), ["--batch_size=2.5"])
    message = str(excinfo.value)
    assert "batch_size" in message and "2.5" in message and "int" in message


def test_type_mismatch_in_file_names_the_file(tmp_path):
    config_file = write(tmp_path, "bad.py", "batch_size = '8'\n")
    with pytest.raises(ConfigError) as excinfo:
        parse_config(RunConfig(), [config_file])
    assert config_file in str(excinfo.value) and "batch_size" in str(excinfo.value)


def test_none_for_optional_field_only():
    assert parse_config(RunConfig(), ["--max_iters=None"]).max_iters is None
    assert parse_config(RunConfig(), ["--max_iters=10"]).max_iters == 10
    with pytest.raises(ConfigError, match="batch_size"):
        parse_config(RunConfig(), ["--batch_size=None"])


def test_bool_must_be_true_or_false():
    assert parse_config(RunConfig(), ["--compile=False"]).compile is False
    assert parse_config(RunConfig(), ["--compile=True"]).compile is True
    for bad in ["--compile=1", "--compile=0", "--compile=false", "--compile=yes"]:
        with pytest.raises(ConfigError, match="True or False"):
            parse_config(RunConfig(), [bad])


def test_unknown_key_on_command_line_names_closest_key():
    with pytest.raises(ConfigError) as excinfo:
        parse_config(RunConfig(), ["--batchsize=8"])
    assert "batchsize" in str(excinfo.value) and "'batch_size'" in str(excinfo.value)


def test_unknown_key_in_file_names_file_and_closest_key(tmp_path):
    config_file = write(tmp_path, "typo.py", "learning_rte = 1e-3\n")
    with pytest.raises(ConfigError) as excinfo:
        parse_config(RunConfig(), [config_file])
    message = str(excinfo.value)
    assert config_file in message and "learning_rte" in message and "'learning_rate'" in message


def test_unknown_key_with_no_close_match_lists_valid_keys():
    with pytest.raises(ConfigError) as excinfo:
        parse_config(RunConfig(), ["--zzz=1"])
    assert "batch_size" in str(excinfo.value) and "out_dir" in str(excinfo.value)


def test_key_without_value_says_how_to_write_it():
    with pytest.raises(ConfigError, match="--compile=VALUE"):
        parse_config(RunConfig(), ["--compile"])


def test_missing_config_file_names_path(tmp_path):
    missing = str(tmp_path / "nope.py")
    with pytest.raises(ConfigError, match="nope.py"):
        parse_config(RunConfig(), [missing])


def test_print_config_output_is_a_valid_config_file(tmp_path):
    config = parse_config(RunConfig(), ["--out_dir=out-x", "--max_iters=None", "--prompt=a=b"])
    buffer = io.StringIO()
    common.print_config(config, file=buffer)
    config_file = write(tmp_path, "printed.py", buffer.getvalue())
    assert parse_config(RunConfig(), [config_file]) == config
    assert common.config_to_dict(config)["out_dir"] == "out-x"


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
# Checkpoints


def make_checkpoint():
    model = torch.nn.Linear(4, 3)
    return {"model": model.state_dict(), "iter_num": 7, "best_val_loss": 1.25,
            "config": common.config_to_dict(RunConfig())}


def test_checkpoint_roundtrip(tmp_path):
    path = tmp_path / "ckpt.pt"
    checkpoint = make_checkpoint()
    save_checkpoint(checkpoint, path)
    loaded = load_checkpoint(path)
    assert loaded["iter_num"] == 7 and loaded["config"] == checkpoint["config"]
    for name, tensor in checkpoint["model"].items():
        assert torch.equal(loaded["model"][name], tensor)
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temp file left behind


def test_crash_while_saving_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"iter_num": 1}, path)
    real_save = torch.save

    def crash_halfway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)  # leave a half-written file, like a killed process would
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"iter_num": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"iter_num": 1}  # the old checkpoint is intact
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # and the partial temp file is gone


def test_save_refuses_objects_that_load_would_refuse(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"iter_num": 1}, path)
    with pytest.raises(CheckpointError, match="RunConfig"):
        save_checkpoint({"config": RunConfig()}, path)  # a dataclass, not config_to_dict(...)
    assert load_checkpoint(path) == {"iter_num": 1}
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_missing_checkpoint_suggests_scratch(tmp_path):
    with pytest.raises(CheckpointError) as excinfo:
        load_checkpoint(tmp_path / "ckpt.pt")
    assert "ckpt.pt" in str(excinfo.value) and "init_from=scratch" in str(excinfo.value)


@pytest.mark.parametrize("keep_fraction", [0.0, 0.1, 0.5, 0.99])
def test_truncated_checkpoint_error_names_the_file(tmp_path, keep_fraction):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(make_checkpoint(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(CheckpointError) as excinfo:
        load_checkpoint(path)
    assert str(path) in str(excinfo.value) and "truncated or corrupt" in str(excinfo.value)


class RunsCodeWhenUnpickled:
    """A malicious checkpoint entry: unpickling it calls exec, which creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_unreadable_checkpoint_is_not_called_corrupt(tmp_path, monkeypatch):
    # "Permission denied" needs a chmod, not a new training run: it must not be reported as damage.
    path = tmp_path / "ckpt.pt"
    common.save_checkpoint({"iter_num": 1}, path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(PermissionError, match="Permission denied"):
        common.load_checkpoint(path)


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    path = tmp_path / "evil.pt"
    marker = tmp_path / "payload_ran"
    torch.save({"model": {}, "extra": RunsCodeWhenUnpickled(marker)}, path)

    with pytest.raises(CheckpointError) as excinfo:
        load_checkpoint(path)
    assert str(path) in str(excinfo.value) and "refused" in str(excinfo.value)
    assert not marker.exists()

    # Prove the payload is live, so the check above can fail: an unsafe load does run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_run_command_prints_expected_errors_as_one_line_and_keeps_bugs_loud(capsys):
    def bad_option():
        raise ConfigError("unknown config key 'lr': did you mean 'learning_rate'?")

    assert common.run_command(bad_option, (ConfigError,)) == 1
    assert capsys.readouterr().err == "error: unknown config key 'lr': did you mean 'learning_rate'?\n"
    assert common.run_command(lambda: None, (ConfigError,)) == 0

    def bug():
        raise KeyError("a bug, not a user mistake")

    with pytest.raises(KeyError):
        common.run_command(bug, (ConfigError,))
