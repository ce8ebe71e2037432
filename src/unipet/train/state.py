"""Training state beside a checkpoint: optimizer, loss scaler and RNG states, packed for
``unipet.checkpoint.save_checkpoint`` and restored on ``--resume``.

The checkpoint module stores the packed ``(tensors, json)`` pair as ``train_state.safetensors`` and
``train_state.json`` without knowing what is inside; this module is the one that knows. Tensors: the optimizer's
(flattened as ``optimizer.<param>.<name>``), the torch CPU/CUDA RNG states (``rng.torch``, ``rng.cuda.<i>``) and a
caller's extra tensors (``extra.<name>``); JSON: the optimizer's hyper-parameters, numpy's RNG and the caller's
state (iteration, sampler, grad-scaler).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from unipet.checkpoint import CheckpointMeta, save_checkpoint


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (``optimizer.<param>.<name>``) and a JSON-able rest."""
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, entries in state["state"].items():
        rest["state"][str(pid)] = {}
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{pid}.{name}"] = value.detach().to("cpu").contiguous()
                rest["state"][str(pid)][name] = {"tensor": True}
            else:
                rest["state"][str(pid)][name] = value
    return tensors, rest


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of ``flatten_optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for pid, entries in rest["state"].items():
        state[int(pid)] = {name: (tensors[f"optimizer.{pid}.{name}"] if isinstance(v, dict) and v.get("tensor") else v)
                           for name, v in entries.items()}
    groups = [dict(g) for g in rest["param_groups"]]
    for g in groups:  # JSON turned tuples into lists
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Global torch (CPU and CUDA) and numpy RNG states as ``(tensors, json)``."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return tensors, {"numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]}


def set_rng_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    """Restore what ``rng_state`` saved."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.split(".")[-1]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, gauss = rest["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))


def pack_training_state(optimizer: torch.optim.Optimizer | None = None, train_state: dict[str, Any] | None = None,
                        extra_tensors: dict[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, json)`` of a run's state: RNGs, the optimizer, ``train_state`` (JSON-able: iteration, sampler,
    scaler, ...) and ``extra_tensors`` (e.g. an augmentation generator's state)."""
    tensors, rest = rng_state()
    state: dict[str, Any] = {"rng": rest, **(train_state or {})}
    if optimizer is not None:
        opt_tensors, opt_rest = flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
        state["optimizer"] = opt_rest
    tensors.update({f"extra.{k}": v.detach().to("cpu").contiguous() for k, v in (extra_tensors or {}).items()})
    return tensors, state


def save_training_checkpoint(run_dir: str | Path, model: torch.nn.Module, meta: CheckpointMeta | dict[str, Any],
                             optimizer: torch.optim.Optimizer | None = None, train_state: dict[str, Any] | None = None,
                             extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """``save_checkpoint`` with the run's training state (``pack_training_state``) beside the weights."""
    return save_checkpoint(run_dir, model, meta, pack_training_state(optimizer, train_state, extra_tensors))


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Load the optimizer state saved by ``save_checkpoint`` (tensors moved to the parameters' device)."""
    optimizer.load_state_dict(unflatten_optimizer(tensors, state["optimizer"]))


def grad_scaler(amp_dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler of a run: active only for float16 autocast on CUDA (bfloat16 and float32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16 and device.type == "cuda")


def restore_training(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                     tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> int:
    """Load the optimizer and loss-scaler state of a training checkpoint; returns the iteration to continue from."""
    restore_optimizer(optimizer, tensors, state)
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return int(state["iteration"])
