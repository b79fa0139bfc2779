"""Tokenizers: text <-> list of integer ids.

Three tokenizers, with the same small interface (`encode`, `decode`, `vocab_size`,
`eot_token`, `name`, and `byte_lengths()`, the bytes of text behind each id, for bits per byte):

- `CharTokenizer`: one id per distinct character of the training text. Tiny
  vocabulary (65 for Shakespeare), so a small model learns fast; used by the
  `shakespeare_char` dataset.
- `BPETokenizer`: byte-level BPE with merges we learn here (`train_bpe`) from a dataset's
  train split, at any vocabulary size: `python prepare.py shakespeare --tokenizer=bpe
  --vocab_size=1024` makes the dataset `shakespeare_bpe1024`.
- `GPT2Tokenizer`: GPT-2's byte-level BPE (50257 ids), the same algorithm with the 50,000
  merges OpenAI learned, needed to load and fine-tune the published GPT-2 weights.

Byte-level BPE (byte pair encoding) in one paragraph: GPT-2's regex first splits text into
chunks (a word with its leading space, a number, a run of punctuation or of spaces); every
chunk starts as its UTF-8 bytes, so 256 base tokens encode any text and no character is ever
unknown; then, over and over, the most frequent adjacent pair of tokens becomes a new token,
until the vocabulary has the size asked for. A merge never crosses a chunk boundary.

Design choices:
- `train_bpe`, with `count_chunks` (its first step), is the only BPE code written here, to be
  read top to bottom. Encoding and decoding run in `tiktoken` (fast, written in Rust, well
  kept), from an Encoding built from the learned merges: the merged tokens' ranks are their
  ids, so it applies them in order.
- The trainer counts pairs over the *distinct* chunks, each weighted by how often it occurs
  (tiny Shakespeare's 267k chunks are 14k distinct ones), and after a merge it recounts only
  the chunks that held the merged pair: 4,096 tokens take seconds, not hours.
- Ties: of equally frequent pairs, the one that appears first in the text (as merged so far)
  wins. tiktoken's reference trainer (tiktoken._educational) breaks ties the same way, so
  test_tokenizer.py compares the two merge for merge.
- The learned merges are plain data in the dataset's meta.json (no pickle), one merge a line
  in the text form of GPT-2's vocab.bpe ("Ġt he": printable stand-ins for bytes, Ġ for the
  space), with their sha256 to refuse edited ones. A checkpoint copies meta.json, so it
  carries its tokenizer and sample.py/eval.py need no dataset folder.
- GPT-2's tokenizer: `tiktoken.get_encoding("gpt2")` downloads two files the first time it
  runs; we vendor those files in `assets/gpt2/` instead, check their sha256 (the same hashes
  tiktoken checks), and build the identical Encoding offline.

`tokenizer_from_meta(meta)` rebuilds the tokenizer a dataset was made with from its
meta.json, so sampling decodes with exactly the vocabulary training used.

    python tokenizer.py --vocab_size 1024 4096   # figures: training time, tokens per byte
"""

import argparse
import collections
import functools
import hashlib
import heapq
import json
import sys
import time
from pathlib import Path

import regex  # the `re` that understands \p{L} (any letter); tiktoken depends on it too
import tiktoken

from common import UserError, run_command

GPT2_ASSETS_DIR = Path(__file__).resolve().parent / "assets" / "gpt2"
# The same hashes tiktoken checks for these files (tiktoken_ext/openai_public.py).
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
# GPT-2's pre-tokenizer: text is first split into chunks (contractions, runs of
# letters, of digits, of other symbols, of spaces), then BPE merges run inside each
# chunk only, so a token never spans e.g. a word and the punctuation after it.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT2_EOT = "<|endoftext|>"
GPT2_EOT_ID = 50256  # the last id: GPT-2 puts it between documents
GPT2_VOCAB_SIZE = 50257  # 256 bytes + 50000 merges + <|endoftext|>


class TokenizerError(UserError):
    """Text the tokenizer cannot encode, a vocabulary size it cannot have, or tokenizer files or
    merges that are missing or altered."""


# ----------------------------------------------------------------------------
# Characters


def unknown_characters(unknown, vocab_size):
    """CharTokenizer.encode's error: which characters it has no id for, and the fix."""
    shown = ", ".join(repr(c) for c in sorted(unknown)[:20])
    more = f" (and {len(unknown) - 20} more)" if len(unknown) > 20 else ""
    return (f"{len(unknown)} character(s) not in this {vocab_size}-character vocabulary: {shown}{more}. "
            "A character tokenizer only knows the characters of the text it was built from; "
            "remove them, or prepare a dataset that contains them")


class CharTokenizer:
    """One id per character; the vocabulary is the list of characters, in id order."""

    name = "char"
    eot_token = None  # character-level text has no end-of-document token

    def __init__(self, chars):
        chars = list(chars)
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("CharTokenizer needs a list of single characters")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer characters must be distinct")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}  # string -> id
        self.vocab_size = len(chars)

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """Vocabulary = every distinct character of text, sorted (so ids are reproducible)."""
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        unknown = set(text) - self.stoi.keys()
        if unknown:  # only the characters of the text the vocabulary was built from have an id
            raise TokenizerError(unknown_characters(unknown, self.vocab_size))
        return [self.stoi[c] for c in text]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        bad = sorted({i for i in ids if not 0 <= i < self.vocab_size})
        if bad:
            raise ValueError(f"ids out of range for a {self.vocab_size}-character vocabulary: {bad[:20]}")
        return "".join(self.chars[i] for i in ids)

    def byte_lengths(self) -> list[int]:
        """UTF-8 bytes of each id's character: 1 for ASCII, 2 for "é", 4 for most emoji."""
        return [len(c.encode("utf-8")) for c in self.chars]


# ----------------------------------------------------------------------------
# Byte-level BPE: learning the merges


def count_chunks(text: str, eot: bool = False) -> collections.Counter:
    """BPE's pre-tokenization: GPT-2's pattern splits the text into chunks (a word with its
    leading space, a run of digits, of punctuation or of spaces), and merges happen inside chunks
    only. Returns {chunk: how often it occurs}. With eot the text is documents separated by
    <|endoftext|>, and the separator is in no chunk. A Counter keeps its keys in order of first
    appearance, which is what train_bpe's tie-break needs."""
    chunker = regex.compile(GPT2_PATTERN)
    documents = text.split(GPT2_EOT) if eot else [text]
    return collections.Counter(chunk for doc in documents for chunk in chunker.findall(doc))


def train_bpe(text: str, vocab_size: int, eot: bool = False) -> list[tuple[bytes, bytes]]:
    """
    Learn byte-level BPE from text: the merges (left token's bytes, right token's bytes), in the
    order learned. Ids: 0-255 are the bytes, 256 + k is merges[k] (left + right joined), and with
    eot, the last id (vocab_size - 1) is <|endoftext|>: the text is then documents separated by
    that string, and no chunk, so no merge, spans two documents.

    Ties: of equally frequent pairs, the one whose first appearance in the text (as merged so far)
    comes first wins, as in tiktoken's reference trainer.
    """
    num_merges = vocab_size - 256 - int(eot)
    if num_merges < 0:
        raise TokenizerError(f"vocab_size={vocab_size} is too small: byte-level BPE starts from the 256 "
                             f"bytes{' and <|endoftext|>' if eot else ''}; "
                             f"use --vocab_size={256 + int(eot)} or more")

    # 1. Pre-tokenize: split the text into chunks and count the distinct ones.
    chunk_counts = count_chunks(text, eot)
    chunks = [list(chunk.encode("utf-8")) for chunk in chunk_counts]  # each distinct chunk as token ids
    counts = list(chunk_counts.values())  # how often each occurs in the text

    # 2. Count adjacent pairs, each distinct chunk once, times its count; and remember which
    #    chunks hold each pair, so that a merge revisits only those.
    pair_counts = collections.Counter()
    chunks_with = collections.defaultdict(set)  # pair -> indices of the chunks that hold it
    for i, chunk in enumerate(chunks):
        for pair in zip(chunk, chunk[1:]):
            pair_counts[pair] += counts[i]
            chunks_with[pair].add(i)
    # The most frequent pair, fast: a heap of (-count, pair). When a count changes we push the
    # new one and leave the old entry in place; _pop_most_frequent skips entries gone stale.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    # 3. Merge, one new token at a time.
    token_bytes = [bytes([b]) for b in range(256)]  # id -> the bytes it stands for
    merges = []
    while len(merges) < num_merges:
        pair = _pop_most_frequent(heap, pair_counts, chunks, chunks_with)
        if pair is None:
            raise TokenizerError(
                f"vocab_size={vocab_size} is more than this text can give: after {len(merges)} merges every "
                f"chunk is a single token; use --vocab_size={len(token_bytes) + int(eot)} or less, "
                "or more text")
        left, right = token_bytes[pair[0]], token_bytes[pair[1]]
        merges.append((left, right))
        new_id = len(token_bytes)
        token_bytes.append(left + right)
        for i in list(chunks_with[pair]):  # a copy: the updates change the set
            before, after = chunks[i], merge_pair(chunks[i], pair, new_id)
            _update_pair_counts(i, before, after, counts[i], pair_counts, chunks_with, heap)
            chunks[i] = after
        del chunks_with[pair]  # every occurrence is merged: the pair is gone from the text
    return merges


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """ids with every occurrence of pair replaced by new_id, left to right ("aaa" -> "Xa")."""
    merged, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


def _update_pair_counts(i, before, after, count, pair_counts, chunks_with, heap):
    """Chunk i (occurring count times) went from `before` to `after`: move the pair counts."""
    old, new = collections.Counter(zip(before, before[1:])), collections.Counter(zip(after, after[1:]))
    for pair in old.keys() | new.keys():
        change = (new[pair] - old[pair]) * count
        if change == 0:  # a pair away from the merge: unchanged
            continue
        pair_counts[pair] += change
        if pair_counts[pair] > 0:
            heapq.heappush(heap, (-pair_counts[pair], pair))
        else:
            del pair_counts[pair]
        if not old[pair]:
            chunks_with[pair].add(i)  # a new neighbour of the merged token
        elif not new[pair]:
            chunks_with[pair].discard(i)


def _pop_most_frequent(heap, pair_counts, chunks, chunks_with):
    """The most frequent pair (None if there is none left); of equally frequent pairs, the one
    that appears first in the text. The others tied with it go back on the heap."""
    best_count, tied = 0, set()
    while heap:
        count, pair = -heap[0][0], heap[0][1]
        if count != pair_counts.get(pair, 0):
            heapq.heappop(heap)  # stale: the pair's count has changed since this entry was pushed
        elif count < best_count:
            break
        else:
            best_count = count
            tied.add(heapq.heappop(heap)[1])
    if not tied:
        return None

    def first_appearance(pair):
        # Chunks are numbered in order of first appearance, so the first chunk holding the pair
        # holds its first appearance in the text; then its leftmost position there.
        i = min(chunks_with[pair])
        return i, next(j for j in range(len(chunks[i]) - 1) if (chunks[i][j], chunks[i][j + 1]) == pair)

    winner = min(tied, key=first_appearance)
    for pair in tied - {winner}:
        heapq.heappush(heap, (-best_count, pair))
    return winner


# ----------------------------------------------------------------------------
# Byte-level BPE: encoding with the learned merges (in tiktoken), and GPT-2's


class _TiktokenTokenizer:
    """What BPETokenizer and GPT2Tokenizer share: encoding and decoding by a tiktoken Encoding."""

    encoding: tiktoken.Encoding
    eot_token: int | None

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """By default "<|endoftext|>" in text is encoded as plain characters, so a document
        cannot inject a document boundary; allow_special=True maps it to eot_token."""
        if allow_special:
            return self.encoding.encode(text, allowed_special="all")
        return self.encoding.encode_ordinary(text)

    def decode(self, ids) -> str:
        # A token can end in the middle of a multi-byte character (e.g. an emoji split
        # across tokens); "replace" shows that as U+FFFD instead of failing.
        return self.encoding.decode([int(i) for i in ids], errors="replace")

    def byte_lengths(self) -> list[int]:
        """The bytes of text each id stands for; 0 for <|endoftext|>, which is no text."""
        return [0 if i == self.eot_token else len(self.encoding.decode_single_token_bytes(i))
                for i in range(self.vocab_size)]


class BPETokenizer(_TiktokenTokenizer):
    """Byte-level BPE with merges learned by train_bpe, encoded and decoded by tiktoken."""

    name = "bpe"

    def __init__(self, merges: list[tuple[bytes, bytes]], eot: bool = False):
        # tiktoken's "mergeable ranks": every token's bytes -> its id, which is also its merge
        # priority (lower merges first): the 256 bytes, then each merge in the order learned.
        ranks = {bytes([b]): b for b in range(256)}
        for left, right in merges:
            if left not in ranks or right not in ranks or left + right in ranks:
                raise TokenizerError(f"BPE merge {merges_to_lines([(left, right)])[0]!r} does not join two "
                                     "earlier tokens into a new one: the merges are damaged")
            ranks[left + right] = len(ranks)
        self.merges = list(merges)
        self.eot_token = len(ranks) if eot else None  # after the merges, as GPT-2's 50256
        self.vocab_size = len(ranks) + int(eot)
        self.encoding = tiktoken.Encoding(
            name=f"bpe{self.vocab_size}",
            pat_str=GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={GPT2_EOT: self.eot_token} if eot else {},
            explicit_n_vocab=self.vocab_size,  # tiktoken checks that the ids are 0 .. vocab_size - 1
        )

    @classmethod
    def train(cls, text: str, vocab_size: int, eot: bool = False) -> "BPETokenizer":
        return cls(train_bpe(text, vocab_size, eot), eot)

    def meta(self) -> dict:
        """What meta.json records of this tokenizer (tokenizer_from_meta reads it back)."""
        lines = merges_to_lines(self.merges)
        return {"eot": self.eot_token is not None, "merges_sha256": _sha256_of_lines(lines), "merges": lines}

    @classmethod
    def from_meta(cls, meta: dict) -> "BPETokenizer":
        lines = meta.get("merges")
        if not isinstance(lines, list) or "merges_sha256" not in meta:
            raise TokenizerError("meta.json of a bpe dataset has no 'merges' list or no 'merges_sha256': "
                                 "without its merges its token ids cannot be decoded")
        if _sha256_of_lines(lines) != meta["merges_sha256"]:
            raise TokenizerError("the BPE merges in meta.json do not match their sha256 (merges_sha256): "
                                 "they were edited or damaged, and the token ids would decode to other text")
        return cls(merges_from_lines(lines), eot=meta.get("eot", False))


@functools.cache
def _byte_stand_ins() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte, as in its vocab.bpe.

    A token is a sequence of *bytes*, and some bytes (space, newline, control bytes) would be
    invisible or ambiguous in a text file. So each byte gets one printable character: printable
    bytes (except space) stand for themselves; the other 68 bytes are shown as chr(256),
    chr(257), ... in byte order. E.g. "Ġ" (chr(288)) stands for the space byte, "Ċ" for newline.
    """
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def _to_stand_ins(token: bytes) -> str:
    return "".join(_byte_stand_ins()[b] for b in token)


def _from_stand_ins(text: str) -> bytes:
    byte_of = {stand_in: b for b, stand_in in _byte_stand_ins().items()}
    try:
        return bytes(byte_of[ch] for ch in text)
    except KeyError as e:
        raise TokenizerError(f"{text!r} holds {e.args[0]!r}, which stands for no byte: "
                             "the merges are damaged") from None


def merges_to_lines(merges) -> list[str]:
    """Merges as GPT-2's vocab.bpe writes them: "left right" in stand-ins, e.g. "Ġt he" (b" t" + b"he")."""
    return [f"{_to_stand_ins(left)} {_to_stand_ins(right)}" for left, right in merges]


def merges_from_lines(lines) -> list[tuple[bytes, bytes]]:
    """The inverse of merges_to_lines. A stand-in is never a space, so one space splits a line."""
    pairs = [line.split(" ") for line in lines]
    if any(len(pair) != 2 for pair in pairs):
        raise TokenizerError("a BPE merge line must be two tokens separated by one space: the merges are damaged")
    return [(_from_stand_ins(left), _from_stand_ins(right)) for left, right in pairs]


def _sha256_of_lines(lines) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _read_verified(path: Path, expected_sha256: str) -> bytes:
    """Read a vendored file and make sure it is the file we think it is."""
    if not path.is_file():
        raise TokenizerError(f"{path} is missing; it is part of the repository (restore it with `git checkout -- {path.name}`)")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise TokenizerError(f"{path} is corrupt or modified (sha256 {actual}, expected {expected_sha256}); restore it from git")
    return data


def _gpt2_mergeable_ranks(vocab_bpe: str, encoder_json: str) -> dict[bytes, int]:
    """Build tiktoken's {token bytes: rank} table from GPT-2's two files.

    A BPE "rank" is merge priority: lower merges first. The 256 single bytes come
    first, in the stand-ins' order (printable bytes first, unlike our BPETokenizer's byte
    order), then each line of vocab.bpe is one merge "a b" -> "ab", in priority order.
    GPT-2 numbered its tokens in the same order, so rank == token id; we check that against
    encoder.json (as tiktoken does) instead of assuming it.
    """
    ranks = {bytes([b]): rank for rank, b in enumerate(_byte_stand_ins())}  # printable bytes first
    merge_lines = vocab_bpe.split("\n")[1:-1]  # first line is a "#version" header, last is empty
    for left, right in merges_from_lines(merge_lines):
        ranks[left + right] = len(ranks)

    token_ids = {_from_stand_ins(text): i for text, i in json.loads(encoder_json).items() if text != GPT2_EOT}
    if ranks != token_ids:
        raise TokenizerError("GPT-2 vocab.bpe and encoder.json disagree; restore assets/gpt2/ from git")
    return ranks


@functools.cache  # building the table takes ~0.3 s; do it once per process
def gpt2_encoding() -> tiktoken.Encoding:
    """The GPT-2 tiktoken Encoding, identical to tiktoken.get_encoding("gpt2"), built offline."""
    vocab_bpe = _read_verified(GPT2_ASSETS_DIR / "vocab.bpe", GPT2_VOCAB_BPE_SHA256).decode("utf-8")
    encoder_json = _read_verified(GPT2_ASSETS_DIR / "encoder.json", GPT2_ENCODER_JSON_SHA256).decode("utf-8")
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=_gpt2_mergeable_ranks(vocab_bpe, encoder_json),
        special_tokens={GPT2_EOT: GPT2_EOT_ID},
        explicit_n_vocab=GPT2_VOCAB_SIZE,
    )


class GPT2Tokenizer(_TiktokenTokenizer):
    """GPT-2 byte-level BPE via tiktoken. Any text encodes: unknown bytes do not exist."""

    name = "gpt2"
    eot_token = GPT2_EOT_ID
    vocab_size = GPT2_VOCAB_SIZE

    def __init__(self):
        self.encoding = gpt2_encoding()


def tokenizer_from_meta(meta: dict):
    """Rebuild the tokenizer a dataset was prepared with, from its meta.json dict."""
    kind = meta.get("tokenizer")
    if kind == "char":
        tokenizer = CharTokenizer(meta["chars"])
    elif kind == "bpe":
        tokenizer = BPETokenizer.from_meta(meta)
    elif kind == "gpt2":
        tokenizer = GPT2Tokenizer()
    else:
        raise TokenizerError(f"unknown tokenizer {kind!r} in meta.json (expected 'char', 'bpe' or 'gpt2')")
    if meta.get("chat_tokens"):  # a chat dataset or model: the chat tokens come after the base ids
        from sft import CHAT_TOKENS, ChatTokenizer  # here: sft.py imports this file
        if list(meta["chat_tokens"]) != list(CHAT_TOKENS):
            raise TokenizerError(f"meta.json's chat tokens {meta['chat_tokens']} are not this code's {list(CHAT_TOKENS)}")
        tokenizer = ChatTokenizer(tokenizer)
    if "vocab_size" in meta and meta["vocab_size"] != tokenizer.vocab_size:
        raise TokenizerError(f"meta.json says vocab_size={meta['vocab_size']} but the {kind} tokenizer has {tokenizer.vocab_size}")
    return tokenizer


# ----------------------------------------------------------------------------
# Figures: `python tokenizer.py`


def compression_table(vocab_sizes) -> list[dict]:
    """On tiny Shakespeare (prepare.py's split): for each vocabulary size, the time our trainer
    takes on the train split and the tokens per byte of the val split it gives, next to Hugging
    Face tokenizers' BPE trainer at the same size (the reference for compression: it should be
    within a few percent), with characters and GPT-2's tokenizer for scale."""
    from prepare import SHAKESPEARE_PATH, read_text_file, split_text  # here: prepare imports this file
    train_text, val_text = split_text(read_text_file(SHAKESPEARE_PATH))
    val_bytes = len(val_text.encode("utf-8"))
    rows = [dict(tokenizer="char", vocab_size=len(set(train_text + val_text)), train_seconds=None,
                 tokens_per_byte=len(val_text) / val_bytes)]
    for vocab_size in vocab_sizes:
        start = time.perf_counter()
        ours = BPETokenizer.train(train_text, vocab_size)
        rows.append(dict(tokenizer="bpe (ours)", vocab_size=vocab_size, train_seconds=time.perf_counter() - start,
                         tokens_per_byte=len(ours.encode(val_text)) / val_bytes))
        start = time.perf_counter()
        reference = _hf_bpe(train_text, vocab_size)
        rows.append(dict(tokenizer="bpe (HF tokenizers)", vocab_size=vocab_size,
                         train_seconds=time.perf_counter() - start,
                         tokens_per_byte=len(reference.encode(val_text).ids) / val_bytes))
    rows.append(dict(tokenizer="gpt2", vocab_size=GPT2_VOCAB_SIZE, train_seconds=None,
                     tokens_per_byte=len(GPT2Tokenizer().encode(val_text)) / val_bytes))
    return rows


def _hf_bpe(text: str, vocab_size: int):
    """Hugging Face `tokenizers`' byte-level BPE trained on text: GPT-2's regex, then bytes."""
    # Imported here: `tokenizers` comes with transformers, a dev/test dependency (requirements-dev.txt).
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    hf.train_from_iterator([text], trainer)
    return hf


def parse_args(argv):
    parser = argparse.ArgumentParser(description=compression_table.__doc__)
    parser.add_argument("--vocab_size", type=int, nargs="+", default=[1024, 4096], help="default: 1024 4096")
    return parser.parse_args(argv)


def main(argv=None):
    rows = compression_table(parse_args(argv).vocab_size)
    print(f"{'tokenizer':<22}{'vocab':>8}{'train s':>10}{'val tokens/byte':>18}")
    for row in rows:
        seconds = "-" if row["train_seconds"] is None else f"{row['train_seconds']:.2f}"
        print(f"{row['tokenizer']:<22}{row['vocab_size']:>8,}{seconds:>10}{row['tokens_per_byte']:>18.4f}")


if __name__ == "__main__":
    sys.exit(run_command(main))  # e.g. a vocabulary size the text cannot give: one line, no traceback
