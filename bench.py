"""
How fast does this code train and generate on your hardware?

    python bench.py                                  # training step, GPT-2 124M shape (on a GPU)
    python bench.py --preset=quickstart              # training step, the CPU quick-start model
    python bench.py --mode=generate --preset=quickstart   # generation: KV cache vs no cache
    python bench.py --mode=generate --preset=baby    # ... for the 6-layer baby GPT, context 256
    python bench.py --batch_size=32 --compile=True --json=True
    python bench.py --profile=True                   # also print the costliest ops, write a trace
    python bench.py --preset=quickstart --activation_checkpointing   # the cost of recomputing blocks
    python bench.py --mode=memory                    # per-GPU memory of GPT-2 .. GPT-2 XL, DDP vs FSDP
    python bench.py --preset=quickstart --optimizer=adamw  # the quick start's step with AdamW, not Muon
    python bench.py --mode=recipes --recipes=default,quickstart_adamw   # whole runs side by side
    python bench.py --mode=chat                      # a long chat: the KV cache kept across turns or not

Training mode times train.py's own train_step() (gradient accumulation, clipping, loss scaling
and the update included), with the optimizer and settings train.py would use for the preset's
recipe (PRESETS; --optimizer swaps the optimizer alone), after warm-up steps that also
absorb torch.compile's compile time, and reports the median step time, tokens/s and MFU: the
share of the accelerator's peak bf16 FLOP/s spent on the model's own maths (6 FLOPs per
parameter per token plus attention, GPT.flops_per_token). MFU is left out on CPU, which has no
meaningful published peak.

Batches are random token ids made on the device by default, so the figure is the model's speed
alone; --dataset=NAME reads real batches with data.py's BatchLoader (what train.py reads) instead.

--activation_checkpointing recomputes every block's forward during backward (model.py's GPT
argument of that name, which train.py's option sets): the step time with it
over the step time without it is the price of the memory it saves.

Generation mode generates max_new_tokens after the same prompt with the KV cache and without
it, and reports tokens/s for each (median over `repeats` runs, the two paths taking turns) and
the speed-up (median of the per-run ratios).

Chat mode holds a conversation that fills the model's context, turn_tokens of user message and
up to turn_tokens of greedy answer per turn (chat.ChatSession, on random weights: the time does
not depend on what they say), twice: with the KV cache kept across turns (a new turn reads only
its own tokens) and with the whole conversation read again at every turn. It reports each one's
median wall time over `repeats` conversations, the speed-up (median of per-round ratios), the
last turn's time alone (where the difference is largest), and whether the answers were the same.

Recipes mode runs whole trainings, `python train.py config/<recipe>.py` for each recipe named
("default" = train.py's own settings), `repeats` times, the recipes taking turns so that load from
elsewhere on a shared machine slows them alike. For each it reports the median wall time, as a
user waits for it (start-up, evaluations and checkpoints included), and the best val loss of each
run, read from its metrics.jsonl. --record_dir keeps every run's metrics.jsonl and a summary.json
(the guide's optimizer figure is drawn from such a folder); otherwise the runs go to a temporary
folder.

Memory mode needs no GPU: it works out how much memory one process holds to train GPT-2's four
sizes, under DDP and under FSDP on 1, 2, 4 and 8 processes, from the parameter shapes alone
(the models are built on the meta device, which allocates nothing), and measures the activations
a training forward keeps for backward, with and without activation checkpointing, on the CPU in
float32 (batch_size x block_size tokens; batch 1 unless --batch_size says otherwise).
"""

import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch

import common
from common import ConfigError, UserError, write_atomic
from configurator import parse_config
from data import BatchLoader, dataset_path
import hf
from distributed import Distributed, check_parallel, setup_distributed, teardown_distributed, wrap_model
from metrics import METRICS_NAME, read_metrics
from engine import generate
from model import GPT, GPTConfig
from optim import configure_optimizer
from train import TrainConfig, inputs_and_targets, train_step

ROOT = Path(__file__).resolve().parent  # train.py and config/ are found from here

# What to benchmark, each preset with the train.py arguments of its recipe, whose optimizer and
# settings the training step uses: OpenAI's four GPT-2 sizes (shapes from hf.GPT2_MODELS) with
# config/train_gpt2.py's AdamW; "quickstart", train.py's default (CPU) model and optimizer; "baby",
# config/train_shakespeare_char.py's GPU "baby GPT" (nanoGPT's quick-start model). The character
# models' shapes are read from their recipes too, so they follow the recipes when those change.
PRESETS = {
    **{name: [str(ROOT / "config" / "train_gpt2.py")] for name in hf.GPT2_MODELS},
    "quickstart": [],
    "baby": [str(ROOT / "config" / "train_shakespeare_char.py")],
}


@dataclass
class BenchConfig:
    # time the training step; or generation with and without the KV cache; or work out the
    # memory of training GPT-2's four sizes under DDP and FSDP (no GPU needed); or time whole
    # training runs of several recipes side by side
    mode: Literal["train", "generate", "memory", "recipes", "chat"] = "train"
    # a model shape from PRESETS; n_layer etc. below override it (memory mode: the shape whose
    # activations are also measured whole, as a check of the per-layer figures)
    preset: Literal[(*hf.GPT2_MODELS, "quickstart", "baby")] = "gpt2"
    n_layer: Optional[int] = None  # transformer blocks; None = the preset's
    n_head: Optional[int] = None  # attention heads; None = the preset's
    n_embd: Optional[int] = None  # width of the residual stream; None = the preset's
    block_size: Optional[int] = None  # context length; None = the preset's
    vocab_size: Optional[int] = None  # vocabulary size; None = the preset's
    batch_size: Optional[int] = None  # None = the recipe's (baby on CPU: 4); gpt2: 16 on a GPU, 4 on CPU; memory mode: 1
    # micro-steps per timed optimizer step, counted over all processes (as train.py counts them)
    gradient_accumulation_steps: int = 1
    dataset: Optional[str] = None  # None = random tokens; else a prepared dataset (train.py's loader)
    # under torchrun, how the model is spread: as train.py's parallel option (fsdp works on 1 GPU too)
    parallel: Literal["ddp", "fsdp"] = "ddp"
    # recompute each block in backward instead of keeping its activations (train.py's option)
    activation_checkpointing: bool = False
    # train mode: the update train_step makes (train.py's option); None = the preset's recipe's,
    # whose other optimizer settings (learning rate, betas, weight decay, clipping) are used either way
    optimizer: Optional[Literal["adamw", "muon"]] = None
    warmup_iters: int = 5  # untimed steps first (compilation, memory allocation, cuDNN autotuning)
    iters: int = 10  # timed steps; the median is reported
    max_new_tokens: int = 500  # generate mode
    prompt_tokens: int = 1  # generate mode: prompt length
    turn_tokens: int = 32  # chat mode: tokens of each user message, and the most of each answer
    repeats: int = 5  # generate mode: timed runs of each path; recipes mode: runs of each recipe
    # recipes mode: config/<name>.py files, without .py, comma-separated; "default" = no config file
    recipes: str = "default,quickstart_adamw"
    record_dir: Optional[str] = None  # recipes mode: keep each run's metrics.jsonl and a summary.json here
    compile: Optional[bool] = None  # None = on for CUDA, off elsewhere
    # torch.compile's mode: "default", "max-autotune-no-cudagraphs" (tries several kernels per
    # matmul, slow to compile), "max-autotune" (the same plus CUDA graphs), "reduce-overhead"
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    # CUDA: "auto" (PyTorch picks), or force one fused-attention kernel family
    attention_backend: Literal["auto", "flash", "cudnn", "efficient"] = "auto"
    device: str = "auto"  # 'auto' = cuda, then mps, then cpu; or e.g. 'cpu', 'cuda:1'
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # 'auto' = bfloat16 on recent GPUs, float32 on CPU
    seed: int = 1337  # model init and the random batches
    profile: bool = False  # print the costliest operations and write a torch.profiler trace
    trace_path: str = "bench_trace.json"  # where --profile writes the trace (chrome://tracing or Perfetto)
    json: bool = False  # print one JSON object with every figure at the end


def recipe(preset, optimizer=None):
    """The TrainConfig of a preset's recipe (its train.py arguments in PRESETS), with another
    optimizer if one is given."""
    return parse_config(TrainConfig(), PRESETS[preset] + ([f"--optimizer={optimizer}"] if optimizer else []))


def model_config(cfg):
    if cfg.preset in hf.GPT2_MODELS:
        shape = dataclasses.asdict(hf.gpt2_config(cfg.preset))
    else:
        t = recipe(cfg.preset)
        shape = dict(n_layer=t.n_layer, n_head=t.n_head, n_embd=t.n_embd, block_size=t.block_size,
                     vocab_size=65, dropout=t.dropout, bias=t.bias)  # 65 = tiny Shakespeare's characters
    for key in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
        if getattr(cfg, key) is not None:
            shape[key] = getattr(cfg, key)
    return GPTConfig(**shape)


def default_batch_size(cfg, device):
    if cfg.batch_size is not None:
        return cfg.batch_size
    # A recipe is benchmarked with the batch it trains with, except the baby GPT on a CPU: its
    # GPU batch of 64 x 256 characters takes ~20 s a step there, 4 keeps the run to a minute.
    if cfg.preset == "quickstart" or (cfg.preset == "baby" and device.startswith("cuda")):
        return recipe(cfg.preset).batch_size
    return 16 if device.startswith("cuda") else 4


def bench_train(cfg, device, dtype):
    # Under torchrun the model is wrapped as train.py wraps it: DDP, or FSDP's shards (on one GPU
    # too: `torchrun --nproc_per_node=1 bench.py --parallel=fsdp` shows what sharding costs).
    dist, device = setup_distributed(device, cfg.parallel)
    grad_accum_steps = dist.share("gradient_accumulation_steps", cfg.gradient_accumulation_steps)  # this process's
    torch.manual_seed(cfg.seed)
    config = model_config(cfg)
    t = recipe(cfg.preset, cfg.optimizer)  # the optimizer and its settings: what train.py would use
    batch_size = default_batch_size(cfg, device)
    model = GPT(config, activation_checkpointing=cfg.activation_checkpointing).to(device)  # as train.py builds it
    params = model.get_num_params(non_embedding=False)
    flops_per_token = model.flops_per_token()
    model = wrap_model(model, dist, device, cfg.parallel, dtype)
    optimizer = configure_optimizer(model, t.optimizer, t.learning_rate, t.weight_decay, (t.beta1, t.beta2),
                                    device, t.muon_lr_ratio, t.muon_lr_scaling)
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=dtype == "float16")
    ctx = common.autocast(device, dtype)
    common.allow_tf32(device)
    force_attention_backend(cfg.attention_backend)
    use_compile = device.startswith("cuda") if cfg.compile is None else cfg.compile
    step_model = torch.compile(model, mode=cfg.compile_mode) if use_compile else model

    T = config.block_size
    if cfg.dataset:
        loader = BatchLoader(dataset_path(cfg.dataset), batch_size, T, device, cfg.seed)
        get_batch = lambda: inputs_and_targets(loader.next_windows())  # what train.py trains on
    else:
        def get_batch():
            tokens = torch.randint(config.vocab_size, (batch_size, T + 1), device=device)
            return tokens[:, :-1], tokens[:, 1:]

    def step():
        return train_step(step_model, optimizer, get_batch, grad_accum_steps, scaler, t.grad_clip, ctx)

    print(f"warming up ({cfg.warmup_iters} steps{', compiling' if use_compile else ''})...", file=sys.stderr)
    t0 = time.perf_counter()
    for _ in range(cfg.warmup_iters):
        step()
    common.synchronize(device)
    warmup_seconds = time.perf_counter() - t0

    times = []
    for i in range(cfg.iters):
        t0 = time.perf_counter()
        loss = step()
        common.synchronize(device)
        times.append(time.perf_counter() - t0)
        print(f"step {i + 1}/{cfg.iters}: {times[-1] * 1000:.1f} ms, loss {loss.item():.3f}", file=sys.stderr)
    if cfg.profile:
        write_trace(step, device, cfg.trace_path)

    tokens_per_step = batch_size * T * cfg.gradient_accumulation_steps  # over all processes
    seconds = statistics.median(times)
    result = dict(mode="train", device=device_name(device), dtype=dtype, compile=use_compile,
                  parallel=cfg.parallel if dist.enabled else None, processes=dist.world_size,
                  params=params, batch_size=batch_size, optimizer=t.optimizer,
                  block_size=T, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                  activation_checkpointing=cfg.activation_checkpointing,
                  ms_per_step=seconds * 1000, tokens_per_sec=tokens_per_step / seconds,
                  warmup_seconds=warmup_seconds)
    peak = common.peak_flops(device)
    if peak:
        result["mfu"] = flops_per_token * result["tokens_per_sec"] / (peak * dist.world_size)
        result["peak_flops"] = peak
    if device.startswith("cuda"):
        result["max_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    # Under torchrun only rank 0 reports: every rank runs the same synchronised steps, and
    # several processes writing to one stdout could glue their lines together.
    result["report"] = dist.is_master
    if dist.is_master:
        print(f"train: {result['params'] / 1e6:.1f}M parameters, batch {batch_size}x{T}"
              f"{f' x{cfg.gradient_accumulation_steps}' if cfg.gradient_accumulation_steps > 1 else ''}, "
              f"{dtype}, {t.optimizer}, compile={use_compile}"
              f"{', activation checkpointing' if cfg.activation_checkpointing else ''}: "
              f"{result['ms_per_step']:.1f} ms/step, "
              f"{result['tokens_per_sec']:,.0f} tokens/s"
              + (f", MFU {result['mfu']:.1%}" if "mfu" in result else "") + f" on {result['device']}")
    teardown_distributed(dist)
    return result


def bench_generate(cfg, device, dtype):
    torch.manual_seed(cfg.seed)
    config = model_config(cfg)
    model = GPT(config).to(device).eval()
    ctx = common.autocast(device, dtype)
    prompt = torch.randint(config.vocab_size, (1, cfg.prompt_tokens), device=device)
    result = dict(mode="generate", device=device_name(device), dtype=dtype,
                  params=model.get_num_params(non_embedding=False), block_size=config.block_size,
                  prompt_tokens=cfg.prompt_tokens, max_new_tokens=cfg.max_new_tokens)
    with ctx:  # warm-up, not timed: first calls allocate memory and pick kernels
        for use_cache in (True, False):
            generate(model, prompt, min(cfg.max_new_tokens, 16), temperature=0, use_cache=use_cache)
    outputs, times = {}, {True: [], False: []}
    # The two paths take turns, so a burst of load from elsewhere on a shared machine slows both
    # alike; the speed-up is the median of the per-round ratios.
    for _ in range(cfg.repeats):
        for use_cache in (True, False):
            common.synchronize(device)
            t0 = time.perf_counter()
            with ctx:
                # Greedy, so both paths must produce the very same tokens: a built-in check.
                outputs[use_cache] = generate(model, prompt, cfg.max_new_tokens, temperature=0,
                                              use_cache=use_cache)
            common.synchronize(device)
            times[use_cache].append(time.perf_counter() - t0)
    for use_cache, name in ((True, "kv_cache"), (False, "no_cache")):
        result[f"tokens_per_sec_{name}"] = cfg.max_new_tokens / statistics.median(times[use_cache])
    result["speedup"] = statistics.median(no / kv for kv, no in zip(times[True], times[False]))
    result["same_tokens"] = bool(torch.equal(outputs[True], outputs[False]))
    print(f"generate {cfg.max_new_tokens} tokens ({result['params'] / 1e6:.1f}M parameters, "
          f"context {config.block_size}) on {result['device']}: "
          f"KV cache {rate(result['tokens_per_sec_kv_cache'])} tokens/s, "
          f"no cache {rate(result['tokens_per_sec_no_cache'])} tokens/s, "
          f"speed-up {result['speedup']:.1f}x, identical tokens: {result['same_tokens']}")
    return result


def bench_chat(cfg, device, dtype):
    import chat  # here: the chat CLI's session, which only this mode needs
    import sft
    from tokenizer import GPT2_VOCAB_SIZE, CharTokenizer, GPT2Tokenizer
    torch.manual_seed(cfg.seed)
    config = model_config(cfg)
    text = (ROOT / "assets" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    base = GPT2Tokenizer() if config.vocab_size >= GPT2_VOCAB_SIZE else CharTokenizer.from_text(text)
    tok = sft.ChatTokenizer(base)
    model = GPT(dataclasses.replace(config, vocab_size=tok.vocab_size)).to(device).eval()
    # User messages: consecutive pieces of Shakespeare, as many turns as fit the context whole.
    words, messages, used, T = base.encode(text[:200_000]), [], 0, cfg.turn_tokens
    while True:
        message = base.decode(words[len(messages) * T:(len(messages) + 1) * T])
        needed = len(base.encode(message)) + 3 + T + 1  # <|user|> .. <|end|><|assistant|> answer <|end|>
        if used + needed > config.block_size:
            break
        messages.append(message)
        used += needed
    if len(messages) < 2:
        raise ConfigError(f"turn_tokens={T} leaves room for {len(messages)} turn(s) in a context of "
                          f"{config.block_size}; use a smaller --turn_tokens")

    def conversation(keep_cache):
        session = chat.ChatSession(model, tok, keep_cache=keep_cache)
        answers, last = [], 0.0
        for message in messages:
            common.synchronize(device)
            t0 = time.perf_counter()
            answers.append(list(session.say(message, T, temperature=0)))
            common.synchronize(device)
            last = time.perf_counter() - t0
        return answers, len(session.ids), last

    ctx = common.autocast(device, dtype)
    with ctx:  # warm-up, not timed
        list(chat.ChatSession(model, tok).say(messages[0], 4, temperature=0))
    times, last_turn, outputs = {True: [], False: []}, {True: [], False: []}, {}
    for _ in range(cfg.repeats):  # the two ways take turns, as in generate mode
        for keep_cache in (True, False):
            t0 = time.perf_counter()
            with ctx:
                outputs[keep_cache], tokens, last = conversation(keep_cache)
            times[keep_cache].append(time.perf_counter() - t0)
            last_turn[keep_cache].append(last)
    result = dict(mode="chat", device=device_name(device), dtype=dtype, params=model.get_num_params(non_embedding=False),
                  block_size=config.block_size, turns=len(messages), conversation_tokens=tokens,
                  answer_tokens=sum(map(len, outputs[True])),
                  seconds_kept_cache=statistics.median(times[True]), seconds_recomputed=statistics.median(times[False]),
                  speedup=statistics.median(r / k for k, r in zip(times[True], times[False])),
                  last_turn_speedup=statistics.median(r / k for k, r in zip(last_turn[True], last_turn[False])),
                  same_tokens=outputs[True] == outputs[False])
    print(f"chat of {result['turns']} turns, {tokens} tokens ({result['params'] / 1e6:.1f}M parameters, context "
          f"{config.block_size}) on {result['device']}: cache kept {result['seconds_kept_cache']:.2f} s, "
          f"recomputed every turn {result['seconds_recomputed']:.2f} s, speed-up {result['speedup']:.2f}x "
          f"(last turn {result['last_turn_speedup']:.2f}x), identical answers: {result['same_tokens']}")
    return result


# --------------------------------------------------------------------------------------------
# Recipes: whole training runs side by side
# --------------------------------------------------------------------------------------------

def recipe_file(recipe):
    """The config file of a recipe: None for "default", config/<recipe>.py, or a path to a .py."""
    if recipe == "default":
        return None
    path = Path(recipe) if recipe.endswith(".py") else ROOT / "config" / f"{recipe}.py"
    if not path.is_file():
        raise ConfigError(f"recipes: there is no {path}; name files of config/ (without .py), paths to "
                          f"config files, or 'default' for train.py's own settings, e.g. "
                          f"--recipes=default,quickstart_adamw")
    return path


def recipe_command(recipe, out_dir):
    """The train.py command line of one recipe."""
    config = recipe_file(recipe)
    return ([sys.executable, str(ROOT / "train.py")] + ([str(config)] if config else [])
            + [f"--out_dir={out_dir}", "--overwrite"])


def recipe_run_name(recipe, n):
    """The folder of a recipe's n-th run (1, 2, ...) in --record_dir: e.g. quickstart_adamw-2."""
    return f"{Path(recipe).stem}-{n}"


def read_run(out_dir, seconds):
    """One finished run's figures, from its metrics.jsonl."""
    _, evals = read_metrics(Path(out_dir) / METRICS_NAME)
    return dict(seconds=seconds, steps=evals[-1]["iter"], best_val_loss=min(r["val_loss"] for r in evals),
                final_val_loss=evals[-1]["val_loss"],
                # (seconds since the loop started, val loss) at each evaluation: the curve to plot
                curve=[(r.get("seconds"), r["val_loss"]) for r in evals])


def bench_recipes(cfg):
    recipes = [r.strip() for r in cfg.recipes.split(",") if r.strip()]
    for recipe in recipes:
        recipe_file(recipe)  # every name checked before the first run starts
    if not recipes:
        raise ConfigError("recipes is empty: name at least one, e.g. --recipes=default,quickstart_adamw")
    runs = {recipe: [] for recipe in recipes}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(cfg.record_dir) if cfg.record_dir else Path(tmp)
        for round_ in range(cfg.repeats):
            for recipe in recipes:  # taking turns: a burst of load elsewhere slows every recipe alike
                out_dir = root / recipe_run_name(recipe, round_ + 1)
                t0 = time.perf_counter()
                # train.py's progress goes to stdout; ours is the table, so it is kept out of it.
                done = subprocess.run(recipe_command(recipe, out_dir), stdout=subprocess.DEVNULL, cwd=ROOT)
                seconds = time.perf_counter() - t0
                if done.returncode != 0:
                    raise UserError(f"recipe {recipe}: train.py exited with {done.returncode} (its error is above)")
                run = read_run(out_dir, seconds)
                runs[recipe].append(run)
                for checkpoint in out_dir.glob("ckpt*"):  # only the log is kept
                    shutil.rmtree(checkpoint) if checkpoint.is_dir() else checkpoint.unlink()
                print(f"{recipe} run {round_ + 1}/{cfg.repeats}: {seconds:.1f} s, {run['steps']} steps, "
                      f"best val loss {run['best_val_loss']:.4f}", file=sys.stderr)
    result = dict(mode="recipes", repeats=cfg.repeats, threads=torch.get_num_threads(), recipes={
        recipe: dict(command=" ".join(["python", "train.py"] + ([os.path.relpath(recipe_file(recipe), ROOT)]
                                                               if recipe != "default" else [])),
                     steps=rs[0]["steps"], median_seconds=statistics.median(r["seconds"] for r in rs),
                     best_val_loss=min(r["best_val_loss"] for r in rs),
                     median_best_val_loss=statistics.median(r["best_val_loss"] for r in rs), runs=rs)
        for recipe, rs in runs.items()})
    print(f"{'recipe':<20} {'steps':>6} {'wall time, median':>18} {'best val loss':>14} {'(median of runs)':>17}")
    for recipe, row in result["recipes"].items():
        print(f"{recipe:<20} {row['steps']:>6} {row['median_seconds']:>16.1f} s {row['best_val_loss']:>14.4f} "
              f"{row['median_best_val_loss']:>17.4f}")
    if cfg.record_dir:
        result["config"] = dataclasses.asdict(cfg)  # as main() adds it to every result
        write_atomic(Path(cfg.record_dir) / "summary.json", json.dumps(result, indent=1) + "\n")
    return result


# --------------------------------------------------------------------------------------------
# Memory: what one process holds to train a model, under DDP and under FSDP
# --------------------------------------------------------------------------------------------

# What each parameter costs in training with AdamW in float32: the weight itself, its gradient,
# and AdamW's two running averages (of the gradient and of its square). 16 bytes in all, before
# a single activation is stored. (Mixed precision does not shrink it: autocast computes in 16
# bits, but the weights, gradients and moments stay in float32.)
STATE_BYTES_PER_PARAM = dict(weights=4, gradients=4, adamw_moments=8)
GPT2_SIZES = tuple(hf.GPT2_MODELS)  # OpenAI's four
WORLD_SIZES = (1, 2, 4, 8)  # processes (GPUs) the memory table shards over


def parameter_shapes(model_config):
    """
    The shape of every parameter a GPT of this config trains, built on the meta device: shapes
    only, nothing allocated, so GPT-2 XL costs nothing to count. The tied wte/lm_head matrix is
    one tensor and comes once, with its padding rows (50,304 rows for 50,257 tokens): they are
    allocated, and get gradients and AdamW moments, like the rest.
    """
    with torch.device("meta"):
        model = GPT(model_config)
    return [tuple(p.shape) for p in model.parameters()]  # parameters() yields a shared one once


def state_bytes_per_rank(shapes, world_size, sharded, bytes_per_param=None):
    """
    Bytes of model state (weights, gradients, AdamW moments) that one process holds, for
    parameters of these shapes.

    DDP (sharded=False): every process holds all of it, whatever world_size is. FSDP2
    (sharded=True): every parameter is split along its first dimension into world_size chunks
    the way torch.chunk splits it, ceil(rows / world_size) rows each and the last rank fewer;
    each rank keeps only its chunk of the weight, and the gradient and AdamW moments of that
    chunk. Rank 0's chunks are the largest, and FSDP2 pads every rank's weight shard to that
    size (so that the all-gather moves equal pieces), so this returns rank 0's share.
    """
    if bytes_per_param is None:
        bytes_per_param = sum(STATE_BYTES_PER_PARAM.values())
    elements = 0
    for shape in shapes:
        rows, row_size = shape[0], math.prod(shape[1:])
        rows_here = math.ceil(rows / world_size) if sharded else rows
        elements += rows_here * row_size
    return elements * bytes_per_param


def saved_activation_bytes(model, idx, targets):
    """
    Bytes of the activations one training forward, model(idx, targets), keeps for backward.

    Every tensor an operation saves for backward passes through the pack hook of
    saved_tensors_hooks. Each buffer is counted once (views of one buffer share its storage),
    and the parameters, which Linear layers save too, are left out: they are model state,
    counted by state_bytes_per_rank. With activation checkpointing, what a checkpointed block
    keeps (its input) is saved through the same hook; what it computes inside is not kept.
    """
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}  # storage address -> its size in bytes

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        # Handed back detached: the same data, kept as autograd would keep it. Returning the
        # tensor itself would, for a tensor an operation saves of its own output, make a
        # reference cycle (graph node -> saved tensor -> its grad_fn, that node) that Python's
        # garbage collector cannot see: every measurement would leak its activations.
        return tensor.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        _, loss = model(idx, targets)  # the graph (so every saved tensor) stays alive until counted
    return sum(saved.values())


def activation_bytes(config, batch_size, seed=0):
    """
    {"plain": bytes, "checkpointed": bytes}: the activations one training forward of a GPT of
    this shape keeps for backward, on batch_size x block_size random tokens, without and with
    activation checkpointing (the same model and tokens). Real forwards: float32, on the CPU.
    """
    # Which tensors autograd keeps depends on the shapes and the operations, never on the
    # values, so the weights are left at zero: filling a fresh model with random numbers would
    # take longer than the forward passes.
    torch.manual_seed(seed)
    tokens = torch.randint(config.vocab_size, (batch_size, config.block_size + 1))
    result = {}
    for kind, checkpointing in (("plain", False), ("checkpointed", True)):
        with torch.device("meta"):
            model = GPT(config, activation_checkpointing=checkpointing)
        model.to_empty(device="cpu").train()
        for p in model.parameters():
            p.detach().zero_()
        result[kind] = saved_activation_bytes(model, tokens[:, :-1], tokens[:, 1:])
    return result


def activation_bytes_per_layer(config, batch_size, seed=0):
    """
    {"plain": {"fixed", "per_layer"}, "checkpointed": {...}}, measured on models of this shape
    with 1 and 2 blocks. Every block keeps tensors of the same shapes, so a model of n_layer
    blocks keeps exactly fixed + n_layer * per_layer bytes (the fixed part: the embeddings, the
    last LayerNorm, the logits and the loss). Two small forwards stand in for a large one.
    """
    one = activation_bytes(dataclasses.replace(config, n_layer=1), batch_size, seed)
    two = activation_bytes(dataclasses.replace(config, n_layer=2), batch_size, seed)
    return {kind: dict(fixed=2 * one[kind] - two[kind], per_layer=two[kind] - one[kind]) for kind in one}


def state_table(names):
    """
    One row per GPT-2 size named: its parameters, and the bytes of model state one process
    holds to train it under DDP and under FSDP on each of WORLD_SIZES processes. Shapes only.
    """
    rows = []
    for name in names:
        config = hf.gpt2_config(name)
        shapes = parameter_shapes(config)
        with torch.device("meta"):
            params_hf = GPT(config).get_num_params(non_embedding=False)  # padding rows left out
        rows.append(dict(name=name, n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd,
                         params=sum(math.prod(shape) for shape in shapes), params_hf=params_hf,
                         ddp_bytes=state_bytes_per_rank(shapes, 1, sharded=False),
                         fsdp_bytes=[state_bytes_per_rank(shapes, n, sharded=True) for n in WORLD_SIZES]))
    return rows


def activation_table(names, batch_size, block_size, seed=0):
    """
    {name: figures} for each GPT-2 size named: the bytes a training forward of
    batch_size x block_size tokens keeps for backward, without and with activation
    checkpointing, for the whole model and per block (measured on the CPU, float32).
    """
    table = {}
    for name in names:
        config = hf.gpt2_config(name, block_size=block_size)
        layers = activation_bytes_per_layer(config, batch_size, seed)
        table[name] = dict(
            activation_bytes={kind: f["fixed"] + config.n_layer * f["per_layer"] for kind, f in layers.items()},
            activation_bytes_per_layer={kind: f["per_layer"] for kind, f in layers.items()})
    return table


def bench_memory(cfg):
    """The memory table of GPT-2's four sizes, and a check of its per-block activation sums."""
    batch_size = cfg.batch_size or 1
    block_size = cfg.block_size or 1024  # GPT-2's context, the same in all four sizes
    activations = activation_table(GPT2_SIZES, batch_size, block_size, cfg.seed)
    rows = [dict(row, **activations[row["name"]]) for row in state_table(GPT2_SIZES)]
    # The per-block arithmetic, checked once: the --preset model measured whole.
    config = model_config(cfg)
    whole = activation_bytes(config, batch_size, cfg.seed)
    layers = activation_bytes_per_layer(config, batch_size, cfg.seed)
    summed = {kind: f["fixed"] + config.n_layer * f["per_layer"] for kind, f in layers.items()}
    result = dict(mode="memory", bytes_per_param=STATE_BYTES_PER_PARAM, world_sizes=list(WORLD_SIZES),
                  batch_size=batch_size, block_size=block_size, models=rows,
                  whole=dict(preset=cfg.preset, n_layer=config.n_layer, n_embd=config.n_embd,
                             block_size=config.block_size, bytes=whole, per_layer_sum=summed,
                             same=whole == summed))
    print_memory(result)
    return result


def print_memory(result):
    gb = lambda n: n / 1e9
    print(f"Model state per process, training with AdamW in float32: "
          f"{sum(result['bytes_per_param'].values())} bytes per parameter (weights 4, gradients 4, "
          f"AdamW's two moments 8), in GB (1e9 bytes). DDP: every process holds all of it; FSDP on N "
          f"processes: rank 0's shard, the largest.")
    print(f"{'model':<12} {'parameters':>14} {'DDP':>8}" + "".join(f"{f'FSDP {n}':>9}" for n in result["world_sizes"]))
    for r in result["models"]:
        print(f"{r['name']:<12} {r['params']:>14,} {gb(r['ddp_bytes']):>8.2f}"
              + "".join(f"{gb(b):>9.2f}" for b in r["fsdp_bytes"]))
    print("(parameters as allocated, the embedding's padding rows included; without them, as Hugging "
          "Face counts: " + ", ".join(f"{r['name']} {r['params_hf']:,}" for r in result["models"]) + ")")
    print()
    print(f"Activations kept for backward, batch {result['batch_size']} x {result['block_size']}, float32, "
          f"in GB: measured on the CPU with 1 and 2 blocks of each width, + n_layer x per block.")
    print(f"{'model':<12} {'plain':>8} {'checkpointed':>13}   {'per block: plain':>16} {'checkpointed':>13}")
    for r in result["models"]:
        a, per = r["activation_bytes"], r["activation_bytes_per_layer"]
        print(f"{r['name']:<12} {gb(a['plain']):>8.3f} {gb(a['checkpointed']):>13.3f}   "
              f"{gb(per['plain']):>16.4f} {gb(per['checkpointed']):>13.4f}")
    w = result["whole"]
    print(f"check: the {w['preset']} preset ({w['n_layer']} blocks, {w['n_embd']} wide, context "
          f"{w['block_size']}) measured whole keeps {gb(w['bytes']['plain']):.3f} GB plain, "
          f"{gb(w['bytes']['checkpointed']):.3f} GB checkpointed; the per-block sum gives "
          f"{gb(w['per_layer_sum']['plain']):.3f} and {gb(w['per_layer_sum']['checkpointed']):.3f}"
          f"{' (the same bytes)' if w['same'] else ' (NOT the same: the per-block figures above are off)'}.")


def rate(tokens_per_sec):
    """1,234 or 1.8: whole numbers unless the figure is small."""
    return f"{tokens_per_sec:,.0f}" if tokens_per_sec >= 10 else f"{tokens_per_sec:.1f}"


def force_attention_backend(name):
    """Restrict the fused attention to one CUDA kernel family, to compare them."""
    if name == "auto":
        return
    toggles = {"flash": torch.backends.cuda.enable_flash_sdp,
               "efficient": torch.backends.cuda.enable_mem_efficient_sdp,
               "cudnn": torch.backends.cuda.enable_cudnn_sdp}
    for backend, enable in toggles.items():
        enable(backend == name)
    torch.backends.cuda.enable_math_sdp(False)  # fail loudly rather than fall back silently


def write_trace(step, device, path):
    """Profile two more steps, print the operations that take the most time, and write a
    Chrome trace (the timeline of every kernel) to look at in chrome://tracing or Perfetto."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    on_gpu = device.startswith("cuda")
    if on_gpu:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(2):
            step()
        common.synchronize(device)
    # "self" time: an operation's own time, not that of the operations it calls, so the rows
    # add up to the total. On a GPU it is kernel time, which is what MFU is lost in.
    sort_by = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort_by, row_limit=15), file=sys.stderr)
    prof.export_chrome_trace(path)
    print(f"wrote profiler trace {path}", file=sys.stderr)


def device_name(device):
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return device


def parse_args(argv, world_size=None):
    """The checked BenchConfig of a command line, before any work; world_size: the processes
    torchrun starts (None without torchrun)."""
    cfg = parse_config(BenchConfig(), argv, usage=__doc__)
    for name in ("iters", "repeats", "max_new_tokens", "prompt_tokens", "turn_tokens", "gradient_accumulation_steps"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.warmup_iters < 0:
        raise ConfigError(f"warmup_iters must be >= 0, got {cfg.warmup_iters}")
    if cfg.mode == "train":
        check_parallel(cfg.parallel, cfg.dtype, world_size)
        Distributed(world_size=world_size or 1).share("gradient_accumulation_steps", cfg.gradient_accumulation_steps)
    return cfg


def main(argv=None):
    world_size = int(os.environ["WORLD_SIZE"]) if common.started_by_torchrun() else None
    cfg = parse_args(sys.argv[1:] if argv is None else argv, world_size)
    if cfg.mode == "memory":  # arithmetic and CPU forwards: no device to pick
        result = bench_memory(cfg)
    elif cfg.mode == "recipes":  # train.py picks the device of each run
        result = bench_recipes(cfg)
    else:
        device = common.pick_device(cfg.device)
        dtype = common.pick_dtype(device, cfg.dtype)
        bench = {"train": bench_train, "generate": bench_generate, "chat": bench_chat}[cfg.mode]
        result = bench(cfg, device, dtype)
    report = result.pop("report", True)  # False on the ranks other than 0 under torchrun
    result["config"] = dataclasses.asdict(cfg)
    if cfg.json and report:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(common.run_command(main))
