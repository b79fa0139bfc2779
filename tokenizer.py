"""Tokenizers: text <-> list of integer ids.

Two tokenizers, with the same small interface (`encode`, `decode`, `vocab_size`,
`eot_token`, `name`):

- `CharTokenizer`: one id per distinct character of the training text. Tiny
  vocabulary (65 for Shakespeare), so a small model learns fast; used by the
  `shakespeare_char` dataset.
- `GPT2Tokenizer`: GPT-2's byte-level BPE (50257 ids), needed to load and
  fine-tune the published GPT-2 weights.

GPT-2's BPE runs in `tiktoken` (fast, written in Rust). `tiktoken.get_encoding("gpt2")`
downloads two files the first time it runs; we vendor those files in
`assets/gpt2/` instead, check their sha256 (the same hashes tiktoken checks), and
build the identical Encoding offline.

`tokenizer_from_meta(meta)` rebuilds the tokenizer a dataset was made with from
its meta.json, so sampling decodes with exactly the vocabulary training used.
"""

import functools
import hashlib
import json
from pathlib import Path

import tiktoken

from common import UserError

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
    """Text the tokenizer cannot encode, or tokenizer files that are missing or altered."""


def _read_verified(path: Path, expected_sha256: str) -> bytes:
    """Read a vendored file and make sure it is the file we think it is."""
    if not path.is_file():
        raise TokenizerError(f"{path} is missing; it is part of the repository (restore it with `git checkout -- {path.name}`)")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise TokenizerError(f"{path} is corrupt or modified (sha256 {actual}, expected {expected_sha256}); restore it from git")
    return data


def _gpt2_bytes_and_stand_ins() -> list[tuple[int, str]]:
    """The 256 bytes in GPT-2's order, each with the printable character that stands for it.

    GPT-2 stores tokens as text, but a token is a sequence of *bytes*, and
    some bytes (space, newline, control bytes) would be invisible or ambiguous
    in a text file. So each byte gets one printable stand-in: printable bytes
    (except space) stand for themselves and come first; the other 68 bytes follow,
    shown as chr(256), chr(257), ... E.g. "Ġ" (chr(288)) stands for the space byte.
    """
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    others = [b for b in range(256) if b not in printable]
    return [(b, chr(b)) for b in printable] + [(b, chr(256 + n)) for n, b in enumerate(others)]


def _gpt2_mergeable_ranks(vocab_bpe: str, encoder_json: str) -> dict[bytes, int]:
    """Build tiktoken's {token bytes: rank} table from GPT-2's two files.

    A BPE "rank" is merge priority: lower merges first. The 256 single bytes come
    first, then each line of vocab.bpe is one merge "a b" -> "ab", in priority
    order. GPT-2 numbered its tokens in the same order, so rank == token id;
    we check that against encoder.json (as tiktoken does) instead of assuming it.
    """
    bytes_and_stand_ins = _gpt2_bytes_and_stand_ins()
    byte_of = {stand_in: b for b, stand_in in bytes_and_stand_ins}

    def to_bytes(token_text: str) -> bytes:
        return bytes(byte_of[ch] for ch in token_text)

    ranks = {bytes([b]): rank for rank, (b, _) in enumerate(bytes_and_stand_ins)}
    merge_lines = vocab_bpe.split("\n")[1:-1]  # first line is a "#version" header, last is empty
    for line in merge_lines:
        first, second = line.split()
        ranks[to_bytes(first) + to_bytes(second)] = len(ranks)

    token_ids = {to_bytes(text): i for text, i in json.loads(encoder_json).items() if text != GPT2_EOT}
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
        if unknown:
            shown = ", ".join(repr(c) for c in sorted(unknown)[:20])
            more = f" (and {len(unknown) - 20} more)" if len(unknown) > 20 else ""
            raise TokenizerError(
                f"{len(unknown)} character(s) not in this {self.vocab_size}-character vocabulary: {shown}{more}. "
                "A character tokenizer only knows the characters of the text it was built from; "
                "remove them, or prepare a dataset that contains them"
            )
        return [self.stoi[c] for c in text]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        bad = sorted({i for i in ids if not 0 <= i < self.vocab_size})
        if bad:
            raise ValueError(f"ids out of range for a {self.vocab_size}-character vocabulary: {bad[:20]}")
        return "".join(self.chars[i] for i in ids)


class GPT2Tokenizer:
    """GPT-2 byte-level BPE via tiktoken. Any text encodes: unknown bytes do not exist."""

    name = "gpt2"
    eot_token = GPT2_EOT_ID
    vocab_size = GPT2_VOCAB_SIZE

    def __init__(self):
        self.encoding = gpt2_encoding()

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """By default "<|endoftext|>" in text is encoded as plain characters, so
        a document cannot inject a document boundary; allow_special=True maps it to 50256."""
        if allow_special:
            return self.encoding.encode(text, allowed_special="all")
        return self.encoding.encode_ordinary(text)

    def decode(self, ids) -> str:
        # A token can end in the middle of a multi-byte character (e.g. an emoji
        # split across tokens); "replace" shows that as U+FFFD instead of failing.
        return self.encoding.decode([int(i) for i in ids], errors="replace")


def tokenizer_from_meta(meta: dict):
    """Rebuild the tokenizer a dataset was prepared with, from its meta.json dict."""
    kind = meta.get("tokenizer")
    if kind == "char":
        tokenizer = CharTokenizer(meta["chars"])
    elif kind == "gpt2":
        tokenizer = GPT2Tokenizer()
    else:
        raise TokenizerError(f"unknown tokenizer {kind!r} in meta.json (expected 'char' or 'gpt2')")
    if "vocab_size" in meta and meta["vocab_size"] != tokenizer.vocab_size:
        raise TokenizerError(f"meta.json says vocab_size={meta['vocab_size']} but the {kind} tokenizer has {tokenizer.vocab_size}")
    return tokenizer
