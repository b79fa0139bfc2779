"""
Train a GPT: one loop, from a laptop CPU to a node of GPUs.

    python train.py                                    # CPU quick start: a small char-level model
    python train.py config/train_shakespeare_char.py   # the GPU "baby GPT" (6 layers, ~10M params)
    python train.py config/train_gpt2.py               # GPT-2 124M on FineWeb, one GPU
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py   # ... on 8 GPUs
    python train.py config/finetune_shakespeare.py     # finetune OpenAI's GPT-2 on Shakespeare
    python train.py config/eval_gpt2.py                # evaluate OpenAI's GPT-2 on FineWeb and exit
    python train.py config/sft_spelling.py             # finetune the quick start to answer (sft.py)
    python train.py --init_from=resume                 # continue out_dir's run where it stopped
    python train.py --help                             # every option, its default and what it does

Settings: TrainConfig below, changed by config files (plain Python assignments) and --key=value
overrides, left to right. A misspelt key is an error naming the right one.

What one run does, in order: main() checks the config (parse_args) before any work; train()
picks the device and dtype and joins the other processes under torchrun; setup() opens the
dataset (data/<dataset>/, made by prepare.py) and builds the model (from scratch, from out_dir's
checkpoint, from another run's weights, or from OpenAI's GPT-2 weights) and the optimizer; training_loop() evaluates every
eval_interval steps (and checkpoints), takes optimizer steps (train_step, which bench.py times
too) and logs.

A resumed run continues exactly as the uninterrupted one would have: the checkpoint holds the
position of the data stream (data.BatchLoader), and is written only right after an evaluation,
never after a NaN. Evaluation uses fixed batches, so evaluations differ only as the model does.

The machinery is in modules of its own, trusted by their names and docstrings: configurator.py,
checkpoint.py, distributed.py (torchrun, DDP, FSDP), metrics.py (the log), common.py (device,
dtype, user errors), prepare.py and hf.py (datasets, GPT-2's weights). data.py (the windows) and
optim.py (AdamW, Muon) are worth reading beside this file.
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
from torch.nn import functional as F

import checkpoint
import common
import distributed
import hf
import prepare
from common import ConfigError, UserError
from configurator import config_to_dict, parse_config, print_config
from data import BatchLoader, LossSums, dataset_path, open_loader
from metrics import METRICS_NAME, RunLog
from model import GPT, GPTConfig
from optim import Optimizers, configure_optimizer, set_lr


@dataclass
class TrainConfig:
    # Defaults: the CPU quick start (README): a minute on two laptop cores, where a small, narrow
    # model sees more text than a big one. The AdamW recipe: config/quickstart_adamw.py.
    # --- output, evaluation, checkpoints ---
    out_dir: str = "out"  # ckpt.pt and metrics.jsonl go here
    eval_interval: int = 500  # evaluate (and checkpoint) every this many iterations, and at the end
    eval_iters: int = 20  # batches per split in one evaluation: more = less noisy, slower
    log_interval: int = 10  # print and log the training loss every this many iterations
    eval_only: bool = False  # evaluate once (the resumed checkpoint or GPT-2) and exit
    always_save_checkpoint: bool = True  # False: write ckpt.pt only when val loss improves
    # where the weights start: 'scratch', 'resume' (out_dir's checkpoint), 'checkpoint' (init_dir's
    # weights, as a new run: finetuning), or OpenAI's 'gpt2' ...
    init_from: Literal[("scratch", "resume", "checkpoint", *hf.GPT2_MODELS)] = "scratch"
    init_dir: Optional[str] = None  # init_from='checkpoint': the out_dir of the run to start from
    overwrite: bool = False  # let a new run replace the checkpoint already in out_dir
    # --- Weights & Biases (optional, `pip install wandb`) ---
    wandb_log: bool = False  # log metrics to Weights & Biases
    wandb_project: str = "gpt-from-scratch"  # Weights & Biases project name
    wandb_run_name: str = "run"  # Weights & Biases run name
    # --- data ---
    dataset: str = "shakespeare_char"  # the folder data/<dataset>/ that prepare.py writes
    data_dir: Optional[str] = None  # folder holding the datasets; None = data/ next to prepare.py
    gradient_accumulation_steps: int = 1  # micro-steps per optimizer step, counted over all GPUs
    # sequences per micro-step, per GPU (Muon's fixed cost per step favours large batches)
    batch_size: int = 48
    block_size: int = 64  # context length: tokens per sequence
    # --- model (scratch only: resume and gpt2* bring their own shape; dropout always applies) ---
    n_layer: int = 2  # the CPU quick start; config/train_shakespeare_char.py is the GPU model
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
    # AdamW second-moment decay: GPT-2 used 0.95; small-batch recipes often use 0.99
    beta2: float = 0.99
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
    compile: bool = False  # torch.compile the model: faster GPU steps after a minute of compiling
    # under torchrun, 'ddp': every process holds the whole model; 'fsdp': weights, gradients and
    # optimizer state split 1/N (distributed.py)
    parallel: Literal["ddp", "fsdp"] = "ddp"
    # recompute each block in backward: far less memory, ~1.25-1.6x the time
    activation_checkpointing: bool = False
    seed: int = 1337  # model init, dropout and the data order all follow from it


class TrainingError(UserError):
    """A run that must stop: diverged (NaN), or a bad setup found only once it started."""


def validate_config(cfg, world_size=None):
    """Check values the type annotations cannot express, before any work is done. world_size: how
    many processes torchrun starts (None: a plain `python train.py`, one process, no torchrun)."""
    at_least_1 = ("eval_interval", "eval_iters", "log_interval", "gradient_accumulation_steps",
                  "batch_size", "block_size")
    for name in at_least_1 + ("max_iters", "warmup_iters", "weight_decay", "grad_clip"):
        least = 1 if name in at_least_1 else 0
        if getattr(cfg, name) < least:
            raise ConfigError(f"{name} must be at least {least}, got {getattr(cfg, name)}")
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
    if cfg.init_from == "checkpoint" and cfg.init_dir is None:
        raise ConfigError("init_from='checkpoint' needs init_dir, the run to start from: e.g. --init_dir=out")
    if cfg.init_dir is not None and cfg.init_from not in ("checkpoint", "resume"):  # resume: already started
        raise ConfigError(f"init_dir is read only with init_from='checkpoint'; drop it, or use that (got {cfg.init_from!r})")
    distributed.check_parallel(cfg.parallel, cfg.dtype, world_size)  # e.g. fsdp needs torchrun
    # The micro-steps are shared out between the processes: they must divide evenly.
    distributed.Distributed(world_size=world_size or 1).share("gradient_accumulation_steps",
                                                              cfg.gradient_accumulation_steps)


def resolve_config(cfg, device, dtype):
    """Fill in every 'auto'/None with the value used: what is printed and saved is exact."""
    return dataclasses.replace(
        cfg, device=device, dtype=dtype,
        lr_decay_iters=cfg.max_iters if cfg.lr_decay_iters is None else cfg.lr_decay_iters,
        min_lr=cfg.learning_rate / 10 if cfg.min_lr is None else cfg.min_lr)


# --------------------------------------------------------------------------------------------
# Optimization: the data, the learning rate, the training step, evaluation
# --------------------------------------------------------------------------------------------

def inputs_and_targets(windows):
    """
    (B, T + 1) windows of the text -> (inputs, targets), each (B, T). Every position of every
    window is a training example: position t of the input is trained to predict the token at
    t + 1, so the targets are the same tokens shifted left by one. Conversations (data.ChatLoader)
    come as (windows, mask): the model learns only what the assistant writes, so every other
    target becomes -1, which the loss skips.
    """
    windows, mask = windows if isinstance(windows, tuple) else (windows, None)
    x, y = windows[:, :-1], windows[:, 1:]
    return (x, y) if mask is None else (x, y.masked_fill(~mask[:, 1:], -1))


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
               ctx=None, count=None):
    """
    One optimizer step: grad_accum_steps forward/backward micro-steps, then clip and update.
    Returns the mean loss over the micro-steps as a detached tensor (.item() waits for the GPU).
    model: a GPT, maybe wrapped (DDP, FSDP, torch.compile). get_batch() returns (x, y). scaler:
    a torch.amp.GradScaler (float16) or None. ctx: the autocast context; None for float32.
    count: for masked targets (finetuning), Distributed.mean: see below.
    """
    ctx = contextlib.nullcontext() if ctx is None else ctx
    batches = [get_batch() for _ in range(grad_accum_steps)]
    if count is not None:
        # Masked targets: micro-batches hold different numbers of them (a short answer, a long
        # one, none at all), and a mean per micro-batch would weigh a token of a short answer
        # more (and 0/0 is NaN). So each micro-batch's summed loss is divided by the step's
        # tokens, counted over every micro-batch and process: every target weighs the same.
        tokens = count(sum((y >= 0).sum() for _, y in batches).float()).clamp(min=1)  # per process
    total_loss = None
    for micro_step, (x, y) in enumerate(batches):
        # Under DDP, gradients are averaged across processes only on the last micro-step: the
        # earlier ones would be wasted communication, since only the final sum is used.
        with distributed.gradient_sync(model, sync=micro_step == grad_accum_steps - 1):
            with ctx:
                logits, loss = model(x, y if count is None else None)
            if count is None:
                # Gradients add up over backward() calls. The loss is a mean over its micro-batch,
                # so dividing by grad_accum_steps makes the sum a mean over all micro-batches: the
                # same gradient one batch grad_accum_steps times larger would give.
                loss = loss / grad_accum_steps
            else:  # a micro-batch with no target adds exactly 0: no NaN, no gradient
                loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-1,
                                       reduction="sum") / tokens
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
        for windows in loader.eval_windows(split, eval_iters):
            x, y = inputs_and_targets(windows)
            with ctx:
                logits, _ = model(x)
            sums.add(logits, y)
        losses[split], losses[f"{split}_bpb"] = sums.loss, sums.bits_per_byte
    model.train(was_training)
    return losses


# --------------------------------------------------------------------------------------------
# The run: setup, the checkpoint, the loop
# --------------------------------------------------------------------------------------------

def parse_args(argv, world_size=None):
    """The checked TrainConfig of a command line (config files, --key=value), before any work."""
    usage = __doc__[:__doc__.index("What one run does")]  # --help: the commands, then every option
    cfg = parse_config(TrainConfig(), argv, usage=usage)
    validate_config(cfg, world_size)
    return cfg


def main(argv=None):
    """Parse the command line and train. Returns a summary dict."""
    world_size = int(os.environ["WORLD_SIZE"]) if common.started_by_torchrun() else None
    return train(parse_args(sys.argv[1:] if argv is None else argv, world_size))


def train(cfg):
    """Steps 2-3 (setup), then step 4 (the loop). Returns a summary dict."""
    dist, device = distributed.setup_distributed(common.pick_device(cfg.device), cfg.parallel)
    try:
        cfg = resolve_config(cfg, device, common.pick_dtype(device, cfg.dtype))
        run = setup(cfg, dist)
        if cfg.eval_only:  # the loss of the resumed checkpoint or of GPT-2's weights, then exit
            losses = estimate_loss(run.gpt, run.loader, cfg.eval_iters, run.ctx)
            return run.log.evaluation(run.iter_num, losses, losses["val"], cfg.learning_rate, False)
        return training_loop(run)
    finally:
        distributed.teardown_distributed(dist)


@dataclass
class Run:  # what the loop works on: made by setup(), or restored from a checkpoint by it
    cfg: TrainConfig
    dist: distributed.Distributed
    loader: BatchLoader
    gpt: GPT  # the model itself, for its config and evaluation
    model: torch.nn.Module  # what train_step runs: the GPT, maybe inside DDP, maybe compiled
    optimizer: Optimizers
    scaler: torch.amp.GradScaler
    ctx: object  # the autocast context (common.autocast)
    log: RunLog
    grad_accum_steps: int  # this process's share of the micro-steps per optimizer step
    iter_num: int = 0  # optimizer steps done
    best_val_loss: float = float("inf")


def setup(cfg, dist):
    """Check the output folder, open the dataset, build (or restore) model and optimizer."""
    out_dir = Path(cfg.out_dir)
    if cfg.init_from != "resume" and not cfg.eval_only and not cfg.overwrite:
        checkpoint.refuse_to_overwrite(out_dir, f"init_from={cfg.init_from}")
    resumed = checkpoint.load_training_checkpoint(out_dir) if cfg.init_from == "resume" else None
    if resumed is not None:  # its optimizer state fits only its own optimizer
        checkpoint.check_optimizer(resumed, cfg.optimizer)
    wandb = dict(project=cfg.wandb_project, name=cfg.wandb_run_name, config=config_to_dict(cfg))
    log = RunLog(None if cfg.eval_only else out_dir / METRICS_NAME, enabled=dist.is_master,
                 resume_iter=resumed["iter_num"] if resumed else None,
                 wandb=wandb if cfg.wandb_log and not cfg.eval_only else None)
    log.say("config:")
    if dist.is_master:  # only rank 0 prints and writes files
        print_config(cfg)
    common.allow_tf32(cfg.device)

    # --- data: prepared by rank 0 if missing, while the others wait ---
    if dist.is_master:
        prepare.ensure_dataset(cfg.dataset, cfg.data_dir)  # makes shakespeare(_char) if missing
    dist.barrier()
    loader = open_loader(dataset_path(cfg.dataset, cfg.data_dir), cfg.batch_size, cfg.block_size,
                         cfg.device, cfg.seed, dist.rank, dist.world_size)  # a chat dataset: ChatLoader

    # --- model (wrapped for DDP or FSDP under torchrun), optimizer, loss scaler ---
    torch.manual_seed(cfg.seed)  # the init: the same on every rank (FSDP keeps each its shard)
    gpt = checkpoint.model_to_train(cfg, loader.meta, resumed and resumed["model_args"]).to(cfg.device)
    log.say(f"model: {gpt.get_num_params() / 1e6:.2f}M parameters ({cfg.init_from})")
    model = distributed.wrap_model(gpt, dist, cfg.device, cfg.parallel, cfg.dtype)
    if cfg.compile and not cfg.eval_only:
        log.say("compiling the model (takes a minute)...")
        model = torch.compile(model)
    optimizer = configure_optimizer(model, cfg.optimizer, cfg.learning_rate, cfg.weight_decay,
                                    (cfg.beta1, cfg.beta2), cfg.device, cfg.muon_lr_ratio,
                                    cfg.muon_lr_scaling)
    # float16 has a narrow range: small gradients underflow to 0. The scaler multiplies the loss
    # (and so every gradient) by a large factor, and divides it out before the update.
    scaler = torch.amp.GradScaler(cfg.device.split(":")[0], enabled=cfg.dtype == "float16")
    ctx = common.autocast(cfg.device, cfg.dtype)
    grad_accum_steps = dist.share("gradient_accumulation_steps", cfg.gradient_accumulation_steps)
    run = Run(cfg, dist, loader, gpt, model, optimizer, scaler, ctx, log, grad_accum_steps)
    if resumed is not None:  # each entry back where save() took it from
        checkpoint.load_weights(resumed, model, optimizer)  # "model" and "optimizer"
        if resumed["scaler"]:
            scaler.load_state_dict(resumed["scaler"])
        loader.load_state_dict(resumed["data"])
        run.iter_num, run.best_val_loss = resumed["iter_num"], resumed["best_val_loss"]
        log.say(f"resuming from {resumed['path']} at iteration {run.iter_num} "
                f"(best val loss {run.best_val_loss:.4f})")
    if dist.is_master and cfg.overwrite and cfg.init_from != "resume" and not cfg.eval_only:
        checkpoint.delete_checkpoints(out_dir)  # only now that the new run is ready to start
    return run


def save(run, iter_num):
    """Write the checkpoint: a plain dict of everything a resumed run needs (checkpoint.py writes
    it atomically, as one file, or for FSDP as every process's shards)."""
    model_state, optimizer_state = checkpoint.state_dicts(run.model, run.optimizer)  # by name
    state = {
        "model": model_state,  # the weights
        "optimizer": optimizer_state,  # AdamW's moments, Muon's momentum
        "model_args": dataclasses.asdict(run.gpt.config),  # the shape, to build the model again
        "config": config_to_dict(run.cfg),  # the settings of this run
        "iter_num": iter_num,  # optimizer steps done; a resumed run takes step iter_num next
        "best_val_loss": run.best_val_loss,
        "scaler": run.scaler.state_dict(),  # float16's loss scale ({} when off)
        "data": run.loader.state_dict(),  # the position in the training stream
        # The dataset's meta.json (the tokenizer): sample.py and eval.py decode with it, so a
        # checkpoint is usable without its dataset folder.
        "meta": {**run.loader.meta, "name": run.cfg.dataset},
    }
    checkpoint.save_training_checkpoint(run.cfg.out_dir, state, run.dist)


def training_loop(run):
    cfg, dist, model, log = run.cfg, run.dist, run.model, run.log
    # Every process evaluates the same fixed batches: an FSDP model needs them all (each holds a
    # shard), and all then agree on the loss and on whether to save. DDP's copies skip its hooks.
    eval_model = model if distributed.is_sharded(model) else run.gpt
    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size
    log.say(f"{dist.world_size} process(es), {run.grad_accum_steps} micro-step(s) each: "
            f"{tokens_per_iter:,} tokens per iteration")
    peak = common.peak_flops(cfg.device)  # None on a CPU: no MFU
    start_iter, last_eval = run.iter_num, {}
    log.start_loop(start_iter, cfg.max_iters, cfg.log_interval, tokens_per_iter,
                   run.gpt.flops_per_token(), peak and peak * dist.world_size)
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
                raise TrainingError(f"evaluation at iteration {iter_num} gave {losses}: the model "
                                    f"has diverged; the checkpoints in {cfg.out_dir} were kept")
            improved = losses["val"] < run.best_val_loss
            run.best_val_loss = min(run.best_val_loss, losses["val"])
            last_eval = log.evaluation(iter_num, losses, run.best_val_loss, lr, improved)
            if iter_num > start_iter and (improved or cfg.always_save_checkpoint):
                save(run, iter_num)
                log.say(f"saved {checkpoint.find_checkpoint(cfg.out_dir)}")
        if finished:
            break

        # Dropout's masks for this step on this rank follow from (seed, step, rank) alone (the
        # hash of a tuple of ints is the same in every run): a resumed run draws exactly the masks
        # the uninterrupted one did, on every rank, and no generator state needs saving.
        torch.manual_seed(hash((cfg.seed, iter_num, dist.rank)) % 2**63)
        t0 = time.perf_counter()
        next_batch = lambda: inputs_and_targets(run.loader.next_windows())  # noqa: E731
        loss = train_step(model, run.optimizer, next_batch, run.grad_accum_steps, run.scaler,
                          cfg.grad_clip, run.ctx, dist.mean if run.loader.meta.get("chat_tokens") else None)
        loss_value = dist.mean(loss).item()  # the whole batch's, on every rank; waits for the GPU
        if not math.isfinite(loss_value):
            last = checkpoint.find_checkpoint(cfg.out_dir)
            kept = (f"the last good checkpoint, {last}, was kept: resume from it with "
                    f"--init_from=resume" if last else "no checkpoint had been written yet")
            raise TrainingError(f"loss is {loss_value} at iteration {iter_num}: training diverged. "
                                f"Try a lower --learning_rate or a longer --warmup_iters; {kept}")
        log.train_step(iter_num, loss_value, lr, time.perf_counter() - t0)
        run.iter_num += 1

    log.close()
    last = {k: last_eval[k] for k in ("train_loss", "val_loss", "val_bpb", "val_ppl") if last_eval}
    return {"iter_num": run.iter_num, "best_val_loss": run.best_val_loss, **last}


if __name__ == "__main__":
    sys.exit(common.run_command(main))
