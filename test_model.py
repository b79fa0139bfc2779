"""
Tests for model.py. Most compare two things that must agree: the hand-written attention and the
fused kernel (with and without a cache), a training step with and without activation
checkpointing. engine.py's fast generation is tested against model.generate in test_engine.py. They need only requirements.txt (torch,
safetensors for checkpoints; one test borrows bench.py's activation meter): the comparisons with
Hugging Face's GPT-2, which need `transformers`, are in test_hf.py.
"""

import math

import pytest
import torch

import engine
import hf
import model as model_module
from engine import KVCache
from model import GPT, GPTConfig

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

    monkeypatch.setattr(model_module, "checkpoint", counting_checkpoint)  # the name model.py calls
    return calls


def test_activation_checkpointing_gives_the_same_loss_and_gradients(checkpoint_calls):
    # Backward recomputes each block's forward; the gradients are only right if the recomputed
    # forward is the very one that produced the loss, dropout masks included (non-reentrant
    # checkpointing saves the random state before the block and replays it).
    idx, targets = torch.randint(0, 65, (2, 3, 32))
    losses, grads = [], []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # the same weights for both
        model = GPT(GPTConfig(**{**TINY, "dropout": 0.2}), activation_checkpointing=checkpointing).train()
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
    model = GPT(GPTConfig(**{**TINY, "n_layer": n_layer}), activation_checkpointing=True).train()
    checkpointed = saved_activation_bytes(model, idx, targets)
    assert len(checkpoint_calls) == n_layer
    # The meter sees inside the blocks: without checkpointing, each one keeps at least its MLP's
    # 4C-wide hidden layer (float32); with it, each keeps its input (B, T, C) and no more.
    assert plain >= n_layer * B * T * 4 * C * 4
    assert checkpointed >= n_layer * B * T * C * 4
    assert checkpointed < plain / 2
    # A model that ignored the flag (here: checkpoint() just runs the block) keeps as much as
    # the plain one, and the meter says so.
    monkeypatch.setattr(model_module, "checkpoint", lambda block, x, **kwargs: block(x))
    assert saved_activation_bytes(model, idx, targets) == plain


def test_activation_checkpointing_changes_nothing_in_eval_or_without_grad(checkpoint_calls):
    # There is no backward to save memory for in evaluation or generation; and checkpoint()
    # does not pass the KV cache on, so generation must never take that path.
    idx = torch.randint(0, 65, (2, 32))
    outputs = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)  # the same weights for both
        model = GPT(GPTConfig(**{**TINY, "dropout": 0.2}), activation_checkpointing=checkpointing)
        model.eval()
        outputs["eval", checkpointing] = model(idx)[0]  # grad enabled, but not training
        model.train()
        with torch.no_grad():
            torch.manual_seed(3)
            outputs["no_grad", checkpointing] = model(idx)[0]  # training, dropout on, no grad
        outputs["generate", checkpointing] = engine.generate(model, idx[:, :5], 40, temperature=0)
    assert checkpoint_calls == []
    for kind in ("eval", "no_grad", "generate"):
        assert torch.equal(outputs[kind, False], outputs[kind, True]), kind


# ---------------------------------------------------------------------------- the plain generation loop

def test_generate_samples_from_the_last_position_of_the_last_block_size_tokens():
    # model.generate, greedy, checked step by step: each new token is the argmax of the logits at
    # the last position, given the sequence so far cropped to its last block_size tokens (the
    # window slides by one token at a time once the sequence is longer than the context).
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "block_size": 8})).eval()
    idx = torch.randint(0, 65, (2, 6))
    out = model.generate(idx, 5, temperature=0)
    assert out.shape == (2, 11) and torch.equal(out[:, :6], idx)
    with torch.no_grad():
        for t in range(6, 11):
            logits, _ = model(out[:, max(0, t - 8):t])
            assert torch.equal(out[:, t], logits[:, -1].argmax(-1))


def test_generate_samples_with_temperature_and_top_k_as_the_formula_says():
    # Seeded: the very draws torch.multinomial makes from softmax(logits / T) over the top k.
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    idx = torch.randint(0, 65, (3, 4))
    out = model.generate(idx, 1, temperature=0.7, top_k=5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model(idx)[0][:, -1] / 0.7
    kept = logits.masked_fill(logits < logits.topk(5).values[:, -1:], float("-inf"))
    expected = torch.multinomial(torch.softmax(kept, -1), 1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out[:, -1:], expected)
    assert all(out[i, -1] in logits[i].topk(5).indices for i in range(3))


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
