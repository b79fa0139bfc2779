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

Muon under FSDP (`ShardedMuon`): FSDP gives each process a slice of rows of every matrix, and
Newton-Schulz needs the whole matrix (X X^T mixes all of its rows). torch.optim.Muon accepts the
slices without complaint but then orthogonalises each DTensor piecewise, which is not the same
update. Here the momentum stays sharded (it is elementwise: each process updates its own rows), the
Nesterov update is gathered whole on every process, orthogonalised there exactly as one process
would, and each process keeps its own rows of the result. Why every process does every matrix,
rather than each doing a share and sending the results around (as distributed Muon
implementations do): for GPT-2 124M, Newton-Schulz is ~1.5 TFLOP per step against ~400 TFLOP for
the forward and backward passes of 0.5M tokens (0.4%), so sharing it out would save little and
cost a second round of communication and an assignment of matrices to processes. Gathering the
update is one all-gather per matrix, like the one FSDP does for the weights in every forward pass.
"""

import math

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

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
    # per tensor: one launch on a GPU; on a CPU the quick-start step gets ~6% faster (MPS and
    # others keep the default implementation).
    fused = device.split(":")[0] in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({"fused": True} if fused else {}))


def newton_schulz(matrix, steps=5, coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7):
    """
    Orthogonalise a matrix: replace M = U S V^T by (nearly) U V^T. From X = M / |M| (the Frobenius
    norm bounds the largest singular value, so every singular value starts in [0, 1]), each step
    X <- a X + (b A + c A^2) X with A = X X^T applies the polynomial a s + b s^3 + c s^5 to every
    singular value s, which pushes them all towards 1 (Keller Jordan's coefficients land them
    roughly in 0.5-1.5, which trains as well as exactly 1). bfloat16 and the wide orientation (so that
    X X^T is the smaller Gram matrix), as torch.optim.Muon computes it: the tests check the two
    agree bit for bit.
    """
    a, b, c = coefficients
    x = matrix.bfloat16()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def muon_lr_scale(scaling, shape):
    """torch.optim.Muon's learning-rate factor for a matrix of this shape (see the docstring)."""
    rows, cols = shape
    if scaling == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))  # "original", Keller Jordan's


class ShardedMuon(torch.optim.Muon):
    """torch.optim.Muon for matrices FSDP has split across processes (DTensors): the same update
    as one process computes, Newton-Schulz on the whole matrix (see the docstring)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # the Optimizer interface (Distributed Checkpoint calls step too)
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)  # sharded like p
                buffer = state["momentum_buffer"]
                buffer.lerp_(p.grad, 1 - momentum)  # elementwise: this process's rows only
                update = p.grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                whole = newton_schulz(update.full_tensor(), group["ns_steps"], group["ns_coefficients"],
                                      group["eps"])  # gathered: every process has the whole matrix
                # Keep this process's rows (src_data_rank=None: each uses its own copy, no sending).
                mine = distribute_tensor(whole, p.device_mesh, p.placements, src_data_rank=None)
                p.mul_(1 - lr * group["weight_decay"])  # decoupled weight decay
                p.add_(mine, alpha=-lr * muon_lr_scale(group["adjust_lr_fn"], p.shape))
        return loss


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
                        device="cpu", muon_lr_ratio=1.0, muon_lr_scaling="match_rms_adamw",
                        muon_momentum=0.95):
    """The optimizer train.py steps: see the module docstring. Returns an Optimizers."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer={name!r}: use one of {', '.join(OPTIMIZERS)}")
    if name == "adamw":
        optimizer = adamw(list(model.named_parameters()), learning_rate, weight_decay, betas, device)
        return Optimizers([optimizer], name)
    matrices, rest = split_parameters(model)
    sharded = any(isinstance(p, DTensor) for _, p in matrices)  # FSDP: see ShardedMuon
    muon_class = ShardedMuon if sharded else torch.optim.Muon
    muon = muon_class([p for _, p in matrices], lr=learning_rate * muon_lr_ratio, weight_decay=weight_decay,
                      momentum=muon_momentum, nesterov=True, adjust_lr_fn=muon_lr_scaling)
    muon.param_groups[0]["lr_ratio"] = muon_lr_ratio
    return Optimizers([muon, adamw(rest, learning_rate, weight_decay, betas, device)], name)
