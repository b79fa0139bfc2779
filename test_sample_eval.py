"""Tests for sample.py and eval.py: prompts, streaming, checkpoint/tokenizer checks, held-out
perplexity and HellaSwag scoring (on a small hand-made file served from 127.0.0.1)."""

import dataclasses
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import data
import engine
import eval as evaluation
import sample
from checkpoint import CheckpointError, load_model, save_checkpoint
from common import ConfigError
from data import DataError
from download import DownloadError, cache_dir
from model import GPT, GPTConfig
from tokenizer import BPETokenizer, CharTokenizer, GPT2Tokenizer, TokenizerError

CHARS = sorted(set("abcdefghijklmnopqrstuvwxyz \n.,!?"))


def write_checkpoint(out_dir, model, meta):
    save_checkpoint({"model": model.state_dict(), "model_args": dataclasses.asdict(model.config),
                     "meta": meta, "iter_num": 7}, out_dir / "ckpt.pt")


def char_model(vocab_size=len(CHARS), block_size=16):
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=1, n_head=2, n_embd=16))


def gpt2_vocab_model(block_size=64):
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=block_size, vocab_size=50257, n_layer=1, n_head=2, n_embd=32))


# ---------------------------------------------------------------------------- sample.py

def test_prompt_with_characters_outside_the_vocabulary_lists_them():
    with pytest.raises(TokenizerError, match=r"'Z'.*'é'|'é'.*'Z'"):
        sample.prompt_ids("hello Zé", CharTokenizer(CHARS), 16)


def test_empty_prompt_starts_from_the_natural_start_token():
    assert sample.prompt_ids("", GPT2Tokenizer(), 16) == [50256]
    assert sample.prompt_ids("", CharTokenizer(CHARS), 16) == [CHARS.index("\n")]
    assert sample.prompt_ids("", CharTokenizer("abc"), 16) == [0]  # no newline: the first character


@pytest.mark.parametrize("eot", [False, True])
def test_empty_prompt_of_a_learned_bpe_model_is_a_newline_or_its_end_of_text(eot):
    tokenizer = BPETokenizer.train("To be, or not to be:\nthat is the question.\n" * 20, 270, eot)
    ids = sample.prompt_ids("", tokenizer, 16)
    if eot:
        assert ids == [tokenizer.eot_token] == [269]
    else:  # not id 0, a NUL byte the model never saw in training
        assert ids == tokenizer.encode("\n") and tokenizer.decode(ids) == "\n"


def test_long_prompt_is_cropped_with_a_warning_that_says_what_generation_sees(capsys):
    tokenizer, text = CharTokenizer(CHARS), "abcdefghij" * 3
    ids = sample.prompt_ids(text, tokenizer, 16)
    assert ids == tokenizer.encode(text[-8:])
    assert "only its last 8 tokens are used" in capsys.readouterr().err
    # ...which is true: generating from the whole prompt gives what generating from those gives.
    model = char_model(block_size=16)
    whole = engine.generate(model, torch.tensor([tokenizer.encode(text)]), 10, temperature=0)[0, -10:]
    cropped = engine.generate(model, torch.tensor([ids]), 10, temperature=0)[0, -10:]
    assert torch.equal(whole, cropped)
    sample.prompt_ids(text[:15], tokenizer, 16)  # one token short of the window: kept whole, no warning
    assert capsys.readouterr().err == ""


def test_prompt_from_file(tmp_path):
    (tmp_path / "p.txt").write_text("hello world")
    assert sample.prompt_ids(f"FILE:{tmp_path / 'p.txt'}", GPT2Tokenizer(), 64) == [31373, 995]
    with pytest.raises(ConfigError, match="there is no file"):
        sample.prompt_ids(f"FILE:{tmp_path / 'missing.txt'}", GPT2Tokenizer(), 64)


def test_streamed_text_equals_the_generated_tokens(tmp_path):
    model = gpt2_vocab_model().eval()
    tokenizer = GPT2Tokenizer()
    cfg = sample.SampleConfig(max_new_tokens=30, temperature=0.0)
    ids = tokenizer.encode("Once upon a time")
    out = io.StringIO()
    new_ids = sample.stream_sample(model, tokenizer, ids, cfg, "cpu", torch.no_grad(), None, out)
    expected = engine.generate(model, torch.tensor([ids]), 30, temperature=0)[0, len(ids):].tolist()
    assert new_ids == expected
    assert out.getvalue() == tokenizer.decode(expected)


def test_sample_main_prints_prompt_and_greedy_continuation_of_each_sample(tmp_path, capsys):
    model = char_model()
    tokenizer = CharTokenizer(CHARS)
    write_checkpoint(tmp_path, model, {"tokenizer": "char", "vocab_size": len(CHARS), "chars": CHARS,
                                       "name": "tiny"})
    sample.main([f"--out_dir={tmp_path}", "--start=hello", "--num_samples=2", "--max_new_tokens=20",
                 "--temperature=0", "--device=cpu"])
    captured = capsys.readouterr()
    expected = engine.generate(model, torch.tensor([tokenizer.encode("hello")]), 20, temperature=0)
    text = tokenizer.decode(expected[0].tolist())  # the prompt and what the model adds to it
    # stdout is the text alone, so `python sample.py > out.txt` keeps just that; the statistics
    # lines go to stderr.
    assert captured.out == (text + "\n") * 2
    assert captured.err.count("---------------- sample") == 2 and captured.err.count("sample 2/2") == 1


def test_empty_prompt_prints_only_the_generated_text(tmp_path, capsys):
    model = char_model()
    tokenizer = CharTokenizer(CHARS)
    write_checkpoint(tmp_path, model, {"tokenizer": "char", "chars": CHARS})
    sample.main([f"--out_dir={tmp_path}", "--start=", "--num_samples=1", "--max_new_tokens=6",
                 "--temperature=0", "--device=cpu"])
    start = torch.tensor([tokenizer.encode("\n")])  # a character model's start token
    new = engine.generate(model, start, 6, temperature=0)[0, 1:].tolist()
    assert capsys.readouterr().out == tokenizer.decode(new) + "\n"


@pytest.mark.parametrize("option", ["--max_new_tokens=0", "--num_samples=0"])
def test_sample_refuses_nothing_to_generate_before_loading_a_model(tmp_path, option):
    with pytest.raises(ConfigError, match=option.split("=")[0][2:] + " must be at least 1, got 0"):
        sample.main([f"--out_dir={tmp_path / 'no-such-run'}", option])  # no checkpoint needed to say so


def test_a_character_split_across_tokens_is_printed_once_whole(monkeypatch):
    tokenizer = GPT2Tokenizer()
    ids = tokenizer.encode("a🙂b")
    assert len(ids) > 3  # the emoji takes more than one token

    def replay(*args, **kwargs):  # a "model" that generates exactly these tokens
        yield from (torch.tensor([[i]]) for i in ids)

    monkeypatch.setattr(sample, "generate_tokens", replay)
    out = io.StringIO()
    sample.stream_sample(None, tokenizer, [0], sample.SampleConfig(), "cpu", torch.no_grad(), None, out)
    assert out.getvalue() == "a🙂b"  # no replacement character, nothing twice


def test_checkpoint_whose_vocabulary_disagrees_with_its_tokenizer_is_an_error(tmp_path):
    model = char_model(vocab_size=len(CHARS) + 3)
    write_checkpoint(tmp_path, model, {"tokenizer": "char", "chars": CHARS})
    with pytest.raises(CheckpointError, match=rf"{len(CHARS) + 3}.*{len(CHARS)}"):
        load_model("resume", str(tmp_path), "cpu")


def test_stop_at_end_of_text(tmp_path):
    model = gpt2_vocab_model().eval()
    with torch.no_grad():  # make <|endoftext|> the likeliest next token everywhere
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.fill_(1.0)  # every final hidden state = all ones
        model.lm_head.weight[50256] = 1.0  # ...which scores <|endoftext|> highest
    cfg = sample.SampleConfig(max_new_tokens=20, temperature=0.0, stop_at_eot=True)
    new_ids = sample.stream_sample(model, GPT2Tokenizer(), [464], cfg, "cpu", torch.no_grad(), None,
                                   io.StringIO())
    assert new_ids == []  # the first token was <|endoftext|>: nothing printed, stopped at once


# ---------------------------------------------------------------------------- perplexity

def val_batches(tmp_path, arrays, block_size, batch_size):
    """data.consecutive_batches over a dataset whose val split is these token arrays, one
    llm.c shard each: what eval.py perplexity reads."""
    names = [f"val_{i}.bin" for i in range(len(arrays))]
    for name, tokens in zip(names, arrays):
        data.write_shard(tmp_path / name, tokens)
    data.write_meta(tmp_path, {"tokenizer": "char", "vocab_size": len(CHARS), "chars": CHARS,
                               "format": "shards", "train_shards": names, "val_shards": names})
    return data.consecutive_batches(tmp_path, "val", block_size, batch_size)


def test_perplexity_equals_the_models_own_loss_over_the_same_windows(tmp_path):
    model = char_model().eval()
    T = model.config.block_size
    tokens = np.random.default_rng(0).integers(0, len(CHARS), size=4 * T + 1).astype(np.uint16)
    result = evaluation.perplexity(model, val_batches(tmp_path, [tokens], T, batch_size=3))
    x = torch.from_numpy(tokens[:-1].astype(np.int64)).view(4, T)
    y = torch.from_numpy(tokens[1:].astype(np.int64)).view(4, T)
    with torch.no_grad():
        _, loss = model(x, y)
    assert result["tokens"] == 4 * T
    assert abs(result["loss"] - loss.item()) < 1e-5
    assert abs(result["ppl"] - math.exp(loss.item())) < 1e-3


def test_perplexity_counts_a_short_last_window_and_several_files(tmp_path):
    model = char_model().eval()
    T = model.config.block_size
    rng = np.random.default_rng(0)
    a = rng.integers(0, len(CHARS), size=T + 6).astype(np.uint16)  # one full window + 5 predictions
    b = rng.integers(0, len(CHARS), size=T + 1).astype(np.uint16)
    result = evaluation.perplexity(model, val_batches(tmp_path, [a, b], T, batch_size=8))
    assert result["tokens"] == T + 5 + T
    # the same figure computed window by window, without padding
    total = 0.0
    for arr, start, end in ((a, 0, T), (a, T, T + 5), (b, 0, T)):
        x = torch.from_numpy(arr[start:end].astype(np.int64))[None]
        y = torch.from_numpy(arr[start + 1:end + 1].astype(np.int64))[None]
        with torch.no_grad():
            total += model(x, y)[1].item() * (end - start)
    assert abs(result["loss"] - total / result["tokens"]) < 1e-5


def test_perplexity_max_tokens_stops_after_the_window_that_reaches_it(tmp_path):
    model = char_model().eval()
    T = model.config.block_size
    tokens = np.random.default_rng(0).integers(0, len(CHARS), size=10 * T + 1).astype(np.uint16)
    (tmp_path / "all").mkdir()
    (tmp_path / "two").mkdir()
    result = evaluation.perplexity(model, val_batches(tmp_path / "all", [tokens], T, 1), max_tokens=T + 1)
    assert result["tokens"] == 2 * T  # two windows are needed to reach T + 1 tokens
    assert result == evaluation.perplexity(model, val_batches(tmp_path / "two", [tokens[:2 * T + 1]], T, 1))


def test_perplexity_refuses_a_dataset_with_another_vocabulary(tmp_path, monkeypatch, capsys):
    import prepare
    data_dir = tmp_path / "data"
    monkeypatch.setattr(data, "DATA_DIR", data_dir)
    write_checkpoint(tmp_path, char_model(), {"tokenizer": "char", "vocab_size": len(CHARS),
                                              "chars": CHARS, "name": "tiny"})
    prepare.prepare_text("".join(CHARS) * 20, "same", "char", data_dir=data_dir)  # the model's characters
    # Fewer characters, so every id means another character than it does to the model.
    prepare.prepare_text("hello world, hello!\n" * 20, "other", "char", data_dir=data_dir)
    args = [f"--out_dir={tmp_path}", "--device=cpu", "--json=True"]
    evaluation.main(["perplexity", "--dataset=same"] + args)
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["tokens"] > 0
    with pytest.raises(DataError, match=rf"vocabulary of \d+ tokens, not the model's \(char, {len(CHARS)}"):
        evaluation.main(["perplexity", "--dataset=other"] + args)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_perplexity_reports_bits_per_byte_over_the_bytes_of_the_val_text(tmp_path, monkeypatch, capsys, kind):
    import prepare
    data_dir = tmp_path / "data"
    monkeypatch.setattr(data, "DATA_DIR", data_dir)
    # Non-ASCII text: "é" is one character but two bytes, so even for characters bpb < loss / ln 2.
    text = prepare.read_text_file(prepare.SHAKESPEARE_PATH)[:12_000].replace("the", "thé")
    prepare.prepare_text(text, "verse", kind, data_dir, vocab_size=300 if kind == "bpe" else None)
    meta = data.load_meta(data_dir / "verse")
    write_checkpoint(tmp_path, char_model(vocab_size=meta["vocab_size"], block_size=32), {**meta, "name": "verse"})
    evaluation.main(["perplexity", "--dataset=verse", f"--out_dir={tmp_path}", "--device=cpu", "--json=True"])
    text_line, json_line = capsys.readouterr().out.splitlines()[-2:]
    result = json.loads(json_line)
    # Every val token but the first is a target, so the bytes scored are the val text's bytes
    # less the first token's.
    _, val_text = prepare.split_text(text)
    first = int(data.load_split(data_dir / "verse", "val")[0][0])
    tok = load_model("resume", tmp_path, "cpu")[1]
    first_bytes = tok.chars[first].encode("utf-8") if kind == "char" else tok.encoding.decode_bytes([first])
    assert result["bytes"] == len(val_text.encode("utf-8")) - len(first_bytes)
    assert result["bpb"] == pytest.approx(result["loss"] * result["tokens"] / (math.log(2) * result["bytes"]), rel=1e-6)
    assert result["bpb"] < result["loss"] / math.log(2)
    assert f"{result['bpb']:.4f} bits per byte" in text_line


def test_perplexity_refuses_a_bpe_dataset_with_other_merges(tmp_path, monkeypatch):
    import prepare
    data_dir = tmp_path / "data"
    monkeypatch.setattr(data, "DATA_DIR", data_dir)
    shakespeare = prepare.read_text_file(prepare.SHAKESPEARE_PATH)
    prepare.prepare_text(shakespeare[:5000], "first", "bpe", data_dir, vocab_size=300)
    prepare.prepare_text(shakespeare[5000:10000], "second", "bpe", data_dir, vocab_size=300)  # same size
    meta = data.load_meta(data_dir / "first")
    write_checkpoint(tmp_path, char_model(vocab_size=300), {**meta, "name": "first"})
    args = [f"--out_dir={tmp_path}", "--device=cpu"]
    evaluation.main(["perplexity", "--dataset=first"] + args)
    with pytest.raises(DataError, match=r"vocabulary of 300 tokens, not the model's \(bpe, 300"):
        evaluation.main(["perplexity", "--dataset=second"] + args)


# ---------------------------------------------------------------------------- HellaSwag

ITEMS = [
    # The item the test model is trained on: its correct ending must win.
    {"ctx": "A man is sitting on a roof. He", "label": 2,
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                 "starts pulling up roofing on a roof.", "is holding a rubik's cube."]},
    {"ctx": "A woman walks a dog in the park. The dog", "label": 0,
     "endings": ["chases a ball.", "bakes a cake in the oven.", "reads the newspaper aloud.",
                 "drives the car home."]},
    {"ctx": "Two kids play chess. One of them", "label": 3,
     "endings": ["eats the board.", "flies away.", "swims across.", "moves a knight forward."]},
]


def serve_hellaswag(fake_hub, monkeypatch, items=ITEMS, text=None):
    body = text if text is not None else "".join(json.dumps(item) + "\n" for item in items)
    fake_hub.files["/hs/hellaswag_val.jsonl"] = body.encode()
    monkeypatch.setenv("HELLASWAG_BASE_URL", fake_hub.url + "/hs")


def overfit(model, text, tokenizer, steps=60):
    ids = torch.tensor([tokenizer.encode(text)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        _, loss = model(ids[:, :-1], ids[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_hellaswag_download_is_cached_and_checked(fake_hub, monkeypatch):
    serve_hellaswag(fake_hub, monkeypatch)
    path = evaluation.hellaswag_path()
    assert evaluation.read_hellaswag(path) == ITEMS
    evaluation.hellaswag_path()
    assert fake_hub.count("/hs/hellaswag_val.jsonl") == 1


def test_malformed_hellaswag_file_is_an_error_and_not_kept(fake_hub, monkeypatch):
    serve_hellaswag(fake_hub, monkeypatch, text='{"ctx": "x", "endings": ["a"], "label": 0}\n')
    with pytest.raises(DownloadError, match="4 'endings'"):
        evaluation.hellaswag_path()
    assert not list(cache_dir().rglob("*.jsonl"))


def test_item_the_model_was_trained_on_is_answered_correctly(fake_hub, monkeypatch):
    serve_hellaswag(fake_hub, monkeypatch)
    tokenizer = GPT2Tokenizer()
    first = ITEMS[0]
    model = overfit(gpt2_vocab_model(), first["ctx"] + " " + first["endings"][first["label"]], tokenizer)
    items = evaluation.read_hellaswag(evaluation.hellaswag_path(), limit=1)
    result = evaluation.hellaswag(model, items, tokenizer, batch_size=2, progress=False)
    assert result == {"acc": 1.0, "acc_norm": 1.0, "n": 1}


@pytest.mark.parametrize("block_size", [64, 12])  # 12: most rows are longer than the context
def test_batched_scores_equal_scoring_each_ending_alone(block_size):
    tokenizer = GPT2Tokenizer()
    model = gpt2_vocab_model(block_size).eval()
    sums, means = evaluation.score_items(model, ITEMS, tokenizer)
    for item, item_sums, item_means in zip(ITEMS, sums, means):
        for ending, s, m in zip(item["endings"], item_sums, item_means):
            end_ids = tokenizer.encode(" " + ending)
            # A row longer than the context keeps its last block_size tokens: the ending.
            ids = torch.tensor([(tokenizer.encode(item["ctx"]) + end_ids)[-block_size:]])
            with torch.no_grad():
                logits, _ = model(ids)
            losses = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none")
            # predictions of the ending's tokens (all of them, unless the ending alone overflows)
            ending_losses = losses[-min(len(end_ids), ids.size(1) - 1):]
            assert abs(ending_losses.sum().item() - s) < 1e-4
            assert abs(ending_losses.mean().item() - m) < 1e-5


def test_acc_uses_total_loss_and_acc_norm_loss_per_token(monkeypatch):
    # Ending 0: short, total loss 3 (1.5 per token). Ending 1: long, total 4 (1.0 per token).
    # acc (total) picks 0, acc_norm (per token) picks 1: label 1 => acc 0, acc_norm 1.
    monkeypatch.setattr(evaluation, "score_items",
                        lambda *a, **k: ([[3.0, 4.0, 9.0, 9.0]], [[1.5, 1.0, 9.0, 9.0]]))
    model = char_model()
    result = evaluation.hellaswag(model, [{"label": 1}], None, progress=False)
    assert result == {"acc": 0.0, "acc_norm": 1.0, "n": 1}


@pytest.mark.parametrize("argv, message", [
    (["sample.py", "--out_dir={missing}"], "no checkpoint at"),
    (["sample.py", "--temprature=0.5"], "did you mean 'temperature'"),
    (["sample.py", "--out_dir={missing}", "--temperature=-1"], "temperature must be >= 0"),
    (["eval.py"], "the first argument must be the task"),
    (["eval.py", "perplexty"], "unknown task 'perplexty'"),
    (["train.py", "--device=tpu"], "not a device this code runs on"),
    (["train.py", "--parallel=fsdp"], "parallel=fsdp shards the model over the processes torchrun starts"),
    (["eval.py", "perplexity", "--out_dir={missing}"], "no checkpoint at"),
    (["bench.py", "--mode=sample"], "mode expects one of 'train', 'generate'"),
    (["sample.py", "--init_from=gtp2"], "'gtp2' is neither one of gpt2, gpt2-medium, gpt2-large, gpt2-xl "
                                        "nor a folder: did you mean 'gpt2'?"),
    (["sample.py", "--init_from={missing}"], "nor a folder"),
    (["sample.py", "--init_from={empty}"], "config.json is missing"),
    (["eval.py", "perplexity", "--init_from=gpt-2"], "did you mean 'gpt2'?"),
    (["eval.py", "perplexity", "--init_from={empty}"], "config.json is missing"),
])
def test_scripts_report_user_errors_in_one_line(tmp_path, argv, message):
    (tmp_path / "empty").mkdir()  # a folder that is no Hugging Face checkpoint
    argv = [a.format(missing=tmp_path / "no-such-run", empty=tmp_path / "empty") for a in argv]
    result = subprocess.run([sys.executable] + argv, cwd=Path(__file__).parent, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert message in result.stderr
