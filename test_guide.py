"""
The guide (guide.py + guide/*.typ) builds, has its parts and chapters, its listings are the
source, its numbers are the runs' and its exercise answers are right; the recorded runs it reads
(results/) are complete and agree with their own logs; and the layout faults a book tends to
have (typst source in the text, listings shrunk below 7 pt, near-empty pages) are not there.

One fast build, reading the recorded quick-start run, is shared by the tests that read its
output. Most tests compare two paths that must agree: the text guide.py cut out with `ast`
against what `inspect` says today, and that text against what pdftotext reads from the PDF; an
exercise answer the build computed against the same answer computed here another way.
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

import numpy as np
import pytest
import torch

import guide
import metrics

CHAPTERS = ["Tokens", "Embeddings", "Attention", "The block and the model", "Training", "Generation",
            "Evaluation", "Faster and bigger", "Muon", "Tokenizers at scale", "From a text predictor to an assistant",
            "Results", "Answers to the exercises"]
PARTS = ["Part I: The ideas", "Part II: Scaling up"]
QUICKSTART_RUN = guide.REPO_ROOT / guide.GuideConfig().quickstart_dir


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One fast build from the recorded quick start: (summary, build folder, PDF path, data.json)."""
    out = tmp_path_factory.mktemp("guide")
    summary = guide.main(["--fast=True", f"--build_dir={out / 'build'}", f"--output={out / 'guide.pdf'}"])
    data = json.loads((out / "build" / "data.json").read_text(encoding="utf-8"))
    return summary, out / "build", out / "guide.pdf", data


@pytest.fixture(scope="module")
def model():
    """The recorded quick-start model, loaded as sample.py loads a checkpoint."""
    import checkpoint
    loaded, tokenizer, _ = checkpoint.load_model("resume", str(QUICKSTART_RUN), "cpu")
    return loaded, tokenizer


def pdf_text(path):
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    # -layout keeps each printed line whole (a code line and its comment stay together)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def flat(text):
    """The text with one space wherever a line broke or was justified."""
    return " ".join(text.split())


def headings(build_dir):
    """The level-1 headings of the built document as (text, numbered), asked of typst itself."""
    import typst

    found = json.loads(typst.query(str(build_dir / guide.MAIN_FILE), "heading.where(level: 1)",
                                   root=str(build_dir), ignore_system_fonts=True))
    return [(heading_text(h["body"]), bool(h.get("numbering"))) for h in found]


def heading_text(body):
    if isinstance(body, str):
        return body
    if "text" in body:
        return body["text"]
    if "children" in body:
        return "".join(heading_text(child) for child in body["children"])
    return " " if body.get("func") == "space" else ""


def test_the_guide_builds_with_its_parts_and_chapters_in_order(built):
    summary, build_dir, pdf, _ = built
    assert pdf.is_file() and pdf.read_bytes().startswith(b"%PDF")
    assert summary["pages"] >= 40
    assert summary["warnings"] == []  # e.g. a missing glyph or font would show up here
    found = headings(build_dir)
    titles = [title for title, numbered in found if numbered]
    assert len(titles) == len(CHAPTERS), titles
    for title, expected in zip(titles, CHAPTERS):
        assert title.startswith(expected), titles
    # Part I holds chapters 1-7 (the ideas), Part II chapters 8-12 (scaling up, the assistant, results)
    order = [title for title, _ in found]
    assert order.index(PARTS[0]) < order.index(titles[0])
    assert order.index(titles[6]) < order.index(PARTS[1]) < order.index(titles[7])


# ---------------------------------------------------------------------------- the listings

def object_of(spec):
    """The live object a listing names ("model.py:GPT.forward[14-18]" -> GPT.forward)."""
    file_name, _, symbol = spec.partition(":")
    obj = importlib.import_module(Path(file_name).stem)
    for part in symbol.split("[")[0].split("."):
        obj = getattr(obj, part)
    return obj


def test_the_guide_lists_the_code_each_idea_needs(built):
    _, build_dir, _, _ = built
    listings = json.loads((build_dir / "listings.json").read_text(encoding="utf-8"))
    # Part I: each idea in its plain form (lessons.py), then the model's code
    for spec in ("lessons.py:average_previous_matmul", "lessons.py:self_attention_no_weights",
                 "lessons.py:self_attention", "lessons.py:multi_head_attention", "model.py:CausalSelfAttention",
                 "lessons.py:layer_norm", "lessons.py:gelu_tanh", "lessons.py:train_bpe_naive",
                 "model.py:Block", "model.py:GPT.forward", "train.py:inputs_and_targets", "train.py:training_loop",
                 "train.py:train_step", "train.py:get_lr", "model.py:GPT.generate", "engine.py:KVCache",
                 "engine.py:generate_tokens", "eval.py:perplexity", "eval.py:score_items",
                 # Part II: the machinery, some of it elided to what it teaches
                 "tokenizer.py:train_bpe", "optim.py:newton_schulz", "bench.py:state_bytes_per_rank",
                 # the assistant: the chat format, the mask, the padded batches, the task's words
                 "sft.py:with_chat_tokens", "sft.py:ChatTokenizer.render", "data.py:ChatLoader[_read]",
                 "sft.py:spelling_words", "config/sft_spelling.py"):
        assert spec in listings, f"the guide no longer lists {spec}"
    assert any(listing["elided"] for listing in listings.values())


def test_every_listing_is_the_current_source(built):
    _, build_dir, _, _ = built
    listings = json.loads((build_dir / "listings.json").read_text(encoding="utf-8"))
    for spec, listing in listings.items():
        file_lines = (guide.REPO_ROOT / listing["file"]).read_text(encoding="utf-8").splitlines()
        if not listing["symbol"]:  # a whole file
            assert listing["text"].splitlines() == file_lines
            continue
        # an independent path to the same text: the live object's source and where it starts
        source, first = inspect.getsourcelines(object_of(spec))
        source = textwrap.dedent("".join(source)).splitlines()
        if not listing["elided"]:
            assert listing["text"].splitlines() == source, f"listing {spec} differs from the source"
            assert (listing["start"], listing["end"]) == (first, first + len(source) - 1)
            continue
        # Elided: the lines shown are the source's lines of each piece, in order, and each
        # "⋯ N lines left out" stands for exactly the lines between two pieces (or after the last).
        raw, first = inspect.getsourcelines(object_of(spec))
        raw = [line.rstrip("\n") for line in raw]
        pieces = [(a - first, b - first + 1) for a, b in listing["pieces"]]  # half-open, into raw
        indent = min(len(line) - len(line.lstrip()) for a, b in pieces for line in raw[a:b] if line.strip())
        shown = listing["text"].splitlines()
        kept = [line for line in shown if line.strip() and not line.lstrip().startswith(guide.ELIDED)]
        assert kept == [line[indent:] for a, b in pieces for line in raw[a:b] if line.strip()], spec
        gaps = ([raw[:pieces[0][0]]] + [raw[q[1]:p[0]] for q, p in zip(pieces, pieces[1:])]
                + [raw[pieces[-1][1]:]])
        marked = [int(re.search(r"(\d+) lines? left out", line).group(1))
                  for line in shown if line.lstrip().startswith(guide.ELIDED)]
        assert marked == [len(gap) for gap in gaps if any(line.strip() for line in gap)], spec
        assert (listing["start"], listing["end"]) == (listing["pieces"][0][0], listing["pieces"][-1][1])


def test_a_ranged_listing_shows_the_lines_asked_for():
    listing = guide.extract_listing("model.py:GPT.forward[14-18]")
    source, first = inspect.getsourcelines(object_of("model.py:GPT.forward"))
    assert listing["pieces"] == [(first + 13, first + 17)]
    shown = listing["text"].splitlines()
    assert shown[0] == f"{guide.ELIDED} 13 lines left out"
    assert shown[1:-1] == textwrap.dedent("".join(source[13:18])).splitlines()
    assert shown[-1].strip() == f"{guide.ELIDED} {len(source) - 18} lines left out"
    assert "wte(idx)" in listing["text"]  # the embedding lookup chapter 2 quotes


def test_a_member_listing_keeps_the_class_head_and_the_members_whole():
    listing = guide.extract_listing("tokenizer.py:CharTokenizer[encode,decode]")
    import tokenizer
    for member in (tokenizer.CharTokenizer.encode, tokenizer.CharTokenizer.decode):
        body = textwrap.indent(textwrap.dedent(inspect.getsource(member)), "    ")
        assert body in listing["text"]
    assert listing["text"].startswith("class CharTokenizer")
    assert inspect.getsource(tokenizer.CharTokenizer.__init__).strip().splitlines()[0] not in listing["text"]
    with pytest.raises(guide.GuideError, match="no member nosuch"):
        guide.extract_listing("tokenizer.py:CharTokenizer[encode,nosuch]")
    with pytest.raises(guide.GuideError, match="has lines 1-"):
        guide.extract_listing("train.py:get_lr[5-500]")
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
    listings = json.loads((build_dir / "listings.json").read_text(encoding="utf-8"))
    text = listings["train.py:get_lr"]["text"]
    assert find_listing_in_pdf(text, pdf_lines)
    assert not find_listing_in_pdf(text.replace("min_lr", "minimum_lr"), pdf_lines)
    assert not find_listing_in_pdf(text.replace("def get_lr", "def learning_rate"), pdf_lines)
    elided = listings["tokenizer.py:CharTokenizer[__init__,from_text,encode,decode]"]["text"]
    assert find_listing_in_pdf(elided, pdf_lines)
    assert not find_listing_in_pdf(elided.replace("4 lines left out", "3 lines left out"), pdf_lines)


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
    ("lessons.py", "def layer_norm(", "def normalise(", "lessons.py:layer_norm"),
    ("tokenizer.py", "    def decode(self, ids) -> str:", "    def to_text(self, ids) -> str:",
     "tokenizer.py:CharTokenizer[__init__,from_text,encode,decode]"),
])
def test_a_renamed_symbol_fails_the_build_naming_it(tmp_path, monkeypatch, file_name, old, new, spec):
    root = copy_sources(tmp_path)
    source = (root / file_name).read_text(encoding="utf-8")
    assert old in source
    (root / file_name).write_text(source.replace(old, new, 1), encoding="utf-8")
    monkeypatch.setattr(guide, "REPO_ROOT", root)  # the build reads the listings from this copy
    with pytest.raises(guide.GuideError, match=re.escape(spec)):
        guide.main(["--train=True", "--fast=True", f"--build_dir={tmp_path / 'build'}",
                    f"--output={tmp_path / 'guide.pdf'}"])
    assert not (tmp_path / "guide.pdf").exists()
    assert not (tmp_path / "build" / "run").exists()  # it failed before training anything


def test_a_listing_of_something_that_does_not_exist_is_an_error(tmp_path):
    chapters = tmp_path / "guide"
    shutil.copytree(guide.GUIDE_DIR, chapters)
    (chapters / "99-extra.typ").write_text('#listing("model.py:NoSuchClass")\n#listing("nosuchfile.py:f")\n')
    with pytest.raises(guide.GuideError) as error:
        guide.collect_listings(chapters)
    assert "model.py:NoSuchClass" in str(error.value) and "nosuchfile.py" in str(error.value)


# ---------------------------------------------------------------------------- the trained model

def test_the_recorded_quick_start_is_what_python_train_py_makes_today():
    # The book's figures come from this run when there is no checkpoint of one's own; they
    # describe the quick start only while its settings are still train.py's defaults.
    import dataclasses

    import train
    ckpt = torch.load(QUICKSTART_RUN / "ckpt.pt", map_location="cpu", weights_only=False)
    today = dataclasses.asdict(train.resolve_config(train.TrainConfig(), "cpu", "float32"))
    # A setting added since the recording may be absent from it, if it is unset (None) today: it
    # does not touch a run from scratch (init_dir, say, is read only with init_from='checkpoint').
    added = set(today) - set(ckpt["config"])
    assert all(today[name] is None for name in added), {name: today[name] for name in added}
    assert ckpt["config"] == {name: value for name, value in today.items() if name not in added}
    _, evals = metrics.read_metrics(QUICKSTART_RUN / "metrics.jsonl")
    assert evals[-1]["iter"] == ckpt["iter_num"] == train.TrainConfig().max_iters
    assert evals[-1]["val_loss"] == pytest.approx(ckpt["best_val_loss"])
    readme = (QUICKSTART_RUN / "README.md").read_text(encoding="utf-8")
    assert re.search(r"commit [0-9a-f]{7}", readme) and "`python train.py`" in readme
    assert f"{ckpt['best_val_loss']:.4f}" in readme


def test_every_figure_and_number_comes_from_the_recorded_quick_start(built):
    _, build_dir, pdf, data = built
    text = flat(pdf_text(pdf))
    _, evals = metrics.read_metrics(QUICKSTART_RUN / "metrics.jsonl")
    run = data["run"]
    assert run["kind"] == "recorded" and run["iter_num"] == evals[-1]["iter"]
    assert Path(run["ckpt_dir"]) == Path(guide.GuideConfig().quickstart_dir)
    assert f"val loss {evals[-1]['val_loss']:.4f} nats per character" in text  # the model box
    assert f"{data['perplexity']['loss']:.3f}" in text
    for figure in ("attention_grid", "next_token", "loss_curves", "embedding_similarity", "position_similarity"):
        assert (build_dir / "figures" / f"{figure}.svg").is_file(), figure
    # the teaching code of Part I agrees with the model's own layers, on the model's weights
    checks = data["lessons"]["checks"]
    assert max(checks["average"], checks["layer_norm"], checks["attention"], checks["gelu"]) < 1e-4
    assert checks["gelu_vs_exact"] > 1e-4  # the tanh form is an approximation: not the same function
    assert data["lessons"]["same_merges"]
    assert data["attention"]["max_difference"] < 1e-4
    assert data["accumulation"]["max_difference"] < 1e-5  # 4 micro-batches = one batch of 12
    assert data["params"]["total"] == data["params"]["formula_total"] == 124_439_808
    assert all(s["text"] for s in data["samples"])
    assert all(r["same_tokens"] for r in data["kv_cache"])
    # the trained model writes Shakespeare-like text: the greedy sample holds real words
    words = re.findall(r"[a-z]+", " ".join(s["text"] for s in data["samples"]).lower())
    assert sum(w in {"the", "and", "to", "of", "my", "you", "i", "a", "that", "is"} for w in words) >= 5


def test_a_given_checkpoint_is_used_instead(built, tmp_path):
    summary = guide.main(["--fast=True", f"--ckpt_dir={QUICKSTART_RUN}", f"--build_dir={tmp_path / 'build'}",
                          f"--output={tmp_path / 'guide.pdf'}"])
    data = json.loads((tmp_path / "build" / "data.json").read_text(encoding="utf-8"))
    assert data["run"]["kind"] == "checkpoint" and summary["pages"] >= 40
    assert data["perplexity"] == built[3]["perplexity"]  # the same model: the same measurements
    assert not (tmp_path / "build" / "run").exists()  # nothing was trained


def test_the_build_can_train_the_model_itself(tmp_path):
    summary = guide.main(["--train=True", "--fast=True", f"--build_dir={tmp_path / 'build'}",
                          f"--output={tmp_path / 'guide.pdf'}"])
    data = json.loads((tmp_path / "build" / "data.json").read_text(encoding="utf-8"))
    assert data["run"]["kind"] == "build" and data["run"]["iter_num"] == guide.FAST_SIZES["build_iters"]
    assert (tmp_path / "build" / "run" / "ckpt.pt").is_file() and summary["pages"] >= 40
    assert "--train=True" in data["build"]["command"]
    assert f"a {data['run']['iter_num']}-iteration quick-start run" in flat(pdf_text(tmp_path / "guide.pdf"))


def test_a_missing_checkpoint_folder_is_a_clear_error(tmp_path):
    with pytest.raises(guide.GuideError, match="ckpt.pt"):
        guide.main([f"--ckpt_dir={tmp_path / 'nothing'}", f"--build_dir={tmp_path / 'build'}",
                    f"--output={tmp_path / 'guide.pdf'}"])


def test_a_missing_recorded_quick_start_is_a_clear_error(tmp_path):
    with pytest.raises(guide.GuideError, match="--quickstart_dir.*ckpt.pt"):
        guide.main(["--fast=True", f"--quickstart_dir={tmp_path}", f"--build_dir={tmp_path / 'build'}",
                    f"--output={tmp_path / 'guide.pdf'}"])


# ---------------------------------------------------------------------------- the GPT-2 question

def test_the_gpt2_comparison_is_answered_with_sources_and_commands(built):
    _, _, pdf, _ = built
    text = flat(pdf_text(pdf))
    # the brief's ~35 is GPT-2 small's zero-shot LAMBADA perplexity: word-level, another dataset
    for figure in ("35.13", "37.50", "LAMBADA", "WikiText-103"):
        assert figure in text, figure
    # the commands that put OpenAI's GPT-2 and a from-scratch 124M run on the same text here
    for command in ("python train.py config/eval_gpt2.py", "python train.py config/train_gpt2.py",
                    "python eval.py perplexity --init_from=gpt2 --dataset=shakespeare"):
        assert command in text, command
    assert "Published, not measured here" in text
    for path in ("config/eval_gpt2.py", "config/train_gpt2.py"):
        assert (guide.REPO_ROOT / path).is_file()


def test_every_results_folder_the_book_cites_carries_its_date_commit_and_command(built):
    _, _, pdf, _ = built
    cited = set(re.findall(r"results/([a-z0-9-]+\d{4}-\d\d-\d\d)", pdf_text(pdf)))
    assert {"cpu-quickstart-2026-12-06", "cpu-nanogpt-2026-12-06", "cpu-tokenizers-2026-12-03",
            "cpu-optimizers-2026-12-04", "cpu-sft-spelling-2026-12-06"} <= cited
    assert not any(name.startswith(("h100", "h200")) for name in cited)  # no stale GPU figures
    for name in cited:
        readme = (guide.REPO_ROOT / "results" / name / "README.md").read_text(encoding="utf-8")
        assert name[-10:] in readme, name  # the date
        assert re.search(r"\bcommit [0-9a-f]{7}", readme), name
        assert "python " in readme, name  # the command


# ---------------------------------------------------------------------------- the exercises' answers
# Each number the appendix prints was computed by the build (guide.exercise_answers); here it is
# computed a second way, so an answer cannot drift from the code.

def test_every_chapter_has_exercises_a_summary_and_its_answers(built):
    _, _, pdf, _ = built
    text = pdf_text(pdf)
    body, _, appendix = text.partition("Answers to the exercises\n")
    assert appendix, "the appendix of answers is missing"
    assert body.count("Exercises\n") >= 12 and body.count("Summary\n") >= 12
    for n in range(1, 13):
        assert f"Chapter {n}\n" in appendix, f"no answers for chapter {n}"
    assert text.count("Takeaway.") >= 30  # sections end with what to take away


def test_the_token_counts_and_embedding_sizes(built, model):
    _, _, _, data = built
    from tokenizer import GPT2Tokenizer
    x, line = data["exercises"], data["tokens"]["example"]
    assert x["tokens_first_line"]["char"] == len(line)
    assert x["tokens_first_line"]["gpt2"] == len(GPT2Tokenizer().encode(line))
    assert x["tokens_first_line"]["learned"] < x["tokens_first_line"]["char"]
    state = torch.load(QUICKSTART_RUN / "ckpt.pt", map_location="cpu", weights_only=False)["model"]
    wte, wpe = state["transformer.wte.weight"], state["transformer.wpe.weight"]
    assert x["embedding_params"] == wte.numel() + wpe.numel()
    assert x["padded_vocab"] == wte.shape[0] == math.ceil(data["run"]["vocab_size"] / 64) * 64
    # chapter 2's answer, three lines of PyTorch, run as printed: they find the neighbour the
    # build's table shows
    answers = (guide.GUIDE_DIR / "13-answers.typ").read_text(encoding="utf-8")
    code = re.search(r'#raw\(block: true, lang: "python", "(w = model.*?)"\)', answers, re.DOTALL).group(1)
    lines = code.replace('\\"', '"').splitlines()
    m, tokenizer = model
    scope = {"model": m, "i": tokenizer.encode("t")[0]}
    with torch.no_grad():
        exec("\n".join(lines[:-1]), scope)
        top = eval(lines[-1], scope).indices.tolist()
    assert top[0] == scope["i"]
    assert tokenizer.decode([top[1]]) == data["embeddings"]["neighbours"]["t"][0]["token"]


def test_the_attention_and_model_answers(built):
    _, _, _, data = built
    x = data["exercises"]
    assert x["score_std"] == pytest.approx(math.sqrt(x["head_size"]), rel=0.05)  # sqrt(d_k)
    assert x["score_std_scaled"] == pytest.approx(1.0, rel=0.05)
    # the untrained model's loss is ln V: the recorded run's first evaluation is near it
    assert x["init_loss"] == pytest.approx(torch.nn.functional.cross_entropy(
        torch.zeros(1, data["run"]["vocab_size"]), torch.tensor([0])).item())
    assert data["run"]["first_eval"]["val_loss"] == pytest.approx(x["init_loss"], abs=0.1)
    # GPT-2 without weight tying: count the model's tensors with the shared one counted twice
    import hf
    from model import GPT
    config = hf.gpt2_config("gpt2")
    with torch.device("meta"):
        gpt2 = GPT(config)
    twice = sum(p.numel() for _, p in gpt2.named_parameters(remove_duplicate=False))
    padding = 2 * (config.padded_vocab_size - config.vocab_size) * config.n_embd  # rows no token uses
    assert x["gpt2_untied"] == twice - padding


def test_the_training_answers_against_the_recorded_run(built):
    _, _, _, data = built
    x, q = data["exercises"], data["run"]["config"]
    assert x["total_tokens"] == data["run"]["iter_num"] * q["batch_size"] * q["block_size"]
    # The learning rate the recorded run logged every 10 steps: linear in warmup, so step 35
    # lies halfway between steps 30 and 40; the cosine is halfway down at the middle of its span.
    logged = {r["iter"]: r["lr"] for r in metrics.read_metrics(QUICKSTART_RUN / "metrics.jsonl")[0]}
    warm, middle = x["lr_steps"]
    assert warm % 10 == 5 and warm < q["warmup_iters"]
    assert x["lr_warmup"] == pytest.approx((logged[warm - 5] + logged[warm + 5]) / 2)
    assert middle == (q["warmup_iters"] + q["lr_decay_iters"]) // 2
    assert x["lr_middle"] == pytest.approx((q["learning_rate"] + q["min_lr"]) / 2)


def test_the_generation_answers(built, model):
    _, _, _, data = built
    x = data["exercises"]
    m, tokenizer = model
    # the next-token probabilities at three temperatures, from the model's logits here
    ids = tokenizer.encode(data["prompt"])[-m.config.block_size:]
    with torch.no_grad():
        logits = m(torch.tensor([ids]))[0][0, -1]
    top = int(logits.argmax())
    for key, t in (("top_prob", 1.0), ("top_prob_cold", 0.5), ("top_prob_hot", 1.5)):
        assert data["next_token"][key] == pytest.approx(torch.softmax(logits / t, -1)[top].item(), rel=1e-5)
    # positions through the model: the engine's window rules, followed by hand
    block, length, fed_plain, fed_cached, cached = 64, 1, 0, 0, False
    for _ in range(100):
        if length == block:  # full: keep the newer half, and the cache must be refilled
            length, cached = block // 2, False
        fed_plain += length
        fed_cached += 1 if cached else length
        cached, length = True, length + 1
    assert (x["positions_no_cache"], x["positions_cache"]) == (fed_plain, fed_cached)


def test_the_evaluation_answers(built):
    _, _, _, data = built
    x, v = data["exercises"], data["run"]["vocab_size"]
    uniform = torch.nn.functional.cross_entropy(torch.zeros(1, v), torch.tensor([3])).item()
    assert x["uniform"]["loss"] == pytest.approx(uniform)
    assert x["uniform"]["ppl"] == pytest.approx(math.exp(uniform))
    assert x["uniform"]["bpb"] == pytest.approx(uniform / math.log(2))
    p = data["perplexity"]  # a character model of ASCII text: one byte per token
    assert p["bytes"] == p["tokens"] and x["loss_in_bits"] == pytest.approx(p["bpb"], rel=1e-5)


def test_the_scaling_answers(built):
    from torch.utils.flop_counter import FlopCounterMode

    import hf
    from model import GPT
    _, _, _, data = built
    x = data["exercises"]
    # FSDP on 4 GPUs: 16 bytes per parameter of GPT-2 medium (weights, gradients, two moments), a quarter each
    with torch.device("meta"):
        medium = GPT(hf.gpt2_config("gpt2-medium"))
    assert x["fsdp_medium_4"] == pytest.approx(16 * sum(p.numel() for p in medium.parameters()) / 4, rel=0.01)
    # a step of config/train_gpt2.py: PyTorch's FLOP counter on one sequence forward and backward
    gpt2 = GPT(hf.gpt2_config("gpt2"))
    gpt2.to("meta")
    idx = torch.zeros(1, 1024, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        gpt2(idx, idx)[1].backward()
    assert x["gpt2_step_flops"] == pytest.approx(counter.get_total_flops() * 512, rel=0.005)
    # Newton-Schulz on c_fc: 5 iterations of 4 m^2 n + 2 m^3, m the smaller side
    m, n = sorted(x["c_fc_shape"])
    assert x["c_fc_shape"] == [4 * data["run"]["model_args"]["n_embd"], data["run"]["model_args"]["n_embd"]]
    assert x["ns_flops_c_fc"] == data["optimizer_runs"]["ns_steps"] * (4 * m * m * n + 2 * m ** 3)


def test_the_nanogpt_ratio_is_the_recorded_runs(built):
    _, _, pdf, data = built
    folder = guide.REPO_ROOT / guide.GuideConfig().nanogpt_results_dir
    readme = (folder / "README.md").read_text(encoding="utf-8")
    medians = dict(re.findall(r"\| (nanoGPT's CPU recipe|ours, `python train.py`) \|.*\*\*([\d.]+) s\*\*", readme))
    ratio = float(medians["nanoGPT's CPU recipe"]) / float(medians["ours, `python train.py`"])
    shown = data["nanogpt"]["nanogpt"]["median_seconds"] / data["nanogpt"]["ours"]["median_seconds"]
    assert shown == pytest.approx(ratio, abs=0.01)
    assert f"{shown:.2f} times" in flat(pdf_text(pdf))


# ---------------------------------------------------------------------------- the assistant (chapter 11)

SFT_RUN = guide.REPO_ROOT / guide.GuideConfig().sft_results_dir


def recorded_eval(name):
    """One `eval.py --json` result of the recorded finetuning, read here without guide.py."""
    return json.loads((SFT_RUN / name).read_text(encoding="utf-8").splitlines()[-1])


@pytest.fixture(scope="module")
def finetuned():
    """The recorded finetuned model, loaded as chat.py loads a checkpoint."""
    import checkpoint
    loaded, tokenizer, _ = checkpoint.load_model("resume", str(SFT_RUN), "cpu")
    return loaded, tokenizer


def greedy_answer(model, tokenizer, conversation, max_new_tokens=24):
    """The answer to a conversation's last user turn by engine.generate, the path eval.py takes
    (not chat.ChatSession, which the build used)."""
    import engine
    prompt = tokenizer.render_prompt(conversation)
    out = engine.generate(model, torch.tensor([prompt]), max_new_tokens, temperature=0,
                          stop_token=tokenizer.end_token)[0, len(prompt):].tolist()
    return tokenizer.decode(out[:out.index(tokenizer.end_token)] if tokenizer.end_token in out else out)


def test_the_recorded_finetuning_is_what_config_sft_spelling_py_makes_today():
    # The chapter describes today's recipe with this run's numbers: they must be the same recipe.
    import dataclasses

    import train
    from configurator import parse_config
    ckpt = torch.load(SFT_RUN / "ckpt.pt", map_location="cpu", weights_only=False)
    today = train.resolve_config(parse_config(train.TrainConfig(), [str(guide.REPO_ROOT / "config" / "sft_spelling.py")]),
                                 "cpu", "float32")
    assert ckpt["config"] == dataclasses.asdict(today)
    assert ckpt["iter_num"] == today.max_iters
    for name in ("task-out-spelling.json", "shakespeare-out-spelling.json"):
        assert f"(iteration {today.max_iters}, dataset {today.dataset})" in recorded_eval(name)["model"]
    # The base model evaluated before finetuning is the recorded quick start's iteration count.
    assert f"iteration {train.TrainConfig().max_iters}," in recorded_eval("task-out.json")["model"]


def test_chapter_11_table_is_the_recorded_runs(built):
    _, _, pdf, data = built
    text = flat(pdf_text(pdf))
    readme = flat((SFT_RUN / "README.md").read_text(encoding="utf-8"))
    for row, (task_file, text_file) in guide.SFT_RECORDS.items():
        task, loss = recorded_eval(task_file), recorded_eval(text_file)
        shown = data["sft"]["rows"][row]
        assert (shown["accuracy"], shown["correct"], shown["val_loss"]) == (task["accuracy"], task["correct"], loss["loss"])
        assert task["n"] == 1005 and loss["tokens"] == data["perplexity"]["val_tokens"] - 1  # the whole val split
        printed = f"{task['accuracy'] * 100:.1f}% ({task['correct']:,})"
        assert printed in text, printed
        assert f"{loss['loss']:.4f}" in text and f"{loss['loss']:.4f}" in readme  # the book and the README agree
        assert f"{task['accuracy'] * 100:.1f}%" in readme
    seconds = [float(x) for x in (SFT_RUN / "seconds.txt").read_text().split()]
    assert len(seconds) == 3 and data["sft"]["median_seconds"] == sorted(seconds)[1]
    assert f"{sorted(seconds)[1]:.1f} s of wall time" in text and f"{sorted(seconds)[1]:.1f} s" in readme
    # what the table shows: finetuning teaches the task; without plain text, Shakespeare is forgotten
    rows = data["sft"]["rows"]
    assert rows["before"]["correct"] == 0 and rows["after"]["accuracy"] > 0.9
    assert rows["no_text"]["val_loss"] > 2 * rows["after"]["val_loss"]


def test_chapter_11_answers_come_from_the_finetuned_model(built, finetuned):
    import sft
    _, _, pdf, data = built
    text = flat(pdf_text(pdf))
    model, tokenizer = finetuned
    a = data["assistant"]
    held_out = set(sft.spelling_words(guide.prepare.read_text_file(guide.prepare.SHAKESPEARE_PATH))[1])
    recorded_wrong = {w["prompt"]: w["got"] for w in recorded_eval("task-out-spelling.json")["wrong"]}
    assert sum(not s["right"] for s in a["samples"]) >= 1  # at least one mistake is shown
    for sample in a["samples"]:
        assert sample["word"] in held_out
        answer = greedy_answer(model, tokenizer, sft.spelling_conversation(sample["word"])[:1])
        assert sample["answer"] == answer and sample["right"] == (answer == "-".join(sample["word"]))
        if f"spell {sample['word']}" in recorded_wrong:  # eval.py's batched answers agree
            assert answer == recorded_wrong[f"spell {sample['word']}"]
        assert f"spell {sample['word']} {answer}" in text
    # chat.py's own transcript, as the book prints it: the answer, and the forgotten exchange
    first = a["samples"][0]
    assert f"> spell {first['word']}\n{first['answer']}\n" in a["session"]
    assert "the oldest 1 exchange forgotten" in a["session"]
    assert "the oldest 1 exchange forgotten" in text
    # Short words, the second asked after the first, which was not forgotten: the answer is the
    # one engine.generate gives to the whole conversation, and nearly always right, as alone.
    short = a["short"]
    first_word, second_word = short["first_pair"]
    conversation = sft.spelling_conversation(first_word)[:1] + [
        {"role": "assistant", "content": short["answers"][0]}, sft.spelling_conversation(second_word)[0]]
    assert greedy_answer(model, tokenizer, conversation, short["max_new_tokens"]) == short["answers"][1]
    assert f"> spell {second_word}\n{short['answers'][1]}\n" in short["session"]
    assert "forgotten" not in short["session"]
    assert short["second"] >= 0.9 * short["alone"] >= 0.9 * 0.9 * short["pairs"]
    assert f"as the second turn of a conversation, {short['second']}" in text


def test_chapter_11_checks_and_the_rendered_conversation(built):
    _, _, pdf, data = built
    a = data["assistant"]
    # the chat tokens' first logits are the mean of the others' (tied head, mean rows)
    assert a["new_logit_gap"] < 1e-5
    # token-weighted micro-batches = one batch's mean over its targets; a mean of no target is NaN
    assert a["step"]["max_difference"] < 1e-6 < a["step"]["max_update"] and a["step"]["empty_mean_is_nan"]
    # the rendered example: ids after the 65 characters, and the trained targets the letters,
    # dashes and <|end|> of the answer
    ex = a["example"]
    assert list(a["chat_tokens"].values()) == [65, 66, 67, 68] == list(range(a["base_vocab"], a["vocab"]))
    assert ex["trained"] == 2 * len(ex["word"]) == sum(ex["mask"])
    assert ex["tokens"][-2 * len(ex["word"]):] == list("-".join(ex["word"])) + ["<|end|>"]
    assert "".join(ex["tokens"]).replace("\u00b7", " ") == f"<|user|>spell {ex['word']}<|end|><|assistant|>" + \
        "-".join(ex["word"]) + "<|end|>"
    # half the train rows are plain text; the split shares no word
    assert a["dataset"]["text_rows"] == a["dataset"]["conversations"]["train"] == sum(a["exchanges"].values())
    assert sum(int(n) * count for n, count in a["exchanges"].items()) == a["words"]["train"]  # each word once
    assert a["dataset"]["conversations"]["val"] == a["words"]["held_out"] == 1005
    assert "-> b-r-o-t-h-e-r" in flat(pdf_text(pdf)).replace("\u2192", "->")


def test_the_assistant_answers(built, model):
    import eval as evaluate
    import sft
    _, _, _, data = built
    a = data["assistant"]
    # exercise 1: every letter, dash and <|end|> of an answer is a target; the third row has none
    assert a["step"]["targets"] == [2 * len("ago"), 2 * len("strengthen"), 0]
    # exercise 2: the positions read at the second turn, followed by hand. The first exchange:
    # <|user|> spell w <|end|> <|assistant|>, then the answer and the <|end|> the model wrote.
    short = a["short"]
    first, second = short["first_pair"]
    turn = lambda word: 1 + len(f"spell {word}") + 2  # noqa: E731
    answer_tokens = [len(answer) for answer in short["answers"]]
    # every token the model wrote is fed back but the last: its <|end|>, read with the next turn,
    # or, when max_new_tokens cut the answer, its last letter (the session then adds the <|end|>)
    fed = [n - (n == short["max_new_tokens"]) for n in answer_tokens]
    first_exchange = turn(first) + answer_tokens[0] + 1
    assert short["positions_cache"] == [turn(first) + fed[0], 1 + turn(second) + fed[1]]
    assert short["positions_no_cache"][1] == first_exchange + turn(second) + fed[1]
    # exercise 3: the quick start with the chat tokens, as eval.py task gives them, answers as recorded
    m, tokenizer = model
    base, chat_tokenizer = evaluate.chat_model(m, tokenizer)
    wrong = data["sft"]["rows"]["before"]["wrong"][0]
    word = wrong["prompt"].removeprefix("spell ")
    _, [(_, _, got)] = sft.exact_match(base, chat_tokenizer, [sft.spelling_conversation(word)])
    assert got == wrong["got"] and not got.startswith(word[0] + "-")


def test_a_missing_finetuning_record_is_a_clear_error(tmp_path):
    shutil.copytree(SFT_RUN, tmp_path / "runs", ignore=shutil.ignore_patterns("ckpt.pt"))
    (tmp_path / "runs" / "task-no-text.json").unlink()
    with pytest.raises(guide.GuideError, match="--sft_results_dir.*ckpt.pt, task-no-text.json"):
        guide.sft_results(tmp_path / "runs")


# ---------------------------------------------------------------------------- layout

RAW_TYPST = re.compile(r"#(raw|fix|int-fmt|sci|pct|if|let|listing|d\.)\b|\belse \[|\bd\.(run|build|exercises)\.")


def typst_in(text):
    """Lines of PDF text that show Typst source instead of what it should have made."""
    return [line.strip() for line in text.splitlines() if RAW_TYPST.search(line)]


def swallowed_semicolons(source):
    """Places in Typst markup where `;` directly follows an embedded expression (#f(x); or
    #(x);): Typst ends the expression there and drops the semicolon from the page."""
    found = []
    for line in source.splitlines():
        if line.lstrip().startswith("//"):
            continue
        for m in re.finditer(r"#[\w.-]*(\((?:[^()\"]|\"[^\"]*\"|\([^()]*\))*\)|\[[^\]]*\])*;", line):
            if re.match(r"#[\w.-]*[(\[]", m.group(0)):
                found.append(line.strip())
    return found


def test_the_layout_checks_catch_what_they_look_for():
    assert typst_in("the top-p figure else [Top-p 0.9 keeps the likeliest]")
    assert typst_in("loss #fix(d.run.best_val_loss, 4) nats")
    assert not typst_in("x = self.transformer.wte(idx)  # (B, T, C)\nbest val loss 1.6427")
    assert swallowed_semicolons('the optimizer #raw("torch.optim.Muon"); what') == [
        'the optimizer #raw("torch.optim.Muon"); what']
    assert swallowed_semicolons("has perplexity #(d.run.vocab_size); the trained")
    assert not swallowed_semicolons('the optimizer #raw("torch.optim.Muon")\\; what (a; b)')


def test_the_pdf_has_no_typst_source_prime_or_swallowed_semicolon(built):
    _, build_dir, pdf, _ = built
    text = pdf_text(pdf)
    listings = json.loads((build_dir / "listings.json").read_text(encoding="utf-8"))
    code = {re.sub(r"\s+", "", line) for listing in listings.values() for line in listing["text"].splitlines()}
    assert [line for line in typst_in(text) if re.sub(r"\s+", "", line) not in code] == []
    assert not re.search(r"\d′", text), "an ASCII apostrophe after a digit prints as a prime: write ’"
    for path in sorted(guide.GUIDE_DIR.glob("*.typ")):
        source = path.read_text(encoding="utf-8")
        assert not swallowed_semicolons(source), (path.name, swallowed_semicolons(source))
        # an inline code string with a line break in it prints the break
        assert not re.search(r'#raw\("[^"\n]*\n', source), path.name


def test_no_listing_is_set_below_7_points_or_runs_past_the_margin(built):
    _, build_dir, _, _ = built
    listings = json.loads((build_dir / "listings.json").read_text(encoding="utf-8"))
    for spec, listing in listings.items():
        assert listing["size"] >= 7.0, spec
        width = listing["longest"] * guide.CODE_ADVANCE_EM * listing["size"]
        assert width <= guide.CODE_WIDTH_PT, f"{spec}: a line of {listing['longest']} characters does not fit"


def page_fill(pdf):
    """For each page, how far down its body the ink reaches (0 = nothing, 1 = the bottom margin),
    read from the page rendered in grey at 24 dpi; and the text of each page."""
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    from PIL import Image
    out = Path(pdf).parent / "pages"
    out.mkdir(exist_ok=True)
    subprocess.run(["pdftoppm", "-gray", "-r", "24", str(pdf), str(out / "p")], check=True)
    fills = []
    for path in sorted(out.glob("p-*.pgm")):
        ink = np.asarray(Image.open(path)) < 200
        top, bottom = round(2.3 / 2.54 * 24), ink.shape[0] - round(2.2 / 2.54 * 24)  # the body's margins
        rows = np.nonzero(ink[top:bottom].any(axis=1))[0]
        fills.append((rows.max() + 1) / (bottom - top) if rows.size else 0.0)
    return fills, pdf_text(pdf).split("\f")


def test_no_page_is_near_empty_unless_a_chapter_ends_there(built):
    _, _, pdf, _ = built
    fills, pages = page_fill(pdf)
    opens = re.compile(r"^\s*(Chapter \d+|Appendix [A-Z]|Part [IV]+:|How to read this book)", re.MULTILINE)
    for n, fill in enumerate(fills):
        assert fill > 0.05, f"page {n + 1} is blank"
        ends_a_chapter = n + 1 == len(fills) or bool(opens.search(pages[n + 1][:200]))
        is_a_part_page = bool(re.match(r"\s*Part [IV]+:", pages[n]))
        if n == 0 or ends_a_chapter or is_a_part_page:
            continue
        assert fill > 0.4, f"page {n + 1} is {fill:.0%} full and no chapter ends there"


# ---------------------------------------------------------------------------- the recorded experiments

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


def test_chapter_10_shows_the_experiment_and_chapter_7_bits_per_byte(built):
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


def test_chapter_9_shows_the_optimizer_table(built):
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
    text = flat(pdf_text(pdf))
    assert "Sharded data parallel: FSDP" in text
    assert f"GPT-2 124M needs {small['ddp_bytes'] / 1e9:.1f} GB" in text
    assert f"keeps {small['activation_bytes']['plain'] / 1e9:.2f} GB without checkpointing" in text
