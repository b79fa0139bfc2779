"""Tests for download.py, tokenizer.py, data.py (its file formats and its one reader, BatchLoader)
and prepare.py. CPU only, no network.

Downloads are tested against conftest.py's `fake_hub`, a tiny HTTP server on
127.0.0.1 that serves bytes the test chose and can misbehave on purpose (send a
truncated body, answer 404 or 503); one test adds a server that ignores Range.
"""

import hashlib
import json
import http.server
import os
import socket
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import data
import download
import prepare
import tokenizer
import train
from common import ConfigError, run_command
from data import BatchLoader, DataError, ShardError
from download import DownloadError
from tokenizer import TokenizerError

REPO_ROOT = Path(__file__).resolve().parent
SHAKESPEARE_TEXT = (REPO_ROOT / "assets" / "tinyshakespeare.txt").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------
# helpers. The local server is conftest.py's `fake_hub` fixture: it serves
# hub.files on 127.0.0.1 (Range supported), records hub.requests as
# (method, path, Range header), and can truncate bodies or answer a given status.


@pytest.fixture
def hub(fake_hub, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # a configured proxy must not intercept
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return fake_hub


def requested(hub) -> list[tuple[str, str | None]]:
    """(path, Range header) of every request the hub has seen."""
    return [(path, range_header) for _, path, range_header in hub.requests]


def fineweb_path(filename: str) -> str:
    """URL path under which the HF endpoint serves a file of the FineWeb dataset repo."""
    return f"/datasets/{prepare.FINEWEB_REPO}/resolve/main/{filename}"


def shard_bytes(tmp_path: Path, tokens) -> bytes:
    path = tmp_path / "shard_source.bin"
    data.write_shard(path, tokens)
    return path.read_bytes()


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ----------------------------------------------------------------------------
# tokenizer.py


def test_gpt2_known_ids_and_round_trip():
    tok = tokenizer.GPT2Tokenizer()
    assert tok.encode("Hello world") == [15496, 995]
    assert (tok.vocab_size, tok.eot_token, tok.name) == (50257, 50256, "gpt2")
    text = "First Citizen:\nBefore we proceed… naïve café 你好 🙂\n\n  spaces"
    assert tok.decode(tok.encode(text)) == text
    # Special-token text is plain text unless asked for: a document cannot fake a boundary.
    assert 50256 not in tok.encode("<|endoftext|>")
    assert tok.encode("<|endoftext|>", allow_special=True) == [50256]
    # A token sequence cut inside a multi-byte character decodes with a visible replacement
    # character instead of raising (sample.py relies on this to stream text).
    assert tok.decode(tok.encode("🙂")[:1]).endswith("\ufffd")


def test_gpt2_encoding_matches_tiktokens_own_loader(monkeypatch):
    """Our loader and tiktoken's reference loader must build the same encoding."""
    import tiktoken
    import tiktoken.load
    from tiktoken_ext.openai_public import r50k_pat_str

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # read the local files, write no cache
    assets = tokenizer.GPT2_ASSETS_DIR
    reference_ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        str(assets / "vocab.bpe"), str(assets / "encoder.json"),
        vocab_bpe_hash=tokenizer.GPT2_VOCAB_BPE_SHA256, encoder_json_hash=tokenizer.GPT2_ENCODER_JSON_SHA256,
    )
    reference = tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=reference_ranks,
                                  special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)
    ours = tokenizer.gpt2_encoding()
    assert tokenizer.GPT2_PATTERN == r50k_pat_str
    assert ours._mergeable_ranks == reference_ranks
    sample = SHAKESPEARE_TEXT[:20000] + " 3.14159 don't ✓ \t\r\n"
    assert ours.encode_ordinary(sample) == reference.encode_ordinary(sample)
    assert ours.n_vocab == reference.n_vocab == 50257
    assert tokenizer.gpt2_encoding() is ours  # built once per process


def test_gpt2_corrupt_asset_is_refused(tmp_path, monkeypatch):
    assets = tokenizer.GPT2_ASSETS_DIR
    (tmp_path / "vocab.bpe").write_bytes((assets / "vocab.bpe").read_bytes() + b"x")
    (tmp_path / "encoder.json").write_bytes((assets / "encoder.json").read_bytes())
    monkeypatch.setattr(tokenizer, "GPT2_ASSETS_DIR", tmp_path)
    with pytest.raises(TokenizerError, match="vocab.bpe is corrupt"):
        tokenizer.gpt2_encoding.__wrapped__()  # bypass the in-process cache
    # encoder.json is checked too, even when the change keeps it valid JSON.
    (tmp_path / "vocab.bpe").write_bytes((assets / "vocab.bpe").read_bytes())
    (tmp_path / "encoder.json").write_bytes((assets / "encoder.json").read_bytes() + b" ")
    with pytest.raises(TokenizerError, match="encoder.json is corrupt"):
        tokenizer.gpt2_encoding.__wrapped__()
    (tmp_path / "vocab.bpe").unlink()
    with pytest.raises(TokenizerError, match="vocab.bpe is missing"):
        tokenizer.gpt2_encoding.__wrapped__()


def test_char_tokenizer_round_trip_and_unknown_characters():
    tok = tokenizer.CharTokenizer.from_text("hello world")
    assert tok.chars == sorted(set("hello world"))
    assert (tok.name, tok.eot_token, tok.vocab_size) == ("char", None, 8)
    assert tok.decode(tok.encode("low herd")) == "low herd"
    with pytest.raises(TokenizerError) as excinfo:
        tok.encode("hex! wow")
    message = str(excinfo.value)
    assert "2 character(s)" in message and "'!'" in message and "'x'" in message
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([0, 8])
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([-1])  # Python would quietly index from the end
    with pytest.raises(ValueError, match="distinct"):
        tokenizer.CharTokenizer(["a", "a"])


def test_tokenizer_from_meta():
    char = tokenizer.tokenizer_from_meta({"tokenizer": "char", "vocab_size": 3, "chars": ["a", "b", "c"]})
    assert char.decode(char.encode("cab")) == "cab"
    assert tokenizer.tokenizer_from_meta({"tokenizer": "gpt2", "vocab_size": 50257}).encode("Hello") == [15496]
    with pytest.raises(TokenizerError, match="unknown tokenizer"):
        tokenizer.tokenizer_from_meta({"tokenizer": "sentencepiece"})
    with pytest.raises(TokenizerError, match="vocab_size=4"):
        tokenizer.tokenizer_from_meta({"tokenizer": "char", "vocab_size": 4, "chars": ["a", "b", "c"]})


# ----------------------------------------------------------------------------
# prepare.py: text sources


def decode_split(dataset_dir: Path, split: str) -> str:
    meta = data.load_meta(dataset_dir)
    (tokens,) = data.load_split(dataset_dir, split)
    return tokenizer.tokenizer_from_meta(meta).decode(tokens.tolist())


def test_prepare_shakespeare_char(tmp_path):
    dataset_dir = prepare.prepare_shakespeare_char(tmp_path)
    assert dataset_dir == tmp_path / "shakespeare_char"
    meta = json.loads((dataset_dir / "meta.json").read_text())
    assert meta["tokenizer"] == "char" and meta["vocab_size"] == 65 and meta["format"] == "bin"
    assert meta["dtype"] == "uint16" and (dataset_dir / "train.bin").stat().st_size == 2 * meta["train_tokens"]
    assert meta["train_tokens"] + meta["val_tokens"] == len(SHAKESPEARE_TEXT)
    assert meta["val_tokens"] == len(SHAKESPEARE_TEXT) - int(len(SHAKESPEARE_TEXT) * 0.9)
    # the split is by position: train then val give back the original text
    assert decode_split(dataset_dir, "train") + decode_split(dataset_dir, "val") == SHAKESPEARE_TEXT


def test_prepare_shakespeare_gpt2(tmp_path):
    dataset_dir = prepare.prepare_shakespeare(tmp_path)
    meta = data.load_meta(dataset_dir)
    assert (meta["tokenizer"], meta["vocab_size"], meta["dtype"]) == ("gpt2", 50257, "uint16")
    train_text, val_text = prepare.split_text(SHAKESPEARE_TEXT)
    assert decode_split(dataset_dir, "train") == train_text
    assert decode_split(dataset_dir, "val") == val_text
    assert meta["val_tokens"] == len(tokenizer.GPT2Tokenizer().encode(val_text))


def test_prepare_text_command_line(tmp_path, capsys):
    text = "the quick brown fox jumps over the lazy dog.\n" * 20
    input_path = tmp_path / "my.txt"
    input_path.write_text(text, encoding="utf-8")
    data_dir = tmp_path / "data"

    args = ["text", f"--input={input_path}", "--tokenizer=gpt2", "--name=mytext", f"--data_dir={data_dir}"]
    assert prepare.main(args) == 0
    assert data.load_meta(data_dir / "mytext")["tokenizer"] == "gpt2"
    assert decode_split(data_dir / "mytext", "train") + decode_split(data_dir / "mytext", "val") == text

    assert prepare.main(["text", "--input", str(input_path), "--data_dir", str(data_dir)]) == 0
    meta = data.load_meta(data_dir / "my")  # default: char tokenizer, name from the file name
    assert meta["tokenizer"] == "char" and meta["chars"] == sorted(set(text))

    assert run_command(lambda: prepare.main(["text", f"--input={tmp_path / 'missing.txt'}",
                                             f"--data_dir={data_dir}"])) == 1
    assert "missing.txt not found" in capsys.readouterr().err


def test_bad_text_inputs(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        prepare.prepare_text_file(tmp_path / "latin1.txt", data_dir=tmp_path)
    with pytest.raises(DataError, match="too short"):
        prepare.prepare_text("a", "tiny", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown tokenizer"):
        prepare.prepare_text("abcdefghijkl", "x", tokenizer="sentencepiece", data_dir=tmp_path)


def test_default_command_prepares_shakespeare_char_under_data_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)  # callers may move the default data folder
    assert prepare.main([]) == 0
    assert data.load_meta(tmp_path / "shakespeare_char")["vocab_size"] == 65


def test_help_runs_as_a_script():
    result = subprocess.run([sys.executable, "prepare.py", "--help"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("shakespeare_char", "shakespeare", "fineweb10B", "text"):
        assert command in result.stdout


def test_uint32_when_vocab_exceeds_uint16(tmp_path):
    # 66,000 distinct characters (from the supplementary planes) > 65,536 ids.
    text = "".join(chr(0x10000 + i) for i in range(66_000)) * 2
    dataset_dir = prepare.prepare_text(text, "bigvocab", "char", tmp_path)
    meta = data.load_meta(dataset_dir)
    assert meta["vocab_size"] == 66_000 and meta["dtype"] == "uint32"
    (train,) = data.load_split(dataset_dir, "train")
    assert train.dtype == np.uint32 and int(train.max()) == 65_999  # would wrap to 463 in uint16
    assert (dataset_dir / "train.bin").stat().st_size == 4 * meta["train_tokens"]
    assert decode_split(dataset_dir, "train") + decode_split(dataset_dir, "val") == text


def test_ids_that_do_not_fit_are_refused():
    assert data.dtype_for_vocab(65_536) == np.uint16
    assert data.dtype_for_vocab(65_537) == np.uint32
    assert data.to_token_array([0, 65_535], 65_536).dtype == np.uint16
    with pytest.raises(ValueError, match="token id 70000 at position 1"):
        data.to_token_array([5, 70_000], 65_536)
    with pytest.raises(ValueError, match="token id -1"):
        data.to_token_array([-1], 10)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        data.to_token_array([10], 10)
    with pytest.raises(ValueError):
        data.write_shard("never_written.bin", [65_536])  # shards are uint16


def test_missing_dataset_names_the_command(tmp_path):
    with pytest.raises(DataError, match="python prepare.py shakespeare$"):
        data.load_meta(tmp_path / "shakespeare")
    with pytest.raises(DataError, match="python prepare.py fineweb10B --num_shards=1"):
        prepare.ensure_dataset("fineweb10B", tmp_path)
    with pytest.raises(DataError, match="python prepare.py text --input=.* --name=mine"):
        data.load_split(tmp_path / "mine", "train")
    assert not (tmp_path / "fineweb10B").exists()  # ensure_dataset never downloads on its own
    dataset_dir = prepare.ensure_dataset("shakespeare_char", tmp_path)
    assert data.load_meta(dataset_dir)["vocab_size"] == 65
    assert prepare.ensure_dataset("shakespeare_char", tmp_path) == dataset_dir
    # A folder left half-made (no meta.json, which is written last) is prepared again.
    (dataset_dir / "meta.json").unlink()
    assert prepare.ensure_dataset("shakespeare_char", tmp_path) == dataset_dir
    assert data.load_meta(dataset_dir)["vocab_size"] == 65


def test_char_vocabulary_covers_the_validation_text_too(tmp_path):
    # "z" occurs only in the last 10%, the validation split: it must still get an id.
    dataset_dir = prepare.prepare_text("a" * 90 + "b" * 9 + "z", "x", "char", data_dir=tmp_path)
    assert data.load_meta(dataset_dir)["chars"] == ["a", "b", "z"]


# ----------------------------------------------------------------------------
# prepare.py: datasets with learned BPE


def test_bpe_dataset_learns_its_merges_from_the_train_split_only(tmp_path):
    text = SHAKESPEARE_TEXT[:20_000]
    train_text, val_text = prepare.split_text(text)
    dataset_dir = prepare.prepare_text(text, "small", "bpe", tmp_path, vocab_size=400)
    meta = data.load_meta(dataset_dir)
    assert (meta["tokenizer"], meta["vocab_size"], meta["eot"], len(meta["merges"])) == ("bpe", 400, False, 144)
    assert tokenizer.tokenizer_from_meta(meta).merges == tokenizer.train_bpe(train_text, 400)
    assert tokenizer.train_bpe(text, 400) != tokenizer.train_bpe(train_text, 400)  # the val text would change them
    assert decode_split(dataset_dir, "train") == train_text and decode_split(dataset_dir, "val") == val_text
    assert meta["val_tokens"] < 0.6 * len(val_text)  # learned tokens hold ~2 characters each


def test_shakespeare_bpe_datasets_are_named_by_their_vocabulary_size(tmp_path):
    # The command line, the name it writes, the command an error names, and ensure_dataset
    # (which train.py calls) agree. Tiny vocabularies: each dataset takes about a second.
    assert prepare.main(["shakespeare", "--tokenizer=bpe", "--vocab_size=258", f"--data_dir={tmp_path}"]) == 0
    meta = data.load_meta(tmp_path / "shakespeare_bpe258")
    assert (meta["tokenizer"], meta["vocab_size"], meta["merges"]) == ("bpe", 258, ["Ġ t", "h e"])
    assert data.prepare_command("shakespeare_bpe258") == \
        "python prepare.py shakespeare --tokenizer=bpe --vocab_size=258"
    assert prepare.ensure_dataset("shakespeare_bpe257", tmp_path) == tmp_path / "shakespeare_bpe257"
    assert data.load_meta(tmp_path / "shakespeare_bpe257")["merges"] == ["Ġ t"]


def test_eot_separates_documents_with_one_token(tmp_path):
    documents = [f"Story {i}: once upon a time there was a {animal}." for i, animal in
                 enumerate(["cat", "dog", "fox", "owl"] * 10)]
    input_path = tmp_path / "stories.txt"
    input_path.write_text(tokenizer.GPT2_EOT.join(documents), encoding="utf-8")
    args = ["text", f"--input={input_path}", "--tokenizer=bpe", "--vocab_size=300", "--eot", f"--data_dir={tmp_path}"]
    assert prepare.main(args) == 0
    meta = data.load_meta(tmp_path / "stories")
    tok = tokenizer.tokenizer_from_meta(meta)
    assert meta["eot"] is True and tok.eot_token == 299
    ids = np.concatenate(data.load_split(tmp_path / "stories", "train") + data.load_split(tmp_path / "stories", "val"))
    assert (ids == tok.eot_token).sum() == len(documents) - 1  # one id per boundary, not 13 characters
    (val,) = data.load_split(tmp_path / "stories", "val")
    assert tok.decode(val.tolist()).startswith("Story ")  # the split falls between two documents
    assert data.prepare_command("stories", meta) == (f"python prepare.py text --input={input_path} --tokenizer=bpe "
                                                     "--vocab_size=300 --eot --name=stories")
    # GPT-2's tokenizer has the same token: 50256.
    assert prepare.main(args[:2] + ["--tokenizer=gpt2", "--eot", "--name=stories_gpt2", f"--data_dir={tmp_path}"]) == 0
    (gpt2_train,) = data.load_split(tmp_path / "stories_gpt2", "train")
    assert tokenizer.GPT2_EOT_ID in gpt2_train


@pytest.mark.parametrize("args, message", [
    (["--tokenizer=bpe"], "--tokenizer=bpe needs --vocab_size=N"),
    (["--tokenizer=gpt2", "--vocab_size=1024"], "--vocab_size is for --tokenizer=bpe only"),
    (["--eot"], "--eot needs a tokenizer with an end-of-text token"),
    (["--tokenizer=bpe", "--vocab_size=200"], "vocab_size=200 is too small"),
    (["--tokenizer=bpe", "--vocab_size=5000"], "is more than this text can give"),
])
def test_bpe_options_that_cannot_work_are_one_line_errors(tmp_path, capsys, args, message):
    input_path = tmp_path / "my.txt"
    input_path.write_text("the quick brown fox jumps over the lazy dog.\n" * 20, encoding="utf-8")
    assert run_command(lambda: prepare.main(["text", f"--input={input_path}", f"--data_dir={tmp_path}"] + args)) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "my").exists()  # nothing written


@pytest.mark.parametrize("damage", ["edited", "missing"])
def test_dataset_with_altered_or_missing_merges_is_refused_naming_the_command(tmp_path, damage):
    input_path = tmp_path / "my.txt"
    input_path.write_text(SHAKESPEARE_TEXT[:5000], encoding="utf-8")
    dataset_dir = prepare.prepare_text_file(input_path, "bpe", data_dir=tmp_path, vocab_size=300)
    meta = json.loads((dataset_dir / "meta.json").read_text(encoding="utf-8"))
    if damage == "edited":  # a plausible hand edit: two merges swapped, every line still valid
        meta["merges"][3], meta["merges"][4] = meta["merges"][4], meta["merges"][3]
    else:
        del meta["merges"]
    data.write_meta(dataset_dir, meta)
    command = f"python prepare.py text --input={input_path} --tokenizer=bpe --vocab_size=300 --name=my"
    with pytest.raises(DataError, match="Recreate the dataset with: " + command.replace(".", r"\.")):
        data.load_meta(dataset_dir)
    with pytest.raises(DataError, match="merges"):
        data.BatchLoader(dataset_dir, batch_size=2, block_size=8)  # what train.py opens


# ----------------------------------------------------------------------------
# data.py: the evaluation's loss and bits per byte, from one pass


def test_loss_sums_give_the_mean_loss_and_bits_per_byte_leaving_padding_and_special_tokens_out():
    import math
    import torch
    from torch.nn import functional as F
    token_bytes = torch.tensor([1, 2, 0, 3])  # id 2 is special: no text
    logits = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[0, 1, 2, 3, -1], [3, 3, 2, 0, 1]])
    nats, tokens, text_nats, num_bytes = 0.0, 0, 0.0, 0
    for b in range(2):
        for t in range(5):
            target = int(targets[b, t])
            if target == -1:
                continue
            loss = F.cross_entropy(logits[b, t], torch.tensor(target)).item()
            nats, tokens = nats + loss, tokens + 1
            if target != 2:
                text_nats, num_bytes = text_nats + loss, num_bytes + int(token_bytes[target])
    sums = data.LossSums(token_bytes)
    sums.add(logits[:1], targets[:1])  # two batches add up to the one of both
    sums.add(logits[1:], targets[1:])
    assert sums.tokens == tokens == 9 and sums.num_bytes == num_bytes == 1 + 2 + 3 + 3 + 3 + 1 + 2
    assert sums.loss == pytest.approx(nats / tokens, rel=1e-6)  # special tokens count in the loss
    assert sums.bits_per_byte == pytest.approx(text_nats / (math.log(2) * num_bytes), rel=1e-6)
    # The same as the model's own loss: cross_entropy over the whole batch at once, in bfloat16 too.
    whole = F.cross_entropy(logits.reshape(-1, 4), targets.reshape(-1), ignore_index=-1)
    assert sums.loss == pytest.approx(whole.item(), rel=1e-6)
    half = data.token_losses(logits.bfloat16(), targets)
    expected = F.cross_entropy(logits.bfloat16().float().reshape(-1, 4), targets.reshape(-1), ignore_index=-1,
                               reduction="none").view(2, 5)
    assert half.dtype == torch.float32 and torch.equal(half, expected)
    empty = data.LossSums(token_bytes)
    assert math.isnan(empty.loss) and math.isnan(empty.bits_per_byte)  # nothing scored yet


# ----------------------------------------------------------------------------
# prepare.py: llm.c shards


def test_shard_format_matches_llm_c(tmp_path):
    tokens = np.array([50256, 0, 1, 65_535, 464], dtype=np.uint16)
    header = np.zeros(256, dtype="<i4")
    header[:3] = [20240520, 1, len(tokens)]
    by_hand = tmp_path / "by_hand.bin"
    by_hand.write_bytes(header.tobytes() + tokens.astype("<u2").tobytes())
    assert data.read_shard_header(by_hand) == 5
    assert data.read_shard(by_hand).tolist() == tokens.tolist()
    data.write_shard(tmp_path / "ours.bin", tokens)
    assert (tmp_path / "ours.bin").read_bytes() == by_hand.read_bytes()


@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b[:100], "too small"),
    (lambda b: (1234).to_bytes(4, "little") + b[4:], "not a token shard"),
    (lambda b: b[:4] + (2).to_bytes(4, "little") + b[8:], "version 2"),
    (lambda b: b[:-2], "truncated"),
    (lambda b: b + b"\0\0", "truncated or corrupt"),  # longer than its header says
])
def test_bad_shards_are_refused(tmp_path, corrupt, message):
    good = shard_bytes(tmp_path, range(10))
    path = tmp_path / "bad.bin"
    path.write_bytes(corrupt(good))
    with pytest.raises(ShardError, match=message):
        data.read_shard(path)


def test_shard_with_an_id_outside_the_vocabulary_is_refused(tmp_path):
    path = tmp_path / "s.bin"
    data.write_shard(path, [1, 50256])
    assert data.validate_shard(path, 50257) == 2
    data.write_shard(path, [1, 50257])
    with pytest.raises(ShardError, match="token id 50257"):
        data.validate_shard(path, 50257)


# ----------------------------------------------------------------------------
# fineweb10B through download.py, against the local hub


def serve_fineweb(hub, tmp_path: Path, num_train: int) -> dict[str, list[int]]:
    tokens = {"fineweb_val_000000.bin": [50256, 7, 8, 9]}
    for i in range(1, num_train + 1):
        tokens[f"fineweb_train_{i:06d}.bin"] = [50256] + list(range(100 * i, 100 * i + 20))
    for name, ids in tokens.items():
        hub.files[fineweb_path(name)] = shard_bytes(tmp_path, ids)
    return tokens


def test_fineweb_download_then_cached(hub, tmp_path):
    tokens = serve_fineweb(hub, tmp_path, num_train=3)
    data_dir = tmp_path / "data"
    dataset_dir = prepare.prepare_fineweb(2, data_dir)

    meta = data.load_meta(dataset_dir)
    assert meta["format"] == "shards" and meta["tokenizer"] == "gpt2" and meta["dtype"] == "uint16"
    assert meta["train_shards"] == ["fineweb_train_000001.bin", "fineweb_train_000002.bin"]
    assert (meta["train_tokens"], meta["val_tokens"]) == (42, 4)
    train = data.load_split(dataset_dir, "train")
    assert [shard.tolist() for shard in train] == [tokens["fineweb_train_000001.bin"], tokens["fineweb_train_000002.bin"]]
    assert data.load_split(dataset_dir, "val")[0].tolist() == tokens["fineweb_val_000000.bin"]
    assert requested(hub) == [
        (fineweb_path("fineweb_val_000000.bin"), None),  # val first, always
        (fineweb_path("fineweb_train_000001.bin"), None),
        (fineweb_path("fineweb_train_000002.bin"), None),
    ]
    assert not any(name.endswith(".part") for name in files_in(dataset_dir))

    hub.requests.clear()
    assert prepare.main(["fineweb10B", "--num_shards=2", f"--data_dir={data_dir}"]) == 0
    assert hub.requests == []  # everything cached: no request at all


def test_fineweb_truncated_shard_leaves_nothing(hub, tmp_path):
    serve_fineweb(hub, tmp_path, num_train=1)
    # The server delivers the whole file, but the file itself is cut short.
    val = fineweb_path("fineweb_val_000000.bin")
    hub.files[val] = hub.files[val][:-2]
    with pytest.raises(ShardError, match="truncated") as excinfo:
        prepare.prepare_fineweb(1, tmp_path)
    assert "run the command again" in str(excinfo.value)
    assert files_in(tmp_path / "fineweb10B") == []  # no shard, no .part, no meta.json


def test_fineweb_truncated_transfer_leaves_nothing(hub, tmp_path):
    serve_fineweb(hub, tmp_path, num_train=1)
    # The server announces the full Content-Length, then hangs up halfway.
    hub.truncate.add(fineweb_path("fineweb_train_000001.bin"))
    with pytest.raises(DownloadError) as excinfo:
        prepare.prepare_fineweb(1, tmp_path)
    assert "fineweb_train_000001.bin" in excinfo.value.url
    assert excinfo.value.why.startswith("truncated transfer")
    assert "check your connection" in excinfo.value.fix
    # The good val shard stays (cached for the retry); the broken one left no trace.
    assert files_in(tmp_path / "fineweb10B") == ["fineweb_val_000000.bin"]


def test_fineweb_404_is_a_clear_error(hub, tmp_path, capsys):
    with pytest.raises(DownloadError) as excinfo:
        prepare.prepare_fineweb(1, tmp_path)
    error = excinfo.value
    assert error.url == hub.url + fineweb_path("fineweb_val_000000.bin")
    assert "HTTP 404" in error.why and "check the URL" in error.fix
    assert str(error).startswith(f"could not download {error.url}: ")
    assert files_in(tmp_path / "fineweb10B") == []

    assert run_command(lambda: prepare.main(["fineweb10B", f"--data_dir={tmp_path}"])) == 1
    assert "error: could not download" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="num_shards"):
        prepare.prepare_fineweb(0, tmp_path)


# ----------------------------------------------------------------------------
# download.py


def test_resume_partial_download_with_range(hub, tmp_path):
    body = bytes(range(256)) * 40
    hub.files["/f.bin"] = body
    dest = tmp_path / "f.bin"
    Path(str(dest) + ".part").write_bytes(body[:3000])  # left by an interrupted earlier run
    assert download.download(hub.url + "/f.bin", dest, expected_size=len(body)) == dest
    assert requested(hub) == [("/f.bin", "bytes=3000-")]  # only the missing bytes were asked for
    assert dest.read_bytes() == body
    assert files_in(tmp_path) == ["f.bin"]


def test_complete_part_file_is_verified_and_kept_without_a_request(hub, tmp_path):
    body = b"all of it" * 100
    hub.files["/f.bin"] = body
    dest = tmp_path / "f.bin"
    Path(str(dest) + ".part").write_bytes(body)  # the earlier run died just before the rename
    download.download(hub.url + "/f.bin", dest, expected_size=len(body),
                      sha256=hashlib.sha256(body).hexdigest())
    assert requested(hub) == []
    assert dest.read_bytes() == body and files_in(tmp_path) == ["f.bin"]


def test_stale_file_is_removed_even_when_the_download_fails(hub, tmp_path):
    body = b"weights" * 100
    hub.status["/w.bin"] = 500
    dest = tmp_path / "w.bin"
    dest.write_bytes(b"corrupted on disk")
    with pytest.raises(DownloadError, match="HTTP 500"):
        download.download(hub.url + "/w.bin", dest, sha256=hashlib.sha256(body).hexdigest())
    assert files_in(tmp_path) == []  # nothing that looks like a good file is left behind


def test_restart_when_range_not_satisfiable(hub, tmp_path):
    hub.files["/f.bin"] = b"short"
    dest = tmp_path / "f.bin"
    Path(str(dest) + ".part").write_bytes(b"a stale part that is too long")
    download.download(hub.url + "/f.bin", dest)
    assert requested(hub) == [("/f.bin", "bytes=29-"), ("/f.bin", None)]  # 416, then from scratch
    assert dest.read_bytes() == b"short"


def test_restart_when_server_ignores_range(tmp_path, monkeypatch):
    """A server without Range support answers 200 with the whole file: the old .part must go."""
    from conftest import FakeHub, make_handler

    hub = FakeHub()
    body = b"the real file " * 100
    hub.files["/f.bin"] = body

    class NoRangeHandler(make_handler(hub)):
        def do_GET(self):
            hub.requests.append(("GET", self.path, self.headers.get("Range")))
            del self.headers["Range"]  # behave as if Range were not supported
            super().do_GET()

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoRangeHandler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        dest = tmp_path / "f.bin"
        Path(str(dest) + ".part").write_bytes(b"something else entirely")
        download.download(f"http://127.0.0.1:{server.server_address[1]}/f.bin", dest)
    finally:
        server.shutdown()
        server.server_close()
    assert ("GET", "/f.bin", "bytes=23-") in hub.requests  # we asked to resume...
    assert dest.read_bytes() == body  # ...got a 200, and restarted cleanly


def test_http_errors_say_what_to_do(hub, tmp_path):
    hub.status["/busy.bin"] = 503
    with pytest.raises(DownloadError) as excinfo:
        download.download(hub.url + "/busy.bin", tmp_path / "busy.bin")
    assert "HTTP 503" in excinfo.value.why and "try again" in excinfo.value.fix
    hub.status["/gated.bin"] = 403
    with pytest.raises(DownloadError, match="HTTP 403.*private or gated"):
        download.download(hub.url + "/gated.bin", tmp_path / "gated.bin")
    assert files_in(tmp_path) == []


def test_sha256_and_size_checks(hub, tmp_path):
    body = b"weights" * 1000
    good_sha = hashlib.sha256(body).hexdigest()
    hub.files["/w.bin"] = body
    dest = tmp_path / "w.bin"
    url = hub.url + "/w.bin"

    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download.download(url, dest, sha256="0" * 64)
    assert files_in(tmp_path) == []
    with pytest.raises(DownloadError, match=f"got {len(body)} bytes but expected 5"):
        download.download(url, dest, expected_size=5)
    assert files_in(tmp_path) == []

    download.download(url, dest, expected_size=len(body), sha256=good_sha)
    hub.requests.clear()
    download.download(url, dest, expected_size=len(body), sha256=good_sha)
    assert hub.requests == []  # cached

    dest.write_bytes(b"corrupted on disk")  # a stale file that fails the check is replaced
    download.download(url, dest, sha256=good_sha)
    assert dest.read_bytes() == body and len(hub.requests) == 1


def test_processes_downloading_one_file_at_once_fetch_it_once(hub, tmp_path):
    # The ranks torchrun starts all load GPT-2's weights at the same moment: one downloads, the
    # others wait for it and read the cached file (without the lock, three requests and three
    # processes writing one .part).
    hub.files["/m/weights.bin"] = payload = bytes(range(256)) * 4000
    hub.delay["/m/weights.bin"] = 1.0
    code = f"import download; download.download({hub.url + '/m/weights.bin'!r}, {str(tmp_path / 'w.bin')!r})"
    env = dict(os.environ, NO_PROXY="127.0.0.1,localhost", PYTHONPATH=str(Path(__file__).parent))
    processes = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(3)]
    assert [p.wait(timeout=60) for p in processes] == [0, 0, 0]
    assert hub.count("/m/weights.bin") == 1
    assert (tmp_path / "w.bin").read_bytes() == payload and files_in(tmp_path) == ["w.bin"]


def test_connection_refused_says_what_to_do(tmp_path):
    with socket.socket() as s:  # find a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.bin"
    with pytest.raises(DownloadError) as excinfo:
        download.download(url, tmp_path / "x.bin", timeout=5)
    assert excinfo.value.url == url
    assert "could not connect" in excinfo.value.why
    assert "check your connection" in excinfo.value.fix and "HF_ENDPOINT" in excinfo.value.fix
    assert files_in(tmp_path) == []


def test_hf_url_and_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert download.hf_url("gpt2", "model.safetensors") == "https://huggingface.co/gpt2/resolve/main/model.safetensors"
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com/")
    assert (download.hf_url("kjj0/fineweb10B-gpt2", "a.bin", repo_type="dataset", revision="v1")
            == "https://hf-mirror.com/datasets/kjj0/fineweb10B-gpt2/resolve/v1/a.bin")
    with pytest.raises(ValueError, match="repo_type"):
        download.hf_url("x", "y", repo_type="space")
    monkeypatch.setenv("GPT_CACHE_DIR", str(tmp_path))
    assert download.cache_dir() == tmp_path
    monkeypatch.delenv("GPT_CACHE_DIR")
    assert download.cache_dir() == Path.home() / ".cache" / "gpt-from-scratch"


def test_every_bundled_file_has_its_origin_and_terms_in_the_notice():
    notice = (REPO_ROOT / "NOTICE.md").read_text(encoding="utf-8")
    bundled = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "assets").rglob("*") if p.is_file())
    assert bundled, "assets/ is empty"
    for path in bundled:
        assert f"`{path}`" in notice, f"{path} is bundled but NOTICE.md does not say where it comes from"
    # OpenAI's licence for the GPT-2 files must travel with them, in full.
    assert "Modified MIT License" in notice and "Software Copyright (c) 2019 OpenAI" in notice
    assert (REPO_ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")


# ----------------------------------------------------------------------------
# The one data reader: data.BatchLoader (windows, ranks, resume, memory, errors)


def write_bin_dataset(directory, train_tokens, val_tokens, vocab_size=65, tokenizer="char"):
    directory.mkdir(parents=True)
    np.asarray(train_tokens, dtype="<u2").tofile(directory / "train.bin")
    np.asarray(val_tokens, dtype="<u2").tofile(directory / "val.bin")
    chars = [chr(32 + i) for i in range(vocab_size)] if tokenizer == "char" else None  # any distinct characters
    data.write_meta(directory, {"tokenizer": tokenizer, "vocab_size": vocab_size, "dtype": "uint16",
                                   "format": "bin", "train_tokens": len(train_tokens),
                                   "val_tokens": len(val_tokens), "chars": chars})
    return directory


def test_batches_are_next_token_windows_from_llmc_shards(tmp_path):
    directory = tmp_path / "shards"
    directory.mkdir()
    # Two shards of consecutive ids with a gap between them: a window crossing from one file
    # into the other would show a jump.
    data.write_shard(directory / "train_1.bin", np.arange(0, 300))
    data.write_shard(directory / "train_2.bin", np.arange(1000, 1100))
    data.write_shard(directory / "val_0.bin", np.arange(5000, 5050))
    data.write_meta(directory, {"tokenizer": "gpt2", "vocab_size": 50257, "dtype": "uint16",
                                   "format": "shards", "train_shards": ["train_1.bin", "train_2.bin"],
                                   "val_shards": ["val_0.bin"]})
    loader = BatchLoader(directory, batch_size=8, block_size=16)
    seen_files = set()
    for _ in range(50):
        x, y = train.inputs_and_targets(loader.next_windows())
        assert x.shape == y.shape == (8, 16) and x.dtype == torch.int64
        assert torch.equal(y[:, :-1], x[:, 1:])  # y is x shifted by one
        assert torch.all(y - x == 1)  # consecutive: within one file, and the header skipped
        seen_files |= {int(v) // 1000 for v in x[:, 0]}
    assert seen_files == {0, 1}  # both train shards are sampled
    windows = next(loader.eval_windows("val", 1))
    assert windows.shape == (8, 17) and windows.min() >= 5000


def test_the_last_window_of_every_file_is_drawn(tmp_path):
    # Files of exactly T + 1 tokens hold one window each, whose last target is the file's last
    # token: every file must be drawn (no off-by-one in choosing the file) and that token used.
    directory = tmp_path / "shards"
    directory.mkdir()
    names = [f"train_{i}.bin" for i in range(3)]
    for i, name in enumerate(names):
        data.write_shard(directory / name, np.arange(1000 * i, 1000 * i + 17))
    data.write_meta(directory, {"tokenizer": "gpt2", "vocab_size": 50257, "dtype": "uint16",
                                   "format": "shards", "train_shards": names, "val_shards": names[:1]})
    loader = BatchLoader(directory, batch_size=8, block_size=16)
    seen_files = set()
    for _ in range(10):
        x, y = train.inputs_and_targets(loader.next_windows())
        assert torch.all(y[:, -1] % 1000 == 16)
        seen_files |= {int(v) // 1000 for v in x[:, 0]}
    assert seen_files == {0, 1, 2}


def test_ranks_take_their_slice_of_one_stream_and_resume_replays_it(data_dir):
    tiny = data_dir / "tiny"
    single = BatchLoader(tiny, batch_size=4, block_size=16, seed=7)
    rank0 = BatchLoader(tiny, batch_size=4, block_size=16, seed=7, rank=0, world_size=2)
    rank1 = BatchLoader(tiny, batch_size=4, block_size=16, seed=7, rank=1, world_size=2)
    for _ in range(3):
        first, second = single.next_windows(), single.next_windows()
        x0, x1 = rank0.next_windows(), rank1.next_windows()
        assert not torch.equal(x0, x1)  # ranks see different data...
        assert torch.equal(x0, first) and torch.equal(x1, second)  # ...together what one process sees

    state = rank0.state_dict()
    expected = [rank0.next_windows() for _ in range(3)]
    fresh = BatchLoader(tiny, batch_size=4, block_size=16, seed=999, rank=0, world_size=2)
    fresh.load_state_dict(state)
    assert all(torch.equal(fresh.next_windows(), x) for x in expected)


def test_eval_windows_are_fixed_and_do_not_move_the_training_stream(data_dir):
    loader = BatchLoader(data_dir / "tiny", batch_size=4, block_size=16)
    before = loader.state_dict()["generator"].clone()
    first = list(loader.eval_windows("val", 3))
    again = list(loader.eval_windows("val", 3))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert torch.equal(loader.state_dict()["generator"], before)


def current_rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from Linux's /proc")
def test_loader_memory_stays_flat_over_thousands_of_batches(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 65, size=4_000_000, dtype=np.uint16)  # an 8 MB file
    directory = write_bin_dataset(tmp_path / "big", tokens, tokens[:1000])
    loader = BatchLoader(directory, batch_size=16, block_size=256)
    for _ in range(200):  # warm up allocator caches
        loader.next_windows()
    tracemalloc.start()
    rss_before = current_rss_bytes()
    for _ in range(2000):  # 8M tokens read at random: every page of the file, many times over
        loader.next_windows()
    rss_growth = current_rss_bytes() - rss_before
    python_growth = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert rss_growth < 2_000_000, f"RSS grew by {rss_growth / 1e6:.1f} MB"
    assert python_growth < 1_000_000, f"Python allocations grew by {python_growth / 1e6:.1f} MB"

    # The measurement can see the leak it guards against: a memmap kept open and read all over
    # maps the whole 8 MB file into the process.
    kept = np.memmap(directory / "train.bin", dtype=np.uint16, mode="r")
    rss_before = current_rss_bytes()
    kept[::1024].sum()  # touch every 4 KB page
    assert current_rss_bytes() - rss_before > 6_000_000
    del kept


def test_missing_dataset_names_the_prepare_command(tmp_path):
    with pytest.raises(DataError, match=r"python prepare\.py fineweb10B --num_shards=1"):
        train.main(["--dataset=fineweb10B", f"--data_dir={tmp_path}", f"--out_dir={tmp_path / 'out'}",
                    "--device=cpu"])
    directory = write_bin_dataset(tmp_path / "mytext", range(100), range(50))
    (directory / "val.bin").unlink()
    with pytest.raises(DataError, match=r"val\.bin is missing.*python prepare\.py text .*--name=mytext"):
        BatchLoader(directory, batch_size=2, block_size=8)


def test_split_shorter_than_a_window_says_what_it_has_and_needs(tmp_path, data_dir):
    directory = write_bin_dataset(tmp_path / "short", range(1000), range(10))
    with pytest.raises(DataError, match=r"val split .* has 10 tokens.*block_size=16 needs at least 17"):
        BatchLoader(directory, batch_size=2, block_size=16)
    BatchLoader(directory, batch_size=2, block_size=9)  # 10 tokens are exactly one window of 9 + 1
