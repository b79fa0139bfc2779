"""
The optimizers: AdamW for everything, or Muon for the blocks' matrices and AdamW for the rest.

`configure_optimizer()` returns one object with `step()`, `zero_grad()`, `param_groups` and
`state_dict()`, whichever is chosen, so train.py's loop and learning-rate schedule do not care:

- "adamw": AdamW with weight decay on the matrices only. Decay pulls weights towards 0 to keep
  them small; biases and LayerNorm gains (1-D) only shift and scale, and pulling a LayerNorm gain
  towards 0 would just fight the normalisation.
- "muon" (Keller Jordan, 2024; the optimizer of the modded-nanogpt speedrun records and nanochat):
  the 2-D weight matrices *inside the blocks* (attention's c_attn and c_proj, the MLP's c_fc and
  c_proj) are trained with PyTorch's `torch.optim.Muon`; everything else keeps AdamW.

What Muon does. It keeps a momentum of the gradient, like SGD with momentum, but does not step
along it directly: it first replaces the momentum matrix M = U S V^T by (nearly) U V^T, the
closest matrix whose singular values are all 1. A gradient matrix is usually dominated by a few
directions (a few large singular values); after "orthogonalisation" every direction the gradient
points in gets the same step size, so rarely-seen directions are not starved by the common ones.
Computing U V^T exactly needs an SVD; Muon approximates it with 5 Newton-Schulz iterations,
X <- a X + b (X X^T) X + c (X X^T)^2 X, starting from M / |M|: each iteration pushes every singular
value towards 1, and only matrix products are needed, which is what accelerators are fast at.

Why only the blocks' matrices: orthogonalising is about a matrix acting as a linear map from one
space to another. The embedding is a lookup table (each row is one token's vector, trained only
when that token appears) and the output head's rows are likewise per-token scores; the speedrun
records found both train better with AdamW, and 1-D gains and biases are not matrices at all.
The tied embedding/output matrix is one parameter and goes to AdamW once.

The learning rate: Muon's update has a fixed size per matrix (its singular values are ~1), so its
learning rate means something else than AdamW's. With adjust_lr_fn="match_rms_adamw" (Moonshot AI,
"Muon is Scalable for LLM Training", 2025) PyTorch scales it by 0.2 x sqrt(max(rows, cols)), which
gives updates of the same RMS size as AdamW's: the same schedule then drives both. `muon_lr_ratio`
multiplies Muon's rate on top, for recipes tuned separately.
"""

import inspect

import torch
from torch.distributed.tensor import DTensor

from common import ConfigError
from distributed import unwrap_model

OPTIMIZERS = ("adamw", "muon")


def split_parameters(model):
    """(matrices for Muon, everything else for AdamW): the 2-D weights inside the blocks go to
    Muon; embeddings (the tied wte/lm_head matrix once), position embeddings, LayerNorm gains and
    biases go to AdamW. Returns two lists of (name, parameter)."""
    muon, adamw = [], []
    # The names of the GPT itself, not of a DDP or torch.compile wrapper ("module.", "_orig_mod.").
    for name, param in unwrap_model(model).named_parameters():  # a tied parameter is listed once
        if not param.requires_grad:
            continue
        inside_a_block = name.startswith("transformer.h.")
        (muon if inside_a_block and param.dim() == 2 else adamw).append((name, param))
    return muon, adamw


def adamw(named_params, learning_rate, weight_decay, betas, device):
    """AdamW with decay on the matrices (dim >= 2) only."""
    groups = [
        {"params": [p for _, p in named_params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for _, p in named_params if p.dim() < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    # The fused kernel updates every parameter in one pass instead of a dozen small operations
    # per tensor: one launch on a GPU; on a CPU the quick-start step gets ~6% faster (PyTorch
    # >= 2.4 has it for both; MPS and others keep the default implementation).
    fused = device.split(":")[0] in ("cuda", "cpu") and "fused" in inspect.signature(torch.optim.AdamW).parameters
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({"fused": True} if fused else {}))


class Optimizers:
    """
    Several torch optimizers stepping as one: what train.py calls `optimizer`. Each param group
    keeps "lr_ratio", its learning rate relative to the schedule's, so set_lr() drives them all.
    """

    def __init__(self, optimizers, name="adamw"):
        self.optimizers, self.name = list(optimizers), name  # name: "adamw" or "muon", as configured
        for group in self.param_groups:
            group.setdefault("lr_ratio", 1.0)

    @property
    def param_groups(self):
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    @property
    def state(self):
        return {p: s for optimizer in self.optimizers for p, s in optimizer.state.items()}

    def step(self):
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none=True):
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return [optimizer.state_dict() for optimizer in self.optimizers]

    def load_state_dict(self, states):
        for optimizer, state in zip(self.optimizers, states):
            optimizer.load_state_dict(state)


def set_lr(optimizer, lr):
    """The schedule's learning rate, times each group's lr_ratio."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_ratio", 1.0)


def configure_optimizer(model, name="adamw", learning_rate=6e-4, weight_decay=0.1, betas=(0.9, 0.95),
                        device="cpu", muon_lr_ratio=1.0, muon_lr_scaling="match_rms_adamw", muon_momentum=0.95):
    """The optimizer train.py steps: see the module docstring. Returns an Optimizers."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer={name!r}: use one of {', '.join(OPTIMIZERS)}")
    if name == "adamw":
        return Optimizers([adamw(list(model.named_parameters()), learning_rate, weight_decay, betas, device)], name)
    matrices, rest = split_parameters(model)
    if any(isinstance(p, DTensor) for _, p in matrices):
        raise ConfigError("optimizer=muon orthogonalises whole matrices, and parallel=fsdp splits them "
                          "across processes; use optimizer=muon with parallel=ddp, or optimizer=adamw with fsdp")
    muon = torch.optim.Muon([p for _, p in matrices], lr=learning_rate * muon_lr_ratio,
                            weight_decay=weight_decay, momentum=muon_momentum, nesterov=True,
                            adjust_lr_fn=muon_lr_scaling)
    muon.param_groups[0]["lr_ratio"] = muon_lr_ratio
    return Optimizers([muon, adamw(rest, learning_rate, weight_decay, betas, device)], name)
