"""Loading pretrained weights by name, with input-channel adaptation (how STU-Net is fine-tuned on PET/CT).

Weights are read from ``.safetensors`` (preferred) or from ``.pt``/``.pth``/``.model``/``.ckpt`` state dicts with
``torch.load(weights_only=True)``: nothing is ever unpickled into code. A checkpoint dict that nests its
weights under ``state_dict``, ``network_weights`` (nnU-Net / STU-Net) or ``model`` is unwrapped, and the
``module.`` (DistributedDataParallel) and ``_orig_mod.`` (torch.compile) prefixes are removed.

When the checkpoint was trained with another number of input channels (e.g. STU-Net's 1-channel CT
pretraining, fine-tuned on 2-channel CT+PET), the kernels of the layers that read the input are repeated over
the input-channel axis: new channel ``i`` gets pretrained channel ``i mod C_pretrained``.

The authors' DpDNet weights use other names and another task order: ``load_dpdnet_release`` maps them into
``create("dpdnet", ...)`` (``pa_head="released"``) and refuses what does not fit.
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


# ---------------------------------------------------------------------------------------------------------------
# The authors' DpDNet weights (github.com/XinglongLiang08/DpDNet, class ``STUNet_prompt`` in STUNetTrainer.py)

#: the release's task keys in its task order (``self.map = {'lymp': 0, 'mela': 1, 'lung': 2, 'brea': 3}``) and the
#: unipet task each one is (names of the default task set; aliases are accepted through ``TaskSet.index``)
DPDNET_RELEASE_TASKS: tuple[tuple[str, str], ...] = (
    ("lymp", "lymphoma"), ("mela", "melanoma"), ("lung", "lung_cancer"), ("brea", "breast_cancer"))


def dpdnet_release_permutation(task_set) -> list[int]:
    """``perm[u]`` = the release's task index of unipet task ``u`` (``task_set`` = the model's TaskSet, 4 tasks)."""
    from unipet.errors import UnknownTaskError

    if len(task_set) != len(DPDNET_RELEASE_TASKS):
        raise ConfigError(f"the DpDNet release has {len(DPDNET_RELEASE_TASKS)} tasks (lymphoma, melanoma, lung and "
                          f"breast cancer); the model has {len(task_set)} ({', '.join(task_set.names)}): build it "
                          "with tasks=['lymphoma', 'melanoma', 'lung_cancer', 'breast_cancer'] (any order)")
    perm = [-1] * len(task_set)
    for r, (_, name) in enumerate(DPDNET_RELEASE_TASKS):
        try:
            perm[task_set.index(name)] = r
        except UnknownTaskError:
            raise ConfigError(f"the model's task set has no {name!r}, a task of the DpDNet release; build the model "
                              "with the default task set or one naming its four cancer types") from None
    return perm


def convert_dpdnet_release(state_dict: Mapping[str, torch.Tensor], task_set) -> dict[str, torch.Tensor]:
    """The release's state dict renamed and reordered into unipet's DpDNet (``pa_head="released"``).

    Renames ``intermedia_prompt`` -> ``universal_prompt.prompt``, ``fusion_layer.blocks.i.{conv,instnorm}`` ->
    ``universal_prompt.fuse.i.{conv,adn.N}``, ``other_gating_list.r`` -> ``common_prompt.gates.u``,
    ``conv_blocks_localization_task_specific.KEY`` / ``seg_outputs_task_specific.KEY`` -> ``pa_heads.u.0`` /
    ``pa_heads.u.1``; the backbone (``conv_blocks_context``, ``upsample_layers``, shared
    ``conv_blocks_localization``, ``seg_outputs``) has the same names. The release orders its tasks lymphoma,
    melanoma, lung, breast; the prompt channels, FUSE's prompt input and output channels, and each gate's
    channels are permuted into ``task_set``'s order, so the loaded model computes what the release computes
    (``model(x, task=u)`` = release ``(x, prompt=KEY)``).

    Raises:
        ConfigError: a tensor the mapping does not know (e.g. the two-encoder ``STUNet_prompt_pretrain`` variant,
            or deeper task heads with ``OptimizedResBlock``), or a release tensor that is missing.
    """
    perm = dpdnet_release_permutation(task_set)
    index = torch.tensor(perm, dtype=torch.long)
    keys = {key: u for u, key in ((perm.index(r), key) for r, (key, _) in enumerate(DPDNET_RELEASE_TASKS))}
    sd = unwrap_state_dict(dict(state_dict), "DpDNet release state dict")
    n = len(perm)
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    fuse_last = max((int(k.split(".")[2]) for k in sd if k.startswith("fusion_layer.blocks.")), default=-1)
    for name, value in sd.items():
        parts = name.split(".")
        if name.startswith(("conv_blocks_context.", "upsample_layers.", "conv_blocks_localization.",
                            "seg_outputs.")):
            out[name] = value
        elif name == "intermedia_prompt":
            if value.ndim != 5 or value.shape[1] != n:
                raise ConfigError(f"release tensor intermedia_prompt has shape {tuple(value.shape)}; expected "
                                  f"[1, {n}, d, h, w]")
            out["universal_prompt.prompt"] = value.index_select(1, index)
        elif name.startswith("fusion_layer.blocks.") and len(parts) == 5 and parts[3] in ("conv", "instnorm"):
            i, kind, leaf = int(parts[2]), parts[3], parts[4]
            if i == 0 and kind == "conv" and leaf == "weight":  # input = [bottleneck C, prompts N]
                c = value.shape[1] - n
                value = torch.cat([value[:, :c], value[:, c:].index_select(1, index)], dim=1)
            if i == fuse_last:  # output = one channel per task
                value = value.index_select(0, index)
            out[f"universal_prompt.fuse.{i}." + ("conv." if kind == "conv" else "adn.N.") + leaf] = value
        elif parts[0] == "other_gating_list" and len(parts) == 3:
            r = int(parts[1])
            if not 0 <= r < n:
                unknown.append(name)
                continue
            u = perm.index(r)
            release_others = [j for j in range(n) if j != r]
            p = torch.tensor([release_others.index(perm[o]) for o in range(n) if o != u], dtype=torch.long)
            value = value.index_select(0, p)
            if value.ndim == 5:
                value = value.index_select(1, p)
            out[f"common_prompt.gates.{u}.{parts[2]}"] = value
        elif parts[0] == "conv_blocks_localization_task_specific" and parts[1] in keys:
            out[f"pa_heads.{keys[parts[1]]}.0." + ".".join(parts[2:])] = value
        elif parts[0] == "seg_outputs_task_specific" and parts[1] in keys and len(parts) == 3:
            out[f"pa_heads.{keys[parts[1]]}.1.{parts[2]}"] = value
        else:
            unknown.append(name)
    if unknown:
        raise ConfigError(f"{len(unknown)} tensors of the given weights are not part of the DpDNet release's "
                          f"STUNet_prompt (first: {unknown[:3]}); give the weights of STUNetTrainer_small_prompt "
                          "(the two-encoder pre-training variant and deeper task heads are not supported)")
    for needed in ("intermedia_prompt", "fusion_layer.blocks.0.conv.weight", "other_gating_list.0.weight"):
        if needed not in sd:
            raise ConfigError(f"the given weights have no {needed!r}: they are not a DpDNet release state dict")
    return out


def load_dpdnet_release(model: nn.Module, path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
                        adapt_input_channels: bool = False) -> LoadReport:
    """Load the authors' released DpDNet weights into unipet's DpDNet, refusing what does not fit.

    Args:
        model: ``create("dpdnet", tasks=<the four cancer types, any order>, patch_size=(112, 160, 128))`` with
            the defaults (``pa_head="released"``, both prompts, PA heads, ``task_classifier=False``) and the
            release's STU-Net-S backbone (``backbone="s"``), 2 input channels (CT, PET) and 2 classes.
        path_or_state_dict: the release's ``checkpoint_final.pth`` / ``checkpoint_best.pth`` (nnU-Net nests the
            weights under ``network_weights``; read with ``weights_only=True``), a ``.safetensors`` or a dict.
        adapt_input_channels: repeat input kernels when the model has another number of input channels.

    Returns:
        A ``LoadReport`` (every model tensor loaded).

    Raises:
        ConfigError: the model is not a DpDNet with released heads, the task set lacks a release task, or any
            tensor is missing, unknown or of another shape (e.g. a model built for another patch size: the
            release's prompt is fixed to the 112x160x128 bottleneck 7x5x4).
    """
    from unipet.models.dpdnet import DpDNet

    if not isinstance(model, DpDNet) or model.universal_prompt is None or model.common_prompt is None \
            or not model.specific_prompt or not model.use_pa_heads or not isinstance(model.pa_heads[0], nn.Sequential):
        raise ConfigError("the DpDNet release loads into create('dpdnet', ...) with its defaults (pa_head='released', "
                          "both prompts and the PA heads on); build the model that way")
    if model.task_classifier is not None:
        raise ConfigError("the DpDNet release has no task classifier; build the model with task_classifier=False "
                          "(train a classifier afterwards with the dpdnet-prompt-free recipe if needed)")
    source = path_or_state_dict if isinstance(path_or_state_dict, Mapping) else read_state_dict(path_or_state_dict)
    converted = convert_dpdnet_release(source, model.task_set)
    try:
        return load_pretrained(model, converted, adapt_input_channels=adapt_input_channels, strict=True)
    except ConfigError as exc:
        raise ConfigError(f"the DpDNet release weights do not fit this model ({exc}); build it with backbone='s', "
                          "patch_size=(112, 160, 128), 2 classes and the release's input channels") from None
