"""Automatic pathway routing: straight-through Gumbel gates, group-by-path execution, arg-max routes, sharing."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from unipet.errors import ConfigError
from unipet.models.routing import (
    PathwayModule,
    hard_gumbel_route,
    path_sharing,
    route_probabilities,
    route_table,
    run_paths,
)


class Scale(nn.Module):
    """``x -> w * x`` that records the batch size of every call."""

    def __init__(self, w: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(w)))
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return self.w * x


def _module(m: int = 4, dim: int = 8) -> PathwayModule:
    torch.manual_seed(0)
    return PathwayModule([Scale(k + 1) for k in range(m)], text_dim=dim, router_hidden=16, tau=1.0)


def _force(module: PathwayModule, text: torch.Tensor, paths: list[int]) -> None:
    """Make the router send text row i to paths[i] (a large one-hot output per row through fc2)."""
    with torch.no_grad():
        module.router.fc1.weight.zero_()
        module.router.fc1.bias.zero_()
        module.router.fc2.weight.zero_()
        module.router.fc2.bias.zero_()
        # fc1 copies the text (first dims), fc2 maps each text row to its path
        n = text.shape[0]
        module.router.fc1.weight[:n, :] = text
        for i, k in enumerate(paths):
            module.router.fc2.weight[k, i] = 50.0


def test_hard_gumbel_gate_is_one_and_its_gradient_reaches_the_logits():
    torch.manual_seed(0)
    logits = torch.randn(5, 6, requires_grad=True)
    index, gate = hard_gumbel_route(logits, tau=0.7)
    assert index.shape == (5,) and index.dtype == torch.long and bool(((index >= 0) & (index < 6)).all())
    assert torch.allclose(gate, torch.ones(5))
    (gate * torch.arange(1.0, 6.0)).sum().backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0
    # each row's gradient sums to zero (softmax Jacobian) and is nonzero off the chosen entry too
    assert torch.allclose(logits.grad.sum(1), torch.zeros(5), atol=1e-5)
    with pytest.raises(ConfigError):
        hard_gumbel_route(logits, tau=0.0)


def test_gumbel_samples_follow_the_router_probabilities():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).expand(4000, 3)
    index, _ = hard_gumbel_route(logits, tau=1.0)
    freq = torch.bincount(index, minlength=3).float() / 4000
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.03)


def test_only_the_chosen_paths_run_once_each_on_their_samples():
    module = _module().eval()
    text = torch.eye(8)[:3]
    _force(module, text, [2, 0, 2])
    x = torch.arange(1.0, 4.0).view(3, 1)
    out = module(x, text=text)
    assert module.last_route.tolist() == [2, 0, 2]
    assert [p.calls for p in module.paths] == [[1], [], [2], []]  # path 2 once on its two samples, 1 and 3 never
    assert out[:, 0].tolist() == [3.0 * 1, 1.0 * 2, 3.0 * 3]  # path k multiplies by k + 1, sample order kept


def test_training_routes_by_gumbel_and_the_router_gets_gradients_through_the_chosen_path_only():
    module = _module().train()
    text = torch.randn(6, 8)
    x = torch.randn(6, 1)
    out = module(x, text=text)
    chosen = set(module.last_route.tolist())
    assert sum(len(p.calls) for p in module.paths) == len(chosen)  # one call per chosen path
    expected = torch.stack([x[i] * (k + 1) for i, k in enumerate(module.last_route.tolist())])
    assert torch.allclose(out, expected)  # gates are 1 in value
    (out * torch.randn_like(out)).sum().backward()
    assert float(module.router.fc1.weight.grad.abs().sum()) > 0
    assert float(module.router.fc2.weight.grad.abs().sum()) > 0
    for k, path in enumerate(module.paths):
        assert (path.w.grad is not None) == (k in chosen)


def test_argmax_routing_is_deterministic_per_prompt_and_independent_of_the_image():
    module = _module().eval()
    text = torch.randn(3, 8)
    first = module(torch.randn(3, 1), text=text)
    route = module.last_route.clone()
    for _ in range(3):
        module(torch.randn(3, 1), text=text)
        assert torch.equal(module.last_route, route)
    assert torch.equal(route, route_table([module], text)[:, 0])
    again = module(torch.ones(3, 1), text=text)
    assert torch.equal(module.last_route, route) and first.shape == again.shape


def test_a_frozen_router_routes_by_argmax_in_training_too():
    module = _module().train()
    for p in module.router.parameters():
        p.requires_grad_(False)
    text = torch.randn(5, 8)
    routes = set()
    for _ in range(5):
        module(torch.randn(5, 1), text=text)
        routes.add(tuple(module.last_route.tolist()))
    assert routes == {tuple(module.logits(text).argmax(1).tolist())}


def test_pruned_module_runs_its_single_path_and_has_no_router():
    path = Scale(3.0)
    module = PathwayModule([path], text_dim=8, kept=2)
    assert module.router is None and module.kept == 2
    assert torch.equal(module(torch.ones(2, 1)), torch.full((2, 1), 3.0))
    with pytest.raises(ConfigError):
        module.logits(torch.randn(1, 8))
    with pytest.raises(ConfigError):
        PathwayModule([Scale(1), Scale(2)], text_dim=8, kept=0)


def test_run_paths_with_two_inputs_and_probabilities():
    class Add(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, a, b):
            return a + b + self.k

    a, b = torch.zeros(4, 2), torch.ones(4, 2)
    out = run_paths(torch.tensor([1, 0, 1, 0]), nn.ModuleList([Add(10), Add(20)]), (a, b))
    assert out[:, 0].tolist() == [21.0, 11.0, 21.0, 11.0]
    module = _module()
    probs = route_probabilities([module, module], torch.randn(3, 8))
    assert probs.shape == (3, 2, 4) and torch.allclose(probs.sum(-1), torch.ones(3, 2))


def test_path_sharing_counts_shared_levels_within_and_between_groups():
    table = torch.tensor([[0, 1, 2], [0, 1, 3], [4, 5, 3]])
    stats = path_sharing(table, groups=["lesion", "lesion", "vessel"])
    assert stats["shared_levels"] == [[3, 2, 0], [2, 3, 1], [0, 1, 3]]
    assert stats["paths_used"] == [2, 2, 2]
    assert stats["within_group"] == pytest.approx(2 / 3)
    assert stats["between_groups"] == pytest.approx((0 + 1 / 3) / 2)
    with pytest.raises(ConfigError):
        path_sharing(table, groups=["a"])


@pytest.mark.parametrize("seed", [0, 1])
def test_chosen_path_gradient_alone_learns_to_separate_unrelated_tasks(seed):
    """Only the chosen sub-pathway runs, so the straight-through gradient keeps only its term; routing still
    learns: two tasks that want opposite outputs end on different paths, and each path fits its task."""
    import torch.nn.functional as F

    from unipet.models.routing import PathwayModule, route_table

    torch.manual_seed(seed)
    paths = [torch.nn.Linear(4, 4) for _ in range(2)]
    module = PathwayModule(paths, text_dim=8, router_hidden=16, tau=1.0).train()
    text = torch.randn(2, 8)  # two unrelated tasks
    target_map = torch.stack([torch.eye(4), -torch.eye(4)])  # task 0 wants +x, task 1 wants -x
    opt = torch.optim.Adam(module.parameters(), lr=0.02)
    for _ in range(400):
        task = torch.randint(0, 2, (16,))
        x = torch.randn(16, 4)
        y = torch.einsum("bij,bj->bi", target_map[task], x)
        loss = F.mse_loss(module(x, text=text[task]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    routes = route_table([module], text)[:, 0]
    assert routes[0] != routes[1]  # the tasks were separated onto different sub-pathways
    module.eval()
    with torch.no_grad():
        x = torch.randn(64, 4)
        for t in range(2):
            err = F.mse_loss(module(x, text=text[t].expand(64, -1)), x @ target_map[t].T)
            assert err < 0.05, (t, float(err))
