"""
Fast generation: model.GPT.generate's loop, with what makes it fast and usable.

    for token in generate_tokens(model, idx, max_new_tokens, temperature, top_k, top_p):
        ...  # (B, 1) each, as soon as it is sampled: sample.py prints text as it appears

What it adds to the plain loop (which re-runs the whole context through the model for every new
token), each tested against it:
  - a KV cache (`KVCache`): a token's keys and values depend only on the tokens before it, so they
    are computed once and kept; each step feeds the model one new token. Token for token the
    same output as model.generate, greedy and sampled, while the context fits the window;
  - a context window that moves half a window at a time (`generate_tokens`' docstring), so the
    cache is rebuilt once per half window instead of at every token;
  - the logits of the last position only (`last_only`), the only ones generation needs;
  - top-p (nucleus) sampling on top of temperature and top-k (`sample_next_token`);
  - stop tokens: a row of a batch that produced one stays stopped;
  - streaming (a generator of tokens) and `torch.inference_mode`.

nanochat calls its version of this the engine; model.py stays the model.
"""

import torch
from torch.nn import functional as F


class KVCache:
    """
    Keys and values of the tokens seen so far, one preallocated buffer per layer.

    The cache's state follows from the model's structure, not from the order of calls. Each
    attention layer names its own buffer by its layer_idx, and `pos` (shared by every layer)
    moves in one place: GPT.forward advances it once, after the last block. So running one block
    alone, or an exception half-way through a forward pass, leaves pos where it was, and the next
    forward simply writes the same positions again.
    """

    def __init__(self, config):
        self.block_size = config.block_size
        # one (B, nh, block_size, hs) buffer per layer, allocated on first use (see append)
        self.k = [None] * config.n_layer
        self.v = [None] * config.n_layer
        self.pos = 0  # how many positions every layer has filled

    def append(self, layer_idx, k, v):
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


def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True,
             stop_token=None, generator=None):
    """
    Append up to max_new_tokens tokens to idx (B, T); returns (B, T + new). See
    generate_tokens. With stop_token, a row that has stopped is padded with stop_token up to
    the longest row, so a row's text is everything before its first stop_token.
    """
    new = list(generate_tokens(model, idx, max_new_tokens, temperature, top_k, top_p, use_cache,
                               stop_token, generator))
    return torch.cat([idx] + new, dim=1)


def generate_tokens(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
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
    one forward pass, and then grows again one token at a time. (model.generate instead crops
    the context at every step, so its window slides by one token at a time once full and
    nothing could be cached.)

    use_cache=False runs the very same windows through the full model at every step, with
    no cache: the reference the cache is tested against past the window.
    """
    validate_sampling(temperature, top_k, top_p)
    was_training = model.training
    model.eval()
    block_size = model.config.block_size
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
                    logits, _ = model(context, last_only=True)
                elif cache is None:  # (re)fill the cache with the whole window
                    cache = KVCache(model.config)
                    logits, _ = model(context, kv_cache=cache, last_only=True)
                else:  # only the newest token goes through the model
                    logits, _ = model(context[:, -1:], kv_cache=cache)
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
        model.train(was_training)


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
    """logits (B, V) for the next position -> token ids (B, 1). As model.generate samples, in
    float32 whatever the model computed in, plus top-p."""
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
