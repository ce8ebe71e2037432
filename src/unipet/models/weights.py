"""Loading pretrained weights by name, with input-channel adaptation (how STU-Net is fine-tuned on PET/CT).

Weights are read from ``.safetensors`` (preferred) or from ``.pt``/``.pth``/``.model``/``.ckpt`` state dicts with
``torch.load(weights_only=True)``: nothing is ever unpickled into code. A checkpoint dict that nests its
weights under ``state_dict``, ``network_weights`` (nnU-Net / STU-Net) or ``model`` is unwrapped, and the
``module.`` (DistributedDataParallel) and ``_orig_mod.`` (torch.compile) prefixes are removed.

When the checkpoint was trained with another number of input channels (e.g. STU-Net's 1-channel CT
pretraining, fine-tuned on 2-channel CT+PET), the kernels of the layers that read the input are repeated over
the input-channel axis: new channel ``i`` gets pretrained channel ``i mod C_pretrained``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from unipet.errors import ConfigError, InputFileError
from unipet.fileio import atomic_path

TORCH_SUFFIXES = (".pt", ".pth", ".model", ".ckpt")
NESTED_KEYS = ("state_dict", "network_weights", "model")
PREFIXES = ("module.", "_orig_mod.")


@dataclass
class LoadReport:
    """What ``load_pretrained`` did; names are the model's parameter / buffer names."""

    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: counts of loaded, adapted, missing, unexpected and shape-mismatched tensors."""
        return (f"loaded {len(self.loaded)} tensors ({len(self.adapted)} input-adapted); missing "
                f"{len(self.missing)}, unexpected {len(self.unexpected)}, shape-mismatched {len(self.mismatched)}")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict (``name -> tensor``, on the CPU) from a safetensors or torch file."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"weights file {path} does not exist; give the path of a .safetensors or .pth file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise InputFileError(f"{path} is not a readable safetensors file ({exc}); re-export the weights") from None
    if path.suffix in TORCH_SUFFIXES:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors of many kinds: refuse instead of unpickling code
            raise InputFileError(f"{path} is not a plain state dict that loads with weights_only=True ({exc}); "
                                 "convert it to .safetensors in a trusted environment") from None
        return unwrap_state_dict(data, str(path))
    raise InputFileError(f"{path} has an unknown weights format; use .safetensors (or {', '.join(TORCH_SUFFIXES)})")


def unwrap_state_dict(data: object, source: str = "state dict") -> dict[str, torch.Tensor]:
    """Find the ``name -> tensor`` mapping in a checkpoint dict and strip DDP / compile prefixes."""
    while isinstance(data, Mapping) and not any(isinstance(v, torch.Tensor) for v in data.values()):
        key = next((k for k in NESTED_KEYS if k in data), None)
        if key is None:
            break
        data = data[key]
    if not isinstance(data, Mapping) or not any(isinstance(v, torch.Tensor) for v in data.values()):
        raise InputFileError(f"{source} holds no tensors (looked under {', '.join(NESTED_KEYS)}); "
                             "give a state dict of the model's weights")
    out = {}
    for name, value in data.items():
        if isinstance(value, torch.Tensor):
            for prefix in PREFIXES:
                name = name.removeprefix(prefix)
            out[name] = value
    return out


def repeat_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """``[out, C_src, *k]`` -> ``[out, in_channels, *k]``; channel ``i`` copies source channel ``i mod C_src``."""
    index = torch.arange(in_channels) % weight.shape[1]
    return weight.index_select(1, index.to(weight.device)).contiguous()


def input_parameter_names(model: nn.Module) -> list[str]:
    """Parameters that read the network input: the model's own list, else the first convolution's weight."""
    if hasattr(model, "input_parameter_names"):
        return list(model.input_parameter_names())
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return [f"{name}.weight"]
    return []


def load_pretrained(model: nn.Module, path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
                    adapt_input_channels: bool = True, strict: bool = False) -> LoadReport:
    """Copy pretrained tensors into ``model`` by name.

    Args:
        model: the model to fill (its tensors are overwritten in place).
        path_or_state_dict: a weights file (see ``read_state_dict``) or a state dict.
        adapt_input_channels: repeat the input layers' kernels when the input-channel count differs.
        strict: raise ConfigError unless every model tensor is loaded and every checkpoint tensor used.

    Returns:
        A ``LoadReport``. Tensors whose shapes differ (other than adapted input layers), e.g. a segmentation
        head with another number of classes, keep their initial values and are listed in ``mismatched``.
    """
    if isinstance(path_or_state_dict, Mapping):
        source = unwrap_state_dict(path_or_state_dict)
    else:
        source = read_state_dict(path_or_state_dict)
    target = model.state_dict()
    adaptable = set(input_parameter_names(model)) if adapt_input_channels else set()
    report = LoadReport()
    to_load: dict[str, torch.Tensor] = {}
    for name, value in source.items():
        if name not in target:
            report.unexpected.append(name)
            continue
        want = target[name]
        if value.shape != want.shape and name in adaptable and value.ndim == want.ndim and value.ndim > 2 \
                and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]:
            value = repeat_input_channels(value, want.shape[1])
            report.adapted.append(name)
        if value.shape != want.shape:
            report.mismatched.append(name)
            continue
        to_load[name] = value.to(dtype=want.dtype)
        report.loaded.append(name)
    report.missing = [n for n in target if n not in to_load]
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise ConfigError(f"pretrained weights do not fit the model: {report.summary()}; use strict=False to load "
                          f"what fits (first problems: {(report.missing + report.unexpected + report.mismatched)[:3]})")
    model.load_state_dict(to_load, strict=False)
    return report


def save_weights(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike,
                 overwrite: bool = False) -> Path:
    """Write a model's state dict as ``.safetensors`` atomically (refuses to overwrite unless asked)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"{path}: weights are written as .safetensors; give a path ending in .safetensors")
    state = (model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module)
             else dict(model_or_state_dict))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(path, overwrite) as tmp:
        save_file(tensors, str(tmp))
    return path
