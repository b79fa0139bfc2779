"""
Train a GPT: one loop, from a laptop CPU to a node of GPUs.

    python train.py                                    # CPU quick start: a small char-level Shakespeare model
    python train.py config/train_shakespeare_char.py   # the GPU "baby GPT" (6 layers, ~10M parameters)
    python train.py config/train_gpt2.py               # GPT-2 124M on FineWeb, one GPU
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py   # ... on 8 GPUs
    python train.py config/finetune_shakespeare.py     # finetune OpenAI's GPT-2 on Shakespeare
    python train.py config/eval_gpt2.py                # evaluate OpenAI's GPT-2 on FineWeb and exit
    python train.py --init_from=resume                 # continue the run in out_dir where it stopped
    python train.py --help                             # every option, its default and what it does

Settings: the defaults are TrainConfig below; config files (plain Python assignments) and then
--key=value overrides change them, left to right. A misspelt key is an error naming the right one.

What one run does, in order:
  1. main() checks the config (parse_args), before any work is done;
  2. train() picks device and dtype and joins the other processes under torchrun;
  3. setup() opens the dataset (data/<dataset>/, made by prepare.py; the default one is made if
     missing) and builds the model: from scratch, from out_dir's checkpoint (resume) or from
     OpenAI's GPT-2 weights;
  4. training_loop(): evaluate every eval_interval steps (and checkpoint), take one optimizer
     step, log.

Design choices:
  - One function, train_step(), is the whole optimizer step (gradient accumulation, mixed
    precision loss scaling, clipping, the update). bench.py imports and times this same function.
  - The data come from data.BatchLoader, which draws random windows from a generator whose state
    goes into the checkpoint: a resumed run sees exactly the batches the uninterrupted run would
    have seen. Every rank draws from the same stream and keeps its own slice, so the data a step
    uses does not depend on how many GPUs share it.
  - Evaluation uses fixed batches (a generator with a fixed seed each time): evaluations differ
    only because the model changed, and evaluating never disturbs the training stream.
  - A checkpoint is only ever written right after an evaluation, atomically, and never after a
    NaN. Resuming therefore restarts exactly at an evaluated, saved iteration.
  - Everything a resumed run needs is in its checkpoint (checkpoint.training_state() lists it):
    out_dir/ckpt.pt, or for a sharded FSDP run the ckpt-<iter>/ folder that out_dir/ckpt.json
    names. It loads with weights_only=True. Dropout's random masks need no saved state: each
    step's follow from (seed, step, rank).

The machinery lives in modules of its own: configurator.py (options), data.py (token files and
the reader), optim.py (AdamW, Muon), checkpoint.py (atomic save, safe load, shards),
distributed.py (torchrun, DDP, FSDP), metrics.py (the log), common.py (device, dtype, user errors).
"""

import contextlib
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch

import common
import prepare
from checkpoint import (delete_checkpoints, find_checkpoint, load_training_checkpoint, refuse_to_overwrite,
                        restore_training_state, save_training_checkpoint, training_state)
from common import ConfigError, UserError
from configurator import config_to_dict, parse_config, print_config
from data import BatchLoader, DataError, LossSums, dataset_path
from distributed import (Distributed, check_parallel, gradient_sync, is_sharded, setup_distributed,
                         teardown_distributed, unwrap_model, wrap_model)
from metrics import METRICS_NAME, RunLog, format_duration
import hf
from model import GPT, GPTConfig
from optim import configure_optimizer, set_lr


@dataclass
class TrainConfig:
    # Defaults: the CPU quick start, about a minute on two laptop cores, reaching a val loss of about
    # 1.64 on character-level Shakespeare (README, "Quick start"). On a CPU the budget is arithmetic:
    # a small, narrow model sees more text in that time than a big one. Muon beats AdamW in the same
    # time (README, "Optimizers"; the AdamW recipe: config/quickstart_adamw.py).
    # --- output, evaluation, checkpoints ---
    out_dir: str = "out"  # ckpt.pt and metrics.jsonl go here
    eval_interval: int = 500  # evaluate (and checkpoint) every this many iterations, and at the end
    eval_iters: int = 20  # batches per split in one evaluation: more = less noisy, slower
    log_interval: int = 10  # print and log the training loss every this many iterations
    eval_only: bool = False  # evaluate once (the resumed checkpoint or GPT-2) and exit
    always_save_checkpoint: bool = True  # False: write ckpt.pt only when val loss improves
    # where the weights start: 'scratch', 'resume' (out_dir/ckpt.pt), or OpenAI's 'gpt2' ... 'gpt2-xl'
    init_from: Literal["scratch", "resume", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"] = "scratch"
    overwrite: bool = False  # let a new run replace the checkpoint already in out_dir
    # --- Weights & Biases (optional, `pip install wandb`) ---
    wandb_log: bool = False  # log metrics to Weights & Biases
    wandb_project: str = "gpt-from-scratch"  # Weights & Biases project name
    wandb_run_name: str = "run"  # Weights & Biases run name
    # --- data ---
    dataset: str = "shakespeare_char"  # the folder data/<dataset>/ that prepare.py writes
    data_dir: Optional[str] = None  # folder holding the datasets; None = data/ next to prepare.py
    gradient_accumulation_steps: int = 1  # micro-steps per optimizer step, counted over all GPUs
    batch_size: int = 48  # sequences per micro-step, per GPU (Muon's fixed cost per step favours large batches)
    block_size: int = 64  # context length: tokens per sequence
    # --- model (scratch only: resume and gpt2* bring their own shape; dropout always applies) ---
    n_layer: int = 2  # the CPU quick start; config/train_shakespeare_char.py has the 6-layer GPU model
    n_head: int = 4  # 4 heads of 24 dimensions
    n_embd: int = 96  # width of the residual stream
    dropout: float = 0.0  # no regularisation needed: a minute of training cannot overfit
    bias: bool = False  # biases in Linear/LayerNorm: GPT-2 has them; without is slightly faster
    # --- the optimizer (optim.py) and the learning-rate schedule ---
    # 'adamw' for every parameter, or 'muon' for the blocks' matrices and AdamW for the rest
    optimizer: Literal["adamw", "muon"] = "muon"
    learning_rate: float = 8e-3  # the peak, reached after warmup
    max_iters: int = 840  # optimizer steps in total
    weight_decay: float = 0.1  # decay, on matrices only
    beta1: float = 0.9  # AdamW momentum
    beta2: float = 0.99  # AdamW second-moment decay: GPT-2 used 0.95; small-batch recipes often use 0.99
    muon_lr_ratio: float = 1.0  # Muon's learning rate = learning_rate x this
    # Muon's per-matrix scaling: AdamW-sized updates (Moonshot), or 'original' (Keller Jordan's)
    muon_lr_scaling: Literal["match_rms_adamw", "original"] = "match_rms_adamw"
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 = no clipping
    decay_lr: bool = True  # False: constant learning_rate
    warmup_iters: int = 70  # linear warmup steps before the cosine
    lr_decay_iters: Optional[int] = None  # cosine ends here; None = max_iters
    min_lr: Optional[float] = None  # the floor of the cosine; None = learning_rate / 10
    # --- system ---
    device: str = "auto"  # 'auto' = cuda, then mps, then cpu; or e.g. 'cpu', 'cuda:1'
    # 'auto' = bfloat16 on recent GPUs, float16 on older ones, float32 on CPU
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    compile: bool = False  # torch.compile the model: faster steps on GPU after a minute of compiling
    # under torchrun, 'ddp': every process holds the whole model; 'fsdp': weights, gradients, optimizer state split 1/N
    parallel: Literal["ddp", "fsdp"] = "ddp"
    activation_checkpointing: bool = False  # recompute each block in backward: far less memory, ~1.25-1.6x the time
    seed: int = 1337  # model init, dropout and the data order all follow from it


class TrainingError(UserError):
    """A run that must stop: diverged (NaN), would overwrite a checkpoint, or a bad DDP setup."""


def validate_config(cfg, world_size=None):
    """Check values the type annotations cannot express, before any work is done. world_size: how
    many processes torchrun starts (None: a plain `python train.py`, one process, no torchrun)."""
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
    check_parallel(cfg.parallel, cfg.dtype, world_size)  # e.g. fsdp needs torchrun
    # The micro-steps are shared out between the processes: they must divide evenly.
    Distributed(world_size=world_size or 1).share("gradient_accumulation_steps", cfg.gradient_accumulation_steps)


def resolve_config(cfg, device, dtype):
    """Fill in every 'auto'/None with the value actually used, so what is printed and saved is exact."""
    return dataclasses.replace(
        cfg, device=device, dtype=dtype,
        lr_decay_iters=cfg.max_iters if cfg.lr_decay_iters is None else cfg.lr_decay_iters,
        min_lr=cfg.learning_rate / 10 if cfg.min_lr is None else cfg.min_lr)


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
        # Under DDP, gradients are averaged across processes only on the last micro-step: the
        # earlier ones would be wasted communication, since only the final sum is used.
        with gradient_sync(model, sync=micro_step == grad_accum_steps - 1):
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
    """Mean loss over eval_iters fixed batches of each split, model in eval mode (no dropout), and
    bits per byte ("train_bpb", "val_bpb"): the same loss per byte of text, which compares models
    with different tokenizers. Both come from one pass of per-token losses (data.LossSums)."""
    ctx = contextlib.nullcontext() if ctx is None else ctx
    was_training = model.training
    model.eval()
    losses = {}
    for split in ("train", "val"):
        sums = LossSums(loader.token_bytes)
        for x, y in loader.eval_batches(split, eval_iters):
            with ctx:
                logits, _ = model(x)
            sums.add(logits, y)
        losses[split], losses[f"{split}_bpb"] = sums.loss, sums.bits_per_byte
    model.train(was_training)
    return losses


# --------------------------------------------------------------------------------------------
# Setup: the model, and what a checkpoint holds
# --------------------------------------------------------------------------------------------

def build_model(cfg, meta, checkpoint=None):
    """The GPT to train: from scratch, from a checkpoint (resume), or OpenAI's GPT-2 weights."""
    if cfg.init_from == "resume":
        # The shape comes from the checkpoint; the weights go in once the model is wrapped
        # (restore_training_state), as FSDP shards them. Dropout is this run's.
        model = GPT(GPTConfig(**dict(checkpoint["model_args"], dropout=cfg.dropout)))
    elif cfg.init_from in hf.GPT2_MODELS:
        if meta.get("tokenizer") != "gpt2":
            raise DataError(f"init_from={cfg.init_from} needs a dataset tokenized with GPT-2's tokenizer "
                            f"(e.g. shakespeare, fineweb10B); {cfg.dataset} uses {meta.get('tokenizer')!r}")
        model = hf.from_pretrained(cfg.init_from, dropout=cfg.dropout)
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


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

def parse_args(argv, world_size=None):
    """The checked TrainConfig of a command line (config files and --key=value), without doing any
    work: what main() runs, and what the tests check every documented command with."""
    usage = __doc__[:__doc__.index("What one run does")]  # --help: the commands, then every option
    cfg = parse_config(TrainConfig(), argv, usage=usage)
    validate_config(cfg, world_size)
    return cfg


def main(argv=None):
    """Parse the command line and train. Returns a summary dict."""
    world_size = int(os.environ["WORLD_SIZE"]) if common.started_by_torchrun() else None
    return train(parse_args(sys.argv[1:] if argv is None else argv, world_size))


def train(cfg):
    """Steps 1-3 (setup), then step 4 (the loop). Returns a summary dict."""
    dist, device = setup_distributed(common.pick_device(cfg.device), cfg.parallel)
    try:
        cfg = resolve_config(cfg, device, common.pick_dtype(device, cfg.dtype))
        run = setup(cfg, dist)
        return evaluate_once(run) if cfg.eval_only else training_loop(run)
    finally:
        teardown_distributed(dist)


@dataclass
class Run:
    """What the loop works on: made by setup(), or restored from a checkpoint by it."""
    cfg: TrainConfig
    dist: Distributed
    loader: BatchLoader
    model: torch.nn.Module  # what train_step runs: the GPT, maybe compiled, maybe inside DDP
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ctx: object  # the autocast context (common.autocast)
    log: RunLog
    iter_num: int = 0  # optimizer steps done
    best_val_loss: float = float("inf")


def setup(cfg, dist):
    """Check the output folder, open the dataset, build (or restore) model and optimizer."""
    device, out_dir = cfg.device, Path(cfg.out_dir)
    if cfg.init_from != "resume" and not cfg.eval_only and not cfg.overwrite:
        refuse_to_overwrite(out_dir, f"init_from={cfg.init_from}")  # a new run would replace it
    log = RunLog(enabled=dist.is_master)  # only rank 0 prints and writes
    log.say("config:")
    if dist.is_master:
        print_config(cfg)
    torch.manual_seed(cfg.seed)  # the model init: the same on every rank (FSDP keeps each rank's shard of it)
    common.allow_tf32(device)

    # --- data ---
    if dist.is_master:
        prepare.ensure_dataset(cfg.dataset, cfg.data_dir)  # makes shakespeare(_char) if missing
    dist.barrier()  # the others wait until rank 0 has prepared it
    loader = BatchLoader(dataset_path(cfg.dataset, cfg.data_dir), cfg.batch_size, cfg.block_size,
                         device, cfg.seed, dist.rank, dist.world_size)

    # --- model (wrapped for DDP or FSDP under torchrun), optimizer, loss scaler ---
    checkpoint = load_training_checkpoint(out_dir) if cfg.init_from == "resume" else None
    model = build_model(cfg, loader.meta, checkpoint).to(device)
    model.activation_checkpointing = cfg.activation_checkpointing
    log.say(f"model: {model.get_num_params() / 1e6:.2f}M parameters ({cfg.init_from})")
    model = wrap_model(model, dist, device, cfg.parallel, cfg.dtype)
    if cfg.compile and not cfg.eval_only:
        log.say("compiling the model (takes a minute)...")
        model = torch.compile(model)
    optimizer = configure_optimizer(model, cfg.optimizer, cfg.learning_rate, cfg.weight_decay, (cfg.beta1, cfg.beta2),
                                    device, cfg.muon_lr_ratio, cfg.muon_lr_scaling)
    # float16 has a narrow range: small gradients underflow to 0. The scaler multiplies the loss
    # (and so every gradient) by a large factor, and divides it out before the update.
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=cfg.dtype == "float16")
    run = Run(cfg, dist, loader, model, optimizer, scaler, common.autocast(device, cfg.dtype), log)
    if checkpoint is not None:
        run.iter_num, run.best_val_loss = restore_training_state(checkpoint, model, optimizer, scaler, loader)
        log.say(f"resuming from {checkpoint['path']} at iteration {run.iter_num} "
                f"(best val loss {run.best_val_loss:.4f})")
    if cfg.eval_only:
        return run

    # A new run starts a new log; a resumed one keeps what came before its checkpoint.
    if dist.is_master and cfg.overwrite and cfg.init_from != "resume":
        delete_checkpoints(out_dir)
    run.log = RunLog.start(out_dir / METRICS_NAME, run.iter_num if cfg.init_from == "resume" else None,
                           dist.is_master, wandb=dict(project=cfg.wandb_project, name=cfg.wandb_run_name,
                                                      config=config_to_dict(cfg)) if cfg.wandb_log else None)
    return run


def evaluate_once(run):
    """eval_only: the loss of the resumed checkpoint or of GPT-2's weights, then exit."""
    cfg = run.cfg
    losses = estimate_loss(unwrap_model(run.model), run.loader, cfg.eval_iters, run.ctx)
    result = {"train_loss": losses["train"], "val_loss": losses["val"], "val_bpb": losses["val_bpb"],
              "val_ppl": math.exp(losses["val"])}
    run.log.say(f"eval ({cfg.init_from} on {cfg.dataset}, {cfg.eval_iters} batches of {cfg.batch_size}x"
                f"{cfg.block_size}): train loss {losses['train']:.4f}, val loss {losses['val']:.4f} "
                f"({result['val_bpb']:.4f} bits/byte), val perplexity {result['val_ppl']:.2f}")
    return result


def training_loop(run):
    cfg, dist, model, log = run.cfg, run.dist, run.model, run.log
    raw_model = unwrap_model(model)
    # Every process evaluates the same fixed batches: an FSDP model needs them all (each holds a
    # shard), and all then agree on the loss and on whether to save. DDP's copies skip its hooks.
    eval_model = model if is_sharded(model) else raw_model
    grad_accum_steps = dist.share("gradient_accumulation_steps", cfg.gradient_accumulation_steps)  # this process's
    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size
    log.say(f"{dist.world_size} process(es), {grad_accum_steps} micro-step(s) each: "
            f"{tokens_per_iter:,} tokens per iteration")
    flops_per_token, peak = raw_model.flops_per_token(), common.peak_flops(cfg.device)
    # step_seconds: a moving average; started: every record carries the seconds since (loss vs time)
    start_iter, last_eval, step_seconds, started = run.iter_num, {}, None, time.perf_counter()
    while True:
        iter_num = run.iter_num
        lr = get_lr(iter_num, cfg.learning_rate, cfg.min_lr, cfg.warmup_iters, cfg.lr_decay_iters) \
            if cfg.decay_lr else cfg.learning_rate
        set_lr(run.optimizer, lr)  # Muon's groups get lr x muon_lr_ratio
        finished = iter_num >= cfg.max_iters

        # Evaluate (and checkpoint) every eval_interval steps and at the end. A resumed run
        # skips its first one: the checkpoint was written right after that very evaluation.
        due = iter_num % cfg.eval_interval == 0 or finished
        if due and not (cfg.init_from == "resume" and iter_num == start_iter):
            losses = estimate_loss(eval_model, run.loader, cfg.eval_iters, run.ctx)
            if not all(math.isfinite(v) for v in losses.values()):
                raise TrainingError(f"evaluation at iteration {iter_num} gave {losses}: the model has "
                                    f"diverged; the checkpoints in {cfg.out_dir} were left as they were")
            improved = losses["val"] < run.best_val_loss
            run.best_val_loss = min(run.best_val_loss, losses["val"])
            last_eval = {"event": "eval", "iter": iter_num, "train_loss": losses["train"], "val_loss": losses["val"],
                         "train_bpb": losses["train_bpb"], "val_bpb": losses["val_bpb"],
                         "val_ppl": math.exp(losses["val"]), "best_val_loss": run.best_val_loss, "lr": lr,
                         "seconds": time.perf_counter() - started}
            log.log(last_eval, f"eval iter {iter_num}: train loss {losses['train']:.4f}, val loss "
                               f"{losses['val']:.4f} ({losses['val_bpb']:.4f} bits/byte), val perplexity "
                               f"{last_eval['val_ppl']:.2f}" + (" (best so far)" if improved else ""))
            if iter_num > start_iter and (improved or cfg.always_save_checkpoint):
                save_training_checkpoint(cfg.out_dir, training_state(
                    model, run.optimizer, run.scaler, run.loader, cfg, iter_num, run.best_val_loss), dist)
                log.say(f"saved {find_checkpoint(cfg.out_dir)}")
        if finished:
            break

        # Dropout's random masks: this step's, on this process, follow from (seed, step, rank) alone
        # (Python's hash of a tuple of ints is the same in every run). A resumed run, on every
        # rank, draws exactly the masks the uninterrupted run drew, and no generator state needs
        # saving. Each rank gets its own masks, as its micro-batches are its own.
        torch.manual_seed(hash((cfg.seed, iter_num, dist.rank)) % 2**63)
        t0 = time.perf_counter()
        loss = train_step(model, run.optimizer, lambda: run.loader.get_batch("train"), grad_accum_steps,
                          run.scaler, cfg.grad_clip, run.ctx)
        loss_value = dist.mean(loss).item()  # the whole batch's, the same on every rank; waits for the GPU
        dt = time.perf_counter() - t0
        if not math.isfinite(loss_value):
            last = find_checkpoint(cfg.out_dir)
            kept = (f"the last good checkpoint, {last}, was kept: resume from it with "
                    f"--init_from=resume" if last else "no checkpoint had been written yet")
            raise TrainingError(f"loss is {loss_value} at iteration {iter_num}: training diverged. "
                                f"Try a lower --learning_rate or a longer --warmup_iters; {kept}")
        # Skip the first steps in the average: they include compiling and memory allocation.
        # (The ETA counts training steps only, not the evaluations still to come.)
        if iter_num - start_iter >= 2:
            step_seconds = dt if step_seconds is None else 0.9 * step_seconds + 0.1 * dt
        if iter_num % cfg.log_interval == 0:
            tokens_per_sec = tokens_per_iter / dt
            record = {"event": "train", "iter": iter_num, "loss": loss_value, "lr": lr,
                      "ms_per_iter": dt * 1000, "tokens_per_sec": tokens_per_sec, "seconds": time.perf_counter() - started}
            line = (f"iter {iter_num}/{cfg.max_iters}: loss {loss_value:.4f}, lr {lr:.2e}, "
                    f"{dt * 1000:.1f} ms/iter, {tokens_per_sec:,.0f} tokens/s")
            if peak:  # model FLOPs utilisation: the share of the GPUs' peak doing useful maths
                record["mfu"] = flops_per_token * tokens_per_sec / (peak * dist.world_size)
                line += f", mfu {record['mfu']:.1%}"
            if step_seconds is not None:
                line += f", eta {format_duration((cfg.max_iters - iter_num - 1) * step_seconds)}"
            log.log(record, line)
        run.iter_num += 1

    log.close()
    return {"iter_num": run.iter_num, "best_val_loss": run.best_val_loss,
            **{k: last_eval[k] for k in ("train_loss", "val_loss", "val_bpb", "val_ppl") if k in last_eval}}


if __name__ == "__main__":
    sys.exit(common.run_command(main))
