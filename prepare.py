"""Make datasets: text and downloaded corpora become token files that training reads as they are.

    python prepare.py                          # shakespeare_char (the default: char-level, fast)
    python prepare.py shakespeare              # tiny Shakespeare with the GPT-2 tokenizer
    python prepare.py shakespeare --tokenizer=bpe --vocab_size=1024   # ... with BPE learned on it:
                                               # the dataset shakespeare_bpe1024
    python prepare.py fineweb10B --num_shards=2  # pre-tokenized FineWeb shards (~200 MB each)
    python prepare.py text --input=my.txt --tokenizer=gpt2 --name=mytext
    python prepare.py text --input=stories.txt --tokenizer=bpe --vocab_size=4096 --eot
    python prepare.py spelling                 # the built-in chat task, for finetuning the quick start
    python prepare.py chat --input=talks.jsonl --tokenizer_of=shakespeare_char --block_size=64
    python prepare.py dolly                    # databricks-dolly-15k, for finetuning GPT-2

This file holds the sources only: where the text comes from, how it is split and tokenized.
The file formats (train.bin/val.bin + meta.json, llm.c shards), their checks, and the reader
that training and evaluation use are in data.py.

Design choices:
- Text sources are split by position: the last 10% of the text is validation (with --eot, from
  the start of a document). A random split of a single text would leak near-duplicate lines
  into both sides.
- The char vocabulary is built from the whole text (train + val), so every val
  character can be encoded. Learned BPE merges come from the train split only: byte-level BPE
  encodes any val text anyway, and val stays text the whole pipeline has never seen.
- --eot: the text is documents separated by the string <|endoftext|>, which then becomes one
  token (bpe: its last id; gpt2: 50256) instead of 13 characters, as between GPT-2's documents.
- meta.json is deleted first and written last, so a folder with a meta.json is a complete
  dataset, even after a crash midway.
- Conversations (chat, spelling, dolly) are written with the tokenizer of the model they will
  finetune (--tokenizer_of: a prepared dataset's, or gpt2) plus the chat tokens (sft.py). The
  last 10% of a file's conversations are validation. A conversation longer than the context is
  an error naming its line in your own file; in the public dataset it is skipped and counted.
- databricks-dolly-15k (15,011 instructions and answers written by Databricks employees, CC BY-SA
  3.0: usable for any purpose with attribution, unlike Alpaca's non-commercial licence and
  machine-written answers) is downloaded from the Hugging Face dataset repo
  databricks/databricks-dolly-15k; its size is checked against the server's, and every line
  must parse, or nothing is written.
- FineWeb comes pre-tokenized with GPT-2 in llm.c's shard format from the Hugging Face dataset
  repo kjj0/fineweb10B-gpt2. Each shard is checked after download and deleted if bad, so a bad
  shard never reaches training.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import sft
from common import ConfigError, run_command
from common import write_atomic
from data import (SHAKESPEARE_BPE_NAME, DataError, ShardError, dataset_path, dtype_for_vocab, load_meta,
                  load_split, to_token_array, validate_shard, write_chat_split, write_meta)
from download import download, hf_url
from tokenizer import GPT2_EOT, GPT2_VOCAB_SIZE, BPETokenizer, CharTokenizer, GPT2Tokenizer, tokenizer_from_meta

REPO_ROOT = Path(__file__).resolve().parent
SHAKESPEARE_PATH = REPO_ROOT / "assets" / "tinyshakespeare.txt"
VAL_FRACTION = 0.1

FINEWEB_REPO = "kjj0/fineweb10B-gpt2"
DOLLY_REPO, DOLLY_FILE = "databricks/databricks-dolly-15k", "databricks-dolly-15k.jsonl"
FINEWEB_MAX_TRAIN_SHARDS = 103  # ~100M tokens each: 103 shards are the full 10B-token sample

# ----------------------------------------------------------------------------
# text sources: shakespeare_char, shakespeare, any text file


def split_text(text: str, val_fraction: float = VAL_FRACTION,
               separator: str | None = None) -> tuple[str, str]:
    """(train, val): val is the last val_fraction of the text. With a document separator, val
    starts right after the last separator that starts before the cut, so none is cut in two."""
    cut = int(len(text) * (1 - val_fraction))
    if separator and (start := text.rfind(separator, 0, cut + len(separator))) >= 0:
        cut = start + len(separator)
    return text[:cut], text[cut:]


def check_tokenizer_options(kind: str, vocab_size: int | None = None, eot: bool = False):
    """Refuse tokenizer options that cannot work together, before any text is read."""
    if kind not in ("char", "bpe", "gpt2"):
        raise ValueError(f"unknown tokenizer {kind!r}: choose 'char', 'bpe' or 'gpt2'")
    if kind == "bpe" and vocab_size is None:
        raise ConfigError("--tokenizer=bpe needs --vocab_size=N: 256 bytes + the merges to learn, e.g. 1024")
    if kind != "bpe" and vocab_size is not None:
        raise ConfigError(f"--vocab_size is for --tokenizer=bpe only: the {kind} tokenizer's vocabulary is fixed")
    if kind == "char" and eot:
        raise ConfigError("--eot needs a tokenizer with an end-of-text token: --tokenizer=bpe or gpt2")


def make_tokenizer(kind: str, text: str, train_text: str, vocab_size: int | None = None, eot: bool = False):
    """The tokenizer `kind` for this text: char from all of it, bpe learned from train_text."""
    check_tokenizer_options(kind, vocab_size, eot)
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "gpt2":
        return GPT2Tokenizer()
    start = time.perf_counter()
    tok = BPETokenizer.train(train_text, vocab_size, eot)
    print(f"learned {len(tok.merges):,} BPE merges from {len(train_text):,} characters "
          f"in {time.perf_counter() - start:.1f} s")
    return tok


def prepare_text(text: str, name: str, tokenizer: str = "char", data_dir=None, source: str = "",
                 vocab_size: int | None = None, eot: bool = False) -> Path:
    """Tokenize text into data_dir/name/{train.bin, val.bin, meta.json}; return that folder.
    vocab_size: for tokenizer="bpe". eot: <|endoftext|> in the text separates documents."""
    dataset_dir = dataset_path(name, data_dir)
    train_text, val_text = split_text(text, separator=GPT2_EOT if eot else None)
    if not train_text or not val_text:
        raise DataError(f"text for {name!r} is too short to split into train and val ({len(text)} characters)")
    tok = make_tokenizer(tokenizer, text, train_text, vocab_size, eot)
    dtype = dtype_for_vocab(tok.vocab_size)

    def encode(part):
        return tok.encode(part, allow_special=True) if eot else tok.encode(part)

    train_ids = to_token_array(encode(train_text), tok.vocab_size)
    val_ids = to_token_array(encode(val_text), tok.vocab_size)

    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / "meta.json").unlink(missing_ok=True)  # dataset is incomplete until meta.json is back
    write_atomic(dataset_dir / "train.bin", train_ids.tobytes())
    write_atomic(dataset_dir / "val.bin", val_ids.tobytes())
    meta = {
        "tokenizer": tok.name,
        "vocab_size": tok.vocab_size,
        "dtype": dtype.name,
        "format": "bin",
        "train_tokens": int(train_ids.size),
        "val_tokens": int(val_ids.size),
        "source": source,
    }
    if tok.name == "char":
        meta["chars"] = tok.chars
    if eot:
        meta["eot"] = True
    if tok.name == "bpe":
        meta.update(tok.meta())  # eot, and the merges with their sha256
    write_meta(dataset_dir, meta)
    print(f"{name}: {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens, "
          f"vocab {tok.vocab_size:,} ({tok.name}), {dtype.name} -> {dataset_dir}")
    return dataset_dir


def read_text_file(path) -> str:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input file {path} not found; give the path of a UTF-8 text file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e}); convert it first, e.g. `iconv -t UTF-8`") from None


def prepare_text_file(input_path, tokenizer: str = "char", name: str | None = None, data_dir=None,
                      vocab_size: int | None = None, eot: bool = False) -> Path:
    """prepare.py text: any UTF-8 file; the dataset name defaults to the file name without extension."""
    input_path = Path(input_path)
    return prepare_text(read_text_file(input_path), name or input_path.stem, tokenizer, data_dir,
                        source=str(input_path), vocab_size=vocab_size, eot=eot)


def prepare_shakespeare_char(data_dir=None) -> Path:
    """Tiny Shakespeare, one token per character (vocab 65). Takes about a second."""
    return prepare_text(read_text_file(SHAKESPEARE_PATH), "shakespeare_char", "char", data_dir,
                        source="assets/tinyshakespeare.txt")


def prepare_shakespeare(data_dir=None, tokenizer: str = "gpt2", vocab_size: int | None = None) -> Path:
    """Tiny Shakespeare with GPT-2's tokenizer (for fine-tuning GPT-2): the dataset "shakespeare";
    or with BPE learned from it (a few seconds): "shakespeare_bpe<vocab_size>"."""
    name = f"shakespeare_bpe{vocab_size}" if tokenizer == "bpe" else "shakespeare"
    return prepare_text(read_text_file(SHAKESPEARE_PATH), name, tokenizer, data_dir,
                        source="assets/tinyshakespeare.txt", vocab_size=vocab_size)


# ----------------------------------------------------------------------------
# llm.c token shards (FineWeb)


def fineweb_shard_names(num_shards: int) -> tuple[list[str], list[str]]:
    """(train shard names, val shard names). Train shards are numbered from 1; 0 is val."""
    train = [f"fineweb_train_{i:06d}.bin" for i in range(1, num_shards + 1)]
    return train, ["fineweb_val_000000.bin"]


def fetch_shard(filename: str, dataset_dir: Path) -> int:
    """Download one FineWeb shard (cached) and validate it; return its token count.

    A shard that fails validation is deleted, so training never sees it and a
    second run downloads it again.
    """
    path = download(hf_url(FINEWEB_REPO, filename, repo_type="dataset"), dataset_dir / filename)
    try:
        return validate_shard(path, GPT2_VOCAB_SIZE)
    except ShardError as e:
        path.unlink(missing_ok=True)
        raise ShardError(f"{e}. The shard was deleted; run the command again to re-download it") from None


def check_num_shards(num_shards: int):
    if not 1 <= num_shards <= FINEWEB_MAX_TRAIN_SHARDS:
        raise ConfigError(f"num_shards must be between 1 and {FINEWEB_MAX_TRAIN_SHARDS}, got {num_shards}")


def prepare_fineweb(num_shards: int = 1, data_dir=None, name: str = "fineweb10B") -> Path:
    """Download the val shard and the first num_shards train shards of FineWeb 10B (GPT-2 tokens)."""
    check_num_shards(num_shards)
    dataset_dir = dataset_path(name, data_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    train_shards, val_shards = fineweb_shard_names(num_shards)
    # val first: it is always needed, and the smallest check that the endpoint works.
    val_tokens = sum(fetch_shard(f, dataset_dir) for f in val_shards)
    train_tokens = sum(fetch_shard(f, dataset_dir) for f in train_shards)
    meta = {
        "tokenizer": "gpt2",
        "vocab_size": GPT2_VOCAB_SIZE,
        "dtype": "uint16",
        "format": "shards",
        "train_shards": train_shards,
        "val_shards": val_shards,
        "train_tokens": train_tokens,
        "val_tokens": val_tokens,
        "source": f"https://huggingface.co/datasets/{FINEWEB_REPO}",
    }
    write_meta(dataset_dir, meta)
    print(f"{name}: {train_tokens:,} train tokens in {num_shards} shard(s), {val_tokens:,} val tokens -> {dataset_dir}")
    return dataset_dir


# ----------------------------------------------------------------------------
# conversations, for supervised finetuning (the chat format is sft.py's)

TOKENIZER_FIELDS = ("tokenizer", "vocab_size", "chars", "merges", "merges_sha256", "eot")


def tokenizer_meta(tokenizer_of: str, data_dir=None) -> dict:
    """The tokenizer a model was trained with, as meta.json fields: "gpt2", or a prepared
    dataset's (the quick start's is shakespeare_char)."""
    if tokenizer_of == "gpt2":
        return {"tokenizer": "gpt2", "vocab_size": GPT2_VOCAB_SIZE}
    meta = load_meta(ensure_dataset(tokenizer_of, data_dir))
    if meta.get("chat_tokens"):
        raise ConfigError(f"--tokenizer_of={tokenizer_of} is a chat dataset; name the base model's dataset")
    return {k: meta[k] for k in TOKENIZER_FIELDS if k in meta}


def text_rows(dataset: str, count: int, length: int, data_dir=None, seed: int = 0) -> list:
    """count random windows of length tokens from a dataset's train split, each as an (ids, mask)
    row whose mask is all True: plain text, every token a target, as in pretraining."""
    tokens = np.concatenate([np.asarray(a) for a in load_split(ensure_dataset(dataset, data_dir), "train")])
    starts = np.random.default_rng(seed).integers(0, len(tokens) - length, count)
    return [(tokens[s:s + length].tolist(), [True] * length) for s in starts]


def prepare_chat(conversations, name, base_meta, block_size, data_dir, source, where, skip_long=False,
                 val_count=None, text_of=None, text_fraction=0.0) -> Path:
    """Render conversations with the base tokenizer plus the chat tokens and write a "chat"
    dataset: the last val_count are validation (default 10%, at least one). where(i) names
    conversation i in errors. text_fraction > 0 mixes windows of plain text from dataset text_of
    into the train split, that share of its rows (sft.py says why)."""
    if len(conversations) < 2:
        raise DataError(f"{source}: {len(conversations)} conversation(s); a train and a val split need 2 or more")
    tok = sft.ChatTokenizer(tokenizer_from_meta(base_meta))
    rendered, skipped = sft.render_all(tok, conversations, block_size, where, skip_long)
    cut = len(rendered) - (val_count or max(1, round(len(rendered) * VAL_FRACTION)))
    splits = {"train": rendered[:cut], "val": rendered[cut:]}
    if text_fraction > 0:  # replay: the base model's own kind of text, so it keeps its old skill
        count = round(len(splits["train"]) * text_fraction / (1 - text_fraction))
        splits["train"] += text_rows(text_of, count, block_size + 1, data_dir)
    dataset_dir = dataset_path(name, data_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / "meta.json").unlink(missing_ok=True)  # incomplete until meta.json is back
    for split, part in splits.items():
        write_chat_split(dataset_dir / f"{split}.npz", part, tok.vocab_size)
    meta = {**base_meta, "vocab_size": tok.vocab_size, "chat_tokens": list(sft.CHAT_TOKENS), "format": "chat",
            "dtype": dtype_for_vocab(tok.vocab_size).name, "block_size": block_size, "source": source,
            "conversations": {"train": cut, "val": len(rendered) - cut}, "skipped_too_long": skipped,
            "text_rows": len(splits["train"]) - cut, "text_of": text_of if text_fraction > 0 else None,
            **{f"{split}_tokens": sum(len(ids) for ids, _ in part) for split, part in splits.items()}}
    write_meta(dataset_dir, meta)
    mixed = f", {meta['text_rows']:,} windows of {text_of} mixed in" if meta["text_rows"] else ""
    print(f"{name}: {cut:,} train and {len(splits['val']):,} val conversations{mixed}"
          f"{f', {skipped:,} skipped as longer than {block_size + 1} tokens' if skipped else ''}, "
          f"vocab {tok.vocab_size:,} ({tok.name} + {len(sft.CHAT_TOKENS)} chat tokens) -> {dataset_dir}")
    return dataset_dir


def prepare_chat_file(input_path, tokenizer_of, block_size, name=None, data_dir=None,
                      text_fraction: float = 0.0) -> Path:
    """prepare.py chat: your own JSONL file of conversations; every one must fit the context.
    text_fraction mixes in plain text from the dataset tokenizer_of names."""
    input_path = Path(input_path)
    if not input_path.is_file():
        raise DataError(f"input file {input_path} not found; give a JSONL file, one conversation per line")
    lines, conversations = zip(*sft.read_conversations(input_path))
    if text_fraction > 0 and tokenizer_of == "gpt2":
        raise ConfigError("--text_fraction mixes in text of the dataset --tokenizer_of names: give a dataset, not gpt2")
    return prepare_chat(list(conversations), name or input_path.stem, tokenizer_meta(tokenizer_of, data_dir), block_size,
                        data_dir, str(input_path), lambda i: f"{input_path}, line {lines[i]}",
                        text_of=tokenizer_of, text_fraction=text_fraction)


def prepare_spelling(data_dir=None, block_size: int = 64, text_fraction: float = 0.5) -> Path:
    """The built-in task (sft.py): spell each word of tiny Shakespeare, in characters; half the
    train rows are windows of the quick start's own text (shakespeare_char)."""
    tasks = sft.spelling_conversations(read_text_file(SHAKESPEARE_PATH))
    where = lambda i: f"spelling task, conversation {i + 1}"  # noqa: E731
    return prepare_chat(tasks["train"] + tasks["val"], "spelling_char", tokenizer_meta("shakespeare_char", data_dir),
                        block_size, data_dir, "sft.spelling_conversations", where, val_count=len(tasks["val"]),
                        text_of="shakespeare_char", text_fraction=text_fraction)


def prepare_dolly(data_dir=None, block_size: int = 1024, name: str = "dolly") -> Path:
    """databricks-dolly-15k with GPT-2's tokenizer, for config/sft_gpt2_dolly.py: each record's
    instruction (and context, when it has one) is the user turn, its response the assistant's."""
    dataset_dir = dataset_path(name, data_dir)
    path = download(hf_url(DOLLY_REPO, DOLLY_FILE, repo_type="dataset"), dataset_dir / DOLLY_FILE)
    conversations = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
                user = record["instruction"].strip() + (f"\n\n{record['context'].strip()}" if record["context"].strip() else "")
                conversation = [{"role": "user", "content": user}, {"role": "assistant", "content": record["response"]}]
                sft.check_conversation(conversation)
            except (ValueError, KeyError, AttributeError, sft.ChatFormatError) as e:
                path.unlink()  # a damaged download: fetch it again next time
                raise DataError(f"{path}, line {n}: not a Dolly record ({e}); the file was deleted, "
                                "run the command again to download it again") from None
            conversations.append(conversation)
    return prepare_chat(conversations, name, tokenizer_meta("gpt2"), block_size, data_dir, hf_url(DOLLY_REPO, DOLLY_FILE,
                        repo_type="dataset"), lambda i: f"{DOLLY_FILE}, record {i + 1}", skip_long=True)


# ----------------------------------------------------------------------------
# what train.py and friends use


def ensure_dataset(name: str = "shakespeare_char", data_dir=None) -> Path:
    """Return data_dir/name, preparing it first if it is missing and cheap to make locally.

    shakespeare_char, shakespeare and shakespeare_bpe<N> are built from the vendored text in
    seconds; anything else (a download, or your own text) must be prepared explicitly.
    """
    dataset_dir = dataset_path(name, data_dir)
    if (dataset_dir / "meta.json").is_file():
        return dataset_dir
    if name == "shakespeare_char":
        return prepare_shakespeare_char(data_dir)
    if name == "shakespeare":
        return prepare_shakespeare(data_dir)
    if name == "spelling_char":
        return prepare_spelling(data_dir)
    shakespeare_bpe = SHAKESPEARE_BPE_NAME.fullmatch(name)
    if shakespeare_bpe:
        return prepare_shakespeare(data_dir, "bpe", int(shakespeare_bpe[1]))
    load_meta(dataset_dir)  # raises, naming the prepare.py command to run
    return dataset_dir


# ----------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Prepare a dataset under data/<name>/ (train/val tokens + meta.json). "
                    "With no command: shakespeare_char.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python prepare.py\n"
               "  python prepare.py shakespeare\n"
               "  python prepare.py shakespeare --tokenizer=bpe --vocab_size=1024   # -> shakespeare_bpe1024\n"
               "  python prepare.py fineweb10B --num_shards=2\n"
               "  python prepare.py text --input=my.txt --tokenizer=gpt2 --name=mytext\n"
               "  python prepare.py text --input=stories.txt --tokenizer=bpe --vocab_size=4096 --eot\n"
               "  python prepare.py spelling\n"
               "  python prepare.py chat --input=talks.jsonl --tokenizer_of=shakespeare_char --block_size=64\n"
               "  python prepare.py dolly",
    )
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--data_dir", default=None, help=f"where datasets go (default: {dataset_path('')})")
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.add_parser("shakespeare_char", parents=[shared], help="tiny Shakespeare, char-level (default)")
    vocab_size_help = "--tokenizer=bpe: the vocabulary to learn, 256 bytes + merges (e.g. 1024)"
    shakespeare = commands.add_parser("shakespeare", parents=[shared],
                                      help="tiny Shakespeare, GPT-2 tokens (or learned BPE: shakespeare_bpe<N>)")
    shakespeare.add_argument("--tokenizer", choices=["gpt2", "bpe"], default="gpt2", help="default: gpt2")
    shakespeare.add_argument("--vocab_size", type=int, default=None, help=vocab_size_help)
    fineweb = commands.add_parser("fineweb10B", parents=[shared], help="download FineWeb 10B GPT-2 shards")
    fineweb.add_argument("--num_shards", type=int, default=1,
                         help=f"train shards of ~100M tokens / 200 MB each, 1..{FINEWEB_MAX_TRAIN_SHARDS} (default 1)")
    text = commands.add_parser("text", parents=[shared], help="any UTF-8 text file")
    text.add_argument("--input", required=True, help="path of the text file")
    text.add_argument("--tokenizer", choices=["char", "bpe", "gpt2"], default="char", help="default: char")
    text.add_argument("--vocab_size", type=int, default=None, help=vocab_size_help)
    text.add_argument("--eot", action="store_true",
                      help="<|endoftext|> in the text separates documents: make it one token (bpe, gpt2)")
    text.add_argument("--name", default=None, help="dataset name (default: the file name without extension)")
    spelling = commands.add_parser("spelling", parents=[shared], help="the built-in chat task (spelling_char)")
    spelling.add_argument("--block_size", type=int, default=64, help="the context to fit (default 64)")
    text_fraction_help = "share of the train rows that are plain text of the base dataset, to keep its skill"
    spelling.add_argument("--text_fraction", type=float, default=0.5, help=text_fraction_help + " (default 0.5)")
    chat = commands.add_parser("chat", parents=[shared], help="a JSONL file of conversations, for finetuning")
    chat.add_argument("--input", required=True, help="path of the JSONL file: one conversation per line")
    chat.add_argument("--tokenizer_of", default="shakespeare_char",
                      help="the model's tokenizer: gpt2, or the dataset it was trained on (default shakespeare_char)")
    chat.add_argument("--block_size", type=int, default=64, help="the model's context: longer is an error (default 64)")
    chat.add_argument("--name", default=None, help="dataset name (default: the file name without extension)")
    chat.add_argument("--text_fraction", type=float, default=0.0, help=text_fraction_help + " (default 0)")
    dolly = commands.add_parser("dolly", parents=[shared], help="download databricks-dolly-15k, GPT-2 tokens")
    dolly.add_argument("--block_size", type=int, default=1024, help="longer conversations are skipped (default 1024)")
    return parser


def prepare(command: str, args: argparse.Namespace, data_dir) -> Path:
    if command == "shakespeare_char":
        return prepare_shakespeare_char(data_dir)
    if command == "shakespeare":
        return prepare_shakespeare(data_dir, args.tokenizer, args.vocab_size)
    if command == "fineweb10B":
        return prepare_fineweb(args.num_shards, data_dir)
    if command == "spelling":
        return prepare_spelling(data_dir, args.block_size, args.text_fraction)
    if command == "chat":
        return prepare_chat_file(args.input, args.tokenizer_of, args.block_size, args.name, data_dir, args.text_fraction)
    if command == "dolly":
        return prepare_dolly(data_dir, args.block_size)
    return prepare_text_file(args.input, args.tokenizer, args.name, data_dir, args.vocab_size, args.eot)


def parse_args(argv) -> argparse.Namespace:
    """The checked options of a command line, before any text is read or downloaded."""
    args = build_parser().parse_args(argv)
    args.command = args.command or "shakespeare_char"
    if args.command in ("shakespeare", "text"):
        check_tokenizer_options(args.tokenizer, args.vocab_size, getattr(args, "eot", False))
    if args.command == "fineweb10B":
        check_num_shards(args.num_shards)
    if getattr(args, "block_size", 1) < 1:
        raise ConfigError(f"--block_size must be at least 1, got {args.block_size}")
    if not 0 <= getattr(args, "text_fraction", 0) < 1:
        raise ConfigError(f"--text_fraction must be in [0, 1), got {args.text_fraction}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    prepare(args.command, args, getattr(args, "data_dir", None))  # only the sub-commands have --data_dir
    return 0


if __name__ == "__main__":
    # A missing input, a failed download, a bad shard: one line naming the fix, no traceback.
    sys.exit(run_command(main))
