"""
The whole GPT in one file, read top to bottom: config, attention, MLP, block, model, generation.

What is in:
  - GPT-2's architecture exactly (learned positions, pre-LayerNorm blocks, GELU(tanh) MLP, tied
    input/output embeddings), so OpenAI's published weights load (hf.py) and give the same logits
    as the Hugging Face `transformers` implementation (the tests check this to 1e-4).
  - Causal self-attention written out by hand, step by step, and PyTorch's fused
    `scaled_dot_product_attention`, the same maths in one kernel (the tests prove them equal).
  - The loss, and `generate`: the plain generation loop a learner writes first. engine.py does the
    same faster (a KV cache, streaming, stop tokens, top-p), tested equal to it.

What is left out on purpose: rotary embeddings, grouped-query attention, RMSNorm and the other
post-GPT-2 changes. They are good ideas, but then the weights OpenAI released would not load.

Glossary of GPT-2's short names (kept so the published weights map one-to-one):
  wte = token embedding, wpe = position embedding, h = the list of blocks,
  ln_1/ln_2/ln_f = LayerNorms, c_attn = the q,k,v projection, c_proj = output projection,
  c_fc = the MLP's first layer.
Shapes: B = batch, T = sequence length, C = n_embd, nh = n_head, hs = head size = C // nh.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint


@dataclass
class GPTConfig:
    block_size: int = 1024  # context length: the most tokens the model ever sees at once
    vocab_size: int = 50257  # the tokenizer's real vocabulary (GPT-2 BPE: 50,257 tokens)
    n_layer: int = 12  # number of transformer blocks
    n_head: int = 12  # attention heads per block
    n_embd: int = 768  # width of the residual stream
    dropout: float = 0.0  # 0 for pretraining; 0.1+ helps when finetuning small data
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2 has them
    # The embedding table is padded to a multiple of this many rows. 50,257 is an awkward
    # number for GPU matrix units; 50,304 = 786 * 64 runs measurably faster. The padded rows
    # are never used: logits are cut back to vocab_size, so padded ids are never sampled.
    pad_vocab_to: int = 64
    use_sdpa: bool = True  # PyTorch's fused attention kernel; False = the hand-written steps

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "pad_vocab_to"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            fit = self.n_head * max(1, round(self.n_embd / self.n_head))
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} is not divisible by n_head="
                             f"{self.n_head}; each head gets n_embd // n_head dimensions, so pick "
                             f"e.g. n_embd={fit}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def padded_vocab_size(self):
        return math.ceil(self.vocab_size / self.pad_vocab_to) * self.pad_vocab_to


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------

def causal_mask(T, past, device):
    """(T, past+T) boolean mask, True where query i (at absolute position past+i) may see key j.
    past: tokens before these T (0 in training; the cached ones when generating)."""
    query_pos = torch.arange(past, past + T, device=device).unsqueeze(1)  # (T, 1)
    key_pos = torch.arange(past + T, device=device).unsqueeze(0)  # (1, past+T)
    return key_pos <= query_pos


class CausalSelfAttention(nn.Module):
    """
    Multi-head causal self-attention. The textbook form is

        MultiHeadAttention(q, k, v, mask) = Concat(head_1, ..., head_h) W_O,
        head_i = softmax(q W_Q_i (k W_K_i)^T / sqrt(d_k) + mask) v W_V_i

    In *self*-attention q, k and v are all the same input x. Here the h separate W_Q_i, W_K_i,
    W_V_i matrices are stacked side by side into one Linear layer (`c_attn`, C -> 3C) so one
    matrix multiply computes every head's queries, keys and values; `c_proj` is W_O. The mask is
    always the causal one, built in.

    layer_idx is the number of the block this layer sits in: its own slot in a KV cache.
    """

    def __init__(self, config, layer_idx=0):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.head_size = config.n_embd // config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout
        self.use_sdpa = config.use_sdpa

    def forward(self, x, kv_cache=None):
        B, T, C = x.size()

        # 1. Project to queries, keys and values: x W_Q, x W_K, x W_V for all heads at once.
        q, k, v = self.c_attn(x).split(C, dim=2)  # each (B, T, C)

        # 2. Split heads: C = nh * hs. Each head attends on its own hs-dimensional slice, so
        #    different heads can look for different things (previous token, same word, ...).
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)

        # Generating with a KV cache (engine.py): the keys and values of the earlier tokens are
        # stored; these tokens' are added, and the queries attend over all of them.
        if kv_cache is not None:
            k, v = kv_cache.append(self.layer_idx, k, v)  # each (B, nh, past + T, hs)
        past = k.size(2) - T  # tokens before these: 0 in training

        if not self.use_sdpa:
            # 3. Scores: how much each query matches each key, scaled by 1/sqrt(hs). A dot product
            #    of two random hs-dim vectors has variance ~hs; without the scale, scores grow with
            #    the head size, softmax saturates to a one-hot and its gradients vanish.
            att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_size)  # (B, nh, T, past+T)
            # 4. Causal mask. The model is trained to predict token t+1 at every position t, all
            #    positions in parallel. If position t could attend to t+1, the answer would be in
            #    its input and the model would learn to copy instead of predict; at generation
            #    time the future does not exist yet. So each query only sees keys at or before it:
            #    future scores are set to -inf, which softmax turns into exactly 0 weight.
            att = att.masked_fill(~causal_mask(T, past, x.device), float("-inf"))
            # 5. Softmax over the keys: each row becomes weights that sum to 1.
            att = F.softmax(att, dim=-1)
            # 6. Dropout on the weights (regularisation; off in eval and for pretraining).
            att = self.attn_dropout(att)
            # 7. Weighted sum of values: each token gathers information from those it attends to.
            y = att @ v  # (B, nh, T, past+T) x (B, nh, past+T, hs) -> (B, nh, T, hs)
        else:
            # Steps 3-7 in one fused kernel (FlashAttention-style: the T x T scores are never
            # stored). The same maths; the tests prove it. Its is_causal=True mask lets query i
            # see keys 0..i, which is step 4's only when there is no past: with a cache, step 4's
            # mask is passed instead.
            mask = None if past == 0 else causal_mask(T, past, x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=past == 0,
                                               dropout_p=self.dropout if self.training else 0.0)

        # 8. Merge heads: put the nh outputs of size hs back side by side into C.
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        # 9. Output projection W_O mixes the heads' results back into the residual stream.
        return self.resid_dropout(self.c_proj(y))


# --------------------------------------------------------------------------------------------
# MLP and block
# --------------------------------------------------------------------------------------------

class MLP(nn.Module):
    """Position-wise feed-forward: each token on its own, widen 4x, nonlinearity, project back."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # GPT-2 used the tanh approximation of GELU; using the exact erf form would change the
        # logits of the released weights by ~1e-3, enough to fail an exact comparison.
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """
    One transformer block: x + attention(LN(x)), then x + MLP(LN(x)).

    This is the pre-LayerNorm block GPT-2 introduced. The original Transformer (and GPT-1) used
    post-norm, x = LN(x + sublayer(x)), which normalises the residual stream itself after every
    sub-layer. Pre-norm normalises only the *input* of each sub-layer and leaves the residual path
    x -> x + ... untouched, so gradients flow from the loss straight back to the embeddings
    through the additions. Deep post-norm stacks need careful learning-rate warmup to train at
    all; pre-norm stacks train stably, at the cost of one extra LayerNorm (ln_f) at the very end.
    """

    def __init__(self, config, layer_idx):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache=None):
        x = x + self.attn(self.ln_1(x), kv_cache)  # tokens exchange information
        x = x + self.mlp(self.ln_2(x))  # each token thinks on its own
        return x


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class GPT(nn.Module):
    """
    activation_checkpointing: a training choice, not part of the architecture (so not in
    GPTConfig, nor in a checkpoint's model_args). When training, each block keeps only its input
    for the backward pass and computes its insides (attention scores, the MLP's 4x-wide hidden
    layer...) again when backward needs them: a second forward per block, for a fraction of the
    activation memory. Non-reentrant checkpointing replays the same dropout masks.
    """

    def __init__(self, config, activation_checkpointing=False):
        super().__init__()
        self.config = config
        self.activation_checkpointing = activation_checkpointing
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.padded_vocab_size, config.n_embd),  # token -> vector
            wpe=nn.Embedding(config.block_size, config.n_embd),  # position -> vector
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        # Weight tying: the input embedding maps token -> vector, the output head scores
        # vector -> token; both live in the same token space, so GPT-2 uses one matrix for both.
        # It saves vocab x n_embd parameters (38.6M of GPT-2 small's 124M) and trains better.
        self.lm_head.weight = self.transformer.wte.weight
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        """GPT-2's initialisation, all in one place."""
        std = 0.02
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # Scaled init of the residual projections: the residual stream is a sum of the embedding
        # plus 2 * n_layer contributions (attention and MLP of every block). Adding N independent
        # terms of std s gives std s * sqrt(N), so each projection that writes into the stream
        # starts with std / sqrt(2 * n_layer): the stream's scale then does not grow with depth.
        residual_std = std / math.sqrt(2 * self.config.n_layer)
        for block in self.transformer.h:
            nn.init.normal_(block.attn.c_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.c_proj.weight, mean=0.0, std=residual_std)

    def get_num_params(self, non_embedding=True):
        """
        Parameter count. The padding rows of the embedding are not counted (no token ever uses
        them). non_embedding=True leaves out the position embedding, as is usual when scaling
        laws are quoted; the token embedding stays in because, tied, it is also the output head.
        """
        n = sum(p.numel() for p in self.parameters())  # the tied matrix is counted once
        n -= (self.config.padded_vocab_size - self.config.vocab_size) * self.config.n_embd
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self):
        """
        Training FLOPs per token (forward + backward), the figure MFU is computed from
        (PaLM paper, appendix B): 6 per parameter (2 forward, 4 backward: multiply + add for each
        weight, twice as much for the backward pass), plus attention's own matmuls, which have
        no parameters: 12 * n_layer * n_embd * T. The padded output rows are real compute here.
        """
        cfg = self.config
        n = self.get_num_params(non_embedding=True)
        n += (cfg.padded_vocab_size - cfg.vocab_size) * cfg.n_embd
        return 6 * n + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size

    def forward(self, idx, targets=None, kv_cache=None, last_only=False):
        """
        idx: (B, T) token ids. Returns (logits (B, T, vocab_size), loss or None). Logits come for
        every position: position t predicts token t+1, so one sequence trains T predictions.
        Generation (engine.py) passes a KV cache, and last_only=True to score the last position
        alone: the output head is a large matmul (38.6M of GPT-2's 124M parameters), so scoring
        all T positions to keep one would waste most of that work.
        """
        B, T = idx.size()
        past = 0 if kv_cache is None else kv_cache.pos  # positions already in the cache
        if past + T > self.config.block_size:
            raise ValueError(f"sequence of {past + T} tokens is longer than block_size="
                             f"{self.config.block_size}; crop it to its last block_size tokens")
        pos = torch.arange(past, past + T, dtype=torch.long, device=idx.device)  # (T,)

        # Token and position embeddings add up: the model sees "what" and "where" in one vector.
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C)
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)  # see the class docstring
            else:
                x = block(x, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)  # every layer has stored this step's keys and values
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B, T, padded_vocab_size)
        # Cut the padding off: a view, no copy. Padded ids then get no probability, so they can
        # never be sampled and carry no gradient.
        logits = logits[..., :self.config.vocab_size]  # (B, T, vocab_size)

        loss = None
        if targets is not None:
            # Cross-entropy = -log p(correct next token), averaged over all B*T positions.
            # At init the model guesses uniformly, so expect ln(vocab_size) (10.8 for GPT-2's
            # vocabulary, 4.2 for 65 characters). ignore_index=-1 lets callers mask positions.
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
        """
        Append max_new_tokens tokens to idx (B, T) and return (B, T + max_new_tokens): the loop a
        learner writes first. Each step runs the context through the model and samples the next
        token from the last position's logits. The model has learned positions 0..block_size-1
        only, so the context is cropped to its last block_size tokens.

        temperature 0 = greedy (always the likeliest token); otherwise the logits are divided by
        it (< 1 sharpens the distribution, > 1 flattens it) and sampled, from the top_k likeliest
        tokens only if top_k is given. Call model.eval() first: dropout would change the logits.
        engine.generate is the fast version of this loop, tested equal to it.
        """
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size:]  # (B, <= block_size)
            logits, _ = self(context)
            logits = logits[:, -1, :]  # (B, vocab_size): the prediction for the next position
            if temperature == 0:
                next_token = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:  # keep the top_k highest logits, drop the rest
                    k = min(top_k, logits.size(-1))
                    kth_best = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
                    logits = logits.masked_fill(logits < kth_best, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                next_token = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat((idx, next_token), dim=1)
        return idx
