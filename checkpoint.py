"""
Checkpoints: saving a run so that nothing is lost, and loading a trained model back.

- `save_checkpoint()` writes atomically with common.open_atomic (a run killed at any moment, even
  mid-write, leaves the last good file where it was) and refuses, at save time, anything
  `load_checkpoint()` would refuse at load time.
- `load_checkpoint()` loads with weights_only=True: a checkpoint can hold tensors, numbers,
  strings and containers, never code that runs when the file is opened. A missing, truncated or
  unsafe file is a CheckpointError naming the file and what to do.
- `load_model()` gives sample.py and eval.py a model ready for inference, with its tokenizer,
  from a training run's out_dir or from OpenAI's GPT-2 weights; `model_to_train()` gives
  train.py the model a run starts from (scratch, resumed, another run's weights, or GPT-2's).

A training checkpoint is the plain dict train.py's `save()` builds: the weights and the
optimizer's state by parameter name (`state_dicts()`, which says why by name), the iteration, the
loss scaler, the data position and the tokenizer. `save_training_checkpoint()` writes it as one
file (ckpt.pt) or, for a model sharded by FSDP, as PyTorch Distributed Checkpoint shards that
every process writes at once (a ckpt-<iter>/ folder, named by ckpt.json).
`load_training_checkpoint()` reads either back and `load_weights()` puts the tensors into a model
and optimizer on any number of processes; `check_optimizer()` refuses a run that asks for another
optimizer than the one that made it.
"""

import json
import os
import pickle
import re
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_state_dict, set_model_state_dict,
                                                     set_state_dict)
from torch.distributed.tensor import DTensor

import hf
import sft
from common import ConfigError, UserError, open_atomic, write_atomic
from data import DataError
from distributed import unwrap_model
from model import GPT, GPTConfig
from tokenizer import tokenizer_from_meta

CHECKPOINT_NAME = "ckpt.pt"  # what train.py writes in out_dir, and sample.py and eval.py read
SHARDED_POINTER = "ckpt.json"  # an FSDP run's out_dir: names the newest complete ckpt-<iter>/ folder
SHARDED_EXTRA = "state.pt"  # in that folder, beside the shards: everything but the tensors
# What to do when a run to resume has no checkpoint (train.py's advice; sample.py has its own).
RESUME_ADVICE = "train a model first (which writes it), check out_dir, or start fresh with --init_from=scratch"


class CheckpointError(UserError):
    """A checkpoint that cannot be saved or loaded; the message names the file and what to do."""


def save_checkpoint(obj, path):
    """Save `obj` (dicts/lists/numbers/strings/tensors) to `path` atomically (common.open_atomic:
    a run killed at any moment, even mid-write, leaves the last good checkpoint where it was),
    refusing anything load_checkpoint() would refuse."""
    with open_atomic(path) as f:
        torch.save(obj, f)
        f.flush()
        _refuse_unloadable(f.name, final_path=path)


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


def refuse_to_overwrite(out_dir, why):
    """Stop a new run from replacing the checkpoint of an earlier one, naming the ways out."""
    path = find_checkpoint(out_dir)
    if path is not None:
        raise CheckpointError(
            f"{path} already holds a checkpoint, and {why} would replace it. "
            f"To continue that run: --init_from=resume. To start over: pick another --out_dir, "
            f"delete {path}, or pass --overwrite=True")


def delete_checkpoints(out_dir):
    """Remove every checkpoint in out_dir, of either kind (--overwrite=True)."""
    (Path(out_dir) / CHECKPOINT_NAME).unlink(missing_ok=True)
    _remove_sharded(Path(out_dir), keep=None)


def load_checkpoint(path, map_location="cpu", if_missing=RESUME_ADVICE):
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
# A training checkpoint: the dict train.py saves, in one file or in shards


def state_dicts(model, optimizer):
    """
    (the model's weights, the optimizer's state), each a dict keyed by parameter name
    ("transformer.h.0.attn.c_attn.weight"): what train.py's checkpoint holds under "model" and
    "optimizer". In one process they are model.state_dict() and the optimizer's state by name.
    They come from PyTorch's get_state_dict because it gives the same names whatever wraps the
    model (DDP, torch.compile, FSDP, whose shards it gives as DTensors). A plain
    optimizer.state_dict() numbers the parameters instead, and numbers do not say which rows
    of which parameter another number of processes holds: with names, a one-file checkpoint and
    a sharded one resume each other.
    """
    return get_state_dict(unwrap_model(model), torch_optimizers(optimizer))


def save_training_checkpoint(out_dir, state, dist):
    """
    Write training_state() to out_dir. A sharded (FSDP) model is saved by every process, each
    writing its own shard (Distributed Checkpoint); otherwise rank 0 writes ckpt.pt alone.
    Either way the newest complete checkpoint is the only one left afterwards.
    """
    out_dir = Path(out_dir)
    if any(isinstance(v, DTensor) for v in state["model"].values()):
        _save_sharded(out_dir, state, dist)
    elif dist.is_master:
        save_checkpoint(state, out_dir / CHECKPOINT_NAME)
        _remove_sharded(out_dir, keep=None)


def _save_sharded(out_dir, state, dist):
    """
    Atomic like save_checkpoint(), for a folder written by several processes: the shards go into
    a new folder ckpt-<iter>/, and only when every process has finished does rank 0 point
    ckpt.json at it (one small file, replaced atomically). A run killed at any moment leaves
    ckpt.json naming the last complete checkpoint; folders it does not name are leftovers.
    """
    folder = out_dir / f"ckpt-{state['iter_num']:06d}"
    if dist.is_master and folder.exists():
        shutil.rmtree(folder)  # a half-written leftover of a killed run
    dist.barrier()
    tensors = {"model": state["model"], "optimizer": state["optimizer"]}
    dcp.save(tensors, checkpoint_id=folder)  # each process writes its shards; a collective call
    if dist.is_master:
        save_checkpoint({k: v for k, v in state.items() if k not in tensors}, folder / SHARDED_EXTRA)
    dist.barrier()  # every shard is on disk
    if dist.is_master:
        write_atomic(out_dir / SHARDED_POINTER, json.dumps({"folder": folder.name, "iter_num": state["iter_num"]}))
        _remove_sharded(out_dir, keep=folder.name)  # the older checkpoints...
        (out_dir / CHECKPOINT_NAME).unlink(missing_ok=True)  # ...of either kind


def _remove_sharded(out_dir, keep):
    if keep is None:
        (out_dir / SHARDED_POINTER).unlink(missing_ok=True)
    for folder in out_dir.glob("ckpt-[0-9]*"):
        if folder.name != keep and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def find_checkpoint(out_dir):
    """The newest complete checkpoint in out_dir: ckpt.pt, a sharded ckpt-<iter>/ folder, or None."""
    out_dir = Path(out_dir)
    found = []
    if (out_dir / CHECKPOINT_NAME).is_file():
        found.append(((out_dir / CHECKPOINT_NAME).stat().st_mtime_ns, out_dir / CHECKPOINT_NAME))
    pointer = out_dir / SHARDED_POINTER
    if pointer.is_file():
        try:
            folder = out_dir / json.loads(pointer.read_text(encoding="utf-8"))["folder"]
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{pointer} is damaged ({e}); delete it to use {CHECKPOINT_NAME}, "
                                  "or start fresh with --init_from=scratch") from None
        found.append((pointer.stat().st_mtime_ns, folder))
    return max(found)[1] if found else None  # both exist only if a kill interrupted the clean-up


def load_training_checkpoint(out_dir, if_missing=RESUME_ADVICE):
    """What training_state() saved, from either kind of checkpoint, plus "path": where it was read
    from. A sharded one gives everything but the tensors, plus "sharded": its folder, for
    restore_weights() to read."""
    path = find_checkpoint(out_dir)
    if path is None:
        return load_checkpoint(Path(out_dir) / CHECKPOINT_NAME, if_missing=if_missing)  # raises, naming the fix
    if path.name == CHECKPOINT_NAME:
        return {**load_checkpoint(path), "path": str(path)}
    return {**load_checkpoint(path / SHARDED_EXTRA), "sharded": str(path), "path": str(path)}


def load_weights(checkpoint, model, optimizer=None):
    """
    Put a checkpoint's weights (and optimizer state) into a model built with its model_args,
    after the model was wrapped (and into the optimizer made for it). From a sharded checkpoint, Distributed Checkpoint reads into
    whatever the model is now: FSDP shards on another number of processes (it reshards), or
    whole tensors in one process.
    """
    model = unwrap_model(model)
    if "sharded" not in checkpoint:
        tensors = {"model": checkpoint["model"], "optimizer": checkpoint.get("optimizer")}
        options = StateDictOptions(full_state_dict=True)  # whole tensors, sharded here if need be
    else:
        # Templates of the right shapes and placements, filled in place from the files.
        if optimizer is None:
            tensors = {"model": model.state_dict()}
        else:
            model_state, optimizer_state = get_state_dict(model, torch_optimizers(optimizer))
            tensors = {"model": model_state, "optimizer": optimizer_state}
        try:
            with warnings.catch_warnings():  # without a process group DCP warns that it reads
                warnings.filterwarnings("ignore", "torch.distributed is disabled")  # in one process:
                dcp.load(tensors, checkpoint_id=checkpoint["sharded"])  # what sample.py wants
        except Exception as e:  # DCP raises several types for missing or damaged shard files
            raise CheckpointError(f"cannot read the sharded checkpoint {checkpoint['sharded']} "
                                  f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); delete it and "
                                  "resume from another checkpoint, or start fresh with --init_from=scratch") from e
        options = StateDictOptions()
    if optimizer is None:
        set_model_state_dict(model, tensors["model"], options=options)
    else:
        set_state_dict(model, torch_optimizers(optimizer), model_state_dict=tensors["model"],
                       optim_state_dict=tensors["optimizer"], options=options)


def torch_optimizers(optimizer):
    """The torch optimizers behind optim.Optimizers (e.g. Muon and AdamW): one state dict holds
    them all, each parameter's state under its name."""
    return getattr(optimizer, "optimizers", optimizer)


def check_optimizer(checkpoint, optimizer):
    """Refuse to resume with another optimizer than the one whose state the checkpoint holds
    (Muon's momentum is not AdamW's moments). Checkpoints from before the option were AdamW's."""
    saved = checkpoint["config"].get("optimizer", "adamw")
    if saved != optimizer:
        raise CheckpointError(f"{checkpoint['path']} was trained with optimizer={saved} and this run asks for "
                              f"optimizer={optimizer}: resume with --optimizer={saved}")


# -----------------------------------------------------------------------------
# A trained model for inference (sample.py, eval.py)


def model_from_checkpoint(checkpoint, **overrides):
    """The GPT a training checkpoint holds: its shape from "model_args", then its weights.
    overrides change settings that do not touch the weights, e.g. dropout=0.1."""
    model = GPT(GPTConfig(**{**checkpoint["model_args"], **overrides}))
    load_weights(checkpoint, model)
    return model


def model_to_train(cfg, meta, model_args=None):
    """The GPT a train.py run (cfg) starts from, for a dataset with this meta.json: from scratch;
    in a resumed checkpoint's shape (model_args; its weights go in once it is wrapped, as FSDP
    shards them); with another run's weights (init_from='checkpoint': finetuning, a new run with
    a fresh optimizer); or with OpenAI's GPT-2 weights. A chat dataset (sft.py) adds rows for
    its chat tokens to a base model. The dataset's tokenizer must be the model's."""
    if model_args is not None:
        model = GPT(GPTConfig(**dict(model_args, dropout=cfg.dropout)), cfg.activation_checkpointing)
    elif cfg.init_from in hf.GPT2_MODELS:
        if meta.get("tokenizer") != "gpt2":
            raise DataError(f"init_from={cfg.init_from} needs a dataset tokenized with GPT-2's "
                            f"tokenizer (e.g. shakespeare, fineweb10B); {cfg.dataset} uses "
                            f"{meta.get('tokenizer')!r}")
        model = hf.from_pretrained(cfg.init_from, cfg.activation_checkpointing, dropout=cfg.dropout)
    elif cfg.init_from == "checkpoint":
        start = load_training_checkpoint(cfg.init_dir)
        fields = ("tokenizer", "chars", "merges_sha256")  # what makes two tokenizers the same
        if any(start["meta"].get(k) != meta.get(k) for k in fields):
            raise DataError(f"dataset {cfg.dataset} is not tokenized as {start['path']}'s model was "
                            f"(its {start['meta'].get('tokenizer')!r} tokenizer); prepare it with that "
                            f"model's tokenizer, e.g. --tokenizer_of={start['meta'].get('name')}")
        model = model_from_checkpoint(start, dropout=cfg.dropout)
        model.activation_checkpointing = cfg.activation_checkpointing
    else:
        config = GPTConfig(block_size=cfg.block_size, vocab_size=meta["vocab_size"], n_layer=cfg.n_layer,
                           n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias)
        model = GPT(config, cfg.activation_checkpointing)
    if meta.get("chat_tokens") and meta["vocab_size"] > model.config.vocab_size:
        model = sft.with_chat_tokens(model, meta["vocab_size"])
    context, vocab = model.config.block_size, model.config.vocab_size
    if cfg.block_size > context:
        raise ConfigError(f"block_size={cfg.block_size} is longer than the model's context of "
                        f"{context}; use --block_size={context} or less")
    if meta["vocab_size"] > vocab:
        raise DataError(f"dataset {cfg.dataset} has {meta['vocab_size']} token ids but the model "
                        f"only {vocab}: it was trained on another tokenizer")
    return model


def load_model(init_from, out_dir, device):
    """Return (model in eval mode on `device`, its tokenizer, a description of where it came from).

    init_from="resume" reads the checkpoint train.py wrote in out_dir (ckpt.pt, or the shards of
    an FSDP run, read in this one process), which carries the dataset's tokenizer description
    ("meta"), so a checkpoint is usable without its dataset folder.
    Anything else is a GPT-2 name (gpt2, gpt2-medium, ...) or a Hugging Face GPT-2 folder.
    """
    if init_from == "resume":
        checkpoint = load_training_checkpoint(
            out_dir, if_missing="train one first (`python train.py` writes out/ckpt.pt), point "
                                "--out_dir at a training run, or use --init_from=gpt2 for OpenAI's weights")
        path = checkpoint["path"]
        model = model_from_checkpoint(checkpoint)
        if "meta" not in checkpoint:
            raise CheckpointError(f"{path} does not say which tokenizer it was trained with "
                                  "(no 'meta'); it was not written by this project's train.py")
        meta = checkpoint["meta"]
        source = f"{path} (iteration {checkpoint['iter_num']}, dataset {meta.get('name', '?')})"
    else:
        model = hf.from_pretrained(init_from)
        meta = {"tokenizer": "gpt2"}
        source = init_from
    tokenizer = tokenizer_from_meta(meta)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise CheckpointError(
            f"{source}: the model's vocabulary has {model.config.vocab_size} tokens but its "
            f"{tokenizer.name} tokenizer has {tokenizer.vocab_size}; the checkpoint and its "
            "tokenizer do not belong together")
    return model.to(device).eval(), tokenizer, source
