"""
How fast does this code train and generate on your hardware?

    python bench.py                                  # training step, GPT-2 124M shape (on a GPU)
    python bench.py --preset=quickstart              # training step, the CPU quick-start model
    python bench.py --mode=generate --preset=quickstart   # generation: KV cache vs no cache
    python bench.py --mode=generate --preset=baby    # ... for the 6-layer baby GPT, context 256
    python bench.py --batch_size=32 --compile=True --json=True
    python bench.py --profile=True                   # also print the costliest ops, write a trace

Training mode times train.py's own train_step() (gradient accumulation, clipping, loss scaling
and the AdamW update included), after warm-up steps that also absorb torch.compile's compile
time, and reports the median step time, tokens/s and MFU: the share of the accelerator's peak
bf16 FLOP/s spent on the model's own maths (6 FLOPs per parameter per token plus attention,
GPT.flops_per_token). MFU is left out on CPU, which has no meaningful published peak.

Batches are random token ids made on the device by default, so the figure is the model's speed
alone; --dataset=NAME reads real batches with data.py's BatchLoader (what train.py reads) instead.

Generation mode generates max_new_tokens after the same prompt with the KV cache and without
it, and reports tokens/s for each (median over `repeats` runs, the two paths taking turns) and
the speed-up (median of the per-run ratios).
"""

import dataclasses
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch

import common
from common import ConfigError
from configurator import parse_config
from data import BatchLoader, dataset_path
from model import GPT, GPTConfig
from optim import configure_optimizer
from train import TrainConfig, train_step

# Model shapes to benchmark. The character-level ones are read from train.py's own settings,
# so they follow the recipes when those change: "quickstart" is train.py's default (CPU) model,
# "baby" is config/train_shakespeare_char.py's GPU "baby GPT" (nanoGPT's quick-start model).
PRESETS = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024, vocab_size=50257),
    "quickstart": [],  # train.py's arguments for this recipe: none
    "baby": [str(Path(__file__).resolve().parent / "config" / "train_shakespeare_char.py")],
}


@dataclass
class BenchConfig:
    mode: Literal["train", "generate"] = "train"  # time the training step, or generation with and without the KV cache
    # a model shape from PRESETS; n_layer etc. below override it
    preset: Literal["gpt2", "gpt2-medium", "quickstart", "baby"] = "gpt2"
    n_layer: Optional[int] = None  # transformer blocks; None = the preset's
    n_head: Optional[int] = None  # attention heads; None = the preset's
    n_embd: Optional[int] = None  # width of the residual stream; None = the preset's
    block_size: Optional[int] = None  # context length; None = the preset's
    vocab_size: Optional[int] = None  # vocabulary size; None = the preset's
    batch_size: Optional[int] = None  # None = the recipe's (baby on CPU: 4); gpt2: 16 on a GPU, 4 on CPU
    gradient_accumulation_steps: int = 1  # micro-steps per timed optimizer step
    dataset: Optional[str] = None  # None = random tokens; else a prepared dataset (train.py's loader)
    warmup_iters: int = 5  # untimed steps first (compilation, memory allocation, cuDNN autotuning)
    iters: int = 10  # timed steps; the median is reported
    max_new_tokens: int = 500  # generate mode
    prompt_tokens: int = 1  # generate mode: prompt length
    repeats: int = 5  # generate mode: timed runs of each path; medians are reported
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


def recipe(preset):
    """The TrainConfig of a character-level preset (a list of train.py arguments in PRESETS)."""
    return parse_config(TrainConfig(), PRESETS[preset])


def model_config(cfg):
    if isinstance(PRESETS[cfg.preset], list):
        t = recipe(cfg.preset)
        shape = dict(n_layer=t.n_layer, n_head=t.n_head, n_embd=t.n_embd, block_size=t.block_size,
                     vocab_size=65, dropout=t.dropout, bias=t.bias)  # 65 = tiny Shakespeare's characters
    else:
        shape = dict(PRESETS[cfg.preset])
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
    torch.manual_seed(cfg.seed)
    config = model_config(cfg)
    batch_size = default_batch_size(cfg, device)
    model = GPT(config).to(device)
    optimizer = configure_optimizer(model, "adamw", 6e-4, 0.1, (0.9, 0.95), device)
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=dtype == "float16")
    ctx = common.autocast(device, dtype)
    common.allow_tf32(device)
    force_attention_backend(cfg.attention_backend)
    use_compile = device.startswith("cuda") if cfg.compile is None else cfg.compile
    step_model = torch.compile(model, mode=cfg.compile_mode) if use_compile else model

    T = config.block_size
    if cfg.dataset:
        loader = BatchLoader(dataset_path(cfg.dataset), batch_size, T, device, cfg.seed)
        get_batch = lambda: loader.get_batch("train")
    else:
        def get_batch():
            tokens = torch.randint(config.vocab_size, (batch_size, T + 1), device=device)
            return tokens[:, :-1], tokens[:, 1:]

    def step():
        return train_step(step_model, optimizer, get_batch, cfg.gradient_accumulation_steps,
                          scaler, 1.0, ctx)

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

    tokens_per_step = batch_size * T * cfg.gradient_accumulation_steps
    seconds = statistics.median(times)
    result = dict(mode="train", device=device_name(device), dtype=dtype, compile=use_compile,
                  params=model.get_num_params(non_embedding=False), batch_size=batch_size,
                  block_size=T, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                  ms_per_step=seconds * 1000, tokens_per_sec=tokens_per_step / seconds,
                  warmup_seconds=warmup_seconds)
    peak = common.peak_flops(device)
    if peak:
        result["mfu"] = model.flops_per_token() * result["tokens_per_sec"] / peak
        result["peak_flops"] = peak
    if device.startswith("cuda"):
        result["max_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    print(f"train: {result['params'] / 1e6:.1f}M parameters, batch {batch_size}x{T}"
          f"{f' x{cfg.gradient_accumulation_steps}' if cfg.gradient_accumulation_steps > 1 else ''}, "
          f"{dtype}, compile={use_compile}: {result['ms_per_step']:.1f} ms/step, "
          f"{result['tokens_per_sec']:,.0f} tokens/s"
          + (f", MFU {result['mfu']:.1%}" if "mfu" in result else "") + f" on {result['device']}")
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
            model.generate(prompt, min(cfg.max_new_tokens, 16), temperature=0, use_cache=use_cache)
    outputs, times = {}, {True: [], False: []}
    # The two paths take turns, so a burst of load from elsewhere on a shared machine slows both
    # alike; the speed-up is the median of the per-round ratios.
    for _ in range(cfg.repeats):
        for use_cache in (True, False):
            common.synchronize(device)
            t0 = time.perf_counter()
            with ctx:
                # Greedy, so both paths must produce the very same tokens: a built-in check.
                outputs[use_cache] = model.generate(prompt, cfg.max_new_tokens, temperature=0,
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


def main(argv=None):
    cfg = parse_config(BenchConfig(), sys.argv[1:] if argv is None else argv, usage=__doc__)
    for name in ("iters", "repeats", "max_new_tokens", "prompt_tokens", "gradient_accumulation_steps"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.warmup_iters < 0:
        raise ConfigError(f"warmup_iters must be >= 0, got {cfg.warmup_iters}")
    device = common.pick_device(cfg.device)
    dtype = common.pick_dtype(device, cfg.dtype)
    result = bench_train(cfg, device, dtype) if cfg.mode == "train" else bench_generate(cfg, device, dtype)
    result["config"] = dataclasses.asdict(cfg)
    if cfg.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(common.run_command(main))
