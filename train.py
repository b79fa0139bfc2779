"""
Train a GPT: one loop, from a laptop CPU to a node of GPUs.

    python train.py                                    # CPU quick start: a small char-level Shakespeare model
    python train.py config/train_shakespeare_char.py   # the GPU "baby GPT" (6 layers, ~10M parameters)
    python train.py config/train_gpt2.py               # GPT-2 124M on FineWeb, one GPU
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py   # ... on 8 GPUs
    python train.py config/finetune_shakespeare.py     # finetune OpenAI's GPT-2 on Shakespeare
    python train.py config/eval_gpt2.py                # evaluate OpenAI's GPT-2 on FineWeb and exit
    python train.py --init_from=resume                 # continue the run in out_dir where it stopped

Settings: the defaults are TrainConfig below; config files (plain Python assignments) and then
--key=value overrides change them, left to right. A misspelt key is an error naming the right one.

What one run does, in order:
  1. parse and check the config, pick device and dtype, join the other processes under torchrun;
  2. open the dataset (data/<dataset>/, made by prepare.py; the default one is made if missing);
  3. build the model: from scratch, from out_dir/ckpt.pt (resume) or from OpenAI's GPT-2 weights;
  4. loop: evaluate every eval_interval steps (and checkpoint), take one optimizer step, log.

Design choices:
  - One function, train_step(), is the whole optimizer step (gradient accumulation, mixed
    precision loss scaling, clipping, the update). bench.py imports and times this same function.
  - BatchLoader is the one data reader (train, eval, bench and sample use it). It samples random
    windows from a torch.Generator whose state goes into the checkpoint, so a resumed run sees
    exactly the batches the uninterrupted run would have seen. Every rank draws from the same
    stream and keeps its own slice: the data a step uses does not depend on how many GPUs share it.
  - Evaluation uses fixed batches (a fresh generator with a fixed seed each time): successive
    evaluations differ only because the model changed, and evaluating never disturbs the training
    stream.
  - A checkpoint is only ever written right after an evaluation, atomically, and never after a
    NaN. Resuming therefore restarts exactly at an evaluated, saved iteration.
  - Everything a resumed run needs is in ckpt.pt: weights, optimizer, loss scaler, iteration,
    best val loss, the RNG states and the data position. It loads with weights_only=True.
"""

import contextlib
import dataclasses
import importlib
import inspect
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import common
import prepare
from common import CheckpointError, ConfigError
from model import GPT, GPTConfig, HUB_MODELS


@dataclass
class TrainConfig:
    # Defaults: the CPU quick start, under two minutes on two laptop cores, reaching a val loss
    # of ~1.69 on character-level Shakespeare (nanoGPT's 4-layer CPU recipe: 1.89 in the same time).
    # On a CPU the budget is arithmetic: a 1-layer model sees 3.4M characters in that time and
    # beats a 4-layer one that sees a third of that. Names follow nanoGPT's train.py.
    # --- output, evaluation, checkpoints ---
    out_dir: str = "out"  # ckpt.pt and metrics.jsonl go here
    eval_interval: int = 500  # evaluate (and checkpoint) every this many iterations, and at the end
    eval_iters: int = 20  # batches per split in one evaluation: more = less noisy, slower
    log_interval: int = 10  # print and log the training loss every this many iterations
    eval_only: bool = False  # evaluate once (the resumed checkpoint or GPT-2) and exit
    always_save_checkpoint: bool = True  # False: write ckpt.pt only when val loss improves
    init_from: str = "scratch"  # 'scratch', 'resume' (out_dir/ckpt.pt), or 'gpt2', 'gpt2-medium', ...
    overwrite: bool = False  # let a new run replace the checkpoint already in out_dir
    # --- Weights & Biases (optional, `pip install wandb`) ---
    wandb_log: bool = False  # log metrics to Weights & Biases
    wandb_project: str = "gpt-from-scratch"
    wandb_run_name: str = "run"
    # --- data ---
    dataset: str = "shakespeare_char"  # the folder data/<dataset>/ that prepare.py writes
    data_dir: Optional[str] = None  # folder holding the datasets; None = data/ next to prepare.py
    gradient_accumulation_steps: int = 1  # micro-steps per optimizer step, counted over all GPUs
    batch_size: int = 24  # sequences per micro-step, per GPU
    block_size: int = 64  # context length: tokens per sequence
    # --- model (scratch only: resume and gpt2* bring their own shape; dropout always applies) ---
    n_layer: int = 1  # the CPU quick start; config/train_shakespeare_char.py has the 6-layer GPU model
    n_head: int = 4  # 4 heads of 32 dimensions
    n_embd: int = 128  # width of the residual stream
    dropout: float = 0.0  # no regularisation needed: two minutes of training cannot overfit
    bias: bool = False  # biases in Linear/LayerNorm: GPT-2 has them; without is slightly faster
    # --- AdamW and the learning-rate schedule ---
    learning_rate: float = 8e-3  # the peak, reached after warmup
    max_iters: int = 2200  # optimizer steps in total
    weight_decay: float = 0.1  # AdamW decay, on matrices only
    beta1: float = 0.9  # AdamW momentum
    beta2: float = 0.95  # AdamW second-moment decay, as for GPT-2; small-batch recipes often use 0.99
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 = no clipping
    decay_lr: bool = True  # False: constant learning_rate
    warmup_iters: int = 100  # linear warmup steps before the cosine
    lr_decay_iters: Optional[int] = None  # cosine ends here; None = max_iters
    min_lr: Optional[float] = None  # the floor of the cosine; None = learning_rate / 10
    # --- system ---
    device: str = "auto"  # 'auto' = cuda, then mps, then cpu; or e.g. 'cpu', 'cuda:1'
    dtype: str = "auto"  # 'auto' = bfloat16 on recent GPUs, float16 on older ones, float32 on CPU
    compile: bool = False  # torch.compile the model: faster steps on GPU after a minute of compiling
    seed: int = 1337  # model init, dropout and the data order all follow from it


INIT_FROM_CHOICES = ("scratch", "resume", *HUB_MODELS)
CHECKPOINT_NAME = "ckpt.pt"
METRICS_NAME = "metrics.jsonl"


class DataError(ValueError):
    """A dataset that exists but cannot be used as asked (too short, truncated file)."""


class TrainingError(RuntimeError):
    """A run that must stop: diverged (NaN), or would overwrite a checkpoint, or a bad DDP setup."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

def validate_config(cfg):
    """Check values the type annotations cannot express, before any work is done."""
    if cfg.init_from not in INIT_FROM_CHOICES:
        raise ConfigError(f"init_from={cfg.init_from!r} is not one of {', '.join(INIT_FROM_CHOICES)}")
    for name in ("eval_interval", "eval_iters", "log_interval", "gradient_accumulation_steps",
                 "batch_size", "block_size"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    for name in ("max_iters", "warmup_iters", "weight_decay", "grad_clip"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.learning_rate <= 0:
        raise ConfigError(f"learning_rate must be > 0, got {cfg.learning_rate}")
    if cfg.init_from == "scratch":
        try:  # GPTConfig knows the shape rules (e.g. n_embd divisible by n_head)
            GPTConfig(block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                      n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    elif not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {cfg.dropout}")


def resolve_config(cfg, device, dtype):
    """Fill in every 'auto'/None with the value actually used, so what is printed and saved is exact."""
    return dataclasses.replace(
        cfg, device=device, dtype=dtype,
        lr_decay_iters=cfg.max_iters if cfg.lr_decay_iters is None else cfg.lr_decay_iters,
        min_lr=cfg.learning_rate / 10 if cfg.min_lr is None else cfg.min_lr)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

@dataclass
class TokenFile:
    path: Path
    header_bytes: int  # bytes before the first token (llm.c shards have a 1024-byte header)
    num_tokens: int
    dtype: np.dtype


class BatchLoader:
    """
    Random (B, T) training windows from a prepared dataset, the one reader every script uses.

    data/<dataset>/meta.json says the format: "bin" (train.bin / val.bin, one raw token array
    each) or "shards" (llm.c token files with a 1024-byte header, as FineWeb comes). A split may
    be many files; a window never crosses a file boundary (files are separate documents' streams).

    Memory stays flat however long training runs: each batch opens the files, reads just its
    B windows of T+1 tokens, and closes them. (Keeping one np.memmap of a 20 GB file open
    would slowly map every page it touches into the process.)

    get_batch(split) is the training stream: its generator state is saved in checkpoints
    (state_dict), so a resumed run replays exactly the batches an uninterrupted one sees. Under
    DDP every rank draws the window offsets of *all* ranks from the same stream and keeps its own:
    ranks see different data, and together they see what one process with the same total batch
    would see. eval_batches() is separate and fixed, so evaluating never moves the stream.
    """

    def __init__(self, dataset_dir, batch_size, block_size, device="cpu", seed=1337,
                 rank=0, world_size=1):
        self.dataset_dir = Path(dataset_dir)
        self.batch_size, self.block_size = batch_size, block_size
        self.device = device
        self.rank, self.world_size = rank, world_size
        self.meta = prepare.load_meta(self.dataset_dir)  # names the prepare.py command if missing
        self.files = {split: self._open_split(split) for split in ("train", "val")}
        # A window starts anywhere in [0, n - T - 1] of a file of n tokens: n - T choices.
        self.windows_per_file = {split: np.array([max(0, f.num_tokens - block_size) for f in files])
                                 for split, files in self.files.items()}
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0  # training batches taken so far (the "data position", for humans)

    def _open_split(self, split):
        meta, directory = self.meta, self.dataset_dir
        if meta.get("format", "bin") == "shards":
            files = []
            for name in meta[f"{split}_shards"]:
                path = directory / name
                if not path.is_file():
                    raise FileNotFoundError(f"{path} is missing; recreate the dataset with: "
                                            f"{prepare.prepare_command(directory.name)}")
                num_tokens = prepare.read_shard_header(path)  # checks magic, version and size
                files.append(TokenFile(path, prepare.SHARD_HEADER_BYTES, num_tokens, np.dtype("<u2")))
        else:
            path = directory / f"{split}.bin"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing; recreate the dataset with: "
                                        f"{prepare.prepare_command(directory.name)}")
            dtype = np.dtype(meta["dtype"]).newbyteorder("<")
            size = path.stat().st_size
            if size % dtype.itemsize:
                raise DataError(f"{path} is {size} bytes, not a whole number of {dtype.name} tokens: "
                                f"it is truncated; recreate it with {prepare.prepare_command(directory.name)}")
            files = [TokenFile(path, 0, size // dtype.itemsize, dtype)]

        # A window is T inputs plus one more token: the target of the last input.
        needed = self.block_size + 1
        if all(f.num_tokens < needed for f in files):
            longest = max((f.num_tokens for f in files), default=0)
            where = "has" if len(files) == 1 else "has no file longer than; its longest has"
            raise DataError(
                f"the {split} split of {directory} {where} {longest:,} tokens, but block_size="
                f"{self.block_size} needs at least {needed:,} (block_size inputs + 1 target). "
                f"Use a smaller --block_size or more text")
        return files

    def _draw(self, split, generator):
        """B random window positions as (file index, start) pairs."""
        counts = self.windows_per_file[split]
        ends = np.cumsum(counts)  # window index i lies in file k when ends[k-1] <= i < ends[k]
        picks = torch.randint(int(ends[-1]), (self.batch_size,), generator=generator).numpy()
        file_index = np.searchsorted(ends, picks, side="right")
        starts = picks - (ends[file_index] - counts[file_index])
        return list(zip(file_index.tolist(), starts.tolist()))

    def _read(self, split, windows):
        """Read the windows from disk -> x, y (B, T) int64 on the device; y is x shifted by one."""
        T = self.block_size
        rows = np.empty((len(windows), T + 1), dtype=np.int64)
        with contextlib.ExitStack() as stack:  # every file opened here is closed when the batch is read
            handles = {}
            for row, (k, start) in enumerate(windows):
                token_file = self.files[split][k]
                if k not in handles:
                    handles[k] = stack.enter_context(open(token_file.path, "rb"))
                f = handles[k]
                f.seek(token_file.header_bytes + start * token_file.dtype.itemsize)
                data = f.read((T + 1) * token_file.dtype.itemsize)
                if len(data) != (T + 1) * token_file.dtype.itemsize:
                    raise DataError(f"{token_file.path} is shorter than when it was opened; was it rewritten?")
                rows[row] = np.frombuffer(data, dtype=token_file.dtype)
        tokens = torch.from_numpy(rows)
        # Position t of x is trained to predict position t of y, the next token.
        x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()  # each (B, T)
        if self.device.startswith("cuda"):
            # Pinned (page-locked) memory lets the copy run asynchronously while the GPU works.
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

    def get_batch(self, split="train"):
        """The next batch of this rank from the training stream: (x, y), each (B, T)."""
        mine = None
        for rank in range(self.world_size):  # draw every rank's windows, keep our own
            windows = self._draw(split, self.generator)
            if rank == self.rank:
                mine = windows
        self.batches_drawn += 1
        return self._read(split, mine)

    def eval_batches(self, split, num_batches, seed=0):
        """num_batches fixed batches of a split: the same ones on every call, on every rank."""
        generator = torch.Generator().manual_seed(seed)
        for _ in range(num_batches):
            yield self._read(split, self._draw(split, generator))

    def state_dict(self):
        return {"generator": self.generator.get_state(), "batches_drawn": self.batches_drawn}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
        self.batches_drawn = state["batches_drawn"]


# --------------------------------------------------------------------------------------------
# Optimization: learning rate, optimizer, the training step, evaluation
# --------------------------------------------------------------------------------------------

def get_lr(it, learning_rate, min_lr, warmup_iters, lr_decay_iters):
    """Linear warmup to learning_rate, then a cosine down to min_lr at lr_decay_iters, then flat."""
    if it < warmup_iters:
        # Adam's moment estimates are noise in the first steps; small steps until they settle.
        # (it + 1) so that step 0 already moves: lr is never 0.
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= lr_decay_iters:
        return min_lr
    progress = (it - warmup_iters) / (lr_decay_iters - warmup_iters)  # 0 -> 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0, slow at both ends
    return min_lr + coeff * (learning_rate - min_lr)


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


def configure_optimizer(model, weight_decay, learning_rate, betas, device):
    """
    AdamW with weight decay on the matrices only (Linear weights, embeddings: dim >= 2).
    Decay pulls weights towards 0 to keep them small; biases and LayerNorm gains (1-D) only
    shift and scale, and pulling a LayerNorm gain towards 0 would just fight the normalisation.
    """
    params = [p for p in model.parameters() if p.requires_grad]  # a tied matrix appears once
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # The fused kernel updates every parameter in one pass instead of a dozen small operations
    # per tensor: one launch on a GPU; on a CPU the quick-start step gets ~6% faster (PyTorch
    # >= 2.4 has it for both; MPS and others keep the default implementation).
    fused = device.split(":")[0] in ("cuda", "cpu") and "fused" in inspect.signature(torch.optim.AdamW).parameters
    extra = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)


def train_step(model, optimizer, get_batch, grad_accum_steps, scaler=None, grad_clip=0.0,
               ctx=None):
    """
    One optimizer step: grad_accum_steps forward/backward micro-steps, then clip and update.
    Returns the mean loss over the micro-steps as a detached tensor (.item() waits for the GPU).

    model: a GPT, possibly compiled and/or wrapped in DDP. get_batch: a function returning
    (x, y). scaler: a torch.amp.GradScaler (needed for float16) or None. ctx: the autocast
    context (common.autocast), None for plain float32.
    """
    ctx = contextlib.nullcontext() if ctx is None else ctx
    total_loss = None
    for micro_step in range(grad_accum_steps):
        x, y = get_batch()
        # DDP averages gradients across processes inside backward(). Doing that after every
        # micro-step would be wasted communication: only the last one needs the synced sum.
        last = micro_step == grad_accum_steps - 1
        sync = model.no_sync() if isinstance(model, DDP) and not last else contextlib.nullcontext()
        with sync:
            with ctx:
                _, loss = model(x, y)
            # Gradients add up over backward() calls. The loss is a mean over its micro-batch, so
            # dividing by grad_accum_steps makes the sum a mean over all micro-batches: the same
            # gradient one batch grad_accum_steps times larger would give.
            loss = loss / grad_accum_steps
            # float16 gradients can underflow to 0: the scaler multiplies the loss first.
            (scaler.scale(loss) if scaler is not None else loss).backward()
        total_loss = loss.detach() if total_loss is None else total_loss + loss.detach()
    if grad_clip > 0:
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        # One unlucky batch can produce a huge gradient; capping the norm keeps the step bounded.
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)  # skips the step if the scaled gradients overflowed
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)  # free the gradients' memory until the next backward
    return total_loss


@torch.no_grad()
def estimate_loss(model, loader, eval_iters, ctx=None):
    """Mean loss over eval_iters fixed batches of each split, model in eval mode (no dropout)."""
    ctx = contextlib.nullcontext() if ctx is None else ctx
    was_training = model.training
    model.eval()
    losses = {}
    for split in ("train", "val"):
        total = 0.0
        for x, y in loader.eval_batches(split, eval_iters):
            with ctx:
                _, loss = model(x, y)
            total += loss.item()
        losses[split] = total / eval_iters
    model.train(was_training)
    return losses


# --------------------------------------------------------------------------------------------
# Setup: processes, model, checkpoints
# --------------------------------------------------------------------------------------------

@dataclass
class Distributed:
    """Which process this is. torchrun sets RANK, LOCAL_RANK and WORLD_SIZE for each one it starts."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    enabled: bool = False

    @property
    def is_master(self):  # rank 0 alone prints, logs and writes files
        return self.rank == 0


def setup_distributed(device):
    """Join the process group when started by torchrun; returns (Distributed, device)."""
    if "RANK" not in os.environ:
        return Distributed(), device
    dist = Distributed(rank=int(os.environ["RANK"]), local_rank=int(os.environ["LOCAL_RANK"]),
                       world_size=int(os.environ["WORLD_SIZE"]), enabled=True)
    if device.startswith("cuda"):
        device = f"cuda:{dist.local_rank}"  # one GPU per process
        torch.cuda.set_device(device)
        backend = "nccl"  # NVIDIA's GPU-to-GPU collectives
    else:
        backend = "gloo"  # works on CPU: used for testing DDP without GPUs
    torch.distributed.init_process_group(backend=backend)
    return dist, device


def unwrap_model(model):
    """The plain GPT inside DDP (.module) and torch.compile (._orig_mod) wrappers.
    Its state_dict has clean keys, loadable without either wrapper."""
    if isinstance(model, DDP):
        model = model.module
    return getattr(model, "_orig_mod", model)


def build_model(cfg, meta, checkpoint=None):
    """The GPT to train: from scratch, from a checkpoint (resume), or OpenAI's GPT-2 weights."""
    if cfg.init_from == "resume":
        # The shape comes from the checkpoint (the weights only fit it); dropout from this run.
        model_args = dict(checkpoint["model_args"], dropout=cfg.dropout)
        model = GPT(GPTConfig(**model_args))
        model.load_state_dict(checkpoint["model"])
    elif cfg.init_from in HUB_MODELS:
        if meta.get("tokenizer") != "gpt2":
            raise DataError(f"init_from={cfg.init_from} needs a dataset tokenized with GPT-2's tokenizer "
                            f"(e.g. shakespeare, fineweb10B); {cfg.dataset} uses {meta.get('tokenizer')!r}")
        model = GPT.from_pretrained(cfg.init_from, dropout=cfg.dropout)
    else:
        model = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=meta["vocab_size"],
                              n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                              dropout=cfg.dropout, bias=cfg.bias))
    if cfg.block_size > model.config.block_size:
        raise ConfigError(f"block_size={cfg.block_size} is longer than the model's context of "
                          f"{model.config.block_size} tokens; use --block_size={model.config.block_size} or less")
    if meta["vocab_size"] > model.config.vocab_size:
        raise DataError(f"dataset {cfg.dataset} has {meta['vocab_size']} token ids but the model only "
                        f"{model.config.vocab_size}: it was trained on a different tokenizer")
    return model


def checkpoint_state(model, optimizer, scaler, loader, cfg, iter_num, best_val_loss, device):
    """Everything needed to continue exactly where this run is now."""
    raw_model = unwrap_model(model)
    rng = {"torch": torch.get_rng_state()}  # dropout masks come from this generator
    if device.startswith("cuda"):
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return {
        "model": raw_model.state_dict(),
        "model_args": dataclasses.asdict(raw_model.config),
        "config": common.config_to_dict(cfg),
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


def check_out_dir(cfg):
    """Refuse to start a new run on top of an existing checkpoint, unless asked to."""
    ckpt_path = Path(cfg.out_dir) / CHECKPOINT_NAME
    if cfg.init_from == "resume" or cfg.eval_only or not ckpt_path.exists():
        return
    if not cfg.overwrite:
        raise TrainingError(
            f"{ckpt_path} already holds a checkpoint, and init_from={cfg.init_from} would replace it. "
            f"To continue that run: --init_from=resume. To start over: pick another --out_dir, "
            f"delete {ckpt_path}, or pass --overwrite=True")


# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------

def append_metrics(path, record):
    """One JSON object per line: easy to append to, to plot, and to read back after a crash."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def trim_metrics(path, iter_num):
    """On resume, drop the events the resumed run will produce again: everything after the
    checkpoint (an eval at iter_num happened before it was written; a train step did not)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short when the run was killed
            continue
        if record["iter"] < iter_num or (record["iter"] == iter_num and record["event"] == "eval"):
            kept.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)


def format_duration(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def start_wandb(cfg):
    try:
        wandb = importlib.import_module("wandb")  # imported only when asked for: optional dependency
    except ImportError:
        raise ConfigError("wandb_log=True needs the wandb package: pip install wandb") from None
    wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name, config=common.config_to_dict(cfg))
    return wandb


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

def main(argv=None):
    """Parse the command line (config files and --key=value) and train. Returns a summary dict."""
    cfg = common.parse_config(TrainConfig(), sys.argv[1:] if argv is None else argv)
    validate_config(cfg)
    return train(cfg)


def train(cfg):
    dist, device = setup_distributed(common.pick_device(cfg.device))
    try:
        return _train(cfg, dist, device)
    finally:
        if dist.enabled:
            torch.distributed.destroy_process_group()


def _train(cfg, dist, device):
    say = print if dist.is_master else (lambda *args, **kwargs: None)
    cfg = resolve_config(cfg, device, common.pick_dtype(device, cfg.dtype))
    if cfg.gradient_accumulation_steps % dist.world_size:
        raise TrainingError(
            f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} counts micro-steps over all "
            f"{dist.world_size} processes and must be divisible by that number; use e.g. "
            f"--gradient_accumulation_steps={dist.world_size * math.ceil(cfg.gradient_accumulation_steps / dist.world_size)}")
    grad_accum_steps = cfg.gradient_accumulation_steps // dist.world_size  # this process's share
    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size
    check_out_dir(cfg)
    out_dir = Path(cfg.out_dir)
    ckpt_path, metrics_path = out_dir / CHECKPOINT_NAME, out_dir / METRICS_NAME

    say("config:")
    if dist.is_master:
        common.print_config(cfg)
    say(f"{dist.world_size} process(es), {grad_accum_steps} micro-step(s) each: "
        f"{tokens_per_iter:,} tokens per iteration")

    torch.manual_seed(cfg.seed + dist.rank)  # model init (same on all ranks: DDP copies rank 0's) and dropout
    common.allow_tf32(device)

    # --- data ---
    if dist.is_master:
        prepare.ensure_dataset(cfg.dataset, cfg.data_dir)  # makes shakespeare(_char) if missing
    if dist.enabled:
        torch.distributed.barrier()  # the others wait until rank 0 has prepared it
    dataset_dir = Path(cfg.data_dir or prepare.DATA_DIR) / cfg.dataset
    loader = BatchLoader(dataset_dir, cfg.batch_size, cfg.block_size, device, cfg.seed,
                         dist.rank, dist.world_size)

    # --- model, optimizer, loss scaler ---
    checkpoint = common.load_checkpoint(ckpt_path) if cfg.init_from == "resume" else None
    saved_rng = checkpoint["rng"] if checkpoint is not None else None
    model = build_model(cfg, loader.meta, checkpoint).to(device)
    raw_model = model
    say(f"model: {raw_model.get_num_params() / 1e6:.2f}M parameters ({cfg.init_from})")
    ctx = common.autocast(device, cfg.dtype)

    if cfg.eval_only:
        losses = estimate_loss(model, loader, cfg.eval_iters, ctx)
        result = {"train_loss": losses["train"], "val_loss": losses["val"],
                  "val_ppl": math.exp(losses["val"])}
        say(f"eval ({cfg.init_from} on {cfg.dataset}, {cfg.eval_iters} batches of "
            f"{cfg.batch_size}x{cfg.block_size}): train loss {losses['train']:.4f}, "
            f"val loss {losses['val']:.4f}, val perplexity {result['val_ppl']:.2f}")
        return result

    optimizer = configure_optimizer(model, cfg.weight_decay, cfg.learning_rate,
                                    (cfg.beta1, cfg.beta2), device)
    # float16 has a narrow range: small gradients underflow to 0. The scaler multiplies the loss
    # (and so every gradient) by a large factor, and divides it out before the update.
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=cfg.dtype == "float16")
    iter_num, best_val_loss = 0, float("inf")
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint["scaler"]:
            scaler.load_state_dict(checkpoint["scaler"])
        loader.load_state_dict(checkpoint["data"])
        iter_num, best_val_loss = checkpoint["iter_num"], checkpoint["best_val_loss"]
        say(f"resuming from {ckpt_path} at iteration {iter_num} (best val loss {best_val_loss:.4f})")
    start_iter = iter_num
    del checkpoint  # the weights are in the model now; free the copy

    if cfg.compile:
        say("compiling the model (takes a minute)...")
        model = torch.compile(model)
    if dist.enabled:
        model = DDP(model, device_ids=[dist.local_rank] if device.startswith("cuda") else None)
    eval_model = model.module if dist.enabled else model  # rank 0 evaluates alone, without DDP's hooks

    # --- logging ---
    wandb = None
    if dist.is_master:
        out_dir.mkdir(parents=True, exist_ok=True)
        if cfg.init_from == "resume":
            trim_metrics(metrics_path, iter_num)
        else:
            metrics_path.unlink(missing_ok=True)  # a new run starts a new log
            if cfg.overwrite:
                ckpt_path.unlink(missing_ok=True)
        wandb = start_wandb(cfg) if cfg.wandb_log else None
    flops_per_token = raw_model.flops_per_token()
    peak = common.peak_flops(device)

    # The RNG goes back last: building the model above drew random numbers for its init.
    if saved_rng is not None:
        restore_rng(saved_rng, device, dist, cfg.seed, iter_num)

    # --- the loop ---
    last_eval = {}
    step_seconds = None  # moving average of one step's time
    while True:
        lr = get_lr(iter_num, cfg.learning_rate, cfg.min_lr, cfg.warmup_iters, cfg.lr_decay_iters) \
            if cfg.decay_lr else cfg.learning_rate
        set_lr(optimizer, lr)
        finished = iter_num >= cfg.max_iters

        # Evaluate (and checkpoint) every eval_interval steps and at the end. A resumed run
        # skips its first one: the checkpoint was written right after that very evaluation.
        due = iter_num % cfg.eval_interval == 0 or finished
        if dist.is_master and due and not (cfg.init_from == "resume" and iter_num == start_iter):
            losses = estimate_loss(eval_model, loader, cfg.eval_iters, ctx)
            if not all(math.isfinite(v) for v in losses.values()):
                raise TrainingError(f"evaluation at iteration {iter_num} gave {losses}: the model has "
                                    f"diverged; {ckpt_path} was left as it was")
            improved = losses["val"] < best_val_loss
            best_val_loss = min(best_val_loss, losses["val"])
            last_eval = {"event": "eval", "iter": iter_num, "train_loss": losses["train"],
                         "val_loss": losses["val"], "val_ppl": math.exp(losses["val"]),
                         "best_val_loss": best_val_loss, "lr": lr}
            say(f"eval iter {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, "
                f"val perplexity {last_eval['val_ppl']:.2f}" + (" (best so far)" if improved else ""))
            append_metrics(metrics_path, last_eval)
            if wandb:
                wandb.log(last_eval, step=iter_num)
            if iter_num > start_iter and (improved or cfg.always_save_checkpoint):
                common.save_checkpoint(checkpoint_state(model, optimizer, scaler, loader, cfg, iter_num,
                                                        best_val_loss, device), ckpt_path)
                say(f"saved {ckpt_path}")
        if finished:
            break

        t0 = time.perf_counter()
        loss = train_step(model, optimizer, lambda: loader.get_batch("train"), grad_accum_steps,
                          scaler, cfg.grad_clip, ctx)
        loss_value = loss.item()  # waits for the GPU: the step is really done
        dt = time.perf_counter() - t0
        if not math.isfinite(loss_value):
            kept = (f"the last good checkpoint, {ckpt_path}, was kept: resume from it with "
                    f"--init_from=resume" if ckpt_path.exists() else "no checkpoint had been written yet")
            raise TrainingError(f"loss is {loss_value} at iteration {iter_num}: training diverged. "
                                f"Try a lower --learning_rate or a longer --warmup_iters; {kept}")
        # Skip the first steps in the average: they include compiling and memory allocation.
        # (The ETA counts training steps only, not the evaluations still to come.)
        if iter_num - start_iter >= 2:
            step_seconds = dt if step_seconds is None else 0.9 * step_seconds + 0.1 * dt
        if dist.is_master and iter_num % cfg.log_interval == 0:
            tokens_per_sec = tokens_per_iter / dt
            record = {"event": "train", "iter": iter_num, "loss": loss_value, "lr": lr,
                      "ms_per_iter": dt * 1000, "tokens_per_sec": tokens_per_sec}
            line = (f"iter {iter_num}/{cfg.max_iters}: loss {loss_value:.4f}, lr {lr:.2e}, "
                    f"{dt * 1000:.1f} ms/iter, {tokens_per_sec:,.0f} tokens/s")
            if peak:  # model FLOPs utilisation: the share of the GPUs' peak doing useful maths
                record["mfu"] = flops_per_token * tokens_per_sec / (peak * dist.world_size)
                line += f", mfu {record['mfu']:.1%}"
            if step_seconds is not None:
                line += f", eta {format_duration((cfg.max_iters - iter_num - 1) * step_seconds)}"
            say(line)
            append_metrics(metrics_path, record)
            if wandb:
                wandb.log(record, step=iter_num)
        iter_num += 1

    if wandb:
        wandb.finish()
    summary = {"iter_num": iter_num, "best_val_loss": best_val_loss}
    summary.update({k: last_eval[k] for k in ("train_loss", "val_loss", "val_ppl") if k in last_eval})
    return summary


if __name__ == "__main__":
    sys.exit(common.run_command(main, (ConfigError, CheckpointError, DataError, TrainingError,
                                       FileNotFoundError, prepare.ShardError)))
