"""
Build guide.pdf, "Build a Large Language Model From Scratch", from this repository.

    python guide.py                                   # figures from out/ if trained, else the recorded quick start
    python guide.py --train=True                      # train the quick start here first (about a minute)
    python guide.py --ckpt_dir=out-shakespeare-char   # figures from another train.py checkpoint
    python guide.py --fast=True                       # smaller measurements: checks that the guide builds (tests)

The guide cannot go stale, because nothing in it is copied by hand:
  - The prose lives in guide/*.typ (Typst markup). A code listing is written there as
    #listing("model.py:CausalSelfAttention") and cut out of the current source file at build
    time, by name, with `ast`; "file.py:Class[a,b]" or "file.py:func[1-12]" shows part of it,
    with the lines left out marked. A renamed or deleted symbol stops the build with an error
    naming it.
  - Every figure and number about "the model" comes from one trained quick-start model: the
    checkpoint in --ckpt_dir, or one trained here with --train, or out/ckpt.pt (what
    `python train.py` writes), or, when there is none of these, the quick-start run recorded in
    results/ with its command, date and commit. The tokenizer experiment, the optimizer
    comparison and the side-by-side with nanoGPT are read from their recorded runs in results/.
  - The teaching code of Part I (attention in stages, LayerNorm, GELU, the naive BPE trainer)
    lives in lessons.py; the build checks each piece against the model's own layers.

Steps, in order (the slow ones last, so a broken listing fails in a second):
  1. collect the listings named in guide/*.typ;
  2. find or train the checkpoint;
  3. measure (attention maps, samples, perplexity, KV-cache speed, ...) into build_dir/data.json
     and draw the figures into build_dir/figures/ with matplotlib;
  4. copy guide/*.typ next to them and compile with typst (offline, bundled fonts only).

Design choices: the build runs on the CPU by default and on one thread (its models are tiny:
extra threads mostly wait on each other); every random choice is seeded, so two builds from
the same checkpoint give the same numbers, apart from the timings.
"""

import ast
import contextlib
import dataclasses
import inspect
import io
import json
import math
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

import bench
import checkpoint
import common
import data
import engine
import eval as evaluate
import lessons
import metrics
import optim
import prepare
import sample
import train
from configurator import parse_config
from model import GPT, GPTConfig, causal_mask
from tokenizer import BPETokenizer, CharTokenizer, GPT2Tokenizer, count_chunks, merges_to_lines, train_bpe

REPO_ROOT = Path(__file__).resolve().parent
GUIDE_DIR = REPO_ROOT / "guide"  # the Typst sources: guide.typ (the book), lib.typ, one file per chapter
MAIN_FILE = "guide.typ"
# How a chapter asks for a listing: #listing("file.py:Name") or #listing("file.py:Class.method");
# a file name alone ("config/train_gpt2.py") lists the whole file.
LISTING_CALL = re.compile(r'#listing\(\s*"([^"]+)"')

# Listing typography. The code font's characters are all 0.602 em wide; a listing is set just
# small enough for its longest line to fit the page, so code lines are never wrapped.
CODE_WIDTH_PT = 462.0  # A4 with 2 cm margins (482 pt), less the listing box's inset and rule
CODE_ADVANCE_EM = 0.602  # DejaVu Sans Mono
CODE_MAX_PT, CODE_MIN_PT = 8.0, 7.0  # never below 7 pt: the tests check every listing


@dataclass
class GuideConfig:
    output: str = "guide.pdf"
    # a train.py out_dir with ckpt.pt; None = out/ if it has one, else the recorded quick start
    ckpt_dir: Optional[str] = None
    train: bool = False  # train the quick start here (about a minute) instead of reading a checkpoint
    build_dir: str = "guide_build"  # the build's own run, figures, data.json and the Typst it compiles
    fast: bool = False  # tests: small measurements (and with --train a tiny run): proves the guide builds
    quickstart_dir: str = "results/cpu-quickstart-2026-12-06"  # the recorded quick-start run
    nanogpt_results_dir: str = "results/cpu-nanogpt-2026-12-06"  # the quick start and nanoGPT, side by side
    tokenizer_results_dir: str = "results/cpu-tokenizers-2026-12-03"  # the recorded tokenizer experiment
    optimizer_results_dir: str = "results/cpu-optimizers-2026-12-04"  # the recorded AdamW vs Muon runs
    device: str = "cpu"  # where the build's run and measurements happen
    threads: int = 1  # CPU threads for torch; raise it for a large --ckpt_dir model
    seed: int = 1337


# Measurement sizes: the full book, and the tiny version the tests build.
FULL_SIZES = dict(sample_tokens=240, ppl_tokens=None, kv_new_tokens=100,
                  kv_long_block=256, kv_long_prompt=192, kv_long_tokens=60, kv_repeats=1, depths=(1, 2, 4, 8, 16, 32), scale_trials=32,
                  memory_models=bench.GPT2_SIZES, memory_block=1024)
FAST_SIZES = dict(sample_tokens=40, ppl_tokens=4_000, kv_new_tokens=24,
                  kv_long_block=96, kv_long_prompt=64, kv_long_tokens=16, kv_repeats=1, depths=(1, 4), scale_trials=2, build_iters=8,
                  memory_models=("gpt2",), memory_block=64)


class GuideError(common.UserError):
    """The guide cannot be built as asked; the message says what to fix."""


# --------------------------------------------------------------------------------------------
# 1. Listings: cut out of the source by name
# --------------------------------------------------------------------------------------------

def find_definition(tree, dotted_name):
    """The class or function `dotted_name` ("GPT.forward") in a parsed module, or None."""
    node, body = None, tree.body
    for part in dotted_name.split("."):
        node = next((n for n in body if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                     and n.name == part), None)
        if node is None:
            return None
        body = node.body
    return node


ELISION = re.compile(r"^(?P<symbol>[\w.]*)(?:\[(?P<parts>[^\]]+)\])?$")  # "Class[a,b]", "func[1-20]"
ELIDED = "\u22ef"  # the mark of a line standing for lines left out: "⋯ 12 lines left out"


def extract_listing(spec, source_root=None):
    """
    The source text of one listing -> dict(file, symbol, start, end, pieces, text, size).
    "model.py:GPT.forward": a definition whole, exactly what inspect.getsource returns
    (decorators included), dedented. "config/train_gpt2.py": a whole file. And two ways to show
    only part of a definition, for machinery that teaches in a few lines: "data.py:Class[a,b]"
    keeps the class's own lines up to its first member, then members a and b;
    "train.py:func[1-12]" keeps lines 1 to 12 of the definition. What is left out is one line,
    "⋯ N lines left out". pieces: the file's (first, last) line of every piece shown, which
    the tests compare with the file; start and end span them all.
    """
    source_root = REPO_ROOT if source_root is None else source_root
    file_name, _, symbol = spec.partition(":")
    path = Path(source_root) / file_name
    if not path.is_file():
        raise GuideError(f"listing {spec!r}: there is no file {file_name} in {source_root}")
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    match = ELISION.match(symbol)
    if match is None:
        raise GuideError(f"listing {spec!r}: write file.py:Name, file.py:Class[member,...] or file.py:Name[a-b]")
    name, parts = match.group("symbol"), match.group("parts")
    if name:
        node = find_definition(ast.parse(source, filename=str(path)), name)
        if node is None:
            raise GuideError(f"listing {spec!r}: {file_name} has no class or function {name!r} "
                             f"(renamed or removed?); fix the #listing(...) in guide/*.typ")
        start, end = min([node.lineno] + [d.lineno for d in node.decorator_list]), node.end_lineno
    else:
        node, start, end = None, 1, len(lines)
    pieces = [(start, end)]
    if parts and re.fullmatch(r"\d+-\d+", parts):  # a range of the definition's own lines
        first, last = (start + int(n) - 1 for n in parts.split("-"))
        if not start <= first <= last <= end:
            raise GuideError(f"listing {spec!r}: {name} has lines 1-{end - start + 1}")
        pieces = [(first, last)]
    elif parts:  # a class's header, then the members asked for
        members = {n.name: n for n in node.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        wanted = [p.strip() for p in parts.split(",")]
        unknown = [w for w in wanted if w not in members]
        if unknown:
            raise GuideError(f"listing {spec!r}: {name} has no member {', '.join(unknown)} (renamed or removed?)")
        first_member = min(min([m.lineno] + [d.lineno for d in m.decorator_list]) for m in members.values())
        pieces = [(start, first_member - 1)]
        for m in sorted((members[w] for w in wanted), key=lambda m: m.lineno):
            pieces.append((min([m.lineno] + [d.lineno for d in m.decorator_list]), m.end_lineno))
        while lines[pieces[0][1] - 1].strip() == "":  # no blank line before a gap
            pieces[0] = (pieces[0][0], pieces[0][1] - 1)
    indent = min(len(l) - len(l.lstrip()) for a, b in pieces for l in lines[a - 1:b] if l.strip())
    shown = []
    for k, (a, b) in enumerate(pieces):
        gap = lines[(pieces[k - 1][1] if k else start - 1):a - 1]  # the lines between two pieces
        if any(l.strip() for l in gap):
            piece_indent = len(lines[a - 1]) - len(lines[a - 1].lstrip())
            shown.append(" " * (piece_indent - indent) + f"{ELIDED} {len(gap)} line{'s' if len(gap) > 1 else ''} left out")
        elif gap:
            shown.append("")  # only blank lines between: one blank line
        shown += [l[indent:] for l in lines[a - 1:b]]
    if pieces[-1][1] < end:  # the rest of the definition, marked at the indentation of its first line
        tail = next(l for l in lines[pieces[-1][1]:end] if l.strip())
        shown.append(" " * (len(tail) - len(tail.lstrip()) - indent) + f"{ELIDED} {end - pieces[-1][1]} lines left out")
    text = "\n".join(shown) + "\n"
    longest = max(len(line) for line in text.splitlines())
    size = max(CODE_MIN_PT, min(CODE_MAX_PT, CODE_WIDTH_PT / (longest * CODE_ADVANCE_EM)))
    return dict(file=file_name, symbol=name, start=pieces[0][0], end=pieces[-1][1], pieces=pieces, text=text,
                size=math.floor(size * 10) / 10, elided=bool(parts), longest=longest)


def listing_specs(guide_dir=None):
    """Every listing the chapters ask for, in order of appearance, without repeats."""
    specs = []
    for path in sorted(Path(guide_dir or GUIDE_DIR).glob("*.typ")):
        text = re.sub(r"(?m)^\s*//.*$", "", path.read_text(encoding="utf-8"))  # not in comments
        for spec in LISTING_CALL.findall(text):
            if spec not in specs:
                specs.append(spec)
    return specs


def collect_listings(guide_dir=None, source_root=None):
    """{spec: listing} for every #listing in the chapters; one error names all that are missing."""
    listings, problems = {}, []
    for spec in listing_specs(guide_dir):
        try:
            listings[spec] = extract_listing(spec, source_root)
        except GuideError as e:
            problems.append(str(e))
    if problems:
        raise GuideError("the guide lists code that is not in the source:\n  " + "\n  ".join(problems))
    return listings


# --------------------------------------------------------------------------------------------
# 2. The checkpoint: given, out/, or a short quick-start run made here
# --------------------------------------------------------------------------------------------

def get_checkpoint(cfg, build_dir, sizes, log):
    """(checkpoint folder, dict describing where it came from): --ckpt_dir; or with --train the
    quick start trained here, in full (or for --fast a few steps of it); else out/, where
    `python train.py` writes it; else the quick-start run recorded in --quickstart_dir."""
    if cfg.ckpt_dir is not None:
        ckpt_dir = Path(cfg.ckpt_dir)
        if not (ckpt_dir / checkpoint.CHECKPOINT_NAME).is_file():
            raise GuideError(f"--ckpt_dir={cfg.ckpt_dir}: there is no {checkpoint.CHECKPOINT_NAME} in it; "
                             f"train one (python train.py --out_dir={cfg.ckpt_dir}) or leave --ckpt_dir out")
        return ckpt_dir, dict(kind="checkpoint", command=None, seconds=None)
    if cfg.train:
        run_dir = build_dir / "run"
        args = [f"--out_dir={run_dir}", "--overwrite=True", f"--device={cfg.device}"]
        if "build_iters" in sizes:  # --fast: a few steps, with the quick start's other settings
            iters = sizes["build_iters"]
            args += [f"--max_iters={iters}", f"--lr_decay_iters={iters}", "--warmup_iters=1",
                     f"--eval_interval={iters // 2}", "--eval_iters=2", "--log_interval=1"]
        log(f"training the quick start into {run_dir} (its log: {build_dir / 'run.log'})")
        t0 = time.perf_counter()
        with open(build_dir / "run.log", "w", encoding="utf-8") as f, contextlib.redirect_stdout(f):
            train.main(args)
        return run_dir, dict(kind="build", command=" ".join(["python train.py"] + args[3:]),
                             seconds=time.perf_counter() - t0)
    quick_start = Path(train.TrainConfig().out_dir)  # where `python train.py` puts it: relative to here
    if not cfg.fast and (quick_start / checkpoint.CHECKPOINT_NAME).is_file():
        return quick_start, dict(kind="quickstart", command="python train.py", seconds=None)
    recorded = recorded_runs_dir(cfg.quickstart_dir, (checkpoint.CHECKPOINT_NAME, metrics.METRICS_NAME,
                                                      "README.md"), "quickstart_dir")
    return recorded, dict(kind="recorded", command="python train.py", seconds=None)


def shown_path(path):
    """A path as the reader should type it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


# --------------------------------------------------------------------------------------------
# 3. Measurements. Each returns plain numbers/strings for data.json; figures go to `fig`.
# --------------------------------------------------------------------------------------------

def show_token(text):
    """A token's text made visible: spaces and newlines would otherwise be blank."""
    return text.replace("\n", "\u21b5").replace(" ", "\u00b7") or "\u2205"


LEARNED_VOCAB = 1024  # the learned BPE that chapter 1 trains, as `prepare.py --tokenizer=bpe --vocab_size=1024`


def token_data():
    """Chapter 1: tiny Shakespeare in characters, in BPE learned here from its train split, and in
    GPT-2's BPE; what the BPE trainer works on and how long it takes; the files prepare.py writes."""
    text = prepare.read_text_file(prepare.SHAKESPEARE_PATH)
    train_text, val_text = prepare.split_text(text)
    dataset_dir = prepare.ensure_dataset("shakespeare_char")
    meta = prepare.load_meta(dataset_dir)
    chars, bpe = CharTokenizer(meta["chars"]), GPT2Tokenizer()
    example = text.split("\n\n")[0].split("\n")[1]  # the first speech's first line
    bpe_ids = bpe.encode(example)
    bpe_count = len(bpe.encode(text))

    chunks = count_chunks(train_text)  # what train_bpe counts pairs in
    start = time.perf_counter()
    merges = train_bpe(train_text, LEARNED_VOCAB)
    learn_seconds = time.perf_counter() - start
    learned = BPETokenizer(merges)
    learned_ids = learned.encode(example)
    val_bytes = len(val_text.encode("utf-8"))
    files = {p.name: p.stat().st_size for p in sorted(dataset_dir.iterdir()) if p.is_file()}
    lines = [line for line in text.splitlines() if line.strip()]
    shown_meta = {k: v for k, v in meta.items() if k != "chars"}
    shown_meta["chars"] = "".join(meta["chars"])
    return dict(
        text_chars=len(text), char_vocab=chars.vocab_size, bpe_vocab=bpe.vocab_size,
        bpe_tokens=bpe_count, chars_per_bpe=len(text) / bpe_count,
        vocab_shown=[show_token(c) for c in meta["chars"]],
        example=example, example_char_ids=chars.encode(example),
        example_bpe_ids=bpe_ids, example_bpe_pieces=[show_token(bpe.decode([i])) for i in bpe_ids],
        files=files, meta_json=json.dumps(shown_meta, indent=2, ensure_ascii=False),
        mean_line_chars=sum(len(line) + 1 for line in lines) / len(lines),
        val_fraction=prepare.VAL_FRACTION, dtype=meta["dtype"],
        train_chars=len(train_text), chunks=sum(chunks.values()), distinct_chunks=len(chunks),
        learned_vocab=LEARNED_VOCAB, learned_merges=len(merges), learn_seconds=learn_seconds,
        first_merges=merges_to_lines(merges[:12]),
        the_merge=next(dict(number=k + 1, text=merges_to_lines([pair])[0])
                       for k, pair in enumerate(merges) if pair[0] + pair[1] == b" the"),
        example_learned_ids=learned_ids,
        example_learned_pieces=[show_token(learned.decode([i])) for i in learned_ids],
        val_bytes=val_bytes, tokens_per_byte=dict(char=len(chars.encode(val_text)) / val_bytes,
                                                  learned=len(learned.encode(val_text)) / val_bytes,
                                                  gpt2=len(bpe.encode(val_text)) / val_bytes))


def prompt_text(dataset_dir, tokenizer, max_chars):
    """A real prompt from the validation split (text the model never trained on): the start
    of the first paragraph that begins there, cut at a line end when one is near."""
    val = data.load_split(dataset_dir, "val")[0]
    text = tokenizer.decode(val[:4000].tolist())
    start = text.find("\n\n")
    text = text[start + 2:] if 0 <= start < 2000 else text
    cut = text.rfind("\n", 0, max_chars)
    return text[:cut + 1] if cut > max_chars // 3 else text[:max_chars]


def head_weights(attn, x, n_head):
    """Every head's attention weights (nh, T, T) for the input x (T, C) of a CausalSelfAttention:
    softmax(q k^T / sqrt(hs)) under the causal mask, the weights lessons.self_attention uses."""
    T, C = x.shape
    q, k, _ = torch.nn.functional.linear(x, attn.c_attn.weight, attn.c_attn.bias).split(C, dim=-1)
    q = q.view(T, n_head, C // n_head).transpose(0, 1)  # (nh, T, hs)
    k = k.view(T, n_head, C // n_head).transpose(0, 1)  # (nh, T, hs)
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // n_head)
    return torch.softmax(scores.masked_fill(~causal_mask(T, 0, "cpu"), float("-inf")), dim=-1)


def attention_data(model, tokenizer, prompt, fig):
    """Chapter 3: every head's attention weights on a real prompt, from the trained weights; and
    lessons.multi_head_attention (the textbook stages) checked against the model's own layer."""
    ids = tokenizer.encode(prompt)[:32 if tokenizer.name == "char" else 16]
    labels = [show_token(tokenizer.decode([i])) for i in ids]
    idx = torch.tensor([ids])
    T = len(ids)
    maps, worst = [], 0.0
    with torch.no_grad():
        x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(T))  # (1, T, C)
        for block in model.transformer.h:
            normed = block.ln_1(x)  # (1, T, C): the attention layer's input
            attn = block.attn
            by_hand = lessons.multi_head_attention(normed, attn.c_attn.weight, attn.c_attn.bias,
                                                   attn.c_proj.weight, attn.c_proj.bias, model.config.n_head)
            worst = max(worst, (by_hand - attn(normed)).abs().max().item())
            maps.append(head_weights(attn, normed[0], model.config.n_head))  # (nh, T, T)
            x = block(x)
    # The head that looks furthest back on average in the last layer gets the large picture.
    last = maps[-1]
    distance = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).clamp(min=0).float()
    reach = (last * distance).sum(-1).mean(-1)  # (nh,) mean distance attended
    big_head = int(reach.argmax())
    grid = fig.attention_grid(maps, "attention_grid")
    fig.attention_head(last[big_head], labels, f"layer {len(maps)}, head {big_head + 1}", "attention_head")
    prev = [float(torch.diagonal(m[h], offset=-1).mean()) for m in maps for h in range(m.size(0))]
    return dict(prompt=tokenizer.decode(ids), tokens=T, labels=labels, max_difference=worst, grid=grid,
                layers=len(maps), heads=model.config.n_head, big_layer=len(maps), big_head=big_head + 1,
                big_reach=float(reach[big_head]), best_previous_token=max(prev))


def scale_data(trials, seed):
    """Chapter 2: why 1/sqrt(d). Dot products of random unit-variance vectors, and how peaked
    softmax gets over 64 keys, with and without the scale."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for d in (16, 64, 256, 1024):
        q, k = torch.randn(trials, 64, d, generator=g), torch.randn(trials, 64, d, generator=g)
        scores = q @ k.transpose(-2, -1)
        scaled = scores / math.sqrt(d)
        rows.append(dict(d=d, std=scores.std().item(), std_scaled=scaled.std().item(),
                         top=torch.softmax(scores, -1).amax(-1).mean().item(),
                         top_scaled=torch.softmax(scaled, -1).amax(-1).mean().item()))
    return rows


def parameter_data(quick_config):
    """Chapter 3: GPT-2 124M's parameters counted by building it on the meta device (shapes
    only, no memory), next to the formula; and the quick-start model's count."""
    with torch.device("meta"):
        model = GPT(GPTConfig())
    cfg = model.config
    C, L, V, T = cfg.n_embd, cfg.n_layer, cfg.vocab_size, cfg.block_size

    def count(prefix):
        return sum(p.numel() for name, p in model.named_parameters() if name.startswith(prefix))

    block = count("transformer.h.0.")
    rows = [
        dict(part="token embedding wte (= output head, tied)", formula="V x C",
             formula_value=V * C, counted=count("transformer.wte.") - (cfg.padded_vocab_size - V) * C),
        dict(part="position embedding wpe", formula="T x C", formula_value=T * C,
             counted=count("transformer.wpe.")),
        dict(part="one block: attention c_attn, c_proj", formula="4C^2 + 4C",
             formula_value=4 * C * C + 4 * C, counted=count("transformer.h.0.attn.")),
        dict(part="one block: MLP c_fc, c_proj", formula="8C^2 + 5C",
             formula_value=8 * C * C + 5 * C, counted=count("transformer.h.0.mlp.")),
        dict(part="one block: two LayerNorms", formula="4C", formula_value=4 * C,
             counted=count("transformer.h.0.ln_")),
        dict(part=f"all {L} blocks", formula="L (12C^2 + 13C)", formula_value=L * (12 * C * C + 13 * C),
             counted=count("transformer.h.")),
        dict(part="final LayerNorm ln_f", formula="2C", formula_value=2 * C, counted=count("transformer.ln_f.")),
    ]
    total = model.get_num_params(non_embedding=False)
    formula_total = V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C
    with torch.device("meta"):
        quick = GPT(quick_config)
    return dict(C=C, L=L, V=V, T=T, padded_vocab=cfg.padded_vocab_size, rows=rows, block=block,
                total=total, formula_total=formula_total, non_embedding=model.get_num_params(),
                tied_saving=V * C, flops_per_token=model.flops_per_token(),
                quick_total=quick.get_num_params(non_embedding=False))


def init_depth_data(depths, seed):
    """Chapter 3: std of the residual stream after the last block at initialisation, for
    models of growing depth, with GPT-2's scaled init of the residual projections and without."""
    result = {"depths": list(depths), "scaled": [], "plain": []}
    for init in ("scaled", "plain"):
        for n_layer in depths:
            torch.manual_seed(seed)
            model = GPT(GPTConfig(n_layer=n_layer, n_head=4, n_embd=128, block_size=64, vocab_size=65))
            if init == "plain":  # every Linear at std 0.02, as if there were no residual rule
                with torch.no_grad():
                    for block in model.transformer.h:
                        torch.nn.init.normal_(block.attn.c_proj.weight, std=0.02)
                        torch.nn.init.normal_(block.mlp.c_proj.weight, std=0.02)
            idx = torch.randint(65, (8, 64), generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(64))
                for block in model.transformer.h:
                    x = block(x)
            result[init].append(x.std().item())
    return result


def lr_data(fig):
    """Chapter 4: train.get_lr over the quick start's run and config/train_gpt2.py's."""
    schedules = {}
    for name, argv in (("quickstart", []), ("train_gpt2", [str(REPO_ROOT / "config" / "train_gpt2.py")])):
        cfg = train.resolve_config(parse_config(train.TrainConfig(), argv), "cpu", "float32")
        steps = list(range(0, cfg.max_iters + 1, max(1, cfg.max_iters // 400)))
        schedules[name] = dict(
            steps=steps, lrs=[train.get_lr(s, cfg.learning_rate, cfg.min_lr, cfg.warmup_iters, cfg.lr_decay_iters)
                              for s in steps],
            learning_rate=cfg.learning_rate, min_lr=cfg.min_lr, warmup_iters=cfg.warmup_iters,
            lr_decay_iters=cfg.lr_decay_iters, max_iters=cfg.max_iters,
            tokens_per_iter=cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size,
            batch_size=cfg.batch_size, block_size=cfg.block_size,
            grad_accum=cfg.gradient_accumulation_steps, beta2=cfg.beta2)
    fig.lr_schedules(schedules, "lr_schedule")
    return {name: {k: v for k, v in s.items() if k not in ("steps", "lrs")} for name, s in schedules.items()}


def accumulation_data(seed):
    """Chapter 4: one step of train_step with 4 micro-batches of 3 sequences, and one with a
    single batch of 12, from the same weights. Plain SGD with lr=1 makes the weight change equal
    to the gradient, so the two updates must agree up to float rounding."""
    torch.manual_seed(seed)
    base = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=65))
    tokens = torch.randint(65, (12, 17), generator=torch.Generator().manual_seed(seed))
    updates = []
    for accum in (4, 1):
        model = GPT(base.config)
        model.load_state_dict(base.state_dict())
        before = [p.detach().clone() for p in model.parameters()]
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        per = 12 // accum
        batches = iter([(tokens[i:i + per, :-1], tokens[i:i + per, 1:]) for i in range(0, 12, per)])
        train.train_step(model, optimizer, lambda: next(batches), accum)
        updates.append(torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())]))
    return dict(max_difference=(updates[0] - updates[1]).abs().max().item(),
                max_update=updates[1].abs().max().item())


def memory_data(sizes, fig):
    """Chapter 4: the memory one GPU needs to train GPT-2's four sizes, under DDP and FSDP, worked
    out by bench.py from the parameter shapes alone; and the activations a training forward keeps
    for backward with and without activation checkpointing, measured on the CPU (bench.py again:
    `python bench.py --mode=memory` prints the same table)."""
    rows = bench.state_table(bench.GPT2_SIZES)
    activations = bench.activation_table(sizes["memory_models"], 1, sizes["memory_block"])
    fig.memory(rows, bench.WORLD_SIZES, activations, sizes["memory_block"], "memory")
    models = {row["name"]: dict(row, **activations.get(row["name"], {})) for row in rows}
    return dict(models=models, world_sizes=list(bench.WORLD_SIZES), bytes_per_param=bench.STATE_BYTES_PER_PARAM,
                block_size=sizes["memory_block"], measured=list(activations))


def next_token_data(model, tokenizer, prompt, fig):
    """Chapter 5: the model's distribution for the token after the prompt, as temperature,
    top-k and top-p reshape it."""
    ids = tokenizer.encode(prompt)[-model.config.block_size:]
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
    logits = logits[0, -1].float()
    probs = {t: torch.softmax(logits / t, -1) for t in (0.5, 1.0, 1.5)}
    order = torch.argsort(probs[1.0], descending=True)
    top = order[:12].tolist()
    sorted_p = probs[1.0][order]
    nucleus = int((sorted_p.cumsum(0) - sorted_p < 0.9).sum())
    fig.next_token([show_token(tokenizer.decode([i])) for i in top],
                   {t: p[top].tolist() for t, p in probs.items()}, nucleus, "next_token")
    entropy = lambda p: float(-(p * p.clamp_min(1e-12).log()).sum())
    return dict(context=show_token(tokenizer.decode(ids)[-32:]), top_token=show_token(tokenizer.decode([top[0]])),
                top_prob=probs[1.0][top[0]].item(), top_prob_cold=probs[0.5][top[0]].item(),
                top_prob_hot=probs[1.5][top[0]].item(), nucleus_90=nucleus,
                entropy={str(t): entropy(p) for t, p in probs.items()}, vocab=logits.numel())


def sampling_strategies(tokenizer):
    """The decoding settings the generation chapter compares."""
    top_k = 5 if tokenizer.name == "char" else 50
    return [dict(name="greedy", temperature=0.0, top_k=None, top_p=None),
            dict(name="temperature 1.0", temperature=1.0, top_k=None, top_p=None),
            dict(name="temperature 0.8", temperature=0.8, top_k=None, top_p=None),
            dict(name=f"top-k {top_k}", temperature=1.0, top_k=top_k, top_p=None),
            dict(name="top-p 0.9", temperature=1.0, top_k=None, top_p=0.9)]


def sample_data(model, tokenizer, prompt, new_tokens, seed):
    """Chapter 5: one seeded sample per decoding strategy, from the same prompt."""
    idx = torch.tensor([tokenizer.encode(prompt)[-model.config.block_size:]])
    samples = []
    for s in sampling_strategies(tokenizer):
        generator = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        out = engine.generate(model, idx, new_tokens, s["temperature"], s["top_k"], s["top_p"],
                              generator=generator)
        seconds = time.perf_counter() - t0
        new = out[0, idx.size(1):].tolist()
        words = tokenizer.decode(new).split()
        distinct = len(set(words)) / max(1, len(words))  # repetition shows as a low share
        samples.append(dict(s, text=tokenizer.decode(new), tokens=len(new), distinct=distinct,
                            tokens_per_sec=len(new) / max(seconds, 1e-9)))
    return samples


def kv_cache_data(sizes, device):
    """Chapter 5: bench.py's own generation benchmark (KV cache vs none), quick-start shape:
    from a 1-token prompt at the quick start's context, and after a long prompt in a longer one."""
    rows = []
    for block_size, prompt, new_tokens in ((None, 1, sizes["kv_new_tokens"]),
                                           (sizes["kv_long_block"], sizes["kv_long_prompt"], sizes["kv_long_tokens"])):
        cfg = bench.BenchConfig(mode="generate", preset="quickstart", block_size=block_size, prompt_tokens=prompt,
                                max_new_tokens=new_tokens, repeats=sizes["kv_repeats"], device=device)
        with contextlib.redirect_stdout(io.StringIO()):
            result = bench.bench_generate(cfg, device, "float32")
        rows.append({k: result[k] for k in ("params", "block_size", "prompt_tokens", "max_new_tokens",
                                            "tokens_per_sec_kv_cache", "tokens_per_sec_no_cache", "speedup",
                                            "same_tokens")})
    return rows


def perplexity_data(model, dataset_dir, tokenizer, max_tokens):
    """Chapter 6: eval.perplexity on the validation split, with bits per byte, next to what
    counting alone achieves: uniform guessing, unigram and bigram frequencies (add-one smoothed)
    from the training split."""
    val_arrays = data.load_split(dataset_dir, "val")
    batches = data.consecutive_batches(dataset_dir, "val", model.config.block_size, batch_size=8)
    token_bytes = torch.tensor(tokenizer.byte_lengths())  # bytes of text per id, as eval.py passes
    result = evaluate.perplexity(model, batches, max_tokens=max_tokens, token_bytes=token_bytes)
    V = tokenizer.vocab_size
    train_tokens = np.concatenate([np.asarray(a, dtype=np.int64) for a in data.load_split(dataset_dir, "train")])
    val = np.asarray(val_arrays[0][:result["tokens"] + 1], dtype=np.int64)
    unigram = np.bincount(train_tokens, minlength=V) + 1.0
    unigram_loss = -np.log(unigram[val[1:]] / unigram.sum()).mean()
    baselines = [dict(name="uniform: every token equally likely", loss=math.log(V)),
                 dict(name="unigram: how often each token occurs", loss=float(unigram_loss))]
    if V <= 4096:  # a V x V table of pair counts
        pairs = np.bincount(train_tokens[:-1] * V + train_tokens[1:], minlength=V * V).reshape(V, V) + 1.0
        bigram_loss = -np.log(pairs[val[:-1], val[1:]] / pairs[val[:-1]].sum(1)).mean()
        baselines.append(dict(name="bigram: which token follows which", loss=float(bigram_loss)))
    for b in baselines:
        b["ppl"] = math.exp(b["loss"])
    return dict(loss=result["loss"], ppl=result["ppl"], tokens=result["tokens"], bpb=result["bpb"],
                bytes=result["bytes"], baselines=baselines, val_tokens=int(sum(len(a) for a in val_arrays)))


def embedding_data(model, tokenizer, fig):
    """Chapter 2: what the trained token and position embeddings learned. Cosine similarity of
    every pair of token vectors (1 = the same direction, 0 = unrelated), the nearest neighbours
    of a few characters, the mean similarity within and between groups; and of every pair of
    position vectors."""
    V = tokenizer.vocab_size
    with torch.no_grad():
        tokens = model.transformer.wte.weight[:V]  # the padding rows are never used
        tokens = tokens / tokens.norm(dim=1, keepdim=True)
        similar = tokens @ tokens.T  # (V, V)
        positions = model.transformer.wpe.weight
        positions = positions / positions.norm(dim=1, keepdim=True)
        position_similar = positions @ positions.T  # (T, T)
    result = dict(vocab=V, n_embd=model.config.n_embd, block_size=model.config.block_size)
    if tokenizer.name == "char":
        chars = tokenizer.chars
        groups = {"lowercase": [c for c in chars if c.islower()], "uppercase": [c for c in chars if c.isupper()],
                  "vowels": list("aeiou"), "consonants": list("bcdfghklmnprstw"),
                  "punctuation": [c for c in ".,;:!?" if c in chars]}

        def mean_similarity(a, b):
            rows, cols = [chars.index(c) for c in groups[a]], [chars.index(c) for c in groups[b]]
            block = similar[rows][:, cols]
            if a == b:
                block = block[~torch.eye(len(rows), dtype=torch.bool)]  # not a character with itself
            return block.mean().item()

        def neighbours(c, k=3):
            row = similar[chars.index(c)].clone()
            row[chars.index(c)] = -2  # not itself
            return [dict(token=show_token(chars[j]), similarity=row[j].item()) for j in row.topk(k).indices]

        result.update(
            neighbours={show_token(c): neighbours(c) for c in ("a", "t", "A", ".", "\n") if c in chars},
            groups={f"{a}-{b}": mean_similarity(a, b) for a, b in
                    (("vowels", "vowels"), ("consonants", "consonants"), ("vowels", "consonants"),
                     ("uppercase", "uppercase"), ("lowercase", "uppercase"), ("punctuation", "punctuation"))})
        order = [c for g in ("lowercase", "uppercase", "punctuation") for c in groups[g]]
        index = [chars.index(c) for c in order]
        fig.similarity(similar[index][:, index], [show_token(c) for c in order], "embedding_similarity",
                       "token embeddings: cosine similarity")
    fig.similarity(position_similar, None, "position_similarity", "position embeddings: cosine similarity",
                   axis_label="position")
    result.update(position_next=position_similar.diagonal(1).mean().item(),
                  position_far=position_similar[0, model.config.block_size // 2:].mean().item())
    return result


def lessons_data(model, tokenizer, prompt, seed):
    """Chapters 1, 3 and 4: the teaching code of lessons.py, each stage checked against the next
    on the trained model's own weights and input, and the naive BPE trainer against the fast one."""
    ids = tokenizer.encode(prompt)[:model.config.block_size]
    block = model.transformer.h[0]
    attn = block.attn
    with torch.no_grad():
        x = model.transformer.wte(torch.tensor([ids])) + model.transformer.wpe(torch.arange(len(ids)))
        normed = lessons.layer_norm(x, block.ln_1.weight, block.ln_1.bias)
        by_hand = lessons.multi_head_attention(normed, attn.c_attn.weight, attn.c_attn.bias,
                                               attn.c_proj.weight, attn.c_proj.bias, model.config.n_head)
        hidden = torch.randn(4, 256, generator=torch.Generator().manual_seed(seed))
        r = torch.randn(2, 8, 4, generator=torch.Generator().manual_seed(seed))
        checks = dict(
            average=(lessons.average_previous_loop(r) - lessons.average_previous_matmul(r)).abs().max().item(),
            layer_norm=(normed - block.ln_1(x)).abs().max().item(),
            attention=(by_hand - attn(block.ln_1(x))).abs().max().item(),
            gelu=(lessons.gelu_tanh(hidden) - torch.nn.GELU(approximate="tanh")(hidden)).abs().max().item(),
            gelu_vs_exact=(lessons.gelu_tanh(hidden) - torch.nn.GELU()(hidden)).abs().max().item())
    text = prepare.read_text_file(prepare.SHAKESPEARE_PATH)[:20_000]
    timings = {}
    for name, trainer in (("naive", lessons.train_bpe_naive), ("fast", train_bpe)):
        t0 = time.perf_counter()
        merges = trainer(text, 256 + 100)
        timings[name] = time.perf_counter() - t0
        timings[f"{name}_merges"] = merges
    return dict(checks=checks, tokens=len(ids), bpe_chars=len(text), bpe_merges=100,
                naive_seconds=timings["naive"], fast_seconds=timings["fast"],
                same_merges=timings["naive_merges"] == timings["fast_merges"])


def nanogpt_results(folder):
    """Chapter 11: the recorded side-by-side of nanoGPT's documented CPU recipe and the quick
    start (`results/cpu-nanogpt-2026-12-06/`): each run's wall seconds and its last val loss."""
    folder = recorded_runs_dir(folder, ("README.md",) + tuple(f"{who}-{n}.txt" for who in ("nanogpt", "ours")
                                                             for n in (1, 2, 3)), "nanogpt_results_dir")
    runs = {}
    for who in ("nanogpt", "ours"):
        for n in (1, 2, 3):
            text = (folder / f"{who}-{n}.txt").read_text(encoding="utf-8")
            seconds = float(re.search(r"wall seconds: ([\d.]+)", text).group(1))
            val = float(re.findall(r"val loss ([\d.]+)", text)[-1])
            runs.setdefault(who, []).append(dict(seconds=seconds, val_loss=val))
    return dict(folder=shown_path(folder), **{who: dict(runs=r, median_seconds=statistics.median(x["seconds"] for x in r),
                                                        val_loss=r[-1]["val_loss"]) for who, r in runs.items()})


def positions_through_the_model(model, prompt_len, new_tokens, use_cache):
    """How many token positions engine.generate feeds the model to generate new_tokens after a
    prompt_len-token prompt, counted with a hook on the model's forward."""
    fed = []
    hook = model.register_forward_pre_hook(lambda module, args: fed.append(args[0].size(1)))
    try:
        engine.generate(model, torch.zeros(1, prompt_len, dtype=torch.long), new_tokens, temperature=0,
                        use_cache=use_cache)
    finally:
        hook.remove()
    return sum(fed)


def exercise_answers(model, tokenizer, results):
    """The answers of the appendix that are numbers, computed from the code and the trained
    model; test_guide.py checks each of them a second way."""
    q = train.resolve_config(train.TrainConfig(), "cpu", "float32")  # the quick start
    quick = GPT(GPTConfig(block_size=q.block_size, vocab_size=tokenizer.vocab_size, n_layer=q.n_layer,
                          n_head=q.n_head, n_embd=q.n_embd, bias=q.bias)).eval()
    gpt2 = results["params"]
    hs = q.n_embd // q.n_head
    g = torch.Generator().manual_seed(0)
    scores = (torch.randn(4096, hs, generator=g) * torch.randn(4096, hs, generator=g)).sum(-1)  # q . k
    medium = bench.state_table(["gpt2-medium"])[0]
    c_fc = quick.transformer.h[0].mlp.c_fc.weight.shape
    perplexity = results["perplexity"]
    return dict(
        tokens_first_line=dict(char=len(results["tokens"]["example_char_ids"]),
                               learned=len(results["tokens"]["example_learned_ids"]),
                               gpt2=len(results["tokens"]["example_bpe_ids"])),
        embedding_params=quick.transformer.wte.weight.numel() + quick.transformer.wpe.weight.numel(),
        padded_vocab=quick.config.padded_vocab_size, head_size=hs,
        score_std=scores.std().item(), score_std_scaled=(scores / math.sqrt(hs)).std().item(),
        init_loss=math.log(tokenizer.vocab_size),
        gpt2_untied=gpt2["total"] + gpt2["V"] * gpt2["C"],
        total_tokens=q.max_iters * q.batch_size * q.block_size,
        lr_warmup=train.get_lr(q.warmup_iters // 2, q.learning_rate, q.min_lr, q.warmup_iters, q.lr_decay_iters),
        lr_middle=train.get_lr((q.warmup_iters + q.max_iters) // 2, q.learning_rate, q.min_lr, q.warmup_iters,
                               q.lr_decay_iters),
        lr_steps=[q.warmup_iters // 2, (q.warmup_iters + q.max_iters) // 2],
        positions_no_cache=positions_through_the_model(quick, 1, 100, use_cache=False),
        positions_cache=positions_through_the_model(quick, 1, 100, use_cache=True),
        uniform=dict(loss=math.log(tokenizer.vocab_size), ppl=tokenizer.vocab_size,
                     bpb=math.log2(tokenizer.vocab_size)),
        loss_in_bits=perplexity["loss"] / math.log(2),
        fsdp_medium_4=medium["fsdp_bytes"][list(bench.WORLD_SIZES).index(4)],
        ns_flops_c_fc=newton_schulz_flops(c_fc), c_fc_shape=list(c_fc),
        gpt2_step_flops=gpt2["flops_per_token"] * 524288)


def recorded_runs_dir(folder, needed, option):
    """A folder of recorded runs as a Path: as given, else inside the repository, which ships
    them; a GuideError names every file of `needed` it lacks and `option`'s default folder."""
    folder = Path(folder)
    if not folder.is_absolute() and not folder.is_dir():
        folder = REPO_ROOT / folder
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        default = getattr(GuideConfig(), option)
        raise GuideError(f"--{option}={folder} lacks {', '.join(missing)}: point it at a folder of "
                         f"recorded runs such as {default}")
    return folder


LOGGED_PARAMS = re.compile(r"model: ([\d.]+)M parameters")  # train.py's line about the model it built


TOKENIZER_NAMES = {"char": "characters", "bpe": "learned BPE", "gpt2": "GPT-2 BPE"}


def experiment_of_run(run):
    """The tokenizer experiment's name for a recorded run: "bpe512-seed2" -> "bpe512"."""
    return run.split("-seed")[0]


def read_train_log(path):
    """What a train.py log says of its run: (the config it prints at the start, as a dict; the
    model's parameters in millions; tokens per iteration)."""
    text = Path(path).read_text(encoding="utf-8")
    config = {key: ast.literal_eval(value) for key, value in re.findall(r"(?m)^(\w+) += (.+)$", text)}
    params = LOGGED_PARAMS.search(text)
    tokens = re.search(r"([\d,]+) tokens per iteration", text)
    if not config or params is None or tokens is None:
        raise GuideError(f"{path} is not the output of a train.py run: it lacks the config, the "
                         "parameter count or the tokens per iteration")
    return config, float(params.group(1)), int(tokens.group(1).replace(",", ""))


def read_samples(path):
    """samples.txt: a header, then '=== name: command' lines, each followed by its sample.
    Returns {name: sample text}."""
    samples = {}
    for part in re.split(r"(?m)^=== ", Path(path).read_text(encoding="utf-8"))[1:]:
        first, _, text = part.partition("\n")
        samples[first.partition(":")[0]] = text.strip("\n")
    return samples


def tokenizer_results(folder):
    """Chapter 1: the recorded equal-time tokenizer experiment. The quick start's model and
    training time on tiny Shakespeare with five tokenizers, each run given the steps that its
    measured time per step fits into that time. The folder holds experiment.json (ms/step per
    tokenizer; every run's val bits per byte from train.py's evaluations, against training
    seconds = iteration x ms/step), perplexity.jsonl (eval.py perplexity --json of every run: the
    exact val bpb), datasets.json (the meta.json each run trained on), each run's metrics/NAME.jsonl
    and logs/NAME.log, and samples.txt. Returns dict(folder, rows: one per tokenizer, in the
    experiment's order) and the figure's curves ({run: [(seconds, val bpb)]})."""
    folder = recorded_runs_dir(folder, ("README.md", "experiment.json", "perplexity.jsonl", "datasets.json",
                                        "samples.txt"), "tokenizer_results_dir")
    experiment = json.loads((folder / "experiment.json").read_text(encoding="utf-8"))
    runs = list(experiment["curves"])  # "char", "char-seed2", ...: a tokenizer's runs, seed 1337 first
    recorded_runs_dir(folder, [f"metrics/{run}.jsonl" for run in runs] + [f"logs/{run}.log" for run in runs],
                      "tokenizer_results_dir")
    datasets = json.loads((folder / "datasets.json").read_text(encoding="utf-8"))
    exact = {}  # run -> eval.py perplexity's result
    for line in (folder / "perplexity.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        exact[record["config"]["out_dir"].removeprefix("out-tok-")] = record
    samples = read_samples(folder / "samples.txt")
    missing = [run for run in runs if run not in exact]
    missing += [name for name in experiment["ms_per_step"] if name not in samples]
    if missing:
        raise GuideError(f"{folder}: no exact val bpb (perplexity.jsonl) or no sample (samples.txt) "
                         f"for {', '.join(missing)}")

    rows = []
    for name, ms_per_step in experiment["ms_per_step"].items():
        seed_runs = [run for run in runs if experiment_of_run(run) == name]
        logs = [read_train_log(folder / "logs" / f"{run}.log") for run in seed_runs]
        config, params_m, tokens_per_iter = logs[0]
        _, eval_records = metrics.read_metrics(folder / "metrics" / f"{name}.jsonl")
        meta = datasets[config["dataset"]]
        first = exact[name]
        steps = eval_records[-1]["iter"]
        tokens_per_byte = first["tokens"] / first["bytes"]  # the val targets and the bytes they decode to
        rows.append(dict(
            name=name, tokenizer=TOKENIZER_NAMES[meta["tokenizer"]], dataset=config["dataset"],
            vocab_size=meta["vocab_size"], tokens_per_byte=tokens_per_byte, ms_per_step=ms_per_step,
            steps=steps, seconds=steps * ms_per_step / 1000, tokens_per_iter=tokens_per_iter,
            text_mb=steps * tokens_per_iter / tokens_per_byte / 1e6, block_size=config["block_size"],
            params_m=params_m, embedding_m=meta["vocab_size"] * config["n_embd"] / 1e6,
            bpb=[exact[run]["bpb"] for run in seed_runs], seeds=[log[0]["seed"] for log in logs],
            best_val_loss=min(r["val_loss"] for r in eval_records), sample=samples[name]))
    return dict(folder=shown_path(folder), rows=rows), experiment["curves"]


def optimizer_results(folder):
    """Chapter 4: the recorded side-by-side runs of the quick start with AdamW and with Muon,
    `python bench.py --mode=recipes --record_dir=FOLDER`: summary.json (bench.py's result: per
    recipe its command, steps, each run's wall time and best val loss) and every run's
    <recipe>-<n>/metrics.jsonl. Returns dict(folder, repeats, rows: one per recipe) and the
    figure's curves ({recipe: [dict(train=[(seconds, loss)], eval=[(seconds, val loss)])]})."""
    folder = recorded_runs_dir(folder, ("summary.json",), "optimizer_results_dir")
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    run_logs = {recipe: [folder / bench.recipe_run_name(recipe, n + 1) / metrics.METRICS_NAME
                         for n in range(len(row["runs"]))] for recipe, row in summary["recipes"].items()}
    recorded_runs_dir(folder, [str(path.relative_to(folder)) for paths in run_logs.values() for path in paths],
                      "optimizer_results_dir")
    rows, curves = [], {}
    for recipe, row in summary["recipes"].items():
        # What the recipe's config file sets, over train.py's defaults (as bench.py ran it).
        config_file = bench.recipe_file(recipe)
        config = parse_config(train.TrainConfig(), [str(config_file)] if config_file else [])
        curves[recipe] = []
        for path in run_logs[recipe]:
            train_records, eval_records = metrics.read_metrics(path)
            curves[recipe].append(dict(train=[(r["seconds"], r["loss"]) for r in train_records],
                                       eval=[(r["seconds"], r["val_loss"]) for r in eval_records]))
        # What Newton-Schulz would cost per step on this recipe's model (shapes only, on the meta
        # device), next to the model's own forward and backward on the recipe's batch.
        with torch.device("meta"):
            model = GPT(GPTConfig(n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd,
                                  block_size=config.block_size, vocab_size=65, bias=config.bias))
        matrices, _ = optim.split_parameters(model)
        rows.append(dict(recipe=recipe, name=Path(recipe).stem, command=row["command"], optimizer=config.optimizer,
                         n_layer=config.n_layer, n_embd=config.n_embd, matrices=len(matrices),
                         ns_gflop_per_step=sum(newton_schulz_flops(p.shape) for _, p in matrices) / 1e9,
                         steps=row["steps"], batch_size=config.batch_size, block_size=config.block_size,
                         learning_rate=config.learning_rate, beta2=config.beta2, warmup_iters=config.warmup_iters,
                         tokens=row["steps"] * config.batch_size * config.block_size,
                         seconds=[r["seconds"] for r in row["runs"]], median_seconds=row["median_seconds"],
                         best_val_loss=[r["best_val_loss"] for r in row["runs"]],
                         median_best_val_loss=row["median_best_val_loss"], lowest_val_loss=row["best_val_loss"],
                         model_gflop_per_step=model.flops_per_token() * config.batch_size * config.block_size / 1e9))
    return dict(folder=shown_path(folder), repeats=summary["repeats"], rows=rows, ns_steps=NS_STEPS), curves


# Newton-Schulz iterations per Muon step: torch.optim.Muon's default, which optim.py keeps.
NS_STEPS = inspect.signature(torch.optim.Muon).parameters["ns_steps"].default


def newton_schulz_flops(shape, steps=NS_STEPS):
    """FLOPs of Muon's Newton-Schulz iterations on one matrix. X is the matrix turned so that it
    is m x n with m <= n; each iteration computes A = X X^T (2 m^2 n), A A (2 m^3) and B X (2 m^2 n),
    whatever the batch size: a fixed cost per step."""
    m, n = sorted(shape)
    return steps * (4 * m * m * n + 2 * m ** 3)


# --------------------------------------------------------------------------------------------
# Figures (matplotlib, written as SVG so they stay sharp at any zoom)
# --------------------------------------------------------------------------------------------

class Figures:
    """Draws each figure into build_dir/figures/NAME.svg. Widths are the page's text width
    (6.7 in), so the fonts print at their real size when the PDF shows them at 100%."""

    WIDTH = 6.7

    def __init__(self, directory):
        import matplotlib
        matplotlib.use("Agg")  # files only, no window
        import matplotlib.pyplot as plt

        self.plt, self.directory = plt, Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        plt.rcParams.update({"font.size": 8.5, "axes.titlesize": 9, "axes.labelsize": 8.5,
                             "legend.fontsize": 8, "axes.spines.top": False, "axes.spines.right": False,
                             "svg.hashsalt": "guide", "svg.fonttype": "path"})

    def save(self, figure, name):
        figure.tight_layout()
        figure.savefig(self.directory / f"{name}.svg", metadata={"Date": None})
        self.plt.close(figure)

    def weight_norm(self):
        """Attention weights on a square-root colour scale: most are small, and a linear scale
        would show them all as the same dark blue."""
        from matplotlib.colors import PowerNorm

        return PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)

    def causal_mask(self, name):
        full = causal_mask(8, 0, "cpu").numpy()
        cached = causal_mask(3, 5, "cpu").numpy()
        figure, axes = self.plt.subplots(1, 2, figsize=(self.WIDTH, 2.9),
                                         gridspec_kw={"width_ratios": [8, 8]})
        for ax, mask, title, past in ((axes[0], full, "causal_mask(8, past=0)\ntraining, or a whole prompt", 0),
                                      (axes[1], np.vstack([np.zeros((5, 8), bool), cached]),
                                       "causal_mask(3, past=5)\n3 new tokens after 5 cached ones", 5)):
            shown = mask.astype(float)
            if past:
                shown[:past] = np.nan
            ax.imshow(shown, cmap="Blues", vmin=-0.3, vmax=1.2)
            for i in range(mask.shape[0]):
                for j in range(mask.shape[1]):
                    if not (past and i < past):
                        ax.text(j, i, "1" if mask[i, j] else "0", ha="center", va="center",
                                fontsize=7, color="white" if mask[i, j] else "0.35")
            ax.set_xticks(range(8))
            ax.set_yticks(range(8))
            ax.set_xlabel("key position j (what is looked at)")
            ax.set_ylabel("query position i (who looks)")
            ax.set_title(title)
        self.save(figure, name)

    def similarity(self, matrix, labels, name, title, axis_label=None):
        """A square matrix of cosine similarities, -1 (blue) to 1 (red)."""
        size = 4.4 if labels is not None else 3.0
        figure, ax = self.plt.subplots(figsize=(size + 0.9, size))
        image = ax.imshow(matrix.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, fontsize=5)
            ax.set_yticks(range(len(labels)), labels, fontsize=5)
        else:
            ax.set_xlabel(axis_label)
            ax.set_ylabel(axis_label)
        ax.set_title(title)
        figure.colorbar(image, ax=ax, fraction=0.04)
        self.save(figure, name)

    def attention_grid(self, maps, name):
        n_layer, n_head = len(maps), maps[0].size(0)
        layers = sorted(set(np.linspace(0, n_layer - 1, min(n_layer, 4)).round().astype(int).tolist()))
        heads = list(range(min(n_head, 6)))
        cell = min(1.0, (self.WIDTH - 0.4) / len(heads))
        width = cell * len(heads) + 0.4
        figure, axes = self.plt.subplots(len(layers), len(heads), squeeze=False,
                                         figsize=(width, cell * len(layers) + 0.3))
        for r, layer in enumerate(layers):
            for c, head in enumerate(heads):
                ax = axes[r][c]
                ax.imshow(maps[layer][head].numpy(), cmap="viridis", norm=self.weight_norm())
                ax.set_xticks([])
                ax.set_yticks([])
                for side in ax.spines.values():
                    side.set_visible(False)
                if r == 0:
                    ax.set_title(f"head {head + 1}", fontsize=8)
                if c == 0:
                    ax.set_ylabel(f"layer {layer + 1}", fontsize=8)
        self.save(figure, name)
        return dict(width=width / self.WIDTH, layers=[l + 1 for l in layers], heads=len(heads))

    def attention_head(self, weights, labels, title, name):
        figure, ax = self.plt.subplots(figsize=(self.WIDTH * 0.8, self.WIDTH * 0.62))
        image = ax.imshow(weights.numpy(), cmap="viridis", norm=self.weight_norm())
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("key (earlier token)")
        ax.set_ylabel("query (the token doing the looking)")
        ax.set_title(title)
        figure.colorbar(image, ax=ax, fraction=0.04, label="attention weight")
        self.save(figure, name)

    def init_depth(self, data, name):
        figure, ax = self.plt.subplots(figsize=(self.WIDTH * 0.75, 2.5))
        ax.plot(data["depths"], data["plain"], "o-", label="every Linear std 0.02")
        ax.plot(data["depths"], data["scaled"], "s-", label="residual projections std 0.02/sqrt(2 n_layer)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(data["depths"], [str(d) for d in data["depths"]])
        ax.set_xlabel("n_layer")
        ax.set_ylabel("std of the residual stream")
        ax.legend(frameon=False)
        self.save(figure, name)

    def lr_schedules(self, schedules, name):
        figure, axes = self.plt.subplots(1, 2, figsize=(self.WIDTH, 2.4))
        titles = {"quickstart": "quick start (train.py defaults)", "train_gpt2": "config/train_gpt2.py"}
        for ax, (key, s) in zip(axes, schedules.items()):
            ax.plot(s["steps"], s["lrs"], color="C0")
            ax.axvline(s["warmup_iters"], color="0.6", lw=0.8, ls="--")
            ax.set_title(titles[key])
            ax.set_xlabel("iteration")
            ax.set_ylabel("learning rate")
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        self.save(figure, name)

    def loss_curves(self, runs, name):
        figure, axes = self.plt.subplots(1, len(runs), figsize=(self.WIDTH, 2.6), squeeze=False)
        for ax, run in zip(axes[0], runs):
            train_records, eval_records = run["train"], run["eval"]
            if train_records:
                ax.plot([r["iter"] for r in train_records], [r["loss"] for r in train_records],
                        color="0.7", lw=0.8, label="training batch")
            ax.plot([r["iter"] for r in eval_records], [r["train_loss"] for r in eval_records], "o-",
                    ms=3, color="C0", label="train split (eval)")
            ax.plot([r["iter"] for r in eval_records], [r["val_loss"] for r in eval_records], "s-",
                    ms=3, color="C3", label="val split (eval)")
            if run.get("floor") is not None:
                ax.axhline(run["floor"], color="0.3", lw=0.8, ls=":")
            ax.set_title(run["title"])
            ax.set_xlabel("iteration")
            ax.set_ylabel("cross-entropy loss (nats)")
            ax.legend(frameon=False)
        self.save(figure, name)

    def memory(self, rows, world_sizes, activations, block_size, name):
        figure, (state, kept) = self.plt.subplots(1, 2, figsize=(self.WIDTH, 2.9),
                                                  gridspec_kw={"width_ratios": [2.3, 1]})
        x = np.arange(len(rows))
        series = [("DDP, any number of GPUs", [r["ddp_bytes"] for r in rows])]
        series += [(f"FSDP on {n} GPUs", [r["fsdp_bytes"][i] for r in rows])
                   for i, n in enumerate(world_sizes) if n > 1]
        width = 0.8 / len(series)
        for k, (label, values) in enumerate(series):
            state.bar(x + (k - (len(series) - 1) / 2) * width, np.array(values) / 1e9, width, label=label,
                      color="C3" if k == 0 else f"C{k - 1}")
        state.set_yscale("log")  # 0.25 to 25 GB: on a linear scale the small shards would vanish
        state.set_yticks([0.1, 1, 10, 100], ["0.1", "1", "10", "100"])
        # A card sold as "24 GB" holds 24 GiB (2^30 bytes each), 25.8 GB in the units used here.
        for gib, label in ((24, "24 GiB card"), (80, "80 GiB card")):
            state.axhline(gib * 2 ** 30 / 1e9, color="0.35", lw=0.8, ls="--")
            state.text(-0.45, gib * 2 ** 30 / 1e9 * 1.1, label, fontsize=7, color="0.35")
        state.set_ylim(0.1, 3000)  # room above the lines for the legend
        state.set_xticks(x, [r["name"] for r in rows])
        state.set_ylabel("model state per GPU (GB)")
        state.set_title("weights + gradients + AdamW moments (float32)")
        state.legend(frameon=False, fontsize=7, ncol=2, loc="upper right")

        names = [r["name"] for r in rows if r["name"] in activations]
        y = np.arange(len(names))
        for k, (kind, label, color) in enumerate((("plain", "kept in full", "C3"),
                                                  ("checkpointed", "checkpointed", "C0"))):
            kept.bar(y + (k - 0.5) * 0.38, [activations[n]["activation_bytes"][kind] / 1e9 for n in names],
                     0.38, label=label, color=color)
        kept.set_xticks(y, names, rotation=30, ha="right")
        kept.set_ylabel("GB")
        kept.set_title(f"activations, batch 1 x {block_size}")
        kept.legend(frameon=False, fontsize=7)
        self.save(figure, name)

    def tokenizer_curves(self, rows, curves, name):
        """Val bits per byte against training seconds, one colour per tokenizer; a second seed dashed."""
        figure, ax = self.plt.subplots(figsize=(self.WIDTH, 3.1))
        for i, row in enumerate(rows):
            label = f"{row['tokenizer']} ({row['vocab_size']:,})"
            for run, points in curves.items():
                if experiment_of_run(run) != row["name"]:
                    continue
                # The evaluation at step 0, before any training (4 to 6 bits per byte), is left
                # out: it would squeeze the part where the tokenizers differ.
                seconds, bpb = zip(*points[1:])
                first = run == row["name"]
                ax.plot(seconds, bpb, "o-" if first else "o--", ms=3 if first else 2, lw=1.4 if first else 0.9,
                        color=f"C{i}", alpha=1.0 if first else 0.55, label=label if first else None)
        ax.plot([], [], "o--", ms=2, lw=0.9, color="0.5", label="dashed: the same with seed 2")
        ax.set_xlim(0, max(seconds for points in curves.values() for seconds, _ in points) * 1.03)
        ax.set_xlabel("training time (s): iteration x the measured ms per step")
        ax.set_ylabel("val bits per byte")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, ncol=2)
        self.save(figure, name)

    def optimizer_curves(self, rows, curves, name):
        """Loss against wall-clock seconds, one colour per recipe: each run's training loss
        (averaged over 10 logged steps) as a line, its evaluations on the val split as dots."""
        figure, ax = self.plt.subplots(figsize=(self.WIDTH, 3.1))
        window = 10
        for i, row in enumerate(rows):
            runs = curves[row["recipe"]]
            for n, run in enumerate(runs):
                seconds, losses = zip(*run["train"])
                smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
                ax.plot(seconds[window - 1:], smooth, color=f"C{i}", lw=0.9, alpha=0.7,
                        label=f"{row['optimizer']} ({row['name']}): training loss" if n == 0 else None)
                # The evaluation at step 0 (loss ~4.2, before any training) is left out: it would
                # squeeze the part where the two differ.
                seconds, losses = zip(*run["eval"][1:])
                ax.plot(seconds, losses, "o", ms=4, color=f"C{i}", markeredgecolor="white", markeredgewidth=0.5,
                        label=f"{row['optimizer']}: val loss ({len(runs)} runs)" if n == 0 else None)
        ax.set_ylim(1.4, 2.4)
        ax.set_xlabel("seconds since the training loop started (evaluations included)")
        ax.set_ylabel("loss (nats per character)")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
        self.save(figure, name)

    def next_token(self, labels, probs, nucleus, name):
        figure, ax = self.plt.subplots(figsize=(self.WIDTH, 2.4))
        x = np.arange(len(labels))
        for offset, (t, p) in zip((-0.27, 0, 0.27), probs.items()):
            ax.bar(x + offset, p, width=0.27, label=f"temperature {t}")
        ax.set_xticks(x, labels)
        if nucleus < len(labels):  # top-p 0.9's cut falls among the tokens shown
            ax.axvline(nucleus - 0.5, color="0.3", lw=0.8, ls="--")
            ax.text(nucleus - 0.55, ax.get_ylim()[1] * 0.92, "top-p 0.9 keeps these", fontsize=7,
                    ha="right", color="0.3")
        ax.set_xlabel("the 12 likeliest next tokens (at temperature 1)")
        ax.set_ylabel("probability")
        ax.legend(frameon=False)
        self.save(figure, name)


# --------------------------------------------------------------------------------------------
# 4. Typesetting
# --------------------------------------------------------------------------------------------

def typeset(build_dir, output, guide_dir=None):
    """Copy the Typst sources next to data.json, listings.json and figures/, and compile."""
    import typst

    for path in Path(guide_dir or GUIDE_DIR).glob("*.typ"):
        shutil.copy(path, build_dir / path.name)
    try:
        _, warnings = typst.compile_with_warnings(str(build_dir / MAIN_FILE), output=str(output),
                                                  root=str(build_dir), ignore_system_fonts=True)
    except typst.TypstError as e:
        where = "; ".join(getattr(e, "trace", None) or [])
        raise GuideError(f"typst could not compile {build_dir / MAIN_FILE}: {e}" + (f" ({where})" if where else "")) from None
    return [str(w) for w in warnings]


def git_describe():
    """The commit the guide was built from ('+ changes' when the work tree differs), or ''."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + (" + local changes" if dirty else "")


def build(cfg):
    """Build the guide; returns a summary dict (output path, pages, seconds, warnings)."""
    start = time.perf_counter()
    log = lambda message: print(f"guide: {message}", file=sys.stderr, flush=True)
    sizes = dict(FULL_SIZES)
    if cfg.fast:
        sizes.update(FAST_SIZES)
    build_dir, output = Path(cfg.build_dir).resolve(), Path(cfg.output).resolve()  # relative to here, as train.py's out_dir

    # 1. listings first: a renamed function fails here, before any training.
    listings = collect_listings()
    build_dir.mkdir(parents=True, exist_ok=True)
    figures_dir = build_dir / "figures"
    shutil.rmtree(figures_dir, ignore_errors=True)
    (build_dir / "listings.json").write_text(json.dumps(listings, indent=1), encoding="utf-8")

    torch.set_num_threads(cfg.threads)
    cfg = dataclasses.replace(cfg, device=common.pick_device(cfg.device))

    timings = {}

    def timed(name, function, *args):
        t0 = time.perf_counter()
        value = function(*args)
        timings[name] = time.perf_counter() - t0
        return value

    # 2. the checkpoint
    ckpt_dir, origin = timed("checkpoint", get_checkpoint, cfg, build_dir, sizes, log)
    ckpt = checkpoint.load_checkpoint(ckpt_dir / checkpoint.CHECKPOINT_NAME)
    # The measurements run on the CPU, whatever trained the model: they are small.
    model, tokenizer, _ = checkpoint.load_model("resume", str(ckpt_dir), "cpu")
    run_config = ckpt.get("config", {})
    dataset = ckpt["meta"].get("name", run_config.get("dataset", "shakespeare_char"))
    with contextlib.redirect_stdout(io.StringIO()):
        dataset_dir = prepare.ensure_dataset(dataset, run_config.get("data_dir"))
    train_records, eval_records = metrics.read_metrics(ckpt_dir / metrics.METRICS_NAME)
    source = f"{shown_path(ckpt_dir / checkpoint.CHECKPOINT_NAME)} (iteration {ckpt['iter_num']}, dataset {dataset})"
    log(f"figures from {source}")

    # 3. measurements and figures
    fig = Figures(figures_dir)
    prompt = prompt_text(dataset_dir, tokenizer, 120)
    defaults = train.TrainConfig()
    quick_config = bench.model_config(bench.BenchConfig(preset="quickstart"))  # train.py's default model
    results = dict(
        build=dict(command="python guide.py" + (f" --ckpt_dir={cfg.ckpt_dir}" if cfg.ckpt_dir else "")
                   + (" --train=True" if cfg.train else "") + (" --fast=True" if cfg.fast else ""),
                   date=time.strftime("%Y-%m-%d"), commit=git_describe(), fast=cfg.fast,
                   python=platform.python_version(), torch=torch.__version__, device=cfg.device,
                   device_name=device_name(cfg.device),
                   threads=cfg.threads, platform=platform.machine()),
        run=dict(origin, source=source, ckpt_dir=shown_path(ckpt_dir), iter_num=ckpt["iter_num"],
                 best_val_loss=ckpt["best_val_loss"], dataset=dataset, tokenizer=tokenizer.name,
                 vocab_size=tokenizer.vocab_size, model_args=ckpt["model_args"],
                 params=model.get_num_params(non_embedding=False), config=run_config,
                 tokens_per_iter=run_config.get("gradient_accumulation_steps", 1) * run_config.get("batch_size", 0)
                 * run_config.get("block_size", 0),
                 first_eval=eval_records[0] if eval_records else None,
                 last_eval=eval_records[-1] if eval_records else None,
                 expected_init_loss=math.log(tokenizer.vocab_size),
                 step_ms=statistics.median(r["ms_per_iter"] for r in train_records[1:]) if len(train_records) > 1 else None),
        quickstart=dataclasses.asdict(defaults),
        sample_defaults=dataclasses.asdict(sample.SampleConfig()),
        prompt=prompt,
    )
    results["tokens"] = timed("tokens", token_data)
    tokenizer_runs, tokenizer_curves = timed("tokenizer results", tokenizer_results, cfg.tokenizer_results_dir)
    results["tokenizer_runs"] = tokenizer_runs
    fig.tokenizer_curves(tokenizer_runs["rows"], tokenizer_curves, "tokenizer_curves")
    optimizer_runs, optimizer_curves = timed("optimizer results", optimizer_results, cfg.optimizer_results_dir)
    results["optimizer_runs"] = optimizer_runs
    fig.optimizer_curves(optimizer_runs["rows"], optimizer_curves, "optimizer_curves")
    timed("causal mask figure", fig.causal_mask, "causal_mask")
    results["embeddings"] = timed("embeddings", embedding_data, model, tokenizer, fig)
    results["lessons"] = timed("lessons", lessons_data, model, tokenizer, prompt, cfg.seed)
    results["attention"] = timed("attention maps", attention_data, model, tokenizer, prompt, fig)
    results["scale"] = timed("softmax scale", scale_data, sizes["scale_trials"], cfg.seed)
    results["params"] = timed("parameter count", parameter_data, quick_config)
    results["init"] = timed("init depth", init_depth_data, sizes["depths"], cfg.seed)
    fig.init_depth(results["init"], "init_depth")
    results["lr"] = timed("lr schedule", lr_data, fig)
    results["accumulation"] = timed("accumulation", accumulation_data, cfg.seed)
    results["memory"] = timed("memory", memory_data, sizes, fig)
    results["next_token"] = timed("next token", next_token_data, model, tokenizer, prompt, fig)
    results["samples"] = timed("samples", sample_data, model, tokenizer, prompt, sizes["sample_tokens"], cfg.seed)
    results["kv_cache"] = timed("kv cache bench", kv_cache_data, sizes, cfg.device)
    results["perplexity"] = timed("perplexity", perplexity_data, model, dataset_dir, tokenizer, sizes["ppl_tokens"])
    results["perplexity"]["command"] = (f"python eval.py perplexity --out_dir={shown_path(ckpt_dir)} --dataset={dataset}"
                                        + (f" --max_tokens={sizes['ppl_tokens']}" if sizes["ppl_tokens"] else ""))
    results["nanogpt"] = timed("nanogpt side by side", nanogpt_results, cfg.nanogpt_results_dir)
    if eval_records:
        title = {"build": "the quick start, trained by this build", "quickstart": "the quick start (out/)",
                 "recorded": "the quick start (recorded)"}.get(origin["kind"], source.split(" (")[0])
        timed("loss curves", fig.loss_curves, [dict(title=title, train=train_records, eval=eval_records,
                                                     floor=math.log(tokenizer.vocab_size))], "loss_curves")
    results["has_run_curve"] = bool(eval_records)
    results["exercises"] = timed("exercise answers", exercise_answers, model, tokenizer, results)

    # 4. typeset
    results["timings"] = {k: round(v, 2) for k, v in timings.items()}
    results["build_seconds_before_typesetting"] = time.perf_counter() - start
    (build_dir / "data.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    warnings = typeset(build_dir, output)
    seconds = time.perf_counter() - start
    pages = pdf_pages(output)
    log(f"wrote {output} ({pages} pages) in {seconds:.1f} s" + (f"; typst warnings: {warnings}" if warnings else ""))
    return dict(output=str(output), pages=pages, seconds=seconds, warnings=warnings, build_dir=str(build_dir),
                listings=len(listings), timings=timings)


def device_name(device):
    """'CPU', or the GPU's name, for the text."""
    return bench.device_name(device) if device.startswith("cuda") else device.upper()


def pdf_pages(path):
    """Page count of a PDF, read from its page tree (no PDF library needed)."""
    counts = re.findall(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)", Path(path).read_bytes())
    return max((int(c) for c in counts), default=0)


def parse_args(argv):
    """The checked GuideConfig of a command line (--key=value options), before any work."""
    cfg = parse_config(GuideConfig(), argv, usage=__doc__)
    if cfg.threads < 1:
        raise common.ConfigError(f"threads must be at least 1, got {cfg.threads}")
    return cfg


def main(argv=None):
    """Parse the options and build; returns build()'s summary."""
    return build(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(common.run_command(main))
