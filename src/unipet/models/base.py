"""The one call every unipet model shares.

``model(x, task=None, text=None, organs=None) -> logits`` where ``x`` is ``[B, C, D, H, W]`` and the logits
are ``[B, K, D, H, W]`` (a list, full resolution first, when ``deep_supervision`` is on and the model is in
training mode). A model lists the optional inputs it *needs* in ``requires``; ``check_inputs`` turns a
missing one into a clear ``MissingInputError``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from unipet.errors import ConfigError, MissingInputError

INPUT_HELP = {
    "task": "pass task=LongTensor[B] with each sample's task index (TaskSet.index(name))",
    "text": "pass text=FloatTensor[T, E] text embeddings (unipet.models.text.encode_tasks)",
    "organs": "pass organs=LongTensor[B, D, H, W] organ label maps (the Study's organ map)",
}


def deep_supervision_weights(n: int) -> list[float]:
    """nnU-Net's weights for ``n`` outputs (full resolution first): ``1/2^i``, the last 0, normalised.

    ``deep_supervision_weights(5) == [8/15, 4/15, 2/15, 1/15, 0]``; a single output gets ``[1.0]``.
    """
    if n <= 1:
        return [1.0]
    w = [1.0 / 2 ** i for i in range(n)]
    w[-1] = 0.0
    total = sum(w)
    return [v / total for v in w]


class UnipetModel(nn.Module):
    """Base class: records its constructor config and which optional inputs it needs.

    Subclasses set ``requires`` (subset of ``{"task", "text", "organs"}``) and ``accepts`` (inputs they
    can use when given), and implement ``forward(x, task=None, text=None, organs=None)``.
    """

    requires: tuple[str, ...] = ()
    accepts: tuple[str, ...] = ()
    #: "softmax" (mutually exclusive classes, CE + Dice) or "sigmoid" (per-class, partial labels)
    output_activation: str = "softmax"
    #: True when a sample's task may be ``NO_TASK = -1`` (routed without a task: MAST-Pro's general router)
    takes_no_task: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.deep_supervision = False
        self.config: dict[str, Any] = {}

    def check_inputs(self, x: torch.Tensor, task=None, text=None, organs=None) -> None:
        """Raise MissingInputError naming any required input that is None."""
        given = {"task": task, "text": text, "organs": organs}
        for name in self.requires:
            if given[name] is None:
                raise MissingInputError(f"{type(self).__name__} needs the '{name}' input; {INPUT_HELP[name]}")
        if x.ndim != 5:
            raise MissingInputError(f"{type(self).__name__} expects x of shape [B, C, D, H, W], got {tuple(x.shape)}")

    def set_deep_supervision(self, enabled: bool) -> None:
        """Return a list of logits (full resolution first) in training mode when enabled."""
        self.deep_supervision = bool(enabled)

    def deep_supervision_weights(self, n: int) -> list[float]:
        """Loss weights of the ``n`` deep-supervision outputs (full resolution first).

        The base model uses nnU-Net's (``deep_supervision_weights``); families override it
        (H2ASeg: ``6 - k`` for level ``k``).
        """
        return deep_supervision_weights(n)

    def auxiliary_losses(self) -> dict[str, torch.Tensor]:
        """Weighted auxiliary loss terms of the last forward pass (scalars), added to the training loss.

        Families override it (e.g. MAST-Pro's load-balancing loss); the base model has none.
        """
        return {}

    def trainable_scopes(self) -> tuple[str, ...]:
        """Names of the parameter subsets this model can train alone (the recipe's ``trainable``)."""
        return ("all",)

    def scope_parameters(self, scope: str) -> set[str]:
        """Names of the parameters trained under ``scope``; every other parameter is frozen.

        ``"all"`` is every parameter; families add theirs (MAST-Pro's ``"peft"``: experts, routers, heads).
        """
        if scope == "all":
            return {name for name, _ in self.named_parameters()}
        raise ConfigError(f"{type(self).__name__} cannot train only {scope!r}; its trainable scopes are "
                          f"{', '.join(self.trainable_scopes())}")


    def output_layers(self) -> list[nn.Conv3d]:
        """The classifiers (convolutions that output the class logits): nnU-Net-style ``seg_outputs`` here;
        models with other heads add theirs (DpDNet's prompt-aware heads). Dynamic heads whose weights are
        generated (DoDNet) have none."""
        return [m for m in getattr(self, "seg_outputs", []) if isinstance(m, nn.Conv3d) and m.bias is not None]


def init_output_prior(model: UnipetModel, prior: float) -> int:
    """Set every classifier's bias so that each foreground class starts at probability ``prior`` on every voxel
    (weights kept): the *prior initialisation* of Lin et al., "Focal Loss for Dense Object Detection" (ICCV 2017).

    Softmax over K classes: background bias 0, foreground ``log(prior / (1 - (K - 1) * prior))``; sigmoid:
    ``log(prior / (1 - prior))``. Returns the number of layers set. unipet's choice (recipe ``prior_init``): with
    the default initialisation a head starts at p = 0.5 on ~99.8 % background voxels, and a head whose cancer type
    has few, small lesions is driven to "background everywhere" before it has seen enough of them
    (``benchmarks/RESULTS.md``, "Why two heads collapsed").
    """
    import math

    if not 0.0 < prior < 1.0:
        raise ConfigError(f"prior_init must be a probability in (0, 1), got {prior}")
    layers = model.output_layers()
    with torch.no_grad():
        for conv in layers:
            k = conv.out_channels
            if model.output_activation == "sigmoid":
                conv.bias.fill_(math.log(prior / (1 - prior)))
                continue
            if (k - 1) * prior >= 1:
                raise ConfigError(f"prior_init {prior} is too large for {k - 1} foreground classes; give < {1 / (k - 1):.3g}")
            conv.bias.fill_(math.log(prior / (1 - (k - 1) * prior)))
            conv.bias[0] = 0.0
    return len(layers)

def task_tensor(task, batch: int, device: torch.device) -> torch.Tensor | None:
    """Normalise a task argument (int, sequence, tensor or None) to ``LongTensor[B]`` on ``device``."""
    if task is None:
        return None
    if isinstance(task, int):
        return torch.full((batch,), task, dtype=torch.long, device=device)
    t = torch.as_tensor(task, dtype=torch.long, device=device).reshape(-1)
    if t.numel() == 1 and batch > 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise MissingInputError(f"task has {t.numel()} entries but the batch has {batch} samples; give one per sample")
    return t


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def as_tuple3(v: int | Sequence[int]) -> tuple[int, int, int]:
    """``3`` -> ``(3, 3, 3)``; a 3-sequence stays as is."""
    if isinstance(v, int):
        return (v, v, v)
    t = tuple(int(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"expected 3 values, got {t}")
    return t  # type: ignore[return-value]
