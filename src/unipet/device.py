"""Where computation runs: the torch device from a user's choice, and this process's place in a torchrun world.

Layer 0 (see ``DESIGN.md``): prediction (``infer``) and training (``train``) both choose devices here, so neither
imports the other to do it.
"""
from __future__ import annotations

import os

import torch

from unipet.errors import ConfigError


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's variables (``(0, 1, 0)`` when absent)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(device: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """``"auto"``/None -> CUDA when available; ``"cuda"`` -> ``cuda:local_rank`` under torchrun."""
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    return dev
