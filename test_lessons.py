"""
Tests for lessons.py, the book's stepping stones. Each stage is compared with the one before it
or with an explicit loop, and the last stages with the project's own code: multi_head_attention
with model.py's CausalSelfAttention (hand-written and fused), layer_norm and gelu_tanh with
PyTorch's modules, train_bpe_naive with tokenizer.py's train_bpe merge for merge.
"""

import collections
import inspect
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import lessons
import tokenizer
from model import CausalSelfAttention, GPTConfig

SHAKESPEARE_PATH = Path(__file__).resolve().parent / "assets" / "tinyshakespeare.txt"


def test_opening_docstring_names_every_function():
    # The docstring is the reader's map of the file: it must exist and list what is in it.
    assert lessons.__doc__ and "teaching code" in lessons.__doc__
    functions = [name for name, f in inspect.getmembers(lessons, inspect.isfunction)
                 if f.__module__ == "lessons" and not name.startswith("_")]
    assert "average_previous_loop" in functions and "train_bpe_naive" in functions
    missing = [name for name in functions if name not in lessons.__doc__]
    assert not missing, f"lessons.py's docstring does not mention {missing}"


# ---------------------------------------------------------------------------- 1. averaging

def test_average_previous_loop_equals_matmul():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 4)
    loop, matmul = lessons.average_previous_loop(x), lessons.average_previous_matmul(x)
    assert torch.allclose(loop, matmul, atol=1e-6)
    assert torch.equal(loop[:, 0], x[:, 0])  # the first position has nothing before it
    assert torch.allclose(loop[:, -1], x.mean(dim=1), atol=1e-6)  # the last sees everything


# ---------------------------------------------------------------------------- 2. no weights

def test_self_attention_no_weights_equals_a_loop_and_is_causal():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4)
    out = lessons.self_attention_no_weights(x)

    # Position t by hand: scores against positions 0..t only, softmax, weighted sum.
    t = 3
    scores = torch.stack([(x[:, t] * x[:, j]).sum(-1) for j in range(t + 1)], dim=-1)  # (B, t+1)
    expected = (F.softmax(scores, dim=-1).unsqueeze(-1) * x[:, : t + 1]).sum(dim=1)  # (B, C)
    assert torch.allclose(out[:, t], expected, atol=1e-6)

    # Causality: changing the last token changes its own output and nothing before it.
    changed = x.clone()
    changed[:, -1] += 10.0
    out_changed = lessons.self_attention_no_weights(changed)
    assert torch.equal(out_changed[:, :-1], out[:, :-1])
    assert not torch.allclose(out_changed[:, -1], out[:, -1])


def test_self_attention_no_weights_is_not_uniform_averaging():
    # The point of step 2: the weights depend on the data. The second token's score with itself
    # (3 * 3 = 9) beats its score with the first (0), so it attends almost only to itself: about
    # (0, 3), where the plain mean of the two would be (0.5, 1.5).
    x = torch.tensor([[[1.0, 0.0], [0.0, 3.0]]])  # (1, 2, 2)
    out = lessons.self_attention_no_weights(x)
    assert torch.allclose(out[0, 1], torch.tensor([0.0, 3.0]), atol=1e-3)
    assert not torch.allclose(out, lessons.average_previous_matmul(x), atol=1e-3)


# ---------------------------------------------------------------------------- 3. one head

def random_head(C=8, hs=4, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(2, 7, C)
    w_q, w_k, w_v = (torch.randn(C, hs) for _ in range(3))
    return x, w_q, w_k, w_v


def test_self_attention_equals_a_per_query_loop():
    x, w_q, w_k, w_v = random_head()
    out = lessons.self_attention(x, w_q, w_k, w_v)
    assert out.shape == (2, 7, 4)
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    for t in range(x.shape[1]):
        # Query t sees keys 0..t; softmax over those alone, no mask needed.
        scores = (q[:, t : t + 1] @ k[:, : t + 1].transpose(1, 2)).squeeze(1) / math.sqrt(4)
        expected = (F.softmax(scores, dim=-1).unsqueeze(-1) * v[:, : t + 1]).sum(dim=1)
        assert torch.allclose(out[:, t], expected, atol=1e-5), f"position {t}"


def test_self_attention_is_causal():
    x, w_q, w_k, w_v = random_head()
    out = lessons.self_attention(x, w_q, w_k, w_v)
    changed = x.clone()
    changed[:, 4:] = torch.randn(2, 3, 8)
    out_changed = lessons.self_attention(changed, w_q, w_k, w_v)
    assert torch.equal(out_changed[:, :4], out[:, :4])
    assert not torch.allclose(out_changed[:, 4:], out[:, 4:])


def test_self_attention_with_zero_queries_is_averaging_the_past():
    # With every query 0, every score is 0 and the weights are uniform: stage 3 falls back to
    # stage 1, applied to the values.
    x, _, w_k, w_v = random_head()
    out = lessons.self_attention(x, torch.zeros(8, 4), w_k, w_v)
    assert torch.allclose(out, lessons.average_previous_matmul(x @ w_v), atol=1e-6)


def test_self_attention_dropout_only_while_training():
    x, w_q, w_k, w_v = random_head()
    plain = lessons.self_attention(x, w_q, w_k, w_v)
    evaluating = lessons.self_attention(x, w_q, w_k, w_v, dropout=0.5, training=False)
    assert torch.equal(evaluating, plain)  # in eval, dropout is off: same output every time
    torch.manual_seed(1)
    training = lessons.self_attention(x, w_q, w_k, w_v, dropout=0.5, training=True)
    assert not torch.allclose(training, plain)


# ---------------------------------------------------------------------------- 4. multi-head

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("use_sdpa", [True, False])
def test_multi_head_attention_equals_the_models_attention(bias, use_sdpa):
    torch.manual_seed(0)
    config = GPTConfig(block_size=16, vocab_size=65, n_layer=1, n_head=4, n_embd=32, bias=bias,
                       use_sdpa=use_sdpa)
    attention = CausalSelfAttention(config).eval()
    assert (attention.c_attn.bias is not None) == bias  # nn.Linear's own init: random biases
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        expected = attention(x)
        ours = lessons.multi_head_attention(x, attention.c_attn.weight, attention.c_attn.bias,
                                            attention.c_proj.weight, attention.c_proj.bias,
                                            n_head=config.n_head)
    assert ours.shape == expected.shape == (2, 16, 32)
    assert torch.allclose(ours, expected, atol=1e-5), (ours - expected).abs().max()


# ---------------------------------------------------------------------------- 5. LayerNorm, GELU

@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_equals_torchs(bias):
    torch.manual_seed(0)
    reference = torch.nn.LayerNorm(16, bias=bias)
    with torch.no_grad():  # not the init's ones and zeros: a mix-up of weight and bias must show
        reference.weight.normal_()
        if bias:
            reference.bias.normal_()
    x = torch.randn(2, 5, 16) * 3 + 1
    with torch.no_grad():
        expected = reference(x)
    ours = lessons.layer_norm(x, reference.weight.detach(), None if not bias else
                              reference.bias.detach())
    assert torch.allclose(ours, expected, atol=1e-6)


def test_gelu_tanh_equals_torchs_and_differs_from_the_exact_gelu():
    x = torch.linspace(-6, 6, 1201, dtype=torch.float64)
    ours = lessons.gelu_tanh(x)
    assert torch.allclose(ours, torch.nn.GELU(approximate="tanh")(x), atol=1e-6)
    # The approximation is close to the erf form but not the same, and this test sees which.
    assert (ours - torch.nn.GELU()(x)).abs().max() > 1e-5


# ---------------------------------------------------------------------------- 6. BPE

def merges_with_rivals(text, merges):
    """How many merges had another pair exactly as frequent: a replay of the merges, so the
    tests below know they covered the tie-break."""
    chunks = [list(chunk.encode("utf-8")) for chunk in tokenizer.count_chunks(text).elements()]
    ids = {bytes([b]): b for b in range(256)}
    ties = 0
    for left, right in merges:
        pair = (ids[left], ids[right])
        counts = collections.Counter(p for chunk in chunks for p in zip(chunk, chunk[1:]))
        assert counts[pair] == max(counts.values())  # every merge took a most frequent pair
        ties += sum(count == counts[pair] for count in counts.values()) > 1
        ids[left + right] = len(ids)
        chunks = [tokenizer.merge_pair(chunk, pair, ids[left + right]) for chunk in chunks]
    return ties


def test_train_bpe_naive_equals_train_bpe_on_shakespeare():
    text = SHAKESPEARE_PATH.read_text(encoding="utf-8")[:3000]
    naive = lessons.train_bpe_naive(text, 256 + 60)
    assert len(naive) == 60
    assert naive == tokenizer.train_bpe(text, 256 + 60)
    assert merges_with_rivals(text, naive) > 10


def test_train_bpe_naive_breaks_ties_like_train_bpe():
    # Every pair here occurs once or twice. "zz" comes first, so it wins its tie although its
    # bytes are the largest (a tie-break by smallest pair would pick " x" or " y").
    text = "zz yy xx yy xx zz ab ba ab ba"
    naive = lessons.train_bpe_naive(text, 256 + 8)
    assert naive == tokenizer.train_bpe(text, 256 + 8)
    assert naive[0] == (b"z", b"z")
    assert merges_with_rivals(text, naive) >= 5


def test_train_bpe_naive_says_when_no_pair_is_left():
    with pytest.raises(ValueError, match="no pair left"):
        lessons.train_bpe_naive("ab ab", 256 + 5)


def test_the_sliding_window_mask_is_the_causal_mask_cut_to_the_window():
    from model import causal_mask
    assert torch.equal(lessons.sliding_window_mask(10, 10), causal_mask(10, 0, "cpu"))
    mask = lessons.sliding_window_mask(8, 4)  # itself and the 3 before it
    assert mask.sum(dim=1).tolist() == [1, 2, 3, 4, 4, 4, 4, 4]
    assert mask[7].tolist() == [False] * 4 + [True] * 4
    assert not (mask & ~causal_mask(8, 0, "cpu")).any()  # never a future key
