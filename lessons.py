"""
The book's stepping stones: the ideas of model.py and tokenizer.py as small, plain functions, in
the order a learner meets them, each tested equal to the next stage and finally to the project's
own code (test_lessons.py). This is teaching code that the book lists; training never uses it.

1. Averaging the past (Karpathy's "mathematical trick of self-attention"): every position becomes
   the mean of itself and the positions before it, first with loops (`average_previous_loop`),
   then as one matrix multiply whose weights come from a masked softmax
   (`average_previous_matmul`), the form attention uses.
2. `self_attention_no_weights`: the same weighted sum, but the weights now depend on the data
   (how much two tokens' vectors agree) instead of being uniform.
3. `self_attention`: one head with trainable query, key and value projections and the
   1/sqrt(head size) scale; the weights are learned, so the model chooses what to look for.
4. `multi_head_attention`: several heads side by side, then an output projection; it takes the
   weights of model.py's `CausalSelfAttention` as they are and gives its output.
5. `layer_norm` and `gelu_tanh`: the two other pieces of a block, written out; equal to PyTorch's
   `nn.LayerNorm` and `nn.GELU(approximate="tanh")`.
6. `train_bpe_naive`: byte-level BPE as the textbook states it, recounting every pair for every
   merge. Slow, and merge for merge the same as tokenizer.py's fast `train_bpe`.

And the answer to one of the book's exercises, `sliding_window_mask`: a causal mask that sees only
the last few positions.

Shapes: B = batch, T = sequence length, C = channels (n_embd), nh = heads, hs = head size.
"""

import collections
import math

import torch
from torch.nn import functional as F

import tokenizer

# --------------------------------------------------------------------------------------------
# 1. Averaging the past
# --------------------------------------------------------------------------------------------


def average_previous_loop(x):
    """Position t becomes the mean of positions 0..t: the simplest way for a token to "talk" to
    the tokens before it. Never to those after it: at position t the model learns to predict
    token t+1, so it must not see it."""
    B, T, C = x.shape
    out = torch.zeros_like(x)  # (B, T, C)
    for b in range(B):
        for t in range(T):
            previous = x[b, : t + 1]  # (t+1, C): position t and everything before it
            out[b, t] = previous.mean(dim=0)  # (C,)
    return out


def average_previous_matmul(x):
    """The same averages as one matrix multiply: row t of `weights` holds 1/(t+1) in columns
    0..t and 0 after, so weights @ x averages the past of every position at once."""
    T = x.shape[1]
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))  # (T, T): key j <= query t
    # Softmax of equal scores is uniform; -inf becomes exactly 0 weight. Attention keeps this
    # masked softmax and only replaces the zeros with scores that depend on the tokens.
    scores = torch.zeros(T, T).masked_fill(~allowed, float("-inf"))  # (T, T)
    weights = F.softmax(scores, dim=-1)  # (T, T), every row sums to 1
    return weights @ x  # (T, T) @ (B, T, C) -> (B, T, C)


# --------------------------------------------------------------------------------------------
# 2. Self-attention without weights
# --------------------------------------------------------------------------------------------


def self_attention_no_weights(x):
    """Average the past, but weighted by how much each earlier token's vector agrees with this
    one's (their dot product): a token can now attend more to some tokens than to others."""
    T = x.shape[1]
    scores = x @ x.transpose(-2, -1)  # (B, T, C) @ (B, C, T) -> (B, T, T)
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device))  # (T, T)
    scores = scores.masked_fill(~allowed, float("-inf"))  # the future: weight 0, as before
    weights = F.softmax(scores, dim=-1)  # (B, T, T), every row sums to 1
    return weights @ x  # (B, T, T) @ (B, T, C) -> (B, T, C)


# --------------------------------------------------------------------------------------------
# 3. One head of self-attention
# --------------------------------------------------------------------------------------------


def self_attention(x, w_q, w_k, w_v, dropout=0.0, training=False, b_q=0.0, b_k=0.0, b_v=0.0):
    """One causal attention head. w_q, w_k, w_v: (C, hs) matrices, b_q, b_k, b_v: (hs,) biases.
    A token's query says what it looks for, a key what it offers, a value what it passes on;
    step 2 used x itself for all three, and here each is learned. Returns (B, T, hs)."""
    T, hs = x.shape[1], w_q.shape[1]
    q, k, v = x @ w_q + b_q, x @ w_k + b_k, x @ w_v + b_v  # each (B, T, hs)
    # A dot product of two hs-dim vectors with unit-variance entries has variance hs: without
    # 1/sqrt(hs), scores grow with the head size, softmax turns one-hot and gradients vanish.
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, T, T)
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device))  # (T, T)
    weights = F.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)  # (B, T, T)
    # Dropout zeroes random weights while training (and scales the rest up); off in eval.
    weights = F.dropout(weights, p=dropout, training=training)
    return weights @ v  # (B, T, T) @ (B, T, hs) -> (B, T, hs)


# --------------------------------------------------------------------------------------------
# 4. Multi-head attention
# --------------------------------------------------------------------------------------------


def multi_head_attention(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_head):
    """n_head heads, each on its own hs = C // n_head slice of the projections, side by side.
    The weights are laid out as nn.Linear stores them, (out, in): c_attn_weight is (3C, C) with
    the queries' rows, then the keys', then the values'; biases may be None."""
    C = x.shape[-1]
    hs = C // n_head
    if c_attn_bias is None:  # a layer built with bias=False: adding zeros changes nothing
        c_attn_bias = torch.zeros(3 * C, dtype=x.dtype, device=x.device)
    w_q, w_k, w_v = c_attn_weight.split(C, dim=0)  # each (C, C), (out, in); head h: hs rows
    b_q, b_k, b_v = c_attn_bias.split(C)  # each (C,)
    heads = []
    for h in range(n_head):
        rows = slice(h * hs, (h + 1) * hs)
        # .T: from nn.Linear's (out, in) to the (C, hs) that x @ w expects
        heads.append(self_attention(x, w_q[rows].T, w_k[rows].T, w_v[rows].T,
                                    b_q=b_q[rows], b_k=b_k[rows], b_v=b_v[rows]))  # (B, T, hs)
    y = torch.cat(heads, dim=-1)  # (B, T, nh * hs) = (B, T, C)
    # The output projection mixes what the separate heads found back into one vector.
    y = y @ c_proj_weight.T  # (B, T, C) @ (C, C) -> (B, T, C)
    return y if c_proj_bias is None else y + c_proj_bias


# --------------------------------------------------------------------------------------------
# 5. LayerNorm and GELU
# --------------------------------------------------------------------------------------------


def layer_norm(x, weight, bias, eps=1e-5):
    """Give each token's vector mean 0 and variance 1 over its C channels, then let the learned
    weight and bias (each (C,)) rescale and shift it: the residual stream's scale stays steady
    however deep the model is. bias may be None (GPTConfig.bias=False)."""
    mean = x.mean(dim=-1, keepdim=True)  # (B, T, 1)
    var = x.var(dim=-1, keepdim=True, unbiased=False)  # (B, T, 1): divided by C, as nn.LayerNorm
    x_hat = (x - mean) / torch.sqrt(var + eps)  # (B, T, C); eps: no division by 0 for flat x
    out = x_hat * weight
    return out if bias is None else out + bias


def gelu_tanh(x):
    """GELU is x * P(a standard normal < x): a smooth ReLU. GPT-2 used this tanh approximation
    of the normal's cumulative distribution, not the exact erf form; its published weights were
    trained with it, so model.py's MLP keeps it (nn.GELU(approximate="tanh"))."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


# --------------------------------------------------------------------------------------------
# 6. Byte-level BPE, the naive trainer
# --------------------------------------------------------------------------------------------


def train_bpe_naive(text, vocab_size):
    """Learn vocab_size - 256 merges, as tokenizer.train_bpe returns them: a list of (left
    token's bytes, right token's bytes), in the order learned. Every merge recounts every pair of
    the whole text, so it is slow; train_bpe updates only the counts a merge changes."""
    # Split the text into chunks (words with their leading space, numbers, ...): a merge never
    # crosses a chunk. Count each distinct chunk once, weighted by how often it occurs.
    chunk_counts = tokenizer.count_chunks(text)  # {chunk: count}, in order of first appearance
    chunks = [list(chunk.encode("utf-8")) for chunk in chunk_counts]  # each chunk as byte ids
    token_bytes = [bytes([b]) for b in range(256)]  # id -> the bytes it stands for
    merges = []
    while len(token_bytes) < vocab_size:
        # Chunks in order of first appearance, pairs left to right: the Counter's keys are in
        # the order of each pair's first appearance in the text (as merged so far).
        pair_counts = collections.Counter()
        for chunk, count in zip(chunks, chunk_counts.values()):
            for pair in zip(chunk, chunk[1:]):
                pair_counts[pair] += count
        if not pair_counts:
            raise ValueError(f"vocab_size={vocab_size}: every chunk is one token after "
                             f"{len(merges)} merges; there is no pair left to merge")
        # max() returns the first of equally frequent pairs: the one that appears first wins,
        # the same tie-break as train_bpe and tiktoken's reference trainer.
        pair = max(pair_counts, key=pair_counts.get)
        new_id = len(token_bytes)
        token_bytes.append(token_bytes[pair[0]] + token_bytes[pair[1]])
        merges.append((token_bytes[pair[0]], token_bytes[pair[1]]))
        chunks = [tokenizer.merge_pair(chunk, pair, new_id) for chunk in chunks]
    return merges


# --------------------------------------------------------------------------------------------
# An exercise's answer (the book's chapter 3)
# --------------------------------------------------------------------------------------------


def sliding_window_mask(T, window):
    """(T, T) boolean mask, True where query i may see key j: the causal mask, cut to the last
    `window` positions (j in i - window + 1 .. i). With window >= T it is the causal mask."""
    i = torch.arange(T).unsqueeze(1)  # (T, 1): query positions
    j = torch.arange(T).unsqueeze(0)  # (1, T): key positions
    return (j <= i) & (j > i - window)
