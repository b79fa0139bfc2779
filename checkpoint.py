"""
Checkpoints: saving a run so that nothing is lost, and loading a trained model back.

- `save_checkpoint()` writes atomically (a run killed at any moment, even mid-write, leaves the
  last good file where it was) and refuses, at save time, anything `load_checkpoint()` would
  refuse at load time.
- `load_checkpoint()` loads with weights_only=True: a checkpoint can hold tensors, numbers,
  strings and containers, never code that runs when the file is opened. A missing, truncated or
  unsafe file is a CheckpointError naming the file and what to do.
- `load_model()` gives sample.py and eval.py a model ready for inference, with its tokenizer,
  from a training run's out_dir or from OpenAI's GPT-2 weights.

- `training_state()` is what train.py saves: weights, optimizer, loss scaler, iteration, best
  val loss, every random generator and the data position, so that a resumed run continues
  exactly as the uninterrupted one would have; `restore_rng()` puts the generators back.
"""

import contextlib
import dataclasses
import os
import pickle
import re

import torch

from common import UserError
from configurator import config_to_dict
from distributed import unwrap_model
from model import GPT, GPTConfig
from tokenizer import GPT2Tokenizer, tokenizer_from_meta

CHECKPOINT_NAME = "ckpt.pt"  # what train.py writes in out_dir, and sample.py and eval.py read


class CheckpointError(UserError):
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


def refuse_to_overwrite(path, why):
    """Stop a new run from replacing the checkpoint of an earlier one, naming the ways out."""
    if os.path.exists(path):
        raise CheckpointError(
            f"{path} already holds a checkpoint, and {why} would replace it. "
            f"To continue that run: --init_from=resume. To start over: pick another --out_dir, "
            f"delete {path}, or pass --overwrite=True")


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
# What a training checkpoint holds


def training_state(model, optimizer, scaler, loader, cfg, iter_num, best_val_loss):
    """What train.py saves: everything needed to continue exactly where the run is now."""
    raw_model = unwrap_model(model)
    rng = {"torch": torch.get_rng_state()}  # dropout masks come from this generator
    if cfg.device.startswith("cuda"):
        rng["cuda"] = torch.cuda.get_rng_state(cfg.device)
    return {
        "model": raw_model.state_dict(),
        "model_args": dataclasses.asdict(raw_model.config),
        "config": config_to_dict(cfg),
        "iter_num": iter_num,  # optimizer steps done; the loop continues with step iter_num
        "best_val_loss": best_val_loss,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),  # {} when loss scaling is off
        "rng": rng,
        "data": loader.state_dict(),  # the training stream's position
        # The dataset's meta.json (tokenizer, its characters): sample.py and eval.py decode
        # with it, so a checkpoint is usable without its dataset folder.
        "meta": {**loader.meta, "name": cfg.dataset},
    }


def restore_training_state(checkpoint, optimizer, scaler, loader):
    """Load what training_state() saved into a new run's optimizer, scaler and data loader;
    returns (iter_num, best_val_loss). The weights went into the model when it was built, and the
    random generators go back last, with restore_rng(), after everything that draws from them."""
    optimizer.load_state_dict(checkpoint["optimizer"])
    if checkpoint["scaler"]:
        scaler.load_state_dict(checkpoint["scaler"])
    loader.load_state_dict(checkpoint["data"])
    return checkpoint["iter_num"], checkpoint["best_val_loss"]


def restore_rng(rng, device, dist, seed, iter_num):
    """Put the random generators back where the checkpointed run had them."""
    if dist.rank == 0:
        torch.set_rng_state(rng["torch"])
        if device.startswith("cuda") and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], device)
    else:
        # Only rank 0's generators are saved. The others reseed from (seed, rank, iteration):
        # their dropout masks differ from the uninterrupted run's (with dropout 0 nothing differs).
        torch.manual_seed(seed + dist.rank + 1_000_003 * iter_num)


# -----------------------------------------------------------------------------
# A trained model for inference (sample.py, eval.py)


def model_from_checkpoint(checkpoint, **overrides):
    """The GPT a training checkpoint holds: its shape from "model_args", then its weights.
    overrides change settings that do not touch the weights, e.g. dropout=0.1."""
    model = GPT(GPTConfig(**{**checkpoint["model_args"], **overrides}))
    model.load_state_dict(checkpoint["model"])
    return model


def load_model(init_from, out_dir, device):
    """Return (model in eval mode on `device`, its tokenizer, a description of where it came from).

    init_from="resume" reads out_dir/ckpt.pt, written by train.py, which carries the dataset's
    tokenizer description ("meta"), so a checkpoint is usable without its dataset folder.
    Anything else is a GPT-2 name (gpt2, gpt2-medium, ...) or a Hugging Face GPT-2 folder.
    """
    if init_from == "resume":
        path = os.path.join(out_dir, CHECKPOINT_NAME)
        checkpoint = load_checkpoint(path, if_missing="train one first (`python train.py` writes "
                                     "out/ckpt.pt), point --out_dir at a training run, or use "
                                     "--init_from=gpt2 for OpenAI's weights")
        model = model_from_checkpoint(checkpoint)
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
