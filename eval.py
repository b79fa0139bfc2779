"""
"Once the loss is low, how do you know the model is smart?" Two measurements beyond the
training loss:

    python eval.py perplexity --out_dir=out               # held-out perplexity of a checkpoint
    python eval.py perplexity --init_from=gpt2 --dataset=shakespeare
    python eval.py hellaswag --init_from=gpt2 [--limit=500]   # commonsense multiple choice
    python eval.py task --out_dir=out-spelling            # a chat model: exact match on a task

Perplexity = exp(mean cross-entropy) on text the model never trained on: "the model is as unsure
as if it picked uniformly among this many tokens". It is only comparable between models with
the same tokenizer, and a low number can still mean the model memorised the style, not the
meaning. Bits per byte (bpb, data.LossSums) is the same loss per byte of text instead of per
token: it compares models with any two tokenizers (characters, learned BPE, GPT-2's). Unlike
train.py's eval (random windows, a quick estimate), this reads the whole validation split once,
in consecutive windows, so both figures are exact and reproducible.

HellaSwag (Zellers et al., 2019) asks which of 4 endings continues a short everyday scene. It
is scored "completion style", as GPT-2's published figures in build-nanogpt and llm.c are: no
prompt or instructions, the model just reads context + ending and we compare how likely each
ending is. `acc` picks the ending with the lowest total loss; `acc_norm` the lowest loss per
token, which removes the bias towards short endings. Random guessing scores 0.25.

A task asks the question directly: give the model a prompt and score its answer. `task` reads
conversations (the built-in spelling task's held-out words, or any JSONL file of conversations
whose last assistant turn is the expected answer), answers each last user turn greedily, and
counts the exact matches (sft.exact_match). A base model, with no chat tokens yet, is given them
as finetuning would (sft.with_chat_tokens): its score is where finetuning starts.
"""

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch.nn import functional as F

from checkpoint import load_model
from common import ConfigError, autocast, pick_device, pick_dtype, run_command
from configurator import help_text, parse_config
from data import DataError, LossSums, consecutive_batches, dataset_path, load_meta, read_jsonl
from download import DownloadError, cache_dir, download
from hf import check_name_or_path
import sft
from tokenizer import tokenizer_from_meta

TASKS = ("perplexity", "hellaswag", "task")

# The official validation set (10,042 items) from the HellaSwag authors' repository. Override
# the base with HELLASWAG_BASE_URL to use a mirror.
HELLASWAG_BASE_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data"
HELLASWAG_FILE = "hellaswag_val.jsonl"


@dataclass
class EvalConfig:
    init_from: str = "resume"  # "resume" = out_dir/ckpt.pt; or gpt2, gpt2-medium, ... or a HF folder
    out_dir: str = "out"  # the training run to evaluate (with init_from="resume")
    dataset: str = "shakespeare_char"  # perplexity: which prepared dataset (data/<dataset>/)
    split: Literal["val", "train"] = "val"  # perplexity: which split of it
    max_tokens: Optional[int] = None  # perplexity: stop after this many tokens (None = all)
    limit: Optional[int] = None  # hellaswag, task: only the first N items (None = all)
    # task: 'spelling' (the built-in task's held-out words) or a JSONL file of conversations
    conversations: str = "spelling"
    batch_size: int = 8  # windows (perplexity) or items (hellaswag, 4 rows each) per forward
    device: str = "auto"  # 'auto' = cuda, then mps, then cpu; or e.g. 'cpu', 'cuda:1'
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # 'auto' = bfloat16 on recent GPUs, float32 on CPU
    json: bool = False  # print one JSON object with the results at the end


# --------------------------------------------------------------------------------------------
# Held-out perplexity
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def perplexity(model, batches, max_tokens=None, ctx=None, token_bytes=None):
    """
    Exact mean loss and perplexity over (x, y) batches, where targets of -1 are padding (not
    scored): data.consecutive_batches() gives every token of a split once. The loss is summed
    over tokens and divided once at the end, so each token counts the same whatever batch or
    window it fell in. Returns dict(loss, ppl, tokens), and with token_bytes (the bytes of text
    per id, data.BatchLoader.token_bytes) bits per byte over the same targets: bpb, bytes.
    """
    sums = LossSums(token_bytes)
    model.eval()
    for x, y in batches:
        with ctx or contextlib.nullcontext():  # no_grad is already on
            logits, _ = model(x)
        sums.add(logits, y)
        if max_tokens is not None and sums.tokens >= max_tokens:
            break
    if sums.tokens == 0:
        raise DataError("no tokens to evaluate: the split is empty or shorter than 2 tokens")
    result = dict(loss=sums.loss, ppl=math.exp(sums.loss), tokens=sums.tokens)
    if sums.num_bytes:
        result.update(bpb=sums.bits_per_byte, bytes=sums.num_bytes)
    return result


# --------------------------------------------------------------------------------------------
# HellaSwag
# --------------------------------------------------------------------------------------------

def hellaswag_path():
    """Download the official validation file once (cached) and check it; returns its path."""
    base = os.environ.get("HELLASWAG_BASE_URL", HELLASWAG_BASE_URL).rstrip("/")
    path = cache_dir() / "hellaswag" / HELLASWAG_FILE
    download(f"{base}/{HELLASWAG_FILE}", path)
    try:
        read_hellaswag(path)
    except DataError as e:
        path.unlink()  # never keep a damaged file in the cache: the next run downloads again
        raise DownloadError(f"{base}/{HELLASWAG_FILE}", str(e), "run the command again") from e
    return path


def read_hellaswag(path, limit=None):
    """The items of a HellaSwag JSONL file: dicts with 'ctx', 'endings' (4) and 'label'."""
    items = []
    for line_no, item in read_jsonl(path):
        if not {"ctx", "endings", "label"} <= item.keys() or len(item["endings"]) != 4:
            raise DataError(f"{path}, line {line_no}: a HellaSwag item needs 'ctx', "
                            f"4 'endings' and 'label'")
        items.append(item)
        if limit is not None and len(items) == limit:
            break
    return items


def render_item(item, tokenizer):
    """
    The 4 candidate rows of one item: context tokens followed by each ending's tokens, plus a
    mask that is 1 on the ending tokens (the only ones scored). The ending is encoded with a
    leading space, as it follows the context in running text (GPT-2 BPE folds the space into
    the next word's token).
    """
    ctx_tokens = tokenizer.encode(item["ctx"])
    rows, masks = [], []
    for ending in item["endings"]:
        end_tokens = tokenizer.encode(" " + ending)
        rows.append(ctx_tokens + end_tokens)
        masks.append([0] * len(ctx_tokens) + [1] * len(end_tokens))
    return rows, masks


@torch.no_grad()
def score_items(model, items, tokenizer, device="cpu", ctx=None):
    """
    Score a batch of items in one forward pass (4 rows each). Returns, per item, the total and
    the mean (per-token) loss of each ending: lists of 4 floats.
    """
    rows, masks = [], []
    for item in items:
        r, m = render_item(item, tokenizer)
        rows += r
        masks += m
    block = model.config.block_size
    # A row longer than the context keeps its end (the ending is at the end).
    rows, masks = [r[-block:] for r in rows], [m[-block:] for m in masks]
    width = max(len(r) for r in rows)
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width)
    for i, (r, m) in enumerate(zip(rows, masks)):
        tokens[i, :len(r)] = torch.tensor(r)
        mask[i, :len(m)] = torch.tensor(m, dtype=torch.float)
    tokens, mask = tokens.to(device), mask.to(device)
    with ctx or contextlib.nullcontext():  # no_grad is already on
        logits, _ = model(tokens)
    # Position t predicts token t+1: compare logits[:, :-1] with tokens[:, 1:].
    losses = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)),
                             tokens[:, 1:].reshape(-1), reduction="none").view(len(rows), -1)
    mask = mask[:, 1:]
    sum_loss = (losses * mask).sum(dim=1)
    mean_loss = sum_loss / mask.sum(dim=1)
    return sum_loss.view(-1, 4).tolist(), mean_loss.view(-1, 4).tolist()


def hellaswag(model, items, tokenizer, batch_size=8, device="cpu", ctx=None, progress=True):
    """Accuracy on HellaSwag items: dict(acc, acc_norm, n)."""
    model.eval()
    correct = correct_norm = 0
    start = time.time()
    for i in range(0, len(items), batch_size):
        batch = items[i:i + batch_size]
        sums, means = score_items(model, batch, tokenizer, device, ctx)
        for item, s, m in zip(batch, sums, means):
            label = int(item["label"])
            correct += int(min(range(4), key=s.__getitem__) == label)
            correct_norm += int(min(range(4), key=m.__getitem__) == label)
        if progress:
            done = i + len(batch)
            print(f"\rhellaswag {done}/{len(items)}  acc_norm {correct_norm / done:.4f}  "
                  f"({done / (time.time() - start):.1f} items/s)", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    n = len(items)
    return dict(acc=correct / n, acc_norm=correct_norm / n, n=n)


# --------------------------------------------------------------------------------------------

def task_conversations(name):
    """The conversations of eval.py task: the built-in task's held-out split, or a JSONL file."""
    if name == "spelling":
        from prepare import SHAKESPEARE_PATH, read_text_file  # here: only this task needs the text
        return sft.spelling_conversations(read_text_file(SHAKESPEARE_PATH))["val"]
    if not os.path.isfile(name):
        raise ConfigError(f"--conversations={name}: no such file; give 'spelling' or a JSONL file of conversations")
    return [conversation for _, conversation in sft.read_conversations(name)]


def chat_model(model, tokenizer):
    """A chat model as it is; a base model with the chat tokens added, as finetuning adds them."""
    if isinstance(tokenizer, sft.ChatTokenizer):
        return model, tokenizer
    print("the model has no chat tokens yet: adding them as finetuning does (sft.with_chat_tokens)",
          file=sys.stderr)
    tokenizer = sft.ChatTokenizer(tokenizer)
    return sft.with_chat_tokens(model, tokenizer.vocab_size).eval(), tokenizer


def parse_args(argv):
    """(task, the checked EvalConfig) of a command line, before any model is loaded."""
    if not argv or argv[0] in ("-h", "--help"):
        print(help_text(EvalConfig, usage=__doc__))  # the usage, then every option
        if argv:
            raise SystemExit(0)
    if not argv or argv[0] not in TASKS:
        given = f"unknown task {argv[0]!r}: " if argv else ""
        raise ConfigError(f"{given}the first argument must be the task: {' or '.join(TASKS)}, "
                          "e.g. python eval.py perplexity --out_dir=out")
    cfg = parse_config(EvalConfig(), argv[1:], usage=__doc__)
    if cfg.init_from != "resume":
        check_name_or_path(cfg.init_from)  # a misspelt GPT-2 name or a missing folder: one line
    for name in ("batch_size", "max_tokens", "limit"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    return argv[0], cfg


def main(argv=None):
    task, cfg = parse_args(sys.argv[1:] if argv is None else argv)
    device = pick_device(cfg.device)
    dtype = pick_dtype(device, cfg.dtype)
    ctx = autocast(device, dtype)
    model, tokenizer, source = load_model(cfg.init_from, cfg.out_dir, device)
    print(f"evaluating {source} on {device} ({dtype})", file=sys.stderr)

    if task == "perplexity":
        dataset_dir = dataset_path(cfg.dataset)
        # Token ids only mean the same thing under the same vocabulary: two character-level
        # datasets number their characters differently unless they have the very same set.
        data_tokenizer = tokenizer_from_meta(load_meta(dataset_dir))
        tokenizer = getattr(tokenizer, "base", tokenizer)  # a chat model reads its base model's text
        if (data_tokenizer.name != tokenizer.name  # a GPT-2 tokenizer has no chars: None == None
                or getattr(data_tokenizer, "chars", None) != getattr(tokenizer, "chars", None)
                or getattr(data_tokenizer, "merges", None) != getattr(tokenizer, "merges", None)
                or data_tokenizer.eot_token != tokenizer.eot_token):
            raise DataError(f"dataset {cfg.dataset!r} was tokenized with a {data_tokenizer.name} "
                            f"vocabulary of {data_tokenizer.vocab_size} tokens, not the model's "
                            f"({tokenizer.name}, {tokenizer.vocab_size} tokens): its token ids "
                            f"would mean other tokens to the model. "
                            + ("Prepare the text with --tokenizer=gpt2" if tokenizer.name == "gpt2"
                               else "Evaluate on the dataset the model was trained on"))
        batches = consecutive_batches(dataset_dir, cfg.split, model.config.block_size, cfg.batch_size, device)
        token_bytes = torch.tensor(data_tokenizer.byte_lengths(), device=device)
        result = perplexity(model, batches, cfg.max_tokens, ctx, token_bytes)
        print(f"{cfg.dataset} {cfg.split}: loss {result['loss']:.4f}, {result['bpb']:.4f} bits per byte, "
              f"perplexity {result['ppl']:.2f} over {result['tokens']:,} tokens ({result['bytes']:,} bytes)")
    elif task == "task":
        model, tokenizer = chat_model(model, tokenizer)
        conversations = task_conversations(cfg.conversations)[:cfg.limit]
        accuracy, answers = sft.exact_match(model, tokenizer, conversations)
        result = dict(accuracy=accuracy, correct=round(accuracy * len(answers)), n=len(answers),
                      conversations=cfg.conversations, wrong=[dict(prompt=p, expected=e, got=g)
                                                          for p, e, g in answers if e != g][:20])
        print(f"task {cfg.conversations}: exact match {accuracy:.4f} ({result['correct']} of {result['n']})")
    else:
        items = read_hellaswag(hellaswag_path(), cfg.limit)
        result = hellaswag(model, items, tokenizer, cfg.batch_size, device, ctx)
        print(f"hellaswag: acc {result['acc']:.4f}, acc_norm {result['acc_norm']:.4f} "
              f"over {result['n']} items")
    if cfg.json:
        print(json.dumps(dict(task=task, model=source, **result, config=dataclasses.asdict(cfg))))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
