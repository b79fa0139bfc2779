"""optim.py: which parameters each optimizer trains, and one Muon step against the formula."""

import math

import pytest
import torch

import distributed
import optim
from common import ConfigError
from model import GPT, GPTConfig

TINY = dict(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32)


def test_parameters_are_split_as_stated():
    model = GPT(GPTConfig(**TINY))
    muon, adamw = optim.split_parameters(model)
    muon_names, adamw_names = [n for n, _ in muon], [n for n, _ in adamw]
    # Muon: exactly the four weight matrices of every block.
    assert sorted(muon_names) == sorted(f"transformer.h.{i}.{m}.weight" for i in range(2)
                                        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))
    # AdamW: the embeddings (the tied wte/lm_head matrix once), LayerNorm gains, biases.
    assert "transformer.wte.weight" in adamw_names and "transformer.wpe.weight" in adamw_names
    assert "lm_head.weight" not in adamw_names + muon_names  # the same tensor as wte: once
    assert all(p.dim() == 1 for n, p in adamw if "ln" in n or n.endswith(".bias"))
    # No parameter in both, none missing.
    ids = [id(p) for _, p in muon + adamw]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    # ...and the optimizers built from them hold exactly that.
    optimizer = optim.configure_optimizer(model, "muon")
    held = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(held) == sorted(ids)
    assert isinstance(optimizer.optimizers[0], torch.optim.Muon)
    assert [id(p) for p in optimizer.optimizers[0].param_groups[0]["params"]] == [id(p) for _, p in muon]


def newton_schulz(matrix, steps=5, a=3.4445, b=-4.7750, c=2.0315):
    """Muon's orthogonalisation written out: X <- a X + (b A + c A^2) X with A = X X^T, from X =
    M / |M| (in bfloat16, as PyTorch computes it), on the wide orientation of the matrix."""
    x = matrix.bfloat16()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def test_one_muon_step_equals_the_formula():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(48, 16))  # tall: orthogonalised as its transpose
    before = weight.detach().clone()
    lr, weight_decay, momentum = 0.02, 0.1, 0.95
    optimizer = torch.optim.Muon([weight], lr=lr, weight_decay=weight_decay, momentum=momentum,
                                 nesterov=True, adjust_lr_fn="match_rms_adamw")
    grads = [torch.randn(48, 16), torch.randn(48, 16)]
    buffer = torch.zeros(48, 16)
    expected = before.clone()
    for grad in grads:  # two steps: the second one uses the momentum the first one left
        weight.grad = grad.clone()
        optimizer.step()
        buffer = momentum * buffer + (1 - momentum) * grad  # the momentum, an average of gradients
        update = (1 - momentum) * grad + momentum * buffer  # Nesterov: look one step ahead
        orthogonal = newton_schulz(update).float()
        scale = 0.2 * math.sqrt(max(48, 16))  # match_rms_adamw: the RMS of an AdamW update
        expected = expected * (1 - lr * weight_decay) - lr * scale * orthogonal
    torch.testing.assert_close(weight.detach(), expected, rtol=0, atol=2e-3)
    # The update really is near-orthogonal: its singular values sit near 1 (0.5-1.5, see optim.py).
    singular = torch.linalg.svdvals(newton_schulz(torch.randn(48, 16)).float())
    assert singular.min() > 0.4 and singular.max() < 1.6
    # ...which a plain normalised gradient is not: the test above can tell the two apart.
    plain = torch.linalg.svdvals(grads[0] / grads[0].norm())
    assert plain.max() < 0.4


def test_one_schedule_drives_both_optimizers_with_their_ratio():
    model = GPT(GPTConfig(**TINY))
    optimizer = optim.configure_optimizer(model, "muon", learning_rate=1e-3, muon_lr_ratio=2.0)
    optim.set_lr(optimizer, 5e-3)
    muon_group, *adamw_groups = optimizer.param_groups
    assert muon_group["lr"] == pytest.approx(1e-2)
    assert all(group["lr"] == pytest.approx(5e-3) for group in adamw_groups)


def test_an_unknown_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match="optimizer='sgd'.*adamw, muon"):
        optim.configure_optimizer(GPT(GPTConfig(**TINY)), "sgd")


def test_newton_schulz_is_pytorchs_bit_for_bit():
    # optim.newton_schulz is what ShardedMuon runs; torch.optim.Muon runs its own copy: wide, tall,
    # square and ragged matrices must come out identical, or FSDP and one process would differ.
    from torch.optim._muon import _zeropower_via_newtonschulz as pytorchs
    torch.manual_seed(0)
    for shape in [(48, 16), (16, 48), (32, 32), (7, 300)]:
        matrix = torch.randn(*shape)
        assert torch.equal(optim.newton_schulz(matrix), pytorchs(matrix, (3.4445, -4.7750, 2.0315), 5, 1e-7))


@pytest.mark.parametrize("scaling", ["match_rms_adamw", "original"])
def test_sharded_muon_on_one_process_is_torchs_muon(scaling):
    # A one-process group is enough to shard a model: its ShardedMuon must step exactly as
    # torch.optim.Muon steps the same model unsharded (test_fsdp.py does two processes).
    store = torch.distributed.HashStore()
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = GPT(GPTConfig(**TINY))
        torch.manual_seed(0)  # the same initial weights
        sharded = distributed.shard_model(GPT(GPTConfig(**TINY)), "cpu", "float32")
        optimizers = [optim.configure_optimizer(m, "muon", learning_rate=0.02, muon_lr_scaling=scaling)
                      for m in (plain, sharded)]
        assert type(optimizers[0].optimizers[0]) is torch.optim.Muon
        assert type(optimizers[1].optimizers[0]) is optim.ShardedMuon
        idx = torch.randint(0, 65, (2, 16))
        for _ in range(3):
            for model, optimizer in zip((plain, sharded), optimizers):
                model(idx, idx)[1].backward()
                optimizer.step()
                optimizer.zero_grad()
        for (name, a), b in zip(plain.state_dict().items(), sharded.state_dict().values()):
            assert torch.equal(a, b.full_tensor()), name
    finally:
        torch.distributed.destroy_process_group()
