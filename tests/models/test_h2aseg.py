"""H2ASeg: BDSA/MCSA/TAMW behaviour, any-patch forward, deep-supervision weights, variants, the recipe, training
through the engine, the TAMW weight report (+ CLI) and the seed's metric convention."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from _synthetic import write_autopet

from unipet.cli import main
from unipet.data.cache import build_cache
from unipet.errors import ConfigError, ImageGeometryError
from unipet.evaluate.runner import evaluate_case
from unipet.io.layouts import import_autopet
from unipet.models import create
from unipet.models.h2aseg import (
    BDSA,
    MCSA,
    TAMW,
    VARIANTS,
    H2ASeg,
    check_patch,
    patch_multiple,
    window_merge,
    window_partition,
)
from unipet.models.profile import profile_model
from unipet.analysis.h2aseg import recording_tamw, tamw_weight_report
from unipet.train import load_recipe, train
from unipet.checkpoint import load_checkpoint, read_meta
from unipet.train.losses import SegmentationLoss, deep_supervision_weights

#: the release layout with softmax heads: the tests below were written for it (the paper's layout and heads are
#: the defaults and are tested in the last tests)
TINY = {"widths": [2, 4, 4, 8, 8], "window": [2, 2, 2], "layout": "release", "activation": "softmax"}
PATCH = (16, 16, 32)  # smallest fast shape: the 1/16 level keeps 2 voxels for its instance norms


def _tiny(patch=PATCH, **kw) -> H2ASeg:
    torch.manual_seed(0)
    return create("h2aseg", patch_size=patch, **{**TINY, **kw})


# ------------------------------------------------------------------ attention blocks
def test_bdsa_shapes_and_cross_attention_reads_the_other_modality():
    torch.manual_seed(0)
    block = BDSA(4, 2).eval()
    ct, pet = torch.randn(2, 4, 2, 4, 4), torch.randn(2, 4, 2, 4, 4)
    out_ct, out_pet = block(ct, pet)
    assert out_ct.shape == ct.shape and out_pet.shape == pet.shape
    pet2 = pet.clone()
    pet2[:, :, 0, 0, 0] += 3.0  # perturb one PET position: every CT output position attends to it
    new_ct, new_pet = block(ct, pet2)
    assert (new_ct - out_ct).abs().amax(dim=(0, 1)).min() > 1e-6  # changed everywhere, not just locally
    assert not torch.allclose(new_pet, out_pet)
    # the two directions have their own weights
    assert block.to_ct.target_proj.weight.data_ptr() != block.to_pet.target_proj.weight.data_ptr()
    # without the cross-attention's key/value projections the CT output cannot see PET
    with torch.no_grad():
        block.to_ct.source_proj.weight.zero_()
    a, _ = block(ct, pet)
    b, _ = block(ct, pet2)
    assert torch.allclose(a, b, atol=1e-6)


def test_window_partition_round_trip_and_mcsa_geometry():
    x = torch.arange(2 * 3 * 4 * 8 * 8, dtype=torch.float32).reshape(2, 3, 4, 8, 8)
    windows = window_partition(x, (2, 4, 4))
    assert windows.shape == (2 * 2 * 2 * 2, 3, 2, 4, 4)
    assert torch.equal(windows[0], x[0, :, :2, :4, :4]) and torch.equal(windows[1], x[0, :, :2, :4, 4:])
    assert torch.equal(window_merge(windows, (2, 4, 4), (4, 8, 8)), x)
    torch.manual_seed(0)
    mcsa = MCSA(4, (2, 4, 4), 1).eval()
    assert mcsa.tokens_ct.kernel_size == (2, 4, 4) and mcsa.tokens_ct.stride == (2, 4, 4)
    ct, pet = torch.randn(1, 4, 4, 8, 8), torch.randn(1, 4, 4, 8, 8)
    out_ct, out_pet = mcsa(ct, pet)
    assert out_ct.shape == ct.shape and out_pet.shape == pet.shape
    pet2 = pet.clone()
    pet2[:, :, 0, 0, 0] += 5.0  # a PET change in window (0, 0, 0) reaches CT voxels of other windows (inter-window)
    new_ct, _ = mcsa(ct, pet2)
    assert not torch.allclose(new_ct[..., 4:, 4:], out_ct[..., 4:, 4:])
    with pytest.raises(ImageGeometryError):
        mcsa(torch.randn(1, 4, 4, 8, 6), torch.randn(1, 4, 4, 8, 6))


def test_tamw_formula_and_weights_in_open_interval():
    torch.manual_seed(0)
    tamw = TAMW(3, 4).eval()
    pet, ct, up = torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4), torch.randn(2, 4, 4, 4, 4)
    coarse = torch.randn(2, 2, 2, 2, 2) * 3
    with torch.no_grad():
        tamw.recorded = []
        out = tamw(pet, ct, up, coarse)
        (w_fore, w_back), = tamw.recorded
        f = torch.cat((pet, ct, up), 1)
        prob = torch.nn.functional.interpolate(coarse, size=(4, 4, 4), mode="trilinear", align_corners=True).softmax(1)
        fore, back = f * prob[:, 1:], f * prob[:, :1]
        expected = f + w_fore[..., None, None, None] * fore + w_back[..., None, None, None] * back
    assert out.shape == (2, 10, 4, 4, 4) and torch.allclose(out, expected, atol=1e-5)
    assert w_fore.shape == (2, 10) and float(w_fore.abs().max()) < 1 and float(w_back.abs().max()) < 1
    assert not torch.allclose(w_fore, w_back)  # separate MLPs for foreground and background
    # any spatial size (adaptive global pooling)
    assert tamw(pet[..., :2], ct[..., :2], up[..., :2], coarse).shape == (2, 10, 4, 4, 2)


# ------------------------------------------------------------------ the model
def test_any_patch_size_forward_and_patch_rule():
    model = _tiny().eval()
    for size in ((16, 16, 32), (16, 48, 32), (32, 16, 16)):
        assert model(torch.randn(1, 2, *size)).shape == (1, 2, *size)
    assert patch_multiple((4, 8, 8), (2, 3)) == (16, 32, 32)
    assert check_patch((64, 128, 128)) == (64, 128, 128)
    with pytest.raises(ConfigError, match="multiples of"):
        create("h2aseg", patch_size=(64, 112, 128))  # 112 / 4 = 28 is no multiple of the 8-voxel window
    with pytest.raises(ImageGeometryError):
        model(torch.randn(1, 2, 16, 16, 24))
    with pytest.raises(ConfigError):
        create("h2aseg", in_channels=1, patch_size=PATCH, **TINY)


def test_encoder_branches_interact_only_with_mcsa():
    x = torch.randn(1, 2, *PATCH)
    x2 = x.clone()
    x2[:, 1] += torch.randn(1, *PATCH)  # change PET (channel 1) only
    for variant, interacts in (("full", True), ("tamw", False)):
        model = _tiny(**VARIANTS[variant]).eval()
        ct_a, _ = model.encode(x)
        ct_b, _ = model.encode(x2)
        assert torch.equal(ct_a[0], ct_b[0])  # level 1 has no interaction
        assert (not torch.allclose(ct_a[1], ct_b[1])) is interacts
    # pet_channel says where PET is: swapping the channels and the flag gives the same output
    a = _tiny(pet_channel=1).eval()
    b = _tiny(pet_channel=0).eval()
    b.load_state_dict(a.state_dict())
    assert torch.allclose(a(x), b(x.flip(1)), atol=1e-6)


def test_variants_build_and_differ():
    params = {}
    for name, kw in VARIANTS.items():
        model = _tiny(**kw)
        json.dumps(model.config)  # checkpoints rebuild from JSON
        assert bool(len(model.interactions)) is kw["mcsa"] and (model.fusions is not None) is kw["tamw"]
        params[name] = sum(p.numel() for p in model.parameters())
    assert params["baseline"] < params["tamw"] < params["full"] and params["baseline"] < params["mcsa"] < params["full"]
    assert params["full"] - params["mcsa"] == params["tamw"] - params["baseline"]  # TAMW adds the same MLPs


def test_paper_configuration_sizes():
    full = profile_model("h2aseg", patch=(64, 128, 128), layout="release", activation="softmax")
    base = profile_model("h2aseg", patch=(64, 128, 128), mcsa=False, tamw=False, layout="release",
                         activation="softmax")
    assert full["params"] == 10_099_205 and base["params"] == 6_496_085
    assert full["macs"] > base["macs"] > 0  # attention and MCSA convolutions are counted
    paper = profile_model("h2aseg", patch=(64, 128, 128), count_macs=False)  # the defaults: the paper's
    assert paper["params"] == 22_831_596


def test_deep_supervision_outputs_and_paper_weights():
    model = _tiny()
    model.set_deep_supervision(True)
    model.train()
    x = torch.randn(2, 2, *PATCH)
    outs = model(x)
    assert len(outs) == 5 and all(o.shape == (2, 2, *PATCH) for o in outs)
    assert model.deep_supervision_weights(5) == [5.0, 4.0, 3.0, 2.0, 1.0]
    # the base model keeps nnU-Net's weights
    assert create("nnunet", patch_size=(16, 16, 16), base_channels=4, max_channels=8).deep_supervision_weights(4) == \
        deep_supervision_weights(4)
    target = torch.zeros(2, *PATCH, dtype=torch.long)
    target[:, 4:12, 4:12, 10:20] = 1
    loss_fn = SegmentationLoss("softmax", task_weight=0.0, ds_weights=model.deep_supervision_weights)
    loss, _ = loss_fn(outs, target)
    expected = sum((5 - i) * loss_fn.segmentation(o, target, None) for i, o in enumerate(outs))
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    nnunet_loss, _ = SegmentationLoss("softmax", task_weight=0.0)(outs, target)
    assert float(nnunet_loss.detach()) < float(loss.detach()) / 5  # nnU-Net's weights sum to 1, the paper's to 15
    model.eval()
    assert model(x).shape == (2, 2, *PATCH)


def test_tamw_weight_report_rows():
    model = _tiny()
    rows = tamw_weight_report(model, [torch.randn(2, 2, *PATCH), torch.randn(1, 2, *PATCH)])
    assert [r["level"] for r in rows] == [1, 2, 3, 4] and all(r["samples"] == 3 for r in rows)
    assert model.training  # restored
    for r in rows:
        for key in ("pet_fore", "ct_fore", "decoder_fore", "pet_back", "ct_back", "decoder_back"):
            assert -1 < r[key] < 1
    assert all(f.recorded is None for f in model.fusions)
    with pytest.raises(ConfigError), recording_tamw(_tiny(tamw=False)):
        pass


# ------------------------------------------------------------------ training integration
def test_h2aseg_recipe():
    recipe = load_recipe("h2aseg")
    assert (recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.patch_size) == ("adam", 1e-4, 1e-5, (64, 128, 128))
    assert recipe.deep_supervision and recipe.grad_clip == 0
    opt = recipe.make_optimizer([torch.nn.Parameter(torch.zeros(3))])
    assert type(opt) is torch.optim.Adam and opt.defaults["weight_decay"] == 1e-5
    check_patch(recipe.patch_size)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = write_autopet(tmp_path_factory.mktemp("ap"), n=4)
    manifest = import_autopet(root)
    for i, c in enumerate(manifest):
        c.split = "val" if i == 3 else "train"
    return build_cache(manifest, tmp_path_factory.mktemp("cache") / "c")


def test_training_through_the_engine_and_tamw_cli(cache, tmp_path):
    run = tmp_path / "run"
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"base": "h2aseg", "augmentation": {"enabled": False}}))
    result = train(cache, "h2aseg", run, recipe=recipe, model_kw=TINY, iterations=8, patch_size=PATCH,
                   batch_size=2, workers=0, device="cpu", progress=False, tensorboard=False, checkpoint_every=8)
    assert len(result.losses) == 8 and all(math.isfinite(v) for v in result.losses)
    # 5 deep-supervision terms weighted 5..1, each Dice + CE: well above a single unit-weight term at the start
    assert result.losses[0] > 5
    meta = read_meta(run)
    assert meta.recipe["optimizer"] == "adam" and meta.model_kwargs == TINY
    model, _ = load_checkpoint(run)
    assert isinstance(model, H2ASeg)
    out = tmp_path / "tamw.json"
    assert main(["tamw-weights", str(run), str(cache.root), "--patches", "4", "--batch-size", "2", "--device", "cpu",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["level"] for r in report["levels"]] == [1, 2, 3, 4] and report["levels"][0]["samples"] == 4
    assert main(["tamw-weights", str(run), str(cache.root), "--split", "nope", "--device", "cpu"]) == 2


def test_seed_metric_convention_dice_and_hd95_on_positive_studies_only():
    # H2ASeg reports Dice and HD95 over lesion-positive studies, precision and recall as usual: the default
    # evaluation does exactly that (NaN, hence excluded from means, on lesion-free studies).
    ref = np.zeros((8, 8, 8), bool)
    pred = np.zeros_like(ref)
    pred[2:4, 2:4, 2:4] = True  # a false positive on a lesion-free study
    row, _ = evaluate_case(pred, ref, (2.0, 2.0, 2.0))
    assert not row["positive"] and math.isnan(row["dice"]) and math.isnan(row["hd95_mm"])
    assert row["precision"] == 0.0 and row["fpv_ml"] == pytest.approx(8 * 8 / 1000)
    ref[2:4, 2:4, 2:5] = True
    row, _ = evaluate_case(pred, ref, (2.0, 2.0, 2.0))
    assert row["dice"] == pytest.approx(2 * 8 / 20) and row["hd95_mm"] == pytest.approx(2.0)
    assert row["precision"] == 1.0 and row["recall"] == pytest.approx(8 / 12)


def test_paper_layout_puts_mcsa_after_every_level_and_release_layout_stays_an_option():
    from unipet.models.h2aseg import MCSA

    paper = create("h2aseg", patch_size=(16, 32, 32), widths=[2, 4, 4, 8, 8], window=[1, 2, 2])
    assert sorted(paper.interactions) == ["1", "2", "3", "4", "5"]
    assert all(isinstance(m, MCSA) for m in paper.interactions.values())
    release = _tiny()
    assert sorted(release.interactions) == ["2", "3", "4", "5"] and not isinstance(release.interactions["4"], MCSA)
    with pytest.raises(ConfigError, match="multiples"):  # level 5 needs 16 x window
        create("h2aseg", patch_size=PATCH, widths=[2, 4, 4, 8, 8], window=[2, 2, 2])
    with pytest.raises(ConfigError, match="layout"):
        create("h2aseg", patch_size=PATCH, **{**TINY, "layout": "mine"})
    x = torch.randn(1, 2, 16, 32, 32)
    x2 = x.clone()
    x2[:, 1, :2, :2, :2] += 1.0  # a PET change in one corner
    with torch.no_grad():
        a, b = paper.eval().encode(x), paper.encode(x2)
    assert (a[0][0] - b[0][0]).abs().max() > 0  # level 1: CT features read PET (MCSA at full resolution)


def test_sigmoid_heads_train_with_bce_and_dice_per_output():
    import torch.nn.functional as F

    from unipet.train.losses import SegmentationLoss

    torch.manual_seed(0)
    model = create("h2aseg", patch_size=(16, 32, 32), widths=[2, 4, 4, 8, 8], window=[1, 2, 2])
    assert model.output_activation == "sigmoid" and model.out_channels == 1
    model.train()
    model.set_deep_supervision(True)
    x = torch.randn(2, 2, 16, 32, 32)
    outs = model(x)
    assert len(outs) == 5 and all(o.shape == (2, 1, 16, 32, 32) for o in outs)
    target = torch.zeros(2, 16, 32, 32, dtype=torch.long)
    target[:, 4:10, 8:20, 8:20] = 1
    loss_fn = SegmentationLoss(model.output_activation, ds_weights=model.deep_supervision_weights)
    loss, _ = loss_fn(outs, target)
    per_output = [F.binary_cross_entropy_with_logits(o[:, 0], target.float()) for o in outs]
    assert float(loss.detach()) > sum(w * float(b.detach()) for w, b in zip(model.deep_supervision_weights(5),
                                                                            per_output))  # BCE + Dice
    loss.backward()
    assert all(p.grad is not None for p in model.heads.parameters())
    model.eval()
    with torch.no_grad():  # TAMW's foreground probability is the sigmoid of the coarse logit
        fusion = model.fusions[0]
        feats = torch.ones(1, fusion.fore[0].in_features, 2, 2, 2)
        _, _, f_fore, _ = fusion.weights(feats, torch.full((1, 1, 1, 1, 1), 2.0))
    torch.testing.assert_close(f_fore, feats * torch.sigmoid(torch.tensor(2.0)))


def test_attention_scale_is_one_over_sqrt_of_the_query_key_width():
    from unipet.models.h2aseg import DirectedAttention

    torch.manual_seed(0)
    att = DirectedAttention(channels=8, qk_channels=2).eval()
    target, source = torch.randn(1, 8, 2, 3, 2), torch.randn(1, 8, 2, 3, 2)
    t = att.target_proj(target).flatten(2)[0].T  # [N, 3qk + C]
    s = att.source_proj(source).flatten(2)[0].T
    q_self, k_self, q_cross, v_self = t.split([2, 2, 2, 8], dim=1)
    k_cross, v_cross = s.split([2, 8], dim=1)

    def attend(q, k, v):  # the release's formula: softmax(Q K^T / sqrt(C // channel_scale)) V, written out
        return torch.softmax(q @ k.T / math.sqrt(2), dim=-1) @ v

    both = torch.cat((attend(q_self, k_self, v_self), attend(q_cross, k_cross, v_cross)), dim=1)
    expected = att.fuse(both.T.reshape(1, 16, 2, 3, 2))
    torch.testing.assert_close(att(target, source), expected, rtol=1e-5, atol=1e-5)
