"""bench.py: it must time train.py's real step, report the figures it promises, and refuse bad input."""

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest
import torch

import bench
import common
import hf
from configurator import parse_config
import train
from model import GPT, GPTConfig

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
    generate = bench.generate  # engine.generate, as bench.py calls it

    def timed_generate(model, *args, use_cache=True, **kwargs):
        clock.now += 1.0 if use_cache else 3.0  # the cache path takes a third of the time
        return generate(model, *args, use_cache=use_cache, **kwargs)

    monkeypatch.setattr(bench, "generate", timed_generate)
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


def test_chat_mode_holds_one_conversation_both_ways_and_they_agree(capsys):
    result = bench.main(["--mode=chat", "--preset=quickstart", "--n_layer=1", "--n_embd=16", "--n_head=2",
                         "--block_size=48", "--turn_tokens=4", "--repeats=2", "--json", "--device=cpu"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # Each turn is 4 message tokens, 3 markers, an answer of up to 4 tokens and its <|end|>.
    assert printed["turns"] == result["turns"] == 48 // 12 and printed["same_tokens"] is True
    assert printed["conversation_tokens"] <= 48 and printed["speedup"] > 0
    with pytest.raises(bench.ConfigError, match="leaves room for 0 turn"):
        bench.main(["--mode=chat", "--preset=quickstart", "--block_size=16", "--turn_tokens=8"])


def test_profile_prints_the_costliest_operations_and_writes_a_chrome_trace(tmp_path, capsys):
    path = tmp_path / "trace.json"
    bench.main(TINY + ["--warmup_iters=1", "--iters=1", "--profile=True", f"--trace_path={path}"])
    trace = json.loads(path.read_text())
    names = {event.get("name", "") for event in trace["traceEvents"]}
    assert any("addmm" in n or "mm" in n for n in names)  # the matmuls of the step are in it
    table = capsys.readouterr().err
    assert "Self CPU" in table and "aten::mm" in table


@pytest.mark.parametrize("args,message", [
    (["--mode=decode"], "mode expects one of 'train', 'generate', 'memory', 'recipes', 'chat', got 'decode'"),
    (["--preset=gpt5"], "preset expects one of 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl', 'quickstart', "
                        "'baby', got 'gpt5'"),
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


def test_activation_checkpointing_option_reaches_the_model(monkeypatch, capsys):
    import model
    calls = []
    checkpoint = model.checkpoint  # torch.utils.checkpoint.checkpoint, as model.py calls it
    monkeypatch.setattr(model, "checkpoint", lambda *args, **kwargs: calls.append(1) or checkpoint(*args, **kwargs))
    result = bench.main(TINY + ["--n_layer=2", "--warmup_iters=1", "--iters=2", "--activation_checkpointing",
                                "--json"])
    assert len(calls) == 2 * (1 + 2)  # every block of every step, warm-up included
    assert result["activation_checkpointing"] is True and result["ms_per_step"] > 0
    out = capsys.readouterr().out
    assert "activation checkpointing" in out and json.loads(out.strip().splitlines()[-1])["activation_checkpointing"]
    calls.clear()
    assert bench.main(TINY + ["--warmup_iters=0", "--iters=1"])["activation_checkpointing"] is False
    assert calls == []


# ---------------------------------------------------------------------------- memory mode

def gpt2_shapes(name):
    return bench.parameter_shapes(hf.gpt2_config(name))


def test_state_is_16_bytes_per_parameter_and_chunks_round_up():
    assert sum(bench.STATE_BYTES_PER_PARAM.values()) == 16  # 4 weight + 4 gradient + 8 AdamW
    # One 5 x 3 matrix and a bias of 7 on 2 ranks: torch.chunk gives rank 0 rows 0-2 and rank 1
    # rows 3-4 of the matrix, 4 of the 7 bias entries to rank 0; rank 0 holds the larger share.
    shapes = [(5, 3), (7,)]
    assert bench.state_bytes_per_rank(shapes, 2, sharded=False) == 16 * (15 + 7)  # DDP: all of it
    assert bench.state_bytes_per_rank(shapes, 2, sharded=True) == 16 * (3 * 3 + 4)
    # More ranks than rows: each rank holds at most one row.
    assert bench.state_bytes_per_rank(shapes, 8, sharded=True) == 16 * (3 + 1)


@pytest.mark.parametrize("name", bench.GPT2_SIZES)
def test_fsdp_on_one_rank_is_ddp_and_on_n_ranks_the_sum_of_chunks(name):
    shapes = gpt2_shapes(name)
    ddp = bench.state_bytes_per_rank(shapes, 1, sharded=False)
    assert bench.state_bytes_per_rank(shapes, 1, sharded=True) == ddp
    for n in (2, 4, 8):
        # torch.chunk itself, on a stand-in tensor of each shape's rows: rank 0's chunk
        chunks = sum(torch.empty(shape[0], 0).chunk(n)[0].size(0) * math.prod(shape[1:]) for shape in shapes)
        assert bench.state_bytes_per_rank(shapes, n, sharded=True) == 16 * chunks
        assert bench.state_bytes_per_rank(shapes, n, sharded=True) == pytest.approx(ddp / n, rel=1e-3)
        assert bench.state_bytes_per_rank(shapes, n, sharded=False) == ddp  # DDP does not shrink


def test_gpt2_xl_state_counts_every_allocated_parameter():
    # Hugging Face's gpt2-xl has 1,557,611,200 parameters, and so does ours without the padding
    # rows of the embedding (get_num_params leaves them out). The memory counts them: 47 rows x
    # 1600 are allocated, trained and stored in AdamW like every other row.
    config = hf.gpt2_config("gpt2-xl")
    with torch.device("meta"):
        assert GPT(config).get_num_params(non_embedding=False) == 1_557_611_200
    allocated = 1_557_611_200 + (50_304 - 50_257) * 1600
    assert sum(math.prod(shape) for shape in gpt2_shapes("gpt2-xl")) == allocated
    ddp = bench.state_bytes_per_rank(gpt2_shapes("gpt2-xl"), 1, sharded=False)
    assert ddp == 16 * allocated and round(ddp / 1e9, 1) == 24.9  # ~25 GB before one activation


FSDP_SHARDS_SCRIPT = textwrap.dedent("""
    # Run by torchrun: shard a GPT with FSDP2 as train.py does (each block, then the root), take
    # one AdamW step, and write the bytes this rank holds of each kind of state.
    import json, sys
    import torch
    from torch.distributed.fsdp import fully_shard
    from model import GPT, GPTConfig

    torch.distributed.init_process_group("gloo")
    torch.manual_seed(0)
    model = GPT(GPTConfig(**json.loads(sys.argv[1])))
    for block in model.transformer.h:
        fully_shard(block)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(model.config.vocab_size, (2, model.config.block_size + 1))
    model(tokens[:, :-1], tokens[:, 1:])[1].backward()
    optimizer.step()
    size = lambda t: t.to_local().numel() * t.element_size()  # this rank's shard of a DTensor
    held = dict(weights=sum(size(p) for p in model.parameters()),
                gradients=sum(size(p.grad) for p in model.parameters()),
                adamw_moments=sum(size(s[k]) for s in optimizer.state.values() for k in ("exp_avg", "exp_avg_sq")))
    with open(sys.argv[2] + f".{torch.distributed.get_rank()}", "w") as f:
        json.dump(held, f)
    torch.distributed.destroy_process_group()
""")


def test_the_fsdp_figure_is_what_fsdp2_allocates_on_rank_0(tmp_path):
    # The arithmetic against FSDP2 itself: 2 CPU processes (gloo), a model whose rows do not
    # split evenly (45-row c_attn, 65-row embedding), so torch.chunk's rounding shows.
    shape = dict(n_layer=2, n_head=3, n_embd=15, block_size=9, vocab_size=65, pad_vocab_to=1)
    (tmp_path / "shards.py").write_text(FSDP_SHARDS_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(bench.__file__).parent))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             "--master_addr=127.0.0.1", f"--master_port={port}", str(tmp_path / "shards.py"),
                             json.dumps(shape), str(tmp_path / "held")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    held = [json.loads((tmp_path / f"held.{rank}").read_text()) for rank in (0, 1)]
    shapes = bench.parameter_shapes(GPTConfig(**shape))
    for kind, bytes_per_param in bench.STATE_BYTES_PER_PARAM.items():
        assert held[0][kind] == bench.state_bytes_per_rank(shapes, 2, sharded=True, bytes_per_param=bytes_per_param), kind
        assert held[1][kind] < held[0][kind]  # the last rank gets the shorter chunks
        # together the two ranks hold exactly one copy
        assert held[0][kind] + held[1][kind] == bench.state_bytes_per_rank(shapes, 1, False, bytes_per_param)
    assert sum(held[0].values()) > bench.state_bytes_per_rank(shapes, 1, sharded=False) / 2


def test_activation_figures_per_layer_add_up_to_a_whole_model():
    # Every block keeps the same tensors, so 1- and 2-block measurements give any depth exactly.
    config = GPTConfig(n_layer=5, n_head=2, n_embd=32, block_size=16, vocab_size=65)
    whole = bench.activation_bytes(config, batch_size=2)
    layers = bench.activation_bytes_per_layer(config, batch_size=2)
    for kind in ("plain", "checkpointed"):
        assert whole[kind] == layers[kind]["fixed"] + 5 * layers[kind]["per_layer"]
    # checkpointed, a block keeps only its input: (B, T, C) float32
    assert layers["checkpointed"]["per_layer"] == 2 * 16 * 32 * 4
    assert layers["plain"]["per_layer"] > 10 * layers["checkpointed"]["per_layer"]


def test_memory_mode_prints_the_table_and_one_json_object(monkeypatch, capsys):
    monkeypatch.setattr(bench, "GPT2_SIZES", ("gpt2", "gpt2-xl"))  # two sizes keep it quick
    result = bench.main(["--mode=memory", "--block_size=16", "--n_layer=2", "--json"])
    out = capsys.readouterr().out
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed["mode"] == "memory" and printed["world_sizes"] == [1, 2, 4, 8]
    assert [r["name"] for r in printed["models"]] == ["gpt2", "gpt2-xl"]
    xl = printed["models"][1]
    assert xl["params_hf"] == 1_557_611_200 and xl["fsdp_bytes"][0] == xl["ddp_bytes"]
    assert xl["fsdp_bytes"][3] == xl["ddp_bytes"] // 8  # gpt2-xl's rows all divide by 8
    assert xl["activation_bytes"]["checkpointed"] < xl["activation_bytes"]["plain"]
    assert printed["whole"]["same"] is True and printed["whole"]["n_layer"] == 2
    assert printed == json.loads(json.dumps(result))  # the JSON line is the whole result
    assert "FSDP 8" in out and "gpt2-xl" in out and "checkpointed" in out


# --- recipes mode: whole train.py runs side by side ---

def tiny_recipe(path, data_dir, **settings):
    """A config file for train.py: a model and run small enough to take a few seconds."""
    values = dict(dataset="tiny", data_dir=str(data_dir), n_layer=1, n_head=2, n_embd=32, block_size=16,
                  batch_size=4, max_iters=6, eval_interval=3, eval_iters=2, log_interval=3, warmup_iters=2,
                  device="cpu", **settings)
    path.write_text("".join(f"{key} = {value!r}\n" for key, value in values.items()))
    return path


def test_recipes_mode_runs_train_py_and_reports_what_its_metrics_say(tmp_path, data_dir, capsys):
    adamw = tiny_recipe(tmp_path / "tiny_adamw.py", data_dir, optimizer="adamw")
    muon = tiny_recipe(tmp_path / "tiny_muon.py", data_dir, optimizer="muon")
    record = tmp_path / "record"
    result = bench.main(["--mode=recipes", f"--recipes={adamw},{muon}", "--repeats=1",
                         f"--record_dir={record}", "--json"])
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1]) == json.loads(json.dumps(result))
    assert list(result["recipes"]) == [str(adamw), str(muon)]
    for recipe, name in ((adamw, "tiny_adamw"), (muon, "tiny_muon")):
        row = result["recipes"][str(recipe)]
        metrics = [json.loads(line) for line in (record / f"{name}-1" / "metrics.jsonl").read_text().splitlines()]
        evals = [r for r in metrics if r["event"] == "eval"]
        assert [r["iter"] for r in evals] == [0, 3, 6] and row["steps"] == 6
        assert row["best_val_loss"] == min(r["val_loss"] for r in evals)
        # eval records carry the seconds since the loop started: the time axis of the curves
        seconds = [s for s, _ in row["runs"][0]["curve"]]
        assert seconds == sorted(seconds) and seconds[0] < seconds[-1] < row["median_seconds"]
        assert not list((record / f"{name}-1").glob("ckpt*"))  # only the log is kept
        assert name in out
    assert json.loads((record / "summary.json").read_text()) == json.loads(json.dumps(result))
    # the two optimizers really differ: the same data and init, different updates
    losses = [result["recipes"][str(r)]["best_val_loss"] for r in (adamw, muon)]
    assert losses[0] != losses[1]


def test_recipes_take_turns_and_report_medians(tmp_path, monkeypatch, capsys):
    order, seconds = [], iter([5.0, 50.0, 1.0, 10.0, 3.0, 30.0])  # a, b, a, b, a, b
    clock = [0.0]

    def fake_train(command, **kwargs):  # stands in for `python train.py ...`: writes its log
        out_dir = Path(next(a for a in command if a.startswith("--out_dir=")).split("=", 1)[1])
        order.append(out_dir.name)
        out_dir.mkdir(parents=True)
        loss = 1.0 + len(order) / 10
        (out_dir / "metrics.jsonl").write_text(
            json.dumps(dict(event="eval", iter=0, val_loss=9.0, seconds=0.0)) + "\n"
            + json.dumps(dict(event="eval", iter=8, val_loss=loss, seconds=1.0)) + "\n")
        (out_dir / "ckpt.pt").write_bytes(b"weights")
        clock[0] += next(seconds)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(bench.subprocess, "run", fake_train)
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    result = bench.main(["--mode=recipes", "--recipes=default,quickstart_adamw", "--repeats=3",
                         f"--record_dir={tmp_path}"])
    assert order == ["default-1", "quickstart_adamw-1", "default-2", "quickstart_adamw-2",
                     "default-3", "quickstart_adamw-3"]
    default, other = result["recipes"]["default"], result["recipes"]["quickstart_adamw"]
    assert default["median_seconds"] == 3.0 and other["median_seconds"] == 30.0
    assert default["best_val_loss"] == pytest.approx(1.1) and other["best_val_loss"] == pytest.approx(1.2)
    assert default["median_best_val_loss"] == pytest.approx(1.3)
    assert default["command"] == "python train.py"
    assert other["command"] == "python train.py config/quickstart_adamw.py"


@pytest.mark.parametrize("recipes, message", [
    ("default,no_such_recipe", "there is no .*no_such_recipe.py"),
    (" , ", "recipes is empty"),
])
def test_bad_recipes_are_named_before_any_run(recipes, message, monkeypatch):
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: pytest.fail("a run started"))
    with pytest.raises(common.ConfigError, match=message):
        bench.main(["--mode=recipes", f"--recipes={recipes}"])


def test_a_failed_run_is_one_line_naming_the_recipe(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.subprocess, "run", lambda command, **k: subprocess.CompletedProcess(command, 1))
    with pytest.raises(common.UserError, match="recipe default: train.py exited with 1"):
        bench.main(["--mode=recipes", "--recipes=default", "--repeats=1"])
