"""Distributed data parallel from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_*``).

``torchrun --nproc_per_node=K -m unipet train ...`` starts K processes; each calls ``init_distributed`` which
joins the process group (NCCL on CUDA, gloo on CPU) and picks its device (``cuda:LOCAL_RANK``). Each rank
draws its own patches (the rank is part of the sampler's seed); rank 0 alone writes checkpoints and logs.
Without those variables everything runs in one process and these helpers are no-ops.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from unipet.device import env_world, resolve_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, its ``local_rank`` and ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | torch.device | None = None) -> DistInfo:
    """Join the process group named by the environment (if any) and choose this rank's device."""
    rank, world, local = env_world()
    dev = resolve_device(device, local)
    if world <= 1:
        return DistInfo(0, 1, 0, dev)
    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
        here = True
    return DistInfo(rank, world, local, dev, here)


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DDP-wrap ``model`` when running distributed (``find_unused_parameters``: per-task heads idle per batch)."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def any_flag(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is True on any rank (e.g. a SIGTERM received by one process)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in one process)."""
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group if this module joined it."""
    if info.initialised_here and dist.is_initialized():
        dist.destroy_process_group()
