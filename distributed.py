"""
Several processes training one model: joining them under torchrun, and the DDP or FSDP wrapper.

`torchrun --nproc_per_node=N train.py ...` starts N copies of train.py and sets RANK,
LOCAL_RANK and WORLD_SIZE in each one's environment. `setup_distributed()` reads those, picks
this process's GPU and joins the process group; without torchrun it returns a one-process
`Distributed()` and nothing else changes. The Distributed it returns knows this process's
rank and splits work over the processes (`share()`), averages a value over them (`mean()`, for
the logged loss) and waits for them all (`barrier()`), each a no-op for one process.
`wrap_model()` then spreads the model over the processes in one of two ways (train.py's
`parallel` option):

- "ddp", PyTorch's DistributedDataParallel: every process keeps a full copy of the weights,
  gradients and optimizer state (16 bytes per parameter with AdamW in float32); gradients are
  averaged across processes inside backward(). Simple and fast while the model fits one GPU.
- "fsdp", PyTorch's FSDP2 (`fully_shard`): each block's weights, gradients and optimizer state
  are split across the processes, 1/N each; a block's full weights are gathered just before its
  forward and backward and freed after, and gradients are reduce-scattered so each process keeps
  only its shard. More communication, a fraction of the memory.

`unwrap_model()` gets the GPT back from the DDP and torch.compile wrappers (an FSDP model *is*
the GPT, its parameters sharded). The engines are PyTorch's; this module only holds the few lines
of setup around them (and `check_parallel()`, which refuses a setup that cannot run before any
work), so train.py joins the processes and wraps the model in a line each.
"""

import contextlib
import math
import os
import warnings
from dataclasses import dataclass

import torch
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

from common import ConfigError, started_by_torchrun


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

    def mean(self, value):
        """The mean of a tensor over all processes (the tensor itself for one process). For the
        logged loss: each rank's loss is its own micro-batches', and the mean over the ranks is
        the whole batch's, the number one process would print."""
        if self.enabled:
            value = value.clone()  # all_reduce works in place: leave the caller's tensor alone
            torch.distributed.all_reduce(value)  # a sum: gloo, the CPU backend, has no AVG
            value /= self.world_size
        return value

    def barrier(self):
        """Wait here until every process has arrived (a no-op for a single process)."""
        if self.enabled:
            torch.distributed.barrier()


def check_parallel(parallel, dtype, world_size):
    """Refuse, before any work, a way of spreading the model that cannot run: world_size is the
    number of processes torchrun starts, None without torchrun."""
    if parallel == "fsdp" and world_size is None:  # sharding needs processes and their group
        raise ConfigError("parallel=fsdp shards the model over the processes torchrun starts: run "
                          "torchrun --standalone --nproc_per_node=N train.py ... (N=1 works too), "
                          "or use parallel=ddp (the default) in a single process")
    if parallel == "fsdp" and dtype == "float16":
        raise ConfigError("parallel=fsdp trains in bfloat16 or float32, not float16 (whose loss scaling "
                          "does not cover sharded gradients here); use --dtype=bfloat16 or --dtype=float32")


def setup_distributed(device, parallel="ddp"):
    """Join the process group when started by torchrun; returns (Distributed, device)."""
    if not started_by_torchrun():
        check_parallel(parallel, None, None)
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


def wrap_model(model, dist, device, parallel="ddp", dtype="float32"):
    """DDP or FSDP around the model when there are several processes; the model itself otherwise."""
    if parallel == "fsdp":
        return shard_model(model, device, dtype)
    if not dist.enabled:
        return model
    return DDP(model, device_ids=[dist.local_rank] if device.startswith("cuda") else None)


def shard_model(model, device, dtype):
    """
    FSDP2: every block is sharded on its own, then the root, which holds what is left (the tied
    embedding/output matrix, the position embedding, the final LayerNorm). Per-block units are
    what saves memory: only one block's full weights exist at a time during forward and backward.
    """
    check_parallel("fsdp", dtype, 1)  # dtype "auto" is float16 on GPUs without bfloat16
    policy = MixedPrecisionPolicy()  # float32 throughout (CPU, or a float32 run)
    if device.startswith("cuda") and dtype != "float32":
        # Compute in 16 bits (the weights are gathered in bfloat16: half the traffic), but
        # reduce the gradients across processes in float32, where small updates are not lost.
        policy = MixedPrecisionPolicy(param_dtype=getattr(torch, dtype), reduce_dtype=torch.float32)
    for block in model.transformer.h:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    # GPT.forward returns its logits as a view (the padded vocabulary cut off); FSDP warns that an
    # in-place change of that view would skip a hook. Nothing here changes logits in place.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    return model


def unwrap_model(model):
    """The GPT inside torch.compile's (._orig_mod) and DDP's (.module) wrappers, in either order.
    Its state_dict has clean keys, loadable without either wrapper."""
    model = getattr(model, "_orig_mod", model)
    if isinstance(model, DDP):
        model = model.module
    return getattr(model, "_orig_mod", model)


def gradient_sync(model, sync):
    """
    A context for one backward pass: DDP averages (FSDP reduce-scatters) gradients across
    processes inside backward(), but with gradient accumulation only the last micro-step needs
    it. sync=False skips it (DDP's no_sync, FSDP's set_requires_gradient_sync); gradients then
    just add up locally until the last micro-step syncs the sum.
    """
    module = getattr(model, "_orig_mod", model)  # torch.compile's wrapper around DDP or FSDP
    if isinstance(module, DDP) and not sync:
        return module.no_sync()
    if isinstance(module, FSDPModule):
        module.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def is_sharded(model):
    """True for a model wrapped by FSDP (its parameters are DTensors, 1/N on each process)."""
    return isinstance(unwrap_model(model), FSDPModule)
