"""D-MoE: top-k routing weights, router confinement to allowed experts, dense = sparse mixing, balance loss."""
from __future__ import annotations

import pytest
import torch

from unipet.errors import ConfigError
from unipet.models.moe import (
    GENERAL,
    DynamicMoE,
    LowRankExperts,
    Routing,
    keep_top_k_softmax,
    load_balancing_loss,
)


def test_keep_top_k_softmax_selects_and_weights():
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0, 0.5], [0.0, 0.0, 5.0, 4.0, float("-inf")]])
    gates, selected = keep_top_k_softmax(logits, 2)
    assert selected.tolist() == [[False, True, True, False, False], [False, False, True, True, False]]
    expected = torch.softmax(torch.tensor([3.0, 2.0]), 0)
    torch.testing.assert_close(gates[0, [1, 2]], expected)
    torch.testing.assert_close(gates[1, [2, 3]], torch.softmax(torch.tensor([5.0, 4.0]), 0))
    assert gates[0, [0, 3, 4]].abs().sum() == 0 and gates[1, [0, 1, 4]].abs().sum() == 0
    # per-row k; a -inf expert is never chosen even when k exceeds the finite ones
    gates, selected = keep_top_k_softmax(logits, torch.tensor([1, 4]))
    assert selected.sum(1).tolist() == [1, 4] and not selected[1, 4]
    assert gates[0, 1] == 1.0 and gates.sum(1).tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(ConfigError):
        keep_top_k_softmax(logits, 6)


def _moe(**kw) -> DynamicMoE:
    torch.manual_seed(0)
    args = dict(channels=8, num_tasks=3, generic_experts=4, task_experts=3, rank=2, top_k_general=2, top_k_task=3)
    args.update(kw)
    moe = DynamicMoE(**args)
    with torch.no_grad():
        moe.experts.up.normal_()  # a trained bank (B starts at zero)
    return moe


def test_task_router_never_picks_other_tasks_experts_and_general_only_generic():
    moe = _moe()
    x = torch.randn(4, 2, 3, 5, 8)  # [B, D, H, W, C] as inside a Swin block
    route = torch.tensor([0, 2, GENERAL, 1])
    tokens = x.reshape(4, -1, 8)
    moe.start_usage()
    gates, _, _ = moe.gates(tokens, Routing.of(route))
    usage = moe.stop_usage()
    assert gates.shape == (4, 30, 4 + 3 * 3)
    for b, r in enumerate(route.tolist()):
        allowed = set(range(4)) if r == GENERAL else set(moe.task_expert_indices(r))
        used = set(torch.nonzero(gates[b].abs().sum(0)).flatten().tolist())
        assert used <= allowed and len(used) >= 3 - (r == GENERAL)
        assert (gates[b] > 0).sum(1).eq(2 if r == GENERAL else 3).all()
        torch.testing.assert_close(gates[b].sum(1), torch.ones(30))
    assert moe.task_expert_indices(2) == [0, 1, 2, 3, 10, 11, 12]
    # usage rows: tasks 0..2, then general; assignments = tokens x k; confined to allowed experts
    assert usage.shape == (4, 13) and usage[0].sum() == 30 * 3 and usage[3].sum() == 30 * 2
    assert usage[3, 4:].sum() == 0 and usage[0, 7:].sum() == 0 and usage[2, 4:10].sum() == 0
    # other tasks' experts get no gradient
    out = moe(x, Routing.of(torch.tensor([1, 1, 1, 1])))
    out.square().sum().backward()
    up_grad = moe.experts.up.grad.abs().sum((1, 2))
    assert up_grad[[4, 5, 6, 10, 11, 12]].sum() == 0 and up_grad[7:10].sum() > 0
    assert moe.task_router.grad[[0, 2]].abs().sum() == 0 and moe.task_router.grad[1].abs().sum() > 0
    assert moe.general_router.grad is None or moe.general_router.grad.abs().sum() == 0


def test_dense_mixing_equals_sparse_sum_of_selected_experts():
    moe = _moe()
    x = torch.randn(2, 10, 8)
    routing = Routing.of(torch.tensor([2, GENERAL]))
    out = moe(x, routing)
    gates, _, _ = moe.gates(x, routing)
    down, up = moe.experts.down, moe.experts.up  # [C, E, r], [E, r, C]
    ref = torch.zeros_like(x)
    for b in range(2):
        for n in range(10):
            for e in torch.nonzero(gates[b, n]).flatten().tolist():
                ref[b, n] += gates[b, n, e] * (x[b, n] @ down[:, e] @ up[e])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_low_rank_experts_start_at_zero_and_validate():
    bank = LowRankExperts(6, 5, 2)
    assert bank(torch.randn(3, 6), torch.rand(3, 5)).abs().sum() == 0
    assert sum(p.numel() for p in bank.parameters()) == 5 * 2 * 6 * 2
    with pytest.raises(ConfigError):
        LowRankExperts(6, 0, 2)
    with pytest.raises(ConfigError):
        DynamicMoE(8, 2, generic_experts=2, task_experts=1, top_k_general=3)
    with pytest.raises(ConfigError):
        DynamicMoE(8, 2, generic_experts=2, task_experts=1, top_k_task=4)


def test_load_balancing_loss_is_one_when_balanced_and_n_when_collapsed():
    n = 4
    balanced = torch.zeros(1, 8, n)  # uniform probabilities, assignments spread evenly
    sel = torch.zeros(1, 8, n, dtype=torch.bool)
    sel[0, torch.arange(8), torch.arange(8) % n] = True
    assert float(load_balancing_loss(balanced, sel)) == pytest.approx(1.0)
    collapsed = torch.full((1, 8, n), -30.0)
    collapsed[..., 0] = 30.0
    sel = torch.zeros(1, 8, n, dtype=torch.bool)
    sel[..., 0] = True
    assert float(load_balancing_loss(collapsed, sel)) == pytest.approx(n, rel=1e-6)
    # experts a router cannot choose (-inf) are not counted
    masked = torch.cat((balanced, torch.full((1, 8, 2), float("-inf"))), dim=2)
    sel2 = torch.cat((torch.zeros(1, 8, n, dtype=torch.bool).scatter(2, (torch.arange(8) % n).view(1, 8, 1), True),
                      torch.zeros(1, 8, 2, dtype=torch.bool)), dim=2)
    assert float(load_balancing_loss(masked, sel2)) == pytest.approx(1.0)
    moe = _moe()
    moe.train()
    moe(torch.randn(2, 6, 8), Routing.of(torch.tensor([0, GENERAL])))
    assert moe.last_balance_loss is not None and float(moe.last_balance_loss.detach()) >= 1.0 - 1e-6
    moe.eval()
    moe(torch.randn(2, 6, 8), Routing.of(torch.tensor([0, 1])))
    assert moe.last_balance_loss is None
