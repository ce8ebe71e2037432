"""Training losses: Dice + cross-entropy with deep supervision (softmax models), BCE + Dice on the annotated
classes only (sigmoid / partial-label models), and the auxiliary task-classifier cross-entropy.

- Softmax models: MONAI's ``DiceLoss`` configured as nnU-Net's: batch Dice (``batch=True``) over the
  foreground classes only (``include_background=False``, nnU-Net's ``do_bg=False``), smoothing 1e-5 in numerator
  and denominator; ``smooth=0`` gives Dice without smoothing (the denominator then gets 1e-8, nnU-Net's clamp);
  plus cross-entropy over every voxel, weight 1 each. Two options for universal training on several cancer
  types and lesion-free patches, off by default (off = nnU-Net's loss):

  - ``per_task``: the batch Dice is pooled within each task's samples and averaged over tasks, so the large
    lesions of one cancer type (lymphoma) do not drown the few voxels of another (melanoma) in one ratio;
  - ``skip_empty``: samples whose target has no foreground leave the Dice term (CE still sees them). With
    smoothing 1e-5 a lesion-free batch is scored Dice 0 only when every voxel's probability is below ~1e-10,
    which rewards pushing logits towards -inf.

  Measured on the default checkpoint's third stage (benchmarks/RESULTS.md: same start, 800 iterations each):
  both options on gave 6x the false-positive volume (108 vs 17 mL per study) and lower Dice on three of four
  cancer types than nnU-Net's loss, so they stay off unless a recipe turns them on.
- Deep supervision: outputs ``[full, 1/2, 1/4, ...]``; targets are nearest-downsampled to each output's size;
  weights ``1/2^i`` with the lowest resolution's weight set to 0, normalised to sum 1 (nnU-Net), unless the model
  gives its own (``UnipetModel.deep_supervision_weights``; H2ASeg: ``6 - k``, not normalised).
- Sigmoid models (DoDNet, CLIP-Universal: one channel per foreground class of each sample's own task):
  ``partial_label_dice_bce`` — BCE + per-sample, per-class soft Dice over the
  (sample, class) pairs annotated, which here are the classes of the sample's task (its label annotates them).
- Models exposing ``last_task_logits [B, N]`` (the prompt-free classifier) add ``weight * CE(logits, task)`` over
  the samples with a task (``NO_TASK`` samples are left out).

All losses are computed in float32 whatever the autocast dtype of the logits.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from unipet.errors import ConfigError
from unipet.models.base import deep_supervision_weights
from unipet.tasks import NO_TASK


def partial_label_dice_bce(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor,
                           smooth: float = 1e-5, dice_weight: float = 1.0, bce_weight: float = 1.0) -> torch.Tensor:
    """Binary Dice + BCE over the annotated (sample, class) pairs only; the CLIP-Universal / DoDNet loss.

    Dice is computed per sample and per class (sums over the spatial axes only), ``1 - (2 sum(p t) + s) /
    (sum(p) + sum(t) + s)`` with ``p = sigmoid(logits)``, then averaged over annotated pairs. (The public
    CLIP-Universal loss sums over the wrong axes and mixes samples.) BCE is averaged over the voxels of the
    annotated pairs.

    Args:
        logits: ``[B, Q, D, H, W]`` sigmoid logits.
        target: ``[B, Q, D, H, W]`` binary targets (0/1, any dtype).
        annotated: ``BoolTensor[B, Q]``: True where the sample's dataset annotates that class.
        smooth: Dice smoothing term.

    Returns:
        Scalar loss; 0 (still differentiable) when nothing is annotated.
    """
    if logits.shape != target.shape or annotated.shape != logits.shape[:2]:
        raise ConfigError(f"partial_label_dice_bce needs logits and target of one shape [B, Q, ...] and annotated "
                          f"[B, Q]; got {tuple(logits.shape)}, {tuple(target.shape)}, {tuple(annotated.shape)}")
    mask = annotated.to(torch.bool)
    if not bool(mask.any()):
        return logits.sum() * 0.0
    logit, tgt = logits[mask].flatten(1), target[mask].flatten(1).to(logits.dtype)  # [n_pairs, voxels]
    prob = logit.sigmoid()
    dice = 1 - (2 * (prob * tgt).sum(1) + smooth) / (prob.sum(1) + tgt.sum(1) + smooth)
    bce = F.binary_cross_entropy_with_logits(logit, tgt)
    return dice_weight * dice.mean() + bce_weight * bce


def task_classification_loss(logits: torch.Tensor, task: torch.Tensor, weight: float = 0.1) -> torch.Tensor:
    """Weighted cross-entropy of the auxiliary classifier: ``weight * CE(logits [B, N], task [B])``.

    Samples without a task (``NO_TASK = -1``: mixed-tumour data on a general route) are left out; a batch of only
    such samples gives 0 (still differentiable)."""
    known = task != NO_TASK
    if not bool(known.any()):
        return logits.sum() * 0.0
    return weight * F.cross_entropy(logits[known], task[known])


def downsample_label(label: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of ``label [B, D, H, W]`` (integers) to ``size`` (D', H', W')."""
    if tuple(label.shape[1:]) == tuple(size):
        return label
    return F.interpolate(label[:, None].float(), size=tuple(size), mode="nearest")[:, 0].to(label.dtype)


class DiceCE:
    """Dice + CE for softmax logits ``[B, K, D, H, W]``, integer targets ``[B, D, H, W]``, tasks ``[B]`` (optional).

    Args:
        smooth: Dice smoothing (1e-5 like nnU-Net; 0 for Dice without smoothing).
        batch_dice: Dice over the whole batch (nnU-Net's default for 3-D) instead of per sample.
        include_background: also average the background class's Dice (nnU-Net: False).
        per_task: pool the batch Dice within each task's samples, then average over tasks (module docstring).
        skip_empty: leave samples without foreground out of the Dice term (module docstring); a batch with no
            foreground at all is scored by CE alone.
    """

    def __init__(self, smooth: float = 1e-5, batch_dice: bool = True, include_background: bool = False,
                 per_task: bool = False, skip_empty: bool = False) -> None:
        from monai.losses import DiceLoss

        self.dice = DiceLoss(include_background=include_background, to_onehot_y=True, softmax=True,
                             batch=batch_dice, smooth_nr=smooth, smooth_dr=smooth if smooth > 0 else 1e-8)
        self.per_task, self.skip_empty = per_task, skip_empty

    def groups(self, target: torch.Tensor, task: torch.Tensor | None) -> list[torch.Tensor]:
        """Boolean sample masks ``[B]`` of the Dice groups (one per task present, or the whole batch)."""
        keep = torch.ones(target.shape[0], dtype=torch.bool, device=target.device)
        if self.skip_empty:
            keep = (target > 0).flatten(1).any(1)
        if not self.per_task or task is None:
            return [keep] if bool(keep.any()) else []
        task = task.to(target.device)
        masks = [keep & (task == t) for t in torch.unique(task)]
        return [m for m in masks if bool(m.any())]

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        logits, target = logits.float(), target.long()
        ce = F.cross_entropy(logits, target)
        # the default group is the whole batch: no indexing copy of the logits on that path
        terms = [self.dice(logits, target[:, None]) if bool(m.all()) else self.dice(logits[m], target[m][:, None])
                 for m in self.groups(target, task)]
        if not terms:
            return ce
        return ce + torch.stack(terms).mean()


def sigmoid_targets(target: torch.Tensor, channels: int) -> torch.Tensor:
    """One binary map per foreground class: ``[B, D, H, W]`` labels -> ``[B, channels, D, H, W]`` (class c+1 in c)."""
    return torch.stack([target == c for c in range(1, channels + 1)], dim=1).float()


class SegmentationLoss:
    """The training loss of a model: segmentation (with deep supervision) + auxiliary task classification.

    Args:
        activation: the model's ``output_activation`` (``"softmax"`` or ``"sigmoid"``).
        smooth: Dice smoothing.
        batch_dice: batch Dice for softmax models.
        dice_per_task, dice_skip_empty: ``DiceCE``'s ``per_task`` and ``skip_empty``.
        task_weight: weight of the task-classifier CE (0 disables it).
        ds_weights: ``n -> weights`` of ``n`` deep-supervision outputs (the model's ``deep_supervision_weights``);
            None = nnU-Net's ``deep_supervision_weights``.
    """

    def __init__(self, activation: str = "softmax", smooth: float = 1e-5, batch_dice: bool = True,
                 task_weight: float = 0.1, ds_weights: Callable[[int], Sequence[float]] | None = None,
                 dice_per_task: bool = False, dice_skip_empty: bool = False) -> None:
        if activation not in ("softmax", "sigmoid"):
            raise ConfigError(f"unknown output activation {activation!r}; models declare 'softmax' or 'sigmoid'")
        self.activation, self.smooth, self.task_weight = activation, float(smooth), float(task_weight)
        self.ds_weights = ds_weights or deep_supervision_weights
        self.dice_ce = (DiceCE(smooth, batch_dice, per_task=dice_per_task, skip_empty=dice_skip_empty)
                        if activation == "softmax" else None)

    def segmentation(self, logits: torch.Tensor, target: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        """Loss of one output ``[B, K, d, h, w]`` against the target resized to its grid."""
        target = downsample_label(target, logits.shape[2:])
        if self.dice_ce is not None:
            return self.dice_ce(logits, target, task)
        # the sigmoid models return the channels of each sample's own task, all annotated by its label
        annotated = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
        return partial_label_dice_bce(logits.float(), sigmoid_targets(target, logits.shape[1]), annotated, self.smooth)

    def __call__(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor,
                 task: torch.Tensor | None = None, task_logits: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        """``(loss, parts)`` for the model outputs (a tensor, or a deep-supervision list, full resolution first).

        ``parts`` holds floats for logging: ``seg`` (weighted segmentation loss), ``task`` (weighted task CE).
        """
        outs = [outputs] if torch.is_tensor(outputs) else list(outputs)
        weights = self.ds_weights(len(outs))
        seg = sum(w * self.segmentation(o, target, task) for w, o in zip(weights, outs) if w > 0)
        parts: dict[str, Any] = {"seg": float(seg.detach())}
        loss = seg
        if self.task_weight > 0 and task_logits is not None and task is not None:
            aux = task_classification_loss(task_logits.float(), task, self.task_weight)
            parts["task"] = float(aux.detach())
            loss = loss + aux
        return loss, parts
