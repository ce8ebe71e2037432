"""Orientation: every one of the 48 axis orders / flips of a study gives the same mask, on the input's exact grid.

The network is a tiny randomly initialised nnU-Net (``unipet.models.create``): it is not equivariant to flips or
axis permutations, so the masks agree only because the predictor brings every input to the checkpoint's
orientation (RAS) first and puts the mask back on the input grid after.
"""
from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
import torch

from _synthetic import tiny_study
from unipet.data.preprocess import (PreprocessConfig, axcodes, obliquity_deg, preprocess_study, reorient_volume,
                                    restore_to_study_grid)
from unipet.errors import ConfigError
from unipet.infer import Predictor
from unipet.models import create
from unipet.study import Study, index_to_world_zyx, make_affine

_REVERSE = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
NORM = {"CT": {"scheme": "ct-window", "level": 0.0, "width": 1800.0}, "PET": {"scheme": "suv-clip", "clip": 20.0}}
PATCH = (16, 16, 16)


def _transform(volume: np.ndarray, perm, flips):
    """Transpose a ``(z, y, x)`` array by ``perm`` then flip the new axes in ``flips``; also returns the 4x4 map
    from the new ``(z, y, x, 1)`` index to the old one (written out by hand, independent of nibabel)."""
    out = np.transpose(volume, perm)
    m = np.zeros((4, 4))
    m[3, 3] = 1.0
    for k in range(3):
        if flips[k]:
            out = np.flip(out, k)
            m[perm[k], k] = -1.0
            m[perm[k], 3] = out.shape[k] - 1
        else:
            m[perm[k], k] = 1.0
    return np.ascontiguousarray(out), m


def _untransform(volume: np.ndarray, perm, flips) -> np.ndarray:
    for k in range(3):
        if flips[k]:
            volume = np.flip(volume, k)
    return np.ascontiguousarray(np.transpose(volume, np.argsort(perm)))


def _variant(study: Study, perm, flips) -> Study:
    arrays = {}
    for name in ("pet", "ct", "label"):
        arrays[name], m = _transform(getattr(study, name), perm, flips)
    affine = index_to_world_zyx(study.affine) @ m @ _REVERSE
    return Study(study_id="v", pet=arrays["pet"], ct=arrays["ct"], label=arrays["label"], affine=affine, task=None)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.manual_seed(3)
    model = create("nnunet", in_channels=2, num_classes=2, tasks=["lymphoma"], patch_size=PATCH, base_channels=4,
                   max_channels=8, max_stages=3)
    model.set_deep_supervision(False)
    cfg = PreprocessConfig(channels=("CT", "PET"), normalisation=NORM, crop_to_body=True)
    meta = {"preprocess": cfg.to_dict(), "patch_size": list(PATCH),
            "model": {"tasks": model.config["tasks"], "patch_size": list(PATCH), "num_classes": 2}}
    return Predictor(model, meta, device="cpu", overlap=0.25, tile_batch=4)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = a.sum() + b.sum()
    return 1.0 if denom == 0 else float(2 * (a & b).sum() / denom)


def test_48_orientations_give_the_same_mask_on_the_input_grid(predictor):
    study = tiny_study(0, shape=(14, 18, 20), spacing=(3.0, 2.0, 1.5))
    reference = predictor.predict_study(study, task=None).mask > 0
    assert 0 < reference.sum() < reference.size  # a mask with something in it, not everything
    codes, dices, raw_dices = set(), [], []
    for perm in itertools.permutations(range(3)):
        for flips in itertools.product((False, True), repeat=3):
            v = _variant(study, perm, flips)
            codes.add(axcodes(v.affine))
            pred = predictor.predict_study(v, task=None)
            assert pred.mask.shape == v.shape  # the input's exact grid
            dices.append(_dice(_untransform(pred.mask > 0, perm, flips), reference))
            # control: the same network on the raw, un-reoriented arrays sees another image
            raw = predictor.segment(preprocess_study(v, PreprocessConfig(
                channels=("CT", "PET"), normalisation=NORM, orientation=axcodes(v.affine))).image)
            raw_dices.append(raw.astype(bool).sum())
    assert len(codes) == 48
    assert min(dices) >= 0.99, dices
    assert len(set(raw_dices)) > 1  # without reorientation the masks differ: the test can fail


def test_reorientation_round_trip_keeps_voxels_and_world_positions():
    study = tiny_study(1, shape=(6, 7, 9), spacing=(3.0, 2.0, 1.5))
    study.pet[4, 5, 2] = 30.0  # one unique hottest voxel
    for codes in ("LPS", "RAI", "PSR", "SLA"):
        out, affine = reorient_volume(study.pet, study.affine, codes)
        assert axcodes(affine) == codes
        # the hottest voxel is at the same world position
        src = np.unravel_index(np.argmax(study.pet), study.pet.shape)
        dst = np.unravel_index(np.argmax(out), out.shape)
        w_src = index_to_world_zyx(study.affine) @ np.array([*src, 1.0])
        w_dst = index_to_world_zyx(affine) @ np.array([*dst, 1.0])
        np.testing.assert_allclose(w_src, w_dst, atol=1e-6)
        back, back_affine = reorient_volume(out, affine, "RAS")
        np.testing.assert_array_equal(back, study.pet)
        np.testing.assert_allclose(back_affine, study.affine, atol=1e-9)


def test_preprocess_restores_the_label_on_a_permuted_input():
    study = tiny_study(2, shape=(10, 12, 14))
    v = _variant(study, (2, 0, 1), (True, False, True))
    cfg = PreprocessConfig(channels=("CT", "PET"), normalisation=NORM, target_spacing=(2.0, 2.0, 2.0))
    pre = preprocess_study(v, cfg)
    assert axcodes(pre.affine) == "RAS"
    back = restore_to_study_grid(pre.label, pre)
    assert back.shape == v.shape
    assert _dice(back > 0, v.label > 0) > 0.6  # resampled to 2 mm and back


def test_oblique_header_is_reoriented_with_a_warning(predictor, caplog):
    study = tiny_study(3, shape=(12, 16, 18))
    angle = np.radians(10.0)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    oblique = Study(study_id="obl", pet=study.pet, ct=study.ct, affine=rot @ study.affine, task=None)
    assert obliquity_deg(oblique.affine) == pytest.approx(10.0, abs=1e-6)
    with caplog.at_level(logging.WARNING, logger="unipet"):
        pred = predictor.predict_study(oblique, task=None)
    assert pred.mask.shape == oblique.shape
    assert any("oblique" in r.getMessage() and "10.0 degrees" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="unipet"):
        predictor.predict_study(study, task=None)
    assert not any("oblique" in r.getMessage() for r in caplog.records)


def test_orientation_is_recorded_and_defaults_to_ras():
    cfg = PreprocessConfig(normalisation=NORM)
    assert cfg.to_dict()["orientation"] == "RAS"
    old = {k: v for k, v in cfg.to_dict().items() if k != "orientation"}  # caches/checkpoints before the field
    assert PreprocessConfig.from_dict(old).orientation == "RAS"
    assert PreprocessConfig.from_dict({**old, "orientation": "lps"}).orientation == "LPS"
    with pytest.raises(ConfigError, match="axis codes"):
        PreprocessConfig(normalisation=NORM, orientation="RAR")
    assert axcodes(make_affine((2.0, 2.0, 2.0))) == "RAS"
