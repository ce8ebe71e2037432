"""Task handling shared by the task-prompted STU-Nets, and prompt-free use through a task classifier.

Every prompt-driven model here (``dpdnet``, ``uniseg``, ``dodnet``, ``clip-universal``) takes a per-sample
task ``LongTensor[B]`` (a batch may mix cancer types). With ``task_classifier=True`` (the default) it also
carries a small auxiliary classifier on the globally pooled bottleneck, ``Linear(C -> N)``. Its logits are
computed on every forward and kept in ``model.last_task_logits`` (``[B, N]``) so that a trainer can add
``unipet.train.losses.task_classification_loss`` with a small weight. When ``task=None`` is passed, the classifier's argmax
chooses each sample's task, so ``model(x)`` equals ``model(x, task=argmax)`` exactly; ``infer_task(x)``
returns that choice and its probability. The classifier is only as good as its training: an untrained one
picks arbitrary tasks. With ``task_classifier=False`` the task is required (``MissingInputError``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from unipet.errors import MissingInputError, UnknownTaskError
from unipet.models.base import task_tensor
from unipet.models.stunet import STUNet


class TaskClassifier(nn.Module):
    """Cancer-type classifier: bottleneck ``[B, C, d, h, w]`` -> logits ``[B, N]`` (global average pool + linear)."""

    def __init__(self, channels: int, num_tasks: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_tasks)

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        return self.fc(bottleneck.mean(dim=(2, 3, 4)))


class PromptedSTUNet(STUNet):
    """STU-Net whose forward needs a per-sample task; see the module docstring for the prompt-free path.

    Args:
        num_tasks: N, the number of tasks (cancer types) of the task set.
        task_classifier: add the auxiliary classifier (makes ``task`` optional).
        **stunet: arguments of ``STUNet``.
    """

    def __init__(self, in_channels: int, num_classes: int, strides: Sequence[Sequence[int]], num_tasks: int,
                 task_classifier: bool = True, **stunet) -> None:
        super().__init__(in_channels, num_classes, strides, **stunet)
        self.num_tasks = int(num_tasks)
        self.task_classifier = TaskClassifier(self.widths[-1], self.num_tasks) if task_classifier else None
        self.requires = () if task_classifier else ("task",)
        self.accepts = ("task",)
        self.last_task_logits: torch.Tensor | None = None

    def resolve_task(self, task, bottleneck: torch.Tensor) -> torch.Tensor:
        """The per-sample task ``LongTensor[B]``: the given one (validated) or the classifier's argmax."""
        if self.task_classifier is not None:
            self.last_task_logits = self.task_classifier(bottleneck)
        t = task_tensor(task, bottleneck.shape[0], bottleneck.device)
        if t is None:
            return self.last_task_logits.argmax(dim=1)
        if t.device.type != "meta" and t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_tasks):
            raise UnknownTaskError(f"task indices {t.tolist()} are outside 0..{self.num_tasks - 1}; give indices of "
                                   "the model's task set (TaskSet.index(name))")
        return t

    @torch.no_grad()
    def infer_task(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Classifier's choice for ``x [B, C, D, H, W]``: ``(task LongTensor[B], probability FloatTensor[B])``."""
        if self.task_classifier is None:
            raise MissingInputError(f"{type(self).__name__} was built with task_classifier=False and cannot infer "
                                   "the task; pass task=... or build it with task_classifier=True")
        _, bottleneck = self.encode(x)
        prob = self.task_classifier(bottleneck).softmax(dim=1)
        conf, idx = prob.max(dim=1)
        return idx, conf
