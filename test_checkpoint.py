"""Tests for checkpoint.py: atomic saves, safe loads, and the errors a damaged or unsafe file gives."""

import dataclasses
import os

import pytest
import torch

import checkpoint
from checkpoint import CheckpointError, load_checkpoint, save_checkpoint


# Checkpoints


@dataclasses.dataclass
class RunConfig:
    out_dir: str = "out"


def make_checkpoint():
    model = torch.nn.Linear(4, 3)
    return {"model": model.state_dict(), "iter_num": 7, "best_val_loss": 1.25,
            "config": {"out_dir": "out", "batch_size": 12}}


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
    checkpoint.save_checkpoint({"iter_num": 1}, path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(PermissionError, match="Permission denied"):
        checkpoint.load_checkpoint(path)


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
