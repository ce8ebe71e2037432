"""Convolutional building blocks shared by the STU-Net family and the prompt-driven models built on it.

All blocks take and return ``[B, C, D, H, W]`` tensors. Module attribute names follow STU-Net's released
checkpoints (``conv1/norm1/conv2/norm2/conv3`` in a residual block, ``conv`` in an upsampling layer) so that
public STU-Net weights load by name (``unipet.models.weights.load_pretrained``).
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from unipet.errors import ConfigError, ImageGeometryError
from unipet.models.base import as_tuple3

LEAKY_SLOPE = 0.01


def check_patch_multiple(patch_size: Sequence[int], multiple: int, model: str) -> tuple[int, int, int]:
    """``patch_size`` as a 3-tuple; ConfigError naming the nearest valid patch unless each axis is a multiple."""
    patch = as_tuple3(patch_size)
    if any(p <= 0 or p % multiple for p in patch):
        valid = tuple(max(multiple, math.ceil(p / multiple) * multiple) for p in patch)
        raise ConfigError(f"{model} needs a patch whose sizes are multiples of {multiple}, got {patch}; "
                          f"use e.g. --patch {' '.join(map(str, valid))}")
    return patch


def organ_fractions(organs: torch.Tensor, classes: int, cell: int | Sequence[int]) -> torch.Tensor:
    """Share of every organ label in each cell of ``cell`` voxels: ``avg_pool3d(one_hot(organs), cell)``.

    Counted with ``scatter_add`` so that no full-resolution one-hot map (``classes`` times the patch's memory)
    is made.

    Args:
        organs: ``[B, D, H, W]`` integer labels in ``0 .. classes - 1``; D, H, W divisible by ``cell``.
        classes: number of label values K.
        cell: ``(cz, cy, cx)`` cell size in voxels (one int: a cube; MAST-Pro's anatomical encoder uses 4).

    Returns:
        ``[B, K, D/cz, H/cy, W/cx]`` float32 fractions (each cell's K values sum to 1).

    Raises:
        ConfigError: a label value outside ``0 .. classes - 1``.
    """
    b, d, h, w = organs.shape
    cz, cy, cx = (int(c) for c in ((cell,) * 3 if isinstance(cell, int) else cell))
    if d % cz or h % cy or w % cx:
        raise ImageGeometryError(f"organ map of size {(d, h, w)} is not divisible by the cell {(cz, cy, cx)}; give "
                                 "a patch divisible by the model's total stride")
    labels = organs.long()
    if labels.device.type != "meta" and labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= classes:
            raise ConfigError(f"organ map holds label values {low}..{high} but the model was built for 0..{classes - 1}; "
                              f"build it with organ_classes={high + 1} (or remap the organ labels)")
    cells = (labels.reshape(b, d // cz, cz, h // cy, cy, w // cx, cx).permute(0, 1, 3, 5, 2, 4, 6)
             .reshape(b, -1, cz * cy * cx))
    counts = torch.zeros(b, cells.shape[1], classes, device=organs.device)
    counts.scatter_add_(2, cells, torch.ones(cells.shape, device=organs.device))
    return (counts / (cz * cy * cx)).transpose(1, 2).reshape(b, classes, d // cz, h // cy, w // cx)


def conv_norm_act(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Module:
    """``Conv3d(k, padding k//2, bias) -> InstanceNorm3d(affine) -> LeakyReLU(0.01)``; keeps the spatial size."""
    return Convolution(
        spatial_dims=3, in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
        act=("leakyrelu", {"negative_slope": LEAKY_SLOPE, "inplace": True}),
        norm=("instance", {"affine": True}), bias=True,
    )


class ResBlock(nn.Module):
    """STU-Net's residual block: ``conv3-IN-LReLU-conv3-IN`` + shortcut, then LReLU.

    The shortcut is the identity, or a strided 1x1x1 convolution ("projection", ``conv3``) when the channel
    count or the stride changes. Written by hand rather than MONAI's ``UnetResBlock`` because that block drops
    the convolution biases and normalises the shortcut, which changes both the parameter count and the
    checkpoint layout of STU-Net.

    Args:
        in_channels, out_channels: channels of the input ``[B, in, D, H, W]`` and output.
        stride: downsampling stride of the first convolution (and of the projection).
        projection: force a 1x1x1 projection shortcut even when shapes agree (STU-Net puts one on the first
            block of every stage).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: Sequence[int] | int = 1,
                 projection: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.norm1 = nn.InstanceNorm3d(out_channels, affine=True)
        self.act1 = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        self.norm2 = nn.InstanceNorm3d(out_channels, affine=True)
        self.act2 = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        strided = any(s != 1 for s in ((stride,) * 3 if isinstance(stride, int) else stride))
        needs_projection = projection or in_channels != out_channels or strided
        self.conv3 = nn.Conv3d(in_channels, out_channels, 1, stride=stride) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        shortcut = x if self.conv3 is None else self.conv3(x)
        return self.act2(y + shortcut)


def res_stage(in_channels: int, out_channels: int, depth: int, stride: Sequence[int] | int = 1) -> nn.Sequential:
    """One STU-Net stage: a (strided) block with a projection shortcut, then ``depth - 1`` identity blocks."""
    blocks = [ResBlock(in_channels, out_channels, stride=stride, projection=True)]
    blocks += [ResBlock(out_channels, out_channels) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


class UpsampleNearest(nn.Module):
    """Nearest-neighbour upsampling by ``scale`` followed by a 1x1x1 convolution (STU-Net's upsampling layer).

    ``[B, in, d, h, w] -> [B, out, d*sz, h*sy, w*sx]``.
    """

    def __init__(self, in_channels: int, out_channels: int, scale: Sequence[int]) -> None:
        super().__init__()
        self.scale = tuple(int(s) for s in scale)
        self.conv = nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s != 1 for s in self.scale):
            x = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return self.conv(x)


def cumulative_stride(strides: Sequence[Sequence[int]]) -> tuple[int, int, int]:
    """Product of per-stage strides per axis: the factor between input and bottleneck size."""
    total = [1, 1, 1]
    for s in strides:
        total = [t * int(v) for t, v in zip(total, s)]
    return tuple(total)  # type: ignore[return-value]


def bottleneck_size(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> tuple[int, int, int]:
    """Spatial size ``(d, h, w)`` of the bottleneck for an input of ``patch_size`` (voxels)."""
    total = cumulative_stride(strides)
    return tuple(int(p) // t for p, t in zip(patch_size, total))  # type: ignore[return-value]


def check_divisible(shape: Sequence[int], strides: Sequence[Sequence[int]], model: str) -> None:
    """Raise ImageGeometryError unless every spatial size is divisible by the network's total stride."""
    total = cumulative_stride(strides)
    if any(int(s) % t for s, t in zip(shape, total)):
        raise ImageGeometryError(
            f"{model} needs an input whose size (z, y, x) is divisible by {total}, got {tuple(shape)}; "
            "pad the volume or run it through the sliding-window predictor with the model's patch size")


def group_by_task(task: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
    """Split a batch by task: ``[(task_id, sample_indices), ...]``; indices are None when all samples share it.

    On the meta device (shape-only runs such as parameter / MAC counting) task values cannot be read; the
    whole batch is then treated as task 0, which has the same shapes and cost as any single-task batch.
    """
    if task.device.type == "meta":
        return [(0, None)]
    ids = task.tolist()
    unique = sorted(set(ids))
    if len(unique) == 1:
        return [(unique[0], None)]
    return [(t, (task == t).nonzero(as_tuple=True)[0]) for t in unique]


_EVERY_BRANCH: contextvars.ContextVar[bool] = contextvars.ContextVar("every_task_branch", default=False)


@contextlib.contextmanager
def every_task_branch() -> Iterator[None]:
    """Within this block ``run_grouped`` runs every task's module on every sample and gathers (see there)."""
    token = _EVERY_BRANCH.set(True)
    try:
        yield
    finally:
        _EVERY_BRANCH.reset(token)


def run_grouped(task: torch.Tensor, x: torch.Tensor, modules: nn.ModuleList) -> torch.Tensor:
    """Apply ``modules[task[b]]`` to each sample ``x[b]``, running each module once on its samples only.

    Args:
        task: ``LongTensor[B]``.
        x: ``[B, ...]`` input.
        modules: one module per task, all mapping ``[n, ...]`` to outputs of one common shape.

    Returns:
        ``[B, ...]`` outputs in the original sample order.

    Inside ``every_task_branch()`` (tracing a graph whose task is an input: ``unipet export --task-mode input``)
    the task's values are unknown, so every module runs on every sample and each sample's own output is gathered:
    the same result per sample, at ``len(modules)`` times these modules' cost, in a graph without data-dependent
    control flow.
    """
    if _EVERY_BRANCH.get():
        outs = torch.stack([m(x) for m in modules], dim=1)  # [B, N, ...]
        return outs[torch.arange(x.shape[0], device=x.device), task]
    groups = group_by_task(task)
    if len(groups) == 1:
        return modules[groups[0][0]](x)
    outs = [(idx, modules[t](x.index_select(0, idx))) for t, idx in groups]
    result = outs[0][1].new_empty((x.shape[0], *outs[0][1].shape[1:]))
    for idx, out in outs:
        result.index_copy_(0, idx, out)
    return result


def run_encoder(stem: nn.Module, stages, x: torch.Tensor) -> list[torch.Tensor]:
    """``stem`` then each encoder stage in turn: the output of every stage, shallowest first ``[B, C_i, ...]``."""
    skips = []
    h = stem(x)
    for stage in stages:
        h = stage(h)
        skips.append(h)
    return skips
