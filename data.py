"""
Token files on disk, and the one reader that turns them into batches.

Every dataset is a folder `data/<name>/` holding a meta.json (which tokenizer, how many tokens,
which files) next to the tokens themselves, in one of two formats:

- "bin": train.bin and val.bin, each one raw little-endian token array: uint16 when every id
  fits (vocab_size <= 65536, true for GPT-2's 50257), else uint32. prepare.py writes these.
- "shards": llm.c's token files (a 256 x int32 header: magic 20240520, version 1, token count;
  then uint16 tokens), as FineWeb comes pre-tokenized. A split may be many shards.
- "chat": conversations for finetuning (sft.py renders them): train.npz and val.npz, each the
  conversations' token ids end to end ("ids"), a mask that is 1 on the tokens the assistant
  writes ("mask"), and where each conversation starts ("offsets", one more than there are).

What lives here:
  - writing and checking those files (`to_token_array`, `write_meta`, `write_shard`,
    `read_shard_header`, `validate_shard`), used by prepare.py;
  - `BatchLoader`, the reader: random windows of T + 1 tokens from a checkpointable generator
    (train.py, bench.py), fixed random batches for train.py's quick evaluations, and
    `consecutive_batches()`, every token of a split once, in order, for exact perplexity (eval.py,
    guide.py). Both open files through `open_split()` and read rows through `read_rows()`;
  - `ChatLoader`, the same interface for a "chat" dataset: random whole conversations, padded to
    the longest of the batch, each with its mask (`write_chat_split` writes them); `open_loader`
    picks the reader a dataset's format needs;
  - `load_split()`: a split's whole token arrays, for looking at small datasets (guide.py, tests);
  - `read_jsonl()`: the numbered records of a JSONL file (conversations, HellaSwag);
  - `LossSums`: an evaluation's mean loss per token and its loss per byte of text (bits per byte,
    which models with different tokenizers can share), both from one pass of per-token losses
    (`token_losses`), for train.py's evaluations and eval.py perplexity.

Design choices:
  - meta.json is JSON, never pickle: loading a pickle can run arbitrary code, and JSON is
    readable in any editor. prepare.py deletes it first and writes it last, so a folder with a
    meta.json is a complete dataset, even after a crash midway.
  - An id that does not fit the token dtype is an error; numpy's astype would silently wrap it.
  - Memory stays flat however long training runs: each batch opens the files, reads just its
    windows, and closes them (a np.memmap kept open for hours slowly maps every page it touches).
  - A window never crosses a file boundary: separate files are separate streams of documents.
  - Bits per byte leaves special tokens (<|endoftext|>) out of both of its sums, as nanochat does:
    they are no text, and a model that predicts a document boundary well is not better at text.
"""

import contextlib
import functools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from common import UserError, open_atomic, write_atomic
from tokenizer import TokenizerError, tokenizer_from_meta

DATA_DIR = Path(__file__).resolve().parent / "data"  # default home of all datasets

SHARD_MAGIC = 20240520  # llm.c's marker: "this is a token shard" (a date, in fact)
SHARD_VERSION = 1  # version 1 = uint16 tokens
SHARD_HEADER_INTS = 256
SHARD_HEADER_BYTES = SHARD_HEADER_INTS * 4


class DataError(UserError):
    """A dataset that is missing, damaged, or cannot be used as asked (e.g. shorter than a window)."""


class ShardError(DataError):
    """A token shard is malformed (wrong magic or version, truncated, or an id out of range)."""


# --------------------------------------------------------------------------------------------
# Writing token files
# --------------------------------------------------------------------------------------------

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


def write_meta(dataset_dir: Path, meta: dict) -> None:
    text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
    write_atomic(Path(dataset_dir) / "meta.json", text.encode("utf-8"))


def write_shard(path, tokens) -> None:
    """Write tokens (ids < 65536) as an llm.c shard: 256 x int32 header, then uint16 tokens."""
    tokens = to_token_array(tokens, 2**16)
    header = np.zeros(SHARD_HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, tokens.size
    write_atomic(Path(path), header.tobytes() + tokens.tobytes())


# --------------------------------------------------------------------------------------------
# Opening and checking a dataset
# --------------------------------------------------------------------------------------------

def dataset_path(name, data_dir=None) -> Path:
    """data_dir/name, with data_dir defaulting to data/ next to this file."""
    return Path(data_dir or DATA_DIR) / name


SHAKESPEARE_BPE_NAME = re.compile(r"shakespeare_bpe(\d+)")  # prepare.py shakespeare --tokenizer=bpe's datasets


def prepare_command(name: str, meta: dict | None = None) -> str:
    """The command that (re)creates dataset `name`, for error messages; a text dataset's meta.json,
    when there is one, adds its input file and tokenizer."""
    commands = {
        "shakespeare_char": "python prepare.py",
        "shakespeare": "python prepare.py shakespeare",
        "fineweb10B": "python prepare.py fineweb10B --num_shards=1",
    }
    shakespeare_bpe = SHAKESPEARE_BPE_NAME.fullmatch(name)
    if shakespeare_bpe:
        return f"python prepare.py shakespeare --tokenizer=bpe --vocab_size={shakespeare_bpe[1]}"
    if name in commands:
        return commands[name]
    meta = meta or {}
    options = f" --tokenizer={meta['tokenizer']}" if meta.get("tokenizer") in ("bpe", "gpt2") else ""
    options += f" --vocab_size={meta['vocab_size']}" if meta.get("tokenizer") == "bpe" else ""
    options += " --eot" if meta.get("eot") else ""
    return f"python prepare.py text --input={meta.get('source') or 'YOUR_FILE.txt'}{options} --name={name}"


def load_meta(dataset_dir) -> dict:
    """Read data/<name>/meta.json; a missing dataset names the prepare.py command that makes it."""
    dataset_dir = Path(dataset_dir)
    meta_path = dataset_dir / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"no prepared dataset at {dataset_dir} ({meta_path.name} is missing). "
                        f"Create it with: {prepare_command(dataset_dir.name)}")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("tokenizer") == "bpe":  # learned merges: ids made with other merges mean other text
        try:
            tokenizer_from_meta(meta)  # checks the merges against their sha256
        except TokenizerError as e:
            raise DataError(f"{meta_path}: {e}. Recreate the dataset with: "
                            f"{prepare_command(dataset_dir.name, meta)}") from None
    return meta


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


def validate_shard(path, vocab_size: int) -> int:
    """Check a shard's header, size and token ids; return its number of tokens."""
    tokens = read_shard(path)
    if tokens.size and int(tokens.max()) >= vocab_size:
        raise ShardError(f"{path} holds token id {int(tokens.max())}, outside the vocabulary of {vocab_size}")
    return int(tokens.size)


@dataclass
class TokenFile:
    path: Path
    header_bytes: int  # bytes before the first token (llm.c shards have a 1024-byte header)
    num_tokens: int
    dtype: np.dtype

    def tokens(self) -> np.memmap:
        """The whole file as a read-only array (mapped, not read: pages load as they are used)."""
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.header_bytes,
                         shape=(self.num_tokens,))


def open_split(dataset_dir, split, meta=None) -> list[TokenFile]:
    """The files of one split ("train" or "val"), each checked against its size."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    directory = Path(dataset_dir)
    meta = load_meta(directory) if meta is None else meta
    fix = f"recreate the dataset with: {prepare_command(directory.name, meta)}"
    if meta.get("format", "bin") == "shards":
        paths = [directory / name for name in meta[f"{split}_shards"]]
    else:
        paths = [directory / f"{split}.bin"]
    files = []
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path} is missing; {fix}")
        if meta.get("format", "bin") == "shards":
            num_tokens = read_shard_header(path)  # checks magic, version and size
            files.append(TokenFile(path, SHARD_HEADER_BYTES, num_tokens, np.dtype("<u2")))
        else:
            dtype = np.dtype(meta["dtype"]).newbyteorder("<")
            size = path.stat().st_size
            if size % dtype.itemsize:
                raise DataError(f"{path} is {size} bytes, not a whole number of {dtype.name} tokens: "
                                f"it is truncated; {fix}")
            files.append(TokenFile(path, 0, size // dtype.itemsize, dtype))
    return files


def load_split(dataset_dir, split) -> list[np.ndarray]:
    """The token arrays of one split, one read-only memmap per file: for looking at small data."""
    return [f.tokens() for f in open_split(dataset_dir, split)]


def read_rows(files, windows, length) -> torch.Tensor:
    """
    Read `length` tokens at each (file index, start) window -> (len(windows), length) int64.
    A window that runs past the end of its file is padded with -1 (consecutive_batches' last
    window); training windows always fit. Every file opened here is closed before returning.
    """
    rows = np.full((len(windows), length), -1, dtype=np.int64)
    with contextlib.ExitStack() as stack:
        handles = {}
        for row, (k, start) in enumerate(windows):
            token_file = files[k]
            if k not in handles:
                handles[k] = stack.enter_context(open(token_file.path, "rb"))
            f = handles[k]
            count = min(length, token_file.num_tokens - start)
            f.seek(token_file.header_bytes + start * token_file.dtype.itemsize)
            data = f.read(count * token_file.dtype.itemsize)
            if len(data) != count * token_file.dtype.itemsize:
                raise DataError(f"{token_file.path} is shorter than when it was opened; was it rewritten?")
            rows[row, :count] = np.frombuffer(data, dtype=token_file.dtype)
    return torch.from_numpy(rows)


def to_device(tensors, device):
    if device.startswith("cuda"):
        # Pinned (page-locked) memory lets the copy run asynchronously while the GPU works.
        return tuple(t.pin_memory().to(device, non_blocking=True) for t in tensors)
    return tuple(t.to(device) for t in tensors)


# --------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------

class BatchLoader:
    """
    Random windows of T + 1 tokens from a prepared dataset.

    next_windows() is the training stream: windows of T + 1 tokens (train.py makes the inputs and
    the targets of them). Its generator state is saved in checkpoints (state_dict), so a resumed
    run replays exactly the batches an uninterrupted one sees. Under
    DDP every rank draws the window offsets of *all* ranks from the same stream and keeps its own:
    ranks see different data, and together they see what one process with the same total batch
    would see. eval_windows() is separate and fixed, so evaluating never moves the stream.
    """

    def __init__(self, dataset_dir, batch_size, block_size, device="cpu", seed=1337,
                 rank=0, world_size=1):
        self.dataset_dir = Path(dataset_dir)
        self.batch_size, self.block_size = batch_size, block_size
        self.device = device
        self.rank, self.world_size = rank, world_size
        self.meta = load_meta(self.dataset_dir)  # names the prepare.py command if missing
        self.files = {split: open_split(self.dataset_dir, split, self.meta) for split in ("train", "val")}
        for split, files in self.files.items():
            self._check_long_enough(split, files)
        # A window starts anywhere in [0, n - T - 1] of a file of n tokens: n - T choices.
        self.windows_per_file = {split: np.array([max(0, f.num_tokens - block_size) for f in files])
                                 for split, files in self.files.items()}
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0  # training batches taken so far (the "data position", for humans)

    def _check_long_enough(self, split, files):
        # A window is T inputs plus one more token: the target of the last input.
        needed = self.block_size + 1
        if all(f.num_tokens < needed for f in files):
            longest = max((f.num_tokens for f in files), default=0)
            where = "has" if len(files) == 1 else "has no file longer than; its longest has"
            raise DataError(
                f"the {split} split of {self.dataset_dir} {where} {longest:,} tokens, but block_size="
                f"{self.block_size} needs at least {needed:,} (block_size inputs + 1 target). "
                f"Use a smaller --block_size or more text")

    def _draw(self, split, generator):
        """B random window positions as (file index, start) pairs."""
        counts = self.windows_per_file[split]
        ends = np.cumsum(counts)  # window index i lies in file k when ends[k-1] <= i < ends[k]
        picks = torch.randint(int(ends[-1]), (self.batch_size,), generator=generator).numpy()
        file_index = np.searchsorted(ends, picks, side="right")
        starts = picks - (ends[file_index] - counts[file_index])
        return list(zip(file_index.tolist(), starts.tolist()))

    def _read(self, split, windows):
        """The tokens of B windows, (B, T + 1) int64 on the device: T inputs and the next token."""
        return to_device((read_rows(self.files[split], windows, self.block_size + 1),), self.device)[0]

    def next_windows(self):
        """This rank's next B windows of the training stream, (B, T + 1) tokens each."""
        mine = None
        for rank in range(self.world_size):  # draw every rank's windows, keep our own
            windows = self._draw("train", self.generator)
            if rank == self.rank:
                mine = windows
        self.batches_drawn += 1
        return self._read("train", mine)

    def eval_windows(self, split, num_batches, seed=0):
        """num_batches fixed batches of a split's windows, (B, T + 1) each: the same ones on every
        call, on every rank."""
        generator = torch.Generator().manual_seed(seed)
        for _ in range(num_batches):
            yield self._read(split, self._draw(split, generator))

    @functools.cached_property  # built on first use: only evaluations need it
    def token_bytes(self) -> torch.Tensor:
        """(vocab_size,) int64 on the device: the bytes of text each id stands for (BitsPerByte)."""
        return torch.tensor(tokenizer_from_meta(self.meta).byte_lengths(), device=self.device)

    def state_dict(self):
        return {"generator": self.generator.get_state(), "batches_drawn": self.batches_drawn}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
        self.batches_drawn = state["batches_drawn"]


def write_chat_split(path, rendered, vocab_size) -> None:
    """Write one split of a chat dataset: rendered is a list of (ids, mask) conversations."""
    offsets = np.cumsum([0] + [len(ids) for ids, _ in rendered], dtype=np.int64)
    ids = to_token_array([i for ids, _ in rendered for i in ids], vocab_size)
    mask = np.array([m for _, mask in rendered for m in mask], dtype=np.uint8)
    with open_atomic(path) as f:  # all or nothing: a half-written split never loads
        np.savez(f, ids=ids, mask=mask, offsets=offsets)


class ChatLoader:
    """
    Batches of whole conversations from a "chat" dataset, with the same interface as BatchLoader.
    next_windows() returns (windows, mask): B random conversations, each as its tokens, padded
    with 0 up to the batch's longest (at most block_size + 1 tokens: the model reads block_size
    and predicts one more), and a mask that is True where a token is the assistant's to write,
    False on everything else and on the padding. train.inputs_and_targets turns every target
    the mask leaves out into -1, which the loss skips. One conversation per row, padded rather
    than packed: a row never attends across two conversations, and at this size the padding
    costs little. The generator is checkpointed, as BatchLoader's.
    """

    def __init__(self, dataset_dir, batch_size, block_size, device="cpu", seed=1337, rank=0, world_size=1):
        self.dataset_dir = Path(dataset_dir)
        self.batch_size, self.block_size, self.device = batch_size, block_size, device
        self.rank, self.world_size = rank, world_size
        self.meta = load_meta(self.dataset_dir)
        self.splits = {}
        for split in ("train", "val"):
            with np.load(self.dataset_dir / f"{split}.npz", allow_pickle=False) as f:  # never pickle
                self.splits[split] = (f["ids"], f["mask"].astype(bool), f["offsets"])
            lengths = np.diff(self.splits[split][2])
            if len(lengths) == 0 or lengths.max() > block_size + 1:
                longest = int(lengths.max()) if len(lengths) else 0
                raise DataError(f"the {split} split of {self.dataset_dir} has {len(lengths)} conversations, "
                                f"the longest {longest} tokens: block_size={block_size} needs at least one, "
                                f"none over {block_size + 1}; use --block_size={max(longest - 1, 1)} or more")
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0

    def _read(self, split, picks):
        ids, mask, offsets = self.splits[split]
        rows = [(ids[offsets[i]:offsets[i + 1]], mask[offsets[i]:offsets[i + 1]]) for i in picks]
        width = max(len(r) for r, _ in rows)
        windows = torch.zeros(len(rows), width, dtype=torch.long)
        learn = torch.zeros(len(rows), width, dtype=torch.bool)
        for k, (r, m) in enumerate(rows):
            windows[k, :len(r)] = torch.from_numpy(r.astype(np.int64))
            learn[k, :len(m)] = torch.from_numpy(m)
        return to_device((windows, learn), self.device)

    def _draw(self, split, generator):
        return torch.randint(len(self.splits[split][2]) - 1, (self.batch_size,), generator=generator).tolist()

    def next_windows(self):
        """This rank's next B conversations, (windows, mask), each (B, <= block_size + 1)."""
        picks = [self._draw("train", self.generator) for _ in range(self.world_size)][self.rank]
        self.batches_drawn += 1
        return self._read("train", picks)

    def eval_windows(self, split, num_batches, seed=0):
        generator = torch.Generator().manual_seed(seed)
        for _ in range(num_batches):
            yield self._read(split, self._draw(split, generator))

    token_bytes = BatchLoader.token_bytes
    state_dict, load_state_dict = BatchLoader.state_dict, BatchLoader.load_state_dict


def open_loader(dataset_dir, *args, **kwargs):
    """The reader a dataset's format needs: ChatLoader for "chat", else BatchLoader."""
    chat = load_meta(dataset_dir).get("format") == "chat"
    return (ChatLoader if chat else BatchLoader)(dataset_dir, *args, **kwargs)


def consecutive_batches(dataset_dir, split, block_size, batch_size, device="cpu"):
    """
    Every token of a split exactly once, for exact perplexity: consecutive, non-overlapping
    windows of block_size + 1 tokens (each predicts its last block_size tokens; a window's last
    token is the next one's first input). Yields (x, y), each (B, T); the last window of a file
    can be shorter, and its missing targets are -1, which cross_entropy's ignore_index skips.
    """
    files = open_split(dataset_dir, split)
    windows = [(k, start) for k, f in enumerate(files) for start in range(0, f.num_tokens - 1, block_size)]
    for i in range(0, len(windows), batch_size):
        tokens = read_rows(files, windows[i:i + batch_size], block_size + 1)
        # The padding of a short window must still be a valid id as an *input* (0 will do: the
        # positions it feeds are never scored); as a target it stays -1.
        x, y = tokens[:, :-1].clamp(min=0), tokens[:, 1:].contiguous()
        yield to_device((x, y), device)


# --------------------------------------------------------------------------------------------
# Evaluation: the loss per token and per byte, from one pass over the logits
# --------------------------------------------------------------------------------------------

def token_losses(logits, targets):
    """
    (B, T) cross-entropy of each target in nats, in float32; 0 where the target is -1 (padding).
    One sequence at a time: the float32 copy of the logits (and softmax's) then exists for one row
    at a time, not for the whole batch. At GPT-2's evaluation shape (32 x 1024 x 50,257) a whole
    batch's would be 6.6 GB each, beside the 3.3 GB of the bfloat16 logits themselves.
    """
    return torch.stack([F.cross_entropy(row.float(), row_targets, ignore_index=-1, reduction="none")
                        for row, row_targets in zip(logits, targets)])


def read_jsonl(path, error=DataError):
    """Yield (line number, value) for each non-blank line of a JSONL file (one JSON value a line);
    a line that is not JSON raises `error` naming the file and the line, as the records' own
    checks do, so a user finds the line to fix."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    raise error(f"{path}, line {n}: not JSON ({e.msg})") from None


class LossSums:
    """
    Sums over any number of batches, from which both evaluation figures follow:
    - `loss`: the mean cross-entropy per target token (nats), every target but padding (-1);
    - `bits_per_byte`: (sum of the targets' losses in nats) / (UTF-8 bytes those targets decode to
      x ln 2). The loss per token depends on how much text a token holds (a character, or a whole
      word), so only models with the same tokenizer can compare it; bits per byte compares any
      two. For characters of ASCII text (one byte each) it is the mean loss / ln 2. Targets that
      are no text count in neither of its sums: padding and special tokens such as <|endoftext|>
      (0 bytes in token_bytes).
    Each batch's per-token losses are computed once (token_losses) and both figures read them.
    """

    def __init__(self, token_bytes: torch.Tensor | None = None):
        self.token_bytes = token_bytes  # (vocab_size,): bytes per id (BatchLoader.token_bytes), or None
        self.nats, self.tokens = 0.0, 0  # every target's
        self.text_nats, self.num_bytes = 0.0, 0  # the targets that are text

    def add(self, logits, targets):
        """logits (B, T, vocab_size) and targets (B, T) of one batch."""
        losses = token_losses(logits, targets)  # (B, T)
        self.nats += losses.sum().item()
        self.tokens += int((targets >= 0).sum().item())
        if self.token_bytes is not None:
            num_bytes = torch.where(targets >= 0, self.token_bytes[targets.clamp(min=0)], 0)  # (B, T)
            self.text_nats += losses[num_bytes > 0].sum().item()
            self.num_bytes += int(num_bytes.sum().item())

    @property
    def loss(self) -> float:
        """Mean loss per target token so far; NaN before any."""
        return self.nats / self.tokens if self.tokens else float("nan")

    @property
    def bits_per_byte(self) -> float:
        """Bits per byte so far; NaN before any byte of text was scored."""
        return self.text_nats / (math.log(2) * self.num_bytes) if self.num_bytes else float("nan")
