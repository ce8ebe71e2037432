"""The anatomy-guided model: shapes on any divisible patch, organ fractions and geometry, the Mamba prompt
encoder (forward / backward on CPU), hypernet cross-attention (prompt-dependent projections, absent organs
masked), the ablation without prompts, the decoder scope, and training + prediction through the engine."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _anatomy_data import TINY, write_cohort
from unipet.errors import ConfigError, ImageGeometryError, MissingInputError
from unipet.models import create
from unipet.models.anatomy import (
    ENCODER_PREFIXES,
    HyperCrossAttention,
    OrganPromptEncoder,
    organ_geometry,
)
from unipet.models.blocks import organ_fractions

PATCH = (16, 32, 32)


def _model(**kw):
    torch.manual_seed(0)
    return create("anatomy", patch_size=PATCH, **{**TINY, **kw})


def _organs(shape=(2, *PATCH), seed=0):
    g = torch.Generator().manual_seed(seed)
    organs = torch.full(shape, 2, dtype=torch.long)
    organs[:, :, :, :4] = 0
    organs[:, 4:10, 8:20, 10:24] = 13
    organs[0, 2:6, 20:28, 4:10] = torch.randint(17, 19, (4, 8, 6), generator=g)
    return organs


def test_forward_shapes_deep_supervision_and_any_divisible_patch():
    model = _model()
    assert model.requires == ("organs",) and model.config["kwargs"]["widths"] == TINY["widths"]
    x = torch.randn(2, 2, *PATCH)
    model.eval()
    assert model(x, organs=_organs()).shape == (2, 2, *PATCH)
    model.train()
    model.set_deep_supervision(True)
    outs = model(x, organs=_organs())
    assert [tuple(o.shape[2:]) for o in outs] == [PATCH, (8, 16, 16), (4, 8, 8)]
    model.eval()
    other = (8, 48, 24)  # any size divisible by the total stride (4, 8, 8) works
    assert model(torch.randn(1, 2, *other), organs=torch.zeros(1, *other, dtype=torch.long)).shape == (1, 2, *other)
    with pytest.raises(ImageGeometryError):
        model(torch.randn(1, 2, 10, 32, 32), organs=torch.zeros(1, 10, 32, 32, dtype=torch.long))
    with pytest.raises(MissingInputError):
        model(x)
    with pytest.raises(ConfigError):
        model(x, organs=torch.full((2, *PATCH), 40))
    with pytest.raises(ConfigError):
        create("anatomy", in_channels=1, patch_size=PATCH, **TINY)


def test_organ_fractions_equal_pooled_one_hot_and_geometry_of_a_box():
    organs = _organs()
    fr = organ_fractions(organs, 38, (4, 8, 8))
    ref = F.avg_pool3d(F.one_hot(organs, 38).permute(0, 4, 1, 2, 3).float(), (4, 8, 8))
    assert torch.allclose(fr, ref, atol=1e-6) and torch.allclose(fr.sum(1), torch.ones(2, 4, 4, 4))
    box = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    box[0, 0:4, 4:8, 2:6] = 5  # z in the first half, y in the second half, x centred
    geo = organ_geometry(organ_fractions(box, 6, (1, 1, 1)))
    share, cz, cy, cx = geo[0, 5, :4].tolist()
    assert share == pytest.approx(64 / 512)
    coords = torch.linspace(-1, 1, 8)
    assert cz == pytest.approx(float(coords[:4].mean()), abs=1e-6)
    assert cy == pytest.approx(float(coords[4:].mean()), abs=1e-6) and cx == pytest.approx(0.0, abs=1e-6)
    assert geo[0, 5, 4] == pytest.approx(float(coords[:4].std(unbiased=False)), abs=1e-5)
    assert torch.all(geo[0, 1] == 0)  # absent organ


def test_mamba_prompt_encoder_forward_backward_on_cpu():
    torch.manual_seed(0)
    enc = OrganPromptEncoder(38, feature_channels=8, dim=16, layers=2, state=4)
    organs = _organs()
    fine = organ_fractions(organs, 38, (4, 8, 8))
    coarse = F.avg_pool3d(fine, (1, 2, 2))
    feats = torch.randn(2, 8, *coarse.shape[2:], requires_grad=True)
    tokens, present = enc(fine, coarse, feats)
    assert tokens.shape == (2, 39, 16) and present.shape == (2, 39)
    assert present[:, 0].all() and present[0, 1 + 13] and not present[1, 1 + 17] and present[0, 1 + 17]
    tokens.square().mean().backward()
    ssm_grads = [p.grad for n, p in enc.named_parameters() if n.startswith("ssm.")]
    assert ssm_grads and all(g is not None and torch.isfinite(g).all() for g in ssm_grads)
    assert any(float(g.abs().sum()) > 0 for g in ssm_grads) and float(feats.grad.abs().sum()) > 0
    # the selective scan mixes tokens: an organ that is in view changes the prompt of another organ (liver, 13)
    fine2 = fine.clone()
    fine2[0, 17] = 0
    fine2[0, 2] += fine[0, 17]
    tokens2, _ = enc(fine2, F.avg_pool3d(fine2, (1, 2, 2)), feats)
    assert not torch.equal(tokens2[0, 1 + 13], tokens[0, 1 + 13])


def test_hypernet_cross_attention_projections_depend_on_the_prompt_and_absent_organs_are_masked():
    torch.manual_seed(0)
    att = HyperCrossAttention(channels=8, prompt_dim=6, heads=2, rank=2, hidden=16)
    p1, p2 = torch.randn(1, 6), torch.randn(1, 6)
    w1, w2 = att.projection_matrices(p1), att.projection_matrices(p2)
    for name in ("q", "k", "v"):
        assert w1[name].shape == ((1, 8, 8) if name == "q" else (1, 6, 8))
        assert (w1[name] - w2[name]).abs().max() > 1e-6, name
    assert torch.equal(att.projection_matrices(p1)["q"], w1["q"])
    x = torch.randn(1, 8, 2, 2, 2)
    tokens = torch.randn(1, 4, 6)
    present = torch.tensor([[True, True, False, True]])
    fractions = torch.rand(1, 3, 2, 2, 2)
    out = att(x, tokens, present, fractions)
    assert out.shape == x.shape and not torch.allclose(out, x)
    # an absent organ's token is masked out of the attention *and* of the prompt embedding
    changed = tokens.clone()
    changed[0, 2] += 5.0
    assert torch.allclose(att(x, changed, present, fractions), out, atol=1e-6)
    changed[0, 1] += 5.0
    assert not torch.allclose(att(x, changed, present, fractions), out, atol=1e-4)


def test_organ_prompt_changes_the_output_and_the_ablation_needs_no_organs():
    model = _model().eval()
    x = torch.randn(1, 2, *PATCH)
    a = model(x, organs=_organs((1, *PATCH)))
    b = model(x, organs=torch.full((1, *PATCH), 2, dtype=torch.long))
    assert not torch.allclose(a, b)
    plain = _model(anatomy=False).eval()
    assert plain.requires == () and "organs" not in plain.accepts
    assert plain(x).shape == (1, 2, *PATCH)
    names_plain = {n for n, _ in plain.named_parameters()}
    names = {n for n, _ in model.named_parameters()}
    assert names_plain < names and all(n.startswith(("prompt_encoder.", "cross_attention.")) for n in names - names_plain)


def test_decoder_scope_freezes_the_encoders():
    model = _model()
    assert model.trainable_scopes() == ("all", "decoder")
    decoder = model.scope_parameters("decoder")
    names = {n for n, _ in model.named_parameters()}
    assert decoder == {n for n in names if not n.startswith(ENCODER_PREFIXES)}
    assert any(n.startswith("prompt_encoder.") for n in decoder) and any(n.startswith("ct_encoder.") for n in names)
    with pytest.raises(ConfigError):
        model.scope_parameters("peft")


def test_trains_with_organ_maps_and_predicts_through_the_engine(tmp_path):
    from unipet.data.cache import build_cache
    from unipet.infer.predictor import Predictor
    from unipet.train import train
    from unipet.checkpoint import load_checkpoint

    cache = build_cache(write_cohort(tmp_path / "cohort", n=3), tmp_path / "cache")
    assert cache.load("s0").organs is not None
    result = train(cache, "anatomy", tmp_path / "run", model_kw=TINY, recipe="anatomy", iterations=3,
                   patch_size=PATCH, batch_size=2, workers=0, device="cpu", progress=False, tensorboard=False)
    assert len(result.losses) == 3 and all(np.isfinite(result.losses))
    model, meta = load_checkpoint(tmp_path / "run")
    assert meta.recipe["name"] == "anatomy" and meta.model_kwargs == TINY
    case = cache.load("s1", mmap=False)
    predictor = Predictor(model, meta, device="cpu")
    prob = predictor.probabilities(case.image, None, case.organs)
    assert prob.shape == (2, *case.image.shape[1:]) and torch.allclose(prob.sum(0), torch.ones(1), atol=1e-5)
    with pytest.raises(MissingInputError):
        predictor.probabilities(case.image, None, None)
