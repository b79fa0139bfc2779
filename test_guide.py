"""
The guide (guide.py + guide/*.typ) builds, has its chapters, its listings are the source, and
the recorded runs it reads (results/) are complete and agree with their own logs.

One fast build (a tiny training run) is shared by the tests that read its output. The listing
tests compare two paths that must agree: the text guide.py cut out with `ast` against what
`inspect.getsource` says today, and that text against what pdftotext reads from the PDF.
"""

import importlib
import inspect
import json
import math
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch

import guide
import metrics

CHAPTERS = ["Tokens", "Attention", "The block and the model", "Training", "Generation",
            "Evaluation", "Results", "Limitations and future work"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One fast build: (summary, build folder, PDF path, data.json as a dict)."""
    out = tmp_path_factory.mktemp("guide")
    summary = guide.main(["--fast=True", f"--build_dir={out / 'build'}", f"--output={out / 'guide.pdf'}"])
    data = json.loads((out / "build" / "data.json").read_text(encoding="utf-8"))
    return summary, out / "build", out / "guide.pdf", data


def pdf_text(path):
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    # -layout keeps each printed line whole (a code line and its comment stay together)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def chapter_titles(build_dir):
    """The level-1 headings of the built document, asked of typst itself."""
    import typst

    headings = json.loads(typst.query(str(build_dir / guide.MAIN_FILE), "heading.where(level: 1)",
                                      root=str(build_dir), ignore_system_fonts=True))
    return [heading_text(h["body"]) for h in headings if h.get("numbering")]


def heading_text(body):
    if isinstance(body, str):
        return body
    if "text" in body:
        return body["text"]
    if "children" in body:
        return "".join(heading_text(child) for child in body["children"])
    return " " if body.get("func") == "space" else ""


def test_the_guide_builds_with_every_chapter_in_order(built):
    summary, build_dir, pdf, _ = built
    assert pdf.is_file() and pdf.read_bytes().startswith(b"%PDF")
    assert summary["pages"] >= 25
    assert summary["warnings"] == []  # e.g. a missing glyph or font would show up here
    titles = chapter_titles(build_dir)
    assert len(titles) == len(CHAPTERS)
    for title, expected in zip(titles, CHAPTERS):
        assert title.startswith(expected), titles


def test_every_listing_is_the_current_source(built):
    _, build_dir, _, _ = built
    listings = json.loads((build_dir / "listings.json").read_text(encoding="utf-8"))
    for spec in ("model.py:CausalSelfAttention", "train.py:get_lr", "train.py:train_step",
                 "engine.py:sample_next_token", "engine.py:KVCache", "model.py:Block",
                 "model.py:GPT.init_weights", "model.py:GPT.generate", "engine.py:generate_tokens",
                 "eval.py:score_items"):
        assert spec in listings, f"the guide no longer lists {spec}"
    for spec, listing in listings.items():
        file_name, _, symbol = spec.partition(":")
        if symbol:  # an independent path to the same text: the live object's source
            obj = importlib.import_module(Path(file_name).stem)
            for part in symbol.split("."):
                obj = getattr(obj, part)
            expected = textwrap.dedent(inspect.getsource(obj))
        else:
            expected = (guide.REPO_ROOT / file_name).read_text(encoding="utf-8")
        assert listing["text"] == expected, f"listing {spec} differs from the source"
        # ... and the line numbers printed above it point at that text in the file
        lines = (guide.REPO_ROOT / file_name).read_text(encoding="utf-8").splitlines()
        assert textwrap.dedent("\n".join(lines[listing["start"] - 1:listing["end"]]) + "\n") == expected


def find_listing_in_pdf(listing_text, pdf_lines):
    """True if every non-blank line of the listing appears in the PDF's text in order, each as
    one or more consecutive lines there (a page break may put a header and footer between two
    listing lines). Whitespace is ignored: PDF text extraction does not keep indentation."""
    wanted = [re.sub(r"\s+", "", line) for line in listing_text.splitlines()]
    wanted = [line for line in wanted if line]
    lines = [re.sub(r"\s+", "", line) for line in pdf_lines]

    def match_from(i, k):  # listing line k starts at PDF line i: consume PDF lines until it is whole
        text = ""
        while i < len(lines) and len(text) < len(wanted[k]):
            text += lines[i]
            i += 1
        return i if text == wanted[k] else None

    for first in (i for i, line in enumerate(lines) if line and wanted[0].startswith(line)):
        i, k = match_from(first, 0), 1
        while i is not None and k < len(wanted):
            for skip in range(10):  # blank lines, or a page's footer and the next one's header
                nxt = match_from(i + skip, k) if i + skip < len(lines) else None
                if nxt is not None:
                    i, k = nxt, k + 1
                    break
            else:
                i = None
        if i is not None:
            return True
    return False


def test_the_listings_in_the_pdf_are_the_source_text(built):
    _, build_dir, pdf, _ = built
    pdf_lines = pdf_text(pdf).splitlines()
    listings = json.loads((build_dir / "listings.json").read_text(encoding="utf-8"))
    missing = [spec for spec, listing in listings.items() if not find_listing_in_pdf(listing["text"], pdf_lines)]
    assert not missing, f"these listings are not in the PDF as they are in the source: {missing}"


def test_the_pdf_check_notices_a_changed_line(built):
    _, build_dir, pdf, _ = built
    pdf_lines = pdf_text(pdf).splitlines()
    text = json.loads((build_dir / "listings.json").read_text(encoding="utf-8"))["train.py:get_lr"]["text"]
    assert find_listing_in_pdf(text, pdf_lines)
    assert not find_listing_in_pdf(text.replace("min_lr", "minimum_lr"), pdf_lines)
    assert not find_listing_in_pdf(text.replace("def get_lr", "def learning_rate"), pdf_lines)


def copy_sources(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    for path in guide.REPO_ROOT.glob("*.py"):
        shutil.copy(path, root / path.name)
    shutil.copytree(guide.REPO_ROOT / "config", root / "config")
    return root


@pytest.mark.parametrize("file_name, old, new, spec", [
    ("engine.py", "def sample_next_token(", "def pick_next_token(", "engine.py:sample_next_token"),
    ("model.py", "    def init_weights(self):", "    def initialise(self):", "model.py:GPT.init_weights"),
    ("train.py", "def get_lr(", "def learning_rate_at(", "train.py:get_lr"),
])
def test_a_renamed_symbol_fails_the_build_naming_it(tmp_path, monkeypatch, file_name, old, new, spec):
    root = copy_sources(tmp_path)
    source = (root / file_name).read_text(encoding="utf-8")
    assert old in source
    (root / file_name).write_text(source.replace(old, new), encoding="utf-8")
    monkeypatch.setattr(guide, "REPO_ROOT", root)  # the build reads the listings from this copy
    with pytest.raises(guide.GuideError, match=re.escape(spec)):
        guide.main(["--fast=True", f"--build_dir={tmp_path / 'build'}", f"--output={tmp_path / 'guide.pdf'}"])
    assert not (tmp_path / "guide.pdf").exists()
    assert not (tmp_path / "build" / "run").exists()  # it failed before training anything


def test_a_listing_of_something_that_does_not_exist_is_an_error(tmp_path):
    chapters = tmp_path / "guide"
    shutil.copytree(guide.GUIDE_DIR, chapters)
    (chapters / "99-extra.typ").write_text('#listing("model.py:NoSuchClass")\n#listing("nosuchfile.py:f")\n')
    with pytest.raises(guide.GuideError) as error:
        guide.collect_listings(chapters)
    assert "model.py:NoSuchClass" in str(error.value) and "nosuchfile.py" in str(error.value)


def test_textbook_attention_gives_the_models_output():
    import torch
    from model import CausalSelfAttention, GPTConfig, causal_mask

    torch.manual_seed(0)
    for use_sdpa in (True, False):
        attn = CausalSelfAttention(GPTConfig(n_embd=48, n_head=4, block_size=16, use_sdpa=use_sdpa)).eval()
        x = torch.randn(1, 11, 48)
        ours, weights = guide.multi_head_attention(x[0], x[0], x[0], causal_mask(11, 0, "cpu"),
                                                   *guide.textbook_weights(attn), 4)
        with torch.no_grad():
            torch.testing.assert_close(ours, attn(x)[0], atol=1e-5, rtol=1e-5)
        assert torch.all(weights.triu(1) == 0)  # nothing attends to the future
        torch.testing.assert_close(weights.sum(-1), torch.ones(4, 11))


def test_the_numbers_in_the_pdf_come_from_the_run(built):
    _, build_dir, pdf, data = built
    text = pdf_text(pdf)
    metrics = [json.loads(line) for line in (build_dir / "run" / "metrics.jsonl").read_text().splitlines()]
    last_eval = [m for m in metrics if m["event"] == "eval"][-1]
    assert data["run"]["kind"] == "build" and data["run"]["iter_num"] == last_eval["iter"]
    assert f"{last_eval['val_loss']:.3f}" in text  # the results table
    assert f"{data['perplexity']['loss']:.3f}" in text
    assert data["attention"]["max_difference"] < 1e-4  # the textbook form agrees with the model
    assert data["accumulation"]["max_difference"] < 1e-5  # 4 micro-batches = one batch of 12
    assert data["params"]["total"] == data["params"]["formula_total"] == 124_439_808
    assert all(s["text"] for s in data["samples"])
    assert all(r["same_tokens"] for r in data["kv_cache"])


def test_the_memory_figures_are_bench_pys_arithmetic_and_measurements(built):
    import bench
    import hf

    _, build_dir, pdf, data = built
    memory = data["memory"]
    assert list(memory["models"]) == list(bench.GPT2_SIZES)  # all four in the state figure
    for name, row in memory["models"].items():
        shapes = bench.parameter_shapes(hf.gpt2_config(name))
        assert row["ddp_bytes"] == bench.state_bytes_per_rank(shapes, 1, sharded=False)
        assert row["fsdp_bytes"] == [bench.state_bytes_per_rank(shapes, n, sharded=True) for n in bench.WORLD_SIZES]
    small = memory["models"]["gpt2"]
    assert small["activation_bytes"]["checkpointed"] < small["activation_bytes"]["plain"]
    assert (build_dir / "figures" / "memory.svg").is_file()
    text = " ".join(pdf_text(pdf).split())  # one space wherever a line broke or was justified
    assert "Sharded data parallel: FSDP" in text
    assert f"needs {memory['models']['gpt2-xl']['ddp_bytes'] / 1e9:.1f} GB" in text
    assert f"keeps {small['activation_bytes']['plain'] / 1e9:.2f} GB without checkpointing" in text


def test_a_given_checkpoint_is_used_instead_of_training(built, tmp_path):
    _, build_dir, _, _ = built
    summary = guide.main(["--fast=True", f"--ckpt_dir={build_dir / 'run'}", f"--build_dir={tmp_path / 'build'}",
                          f"--output={tmp_path / 'guide.pdf'}"])
    data = json.loads((tmp_path / "build" / "data.json").read_text(encoding="utf-8"))
    assert data["run"]["kind"] == "checkpoint" and summary["pages"] >= 25
    assert not (tmp_path / "build" / "run").exists()  # nothing was trained


def test_a_missing_checkpoint_folder_is_a_clear_error(tmp_path):
    with pytest.raises(guide.GuideError, match="ckpt.pt"):
        guide.main([f"--ckpt_dir={tmp_path / 'nothing'}", f"--build_dir={tmp_path / 'build'}",
                    f"--output={tmp_path / 'guide.pdf'}"])


# ---------------------------------------------------------------------------- chapter 1's recorded runs

TOKENIZER_RUNS = guide.REPO_ROOT / guide.GuideConfig().tokenizer_results_dir
OPTIMIZER_RUNS = guide.REPO_ROOT / guide.GuideConfig().optimizer_results_dir


def test_the_tokenizer_experiment_is_read_from_its_recorded_runs():
    runs, curves = guide.tokenizer_results(TOKENIZER_RUNS)
    rows = {row["name"]: row for row in runs["rows"]}
    assert list(rows) == ["char", "bpe512", "bpe1024", "bpe4096", "gpt2"]
    assert [rows[n]["vocab_size"] for n in rows] == [65, 512, 1024, 4096, 50257]
    # Two paths to the figure's points: experiment.json's curves, and each run's own metrics.jsonl
    # (train.py's evaluations) at iteration x the tokenizer's ms/step.
    assert len(curves) == 9  # five tokenizers, four of them twice
    for run, points in curves.items():
        row = rows[run.split("-seed")[0]]
        _, evals = metrics.read_metrics(TOKENIZER_RUNS / "metrics" / f"{run}.jsonl")
        expected = [(e["iter"] * row["ms_per_step"] / 1000, e["val_bpb"]) for e in evals]
        assert [tuple(point) for point in points] == [pytest.approx(point) for point in expected]
    # The table's exact bpb is eval.py's; the seeds are the runs' own, read from their logs.
    exact = [json.loads(line) for line in (TOKENIZER_RUNS / "perplexity.jsonl").read_text().splitlines()]
    assert rows["bpe512"]["bpb"] == [e["bpb"] for e in exact if e["config"]["dataset"] == "shakespeare_bpe512"]
    assert rows["bpe512"]["seeds"] == [1337, 2] and rows["gpt2"]["seeds"] == [1337]
    # equal time: steps x ms/step within a few percent of the character run's
    assert all(abs(row["seconds"] / rows["char"]["seconds"] - 1) < 0.05 for row in rows.values())
    assert all(row["sample"].strip() for row in rows.values())


@pytest.mark.parametrize("remove", ["perplexity.jsonl", "metrics/bpe1024-seed2.jsonl", "logs/gpt2.log", None])
def test_an_incomplete_tokenizer_runs_folder_is_a_clear_error(tmp_path, remove):
    folder = tmp_path / "runs"
    if remove is not None:
        shutil.copytree(TOKENIZER_RUNS, folder)
        (folder / remove).unlink()
    with pytest.raises(guide.GuideError, match=re.escape(remove or "experiment.json")) as error:
        guide.tokenizer_results(folder)
    assert "--tokenizer_results_dir" in str(error.value)


def test_the_recorded_tokenizers_are_the_ones_this_code_makes(built):
    # The build learns 1,024 tokens from the train split now; the recorded bpe1024 run's dataset
    # had the same compression of the val split, or the recording describes other code.
    _, _, _, data = built
    recorded = {row["name"]: row for row in data["tokenizer_runs"]["rows"]}
    assert data["tokens"]["learned_vocab"] == recorded["bpe1024"]["vocab_size"]
    for ours, theirs in (("learned", "bpe1024"), ("gpt2", "gpt2"), ("char", "char")):
        assert data["tokens"]["tokens_per_byte"][ours] == pytest.approx(recorded[theirs]["tokens_per_byte"], rel=1e-4)
    assert data["tokens"]["first_merges"][:2] == ["Ġ t", "h e"]


def test_chapter_1_shows_the_experiment_and_chapter_6_bits_per_byte(built):
    _, build_dir, pdf, data = built
    assert (build_dir / "figures" / "tokenizer_curves.svg").is_file()
    text = " ".join(pdf_text(pdf).split())
    for row in data["tokenizer_runs"]["rows"]:
        assert " / ".join(f"{b:.2f}" for b in row["bpb"]) in text  # the table's exact val bpb
        assert row["sample"].splitlines()[1].strip() in text  # each model's sample
    p = data["perplexity"]
    # The build's model is a character model of ASCII text: one byte per token, so bits per
    # byte must be the loss per token in bits.
    assert data["run"]["tokenizer"] == "char" and p["bytes"] == p["tokens"]
    assert p["bpb"] == pytest.approx(p["loss"] / math.log(2), rel=1e-5)
    assert f"{p['bpb']:.3f} bits per byte" in text


def test_the_optimizer_comparison_is_read_from_its_recorded_runs():
    runs, curves = guide.optimizer_results(OPTIMIZER_RUNS)
    rows = {row["recipe"]: row for row in runs["rows"]}
    assert list(rows) == ["default", "quickstart_adamw"] and runs["repeats"] == 3
    # The recipes' settings are read from today's train.py and config file: the recording must
    # be of those recipes, so the steps and tokens it logged must be theirs.
    assert rows["default"]["optimizer"] == "muon" and rows["quickstart_adamw"]["optimizer"] == "adamw"
    assert rows["default"]["steps"] == guide.train.TrainConfig().max_iters
    summary = json.loads((OPTIMIZER_RUNS / "summary.json").read_text())
    for recipe, row in rows.items():
        assert row["steps"] == summary["recipes"][recipe]["steps"]
        for n, curve in enumerate(curves[recipe]):
            records = [json.loads(line) for line in
                       (OPTIMIZER_RUNS / f"{recipe}-{n + 1}" / "metrics.jsonl").read_text().splitlines()]
            evals = [r for r in records if r["event"] == "eval"]
            assert evals[-1]["iter"] == row["steps"]
            assert [v for _, v in curve["eval"]] == [r["val_loss"] for r in evals]
            assert min(r["val_loss"] for r in evals) == row["best_val_loss"][n]
    # The comparison is at equal time: Muon's median run took no longer than AdamW's.
    assert rows["default"]["median_seconds"] <= rows["quickstart_adamw"]["median_seconds"]


def test_newton_schulz_flops_are_what_pytorchs_muon_step_computes():
    # The guide's arithmetic, against the FLOPs PyTorch's own FLOP counter sees in one
    # torch.optim.Muon step (its matrix products are the Newton-Schulz iterations).
    from torch.utils.flop_counter import FlopCounterMode
    for shape in [(512, 128), (128, 512), (384, 128), (128, 128)]:
        param = torch.nn.Parameter(torch.randn(shape))
        param.grad = torch.randn(shape)
        optimizer = torch.optim.Muon([param], lr=0.01)
        with FlopCounterMode(display=False) as counter:
            optimizer.step()
        assert guide.newton_schulz_flops(shape) == counter.get_total_flops()


@pytest.mark.parametrize("remove", ["summary.json", "quickstart_adamw-2/metrics.jsonl"])
def test_an_incomplete_optimizer_runs_folder_is_a_clear_error(tmp_path, remove):
    folder = tmp_path / "runs"
    shutil.copytree(OPTIMIZER_RUNS, folder)
    (folder / remove).unlink()
    with pytest.raises(guide.GuideError, match=re.escape(remove)) as error:
        guide.optimizer_results(folder)
    assert "--optimizer_results_dir" in str(error.value)


def test_chapter_4_shows_the_optimizer_table(built):
    _, build_dir, pdf, data = built
    assert (build_dir / "figures" / "optimizer_curves.svg").is_file()
    text = " ".join(pdf_text(pdf).split())
    for row in data["optimizer_runs"]["rows"]:
        assert f"{row['lowest_val_loss']:.4f}" in text and f"{row['median_seconds']:.1f} s" in text


def test_read_metrics_splits_the_events_and_skips_a_line_cut_short(tmp_path):
    # What guide.py and bench.py read runs with: a kill mid-write leaves half a line at the end.
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"event": "eval", "iter": 0, "val_loss": 4.2}\n{"event": "train", "iter": 0, "loss": 4.1}\n'
                    '{"event": "train", "iter": 10, "lo')
    train_records, eval_records = metrics.read_metrics(path)
    assert eval_records == [{"event": "eval", "iter": 0, "val_loss": 4.2}]
    assert train_records == [{"event": "train", "iter": 0, "loss": 4.1}]
    assert metrics.read_metrics(tmp_path / "missing.jsonl") == ([], [])
