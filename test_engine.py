"""
Tests for engine.py, fast generation: the KV cache against the full forward, the engine against
model.generate (the plain loop) token for token, greedy and seeded, while the context fits the
window, and past it against its own window policy without a cache; stop tokens, sampling options.
"""

import pytest
import torch

import engine
from engine import KVCache, sample_next_token
from model import GPT, GPTConfig
from test_model import TINY


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=0.8, top_k=20),
                                      dict(temperature=1.3)])
@pytest.mark.parametrize("prompt_len,new", [(1, 31), (12, 20)])
def test_the_engine_generates_what_the_plain_loop_generates(sampling, prompt_len, new):
    # While prompt + new tokens fit the window (32 here), the engine (KV cache, one token per step,
    # last position only, inference mode) must give model.generate's tokens exactly: greedy, and
    # seeded sampling draw for draw.
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    idx = torch.randint(0, 65, (2, prompt_len))
    plain = model.generate(idx, new, generator=torch.Generator().manual_seed(5), **sampling)
    fast = engine.generate(model, idx, new, generator=torch.Generator().manual_seed(5), **sampling)
    assert fast.shape == (2, prompt_len + new) and torch.equal(fast, plain)


def test_kv_cache_gives_the_same_logits_as_the_full_forward():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    idx = torch.randint(0, 65, (2, 32))
    full, _ = model(idx)
    cache = KVCache(model.config)
    step_logits = [model(idx[:, :10], kv_cache=cache)[0]]
    for t in range(10, 32):
        step_logits.append(model(idx[:, t:t + 1], kv_cache=cache)[0])
    assert (torch.cat(step_logits, dim=1) - full).abs().max() < 1e-5


def test_kv_cache_survives_a_block_run_on_its_own():
    # Each layer writes its own slot (its layer_idx) and only GPT.forward moves the position, so
    # a block run alone (a probe, a visualisation) writes its layer at the current position but
    # does not advance it: the next forward overwrites those entries. A cache that counted calls
    # to know which layer is writing would be off by one layer from then on.
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    idx = torch.randint(0, 65, (2, 20))
    with torch.no_grad():
        full, _ = model(idx)
        cache = KVCache(model.config)
        first, _ = model(idx[:, :12], kv_cache=cache)
        model.transformer.h[1](torch.randn(2, 3, model.config.n_embd), cache)  # the second block alone
        assert cache.pos == 12
        rest, _ = model(idx[:, 12:], kv_cache=cache)
    assert cache.pos == 20
    assert (torch.cat([first, rest], dim=1) - full).abs().max() < 1e-5


def test_kv_cache_is_usable_after_an_exception_mid_forward():
    # An error half-way through the blocks (say, out of memory in the second one) must leave the
    # cache as it was: the first layer has written this step's entries, but the position has not
    # moved, so a retry of the same step writes them again and gives the right logits.
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    idx = torch.randint(0, 65, (2, 20))
    second = model.transformer.h[1]

    def fail_once(*args, **kwargs):
        del second.forward  # every later call runs Block.forward again
        raise RuntimeError("simulated out of memory")

    with torch.no_grad():
        full, _ = model(idx)
        cache = KVCache(model.config)
        model(idx[:, :12], kv_cache=cache)
        second.forward = fail_once
        with pytest.raises(RuntimeError, match="simulated"):
            model(idx[:, 12:], kv_cache=cache)
        assert cache.pos == 12
        rest, _ = model(idx[:, 12:], kv_cache=cache)
    assert cache.pos == 20
    assert (rest - full[:, 12:]).abs().max() < 1e-5


@pytest.mark.parametrize("prompt_len,new", [(5, 20), (5, 100), (40, 30)])
def test_kv_cache_generation_equals_no_cache_reference(prompt_len, new):
    # 100 new tokens on a 32-token window slides the window several times; a 40-token prompt
    # is longer than the window and must be cropped.
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    idx = torch.randint(0, 65, (2, prompt_len))
    with_cache = engine.generate(model, idx, new, temperature=0, use_cache=True)
    without = engine.generate(model, idx, new, temperature=0, use_cache=False)
    assert with_cache.shape == (2, prompt_len + new)
    assert torch.equal(with_cache[:, :prompt_len], idx)
    assert torch.equal(with_cache, without)


def test_last_only_logits_equal_the_last_row_of_the_full_logits():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    idx = torch.randint(0, 65, (2, 17))
    with torch.no_grad():
        full, _ = model(idx)
        last, _ = model(idx, last_only=True)
    assert last.shape == (2, 1, 65)
    assert torch.allclose(last, full[:, -1:], atol=1e-6)


def test_generated_tokens_can_be_trained_on():
    # Generation runs under inference_mode, whose tensors autograd refuses; the caller must get
    # ordinary tensors back (e.g. to finetune on the model's own samples).
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY))
    out = engine.generate(model, torch.zeros(1, 1, dtype=torch.long), 20)
    assert not out.is_inference()
    _, loss = model(out[:, :-1], out[:, 1:])
    loss.backward()
    assert model.lm_head.weight.grad is not None


def test_sampled_generation_is_reproducible_with_and_without_cache():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    idx = torch.randint(0, 65, (1, 4))
    runs = [engine.generate(model, idx, 50, temperature=0.8, top_k=20, top_p=0.9, use_cache=c,
                           generator=torch.Generator().manual_seed(7)) for c in (True, False)]
    assert torch.equal(*runs)


def test_padded_vocabulary_ids_are_never_sampled():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    with torch.no_grad():  # make the padding rows irresistible if they were ever scored
        model.lm_head.weight[65:] = 10.0
    out = engine.generate(model, torch.zeros(4, 1, dtype=torch.long), 60, temperature=2.0)
    assert out.max() < 65


def test_generation_stops_at_stop_token():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    idx = torch.zeros(1, 1, dtype=torch.long)
    first = engine.generate(model, idx, 1, temperature=0)[0, -1].item()
    out = engine.generate(model, idx, 50, temperature=0, stop_token=first)
    assert out.shape == (1, 2)


def test_batch_generation_stops_once_every_row_has_stopped(monkeypatch):
    # Row 0 produces the stop token at the first step, row 1 at the third: generation must go
    # on until both have, and no further. A row that has stopped stays stopped: whatever is
    # sampled for it afterwards (2 and 3 here), it gets the stop token.
    STOP = 9
    script = iter([[[STOP], [1]], [[2], [1]], [[3], [STOP]]] + [[[4], [4]]] * 20)
    monkeypatch.setattr(engine, "sample_next_token",
                        lambda *args, **kwargs: torch.tensor(next(script)))
    model = GPT(GPTConfig(**TINY)).eval()
    out = engine.generate(model, torch.zeros(2, 1, dtype=torch.long), 20, stop_token=STOP)
    assert out[:, 1:].tolist() == [[STOP, STOP, STOP], [1, 1, STOP]]


@pytest.mark.parametrize("use_cache", [True, False])
def test_a_stopped_row_emits_only_stop_tokens_and_the_others_go_on_as_if_alone(use_cache):
    # The larger weights make this random model's greedy text vary instead of repeating one token.
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(10)
    prompts = torch.randint(0, 65, (2, 4))
    alone = [engine.generate(model, prompts[i:i + 1], 20, temperature=0, use_cache=use_cache)[0, 4:]
             for i in range(2)]
    # The stop token: one that row 0 produces early and row 1 never does.
    stop = next(t for t in alone[0].tolist() if t not in alone[1].tolist())
    first = alone[0].tolist().index(stop)
    # Left alone, row 0 would go on with other tokens: that is what the stop must replace.
    assert first < 10 and (alone[0][first + 1:] != stop).any()
    out = engine.generate(model, prompts, 20, temperature=0, use_cache=use_cache, stop_token=stop)[:, 4:]
    assert out.shape == (2, 20)  # row 1 never stops, so all 20 steps run
    assert torch.equal(out[0, :first + 1], alone[0][:first + 1])
    assert (out[0, first + 1:] == stop).all()
    assert torch.equal(out[1], alone[1])


@pytest.mark.parametrize("use_cache", [True, False])
def test_full_window_keeps_its_newer_half(use_cache):
    # When the context window is full, generation continues on the newest block_size // 2
    # tokens. The cache and no-cache paths share this step, so compare with what the model is fed.
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "block_size": 8})).eval()
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    idx = torch.randint(0, 65, (1, 8))  # exactly one full window
    engine.generate(model, idx, 2, temperature=0, use_cache=use_cache)
    assert torch.equal(seen[0], idx[:, 4:])


def test_generate_keeps_training_mode_of_the_caller():
    model = GPT(GPTConfig(**TINY)).train()
    engine.generate(model, torch.zeros(1, 1, dtype=torch.long), 3)
    assert model.training


# ---------------------------------------------------------------------------- sampling

def test_top_k_larger_than_the_vocabulary_is_clamped():
    logits = torch.randn(2, 10)
    out = sample_next_token(logits, temperature=1.0, top_k=1000)
    assert out.shape == (2, 1) and out.max() < 10


def test_temperature_divides_the_logits_and_a_full_top_k_keeps_everything():
    # Seeded sampling is a function of the probabilities alone, so these pairs must agree draw
    # for draw: temperature T on logits vs temperature 1 on logits / T, and top_k = vocabulary
    # size vs no top-k at all.
    logits = torch.randn(2000, 10)
    def draw(*args, **kwargs):
        return sample_next_token(*args, **kwargs, generator=torch.Generator().manual_seed(0))
    for t in (0.5, 2.0):
        assert torch.equal(draw(logits, temperature=t), draw(logits / t, temperature=1.0))
    assert torch.equal(draw(logits, temperature=1.0, top_k=10), draw(logits, temperature=1.0))


def test_top_k_one_and_temperature_zero_are_greedy():
    logits = torch.randn(5, 50)
    greedy = logits.argmax(-1, keepdim=True)
    assert torch.equal(sample_next_token(logits, temperature=0), greedy)
    assert torch.equal(sample_next_token(logits, temperature=1.0, top_k=1), greedy)


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    # probabilities 0.5, 0.3, 0.15, 0.05: top_p=0.75 must keep exactly the first two.
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log().repeat(2000, 1)
    samples = sample_next_token(logits, temperature=1.0, top_p=0.75,
                                generator=torch.Generator().manual_seed(0))
    assert set(samples.flatten().tolist()) == {0, 1}
    share_of_first = (samples == 0).float().mean().item()
    assert abs(share_of_first - 0.5 / 0.8) < 0.05  # renormalised over the kept tokens


def test_top_p_keeps_a_token_only_while_the_mass_before_it_is_short_of_p():
    # Four equally likely tokens (exactly 0.25 each): top_p=0.5 is reached by exactly two of
    # them, so the third, whose preceding mass is exactly 0.5, must be dropped.
    samples = sample_next_token(torch.zeros(4000, 4), temperature=1.0, top_p=0.5,
                                generator=torch.Generator().manual_seed(0))
    assert len(set(samples.flatten().tolist())) == 2


@pytest.mark.parametrize("kwargs,match", [
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(top_p=-0.1), "top_p"),
    (dict(temperature=-1.0), "temperature"), (dict(top_k=0), "top_k"),
])
def test_bad_sampling_options_are_clear_errors(kwargs, match):
    model = GPT(GPTConfig(**TINY))
    with pytest.raises(ValueError, match=match):
        engine.generate(model, torch.zeros(1, 1, dtype=torch.long), 5, **kwargs)


# ---------------------------------------------------------------------------- on a GPU (skipped on CPU)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_kv_cache_generation_equals_no_cache_on_cuda():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).cuda().eval()
    idx = torch.randint(0, 65, (2, 5), device="cuda")
    assert torch.equal(engine.generate(model, idx, 80, temperature=0, use_cache=True),
                       engine.generate(model, idx, 80, temperature=0, use_cache=False))
