"""Parameter and MAC counts of models, computed on the meta device (no memory, no arithmetic).

MACs are ``torch.utils.flop_counter.FlopCounterMode``'s total FLOPs / 2 for one forward pass of a single
``[1, C, D, H, W]`` input in eval mode: convolutions (transposed and grouped too), matrix products and
attention count; normalisation, activations and element-wise ops do not (the convention of the papers'
"FLOPs", which are MACs). The forward runs on meta tensors, so counting a 1000 G-MAC network takes well under
a second. Where a forward needs tensor values (``.item()``, ``nonzero``, NumPy conversion) the meta device
cannot run it: the count is then reported as ``None`` with the reason rather than estimated.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from unipet.errors import UnipetError
from unipet.models.base import as_tuple3, count_parameters

#: the DpDNet comparison's training patch (D, H, W) in voxels
DEFAULT_PATCH = (112, 160, 128)


def profile_model(name_or_model: str | nn.Module, patch: Sequence[int] = DEFAULT_PATCH, in_channels: int = 2,
                  num_classes: int = 2, tasks: int = 4, device: str | torch.device = "meta",
                  count_macs: bool = True, **model_kwargs: Any) -> dict[str, Any]:
    """Parameters and MACs of a registered model (built for ``patch``) or of a model instance.

    Args:
        name_or_model: registry name (built on ``device`` with ``create``), or a module, profiled where it lives
            and never moved (build it under ``torch.device("meta")`` for a free count).
        patch: input size ``(D, H, W)`` in voxels; also the ``patch_size`` a registered model is built for.
        in_channels, num_classes: input channels and output classes.
        tasks: number of tasks for prompt-driven models (dummy prompts: task 0, zero text embeddings).
        device: where a registered model is built and run: ``"meta"`` (shapes only) or a real device.
        count_macs: False skips the forward pass (``macs`` is then None).
        **model_kwargs: architecture options for a registered model (e.g. ``feature_size=36``).

    Returns:
        ``{"name", "description", "prompts", "params", "macs", "patch", "reason"}``: ``params`` and ``macs`` are
        ints (``macs`` None when not counted), ``prompts`` the prompt inputs the model takes, ``reason`` why
        MACs could not be counted (None when they were, or were not asked for).

    Raises:
        UnipetError: the model cannot be built with these settings (unknown name, patch it cannot take, ...).
    """
    from unipet.models.registry import info

    patch = as_tuple3(patch)
    if isinstance(name_or_model, str):
        entry = info(name_or_model)
        model = _build(entry.name, patch, in_channels, num_classes, tasks, torch.device(device), model_kwargs)
        name, description, prompts = entry.name, entry.description, list(entry.prompts)
    else:
        model = name_or_model
        name = (getattr(model, "config", None) or {}).get("name") or type(model).__name__
        description = ((type(model).__doc__ or "").strip().splitlines() or [""])[0]
        prompts = sorted(set(getattr(model, "requires", ())) | set(getattr(model, "accepts", ())))
    macs, reason = _count_macs(model, patch, in_channels, tasks) if count_macs else (None, None)
    return {"name": name, "description": description, "prompts": prompts, "params": count_parameters(model),
            "macs": macs, "patch": list(patch), "reason": reason}


def profile_models(names: Sequence[str] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """``profile_model`` for each name (default: every registered model).

    A model that cannot be built with the settings (``UnipetError``) gets ``params`` and ``macs`` None and the
    error message as ``reason`` instead of stopping the listing. ``kwargs`` are ``profile_model``'s.
    """
    from unipet.models.registry import available, info

    rows = []
    for name in (available() if names is None else names):
        try:
            rows.append(profile_model(name, **kwargs))
        except UnipetError as exc:
            entry = info(name)
            rows.append({"name": name, "description": entry.description, "prompts": list(entry.prompts),
                         "params": None, "macs": None, "patch": list(as_tuple3(kwargs.get("patch", DEFAULT_PATCH))),
                         "reason": str(exc)})
    return rows


def _build(name: str, patch: tuple[int, int, int], in_channels: int, num_classes: int, tasks: int,
           device: torch.device, kwargs: dict[str, Any]) -> nn.Module:
    """``create(name, ...)`` with its parameters on ``device``."""
    from unipet.models.registry import create

    def build() -> nn.Module:
        return create(name, in_channels=in_channels, num_classes=num_classes, tasks=tasks, patch_size=patch, **kwargs)

    try:
        with device:
            return build()
    except (RuntimeError, NotImplementedError):
        if device.type != "meta":
            raise
    # Some constructors read tensor values (MONAI's SwinUNETR calls .item() on its drop-path schedule), which
    # meta tensors cannot give: build on the CPU and move the identical module to meta.
    with torch.device("cpu"):
        return build().to(device)


def _model_device(model: nn.Module) -> torch.device:
    """Device of the first parameter or buffer (CPU for a module that has neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _prompt_inputs(model: nn.Module, patch: tuple[int, int, int], tasks: int,
                   device: torch.device) -> tuple[dict[str, torch.Tensor], str | None]:
    """Dummy prompt inputs for the inputs a model requires or accepts: task 0, zero organ map, zero text."""
    requires = set(getattr(model, "requires", ()))
    wanted = requires | set(getattr(model, "accepts", ()))
    inputs: dict[str, torch.Tensor] = {}
    if "task" in wanted:
        inputs["task"] = torch.zeros(1, dtype=torch.long, device=device)
    if "organs" in wanted:
        inputs["organs"] = torch.zeros((1, *patch), dtype=torch.long, device=device)
    if "text" in wanted:
        dim = getattr(model, "text_dim", None)
        if dim is not None:
            rows = len(getattr(model, "task_set", ())) or tasks
            inputs["text"] = torch.zeros((rows, int(dim)), device=device)
        elif "text" in requires:
            return inputs, (f"{type(model).__name__} requires a 'text' input but has no 'text_dim' attribute giving "
                            "the embedding size; MACs not counted")
    return inputs, None


def _count_macs(model: nn.Module, patch: tuple[int, int, int], in_channels: int,
                tasks: int) -> tuple[int | None, str | None]:
    """(MACs of one eval-mode forward of a ``[1, in_channels, *patch]`` input, None) or (None, reason)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = _model_device(model)
    inputs, reason = _prompt_inputs(model, patch, tasks, device)
    if reason is not None:
        return None, reason
    x = torch.zeros((1, in_channels, *patch), device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x, **inputs)
    except UnipetError:
        raise
    except Exception as exc:  # an op that cannot run on this device (meta: needs tensor values)
        first = (str(exc).strip().splitlines() or [""])[0]
        return None, (f"the forward pass cannot run on the {device.type} device ({type(exc).__name__}: {first}); "
                      "profile it on a real device with device='cpu' or 'cuda'")
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2, None
