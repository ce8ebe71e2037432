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

#: DpDNet's Table 1 (2 input channels, 2 classes, 4 tasks, 112x160x128): ``name -> (params, MACs or None, note)``;
#: the note says why a row is not matched within 3 % (None where it is)
TABLE1: dict[str, tuple[float, float | None, str | None]] = {
    "nnunet": (30.79e6, 526.29e9, None),
    "nnunet-res": (46.71e6, 833.94e9, None),
    "unetr": (96.19e6, None, None),
    "swinunetr-v2": (46.49e6, None, "no published Swin UNETR-V2 configuration has 46.49 M (feature size 36: 41.02 M, "
                                    "48: 72.76 M); the V2 paper's configuration is kept"),
    "uxnet3d": (83.81e6, None, "3D UX-Net's published configuration has 53.0 M and no published setting gives "
                               "83.81 M"),
    "umamba": (42.12e6, 1067.69e9, None),
    "stunet-s": (14.60e6, 138.70e9, None),
    "uniseg": (15.12e6, None, None),
    "dodnet": (15.14e6, None, None),
    "clip-universal": (15.34e6, None, None),
    "dpdnet": (15.19e6, 138.79e9, None),
}
#: the settings of Table 1's counts
TABLE1_SETTINGS = {"in_channels": 2, "num_classes": 2, "tasks": 4}


def table1_comparison(name: str, params: int | None, macs: int | None, patch: Sequence[int], in_channels: int,
                      num_classes: int, tasks: int) -> dict[str, Any] | None:
    """A model's row of DpDNet's Table 1 beside the measured counts, or None for a model not in the table.

    Returns:
        ``{"params", "macs", "params_diff_pct", "macs_diff_pct", "within_3pct", "note"}``: the published counts,
        the relative differences in percent (None when not comparable: other channels / classes / tasks, a
        count not measured or not published; MACs only at the comparison's patch) and the documented reason
        where a row is not matched.
    """
    if name not in TABLE1:
        return None
    paper_params, paper_macs, note = TABLE1[name]
    same = (in_channels, num_classes, tasks) == tuple(TABLE1_SETTINGS.values())
    p_diff = round(100 * (params / paper_params - 1), 2) if same and params is not None else None
    m_diff = (round(100 * (macs / paper_macs - 1), 2)
              if same and macs is not None and paper_macs is not None and tuple(patch) == DEFAULT_PATCH else None)
    within = None if p_diff is None else abs(p_diff) <= 3 and (m_diff is None or abs(m_diff) <= 3)
    return {"params": paper_params, "macs": paper_macs, "params_diff_pct": p_diff, "macs_diff_pct": m_diff,
            "within_3pct": within, "note": note}


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
        ``{"name", "description", "prompts", "params", "macs", "patch", "reason", "table1", "paper"}``:
        ``params`` and ``macs`` are ints (``macs`` None when not counted), ``prompts`` the prompt inputs the model
        takes, ``reason`` why MACs could not be counted (None when they were, or were not asked for), ``table1``
        the model's row of DpDNet's Table 1 beside these counts (``table1_comparison``; None for other models or
        when ``model_kwargs`` change the architecture), ``paper`` the model's own paper's counts beside its
        (the model's ``paper_counts()``, e.g. gCIS's full and one-task pruned sizes; None for a model without
        one or when ``model_kwargs`` change the architecture).

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
    params = count_parameters(model)
    paper_counts = getattr(model, "paper_counts", None)
    return {"name": name, "description": description, "prompts": prompts, "params": params,
            "macs": macs, "patch": list(patch), "reason": reason,
            "table1": table1_comparison(name, params, macs, patch, in_channels, num_classes, tasks)
            if not model_kwargs else None,
            "paper": paper_counts() if callable(paper_counts) and not model_kwargs else None}


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
            patch = list(as_tuple3(kwargs.get("patch", DEFAULT_PATCH)))
            row = {"name": name, "description": entry.description, "prompts": list(entry.prompts),
                   "params": None, "macs": None, "patch": patch, "reason": str(exc), "table1": None, "paper": None}
            if name in TABLE1:
                row["table1"] = table1_comparison(name, None, None, patch, 2, 2, 4)
            rows.append(row)
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
