"""
Tests for model.py. Most compare two things that must agree: the hand-written attention and the
fused kernel, the KV cache and the full forward, generation with and without the cache, a
training step with and without activation checkpointing. They need only requirements.txt (torch,
safetensors for checkpoints; one test borrows bench.py's activation meter): the comparisons with
Hugging Face's GPT-2, which need `transformers`, are in test_hf.py.
"""

import math

import pytest
import torch

import hf
from model import GPT, GPTConfig, KVCache, sample_next_token

TINY = dict(block_size=32, vocab_size=65, n_layer=2, n_head=4, n_embd=64)


def tiny_pair(**overrides):
    """Two identical tiny models, one with the fused attention, one hand-written."""
    torch.manual_seed(0)
    fused = GPT(GPTConfig(**{**TINY, **overrides, "use_sdpa": True}))
    manual = GPT(GPTConfig(**{**TINY, **overrides, "use_sdpa": False}))
    manual.load_state_dict(fused.state_dict())
    assert fused.transformer.h[0].attn.use_sdpa and not manual.transformer.h[0].attn.use_sdpa
    return fused, manual


# ---------------------------------------------------------------------------- config

def test_config_rejects_heads_that_do_not_divide_the_width():
    with pytest.raises(ValueError, match="not divisible by n_head"):
        GPTConfig(n_embd=100, n_head=12)


@pytest.mark.parametrize("field,value", [("n_layer", 0), ("vocab_size", -1), ("block_size", 2.5)])
def test_config_rejects_non_positive_sizes(field, value):
    with pytest.raises(ValueError, match=field):
        GPTConfig(**{field: value})


# ---------------------------------------------------------------------------- attention

def test_manual_attention_equals_fused_outputs_and_gradients():
    fused, manual = tiny_pair()
    idx = torch.randint(0, 65, (3, 32))
    targets = torch.randint(0, 65, (3, 32))
    logits_f, loss_f = fused(idx, targets)
    logits_m, loss_m = manual(idx, targets)
    assert (logits_f - logits_m).abs().max() < 1e-5
    loss_f.backward()
    loss_m.backward()
    grads_m = dict(manual.named_parameters())
    for name, p in fused.named_parameters():
        assert torch.allclose(p.grad, grads_m[name].grad, atol=1e-6, rtol=1e-4), name


def test_manual_attention_equals_fused_with_a_cache_and_several_new_tokens():
    # The cached path with past > 0 and T > 1 needs an explicit offset mask in both paths.
    fused, manual = tiny_pair()
    fused.eval(), manual.eval()
    idx = torch.randint(0, 65, (2, 20))
    outputs = []
    for model in (fused, manual):
        cache = KVCache(model.config)
        model(idx[:, :12], kv_cache=cache)
        outputs.append(model(idx[:, 12:], kv_cache=cache)[0])
    full, _ = manual(idx)
    assert (outputs[0] - outputs[1]).abs().max() < 1e-5
    assert (outputs[0] - full[:, 12:]).abs().max() < 1e-5


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_causality_changing_a_token_leaves_earlier_logits_unchanged(use_sdpa):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY, use_sdpa=use_sdpa)).eval()
    idx = torch.randint(0, 65, (1, 32))
    j = 17
    changed = idx.clone()
    changed[0, j] = (idx[0, j] + 1) % 65
    before, after = model(idx)[0], model(changed)[0]
    assert torch.equal(before[:, :j], after[:, :j])  # nothing before j may see token j
    assert not torch.allclose(before[:, j:], after[:, j:])  # ...but position j and later do


# ---------------------------------------------------------------------------- the model

@pytest.mark.parametrize("vocab_size", [65, 1000])
def test_loss_at_init_is_about_ln_vocab_size(vocab_size):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "vocab_size": vocab_size}))
    idx = torch.randint(0, vocab_size, (8, 32))
    targets = torch.randint(0, vocab_size, (8, 32))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(vocab_size)) < 0.05 * math.log(vocab_size)


def test_logits_cover_every_position_and_only_the_real_vocabulary():
    model = GPT(GPTConfig(**TINY))
    assert model.lm_head.weight.shape[0] == 128  # 65 padded up to a multiple of 64
    logits, loss = model(torch.zeros(2, 5, dtype=torch.long))
    assert logits.shape == (2, 5, 65) and loss is None


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY))
    idx = torch.randint(0, 65, (4, 32))
    targets = torch.roll(idx, -1, dims=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_residual_projections_start_smaller_with_depth():
    # GPT-2's init: std 0.02, except the two projections writing into the residual stream,
    # 0.02 / sqrt(2 * n_layer), so the stream's scale at init does not grow with depth.
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "n_layer": 8, "n_embd": 128}))
    for name, p in model.named_parameters():
        if p.dim() == 2 and name != "transformer.wpe.weight":
            expected = 0.02 / math.sqrt(2 * 8) if name.endswith("c_proj.weight") else 0.02
            assert abs(p.std().item() / expected - 1) < 0.05, name


def test_token_embedding_and_output_head_share_storage():
    model = GPT(GPTConfig(**TINY))
    assert model.lm_head.weight is model.transformer.wte.weight
    with torch.no_grad():
        model.transformer.wte.weight[3, 0] = 42.0
    assert model.lm_head.weight[3, 0] == 42.0
    # Loading a state dict must keep them tied.
    other = GPT(GPTConfig(**TINY))
    other.load_state_dict(model.state_dict())
    assert other.lm_head.weight.data_ptr() == other.transformer.wte.weight.data_ptr()


@pytest.mark.parametrize("name,shape,count", [
    ("gpt2", dict(n_layer=12, n_head=12, n_embd=768), 124_439_808),
    ("gpt2-medium", dict(n_layer=24, n_head=16, n_embd=1024), 354_823_168),
])
def test_parameter_count_of_gpt2_shapes(name, shape, count):
    with torch.device("meta"):  # shapes only, no memory or init cost
        model = GPT(GPTConfig(**shape))
    assert model.get_num_params(non_embedding=False) == count
    assert model.get_num_params() == count - 1024 * shape["n_embd"]


def test_flops_per_token_counts_six_per_weight_plus_attention():
    model = GPT(GPTConfig(**TINY))
    cfg = model.config
    weights = sum(p.numel() for n, p in model.named_parameters() if n != "transformer.wpe.weight")
    assert model.flops_per_token() == 6 * weights + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size


# ---------------------------------------------------------------------------- activation checkpointing

@pytest.fixture
def checkpoint_calls(monkeypatch):
    """Counts the blocks GPT.forward hands to torch.utils.checkpoint.checkpoint (one list entry
    each); without it, a model that ignored activation_checkpointing would pass every test
    below that compares it with itself."""
    calls = []
    checkpoint = torch.utils.checkpoint.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting_checkpoint)
    return calls


def test_activation_checkpointing_gives_the_same_loss_and_gradients(checkpoint_calls):
    # Backward recomputes each block's forward; the gradients are only right if the recomputed
    # forward is the very one that produced the loss, dropout masks included (non-reentrant
    # checkpointing saves the random state before the block and replays it).
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "dropout": 0.2})).train()
    idx, targets = torch.randint(0, 65, (2, 3, 32))
    losses, grads = [], []
    for checkpointing in (False, True):
        model.activation_checkpointing = checkpointing
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks for both
        _, loss = model(idx, targets)
        loss.backward()
        losses.append(loss.item())
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert len(checkpoint_calls) == TINY["n_layer"]  # the second pass checkpointed every block
    assert abs(losses[0] - losses[1]) <= 1e-6
    for name, grad in grads[0].items():
        assert (grad - grads[1][name]).abs().max() <= 1e-6, name
    # Dropout was really on, so the masks had to be replayed: another seed gives another loss.
    torch.manual_seed(2)
    assert model(idx, targets)[1].item() != losses[0]


def test_activation_checkpointing_keeps_far_fewer_activations(checkpoint_calls, monkeypatch):
    from bench import saved_activation_bytes  # the meter behind bench.py's memory figures

    n_layer, (B, T, C) = 4, (2, 32, TINY["n_embd"])
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "n_layer": n_layer})).train()
    idx, targets = torch.randint(0, 65, (2, B, T))
    plain = saved_activation_bytes(model, idx, targets)
    model.activation_checkpointing = True
    checkpointed = saved_activation_bytes(model, idx, targets)
    assert len(checkpoint_calls) == n_layer
    # The meter sees inside the blocks: without checkpointing, each one keeps at least its MLP's
    # 4C-wide hidden layer (float32); with it, each keeps its input (B, T, C) and no more.
    assert plain >= n_layer * B * T * 4 * C * 4
    assert checkpointed >= n_layer * B * T * C * 4
    assert checkpointed < plain / 2
    # A model that ignored the flag (here: checkpoint() just runs the block) keeps as much as
    # the plain one, and the meter says so.
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda block, x, **kwargs: block(x))
    assert saved_activation_bytes(model, idx, targets) == plain


def test_activation_checkpointing_changes_nothing_in_eval_or_without_grad(checkpoint_calls):
    # There is no backward to save memory for in evaluation or generation; and checkpoint()
    # does not pass the KV cache on, so generation must never take that path.
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "dropout": 0.2}))
    idx = torch.randint(0, 65, (2, 32))
    outputs = {}
    for checkpointing in (False, True):
        model.activation_checkpointing = checkpointing
        model.eval()
        outputs["eval", checkpointing] = model(idx)[0]  # grad enabled, but not training
        model.train()
        with torch.no_grad():
            torch.manual_seed(3)
            outputs["no_grad", checkpointing] = model(idx)[0]  # training, dropout on, no grad
        outputs["generate", checkpointing] = model.generate(idx[:, :5], 40, temperature=0)
    assert checkpoint_calls == []
    for kind in ("eval", "no_grad", "generate"):
        assert torch.equal(outputs[kind, False], outputs[kind, True]), kind


# ---------------------------------------------------------------------------- generation

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
    with_cache = model.generate(idx, new, temperature=0, use_cache=True)
    without = model.generate(idx, new, temperature=0, use_cache=False)
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
    with pytest.raises(ValueError, match="last_only"):
        model(idx, targets=idx, last_only=True)


def test_generated_tokens_can_be_trained_on():
    # Generation runs under inference_mode, whose tensors autograd refuses; the caller must get
    # ordinary tensors back (e.g. to finetune on the model's own samples).
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY))
    out = model.generate(torch.zeros(1, 1, dtype=torch.long), 20)
    assert not out.is_inference()
    _, loss = model(out[:, :-1], out[:, 1:])
    loss.backward()
    assert model.lm_head.weight.grad is not None


def test_sampled_generation_is_reproducible_with_and_without_cache():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    idx = torch.randint(0, 65, (1, 4))
    runs = [model.generate(idx, 50, temperature=0.8, top_k=20, top_p=0.9, use_cache=c,
                           generator=torch.Generator().manual_seed(7)) for c in (True, False)]
    assert torch.equal(*runs)


def test_padded_vocabulary_ids_are_never_sampled():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    with torch.no_grad():  # make the padding rows irresistible if they were ever scored
        model.lm_head.weight[65:] = 10.0
    out = model.generate(torch.zeros(4, 1, dtype=torch.long), 60, temperature=2.0)
    assert out.max() < 65


def test_generation_stops_at_stop_token():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    idx = torch.zeros(1, 1, dtype=torch.long)
    first = model.generate(idx, 1, temperature=0)[0, -1].item()
    out = model.generate(idx, 50, temperature=0, stop_token=first)
    assert out.shape == (1, 2)


def test_batch_generation_stops_once_every_row_has_stopped(monkeypatch):
    # Row 0 produces the stop token at the first step, row 1 at the third: generation must go
    # on until both have, and no further. A row that has stopped stays stopped: whatever is
    # sampled for it afterwards (2 and 3 here), it gets the stop token.
    import model as model_module
    STOP = 9
    script = iter([[[STOP], [1]], [[2], [1]], [[3], [STOP]]] + [[[4], [4]]] * 20)
    monkeypatch.setattr(model_module, "sample_next_token",
                        lambda *args, **kwargs: torch.tensor(next(script)))
    model = GPT(GPTConfig(**TINY)).eval()
    out = model.generate(torch.zeros(2, 1, dtype=torch.long), 20, stop_token=STOP)
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
    alone = [model.generate(prompts[i:i + 1], 20, temperature=0, use_cache=use_cache)[0, 4:]
             for i in range(2)]
    # The stop token: one that row 0 produces early and row 1 never does.
    stop = next(t for t in alone[0].tolist() if t not in alone[1].tolist())
    first = alone[0].tolist().index(stop)
    # Left alone, row 0 would go on with other tokens: that is what the stop must replace.
    assert first < 10 and (alone[0][first + 1:] != stop).any()
    out = model.generate(prompts, 20, temperature=0, use_cache=use_cache, stop_token=stop)[:, 4:]
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
    model.generate(idx, 2, temperature=0, use_cache=use_cache)
    assert torch.equal(seen[0], idx[:, 4:])


def test_generate_keeps_training_mode_of_the_caller():
    model = GPT(GPTConfig(**TINY)).train()
    model.generate(torch.zeros(1, 1, dtype=torch.long), 3)
    assert model.training


# ---------------------------------------------------------------------------- sampling options

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
        model.generate(torch.zeros(1, 1, dtype=torch.long), 5, **kwargs)


# ---------------------------------------------------------------------------- GPT-2 checkpoints

def test_save_pretrained_then_from_pretrained_gives_the_same_model(tmp_path):
    # Our writer and reader of the Hugging Face format against each other, no transformers
    # needed (test_hf.py checks each against Hugging Face's GPT-2): the Conv1D transposes and
    # the vocabulary padding must undo each other exactly.
    torch.manual_seed(1)
    ours = GPT(GPTConfig(block_size=32, vocab_size=100, n_layer=2, n_head=4, n_embd=64)).eval()
    hf.save_pretrained(ours, tmp_path)
    loaded = hf.from_pretrained(str(tmp_path)).eval()
    assert loaded.config == ours.config
    idx = torch.randint(0, 100, (2, 32))
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], ours(idx)[0])


def test_from_pretrained_names_what_is_wrong(tmp_path):
    with pytest.raises(hf.WeightsError, match="'gtp2' is neither .* did you mean 'gpt2'"):
        hf.from_pretrained("gtp2")
    with pytest.raises(hf.WeightsError, match="nor a folder"):
        hf.from_pretrained(str(tmp_path / "no" / "such" / "folder"))
    with pytest.raises(hf.WeightsError, match="config.json is missing"):
        hf.from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(hf.WeightsError, match="model.safetensors is missing"):
        hf.from_pretrained(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(hf.WeightsError, match="config.json is not a GPT-2 config"):
        hf.from_pretrained(str(tmp_path))
    hf.save_pretrained(GPT(GPTConfig(block_size=8, vocab_size=10, n_layer=1, n_head=1, n_embd=4)), tmp_path)
    (tmp_path / "model.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes()[:50])
    with pytest.raises(hf.WeightsError, match="could not be read.*download it again"):
        hf.from_pretrained(str(tmp_path))


# ---------------------------------------------------------------------------- on a GPU (skipped on CPU)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_manual_attention_equals_fused_on_cuda_in_bfloat16():
    fused, manual = tiny_pair(block_size=256, n_embd=128)
    fused, manual = fused.cuda(), manual.cuda()
    idx = torch.randint(0, 65, (4, 256), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a, b = fused(idx)[0].float(), manual(idx)[0].float()
    assert (a - b).abs().max() < 0.05  # bfloat16 keeps ~3 significant digits


@cuda
def test_kv_cache_generation_equals_no_cache_on_cuda():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).cuda().eval()
    idx = torch.randint(0, 65, (2, 5), device="cuda")
    assert torch.equal(model.generate(idx, 80, temperature=0, use_cache=True),
                       model.generate(idx, 80, temperature=0, use_cache=False))
