"""gCIS model: shapes, routing inside the model, trainable scopes, paper-size parameters; its data options
(organ/vessel tasks from organ maps, CT window, multi-spacing sampling) and recipes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from _gcis_data import TINY_GCIS, build_structures_cache

from unipet.errors import ConfigError, ImageGeometryError, MissingInputError
from unipet.models import create
from unipet.models.blocks import ResBlock
from unipet.models.gcis import PAPER_PARAMS, DecoderPath
from unipet.models.routing import pathway_modules

TASKS = ["lymphoma", "lung_cancer", "aorta", "liver"]
#: the smallest patch the release layout trains on (more than one voxel at 1/32 for the bottleneck's normalisation)
PATCH = (64, 32, 32)


def _tiny(**kw):
    torch.manual_seed(0)
    return create("gcis", in_channels=2, tasks=TASKS, patch_size=PATCH, **{**TINY_GCIS, **kw})


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
    x = torch.randn(2, 2, *PATCH)
    with torch.no_grad():
        assert model(x, task=torch.tensor([0, 3])).shape == (2, 2, *PATCH)
        with pytest.raises(ImageGeometryError):  # one voxel at 1/32: the bottleneck's instance norm cannot run
            model(torch.randn(1, 2, 32, 32, 32), task=1)
        model.train()
        model.set_deep_supervision(True)
        outs = model(x[:1], task=1)
    assert [tuple(o.shape[2:]) for o in outs] == [(64, 32, 32), (32, 16, 16), (16, 8, 8), (8, 4, 4), (4, 2, 2)]
    with pytest.raises(MissingInputError):
        model(x)
    with pytest.raises(MissingInputError):
        model(x, task=torch.tensor([0, 7]))
    with pytest.raises(ImageGeometryError):
        model(x[..., :16], task=0)
    with pytest.raises(ConfigError):
        create("gcis", tasks=TASKS, patch_size=(32, 48, 32), **TINY_GCIS)
    with pytest.raises(ConfigError):  # release layout: 32^3 leaves one voxel at 1/32
        create("gcis", tasks=TASKS, patch_size=(32, 32, 32), **TINY_GCIS)
    levels5 = create("gcis", tasks=TASKS, patch_size=(32, 32, 32), **{**TINY_GCIS, "layout": "levels5"})
    assert levels5.layout == "levels5"
    assert model.text_embedding.shape == (4, 384) and bool(model.text_embedding_set)


def _paper_size(**kw):
    """The paper configuration (1 input channel, 2 classes), built on the CPU and moved to the meta device (MONAI's
    Swin constructor reads tensor values, which meta tensors cannot give)."""
    with torch.device("cpu"):
        model = create("gcis", in_channels=1, tasks=TASKS, patch_size=(128, 128, 128), text_encoder=None, **kw)
    return model.to("meta")


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_paper_configuration_parameters_are_the_ones_the_docstring_states():
    import unipet.models.gcis as gcis

    full = _paper_size()
    pruned = _paper_size(route=[0, 1, 2, 3, 4, 5, 0], task="aorta")
    n_full, n_pruned = _count(full), _count(pruned)
    assert (n_full, n_pruned) == (67_698_696, 26_754_912) == (n_full, full.pruned_parameters())
    assert f"{n_full:,}" in gcis.__doc__ and f"{n_pruned:,}" in gcis.__doc__
    assert abs(n_pruned / 1e6 - PAPER_PARAMS["pruned"]) <= 0.05  # fitted to the paper's 26.75 M (bottleneck_width)
    paths = [_count(m.paths[0]) for m in full.pathways]
    routers = sum(_count(m.router) for m in full.pathways)
    assert n_full - n_pruned == 5 * sum(paths) + routers
    # structure: 7 routed modules of 6 identical sub-pathways; bottleneck ResBlock(768 -> 92) at 1/32, the first
    # decoder level upsamples its 92 channels, a routed 1x1x1 output convolution 24 -> 2, 4 shared coarser heads
    modules = pathway_modules(full)
    assert len(modules) == 7 and all(m.num_paths == 6 for m in modules) and modules == list(full.pathways)
    assert all(isinstance(p, ResBlock) and (p.conv1.in_channels, p.conv1.out_channels) == (768, 92)
               for p in modules[0].paths)
    assert all(isinstance(p, DecoderPath) for m in modules[1:6] for p in m.paths)
    assert modules[1].paths[0].up.in_channels == 92
    assert all(isinstance(p, nn.Conv3d) and (p.in_channels, p.out_channels, p.kernel_size) == (24, 2, (1, 1, 1))
               for p in modules[6].paths)
    assert [h.in_channels for h in full.heads] == [192, 96, 48, 24]
    assert full.swin.patch_embed.proj.out_channels == 48
    counts = full.paper_counts()
    assert (counts["full"], counts["pruned"]) == (n_full, n_pruned) and counts["pruned_diff_pct"] == 0.02
    # the earlier 5-level layout, kept by name
    old, old_pruned = _paper_size(layout="levels5"), _paper_size(layout="levels5", route=[0] * 5, task="aorta")
    assert (_count(old), _count(old_pruned)) == (60_483_018, 25_585_708) == (_count(old), old.pruned_parameters())
    assert len(pathway_modules(old)) == 5 and len(old.heads) == 5


def test_release_layout_has_seven_routed_modules_and_levels5_five():
    model = _tiny()
    modules = pathway_modules(model)
    assert model.layout == "release" and model.config["kwargs"]["layout"] == "release"  # recorded explicitly
    assert len(modules) == 7 and all(m.num_paths == 3 for m in modules)
    assert model.module_labels[0] == "bottleneck 1/32" and model.module_labels[-1] == "output 1/1"
    assert all(isinstance(p, ResBlock) and p.conv1.in_channels == 96 for p in modules[0].paths)  # 16F, F = 6
    assert all(isinstance(p, nn.Conv3d) and p.out_channels == 2 for p in modules[6].paths)
    assert model.routes().shape == (4, 7) and len(model.heads) == 4
    old = _tiny(layout="levels5")
    assert len(pathway_modules(old)) == 5 and old.routes().shape == (4, 5) and len(old.heads) == 5
    assert old.config["kwargs"]["layout"] == "levels5"
    with pytest.raises(ConfigError):
        _tiny(layout="seven")
    with pytest.raises(ConfigError):  # a route must name one path per routed module
        _tiny(route=[0] * 5, task="aorta")


def test_a_config_without_layout_still_loads_a_five_level_checkpoint(tmp_path):
    """Checkpoints written before the layout option record no ``layout``: they build (and load into) levels5."""
    from unipet import checkpoint as ckpt
    from unipet.models.prune import max_output_difference, prune
    from unipet.models.registry import upgrade_kwargs

    old = _tiny(layout="levels5").eval()
    config = {**old.config, "kwargs": {k: v for k, v in old.config["kwargs"].items() if k != "layout"}}
    ckpt.save_checkpoint(tmp_path / "run", old, {"model": config, "iteration": 1})
    assert "layout" not in ckpt.read_meta(tmp_path / "run").model["kwargs"]
    assert ckpt.read_meta(tmp_path / "run").model_kwargs["layout"] == "levels5"
    loaded, meta = ckpt.load_checkpoint(tmp_path / "run")
    assert loaded.layout == "levels5" and len(loaded.pathways) == 5
    assert loaded.config["kwargs"]["layout"] == "levels5"  # the rebuilt model records it explicitly
    x = torch.randn(1, 2, 32, 32, 32)  # levels5 runs on 32^3
    with torch.no_grad():
        assert torch.equal(loaded(x, task=2), old(x, task=2))
    pruned = prune(loaded, "aorta")  # pruning keeps the recorded layout
    assert pruned.layout == "levels5" and max_output_difference(loaded, pruned, x) == 0.0
    # the same weights cannot load as the (default) release layout: the layout is not guessed from them
    assert upgrade_kwargs("gcis", {"layout": "release"})["layout"] == "release"
    with pytest.raises(RuntimeError):
        _tiny().load_state_dict(old.state_dict())


def test_legacy_kwargs_name_builder_options_with_defaults():
    from unipet.models.registry import register, upgrade_kwargs

    def builder(in_channels, num_classes, tasks, patch_size, width: int = 2):
        return None

    with pytest.raises(RuntimeError):
        register("legacy-test", legacy_kwargs={"depth": 1})(builder)
    assert upgrade_kwargs("no-such-model", {"a": 1}) == {"a": 1}
    assert upgrade_kwargs("gcis", {}) == {"layout": "levels5"}


def test_only_the_routed_sub_pathways_run_and_the_batch_is_grouped_by_path():
    model = _tiny().eval()
    routes = [[1, 0, 1, 2, 0, 1, 2], [1, 0, 1, 2, 0, 1, 2], [0, 2, 2, 0, 1, 0, 0], [2, 1, 0, 0, 2, 2, 1]]
    _force_routes(model, routes)
    assert model.routes().tolist() == routes
    calls: dict[tuple[int, int], list[int]] = {}
    for level, module in enumerate(model.pathways):
        for k, path in enumerate(module.paths):
            path.register_forward_hook(lambda m, a, o, key=(level, k): calls.setdefault(key, []).append(a[0].shape[0]))
    with torch.no_grad():
        model(torch.randn(3, 2, *PATCH), task=torch.tensor([0, 2, 1]))
    expected: dict[tuple[int, int], list[int]] = {}
    for level in range(7):
        for k in sorted({routes[t][level] for t in (0, 2, 1)}):
            expected[(level, k)] = [sum(routes[t][level] == k for t in (0, 2, 1))]
    assert calls == expected  # each chosen path once, on exactly its samples; 7 of the 21 paths never ran
    assert sum(isinstance(m, DecoderPath) for m in model.modules()) == 15
    assert sum(len(m.paths) for m in model.pathways) == 21


def test_gumbel_training_step_sends_gradients_to_every_router():
    model = _tiny().train()
    x = torch.randn(2, 2, *PATCH)
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
        for x in (torch.randn(4, 2, *PATCH), torch.zeros(4, 2, *PATCH)):
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
    assert {"path:0:2", "path:6:2"} <= set(model.trainable_scopes())  # bottleneck and output modules too
    assert model.scope_parameters("path:6:0") == {"pathways.6.paths.0.weight", "pathways.6.paths.0.bias"}
    assert all(n.startswith("pathways.0.paths.2.") for n in model.scope_parameters("path:0:2"))
    assert len([s for s in model.trainable_scopes() if s.startswith("path:")]) == 7 * 3
    for bad in ("path:7:0", "path:0:3", "path:x", "peft"):
        with pytest.raises(ConfigError):
            model.scope_parameters(bad)
    with pytest.raises(ConfigError):  # the levels5 layout has 5 routed modules
        _tiny(layout="levels5").scope_parameters("path:5:0")


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
