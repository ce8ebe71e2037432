"""Dynamic mixture of low-rank experts (D-MoE, MAST-Pro) with a general and task-specific routers.

A ``DynamicMoE`` layer owns one bank of ``E = G + T * S`` low-rank experts over ``C`` channels: ``G`` generic
experts shared by every task (indices ``0 .. G-1``) and ``S`` experts per task ``t`` (indices
``G + t*S .. G + (t+1)*S - 1``). Each token is routed by

- the **task-specific router** of its sample's task ``t`` (``W_t: C -> G + S``), which can only choose among the
  generic experts and task ``t``'s own experts, or
- the **general router** (``W_g: C -> G``, used for mixed-tumour data, i.e. when a sample's task is not given),
  which can only choose generic experts,

with weights ``softmax(KeepTopK(x^T W, k))``: the ``k`` largest logits are kept, the others set to ``-inf``, so
the gates of the chosen experts sum to 1 and every other expert's gate is exactly 0. An expert is a low-rank
adapter ``e(x) = x A_e B_e`` (``A_e: C x r``, ``B_e: r x C``; ``B_e`` starts at zero so that a layer added to a
pre-trained network leaves its output unchanged); the layer returns ``sum_e g_e(x) e(x)``, which MAST-Pro adds
to the output of a Swin block's MLP.

Computation: the bank is evaluated as two dense matrix products, ``[N, C] x [C, E*r]`` and ``[N, E*r] x
[E*r, C]``, with the gates applied to the ``E*r`` hidden units in between. Unselected experts have gate 0, so
the result equals the sparse sum over the chosen ``k`` experts exactly (and they receive no gradient); two
large GEMMs are faster on GPUs than ``E`` gathered small ones for ranks this low.

Load balancing: Switch/GShard's auxiliary loss ``n * sum_e f_e * P_e`` per sample, where ``f_e`` is the share
of that sample's top-k assignments going to expert ``e``, ``P_e`` the mean router probability (softmax over
the ``n`` experts its router may choose), averaged over the batch; it is 1 when balanced and ``n`` when a
single expert takes every token. Usage statistics (``start_usage``) count token-to-expert assignments per
route (task 0..T-1, then the general route) for reports.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unipet.errors import ConfigError
from unipet.tasks import NO_TASK

GENERAL = NO_TASK  #: route value of samples routed by the general router


def keep_top_k_softmax(logits: torch.Tensor, k: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(KeepTopK(logits, k))`` over the last axis.

    Args:
        logits: ``[..., n]`` router logits; ``-inf`` marks experts that may not be chosen.
        k: experts kept per row: an int, or a LongTensor broadcastable to ``logits.shape[:-1]`` (per-row k).

    Returns:
        ``(gates, selected)``: ``gates [..., n]`` (the kept experts' softmax weights, summing to 1; 0 elsewhere)
        and ``selected [..., n]`` bool (the kept experts).
    """
    n = logits.shape[-1]
    k_max = int(k) if isinstance(k, int) else int(k.max()) if k.device.type != "meta" else n
    if not 1 <= k_max <= n:
        raise ConfigError(f"top-k routing needs 1 <= k <= {n} experts, got k={k_max}")
    values, index = logits.topk(k_max, dim=-1)
    rank = torch.arange(k_max, device=logits.device)
    keep = rank < (k if isinstance(k, int) else k.unsqueeze(-1))
    keep = keep & torch.isfinite(values)
    selected = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, index, keep)
    masked = logits.masked_fill(~selected, float("-inf"))
    return masked.softmax(dim=-1).nan_to_num(0.0), selected


def load_balancing_loss(logits: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Switch/GShard load-balancing loss, per sample, averaged over the batch.

    Args:
        logits: ``[B, N, n]`` router logits of B samples' N tokens; ``-inf`` marks experts a sample's router
            cannot choose (they are left out of its count ``n_b``).
        selected: ``[B, N, n]`` bool top-k assignments.

    Returns:
        Scalar ``mean_b( n_b * sum_e f_be * P_be )`` with ``f_be`` the share of sample b's assignments going to
        expert e and ``P_be`` its mean router probability: 1 when balanced, ``n_b`` when collapsed onto one expert.
    """
    probs = logits.float().softmax(dim=-1).nan_to_num(0.0)
    sel = selected.float()
    frac = sel.sum(1) / sel.sum((1, 2)).clamp(min=1).unsqueeze(-1)  # [B, n]
    allowed = torch.isfinite(logits[:, :1]).squeeze(1).float().sum(-1)  # [B]
    return (allowed * (frac * probs.mean(1)).sum(-1)).mean()


class LowRankExperts(nn.Module):
    """A bank of ``E`` low-rank experts ``e(x) = x A_e B_e`` on ``C`` channels, mixed by per-token gates.

    Args:
        channels: C.
        experts: E.
        rank: r.

    ``forward(x [..., C], gates [..., E]) -> [..., C]`` = ``sum_e gates[..., e] * x A_e B_e``.
    """

    def __init__(self, channels: int, experts: int, rank: int) -> None:
        super().__init__()
        if min(channels, experts, rank) < 1:
            raise ConfigError(f"low-rank experts need channels, experts and rank >= 1, got {channels}, {experts}, {rank}")
        self.channels, self.num_experts, self.rank = int(channels), int(experts), int(rank)
        bound = 1.0 / math.sqrt(channels)  # nn.Linear's default range for the down-projection; up starts at 0
        self.down = nn.Parameter(torch.empty(channels, experts, rank).uniform_(-bound, bound))
        self.up = nn.Parameter(torch.zeros(experts, rank, channels))

    def forward(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        e, r, c = self.num_experts, self.rank, self.channels
        hidden = x @ self.down.reshape(c, e * r).to(x.dtype)
        hidden = hidden.unflatten(-1, (e, r)) * gates.to(hidden.dtype).unsqueeze(-1)
        return hidden.flatten(-2) @ self.up.reshape(e * r, c).to(x.dtype)


@dataclass(frozen=True)
class Routing:
    """Per-sample routes of a batch: ``route LongTensor[B]`` (task index, or ``GENERAL``) and whether any / all
    samples take the general route (read once per forward so that layers do not synchronise the device)."""

    route: torch.Tensor
    any_general: bool
    all_general: bool

    @classmethod
    def of(cls, route: torch.Tensor) -> "Routing":
        if route.device.type == "meta":  # shapes only: count as task-routed
            return cls(route, False, False)
        general = route < 0
        return cls(route, bool(general.any()), bool(general.all()))


class DynamicMoE(nn.Module):
    """D-MoE layer: generic + task-specific low-rank experts with a general and per-task top-k routers.

    Args:
        channels: C, token width.
        num_tasks: T.
        generic_experts: G.
        task_experts: S, experts per task.
        rank: r of every expert.
        top_k_general: k of the general router (``<= G``).
        top_k_task: k of the task-specific routers (``<= G + S``).

    ``forward(x [B, ..., C], routing) -> [B, ..., C]``: the gated sum of expert outputs. After a forward,
    ``last_balance_loss`` holds the load-balancing loss of this layer (a scalar tensor).
    """

    def __init__(self, channels: int, num_tasks: int, generic_experts: int = 8, task_experts: int = 4, rank: int = 16,
                 top_k_general: int = 4, top_k_task: int = 4) -> None:
        super().__init__()
        g, s, t = int(generic_experts), int(task_experts), int(num_tasks)
        if g < 1 or s < 0 or t < 1:
            raise ConfigError(f"D-MoE needs >= 1 generic expert and >= 1 task, got {g} generic, {s} per task, {t} tasks")
        if not 1 <= top_k_general <= g:
            raise ConfigError(f"the general router picks top-k of {g} generic experts; give 1 <= k <= {g}, "
                              f"got {top_k_general}")
        if not 1 <= top_k_task <= g + s:
            raise ConfigError(f"a task router picks top-k of {g} generic + {s} task experts; give 1 <= k <= {g + s}, "
                              f"got {top_k_task}")
        self.channels, self.num_tasks, self.generic, self.per_task = int(channels), t, g, s
        self.top_k_general, self.top_k_task = int(top_k_general), int(top_k_task)
        self.experts = LowRankExperts(channels, g + t * s, rank)
        bound = 1.0 / math.sqrt(channels)
        self.general_router = nn.Parameter(torch.empty(channels, g).uniform_(-bound, bound))
        self.task_router = nn.Parameter(torch.empty(t, channels, g + s).uniform_(-bound, bound))
        # local (router output) -> global expert index, per task; row T: the general route (padding -> 0, never chosen)
        local = torch.zeros(t + 1, g + s, dtype=torch.long)
        local[:, :g] = torch.arange(g)
        for task in range(t):
            local[task, g:] = g + task * s + torch.arange(s)
        self.register_buffer("local_to_global", local, persistent=False)
        self.last_balance_loss: torch.Tensor | None = None
        self.usage: torch.Tensor | None = None

    @property
    def num_experts(self) -> int:
        return self.experts.num_experts

    def task_expert_indices(self, task: int) -> list[int]:
        """Global indices of the experts task ``task``'s router may choose (generic first)."""
        return self.local_to_global[task].tolist()

    def router_logits(self, tokens: torch.Tensor, routing: Routing) -> torch.Tensor:
        """Router logits over each sample's local experts: ``[B, N, G + S]`` (``-inf`` where not choosable).

        Local order: the G generic experts, then the sample's task's S experts (``-inf`` on the general route).
        """
        route = routing.route
        logits = None
        if not routing.all_general:
            weight = self.task_router.index_select(0, route.clamp(min=0))  # [B, C, G+S]
            logits = torch.einsum("bnc,bce->bne", tokens, weight.to(tokens.dtype))
        if routing.any_general:
            general = tokens @ self.general_router.to(tokens.dtype)
            general = F.pad(general, (0, self.per_task), value=float("-inf"))
            logits = general if logits is None else torch.where((route < 0)[:, None, None], general, logits)
        return logits

    def gates(self, tokens: torch.Tensor, routing: Routing) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(gates [B, N, E], logits [B, N, G+S], selected [B, N, G+S])`` for tokens ``[B, N, C]``."""
        route = routing.route
        logits = self.router_logits(tokens, routing).float()
        if routing.any_general and not routing.all_general:
            k = torch.where(route < 0, self.top_k_general, self.top_k_task)[:, None]
        else:
            k = self.top_k_general if routing.all_general else self.top_k_task
        local, selected = keep_top_k_softmax(logits, k)
        rows = torch.where(route < 0, self.num_tasks, route)
        index = self.local_to_global.index_select(0, rows)[:, None].expand_as(local)
        gates = local.new_zeros(*local.shape[:2], self.num_experts).scatter_add(2, index, local)
        if self.usage is not None:
            counts = selected.float().sum(1)  # [B, G+S]
            per_sample = counts.new_zeros(counts.shape[0], self.num_experts).scatter_add(1, index[:, 0], counts)
            self.usage.index_add_(0, rows.to(self.usage.device), per_sample.to(self.usage))
        return gates, logits, selected

    def forward(self, x: torch.Tensor, routing: Routing) -> torch.Tensor:
        tokens = x.reshape(x.shape[0], -1, x.shape[-1])
        gates, logits, selected = self.gates(tokens, routing)
        self.last_balance_loss = load_balancing_loss(logits, selected) if self.training else None
        return self.experts(tokens, gates).reshape(x.shape)

    def start_usage(self) -> None:
        """Start (or restart) counting assignments: ``usage`` becomes zeros ``[T + 1, E]`` (row T: general route)."""
        self.usage = torch.zeros(self.num_tasks + 1, self.num_experts, dtype=torch.float64)

    def stop_usage(self) -> torch.Tensor:
        """Stop counting and return the counts ``[T + 1, E]`` (float64, CPU)."""
        if self.usage is None:
            raise ConfigError("expert usage was not being counted; call start_usage() before the forward passes")
        usage, self.usage = self.usage, None
        return usage
