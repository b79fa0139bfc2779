"""
Tests for train.py, on CPU with tiny models and a tiny dataset written by the tests.

Most tests compare two paths that must agree: k micro-batches vs one big batch, a resumed run vs
an uninterrupted one, a run killed with SIGKILL and resumed vs an uninterrupted one, two DDP
processes vs one process. Runs go through train.main(argv) in-process; only what needs a
process to die (SIGKILL) or several processes (torchrun) uses subprocesses.
"""

import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import checkpoint as ckpt_io
import data
import hf
import optim
import prepare
import train
from checkpoint import CheckpointError
from common import ConfigError
from configurator import parse_config
from data import BatchLoader, DataError
from distributed import unwrap_model
from model import GPT, GPTConfig
from test_data import write_bin_dataset
from tokenizer import GPT2_EOT, tokenizer_from_meta
from train import TrainingError

REPO = Path(__file__).resolve().parent
TIMING_FIELDS = ("ms_per_iter", "tokens_per_sec", "mfu", "seconds")  # wall-clock: differ run to run


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread: faster than two fighting over two busy cores, and the same float results
    in this process as in the subprocesses (started with OMP_NUM_THREADS=1), which exact
    comparisons between them need."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_args(out_dir, data_dir, **overrides):
    """Command-line arguments for a run that takes about a second. AdamW (every setup, FSDP
    included, supports it; the Muon tests ask for optimizer="muon") with GPT-2's beta2: the
    exact comparisons were written for these runs. (Muon's Newton-Schulz runs in bfloat16, which
    can turn a last-bit difference between two ways of computing a gradient into a visible one.)"""
    settings = dict(out_dir=out_dir, dataset="tiny", data_dir=data_dir, optimizer="adamw", beta2=0.95, n_layer=2, n_head=2,
                    n_embd=32, block_size=16, batch_size=4, gradient_accumulation_steps=2,
                    max_iters=12, lr_decay_iters=12, eval_interval=4, eval_iters=2, log_interval=1,
                    warmup_iters=2, learning_rate=3e-3, dropout=0.1, device="cpu", dtype="float32")
    settings.update(overrides)
    return [f"--{key}={value}" for key, value in settings.items()]


def read_metrics(out_dir, drop_timing=True):
    records = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    if drop_timing:
        records = [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]
    return records


def load_weights(out_dir):
    return ckpt_io.load_checkpoint(Path(out_dir) / "ckpt.pt")["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def file_digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def subprocess_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("RANK", None)
    return env


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, data_dir):
    """The reference: 12 uninterrupted iterations (evals and checkpoints at 4, 8, 12)."""
    out_dir = tmp_path_factory.mktemp("straight")
    summary = train.main(tiny_args(out_dir, data_dir))
    return out_dir, summary


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

def test_unknown_key_on_command_line_names_closest_and_does_no_work(tmp_path, data_dir):
    out_dir = tmp_path / "out"
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        train.main(tiny_args(out_dir, data_dir) + ["--learning_rte=1e-3"])
    assert not out_dir.exists()  # stopped before creating anything


def test_unknown_key_in_config_file_names_closest(tmp_path, data_dir):
    config_file = tmp_path / "my_config.py"
    config_file.write_text("batch_size = 8\nmax_iter = 100\n")
    with pytest.raises(ConfigError, match=r"max_iter.*my_config.py.*did you mean 'max_iters'"):
        train.main([str(config_file)])


def test_bad_values_are_config_errors(tmp_path, data_dir):
    out_dir = tmp_path / "out"
    with pytest.raises(ConfigError, match="max_iters expects int"):
        train.main(tiny_args(out_dir, data_dir, max_iters="lots"))
    with pytest.raises(ConfigError, match="init_from expects one of 'scratch', 'resume', 'checkpoint', 'gpt2'.*got 'gpt3'"):
        train.main(tiny_args(out_dir, data_dir, init_from="gpt3"))
    with pytest.raises(ConfigError, match="not divisible by n_head"):
        train.main(tiny_args(out_dir, data_dir, n_embd=30, n_head=4))
    assert not out_dir.exists()
    # ints are fine for float fields, and every config file in config/ is valid
    cfg = parse_config(train.TrainConfig(), ["--learning_rate=1", "--wandb_run_name=a=b"])
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert cfg.wandb_run_name == "a=b"


def test_gradient_accumulation_must_divide_by_world_size(tmp_path):
    # Checked with the command line, before torchrun's processes do any work.
    with pytest.raises(ConfigError, match="gradient_accumulation_steps=5.*divisible.*=6"):
        train.parse_args(["--gradient_accumulation_steps=5"], world_size=2)
    train.parse_args(["--gradient_accumulation_steps=6"], world_size=2)
    train.parse_args(["--gradient_accumulation_steps=5"])  # one process: anything goes


def test_train_gpt2_config_is_half_a_million_tokens_per_step():
    cfg = parse_config(train.TrainConfig(), [str(REPO / "config" / "train_gpt2.py")])
    assert cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size == 524288


# --------------------------------------------------------------------------------------------
# Optimization pieces
# --------------------------------------------------------------------------------------------

def test_learning_rate_schedule():
    lrs = [train.get_lr(it, 1e-3, 1e-4, warmup_iters=10, lr_decay_iters=100) for it in range(120)]
    assert lrs[0] > 0  # step 0 already moves
    assert all(a < b for a, b in zip(lrs[:11], lrs[1:11]))  # warmup rises
    assert lrs[10] == pytest.approx(1e-3)  # the peak right after warmup
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then only falls
    assert lrs[55] == pytest.approx((1e-3 + 1e-4) / 2)  # half way down the cosine
    assert lrs[100] == lrs[119] == 1e-4  # the floor


def test_weight_decay_only_on_matrices():
    model = GPT(GPTConfig(block_size=8, vocab_size=10, n_layer=1, n_head=2, n_embd=8))
    optimizer = optim.configure_optimizer(model, "adamw", 1e-3, 0.1, (0.9, 0.95), "cpu")
    decayed, not_decayed = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and not_decayed["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() == 1 for p in not_decayed["params"])
    assert len(decayed["params"]) + len(not_decayed["params"]) == len(list(model.parameters()))


def test_k_micro_batches_give_the_gradient_of_one_k_times_larger_batch():
    torch.manual_seed(0)
    config = GPTConfig(block_size=16, vocab_size=20, n_layer=2, n_head=2, n_embd=16)
    x = torch.randint(0, 20, (8, 16))
    y = torch.randint(0, 20, (8, 16))
    start = GPT(config).state_dict()

    def step(grad_accum_steps):
        model = GPT(config)
        model.load_state_dict(start)
        # SGD with lr=1 makes the update exactly minus the gradient, so comparing weights after
        # one step compares gradients.
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        chunks = iter(zip(x.chunk(grad_accum_steps), y.chunk(grad_accum_steps)))
        loss = train.train_step(model, optimizer, lambda: next(chunks), grad_accum_steps)
        return loss, model.state_dict()

    loss_one, weights_one = step(1)
    loss_four, weights_four = step(4)
    assert loss_four.item() == pytest.approx(loss_one.item(), rel=1e-6)
    moved = False
    for key in weights_one:
        torch.testing.assert_close(weights_four[key], weights_one[key], rtol=1e-5, atol=1e-7)
        moved |= not torch.equal(weights_one[key], start[key])
    assert moved  # the step really changed the weights


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_unwrap_model_gives_clean_state_dict_keys():
    model = GPT(GPTConfig(block_size=8, vocab_size=10, n_layer=1, n_head=2, n_embd=8))
    compiled = torch.compile(model)  # wrapping is free; compiling happens on the first call
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    assert unwrap_model(compiled) is model
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in unwrap_model(compiled).state_dict())


# --------------------------------------------------------------------------------------------
# Whole runs: resume, checkpoints, metrics
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path, data_dir, straight_run, optimizer):
    straight_dir, summary = straight_run
    if optimizer != "adamw":  # the fixture's run is AdamW's; Muon's momentum must come back too
        straight_dir = tmp_path / "straight"
        summary = train.main(tiny_args(straight_dir, data_dir, optimizer=optimizer))
    out_dir = tmp_path / "out"
    train.main(tiny_args(out_dir, data_dir, max_iters=8, optimizer=optimizer))  # stops (and checkpoints) at 8
    assert ckpt_io.load_checkpoint(out_dir / "ckpt.pt")["iter_num"] == 8
    resumed = train.main(tiny_args(out_dir, data_dir, init_from="resume", optimizer=optimizer))
    assert resumed["iter_num"] == summary["iter_num"] == 12
    # Dropout is on (0.1): equal weights also mean the RNG state was restored exactly.
    assert_same_weights(load_weights(out_dir), load_weights(straight_dir))
    assert read_metrics(out_dir) == read_metrics(straight_dir)  # same losses, same events, no repeats


def test_resuming_with_the_other_optimizer_is_one_clear_line(tmp_path, data_dir, straight_run):
    # AdamW's moments cannot become Muon's momentum: refused before anything is loaded, naming
    # the option that resumes it. (A checkpoint without the option, from before Muon, is AdamW's.)
    out_dir = tmp_path / "out"
    shutil.copytree(straight_run[0], out_dir)
    with pytest.raises(CheckpointError, match=r"ckpt.pt was trained with optimizer=adamw and this run asks "
                                              r"for optimizer=muon: resume with --optimizer=adamw"):
        train.main(tiny_args(out_dir, data_dir, init_from="resume", max_iters=16, optimizer="muon"))
    checkpoint = ckpt_io.load_checkpoint(out_dir / "ckpt.pt")
    del checkpoint["config"]["optimizer"]
    ckpt_io.save_checkpoint(checkpoint, out_dir / "ckpt.pt")
    with pytest.raises(CheckpointError, match="trained with optimizer=adamw"):
        train.main(tiny_args(out_dir, data_dir, init_from="resume", max_iters=16, optimizer="muon"))
    train.main(tiny_args(out_dir, data_dir, init_from="resume", max_iters=16))  # AdamW resumes it


def test_checkpoint_contents_and_metrics(straight_run):
    straight_dir, summary = straight_run
    checkpoint = ckpt_io.load_checkpoint(straight_dir / "ckpt.pt")
    expected = {"model", "model_args", "config", "iter_num", "best_val_loss", "optimizer",
                "scaler", "data", "meta"}
    assert expected <= checkpoint.keys()
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in checkpoint["model"])
    assert checkpoint["iter_num"] == 12 and checkpoint["config"]["max_iters"] == 12
    assert checkpoint["config"]["device"] == "cpu" and checkpoint["config"]["min_lr"] == pytest.approx(3e-4)
    assert checkpoint["data"]["batches_drawn"] == 12 * 2  # 2 micro-batches per iteration

    records = read_metrics(straight_dir)
    evals = [r for r in records if r["event"] == "eval"]
    assert [r["iter"] for r in evals] == [0, 4, 8, 12]
    for r in evals:
        assert {"train_loss", "val_loss", "val_ppl", "train_bpb", "val_bpb"} <= r.keys()
        assert r["val_ppl"] == pytest.approx(np.exp(r["val_loss"]))
        # ASCII characters are one byte each: bits per byte is the loss in bits.
        assert r["val_bpb"] == pytest.approx(r["val_loss"] / math.log(2), rel=1e-6)
        assert r["train_bpb"] == pytest.approx(r["train_loss"] / math.log(2), rel=1e-6)
    assert [r["iter"] for r in records if r["event"] == "train"] == list(range(12))
    for r in read_metrics(straight_dir, drop_timing=False):
        if r["event"] == "train":  # tokens/s counts every micro-batch: 2 x 4 x 16 tokens a step
            assert r["tokens_per_sec"] * r["ms_per_iter"] / 1000 == pytest.approx(2 * 4 * 16)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]  # it learned something
    assert checkpoint["best_val_loss"] == min(r["val_loss"] for r in evals) == summary["best_val_loss"]
    assert summary["val_bpb"] == evals[-1]["val_bpb"]

    # sample.py and eval.py load it through checkpoint.load_model, tokenizer included.
    model, tokenizer, _ = ckpt_io.load_model("resume", straight_dir, "cpu")
    assert checkpoint["meta"]["name"] == "tiny" and tokenizer.vocab_size == model.config.vocab_size
    assert_same_weights(model.state_dict(), checkpoint["model"])


@pytest.fixture(scope="module")
def bpe_data_dir(tmp_path_factory):
    """'speeches': 30,000 characters of Shakespeare, each speech a document (<|endoftext|> between
    them), with BPE of 400 tokens learned from it."""
    directory = tmp_path_factory.mktemp("bpe_data")
    speeches = prepare.read_text_file(prepare.SHAKESPEARE_PATH)[:30_000].split("\n\n")
    prepare.prepare_text(GPT2_EOT.join(speeches), "speeches", "bpe", directory, vocab_size=400, eot=True)
    return directory


def test_bits_per_byte_of_a_bpe_dataset_is_its_token_losses_over_their_bytes(bpe_data_dir):
    loader = BatchLoader(bpe_data_dir / "speeches", batch_size=4, block_size=32)
    tok = tokenizer_from_meta(loader.meta)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16))
    losses = train.estimate_loss(model, loader, eval_iters=3)
    # Directly: the loss of every target but <|endoftext|>, over the bytes each target decodes to.
    nats, num_bytes, eot_targets = 0.0, 0, 0
    for x, y in map(train.inputs_and_targets, loader.eval_windows("val", 3)):
        with torch.no_grad():
            logits, _ = model(x)
        token_losses = torch.nn.functional.cross_entropy(logits.reshape(-1, tok.vocab_size), y.reshape(-1),
                                                         reduction="none")
        for target, loss in zip(y.reshape(-1).tolist(), token_losses.tolist()):
            if target == tok.eot_token:
                eot_targets += 1
                continue
            nats += loss
            num_bytes += len(tok.encoding.decode_bytes([target]))
    assert eot_targets > 0  # the windows do hold document boundaries, left out of both sums
    assert num_bytes > 3 * 4 * 32  # each token is more than a byte: BPE, not characters
    assert losses["val_bpb"] == pytest.approx(nats / (math.log(2) * num_bytes), rel=1e-5)


def test_a_bpe_run_carries_its_tokenizer_in_the_checkpoint(tmp_path, bpe_data_dir):
    # sample.py and eval.py rebuild the tokenizer from the checkpoint alone: a copy of the
    # dataset's meta.json, merges included, checked against their sha256.
    data_dir = tmp_path / "data"
    shutil.copytree(bpe_data_dir, data_dir)
    train.main(tiny_args(tmp_path / "out", data_dir, dataset="speeches", max_iters=2, eval_interval=2))
    dataset_tokenizer = tokenizer_from_meta(data.load_meta(data_dir / "speeches"))
    shutil.rmtree(data_dir)
    model, tok, _ = ckpt_io.load_model("resume", tmp_path / "out", "cpu")
    assert (tok.name, tok.merges, tok.eot_token) == ("bpe", dataset_tokenizer.merges, dataset_tokenizer.eot_token)
    assert model.config.vocab_size == tok.vocab_size == 400


def test_eval_only_reproduces_the_logged_val_loss_and_writes_nothing(data_dir, straight_run):
    straight_dir, _ = straight_run
    digests = {p.name: file_digest(p) for p in straight_dir.iterdir()}
    result = train.main(tiny_args(straight_dir, data_dir, init_from="resume", eval_only=True))
    last_eval = [r for r in read_metrics(straight_dir) if r["event"] == "eval"][-1]
    assert result["val_loss"] == last_eval["val_loss"]  # same weights, same fixed eval batches
    assert result["val_bpb"] == last_eval["val_bpb"]
    assert result["val_ppl"] == pytest.approx(math.exp(result["val_loss"]))
    assert {p.name: file_digest(p) for p in straight_dir.iterdir()} == digests


def test_eval_only_into_a_run_folder_is_allowed_and_writes_nothing(data_dir, straight_run):
    # e.g. config/eval_gpt2.py pointed at an out_dir that holds a run: evaluating a fresh or
    # pretrained model there writes nothing, so there is nothing to refuse.
    straight_dir, _ = straight_run
    digests = {p.name: file_digest(p) for p in straight_dir.iterdir()}
    result = train.main(tiny_args(straight_dir, data_dir, init_from="scratch", eval_only=True))
    assert result["val_loss"] > 3.5  # an untrained model (ln 65 = 4.2), not the run's checkpoint
    assert {p.name: file_digest(p) for p in straight_dir.iterdir()} == digests


def test_scratch_into_an_existing_checkpoint_refuses_unless_overwrite(tmp_path, data_dir):
    out_dir = tmp_path / "out"
    train.main(tiny_args(out_dir, data_dir, max_iters=4))
    digest = file_digest(out_dir / "ckpt.pt")
    with pytest.raises(CheckpointError, match=r"already holds a checkpoint.*--init_from=resume.*--overwrite=True"):
        train.main(tiny_args(out_dir, data_dir, max_iters=4))
    assert file_digest(out_dir / "ckpt.pt") == digest
    train.main(tiny_args(out_dir, data_dir, max_iters=4, seed=2, overwrite=True))
    assert file_digest(out_dir / "ckpt.pt") != digest
    assert [r["iter"] for r in read_metrics(out_dir) if r["event"] == "eval"] == [0, 4]  # a new log


@pytest.mark.parametrize("always_save, saved_at", [(True, [4, 8, 12]), (False, [4, 12])])
def test_always_save_checkpoint_false_saves_only_improvements(tmp_path, data_dir, monkeypatch,
                                                               always_save, saved_at):
    val_losses = iter([3.0, 2.0, 2.5, 1.0])  # the evals at iterations 0, 4, 8 and 12
    monkeypatch.setattr(train, "estimate_loss", lambda *a, **k: {"train": 1.0, "val": next(val_losses),
                                                                "train_bpb": 1.0, "val_bpb": 1.0})
    saved, save = [], train.save
    monkeypatch.setattr(train, "save", lambda run, iter_num: saved.append(iter_num) or save(run, iter_num))
    train.main(tiny_args(tmp_path, data_dir, always_save_checkpoint=always_save))
    assert saved == saved_at


def clipped_sgd_step(grad_clip, scaler=None, lr=1.0):
    """One train_step of a fresh tiny model (fixed seed and batch) with plain SGD; returns the
    parameters before and after it."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=65, n_layer=1, n_head=2, n_embd=16))
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randint(0, 65, (4, 8), generator=torch.Generator().manual_seed(1))
    train.train_step(model, torch.optim.SGD(model.parameters(), lr=lr), lambda: (x, x), 1, scaler,
                     grad_clip=grad_clip)
    return before, [p.detach().clone() for p in model.parameters()]


def test_clipping_with_a_loss_scaler_clips_the_true_gradients():
    # float16 training multiplies the loss by a large scale; clipping must see the gradients
    # after unscaling, so a scaled step ends where the same step without a scaler does.
    _, unscaled = clipped_sgd_step(0.01, lr=0.1)
    _, scaled = clipped_sgd_step(0.01, torch.amp.GradScaler("cpu", init_scale=1024.0), lr=0.1)
    for i, (a, b) in enumerate(zip(unscaled, scaled)):
        assert torch.allclose(a, b, atol=1e-6), i


@pytest.mark.parametrize("grad_clip", [0.5, 0.05])
def test_clipping_caps_the_gradient_norm_at_grad_clip(grad_clip):
    # With plain SGD at lr 1 a step moves the weights by exactly the (clipped) gradient, so the
    # length of the step is the global gradient norm after clipping.
    before, after = clipped_sgd_step(grad_clip)
    step = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(after, before)))
    assert step.item() == pytest.approx(grad_clip, rel=1e-4)  # the gradient was longer: capped


def test_only_float16_runs_use_a_loss_scaler(tmp_path, data_dir):
    # float16's narrow exponent range needs loss scaling; bfloat16 and float32 must not pay for it.
    for dtype, scaled in (("float16", True), ("bfloat16", False)):
        out_dir = tmp_path / dtype
        train.main(tiny_args(out_dir, data_dir, dtype=dtype, max_iters=1, eval_interval=1))
        assert bool(ckpt_io.load_checkpoint(out_dir / "ckpt.pt")["scaler"]) == scaled


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_nan_loss_stops_naming_the_iteration_and_keeps_the_checkpoint(tmp_path, data_dir, monkeypatch, bad):
    real_step = train.train_step
    calls = []

    def step_that_diverges(*args, **kwargs):
        loss = real_step(*args, **kwargs)
        calls.append(1)
        return loss * float(bad) if len(calls) == 7 else loss  # iteration 6

    monkeypatch.setattr(train, "train_step", step_that_diverges)
    out_dir = tmp_path / "out"
    with pytest.raises(TrainingError, match=rf"loss is {bad} at iteration 6.*last good checkpoint.*ckpt.pt"):
        train.main(tiny_args(out_dir, data_dir))
    checkpoint = ckpt_io.load_checkpoint(out_dir / "ckpt.pt")
    assert checkpoint["iter_num"] == 4  # the last good one, not overwritten at the end
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())


def test_truncated_checkpoint_is_an_error_naming_the_file(tmp_path, data_dir, straight_run):
    straight_dir, _ = straight_run
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    data = (straight_dir / "ckpt.pt").read_bytes()
    (out_dir / "ckpt.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{out_dir / 'ckpt.pt'}.*truncated or corrupt"):
        train.main(tiny_args(out_dir, data_dir, init_from="resume"))


def test_quick_start_prepares_its_dataset(tmp_path):
    data_dir = tmp_path / "data"
    summary = train.main([f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'out'}", "--max_iters=2",
                          "--n_layer=1", "--n_embd=16", "--eval_iters=1", "--log_interval=1"])
    assert (data_dir / "shakespeare_char" / "meta.json").is_file()
    assert summary["iter_num"] == 2
    assert ckpt_io.load_checkpoint(tmp_path / "out" / "ckpt.pt")["model_args"]["vocab_size"] == 65


def test_init_from_gpt2_evaluates_and_finetunes_the_pretrained_weights(tmp_path, monkeypatch, data_dir):
    # A tiny stand-in for OpenAI's GPT-2, already in the download cache; nothing is downloaded.
    monkeypatch.setenv("GPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    torch.manual_seed(0)
    pretrained = GPT(GPTConfig(block_size=32, vocab_size=50257, n_layer=1, n_head=2, n_embd=16))
    hf.save_pretrained(pretrained, tmp_path / "cache" / "models" / "gpt2")
    tokens = np.random.default_rng(0).integers(0, 50257, 5000)
    write_bin_dataset(tmp_path / "data" / "bpe", tokens, tokens[:500], vocab_size=50257, tokenizer="gpt2")
    args = [f"--data_dir={tmp_path / 'data'}", "--dataset=bpe", "--init_from=gpt2", "--block_size=16",
            "--batch_size=2", "--eval_iters=2", "--device=cpu", "--dtype=float32"]

    result = train.main(args + ["--eval_only=True"])
    expected = train.estimate_loss(pretrained, BatchLoader(tmp_path / "data" / "bpe", 2, 16), eval_iters=2)
    assert result["val_loss"] == pytest.approx(expected["val"], rel=1e-6)

    out_dir = tmp_path / "out"
    train.main(args + [f"--out_dir={out_dir}", "--max_iters=2", "--dropout=0.1", "--learning_rate=1e-4"])
    checkpoint = ckpt_io.load_checkpoint(out_dir / "ckpt.pt")
    assert checkpoint["model_args"]["dropout"] == 0.1  # the override reached the model
    assert (checkpoint["model_args"]["n_embd"], checkpoint["model_args"]["block_size"]) == (16, 32)
    start = pretrained.state_dict()["transformer.h.0.mlp.c_fc.weight"]
    finetuned = checkpoint["model"]["transformer.h.0.mlp.c_fc.weight"]
    assert 0 < (finetuned - start).abs().max() < 1e-3  # moved a little from the pretrained weights

    with pytest.raises(DataError, match="needs a dataset tokenized with GPT-2"):
        train.main([f"--data_dir={data_dir}", "--dataset=tiny", "--init_from=gpt2", "--eval_only=True",
                    "--device=cpu"])


# --------------------------------------------------------------------------------------------
# Process death and several processes
# --------------------------------------------------------------------------------------------

# Runs train.main in a child process with a hook that hangs at a chosen moment (after writing a
# marker file), so the test can SIGKILL it exactly there.
KILLABLE_RUN = r"""
import sys, time, torch, train
mode, marker, argv = sys.argv[1], sys.argv[2], sys.argv[3:]

def hang():
    open(marker, "w").close()
    time.sleep(600)

if mode == "during_checkpoint_write":
    real_save, saves = torch.save, []
    def save_then_hang(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:  # the second checkpoint (iteration 8): write a part of it, then hang
            f.write(b"half a checkpoint")
            f.flush()
            hang()
        return real_save(obj, f, *args, **kwargs)
    torch.save = save_then_hang
else:  # "mid_training": hang in iteration 10, after the checkpoint at 8 and two logged steps
    real_step, steps = train.train_step, []
    def step_then_hang(*args, **kwargs):
        steps.append(1)
        if len(steps) == 11:
            hang()
        return real_step(*args, **kwargs)
    train.train_step = step_then_hang
train.main(argv)
"""


@pytest.mark.parametrize("mode, resumes_from", [("during_checkpoint_write", 4), ("mid_training", 8)])
def test_run_killed_with_sigkill_resumes_from_the_last_good_checkpoint(
        tmp_path, data_dir, straight_run, mode, resumes_from):
    out_dir, marker = tmp_path / "out", tmp_path / "hanging"
    child = subprocess.Popen([sys.executable, "-c", KILLABLE_RUN, mode, str(marker),
                              *tiny_args(out_dir, data_dir)],
                             cwd=tmp_path, env=subprocess_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, f"the run ended early: {child.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "the run never reached the point to kill it at"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()

    assert ckpt_io.load_checkpoint(out_dir / "ckpt.pt")["iter_num"] == resumes_from
    train.main(tiny_args(out_dir, data_dir, init_from="resume"))
    straight_dir, _ = straight_run
    assert_same_weights(load_weights(out_dir), load_weights(straight_dir))
    assert read_metrics(out_dir) == read_metrics(straight_dir)  # the killed run's extra lines are gone


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_ddp_on_two_processes_matches_one_process(tmp_path, data_dir, optimizer):
    # gradient_accumulation_steps counts micro-steps over all processes: 4 = 2 ranks x 2.
    args = dict(max_iters=4, eval_interval=2, gradient_accumulation_steps=4, dropout=0.0, optimizer=optimizer)
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(REPO / "train.py"),
               *tiny_args(ddp_dir, data_dir, **args)]
    result = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    train.main(tiny_args(single_dir, data_dir, **args))

    ddp_weights, single_weights = load_weights(ddp_dir), load_weights(single_dir)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ddp_weights)
    assert ddp_weights.keys() == single_weights.keys()
    for key in ddp_weights:
        torch.testing.assert_close(ddp_weights[key], single_weights[key], rtol=1e-4, atol=1e-5)
    # Only rank 0 logs: every event appears once, and the evaluations agree. The logged training
    # loss is the mean over both ranks' micro-batches, the whole batch's, as one process logs it.
    ddp_metrics, single_metrics = read_metrics(ddp_dir), read_metrics(single_dir)
    assert [(r["event"], r["iter"]) for r in ddp_metrics] == [(r["event"], r["iter"]) for r in single_metrics]
    for a, b in zip(ddp_metrics, single_metrics):
        key = "val_loss" if a["event"] == "eval" else "loss"
        assert a[key] == pytest.approx(b[key], rel=1e-4)
    assert sorted(p.name for p in ddp_dir.iterdir()) == ["ckpt.pt", "metrics.jsonl"]


def test_resume_with_dropout_under_ddp_is_bit_identical(tmp_path, data_dir):
    # Every rank's dropout masks follow from (seed, step, rank): resumed on 2 ranks, the run draws
    # exactly the uninterrupted run's masks on each of them.
    args = dict(max_iters=6, eval_interval=3, gradient_accumulation_steps=2, dropout=0.2)

    def ddp(out_dir, **overrides):
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                   f"--master_port={free_port()}", str(REPO / "train.py"),
                   *tiny_args(out_dir, data_dir, **dict(args, **overrides))]
        result = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

    ddp(tmp_path / "straight")
    ddp(tmp_path / "resumed", max_iters=3)
    ddp(tmp_path / "resumed", init_from="resume")
    assert_same_weights(load_weights(tmp_path / "resumed"), load_weights(tmp_path / "straight"))
    assert read_metrics(tmp_path / "resumed") == read_metrics(tmp_path / "straight")


def test_importing_train_has_no_side_effects(tmp_path):
    result = subprocess.run([sys.executable, "-c", "import train"], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert list(tmp_path.iterdir()) == []
