"""Turn text into token files that training can read without any parsing.

    python prepare.py                          # shakespeare_char (the default: char-level, fast)
    python prepare.py shakespeare              # tiny Shakespeare with the GPT-2 tokenizer
    python prepare.py fineweb10B --num_shards=2  # pre-tokenized FineWeb shards (~200 MB each)
    python prepare.py text --input=my.txt --tokenizer=gpt2 --name=mytext

Every dataset is a folder `data/<name>/` holding a meta.json (what tokenizer,
how many tokens, which files) next to the tokens themselves.

Design choices:
- Tokens are stored as a raw little-endian array: uint16 when every id fits
  (vocab_size <= 65536, true for GPT-2's 50257), else uint32. Training reads them
  with np.memmap, so a 20 GB dataset costs no RAM and no load time. An id that
  does not fit is an error; numpy's astype would silently wrap it around.
- Text sources are split by position: the last 10% of the text is validation.
  A random split of a single text would leak near-duplicate lines into both sides.
- The char vocabulary is built from the whole text (train + val), so every val
  character can be encoded.
- meta.json is JSON, never pickle: loading a pickle can run arbitrary code, and
  JSON is readable in any editor. It is deleted first and written last, so a
  folder with a meta.json is a complete dataset, even after a crash midway.
- FineWeb comes pre-tokenized with GPT-2 in llm.c's shard format (a 256 x int32
  header: magic 20240520, version 1, token count; then uint16 tokens) from the
  Hugging Face dataset repo kjj0/fineweb10B-gpt2. Each shard is checked after
  download and deleted if bad, so a bad shard never reaches training.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from download import DownloadError, download, hf_url
from tokenizer import GPT2_VOCAB_SIZE, CharTokenizer, GPT2Tokenizer

REPO_ROOT = Path(__file__).resolve().parent
DATA_DIR = REPO_ROOT / "data"  # default home of all datasets; every function takes data_dir to override it
SHAKESPEARE_PATH = REPO_ROOT / "assets" / "tinyshakespeare.txt"
VAL_FRACTION = 0.1

FINEWEB_REPO = "kjj0/fineweb10B-gpt2"
FINEWEB_MAX_TRAIN_SHARDS = 103  # ~100M tokens each: 103 shards are the full 10B-token sample
SHARD_MAGIC = 20240520  # llm.c's marker: "this is a token shard" (a date, in fact)
SHARD_VERSION = 1  # version 1 = uint16 tokens
SHARD_HEADER_INTS = 256
SHARD_HEADER_BYTES = SHARD_HEADER_INTS * 4


class ShardError(ValueError):
    """A token shard is malformed (wrong magic or version, or truncated)."""


# ----------------------------------------------------------------------------
# token arrays


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds every id in range(vocab_size), little-endian."""
    if vocab_size <= 2**16:
        return np.dtype("<u2")  # half the disk and memory bandwidth of uint32
    if vocab_size <= 2**32:
        return np.dtype("<u4")
    raise ValueError(f"vocab_size {vocab_size} does not fit in uint32")


def to_token_array(ids, vocab_size: int) -> np.ndarray:
    """ids -> array of the smallest dtype for vocab_size; an id outside [0, vocab_size) is an error."""
    ids = np.asarray(ids, dtype=np.int64)
    dtype = dtype_for_vocab(vocab_size)
    bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
    if bad.size:
        first = int(bad[0])
        raise ValueError(
            f"token id {int(ids[first])} at position {first} is outside the vocabulary [0, {vocab_size}) "
            f"({bad.size} bad id(s)); storing it as {dtype.name} would corrupt the data"
        )
    return ids.astype(dtype)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file, then rename: readers never see a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------
# metadata


def prepare_command(name: str) -> str:
    """The command that (re)creates dataset `name`, for error messages."""
    commands = {
        "shakespeare_char": "python prepare.py",
        "shakespeare": "python prepare.py shakespeare",
        "fineweb10B": "python prepare.py fineweb10B --num_shards=1",
    }
    return commands.get(name, f"python prepare.py text --input=YOUR_FILE.txt --name={name}")


def write_meta(dataset_dir: Path, meta: dict) -> None:
    _write_atomic(dataset_dir / "meta.json", (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def load_meta(dataset_dir) -> dict:
    """Read data/<name>/meta.json; a missing dataset names the prepare.py command that makes it."""
    dataset_dir = Path(dataset_dir)
    meta_path = dataset_dir / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"no prepared dataset at {dataset_dir} ({meta_path.name} is missing). "
            f"Create it with: {prepare_command(dataset_dir.name)}"
        )
    return json.loads(meta_path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------
# text sources: shakespeare_char, shakespeare, any text file


def split_text(text: str, val_fraction: float = VAL_FRACTION) -> tuple[str, str]:
    """(train, val): val is the last val_fraction of the text."""
    cut = int(len(text) * (1 - val_fraction))
    return text[:cut], text[cut:]


def make_tokenizer(kind: str, text: str):
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "gpt2":
        return GPT2Tokenizer()
    raise ValueError(f"unknown tokenizer {kind!r}: choose 'char' or 'gpt2'")


def prepare_text(text: str, name: str, tokenizer: str = "char", data_dir=None, source: str = "") -> Path:
    """Tokenize text into data_dir/name/{train.bin, val.bin, meta.json}; return that folder."""
    dataset_dir = Path(data_dir or DATA_DIR) / name
    train_text, val_text = split_text(text)
    if not train_text or not val_text:
        raise ValueError(f"text for {name!r} is too short to split into train and val ({len(text)} characters)")
    tok = make_tokenizer(tokenizer, text)
    dtype = dtype_for_vocab(tok.vocab_size)
    train_ids = to_token_array(tok.encode(train_text), tok.vocab_size)
    val_ids = to_token_array(tok.encode(val_text), tok.vocab_size)

    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / "meta.json").unlink(missing_ok=True)  # dataset is incomplete until meta.json is back
    _write_atomic(dataset_dir / "train.bin", train_ids.tobytes())
    _write_atomic(dataset_dir / "val.bin", val_ids.tobytes())
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
    write_meta(dataset_dir, meta)
    print(f"{name}: {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens, "
          f"vocab {tok.vocab_size:,} ({tok.name}), {dtype.name} -> {dataset_dir}")
    return dataset_dir


def read_text_file(path) -> str:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} not found")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e}); convert it first, e.g. `iconv -t UTF-8`") from None


def prepare_text_file(input_path, tokenizer: str = "char", name: str | None = None, data_dir=None) -> Path:
    """prepare.py text: any UTF-8 file; the dataset name defaults to the file name without extension."""
    input_path = Path(input_path)
    return prepare_text(read_text_file(input_path), name or input_path.stem, tokenizer, data_dir, source=str(input_path))


def prepare_shakespeare_char(data_dir=None) -> Path:
    """Tiny Shakespeare, one token per character (vocab 65). Takes about a second."""
    return prepare_text(read_text_file(SHAKESPEARE_PATH), "shakespeare_char", "char", data_dir,
                        source="assets/tinyshakespeare.txt")


def prepare_shakespeare(data_dir=None) -> Path:
    """Tiny Shakespeare with GPT-2's tokenizer (for fine-tuning GPT-2)."""
    return prepare_text(read_text_file(SHAKESPEARE_PATH), "shakespeare", "gpt2", data_dir,
                        source="assets/tinyshakespeare.txt")


# ----------------------------------------------------------------------------
# llm.c token shards (FineWeb)


def write_shard(path, tokens) -> None:
    """Write tokens (ids < 65536) as an llm.c shard: 256 x int32 header, then uint16 tokens."""
    tokens = to_token_array(tokens, 2**16)
    header = np.zeros(SHARD_HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, tokens.size
    _write_atomic(Path(path), header.tobytes() + tokens.tobytes())


def read_shard_header(path) -> int:
    """Validate an llm.c shard's header against its file size; return its number of tokens."""
    path = Path(path)
    file_size = path.stat().st_size
    if file_size < SHARD_HEADER_BYTES:
        raise ShardError(f"{path} is {file_size} bytes, too small to hold a {SHARD_HEADER_BYTES}-byte shard header")
    header = np.fromfile(path, dtype="<i4", count=SHARD_HEADER_INTS)
    if header[0] != SHARD_MAGIC:
        raise ShardError(f"{path} is not a token shard (magic {header[0]}, expected {SHARD_MAGIC})")
    if header[1] != SHARD_VERSION:
        raise ShardError(f"{path} has shard version {header[1]}, this code reads version {SHARD_VERSION}")
    num_tokens = int(header[2])
    expected_size = SHARD_HEADER_BYTES + 2 * num_tokens  # 2 bytes per uint16 token
    if file_size != expected_size:
        raise ShardError(
            f"{path} is truncated or corrupt: its header says {num_tokens:,} tokens "
            f"({expected_size:,} bytes) but the file has {file_size:,} bytes"
        )
    return num_tokens


def read_shard(path) -> np.memmap:
    """The tokens of an llm.c shard as a read-only uint16 memmap (header validated first)."""
    num_tokens = read_shard_header(path)
    return np.memmap(path, dtype="<u2", mode="r", offset=SHARD_HEADER_BYTES, shape=(num_tokens,))


def fineweb_shard_names(num_shards: int) -> tuple[list[str], list[str]]:
    """(train shard names, val shard names). Train shards are numbered from 1; 0 is val."""
    train = [f"fineweb_train_{i:06d}.bin" for i in range(1, num_shards + 1)]
    return train, ["fineweb_val_000000.bin"]


def validate_shard(path, vocab_size: int = GPT2_VOCAB_SIZE) -> int:
    """Check a shard's header, size and token ids; return its number of tokens."""
    tokens = read_shard(path)
    if tokens.size and int(tokens.max()) >= vocab_size:
        raise ShardError(f"{path} holds token id {int(tokens.max())}, outside the vocabulary of {vocab_size}")
    return int(tokens.size)


def fetch_shard(filename: str, dataset_dir: Path) -> int:
    """Download one FineWeb shard (cached) and validate it; return its token count.

    A shard that fails validation is deleted, so training never sees it and a
    second run downloads it again.
    """
    path = download(hf_url(FINEWEB_REPO, filename, repo_type="dataset"), dataset_dir / filename)
    try:
        return validate_shard(path)
    except ShardError as e:
        path.unlink(missing_ok=True)
        raise ShardError(f"{e}. The shard was deleted; run the command again to re-download it") from None


def prepare_fineweb(num_shards: int = 1, data_dir=None, name: str = "fineweb10B") -> Path:
    """Download the val shard and the first num_shards train shards of FineWeb 10B (GPT-2 tokens)."""
    if not 1 <= num_shards <= FINEWEB_MAX_TRAIN_SHARDS:
        raise ValueError(f"num_shards must be between 1 and {FINEWEB_MAX_TRAIN_SHARDS}, got {num_shards}")
    dataset_dir = Path(data_dir or DATA_DIR) / name
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


def load_split(dataset_dir, split: str) -> list[np.ndarray]:
    """The token arrays of one split ("train" or "val"), one read-only memmap per file.

    A "bin" dataset has one file per split; a "shards" dataset has one per shard.
    Returning a list either way lets a batch loader treat both the same.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    dataset_dir = Path(dataset_dir)
    meta = load_meta(dataset_dir)
    if meta["format"] == "shards":
        return [read_shard(dataset_dir / f) for f in meta[f"{split}_shards"]]
    path = dataset_dir / f"{split}.bin"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; recreate the dataset with: {prepare_command(dataset_dir.name)}")
    return [np.memmap(path, dtype=np.dtype(meta["dtype"]).newbyteorder("<"), mode="r")]


def ensure_dataset(name: str = "shakespeare_char", data_dir=None) -> Path:
    """Return data_dir/name, preparing it first if it is missing and cheap to make locally.

    shakespeare_char and shakespeare are built from the vendored text in seconds;
    anything else (a download, or your own text) must be prepared explicitly.
    """
    dataset_dir = Path(data_dir or DATA_DIR) / name
    if (dataset_dir / "meta.json").is_file():
        return dataset_dir
    if name == "shakespeare_char":
        return prepare_shakespeare_char(data_dir)
    if name == "shakespeare":
        return prepare_shakespeare(data_dir)
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
               "  python prepare.py fineweb10B --num_shards=2\n"
               "  python prepare.py text --input=my.txt --tokenizer=gpt2 --name=mytext",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data_dir", default=None, help=f"where datasets go (default: {DATA_DIR})")
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.add_parser("shakespeare_char", parents=[common], help="tiny Shakespeare, char-level (default)")
    commands.add_parser("shakespeare", parents=[common], help="tiny Shakespeare, GPT-2 tokens")
    fineweb = commands.add_parser("fineweb10B", parents=[common], help="download FineWeb 10B GPT-2 shards")
    fineweb.add_argument("--num_shards", type=int, default=1,
                         help=f"train shards of ~100M tokens / 200 MB each, 1..{FINEWEB_MAX_TRAIN_SHARDS} (default 1)")
    text = commands.add_parser("text", parents=[common], help="any UTF-8 text file")
    text.add_argument("--input", required=True, help="path of the text file")
    text.add_argument("--tokenizer", choices=["char", "gpt2"], default="char", help="default: char")
    text.add_argument("--name", default=None, help="dataset name (default: the file name without extension)")
    return parser


def run_command(command: str, args: argparse.Namespace, data_dir) -> Path:
    if command == "shakespeare_char":
        return prepare_shakespeare_char(data_dir)
    if command == "shakespeare":
        return prepare_shakespeare(data_dir)
    if command == "fineweb10B":
        return prepare_fineweb(args.num_shards, data_dir)
    return prepare_text_file(args.input, args.tokenizer, args.name, data_dir)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "shakespeare_char"
    data_dir = getattr(args, "data_dir", None)  # only the sub-commands have --data_dir
    try:
        run_command(command, args, data_dir)
    except (DownloadError, ShardError, ValueError, FileNotFoundError) as e:
        # Expected failures get one clear line, not a traceback.
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
