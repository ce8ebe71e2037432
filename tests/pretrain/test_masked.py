"""Cross-modal pre-training: masking ratio, reconstruction loss on masked voxels only, the alignment loss and its
metrics, the loop (encoder checkpoint, exact resume, `unipet pretrain`) and `unipet train --init` from it."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from _anatomy_data import TINY, write_cohort
from unipet.cli import main
from unipet.errors import ConfigError, OutputExistsError
from unipet.pretrain import PretrainConfig, evaluate_pretrainer, pretrain
from unipet.pretrain.align import alignment_loss, alignment_metrics, body_locations
from unipet.pretrain.loop import build_pretrainer
from unipet.pretrain.masked import apply_mask, expand_mask, masked_mse, random_cell_mask

PATCH = [16, 32, 32]
CFG = PretrainConfig(widths=TINY["widths"], depths=TINY["depths"], patch_size=PATCH, iterations=4, batch_size=2,
                     workers=0, lr=3e-3, warmup_iterations=0, checkpoint_every=2, proj_dim=8, decoder_width=4,
                     amp="none")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from unipet.data.cache import build_cache

    tmp = tmp_path_factory.mktemp("pre")
    return build_cache(write_cohort(tmp / "cohort", n=3), tmp / "cache")


def test_mask_ratio_and_expansion():
    g = torch.Generator().manual_seed(0)
    mask = random_cell_mask(3, (4, 4, 4), 0.6, g)
    assert mask.shape == (3, 4, 4, 4) and mask.flatten(1).sum(1).tolist() == [38, 38, 38]  # round(0.6 * 64)
    assert not torch.equal(mask[0], mask[1])  # independent per sample
    vox = expand_mask(mask, (4, 8, 8))
    assert vox.shape == (3, 1, 16, 32, 32) and float(vox.float().mean()) == pytest.approx(38 / 64)
    assert torch.equal(vox[:, 0, ::4, ::8, ::8], mask)
    x = torch.randn(3, 1, 16, 32, 32)
    token = torch.tensor(7.0)
    masked = apply_mask(x, vox, token)
    assert torch.all(masked[vox] == 7.0) and torch.equal(masked[~vox], x[~vox])
    with pytest.raises(ConfigError):
        random_cell_mask(1, (2, 2, 2), 1.0)


def test_reconstruction_loss_counts_masked_voxels_only():
    target = torch.zeros(1, 1, 4, 4, 4)
    mask = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    mask[..., :2, :, :] = True
    pred = target.clone()
    pred[..., 2:, :, :] = 10.0  # wrong only where nothing is masked
    assert float(masked_mse(pred, target, mask)) == 0.0
    pred[..., 0, :, :] = 2.0  # wrong on half of the masked voxels
    assert float(masked_mse(pred, target, mask)) == pytest.approx(4.0 / 2)
    # through the pre-training module: no gradient reaches the reconstruction of unmasked voxels
    torch.manual_seed(0)
    model = build_pretrainer(CFG)
    x = torch.randn(1, 2, *PATCH)
    model.ct_decoder.head.register_forward_hook(lambda m, i, o: o.retain_grad() or setattr(model, "_ct_out", o))
    out = model(x, torch.Generator().manual_seed(1))
    (out["mse_ct"]).backward()
    grad, m = model._ct_out.grad, out["mask"][:, :1]
    assert float(grad[~m].abs().max()) == 0.0 and float(grad[m].abs().max()) > 0
    assert float(m.float().mean()) == pytest.approx(round(0.6 * 32) / 32)  # 2 x 4 x 4 cells of (4, 8, 8)


def test_alignment_loss_and_metrics_on_a_toy_pair():
    torch.manual_seed(0)
    n, d = 64, 16
    latent = torch.randn(n, d)
    view_a, view_b = latent @ torch.randn(d, d), latent @ torch.randn(d, d) + 0.05 * torch.randn(n, d)
    head_a, head_b = torch.nn.Linear(d, 8), torch.nn.Linear(d, 8)
    opt = torch.optim.Adam([*head_a.parameters(), *head_b.parameters()], lr=1e-2)

    def embed():
        return F.normalize(head_a(view_a), dim=1), F.normalize(head_b(view_b), dim=1)

    za, zb = embed()
    before, metrics_before = float(alignment_loss(za, zb, 0.1).detach()), alignment_metrics(za, zb)
    for _ in range(60):
        za, zb = embed()
        loss = alignment_loss(za, zb, 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    za, zb = embed()
    after, metrics_after = float(alignment_loss(za, zb, 0.1).detach()), alignment_metrics(za, zb)
    assert after < 0.5 * before, (before, after)
    assert metrics_after["top1"] > metrics_before["top1"] + 0.3 and metrics_after["gap"] > metrics_before["gap"]
    same = alignment_metrics(za, za)
    assert same["top1"] == 1.0 and same["positive_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert float(alignment_loss(za[:0], zb[:0]).detach()) == 0.0


def test_body_locations():
    x = torch.full((1, 2, 8, 8, 8), -1.0)
    x[:, 1, :4] = 3.0  # PET uptake in the upper half only
    body = body_locations(x, (4, 4, 4), torch.tensor([-1.0, -1.0]))
    assert body.tolist() == [[True] * 4 + [False] * 4]
    assert body_locations(torch.full((1, 2, 8, 8, 8), -1.0), (4, 4, 4), torch.tensor([-1.0, -1.0])).all()


def test_loop_writes_an_encoder_checkpoint_resumes_exactly_and_initialises_the_anatomy_model(cache, tmp_path):
    from unipet.models import create
    from unipet.train import train

    full = pretrain(cache, tmp_path / "full", CFG, device="cpu", progress=False)
    assert full.iteration == 4 and len(full.logs) == 4
    meta = json.loads((tmp_path / "full" / "checkpoint" / "meta.json").read_text())
    assert meta["kind"] == "pretrain" and meta["complete"] and "model" not in meta
    assert meta["encoder"]["widths"] == TINY["widths"] and meta["channels"] == ["CT", "PET"]
    # a run killed after step 3 (last checkpoint at 2) and resumed equals the uninterrupted one
    def kill(it, logs):
        if it == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(cache, tmp_path / "part", CFG, device="cpu", progress=False, callbacks=[kill])
    with pytest.raises(OutputExistsError):
        pretrain(cache, tmp_path / "part", CFG, device="cpu", progress=False)
    resumed = pretrain(cache, tmp_path / "part", resume=True, iterations=4, device="cpu", progress=False)
    assert resumed.iteration == 4 and [l["loss"] for l in resumed.logs] == [l["loss"] for l in full.logs[2:]]
    a = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the encoder tensors carry the anatomy model's names and shapes
    model = create("anatomy", patch_size=PATCH, **TINY)
    state = model.state_dict()
    enc = {k: v for k, v in a.items() if k.startswith(("ct_encoder.", "pet_encoder."))}
    assert enc and all(k in state and state[k].shape == v.shape for k, v in enc.items())
    assert {k for k in state if k.startswith(("ct_encoder.", "pet_encoder."))} == set(enc)
    run = train(cache, "anatomy", tmp_path / "seg", model_kw=TINY, iterations=1, patch_size=PATCH, batch_size=1,
                workers=0, device="cpu", progress=False, tensorboard=False, init_from=tmp_path / "full",
                recipe="anatomy")
    seg_meta = json.loads((tmp_path / "seg" / "checkpoint" / "meta.json").read_text())
    assert seg_meta["init_from"]["loaded"] == len(enc)
    key = "pet_encoder.stages.2.0.conv1.weight"
    # one small step from the pre-trained tensor (not from a fresh initialisation)
    assert (run.model.state_dict()[key] - a[key]).abs().max() < 0.05 * a[key].abs().max() + 1e-3


def test_pretraining_improves_alignment_and_reconstruction(cache):
    torch.manual_seed(0)
    fresh = evaluate_pretrainer(build_pretrainer(CFG), cache, patches=4, patch_size=PATCH)
    cfg = CFG.with_overrides(iterations=25, checkpoint_every=100)
    trained = pretrain(cache, cache.root.parent / "improve", cfg, device="cpu", progress=False).model
    after = evaluate_pretrainer(trained, cache, patches=4, patch_size=PATCH)
    assert after["mse_ct"] < fresh["mse_ct"] and after["mse_pet"] < fresh["mse_pet"]
    assert after["align"] < fresh["align"] and after["gap"] > fresh["gap"]


def test_cli_pretrain(cache, tmp_path):
    args = ["pretrain", str(cache.root), "--out", str(tmp_path / "cli"), "--iterations", "2", "--patch", "16", "32",
            "32", "--batch", "1", "--widths", "4,8,8,8", "--depths", "1,1,1,1", "--workers", "0", "--device", "cpu",
            "--no-progress"]
    assert main(args) == 0
    meta = json.loads((tmp_path / "cli" / "checkpoint" / "meta.json").read_text())
    assert meta["iteration"] == 2 and meta["pretrain"]["widths"] == [4, 8, 8, 8]
    assert main(args) == 2  # the run exists: refused without --resume
    assert main(["pretrain", str(cache.root), "--out", str(tmp_path / "bad"), "--widths", "4,x"]) == 2


def test_config_holds_the_module_and_a_pretrain_recipe_and_reads_old_flat_settings():
    """PretrainConfig copies no Recipe field: the optimisation is a Recipe (the shipped ``pretrain`` one, fields
    overridden by keyword); runs written before recorded module and recipe fields side by side, still read."""
    from unipet.train.recipes import RECIPES

    assert PretrainConfig().recipe == RECIPES["pretrain"]
    assert CFG.recipe.iterations == 4 and CFG.recipe.lr == 3e-3 and CFG.recipe.optimizer == "adamw"
    assert PretrainConfig.from_dict(CFG.to_dict()) == CFG
    flat = {k: v for k, v in CFG.to_dict().items() if k != "recipe"}
    flat.update(iterations=4, batch_size=2, patch_size=PATCH, lr=3e-3, warmup_iterations=0, checkpoint_every=2,
                workers=0, amp="none")
    assert PretrainConfig.from_dict(flat) == CFG
    with pytest.raises(ConfigError):
        PretrainConfig.from_dict({**flat, "no_such_setting": 1})
