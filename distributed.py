"""
Several processes training one model: joining them under torchrun, and the DDP wrapper.

`torchrun --nproc_per_node=N train.py ...` starts N copies of train.py and sets RANK,
LOCAL_RANK and WORLD_SIZE in each one's environment. `setup_distributed()` reads those, picks
this process's GPU and joins the process group; without torchrun it returns a one-process
`Distributed()` and nothing else changes. `wrap_model()` puts the model in PyTorch's
DistributedDataParallel (every process keeps a full copy; gradients are averaged across processes
inside backward()), and `unwrap_model()` gets the plain GPT back for saving and evaluating.

DDP itself is PyTorch's; this module only holds the few lines of setup around it, so train.py
can say "join, wrap, train" in three lines.
"""

import contextlib
import math
import os
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from common import ConfigError


@dataclass
class Distributed:
    """Which process this is. torchrun sets RANK, LOCAL_RANK and WORLD_SIZE for each one it starts."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    enabled: bool = False

    @property
    def is_master(self):  # rank 0 alone prints, logs and writes files
        return self.rank == 0

    def share(self, name, total):
        """This process's share of `total` units of work counted over all processes (e.g. the
        micro-steps of gradient accumulation); total must divide evenly."""
        if total % self.world_size:
            raise ConfigError(
                f"{name}={total} counts over all {self.world_size} processes and must be divisible by "
                f"that number; use e.g. --{name}={self.world_size * math.ceil(total / self.world_size)}")
        return total // self.world_size

    def barrier(self):
        """Wait here until every process has arrived (a no-op for a single process)."""
        if self.enabled:
            torch.distributed.barrier()


def setup_distributed(device):
    """Join the process group when started by torchrun; returns (Distributed, device)."""
    if "RANK" not in os.environ:
        return Distributed(), device
    dist = Distributed(rank=int(os.environ["RANK"]), local_rank=int(os.environ["LOCAL_RANK"]),
                       world_size=int(os.environ["WORLD_SIZE"]), enabled=True)
    if device.startswith("cuda"):
        device = f"cuda:{dist.local_rank}"  # one GPU per process
        torch.cuda.set_device(device)
        backend = "nccl"  # NVIDIA's GPU-to-GPU collectives
    else:
        backend = "gloo"  # works on CPU: used for testing DDP without GPUs
    torch.distributed.init_process_group(backend=backend)
    return dist, device


def teardown_distributed(dist):
    if dist.enabled:
        torch.distributed.destroy_process_group()


def wrap_model(model, dist, device):
    """DDP around the model when there are several processes; the model itself otherwise."""
    if not dist.enabled:
        return model
    return DDP(model, device_ids=[dist.local_rank] if device.startswith("cuda") else None)


def unwrap_model(model):
    """The plain GPT inside DDP (.module) and torch.compile (._orig_mod) wrappers.
    Its state_dict has clean keys, loadable without either wrapper."""
    if isinstance(model, DDP):
        model = model.module
    return getattr(model, "_orig_mod", model)


def gradient_sync(model, sync):
    """
    A context for one backward pass: DDP averages gradients across processes inside backward(),
    but with gradient accumulation only the last micro-step needs it. sync=False skips it
    (DDP's no_sync); gradients then just add up locally until the last micro-step syncs the sum.
    """
    if isinstance(model, DDP) and not sync:
        return model.no_sync()
    return contextlib.nullcontext()
