"""Tests for tokenizer.py's byte-level BPE: the trainer against tiktoken's reference trainer, round
trips through any text, determinism, the vocabulary sizes it refuses, and the merges as plain data
(meta.json) that are refused once altered. CPU only, no network; every training here takes well
under a second. (GPT-2's tokenizer and the character tokenizer are tested in test_data.py.)"""

import collections
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import regex

import tokenizer
from tokenizer import GPT2_EOT, GPT2_PATTERN, BPETokenizer, TokenizerError, train_bpe

REPO_ROOT = Path(__file__).resolve().parent
SHAKESPEARE_TEXT = (REPO_ROOT / "assets" / "tinyshakespeare.txt").read_text(encoding="utf-8")

ROUND_TRIP_TEXTS = {
    "ascii": "First Citizen:\nBefore we proceed any further, hear me speak.\n\n  All: Speak, speak.",
    "accented": "naïve café, señor Müller à Genève; Ærøskøbing; Żółć",
    "cjk": "你好，世界。東京は日本の首都です。서울은 한국의 수도입니다.",
    "emoji": "🙂 👍🏽 👨‍👩‍👧 🇫🇷 ❤️ and text around them 🚀🚀",
    "control": "tab\there\r\nnull\x00bell\x07escape\x1b[0m del\x7f nbsp\xa0 zero-width\u200b",
}


def small_tokenizer(eot=False):
    """BPE learned from 3,000 characters of Shakespeare: none of the texts above but ASCII."""
    return BPETokenizer.train(SHAKESPEARE_TEXT[:3000], 300, eot)


def reference_ranks(merges):
    """Our merges as tiktoken's {token bytes: rank} (the form the reference trainer returns)."""
    ranks = {bytes([b]): b for b in range(256)}
    for left, right in merges:
        ranks[left + right] = len(ranks)
    return ranks


# ---------------------------------------------------------------------------- the trainer

def test_merges_equal_tiktokens_reference_trainer_ties_included():
    # tiktoken._educational.bpe_train recounts every pair of the whole text for each merge (slow,
    # plainly correct) and picks max() over a Counter: of equal counts, the pair met first in the
    # text. Ours counts distinct chunks and updates counts incrementally, but breaks ties by the
    # same rule, so the two must agree merge for merge, on text that has many ties (below).
    from tiktoken._educational import bpe_train  # tests only: the reference, not our dependency

    text, vocab_size = SHAKESPEARE_TEXT[:4000], 400
    ours = train_bpe(text, vocab_size)
    theirs = bpe_train(text, vocab_size, GPT2_PATTERN, visualise=None)
    assert len(ours) == vocab_size - 256
    assert reference_ranks(ours) == theirs

    # The comparison covers the tie-break only if ties happen: replay the merges naively, checking
    # that each was a most frequent pair, and count the merges that had equally frequent rivals.
    chunks = [list(chunk.encode("utf-8")) for chunk in regex.findall(GPT2_PATTERN, text)]
    token_ids = {bytes([b]): b for b in range(256)}
    ties = 0
    for left, right in ours:
        pair = (token_ids[left], token_ids[right])
        counts = collections.Counter(p for chunk in chunks for p in zip(chunk, chunk[1:]))
        assert counts[pair] == max(counts.values())
        ties += sum(count == counts[pair] for count in counts.values()) > 1
        token_ids[left + right] = len(token_ids)
        chunks = [tokenizer.merge_pair(chunk, pair, token_ids[left + right]) for chunk in chunks]
    assert ties > 50  # 110 of these 144 merges had a rival


def test_merge_pair_works_left_to_right():
    assert tokenizer.merge_pair([1, 1, 1], (1, 1), 9) == [9, 1]  # "aaa" -> "Xa", as tiktoken's trainer
    assert tokenizer.merge_pair([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert tokenizer.merge_pair([2, 1], (1, 2), 9) == [2, 1]


def test_training_is_deterministic_across_processes():
    # Python salts str hashes per process (PYTHONHASHSEED): an order taken from a set of strings
    # would change the merges from one run to the next. This process and one with another salt agree.
    script = ("import json, tokenizer; text = open('assets/tinyshakespeare.txt').read()[:20000]; "
              "print(json.dumps(tokenizer.merges_to_lines(tokenizer.train_bpe(text, 600))))")
    salt = "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"
    other = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                           env=dict(os.environ, PYTHONHASHSEED=salt), timeout=120, check=True).stdout
    ours = tokenizer.merges_to_lines(train_bpe(SHAKESPEARE_TEXT[:20000], 600))
    assert json.loads(other) == ours
    assert tokenizer.merges_to_lines(train_bpe(SHAKESPEARE_TEXT[:20000], 600)) == ours


def test_vocab_size_below_the_bytes_or_beyond_the_text_is_an_error():
    with pytest.raises(TokenizerError, match=r"vocab_size=255 is too small.*--vocab_size=256 or more"):
        train_bpe("hello", 255)
    with pytest.raises(TokenizerError, match=r"--vocab_size=257 or more"):
        train_bpe("hello", 256, eot=True)  # the last id is <|endoftext|>
    assert train_bpe("hello", 256) == []  # just the bytes
    # "hello hello world": chunks "hello", " hello", " world" can become 3 tokens after merging
    # ("h e l l o" 4 merges, " hello" 1 more, " w o r l d" 5 more) = 10 merges, no more.
    with pytest.raises(TokenizerError, match=r"more than this text can give: after 10 merges.*--vocab_size=266"):
        train_bpe("hello hello world", 300)
    tok = BPETokenizer.train("hello hello world", 266)  # the size the error names is possible
    assert [tok.decode([i]) for i in tok.encode("hello hello world")] == ["hello", " hello", " world"]


# ---------------------------------------------------------------------------- encoding

@pytest.mark.parametrize("kind", ROUND_TRIP_TEXTS)
def test_round_trip_of_any_text(kind):
    tok = small_tokenizer()
    text = ROUND_TRIP_TEXTS[kind]
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    # Bytes never seen in training are still tokens: e.g. an emoji is 4 single-byte tokens.
    assert len(tok.encode("🚀")) == 4


def test_round_trip_of_random_strings():
    tok = small_tokenizer(eot=True)
    rng = random.Random(0)
    # Code points from every plane (surrogates excluded: they are not text and have no UTF-8).
    ranges = [(0, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF)]
    for _ in range(200):
        text = "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(0, 40)))
        assert tok.decode(tok.encode(text)) == text
    # Every byte value, in random orders, through the byte-level fallback.
    for _ in range(50):
        raw = bytes(rng.randrange(256) for _ in range(64)).decode("latin-1")
        assert tok.decode(tok.encode(raw)) == raw


def test_learned_tokens_encode_the_text_they_were_learned_from_in_fewer_tokens():
    tok = small_tokenizer()
    text = SHAKESPEARE_TEXT[:3000]
    assert len(tok.encode(text)) < 0.7 * len(text.encode("utf-8"))  # 44 merges: 0.67 tokens per byte
    assert tok.decode([tok.encode(" the")[0]]) == " the"  # one of the first merges in English


def test_end_of_text_token_is_the_last_id_and_never_merged():
    documents = ["First document: hello world."] * 30 + ["Second one, different."] * 30
    tok = BPETokenizer.train(GPT2_EOT.join(documents), 280, eot=True)
    assert (tok.vocab_size, tok.eot_token) == (280, 279) and len(tok.merges) == 280 - 256 - 1
    assert not any(b"<|" in left + right or b"|>" in left + right for left, right in tok.merges)
    ids = tok.encode(GPT2_EOT.join(documents[:2]), allow_special=True)
    assert ids.count(tok.eot_token) == 1 and tok.decode(ids) == GPT2_EOT.join(documents[:2])
    # Plain text unless asked for, so a document cannot fake a boundary (as for GPT-2).
    assert tok.eot_token not in tok.encode(GPT2_EOT) and tok.decode(tok.encode(GPT2_EOT)) == GPT2_EOT
    assert BPETokenizer.train("hello world", 260).eot_token is None


def test_byte_lengths_add_up_to_the_utf8_length_of_the_text():
    tok = small_tokenizer(eot=True)
    lengths = tok.byte_lengths()
    assert len(lengths) == tok.vocab_size and lengths[tok.eot_token] == 0  # <|endoftext|> is no text
    for text in ROUND_TRIP_TEXTS.values():
        assert sum(lengths[i] for i in tok.encode(text)) == len(text.encode("utf-8"))
    chars = tokenizer.CharTokenizer(["a", "é", "你", "🙂"])
    assert chars.byte_lengths() == [1, 2, 3, 4]


# ---------------------------------------------------------------------------- merges as plain data

def test_merges_are_stored_as_gpt2_style_text_and_read_back():
    tok = small_tokenizer(eot=True)
    meta = json.loads(json.dumps(tok.meta()))  # survives JSON unchanged: plain data
    assert meta["merges"][0] == "Ġ t" and meta["eot"] is True  # " t" is Shakespeare's commonest pair
    rebuilt = tokenizer.tokenizer_from_meta({"tokenizer": "bpe", "vocab_size": tok.vocab_size, **meta})
    assert rebuilt.merges == tok.merges and rebuilt.eot_token == tok.eot_token
    text = ROUND_TRIP_TEXTS["accented"]
    assert rebuilt.encode(text) == tok.encode(text)
    # Every byte value survives the stand-in text form, control bytes and space included.
    every_byte = [(bytes([b]), bytes([b, b])) for b in range(256)]
    assert tokenizer.merges_from_lines(tokenizer.merges_to_lines(every_byte)) == every_byte


def test_altered_or_missing_merges_are_refused():
    tok = small_tokenizer()
    meta = {"tokenizer": "bpe", "vocab_size": tok.vocab_size, **tok.meta()}
    edited = dict(meta, merges=[meta["merges"][1], meta["merges"][0], *meta["merges"][2:]])  # two swapped
    with pytest.raises(TokenizerError, match="do not match their sha256"):
        tokenizer.tokenizer_from_meta(edited)
    with pytest.raises(TokenizerError, match="no 'merges'"):
        tokenizer.tokenizer_from_meta({k: v for k, v in meta.items() if k != "merges"})
    # Merges that match their hash but do not build on earlier tokens: refused all the same.
    in_order, out_of_order = ["t h", "Ġ th"], ["Ġ th", "t h"]  # "Ġ th" needs "th" to exist already
    assert tokenizer.tokenizer_from_meta(dict(meta, vocab_size=258, merges=in_order,
                                              merges_sha256=tokenizer._sha256_of_lines(in_order))).vocab_size == 258
    with pytest.raises(TokenizerError, match="does not join two earlier tokens"):
        tokenizer.tokenizer_from_meta(dict(meta, vocab_size=258, merges=out_of_order,
                                           merges_sha256=tokenizer._sha256_of_lines(out_of_order)))
