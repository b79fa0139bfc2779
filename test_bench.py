"""bench.py: it must time train.py's real step, report the figures it promises, and refuse bad input."""

import dataclasses
import json
import typing
from pathlib import Path

import pytest
import torch

import bench
import common
from configurator import parse_config
import train
from model import GPT

# A model small enough that a benchmark run takes a fraction of a second.
TINY = ["--preset=quickstart", "--n_layer=1", "--n_embd=32", "--n_head=2", "--block_size=16",
        "--batch_size=2", "--device=cpu"]


def test_train_mode_times_train_py_own_step(monkeypatch, capsys):
    calls = []

    def counting_step(*args, **kwargs):
        calls.append(1)
        return train.train_step(*args, **kwargs)

    # bench.py must call train.train_step (the step train.py runs), not a copy of it.
    monkeypatch.setattr(bench, "train_step", counting_step)
    result = bench.main(TINY + ["--warmup_iters=2", "--iters=3", "--json=True"])
    assert len(calls) == 2 + 3
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["tokens_per_sec"] == pytest.approx(result["tokens_per_sec"])
    assert printed["tokens_per_sec"] == pytest.approx(2 * 16 / (printed["ms_per_step"] / 1000))
    assert "mfu" not in printed  # no meaningful peak FLOP/s on a CPU


def test_compile_option_and_mode_reach_torch_compile(monkeypatch):
    modes = []
    monkeypatch.setattr(bench.torch, "compile", lambda model, mode: modes.append(mode) or model)
    bench.main(TINY + ["--warmup_iters=0", "--iters=1"])
    assert modes == []  # off on a CPU unless asked for
    bench.main(TINY + ["--warmup_iters=0", "--iters=1", "--compile=True",
                       "--compile_mode=max-autotune-no-cudagraphs"])
    assert modes == ["max-autotune-no-cudagraphs"]


class FakeClock:
    """Stands in for bench.py's `time` module: time moves only when a test advances it."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_step_time_is_the_median_and_mfu_uses_the_models_own_flops(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(bench, "time", clock)
    durations = iter([0.5, 1.0, 5.0, 2.0])  # one warm-up step, then three timed ones

    def step(*args, **kwargs):
        clock.now += next(durations)
        return train.train_step(*args, **kwargs)

    monkeypatch.setattr(bench, "train_step", step)
    monkeypatch.setattr(common, "peak_flops", lambda device: 1e12)  # as if the CPU had a peak
    result = bench.main(TINY + ["--warmup_iters=1", "--iters=3"])
    assert result["ms_per_step"] == pytest.approx(2000.0)  # the median, not the mean or the best
    assert result["tokens_per_sec"] == pytest.approx(2 * 16 / 2.0)
    model = GPT(bench.model_config(parse_config(bench.BenchConfig(), TINY)))
    assert result["mfu"] == pytest.approx(model.flops_per_token() * result["tokens_per_sec"] / 1e12)
    assert result["params"] == model.get_num_params(non_embedding=False)


def test_generation_speedup_is_no_cache_time_over_cache_time(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(bench, "time", clock)
    generate = bench.GPT.generate

    def timed_generate(self, *args, use_cache=True, **kwargs):
        clock.now += 1.0 if use_cache else 3.0  # the cache path takes a third of the time
        return generate(self, *args, use_cache=use_cache, **kwargs)

    monkeypatch.setattr(bench.GPT, "generate", timed_generate)
    result = bench.main(TINY + ["--mode=generate", "--max_new_tokens=4", "--repeats=2"])
    assert result["speedup"] == pytest.approx(3.0)
    assert result["tokens_per_sec_kv_cache"] == pytest.approx(4 / 1.0)
    assert result["tokens_per_sec_no_cache"] == pytest.approx(4 / 3.0)


def test_train_mode_with_accumulation_counts_all_micro_steps(monkeypatch):
    batches = []
    real = bench.train_step

    def spy(model, optimizer, get_batch, *args, **kwargs):
        def counted():
            batches.append(1)
            return get_batch()
        return real(model, optimizer, counted, *args, **kwargs)

    monkeypatch.setattr(bench, "train_step", spy)
    result = bench.main(TINY + ["--warmup_iters=0", "--iters=2", "--gradient_accumulation_steps=3"])
    assert len(batches) == 2 * 3
    assert result["tokens_per_sec"] == pytest.approx(3 * 2 * 16 / (result["ms_per_step"] / 1000))


def test_generate_mode_reports_both_paths_and_checks_they_agree(capsys):
    # 40 new tokens on a 16-token window: the window moves, and the cache is rebuilt, twice.
    result = bench.main(TINY + ["--mode=generate", "--max_new_tokens=40", "--repeats=2", "--json=True"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("tokens_per_sec_kv_cache", "tokens_per_sec_no_cache", "speedup"):
        assert printed[key] > 0
    assert printed["same_tokens"] is True
    assert result["block_size"] == 16 and result["max_new_tokens"] == 40


def test_profile_prints_the_costliest_operations_and_writes_a_chrome_trace(tmp_path, capsys):
    path = tmp_path / "trace.json"
    bench.main(TINY + ["--warmup_iters=1", "--iters=1", "--profile=True", f"--trace_path={path}"])
    trace = json.loads(path.read_text())
    names = {event.get("name", "") for event in trace["traceEvents"]}
    assert any("addmm" in n or "mm" in n for n in names)  # the matmuls of the step are in it
    table = capsys.readouterr().err
    assert "Self CPU" in table and "aten::mm" in table


@pytest.mark.parametrize("args,message", [
    (["--mode=decode"], "mode expects one of 'train', 'generate', got 'decode'"),
    (["--preset=gpt5"], "preset expects one of 'gpt2', 'gpt2-medium', 'quickstart', 'baby', got 'gpt5'"),
    (["--repeats=0", "--mode=generate"], "repeats must be at least 1"),
    (["--iters=0"], "iters must be at least 1"),
    (["--attention_backend=fastest"], "attention_backend expects one of 'auto', 'flash'"),
    (["--compile_mode=fast"], "compile_mode expects one of 'default', 'reduce-overhead'"),
])
def test_bad_options_are_named(args, message):
    with pytest.raises(common.ConfigError, match=message.replace("(", r"\(")):
        bench.main(TINY + args)
    # force_attention_backend must not have switched anything off on the way
    assert torch.backends.cuda.math_sdp_enabled()


def test_preset_choices_are_the_presets():
    # BenchConfig.preset's Literal is what --help shows and the parser checks: it must name
    # exactly the shapes PRESETS holds, or a valid preset would be refused (or a listed one fail).
    field = {f.name: f for f in dataclasses.fields(bench.BenchConfig)}["preset"]
    assert typing.get_args(typing.get_type_hints(bench.BenchConfig)["preset"]) == tuple(bench.PRESETS)
    assert field.default in bench.PRESETS


def test_baby_preset_is_the_shape_of_the_baby_gpt_config():
    cfg = parse_config(train.TrainConfig(), [str(Path(__file__).parent / "config" / "train_shakespeare_char.py")])
    shape = bench.model_config(bench.BenchConfig(preset="baby"))
    for key in ("n_layer", "n_head", "n_embd", "block_size", "bias"):
        assert getattr(shape, key) == getattr(cfg, key), key
    # and a GPU training benchmark of it uses the batch the recipe trains with
    assert bench.default_batch_size(bench.BenchConfig(preset="baby"), "cuda") == cfg.batch_size
