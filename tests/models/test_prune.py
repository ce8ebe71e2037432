"""Pruning gCIS to one task (identical outputs, fewer parameters), export as a checkpoint, few-shot adaptation
(encoder frozen), and the second-stage plan and scope."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _gcis_data import TINY_GCIS, build_structures_cache

from unipet.cli import main
from unipet.errors import ConfigError, OutputExistsError
from unipet.models import create
from unipet.analysis.gcis import export
from unipet.models.prune import (
    max_output_difference,
    prune,
    pruned_state_dict,
    route_for_text,
    task_route,
)
from unipet.checkpoint import load_checkpoint

TASKS = ["lymphoma", "lung_cancer", "aorta", "liver"]
#: the release layout trains on patches with more than one voxel at 1/32
PATCH = (64, 32, 32)


def _distinct_routes(model):
    """Give the routers random large weights so that tasks take different paths."""
    torch.manual_seed(3)
    with torch.no_grad():
        for m in model.pathways:
            m.router.fc2.weight.normal_(0, 5.0)
            m.router.fc1.weight.normal_(0, 1.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny cache and a 2-step joint gcis run on it."""
    from unipet.train import train

    tmp = tmp_path_factory.mktemp("prune")
    cache = build_structures_cache(tmp)
    train(cache, "gcis", tmp / "run", recipe="gcis", iterations=2, patch_size=PATCH, batch_size=1,
          workers=0, model_kw=dict(TINY_GCIS), device="cpu", progress=False, tensorboard=False)
    return cache, tmp


def test_pruned_model_equals_the_full_model_for_its_task_with_fewer_parameters():
    torch.manual_seed(0)
    full = create("gcis", in_channels=2, tasks=TASKS, patch_size=PATCH, **TINY_GCIS).eval()
    _distinct_routes(full)
    table = full.routes()
    assert full.layout == "release" and table.shape == (4, 7)  # bottleneck, five decoder levels, output
    assert len({tuple(r) for r in table.tolist()}) > 1  # the tasks do not all share one route
    x = torch.randn(1, 2, *PATCH)
    for task in ("aorta", "lymphoma"):
        pruned = prune(full, task)
        assert pruned.route == table[full.task_set.index(task)].tolist() == task_route(full, task)
        assert max_output_difference(full, pruned, x) == 0.0
        n_full, n_pruned = (sum(p.numel() for p in m.parameters()) for m in (full, pruned))
        assert n_pruned == full.pruned_parameters() < n_full
        assert pruned.layout == "release" and len(pruned.pathways) == 7
        assert all(m.num_paths == 1 and m.router is None for m in pruned.pathways)
        assert not any(".router." in n or "text_embedding" in n for n in pruned.state_dict())
        with pytest.raises(ConfigError):  # it segments its own task only
            pruned(x, task=(full.task_set.index(task) + 1) % 4)
    # another task's route gives other outputs: the equivalence test can fail
    other = prune(full, "aorta", route=[(k + 1) % 3 for k in task_route(full, "aorta")])
    assert max_output_difference(full, other, x) > 0
    state = pruned_state_dict(full, [1, 0, 1, 2, 0, 1, 2])
    assert "pathways.3.paths.0.block.conv1.weight" in state and "pathways.3.paths.1.block.conv1.weight" not in state
    assert torch.equal(state["pathways.3.paths.0.block.conv1.weight"],
                       full.state_dict()["pathways.3.paths.2.block.conv1.weight"])
    # the release layout's bottleneck (module 0) and output convolution (module 6) are pruned like the levels
    assert torch.equal(state["pathways.0.paths.0.conv1.weight"], full.state_dict()["pathways.0.paths.1.conv1.weight"])
    assert torch.equal(state["pathways.6.paths.0.weight"], full.state_dict()["pathways.6.paths.2.weight"])
    assert not any(k.startswith(("pathways.0.paths.1", "pathways.6.paths.1")) for k in state)
    with pytest.raises(ConfigError):
        prune(prune(full, "aorta"), "aorta")


def test_route_for_text_embeds_a_new_prompt_with_the_models_encoder():
    torch.manual_seed(0)
    full = create("gcis", in_channels=2, tasks=TASKS, patch_size=PATCH, **TINY_GCIS).eval()
    _distinct_routes(full)
    assert route_for_text(full, "aorta") == task_route(full, "aorta")  # same text -> same route


def test_export_writes_a_checkpoint_with_identical_masks_and_the_cli(run, tmp_path):
    cache, tmp = run
    record = export(tmp / "run", "aorta", tmp_path / "aorta")
    full, _ = load_checkpoint(tmp / "run")
    pruned, meta = load_checkpoint(tmp_path / "aorta")
    assert meta.pruned["task"] == "aorta" and meta.pruned["route"] == pruned.route == task_route(full, "aorta")
    assert record["params_pruned"] == sum(p.numel() for p in pruned.parameters()) < record["params_full"]
    from unipet.infer.predictor import Predictor

    image = cache.load(cache.case_ids[0], mmap=False).image  # whole volume, sliding window as `unipet predict`
    task = full.task_set.index("aorta")
    prob_full = Predictor(full, meta, device="cpu").probabilities(image, task)
    prob_pruned = Predictor(pruned, meta, device="cpu").probabilities(image, task)
    assert torch.equal(prob_full, prob_pruned)
    with pytest.raises(OutputExistsError):
        export(tmp / "run", "aorta", tmp_path / "aorta")
    assert main(["gcis", "export", "--model", str(tmp / "run"), "--task", "liver", "--out", str(tmp_path / "liver")]) == 0
    assert load_checkpoint(tmp_path / "liver")[1].pruned["task"] == "liver"
    assert main(["gcis", "export", "--model", str(tmp / "run"), "--task", "pancreas", "--out", str(tmp_path / "x")]) == 2


def test_adapt_routes_the_prompt_prunes_and_freezes_the_encoder(run, tmp_path):
    from safetensors.torch import load_file

    cache, tmp = run
    rc = main(["adapt", "--model", str(tmp / "run"), "--data", str(cache.root), "--task", "liver", "--prompt",
               "liver", "--shots", "2", "--out", str(tmp_path / "a"), "--iterations", "2", "--patch", "64", "32",
               "32", "--batch", "1", "--workers", "0", "--device", "cpu"])
    assert rc == 0
    adapted, meta = load_checkpoint(tmp_path / "a")
    full, _ = load_checkpoint(tmp / "run")
    assert adapted.pruned and adapted.route == route_for_text(full, "liver")
    assert meta.recipe["trainable"] == "decoder" and len(meta.recipe["cases"]) == 2
    assert all(cache.info(c)["task"] == "liver" for c in meta.recipe["cases"])
    init = load_file(str(tmp_path / "a" / "pruned_init.safetensors"))
    after = adapted.state_dict()
    encoder = adapted.scope_parameters("encoder")
    assert encoder and all(torch.equal(after[n], init[n]) for n in encoder)  # frozen
    decoder = adapted.scope_parameters("decoder")
    assert any(not torch.equal(after[n], init[n]) for n in decoder)  # trained
    with pytest.raises(ConfigError):
        from unipet.train.gcis import shot_cases

        shot_cases(cache, "liver", 99)


def test_second_stage_plan_and_a_per_path_scope_trains_only_that_path(run):
    from unipet.train.gcis import second_stage_plan

    plan = second_stage_plan([[0, 1], [0, 2], [1, 2]], ["a", "b", "c"])
    assert plan == [(0, 0, ["a", "b"]), (0, 1, ["c"]), (1, 1, ["a"]), (1, 2, ["b", "c"])]
    with pytest.raises(ConfigError):
        second_stage_plan([[0, 1]], ["a", "b"])
    full, _ = load_checkpoint(run[1] / "run")
    full.train()
    scope = full.scope_parameters("path:4:1")
    for name, p in full.named_parameters():
        p.requires_grad_(name in scope)
    before = {n: p.detach().clone() for n, p in full.named_parameters()}
    _distinct_routes(full)
    with torch.no_grad():  # route every task to path 1 at routed module 4 (decoder 1/4)
        full.pathways[4].router.fc2.bias.copy_(torch.tensor([0.0, 1e4, 0.0]))
    for name, p in full.pathways.named_parameters():
        before["pathways." + name] = p.detach().clone()
    opt = torch.optim.SGD([p for p in full.parameters() if p.requires_grad], lr=0.1)
    full(torch.randn(2, 2, *PATCH), task=torch.tensor([0, 2])).square().mean().backward()
    opt.step()
    assert full.pathways[4].last_route.tolist() == [1, 1]  # frozen routers route by arg-max
    changed = {n for n, p in full.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= scope


def test_second_stage_trains_each_used_sub_pathway_in_turn_from_the_previous_run(run, tmp_path):
    """Stage 2: one short run per (level, path) the tasks are routed to, each trainable only on its path and
    initialised from the run before it (the first from the joint run)."""
    from safetensors.torch import load_file

    from unipet.train.gcis import second_stage, second_stage_plan

    cache, tmp = run
    full, _ = load_checkpoint(tmp / "run")
    plan = [(level, path) for level, path, _ in second_stage_plan(full.routes().tolist(), full.task_set.names)]
    records = second_stage(tmp / "run", cache, tmp_path / "stage2", iterations=1, device="cpu",
                           patch_size=PATCH, batch_size=1, workers=0)
    done = [(r["level"], r["path"]) for r in records]
    assert done and [step for step in plan if step in done] == done  # in plan order (paths without cases skipped)
    previous = load_file(str(tmp / "run" / "checkpoint" / "model.safetensors"))
    moved = set()
    for record in records:
        model, meta = load_checkpoint(record["run"])
        assert meta.recipe["trainable"] == f"path:{record['level']}:{record['path']}" and meta.iteration == 1
        scope = model.scope_parameters(meta.recipe["trainable"])
        now = load_file(str(Path(record["run"]) / "checkpoint" / "model.safetensors"))
        changed = {k for k in now if k in previous and not torch.equal(now[k], previous[k])}
        assert changed <= scope  # nothing outside the sub-pathway moved
        moved |= changed
        previous = now
    assert moved  # the sub-pathways did train
