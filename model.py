"""
The whole GPT in one file, read top to bottom: config, attention, MLP, block, model, generation.

What is in:
  - GPT-2's architecture exactly (learned positions, pre-LayerNorm blocks, GELU(tanh) MLP, tied
    input/output embeddings), so OpenAI's published weights load (hf.py) and give the same logits
    as the Hugging Face `transformers` implementation (the tests check this to 1e-4).
  - Causal self-attention written out by hand, step by step, and PyTorch's fused
    `scaled_dot_product_attention` (same maths, one kernel) used when available.
  - Generation with a KV cache (greedy, temperature, top-k, top-p), and the plain no-cache loop it
    is tested against.

What is left out on purpose: rotary embeddings, grouped-query attention, RMSNorm and the other
post-GPT-2 changes. They are good ideas, but then the weights OpenAI released would not load.

Glossary of GPT-2's short names (kept so the published weights map one-to-one):
  wte = token embedding, wpe = position embedding, h = the list of blocks, ln_1/ln_2/ln_f = LayerNorms,
  c_attn = the q,k,v projection, c_proj = output projection, c_fc = the MLP's first layer.
Shapes: B = batch, T = sequence length, C = n_embd, nh = n_head, hs = head size = C // nh.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


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
            raise ValueError(
                f"GPTConfig: n_embd={self.n_embd} is not divisible by n_head={self.n_head}; each head "
                f"gets n_embd // n_head dimensions, so pick e.g. n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def padded_vocab_size(self):
        return math.ceil(self.vocab_size / self.pad_vocab_to) * self.pad_vocab_to


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------

class CausalSelfAttention(nn.Module):
    """
    Multi-head causal self-attention. The textbook form is

        MultiHeadAttention(q, k, v, mask) = Concat(head_1, ..., head_h) W_O,
        head_i = softmax(q W_Q_i (k W_K_i)^T / sqrt(d_k) + mask) v W_V_i

    In *self*-attention q, k and v are all the same input x. Here the h separate W_Q_i, W_K_i,
    W_V_i matrices are stacked side by side into one Linear layer (`c_attn`, C -> 3C) so one
    matrix multiply computes every head's queries, keys and values; `c_proj` is W_O. The mask is
    always the causal one, built in.

    layer_idx is the number of the block this layer sits in. It names the layer's own slot in the
    KV cache; a layer used on its own, outside a model, is layer 0.
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

        # During generation, the keys and values of earlier tokens come from the cache: this
        # layer stores its new k, v in its own slot (layer_idx) and gets back all of them so far.
        # q stays (B, nh, T, hs): only new tokens ask questions.
        past = 0
        if kv_cache is not None:
            past = kv_cache.pos
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, nh, past + T, hs)

        if self.use_sdpa:
            # PyTorch's fused kernel does steps 3-6 below in one pass without ever storing the
            # (T x T) score matrix (FlashAttention-style). Same maths; the tests prove it.
            # is_causal=True builds the causal mask itself, but aligned to the top-left corner:
            # query i sees keys 0..i. That is right only when there is no past. With a cache,
            # query i sits at position past + i and must also see every cached key, so the
            # mask is passed explicitly (the same one step 4 uses).
            mask = None if past == 0 else causal_mask(T, past, x.device)  # (T, past+T) or None
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                is_causal=(past == 0))
        else:
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
            # 7. Weighted sum of values: each token gathers information from the tokens it attends to.
            y = att @ v  # (B, nh, T, past+T) x (B, nh, past+T, hs) -> (B, nh, T, hs)

        # 8. Merge heads: put the nh outputs of size hs back side by side into C.
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        # 9. Output projection W_O mixes the heads' results back into the residual stream.
        return self.resid_dropout(self.c_proj(y))


def causal_mask(T, past, device):
    """(T, past+T) boolean mask, True where query i (at absolute position past+i) may see key j."""
    query_pos = torch.arange(past, past + T, device=device).unsqueeze(1)  # (T, 1)
    key_pos = torch.arange(past + T, device=device).unsqueeze(0)  # (1, past+T)
    return key_pos <= query_pos


class KVCache:
    """
    Keys and values of the tokens seen so far, one preallocated buffer per layer.

    Without a cache, generating each new token re-runs the whole context through the model,
    recomputing keys and values that have not changed: a token's k and v depend only on the
    tokens before it. With it, each step feeds one token and adds one k, v per layer.

    The cache's state follows from the model's structure, not from the order of calls. Each
    attention layer names its own buffer by its layer_idx, and `pos` (shared by every layer)
    moves in one place: GPT.forward advances it once, after the last block. So running one block
    alone, or an exception half-way through a forward pass, leaves pos where it was, and the next
    forward simply writes the same positions again.
    """

    def __init__(self, config):
        self.block_size = config.block_size
        # one (B, nh, block_size, hs) buffer per layer, allocated on first use (see update)
        self.k = [None] * config.n_layer
        self.v = [None] * config.n_layer
        self.pos = 0  # how many positions every layer has filled

    def update(self, layer_idx, k, v):
        """
        Store one layer's new keys and values k, v (B, nh, T, hs) at positions pos..pos+T-1 of
        that layer's buffer; return the layer's keys and values for positions 0..pos+T-1, each
        (B, nh, pos+T, hs). pos does not move here: the other layers still have to store theirs.
        """
        B, nh, T, hs = k.shape
        end = self.pos + T
        if self.k[layer_idx] is None:  # allocated only now, in the dtype attention runs in
            self.k[layer_idx] = k.new_zeros(B, nh, self.block_size, hs)
            self.v[layer_idx] = v.new_zeros(B, nh, self.block_size, hs)
        self.k[layer_idx][:, :, self.pos:end] = k
        self.v[layer_idx][:, :, self.pos:end] = v
        return self.k[layer_idx][:, :, :end], self.v[layer_idx][:, :, :end]

    def advance(self, T):
        """Every layer has stored T new positions: count them as filled."""
        self.pos += T


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
        self.attn = CausalSelfAttention(config, layer_idx)  # layer_idx: its slot in the KV cache
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

    def __init__(self, config):
        super().__init__()
        self.config = config
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
        # A training choice, not part of the architecture (so not in GPTConfig): train.py sets it.
        self.activation_checkpointing = False

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
        last_only=True scores the last position alone, logits (B, 1, vocab_size): all that
        generating the next token needs. The output head is a large matmul (38.6M of GPT-2's
        124M parameters), so scoring all T positions to keep one would waste most of that work.
        """
        B, T = idx.size()
        past = kv_cache.pos if kv_cache is not None else 0
        if past + T > self.config.block_size:
            raise ValueError(
                f"sequence of {past + T} tokens is longer than block_size={self.config.block_size}; "
                f"crop the input to its last {self.config.block_size} tokens")
        pos = torch.arange(past, past + T, dtype=torch.long, device=idx.device)  # (T,)

        # Token and position embeddings add up: the model sees "what" and "where" in one vector.
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C)
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                # Keep only the block's input for the backward pass and compute its insides
                # (attention scores, the MLP's 4x-wide hidden layer...) again when backward needs
                # them: a second forward per block, for a fraction of the activation memory.
                # Non-reentrant checkpointing replays the same dropout masks.
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
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
            if last_only:
                raise ValueError("last_only=True gives one position's logits; a loss needs all of them")
            # Cross-entropy = -log p(correct next token), averaged over all B*T positions.
            # At init the model guesses uniformly, so expect ln(vocab_size) (10.8 for GPT-2's
            # vocabulary, 4.2 for 65 characters). ignore_index=-1 lets callers mask positions.
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-1)
        return logits, loss

    # ----------------------------------------------------------------------------------------
    # Generation
    # ----------------------------------------------------------------------------------------

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                 use_cache=True, stop_token=None, generator=None):
        """
        Append up to max_new_tokens tokens to idx (B, T); returns (B, T + new). See
        generate_tokens. With stop_token, a row that has stopped is padded with stop_token up to
        the longest row, so a row's text is everything before its first stop_token.
        """
        new = list(self.generate_tokens(idx, max_new_tokens, temperature, top_k, top_p,
                                        use_cache, stop_token, generator))
        return torch.cat([idx] + new, dim=1)

    def generate_tokens(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                        use_cache=True, stop_token=None, generator=None):
        """
        Yield new tokens one at a time, each (B, 1), so callers can stream text as it appears.

        temperature 0 = greedy (always the most likely token); otherwise logits / temperature
        are sampled, optionally restricted to the top_k tokens and/or the smallest set of
        tokens whose probabilities add up to top_p (nucleus sampling).

        stop_token: the rows of a batch are generated together, so a row that produces it
        cannot leave early. From then on that row yields stop_token at every step (whatever the
        model would have sampled), so everything after a row's first stop_token is stop_token
        and easy to cut off. Generation ends once every row has produced it.

        The context window: the model has learned positions 0..block_size-1 only. A prompt
        longer than that is cropped to its last block_size tokens. When the window is full, the
        oldest half is dropped and generation continues on the newer half (like llama.cpp's
        context shift). With learned absolute positions every token's position changes when the
        window moves, so cached keys/values go stale: the cache is rebuilt from the kept half,
        one forward pass, and then grows again one token at a time.

        use_cache=False runs the very same windows through the full model at every step, with
        no cache: the reference the cache is tested against. It is not nanoGPT's generate,
        which crops the context to its last block_size tokens at every step, so its window
        slides by one token at a time once full; here both paths drop the older half at once.
        """
        validate_sampling(temperature, top_k, top_p)
        was_training = self.training
        self.eval()
        block_size = self.config.block_size
        context = idx[:, -block_size:]  # crop the prompt to the window
        cache = None
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        try:
            for _ in range(max_new_tokens):
                # inference_mode is no_grad plus less bookkeeping per tensor (no version
                # counters or view tracking): a small model generates ~25% faster with it.
                with torch.inference_mode():
                    if context.size(1) == block_size:  # window full: keep the newer half
                        context, cache = context[:, -(block_size // 2):], None
                    if not use_cache:
                        logits, _ = self(context, last_only=True)
                    elif cache is None:  # (re)fill the cache with the whole window
                        cache = KVCache(self.config)
                        logits, _ = self(context, kv_cache=cache, last_only=True)
                    else:  # only the newest token goes through the model
                        logits, _ = self(context[:, -1:], kv_cache=cache)
                    next_token = sample_next_token(logits[:, -1, :], temperature, top_k, top_p, generator)
                    if stop_token is not None:
                        # A row that has stopped stays stopped: it gets stop_token again, not
                        # whatever was sampled for it. (The other rows are unaffected: rows of a
                        # batch never attend to each other.)
                        next_token = next_token.masked_fill(done.unsqueeze(1), stop_token)  # (B, 1)
                        done |= next_token.squeeze(1) == stop_token
                    context = torch.cat((context, next_token), dim=1)
                # Tensors made under inference_mode can never enter autograd; the copy handed
                # out is an ordinary tensor, so a caller may train on generated text.
                yield next_token.clone()
                if stop_token is not None and done.all():
                    break
        finally:
            self.train(was_training)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------

def validate_sampling(temperature, top_k, top_p):
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, or None to keep every token; got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], or None to turn it off; got {top_p}")


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """logits (B, V) for the next position -> token ids (B, 1)."""
    validate_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # greedy
    # Temperature < 1 sharpens the distribution towards the likeliest tokens, > 1 flattens it.
    logits = logits.float() / temperature
    if top_k is not None:
        # Keep the k highest logits. A k beyond the vocabulary simply keeps everything.
        k = min(top_k, logits.size(-1))
        kth_best = torch.topk(logits, k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p is not None and top_p < 1.0:
        # Nucleus: sort by probability, keep the smallest prefix whose mass reaches top_p. A token
        # is dropped when the mass *before* it already reaches top_p, so the top token always stays.
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        sorted_probs = F.softmax(sorted_logits, dim=-1)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, sorted_idx, sorted_logits)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)
