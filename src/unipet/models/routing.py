"""Text-prompted automatic pathway routing (gCIS): a router on the prompt's text embedding picks one of M
sub-pathways of identical structure at a routed position (gCIS: the bottleneck, a decoder level, the output
convolution), and only the picked one runs.

- ``Router``: fully connected layers ``Linear(E, hidden) -> ReLU -> Linear(hidden, M)`` on a text embedding
  ``[B, E]``, giving path logits ``[B, M]``. The route depends on the prompt only, never on the image, so a task's
  path is fixed at inference and a model can be pruned to it (``unipet.models.prune``).
- ``hard_gumbel_route``: training-time choice by the straight-through hard Gumbel-softmax (Jang et al. 2017,
  ``torch.nn.functional.gumbel_softmax(hard=True)``): the forward pass uses the one-hot sample, the backward pass
  the gradient of the relaxed ``softmax((logits + g) / tau)``. At inference (or when the router is frozen) the
  route is the arg-max of the logits.
- ``PathwayModule`` (the "automatic pathway module"): router + ``M`` sub-pathways. The batch is grouped by the
  chosen path and each path runs once on its own samples (``run_paths``); the paths no sample chose are not
  computed at all. In training the output is multiplied by the sample's gate, whose value is
  1 and whose gradient reaches the router.

Gradient of the router: with every path computed (the seed's public code) the straight-through estimator is
``dL/dlogits = sum_k <dL/dout, path_k(x)> * d softmax_k / dlogits``. Running only the chosen path ``c`` keeps the
term ``k = c`` (``<dL/dout, path_c(x)>`` times the softmax Jacobian's row ``c``), which still moves every logit:
raising the chosen path's probability when scaling its output up lowers the loss, and lowering it otherwise.
The unchosen paths' terms would need their outputs, i.e. the computation this module exists to avoid. That the
estimator still learns is tested (``tests/models/test_routing.py``): two unrelated tasks wanting opposite outputs end on
different sub-pathways, each fitted to its task, from any of several seeds.

Usage statistics: ``route_table`` (arg-max path per task and level) and ``route_probabilities``
(``softmax(logits)``, ``[T, L, M]``) for a model's pathway modules; ``path_sharing`` summarises which tasks share
paths.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unipet.errors import ConfigError
from unipet.models.blocks import group_by_task


class Router(nn.Module):
    """Path logits from a text embedding: ``[B, E] -> [B, M]`` (two fully connected layers, ReLU between)."""

    def __init__(self, text_dim: int, num_paths: int, hidden: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(text_dim, hidden)
        self.fc2 = nn.Linear(hidden, num_paths)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(text)))


def hard_gumbel_route(logits: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one path per row by the straight-through hard Gumbel-softmax.

    Args:
        logits: ``[B, M]`` path logits.
        tau: Gumbel-softmax temperature (> 0); lower is closer to arg-max sampling in the relaxed gradient.

    Returns:
        ``(index LongTensor[B], gate FloatTensor[B])``: the sampled path and its straight-through gate, equal to 1
        in value (``1 - s + s`` with ``s`` the relaxed probability of the path) and carrying ``ds/dlogits``.
    """
    if tau <= 0:
        raise ConfigError(f"Gumbel-softmax temperature must be > 0, got {tau}; use e.g. tau=1.0")
    onehot = F.gumbel_softmax(logits.float(), tau=tau, hard=True, dim=-1)
    index = onehot.argmax(dim=-1)
    return index, onehot.gather(1, index[:, None])[:, 0]


def run_paths(index: torch.Tensor, paths: nn.ModuleList, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Apply ``paths[index[b]]`` to sample ``b`` of every input, running each chosen path once on its samples.

    Args:
        index: ``LongTensor[B]`` path per sample.
        paths: modules taking ``len(inputs)`` batch-aligned tensors and returning outputs of one common shape.
        inputs: tensors ``[B, ...]``.

    Returns:
        ``[B, ...]`` outputs in the original sample order.
    """
    groups = group_by_task(index)
    if len(groups) == 1:
        return paths[groups[0][0]](*inputs)
    outs = [(idx, paths[k](*(t.index_select(0, idx) for t in inputs))) for k, idx in groups]
    result = outs[0][1].new_empty((inputs[0].shape[0], *outs[0][1].shape[1:]))
    for idx, out in outs:
        result.index_copy_(0, idx, out)
    return result


class PathwayModule(nn.Module):
    """Automatic pathway module: a router and ``M`` sub-pathways of identical structure; one runs per sample.

    ``forward(*inputs [B, ...], text=[B, E]) -> [B, ...]`` where each sample goes through its chosen path (a path
    takes all ``inputs``, e.g. the previous decoder level and the skip feature).
    ``last_route`` (``LongTensor[B]``) holds the paths of the last call.

    A *pruned* module (``kept`` given) holds only the sub-pathway ``kept`` (as ``paths[0]``) and no router; it
    applies that path to every sample.

    Args:
        paths: the ``M`` candidate sub-pathways (or the single kept one when pruned).
        text_dim: E, the text-embedding size (ignored when pruned).
        router_hidden: width of the router's hidden layer.
        tau: Gumbel-softmax temperature in training.
        kept: index of the kept path among the original ``M`` (pruned module), or None.
    """

    def __init__(self, paths: Sequence[nn.Module], text_dim: int, router_hidden: int = 256, tau: float = 1.0,
                 kept: int | None = None) -> None:
        super().__init__()
        if kept is not None and len(paths) != 1:
            raise ConfigError(f"a pruned pathway module keeps exactly one path, got {len(paths)}")
        if kept is None and len(paths) < 1:
            raise ConfigError("a pathway module needs at least one sub-pathway")
        self.paths = nn.ModuleList(paths)
        self.kept = kept
        self.tau = float(tau)
        self.router = Router(text_dim, len(paths), router_hidden) if kept is None else None
        self.last_route: torch.Tensor | None = None

    @property
    def num_paths(self) -> int:
        return len(self.paths)

    def logits(self, text: torch.Tensor) -> torch.Tensor:
        """Path logits ``[B, M]`` of text embeddings ``[B, E]`` (float32)."""
        if self.router is None:
            raise ConfigError("a pruned pathway module has no router; its path is fixed")
        return self.router(text.float())

    def router_trainable(self) -> bool:
        """True when the router is being trained (then training samples routes; a frozen router uses arg-max)."""
        return self.router is not None and any(p.requires_grad for p in self.router.parameters())

    def forward(self, *inputs: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        if self.router is None:
            self.last_route = None
            return self.paths[0](*inputs)
        if text is None:
            raise ConfigError("a pathway module needs the prompt's text embedding [B, E] to route")
        logits = self.logits(text)
        if self.training and self.router_trainable() and torch.is_grad_enabled():
            index, gate = hard_gumbel_route(logits, self.tau)
            self.last_route = index
            out = run_paths(index, self.paths, inputs)
            return out * gate.to(out.dtype).view(-1, *([1] * (out.ndim - 1)))
        index = logits.argmax(dim=-1)
        self.last_route = index
        return run_paths(index, self.paths, inputs)


def pathway_modules(model: nn.Module) -> list[PathwayModule]:
    """The pathway modules of a model in registration order (gCIS: its ``pathways``, i.e. forward order)."""
    return [m for m in model.modules() if isinstance(m, PathwayModule)]


@torch.no_grad()
def route_probabilities(modules: Sequence[PathwayModule], text: torch.Tensor) -> torch.Tensor:
    """``softmax`` of the router logits: ``[T, L, M]`` for text embeddings ``[T, E]`` and L routed modules."""
    return torch.stack([m.logits(text).softmax(dim=-1) for m in modules], dim=1)


@torch.no_grad()
def route_table(modules: Sequence[PathwayModule], text: torch.Tensor) -> torch.Tensor:
    """Arg-max path of each text at each module: ``LongTensor[T, L]`` (the inference routes)."""
    return torch.stack([m.logits(text).argmax(dim=-1) for m in modules], dim=1)


def path_sharing(table: torch.Tensor, groups: Sequence[str] | None = None) -> dict[str, object]:
    """How much tasks share paths, from a route table ``[T, L]``.

    Returns ``{"shared_levels": [[T x T]] (levels where two tasks take the same path), "paths_used": [L]
    (distinct paths used per level)}``, plus, when ``groups`` gives each task's group (e.g. ``lesion`` /
    ``organ`` / ``vessel``), ``"within_group"`` and ``"between_groups"``: the mean fraction of levels shared by
    pairs of tasks of the same and of different groups (None when there is no such pair).
    """
    t = table.long()
    if t.ndim != 2:
        raise ConfigError(f"route table must be [tasks, levels], got shape {tuple(t.shape)}")
    shared = (t[:, None, :] == t[None, :, :]).sum(-1)
    out: dict[str, object] = {"shared_levels": shared.tolist(),
                              "paths_used": [len(set(col)) for col in t.T.tolist()]}
    if groups is not None:
        if len(groups) != t.shape[0]:
            raise ConfigError(f"got {len(groups)} groups for {t.shape[0]} tasks; give one group per task")
        within, between = [], []
        levels = t.shape[1]
        for i in range(t.shape[0]):
            for j in range(i + 1, t.shape[0]):
                (within if groups[i] == groups[j] else between).append(float(shared[i, j]) / levels)
        out["within_group"] = sum(within) / len(within) if within else None
        out["between_groups"] = sum(between) / len(between) if between else None
    return out
