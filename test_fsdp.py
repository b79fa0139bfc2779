"""
Sharded training (FSDP2) and sharded checkpoints (Distributed Checkpoint), on the CPU: 2 processes
started by torchrun with the gloo backend, compared with one process doing the same arithmetic.

The runs are small (a 2-layer, 32-wide model, 4 x 16 tokens per micro-step), so one torchrun
takes a few seconds; the module-level fixtures share the runs between tests.
"""

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import checkpoint as ckpt_io
import distributed
import engine
import train
from common import ConfigError
from test_train import REPO, free_port, one_thread, read_metrics, subprocess_env, tiny_args  # noqa: F401 (a fixture)

ACCUM = dict(gradient_accumulation_steps=4, dropout=0.0, max_iters=8)  # 2 micro-steps per rank


def torchrun(args, cwd, nproc=2, script=None, check=True):
    """Run train.py (or another script) under torchrun with nproc CPU processes."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script or REPO / "train.py"),
               *args]
    result = subprocess.run(command, cwd=cwd, env=subprocess_env(), capture_output=True, text=True,
                            timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def weights(out_dir):
    """The weights of a run's newest checkpoint, of either kind, read in this one process."""
    model, _, _ = ckpt_io.load_model("resume", str(out_dir), "cpu")
    return model.state_dict()


def assert_close_weights(a, b, atol=1e-5, exact=False):
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=atol, msg=key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """
    single: one process, 8 iterations, 4 micro-steps per step (the reference).
    fsdp: 2 processes with FSDP, the same total batch (2 micro-steps each), activation
          checkpointing on, 8 iterations uninterrupted.
    half: the same FSDP run stopped at iteration 4 (its checkpoint is what the resume tests use).
    """
    root = tmp_path_factory.mktemp("fsdp_runs")
    dirs = {name: root / name for name in ("single", "fsdp", "half")}
    train.main(tiny_args(dirs["single"], data_dir, **ACCUM))
    torchrun(tiny_args(dirs["fsdp"], data_dir, parallel="fsdp", activation_checkpointing=True, **ACCUM), root)
    torchrun(tiny_args(dirs["half"], data_dir, parallel="fsdp", **dict(ACCUM, max_iters=4)), root)
    return dirs


def test_fsdp_on_two_processes_matches_one_process_with_accumulation(runs):
    # Gradients reduce-scattered across 2 ranks, each accumulating 2 micro-steps (synced only on
    # the last), clipped over the shards, and the same AdamW update: the same weights as one
    # process taking the 4 micro-steps itself. Activation checkpointing is on in the FSDP run.
    assert_close_weights(weights(runs["fsdp"]), weights(runs["single"]))
    fsdp, single = read_metrics(runs["fsdp"]), read_metrics(runs["single"])
    assert [(r["event"], r["iter"]) for r in fsdp] == [(r["event"], r["iter"]) for r in single]
    for a, b in zip(fsdp, single):  # the logged training loss is the mean over the ranks: the whole batch's
        if a["event"] == "eval":
            assert (a["train_loss"], a["val_loss"]) == pytest.approx((b["train_loss"], b["val_loss"]), rel=1e-5)
        else:
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_fsdp_without_accumulation_matches_one_process(tmp_path, data_dir):
    args = dict(gradient_accumulation_steps=2, dropout=0.0, max_iters=4)  # 1 micro-step per rank
    torchrun(tiny_args(tmp_path / "fsdp", data_dir, parallel="fsdp", **args), tmp_path)
    train.main(tiny_args(tmp_path / "single", data_dir, **args))
    assert_close_weights(weights(tmp_path / "fsdp"), weights(tmp_path / "single"))


def test_an_fsdp_checkpoint_is_sharded_and_only_the_newest_is_kept(runs):
    out_dir = runs["fsdp"]
    assert json.loads((out_dir / "ckpt.json").read_text())["folder"] == "ckpt-000008"
    folder = out_dir / "ckpt-000008"
    assert sorted(p.name for p in folder.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]  # a shard per rank
    assert not (out_dir / "ckpt.pt").exists() and not (out_dir / "ckpt-000004").exists()
    state = ckpt_io.load_checkpoint(folder / ckpt_io.SHARDED_EXTRA)
    assert state["iter_num"] == 8 and "data" in state and "model" not in state


def test_resume_on_the_same_two_ranks_continues_bit_identically(runs, tmp_path, data_dir):
    out_dir = tmp_path / "resumed"
    shutil.copytree(runs["half"], out_dir)
    torchrun(tiny_args(out_dir, data_dir, parallel="fsdp", init_from="resume", **ACCUM), tmp_path)
    # The uninterrupted run had activation checkpointing on: recomputation gives the same numbers.
    assert_close_weights(weights(out_dir), weights(runs["fsdp"]), exact=True)
    assert read_metrics(out_dir) == read_metrics(runs["fsdp"])


def test_resume_on_one_process_from_a_two_rank_checkpoint(runs, tmp_path, data_dir):
    # Distributed Checkpoint reshards: the 2-rank shards load as whole tensors into one process
    # (plain training, no torchrun), which continues the run and writes a ckpt.pt.
    out_dir = tmp_path / "resumed"
    shutil.copytree(runs["half"], out_dir)
    train.main(tiny_args(out_dir, data_dir, init_from="resume", **ACCUM))
    assert (out_dir / "ckpt.pt").is_file() and not (out_dir / "ckpt.json").exists()
    assert_close_weights(weights(out_dir), weights(runs["fsdp"]))


def test_resume_with_dropout_on_two_ranks_is_bit_identical(tmp_path, data_dir):
    # Each rank draws its own dropout masks, seeded per step from (seed, step, rank): a resumed
    # run, on every rank, draws the very masks the uninterrupted one drew.
    args = dict(ACCUM, dropout=0.2, max_iters=6, eval_interval=3)
    torchrun(tiny_args(tmp_path / "straight", data_dir, parallel="fsdp", **args), tmp_path)
    torchrun(tiny_args(tmp_path / "resumed", data_dir, parallel="fsdp", **dict(args, max_iters=3)), tmp_path)
    torchrun(tiny_args(tmp_path / "resumed", data_dir, parallel="fsdp", init_from="resume", **args), tmp_path)
    assert_close_weights(weights(tmp_path / "resumed"), weights(tmp_path / "straight"), exact=True)
    assert read_metrics(tmp_path / "resumed") == read_metrics(tmp_path / "straight")


# --------------------------------------------------------------------------------------------
# Muon under FSDP: Newton-Schulz on whole matrices (optim.ShardedMuon)
# --------------------------------------------------------------------------------------------

# One micro-step per rank and no clipping: then the two ranks' gradients, averaged, are bit for bit
# what one process accumulates over the same two micro-batches (halving is exact in floating
# point), so any difference would be the optimizer's.
MUON_EXACT = dict(optimizer="muon", gradient_accumulation_steps=2, grad_clip=0.0, dropout=0.0, max_iters=8)

SHARDED_MUON_SCRIPT = """
import sys, torch
import common, optim
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import distribute_tensor

def main():
    torch.distributed.init_process_group("gloo")
    torch.manual_seed(0)
    sharded, plain = torch.nn.Linear(16, 41, bias=False), torch.nn.Linear(16, 41, bias=False)
    plain.load_state_dict(sharded.state_dict())
    fully_shard(sharded)  # 41 rows over 2 ranks: 21 and 20
    settings = dict(lr=0.02, weight_decay=0.1, adjust_lr_fn=sys.argv[1])
    optimizers = optim.ShardedMuon(sharded.parameters(), **settings), torch.optim.Muon(plain.parameters(), **settings)
    for step in range(3):
        grad = torch.randn(41, 16)  # the same on both ranks: the same seed
        plain.weight.grad = grad.clone()
        sharded.weight.grad = distribute_tensor(grad, sharded.weight.device_mesh, sharded.weight.placements,
                                                src_data_rank=None)
        for optimizer in optimizers:
            optimizer.step()
        assert torch.equal(sharded.weight.full_tensor(), plain.weight.detach()), step
    print("equal", flush=True)

sys.exit(common.run_command(main))  # ends a torchrun process without gloo's shutdown abort
"""


@pytest.mark.parametrize("scaling", ["match_rms_adamw", "original"])
def test_sharded_muon_steps_uneven_shards_exactly_as_torchs_muon(tmp_path, scaling):
    (tmp_path / "sharded_muon.py").write_text(SHARDED_MUON_SCRIPT)
    result = torchrun([scaling], tmp_path, script=tmp_path / "sharded_muon.py")
    assert result.stdout.count("equal") == 2  # both ranks


def test_fsdp_with_muon_is_one_process_bit_for_bit_and_resumes_exactly(tmp_path, data_dir):
    torchrun(tiny_args(tmp_path / "fsdp", data_dir, parallel="fsdp", **MUON_EXACT), tmp_path)
    train.main(tiny_args(tmp_path / "single", data_dir, **MUON_EXACT))
    assert_close_weights(weights(tmp_path / "fsdp"), weights(tmp_path / "single"), exact=True)
    assert read_metrics(tmp_path / "fsdp") == read_metrics(tmp_path / "single")
    # Stopped at 4 and resumed: on the same 2 ranks, and on one process (Muon's momentum, sharded
    # by Distributed Checkpoint, comes back whole), both exactly the uninterrupted run.
    half = dict(MUON_EXACT, max_iters=4)
    torchrun(tiny_args(tmp_path / "half", data_dir, parallel="fsdp", **half), tmp_path)
    shutil.copytree(tmp_path / "half", tmp_path / "on_one")
    torchrun(tiny_args(tmp_path / "half", data_dir, parallel="fsdp", init_from="resume", **MUON_EXACT), tmp_path)
    train.main(tiny_args(tmp_path / "on_one", data_dir, init_from="resume", **MUON_EXACT))
    for resumed in ("half", "on_one"):
        assert_close_weights(weights(tmp_path / resumed), weights(tmp_path / "single"), exact=True)


def test_fsdp_with_muon_and_accumulation_matches_one_process(tmp_path, data_dir):
    # Two micro-steps per rank, clipped: the gradients now differ from one process's in their last
    # bits (another order of summation), which Newton-Schulz in bfloat16 can round either way;
    # within the tolerance the DDP test uses for Muon after 6 steps.
    args = dict(ACCUM, optimizer="muon", learning_rate=1e-3, max_iters=6, eval_interval=3)
    torchrun(tiny_args(tmp_path / "fsdp", data_dir, parallel="fsdp", **args), tmp_path)
    train.main(tiny_args(tmp_path / "single", data_dir, **args))
    assert_close_weights(weights(tmp_path / "fsdp"), weights(tmp_path / "single"))
    for a, b in zip(read_metrics(tmp_path / "fsdp"), read_metrics(tmp_path / "single"), strict=True):
        key = "val_loss" if a["event"] == "eval" else "loss"
        assert a[key] == pytest.approx(b[key], rel=1e-5)


def test_sample_py_reads_an_fsdp_run_directly(runs):
    result = subprocess.run([sys.executable, "sample.py", f"--out_dir={runs['fsdp']}", "--num_samples=1",
                             "--max_new_tokens=20", "--temperature=0", "--device=cpu"],
                            cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ckpt-000008" in result.stderr and "iteration 8" in result.stderr
    # The text is the greedy continuation of the model the shards hold.
    model, tokenizer, _ = ckpt_io.load_model("resume", str(runs["fsdp"]), "cpu")
    start = torch.tensor([tokenizer.encode("\n")])
    assert result.stdout == tokenizer.decode(engine.generate(model, start, 20, temperature=0)[0].tolist()) + "\n"


SHARD_COUNT = r"""
import json, sys, torch
import optim, train
from distributed import setup_distributed, teardown_distributed, wrap_model
from model import GPT, GPTConfig

dist, device = setup_distributed("cpu", "fsdp")
torch.manual_seed(0)
model = GPT(GPTConfig(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32))
total = sum(p.numel() for p in model.parameters())
model = wrap_model(model, dist, device, "fsdp")
optimizer = optim.configure_optimizer(model, "adamw", 1e-3, 0.1, (0.9, 0.95), device)
x = torch.randint(0, 65, (4, 16))
train.train_step(model, optimizer, lambda: (x, x), 1)
local = lambda t: t.to_local() if hasattr(t, "to_local") else t
report = dict(total=total, params=sum(local(p).numel() for p in model.parameters()),
              optimizer=sum(local(v).numel() for s in optimizer.state.values() for k, v in s.items()
                            if k in ("exp_avg", "exp_avg_sq")))
json.dump(report, open(sys.argv[1] + f".{dist.rank}", "w"))
teardown_distributed(dist)
"""


def test_each_rank_holds_its_share_of_parameters_and_optimizer_state(tmp_path):
    script = tmp_path / "count.py"
    script.write_text(SHARD_COUNT)
    torchrun([str(tmp_path / "report")], tmp_path, script=script)
    reports = [json.loads((tmp_path / f"report.{rank}").read_text()) for rank in (0, 1)]
    total = reports[0]["total"]
    # Every tensor is split along its first dimension, ceil(rows / 2) on rank 0: half, give or take.
    assert sum(r["params"] for r in reports) == total
    for r in reports:
        assert abs(r["params"] - total / 2) <= 0.01 * total
        assert r["optimizer"] == 2 * r["params"]  # AdamW: two moments per parameter, sharded alike


KILLED_DURING_SAVE = r"""
import os, sys, time, torch
import checkpoint, train
marker, argv = sys.argv[1], sys.argv[2:]
real_save, saves = checkpoint.dcp.save, []

def save_then_hang(state, checkpoint_id):
    saves.append(1)
    if len(saves) == 2:  # the second checkpoint (iteration 8): half its shards, then hang
        checkpoint_id.mkdir(parents=True, exist_ok=True)
        (checkpoint_id / "__0_0.distcp").write_bytes(b"half a shard")
        with open(marker + str(torch.distributed.get_rank()), "w") as f:
            f.write(str(os.getpid()))  # torchrun starts workers in sessions of their own
        time.sleep(600)
    return real_save(state, checkpoint_id=checkpoint_id)

checkpoint.dcp.save = save_then_hang
train.main(argv)
"""


def test_sigkill_during_a_sharded_save_leaves_the_previous_checkpoint_loadable(tmp_path, data_dir, runs):
    script, marker, out_dir = tmp_path / "killable.py", tmp_path / "hanging", tmp_path / "out"
    script.write_text(KILLED_DURING_SAVE)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(script), str(marker),
               *tiny_args(out_dir, data_dir, parallel="fsdp", **ACCUM)]
    child = subprocess.Popen(command, cwd=tmp_path, env=subprocess_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not all(Path(f"{marker}{rank}").is_file() and Path(f"{marker}{rank}").read_text() for rank in (0, 1)):
            assert child.poll() is None, f"the run ended early: {child.stderr.read().decode()[-3000:]}"
            assert time.monotonic() < deadline, "the run never reached the point to kill it at"
            time.sleep(0.05)
        # The workers first (their pids are in the markers), at once, then torchrun itself.
        for rank in (0, 1):
            os.kill(int(Path(f"{marker}{rank}").read_text()), signal.SIGKILL)
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        for rank in (0, 1):  # never leave a hanging worker behind, whatever failed
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                os.kill(int(Path(f"{marker}{rank}").read_text()), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        child.stderr.close()

    assert (out_dir / "ckpt-000008").is_dir()  # the half-written one is there...
    assert ckpt_io.find_checkpoint(out_dir) == out_dir / "ckpt-000004"  # ...but not named
    assert ckpt_io.load_training_checkpoint(out_dir)["iter_num"] == 4
    # Resuming from it gives the uninterrupted run's weights, and the leftover is cleared away.
    torchrun(tiny_args(out_dir, data_dir, parallel="fsdp", init_from="resume", **ACCUM), tmp_path)
    assert_close_weights(weights(out_dir), weights(runs["half"].parent / "fsdp"), atol=1e-6)
    assert sorted(p.name for p in out_dir.glob("ckpt-*")) == ["ckpt-000008"]


def test_bad_fsdp_setups_are_one_clear_line(tmp_path, data_dir):
    with pytest.raises(ConfigError, match="parallel=fsdp shards the model over the processes torchrun starts"):
        train.main(tiny_args(tmp_path / "out", data_dir, parallel="fsdp"))
    with pytest.raises(ConfigError, match="parallel expects one of 'ddp', 'fsdp', got 'zero3'"):
        train.main(tiny_args(tmp_path / "out", data_dir, parallel="zero3"))
    with pytest.raises(ConfigError, match="use --dtype=bfloat16"):
        distributed.shard_model(torch.nn.Linear(2, 2), "cuda", "float16")
    assert not (tmp_path / "out").exists()


def test_activation_checkpointing_in_one_process_gives_the_same_run(runs, tmp_path, data_dir):
    train.main(tiny_args(tmp_path, data_dir, activation_checkpointing=True, **ACCUM))
    assert_close_weights(weights(tmp_path), weights(runs["single"]), exact=True)
    assert math.isfinite(read_metrics(tmp_path)[-1]["val_loss"])


def test_bench_times_the_sharded_step_under_torchrun(tmp_path):
    # What .ci/gpu measures on a GPU (gpt2-medium, FSDP against DDP), in small, on the CPU.
    result = torchrun(["--preset=quickstart", "--batch_size=2", "--warmup_iters=1", "--iters=2",
                       "--parallel=fsdp", "--gradient_accumulation_steps=2", "--json"], tmp_path,
                      script=REPO / "bench.py")
    # One report, rank 0's: two processes printing to one stdout could glue their lines together.
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1 and result.stdout.count("train: ") == 1
    assert reports[0]["parallel"] == "fsdp" and reports[0]["processes"] == 2 and reports[0]["ms_per_step"] > 0
    # Accumulation counts over all processes, as in train.py: one micro-step each, 2 x 64 tokens each.
    assert reports[0]["tokens_per_sec"] * reports[0]["ms_per_step"] / 1000 == pytest.approx(2 * 2 * 64)
    assert reports[0]["optimizer"] == train.TrainConfig().optimizer  # the quick start's recipe: Muon
