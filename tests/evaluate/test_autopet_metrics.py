"""autoPET FPV / FNV: constructed cases where 6-, 18- and 26-connectivity disagree, and a brute-force oracle."""
from __future__ import annotations

import math

import cc3d
import numpy as np
import pytest

from unipet.evaluate.autopet import autopet_metrics, false_negative_volume, false_positive_volume

SPACING = (2.0, 1.0, 1.5)  # 3 mm³ = 0.003 mL per voxel
VOX_ML = 0.003


def blobs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """B: a cube; C: two voxels touching B along an edge only (18-, not 6-connected);
    D: one voxel touching B at a corner only (26-, not 18-connected)."""
    b = np.zeros((10, 10, 10), np.uint8)
    b[2:5, 2:5, 2:5] = 1
    c = np.zeros_like(b)
    c[5, 5, 3] = c[5, 5, 2] = 1
    d = np.zeros_like(b)
    d[1, 1, 1] = 1
    return b, c, d


@pytest.mark.parametrize("connectivity, expected_voxels", [(6, 3), (18, 1), (26, 0)])
def test_fpv_depends_on_connectivity(connectivity, expected_voxels):
    b, c, d = blobs()
    pred = b | c | d
    fpv = false_positive_volume(pred, b, SPACING, connectivity)
    assert fpv == pytest.approx(expected_voxels * VOX_ML)


@pytest.mark.parametrize("connectivity, expected_voxels", [(6, 3), (18, 1), (26, 0)])
def test_fnv_depends_on_connectivity(connectivity, expected_voxels):
    b, c, d = blobs()
    ref = b | c | d
    fnv = false_negative_volume(b, ref, SPACING, connectivity)
    assert fnv == pytest.approx(expected_voxels * VOX_ML)


def test_default_connectivity_is_autopets_18():
    b, c, d = blobs()
    assert autopet_metrics(b | c | d, b, SPACING)["fpv_ml"] == pytest.approx(1 * VOX_ML)


def test_touching_by_one_voxel_counts_the_whole_component():
    ref = np.zeros((10, 10, 20), np.uint8)
    ref[2:6, 2:6, 2:6] = 1  # 64 voxels
    pred = np.zeros_like(ref)
    pred[2:6, 2:6, 5:15] = 1  # 160 voxels, 16 of them on the reference
    out = autopet_metrics(pred, ref, (1, 1, 1))
    assert out == {"fpv_ml": 0.0, "fnv_ml": 0.0}


def test_lesion_free_study_is_scored_on_fpv_only():
    ref = np.zeros((8, 8, 8), np.uint8)
    pred = np.zeros_like(ref)
    pred[1:3, 1:3, 1:3] = 1
    out = autopet_metrics(pred, ref, (4.0, 4.0, 4.0))
    assert out["fpv_ml"] == pytest.approx(8 * 0.064)
    assert math.isnan(out["fnv_ml"])
    assert autopet_metrics(ref, ref, (1, 1, 1))["fpv_ml"] == 0.0


def test_empty_prediction_misses_every_lesion():
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[1:3, 1:3, 1:3] = 1
    ref[6:9, 6:9, 6:9] = 1
    out = autopet_metrics(np.zeros_like(ref), ref, (1, 1, 1))
    assert out["fpv_ml"] == 0.0 and out["fnv_ml"] == pytest.approx((8 + 27) / 1000)


def _challenge_loop(pred, ref, spacing, connectivity):
    """The challenge's per-component loop, written out as an oracle."""
    vox = np.prod(spacing) / 1000
    fp = 0
    labels = cc3d.connected_components(pred.astype(np.uint8), connectivity=connectivity)
    for idx in range(1, labels.max() + 1):
        comp = labels == idx
        if (comp & (ref > 0)).sum() == 0:
            fp += comp.sum()
    fn = 0
    labels = cc3d.connected_components(ref.astype(np.uint8), connectivity=connectivity)
    for idx in range(1, labels.max() + 1):
        comp = labels == idx
        if (comp & (pred > 0)).sum() == 0:
            fn += comp.sum()
    return fp * vox, fn * vox


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_matches_the_challenge_loop_on_random_blobs(rng, connectivity):
    for _ in range(3):
        pred = (rng.random((16, 16, 16)) > 0.8).astype(np.uint8)
        ref = (rng.random((16, 16, 16)) > 0.85).astype(np.uint8)
        fp, fn = _challenge_loop(pred, ref, SPACING, connectivity)
        out = autopet_metrics(pred, ref, SPACING, connectivity)
        assert out["fpv_ml"] == pytest.approx(fp) and out["fnv_ml"] == pytest.approx(fn)
        assert fp > 0 and fn > 0  # the random case exercises both sides
