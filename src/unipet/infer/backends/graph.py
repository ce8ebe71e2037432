"""A checkpoint's network as ONNX graphs: what is traced, with which inputs, and at which tile size.

**Tile size: fixed, batch dynamic** (unipet's choice). Every graph takes ``x [B, C, *patch]`` float32 with the
checkpoint's patch (``CheckpointMeta.patch``) as fixed spatial dimensions and a dynamic batch ``B``. The sliding
window only ever feeds tiles of that size (the predictor pads a smaller volume up to one patch first), so a dynamic
spatial size would buy nothing but would keep ONNX Runtime and OpenVINO from planning their buffers and kernels for
one shape; the batch stays dynamic because ``--tile-batch`` and empty-tile skipping change it from call to call.

**Prompts** (models that take a task): ``task_mode="fixed"`` traces one graph per task with that task a
constant (``network.<task>.onnx``): each graph runs only its own prompt-aware head, as PyTorch does.
``task_mode="input"`` traces one graph with ``task int64[B]`` as a second input; since a graph has no data-dependent
branches, every per-task module then runs on every tile and each tile's own output is gathered
(``unipet.models.blocks.every_task_branch``): one file, more compute (the shipped default's paper-style PA heads
are about half of its MACs, so about 2.5x). A model with a task classifier also gets ``classifier.onnx``
(``x -> probabilities [B, N]``) for ``--task auto``. Models that need an organ map or another input are not
exported.

The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) at opset ``OPSET``: it traces 3-D
convolutions, instance norm, transposed convolutions and interpolation into plain ONNX operators.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Sequence

import torch

from unipet.errors import ConfigError

#: ONNX opset of exported graphs (17: LayerNormalization; read by ONNX Runtime >= 1.13 and OpenVINO >= 2022.3)
OPSET = 17
TASK_MODES = ("fixed", "input")


def _logits(out) -> torch.Tensor:
    return (out[0] if isinstance(out, (list, tuple)) else out).float()


class FixedTask(torch.nn.Module):
    """``x [B, C, ...] -> logits [B, K, ...]`` of ``model`` with the task ``index`` for every tile."""

    def __init__(self, model: torch.nn.Module, index: int | None) -> None:
        super().__init__()
        self.model, self.index = model, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.index is None:
            return _logits(self.model(x))
        task = torch.full((x.shape[0],), self.index, dtype=torch.long, device=x.device)
        return _logits(self.model(x, task=task))


class TaskInput(torch.nn.Module):
    """``(x [B, C, ...], task int64[B]) -> logits [B, K, ...]``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return _logits(self.model(x, task=task))


class Classifier(torch.nn.Module):
    """``x [B, C, ...] -> task probabilities [B, N]`` of a model's prompt-free classifier (``infer_task``)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, bottleneck = self.model.encode(x)
        return self.model.task_classifier(bottleneck).softmax(dim=1)


def needs_task(model: torch.nn.Module) -> bool:
    """True for a model that takes a task prompt."""
    return "task" in tuple(getattr(model, "requires", ())) + tuple(getattr(model, "accepts", ()))


def has_classifier(model: torch.nn.Module) -> bool:
    """True for a model with a prompt-free task classifier (``--task auto``)."""
    return hasattr(model, "infer_task") and getattr(model, "task_classifier", None) is not None


def check_exportable(model: torch.nn.Module) -> None:
    """``ConfigError`` for a model whose inputs an export cannot carry (an organ map, required text)."""
    required = set(getattr(model, "requires", ())) - {"task"}
    if required:
        raise ConfigError(f"{type(model).__name__} needs the input(s) {', '.join(sorted(required))}, which an "
                          "exported network does not take; export a model that needs at most a task prompt")


def export_onnx(module: torch.nn.Module, path: Path, patch: Sequence[int], in_channels: int,
                num_tasks: int | None = None) -> Path:
    """Trace ``module`` (one of the wrappers above) to ``path`` (see the module docstring for the shapes);
    ``num_tasks`` for a ``TaskInput`` graph (the task is then a second input, traced through every branch)."""
    from unipet.models.blocks import every_task_branch

    x = torch.zeros((2, in_channels, *patch))
    args: tuple = (x,)
    names, axes = ["x"], {"x": {0: "batch"}, "out": {0: "batch"}}
    branches = contextlib.nullcontext()
    if num_tasks is not None:
        args = (x, torch.tensor([0, min(1, num_tasks - 1)], dtype=torch.long))
        names.append("task")
        axes["task"] = {0: "batch"}
        branches = every_task_branch()
    with warnings.catch_warnings(), torch.no_grad(), branches:
        warnings.simplefilter("ignore")  # tracer warnings: the task's values and shape checks become constants
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, opset_version=OPSET, input_names=names,
                          output_names=["out"], dynamic_axes=axes, do_constant_folding=True)
    return path
