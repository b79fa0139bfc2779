"""Make datasets: text and downloaded corpora become token files that training reads as they are.

    python prepare.py                          # shakespeare_char (the default: char-level, fast)
    python prepare.py shakespeare              # tiny Shakespeare with the GPT-2 tokenizer
    python prepare.py shakespeare --tokenizer=bpe --vocab_size=1024   # ... with BPE learned on it:
                                               # the dataset shakespeare_bpe1024
    python prepare.py fineweb10B --num_shards=2  # pre-tokenized FineWeb shards (~200 MB each)
    python prepare.py text --input=my.txt --tokenizer=gpt2 --name=mytext
    python prepare.py text --input=stories.txt --tokenizer=bpe --vocab_size=4096 --eot

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
- FineWeb comes pre-tokenized with GPT-2 in llm.c's shard format from the Hugging Face dataset
  repo kjj0/fineweb10B-gpt2. Each shard is checked after download and deleted if bad, so a bad
  shard never reaches training.
"""

import argparse
import sys
import time
from pathlib import Path

from common import ConfigError, run_command
from common import write_atomic
from data import (SHAKESPEARE_BPE_NAME, DataError, ShardError, dataset_path, dtype_for_vocab, load_meta,
                  to_token_array, validate_shard, write_meta)
from download import download, hf_url
from tokenizer import GPT2_EOT, GPT2_VOCAB_SIZE, BPETokenizer, CharTokenizer, GPT2Tokenizer

REPO_ROOT = Path(__file__).resolve().parent
SHAKESPEARE_PATH = REPO_ROOT / "assets" / "tinyshakespeare.txt"
VAL_FRACTION = 0.1

FINEWEB_REPO = "kjj0/fineweb10B-gpt2"
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
               "  python prepare.py text --input=stories.txt --tokenizer=bpe --vocab_size=4096 --eot",
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
    return parser


def prepare(command: str, args: argparse.Namespace, data_dir) -> Path:
    if command == "shakespeare_char":
        return prepare_shakespeare_char(data_dir)
    if command == "shakespeare":
        return prepare_shakespeare(data_dir, args.tokenizer, args.vocab_size)
    if command == "fineweb10B":
        return prepare_fineweb(args.num_shards, data_dir)
    return prepare_text_file(args.input, args.tokenizer, args.name, data_dir, args.vocab_size, args.eot)


def parse_args(argv) -> argparse.Namespace:
    """The checked options of a command line, before any text is read or downloaded."""
    args = build_parser().parse_args(argv)
    args.command = args.command or "shakespeare_char"
    if args.command in ("shakespeare", "text"):
        check_tokenizer_options(args.tokenizer, args.vocab_size, getattr(args, "eot", False))
    if args.command == "fineweb10B":
        check_num_shards(args.num_shards)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    prepare(args.command, args, getattr(args, "data_dir", None))  # only the sub-commands have --data_dir
    return 0


if __name__ == "__main__":
    # A missing input, a failed download, a bad shard: one line naming the fix, no traceback.
    sys.exit(run_command(main))
