"""gCIS model: shapes, routing inside the model, trainable scopes, paper-size parameters; its data options
(organ/vessel tasks from organ maps, CT window, multi-spacing sampling) and recipes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _gcis_data import TINY_GCIS, build_structures_cache

from unipet.errors import ConfigError, ImageGeometryError, MissingInputError
from unipet.models import create
from unipet.models.gcis import PAPER_PARAMS, DecoderPath
from unipet.models.routing import pathway_modules

TASKS = ["lymphoma", "lung_cancer", "aorta", "liver"]


def _tiny(**kw):
    torch.manual_seed(0)
    return create("gcis", in_channels=2, tasks=TASKS, patch_size=(32, 32, 32), **{**TINY_GCIS, **kw})


def _force_routes(model, routes):
    """Route task t to routes[t][level] at every level (router bias off, one-hot text rows)."""
    model.text_embedding.copy_(torch.eye(model.text_embedding.shape[1])[: model.num_tasks])
    with torch.no_grad():
        for level, module in enumerate(model.pathways):
            r = module.router
            r.fc1.weight.zero_(), r.fc1.bias.zero_(), r.fc2.weight.zero_(), r.fc2.bias.zero_()
            for t in range(model.num_tasks):
                r.fc1.weight[t, t] = 1.0
                r.fc2.weight[routes[t][level], t] = 50.0


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return build_structures_cache(tmp_path_factory.mktemp("gcis"))


def test_forward_shapes_deep_supervision_and_input_checks():
    model = _tiny().eval()
    x = torch.randn(2, 2, 32, 32, 32)
    with torch.no_grad():
        assert model(x, task=torch.tensor([0, 3])).shape == (2, 2, 32, 32, 32)
        model.train()
        model.set_deep_supervision(True)
        outs = model(x[:1], task=1)
    assert [tuple(o.shape[2:]) for o in outs] == [(32,) * 3, (16,) * 3, (8,) * 3, (4,) * 3, (2,) * 3]
    with pytest.raises(MissingInputError):
        model(x)
    with pytest.raises(MissingInputError):
        model(x, task=torch.tensor([0, 7]))
    with pytest.raises(ImageGeometryError):
        model(x[..., :16], task=0)
    with pytest.raises(ConfigError):
        create("gcis", tasks=TASKS, patch_size=(32, 48, 32), **TINY_GCIS)
    assert model.text_embedding.shape == (4, 384) and bool(model.text_embedding_set)


def test_paper_configuration_parameters_match_the_paper():
    from unipet.models.prune import parameter_report

    model = create("gcis", in_channels=1, tasks=TASKS, patch_size=(128, 128, 128), text_encoder="hash")
    report = parameter_report(model, "aorta")
    assert abs(report["full"] / 1e6 - PAPER_PARAMS["full"]) / PAPER_PARAMS["full"] < 0.01
    assert abs(report["pruned"] / 1e6 - PAPER_PARAMS["pruned"]) / PAPER_PARAMS["pruned"] < 0.05  # 25.59 vs 26.75
    assert report["full"] - report["pruned"] == 5 * sum(p.numel() for p in model.pathways[0].paths[0].parameters()) \
        + sum(5 * sum(p.numel() for p in m.paths[0].parameters()) for m in model.pathways[1:]) \
        + sum(p.numel() for m in model.pathways for p in m.router.parameters())
    # structure: 5 modules of 6 identical sub-pathways, Swin encoder of 48 channels
    modules = pathway_modules(model)
    assert len(modules) == 5 and all(m.num_paths == 6 for m in modules)
    assert model.swin.patch_embed.proj.out_channels == 48


def test_only_the_routed_sub_pathways_run_and_the_batch_is_grouped_by_path():
    model = _tiny().eval()
    routes = [[0, 1, 2, 0, 1], [0, 1, 2, 0, 1], [2, 2, 0, 1, 0], [1, 0, 0, 2, 2]]
    _force_routes(model, routes)
    assert model.routes().tolist() == routes
    calls: dict[tuple[int, int], list[int]] = {}
    for level, module in enumerate(model.pathways):
        for k, path in enumerate(module.paths):
            path.register_forward_hook(lambda m, a, o, key=(level, k): calls.setdefault(key, []).append(a[0].shape[0]))
    with torch.no_grad():
        model(torch.randn(3, 2, 32, 32, 32), task=torch.tensor([0, 2, 1]))
    expected: dict[tuple[int, int], list[int]] = {}
    for level in range(5):
        for k in sorted({routes[t][level] for t in (0, 2, 1)}):
            expected[(level, k)] = [sum(routes[t][level] == k for t in (0, 2, 1))]
    assert calls == expected  # each chosen path once, on exactly its samples; 15 paths never ran
    assert sum(isinstance(m, DecoderPath) for m in model.modules()) == 15


def test_gumbel_training_step_sends_gradients_to_every_router():
    model = _tiny().train()
    x = torch.randn(2, 2, 32, 32, 32)
    model(x, task=torch.tensor([0, 2])).square().mean().backward()
    for module in model.pathways:
        assert module.router.fc2.weight.grad is not None and float(module.router.fc2.weight.grad.abs().sum()) > 0
        used = set(module.last_route.tolist())
        for k, path in enumerate(module.paths):
            grads = [p.grad for p in path.parameters()]
            assert all(g is not None for g in grads) == (k in used)


def test_argmax_routes_are_deterministic_per_prompt():
    model = _tiny().eval()
    table = model.routes()
    with torch.no_grad():
        for x in (torch.randn(4, 2, 32, 32, 32), torch.zeros(4, 2, 32, 32, 32)):
            model(x, task=torch.tensor([0, 1, 2, 3]))
            assert torch.equal(torch.stack([m.last_route for m in model.pathways], 1), table)
    same = _tiny().eval()  # same seed, same text -> same table
    assert torch.equal(same.routes(), table)


def test_trainable_scopes_partition_the_parameters():
    model = _tiny()
    names = {n for n, _ in model.named_parameters()}
    enc, dec = model.scope_parameters("encoder"), model.scope_parameters("decoder")
    assert enc and dec and enc | dec == names and not enc & dec
    assert all(n.startswith(("swin.", "stem.", "skips.")) for n in enc)
    paths = model.scope_parameters("paths")
    assert paths < dec and not any(".router." in n for n in paths)
    one = model.scope_parameters("path:2:1")
    assert one and all(n.startswith("pathways.2.paths.1.") for n in one)
    assert "path:4:2" in model.trainable_scopes()
    for bad in ("path:5:0", "path:0:3", "path:x", "peft"):
        with pytest.raises(ConfigError):
            model.scope_parameters(bad)


def test_organ_and_vessel_tasks_come_from_organ_maps(cache):
    from unipet.data.organ_tasks import organ_tasks
    from unipet.tasks import TaskSet

    ts = TaskSet.load("phantom_structures")
    assert {"aorta", "iliac_arteries", "ureter", "liver", "kidney"} <= set(organ_tasks(ts))
    aorta = [c for c in cache.case_ids if cache.info(c)["task"] == "aorta"]
    assert len(aorta) == 4
    case = cache.load(aorta[0], mmap=False)
    # the label is exactly the aorta of the organ map (value 11), one connected tube
    assert np.array_equal(case.label > 0, case.organs == 11) and len(case.info["lesions"]) == 1
    assert cache.config.normalisation["CT"] == {"scheme": "ct-window", "level": 0.0, "width": 1800.0}
    ct = np.asarray(case.image[0])
    assert ct.min() >= 0.0 and ct.max() <= 1.0
    assert np.isclose(ct[case.organs == 11].mean(), (200 + 900) / 1800, atol=1e-4)


def test_multi_spacing_sampling_zooms_patches(cache):
    from unipet.data.sampling import (
        PatchSampler,
        choose_spacing,
        parse_multi_spacing,
        read_resampled,
    )

    rng = np.random.default_rng(0)
    spacings = np.array([[3.0, 3.0, 3.0], [6.0, 6.0, 6.0], [1.5, 1.5, 1.5]])
    picks = [tuple(choose_spacing((2.9, 3.1, 3.0), spacings, 0.1, rng)) for _ in range(2000)]
    closest = sum(p == (3.0, 3.0, 3.0) for p in picks) / 2000
    assert closest == pytest.approx(0.9 + 0.1 / 3, abs=0.03)
    with pytest.raises(ConfigError):
        parse_multi_spacing({"spacings": [[1, 2]], "random_p": 0.1})
    with pytest.raises(ConfigError):
        parse_multi_spacing({"spacings": [[1, 1, 1]], "random_p": 2})
    # zooming out by 2: a patch covers twice the field of view around the same centre
    vol = np.arange(16, dtype=np.float32)[None, :, None].repeat(16, 0).repeat(16, 2)[None]  # (1, z, y, x), y ramp
    out = read_resampled(vol, (4, 4, 4), (8, 8, 8), (2.0, 2.0, 2.0), 0.0, nearest=False)
    assert out.shape == (1, 8, 8, 8) and np.allclose(out[0, 4, :, 4], np.arange(0.5, 16, 2))
    same = read_resampled(vol, (4, 4, 4), (8, 8, 8), (1.0, 1.0, 1.0), 0.0, nearest=False)
    assert np.array_equal(same, vol[:, 4:12, 4:12, 4:12])
    sampler = PatchSampler(cache, patch_size=(16, 16, 16), mix={"random": 1.0},
                           multi_spacing={"spacings": [[3.0, 3.0, 3.0], [6.0, 6.0, 6.0]], "random_p": 1.0})
    batch = sampler.batch(0, 6)
    assert batch["image"].shape == (6, 2, 16, 16, 16) and set(np.unique(batch["label"])) <= {0, 1}
    assert sampler.describe()["multi_spacing"]["random_p"] == 1.0
    plain = PatchSampler(cache, patch_size=(16, 16, 16), mix={"random": 1.0})
    assert np.array_equal(plain.batch(3, 2)["image"], PatchSampler(cache, patch_size=(16, 16, 16),
                                                                     mix={"random": 1.0}).batch(3, 2)["image"])
    with pytest.raises(ConfigError):
        PatchSampler(cache, case_ids=["nope"], patch_size=(16, 16, 16))


def test_gcis_recipes():
    from unipet.train import load_recipe

    joint, paths, few = load_recipe("gcis"), load_recipe("gcis-paths"), load_recipe("gcis-adapt")
    assert all(p % 32 == 0 for p in joint.patch_size) and joint.optimizer == "adamw"
    assert (paths.trainable, few.trainable) == ("paths", "decoder")
    r = load_recipe("gcis", cases=["a", "b"], multi_spacing={"spacings": [[1.5, 1.5, 1.5]], "random_p": 0.1})
    assert r.to_dict()["cases"] == ["a", "b"] and r.multi_spacing["random_p"] == 0.1
    with pytest.raises(ConfigError):
        load_recipe("gcis", multi_spacing={"spacings": []})
    with pytest.raises(ConfigError):
        load_recipe("gcis", cases="a")


def test_cli_organ_tasks_adds_one_case_per_study_and_structure(tmp_path):
    """``unipet gcis organ-tasks``: the command line of ``add_organ_tasks`` (the masks are its organ-map values)."""
    from _gcis_data import write_cohort

    from unipet.cli import main
    from unipet.io.layouts import import_phantom
    from unipet.io.manifest import Manifest
    from unipet.io.nifti import load_volume

    import_phantom(write_cohort(tmp_path / "cohort", 2)).save(tmp_path / "m.json")
    args = ["gcis", "organ-tasks", str(tmp_path / "m.json"), "--task-set", "phantom_structures", "--task", "aorta",
            "--out", str(tmp_path / "masks"), "--manifest-out", str(tmp_path / "s.json")]
    assert main(args) == 0
    result = Manifest.load(tmp_path / "s.json")
    added = [c for c in result if c.task == "aorta"]
    assert len(result.cases) == 4 and len(added) == 2
    label, _ = load_volume(added[0].label, dtype=np.uint8)
    organs, _ = load_volume(added[0].organs, dtype=np.int32)
    assert np.array_equal(label > 0, organs == 11)
    assert main(args) == 2  # the manifest exists: refused without --overwrite
