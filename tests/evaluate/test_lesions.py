"""Lesion-wise detection: both matching rules, split/merged lesions, connectivity and size bins."""
from __future__ import annotations

import math

import numpy as np
import pytest

from unipet.errors import ConfigError
from unipet.evaluate.lesions import match_lesions, size_bin_labels, size_bin_of

ISO = (1.0, 1.0, 1.0)


def box(mask, lo, hi):
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
    return mask


def scene():
    """Reference: lesion 1 (3×3×3 at the origin side) and lesion 2 (2×2×2).
    Prediction: a component grazing lesion 1 (IoU 9/45 = 0.2), an exact copy of lesion 2, and a false positive."""
    ref = np.zeros((12, 12, 12), np.uint8)
    box(ref, (1, 1, 1), (4, 4, 4))
    box(ref, (8, 8, 8), (10, 10, 10))
    pred = np.zeros_like(ref)
    box(pred, (1, 1, 3), (4, 4, 6))  # shares one 3×3 plane (9 voxels) with lesion 1; 27 voxels
    box(pred, (8, 8, 8), (10, 10, 10))
    box(pred, (1, 9, 9), (2, 10, 10))  # 1 voxel, touches nothing
    return pred, ref


def test_overlap_rule():
    pred, ref = scene()
    det = match_lesions(pred, ref, ISO, rule="overlap")
    assert (det.n_ref, det.n_pred, det.detected, det.true_positive_pred) == (2, 3, 2, 2)
    assert det.sensitivity == 1.0 and det.precision == pytest.approx(2 / 3)
    assert det.f1 == pytest.approx(2 * (2 / 3) / (1 + 2 / 3))
    first, second = det.lesions
    assert first["detected"] and first["dice"] == pytest.approx(2 * 9 / 54)
    assert first["best_iou"] == pytest.approx(9 / 45)
    assert second["dice"] == 1.0 and second["best_iou"] == 1.0


def test_iou_rule_rejects_the_grazing_match():
    pred, ref = scene()
    det = match_lesions(pred, ref, ISO, rule="iou", iou_threshold=0.5)
    assert det.detected == 1 and det.true_positive_pred == 1
    assert det.sensitivity == 0.5 and det.precision == pytest.approx(1 / 3)
    assert det.lesions[0]["detected"] is False and det.lesions[0]["dice"] == 0.0
    assert det.lesions[0]["best_iou"] == pytest.approx(0.2)  # reported although not a match
    # a low threshold accepts it again
    assert match_lesions(pred, ref, ISO, rule="iou", iou_threshold=0.2).detected == 2


def test_split_and_merged_lesions_are_counted_from_each_side():
    ref = np.zeros((10, 10, 20), np.uint8)
    box(ref, (2, 2, 2), (5, 5, 12))  # one elongated lesion, 90 voxels
    pred = np.zeros_like(ref)
    box(pred, (2, 2, 2), (5, 5, 6))  # two parts of it
    box(pred, (2, 2, 8), (5, 5, 12))
    det = match_lesions(pred, ref, ISO)
    assert det.detected == 1 and det.true_positive_pred == 2 and det.precision == 1.0
    assert det.lesions[0]["dice"] == pytest.approx(2 * 72 / (90 + 72))  # Dice with the union of its matches
    merged = match_lesions(ref, pred, ISO)  # roles swapped: two lesions, one blob
    assert merged.detected == 2 and merged.true_positive_pred == 1 and merged.sensitivity == 1.0


def test_touching_lesions_depend_on_connectivity():
    ref = np.zeros((8, 8, 8), np.uint8)
    box(ref, (1, 1, 1), (3, 3, 3))
    box(ref, (3, 3, 1), (5, 5, 3))  # touches the first only along an edge
    assert match_lesions(ref, ref, ISO, connectivity=6).n_ref == 2
    assert match_lesions(ref, ref, ISO, connectivity=18).n_ref == 1
    assert match_lesions(ref, ref, ISO).connectivity == 18


def test_empty_cases():
    ref = np.zeros((6, 6, 6), np.uint8)
    pred = box(np.zeros_like(ref), (1, 1, 1), (2, 2, 2))
    negative = match_lesions(pred, ref, ISO)
    assert math.isnan(negative.sensitivity) and negative.precision == 0.0 and math.isnan(negative.f1)
    missed = match_lesions(ref, pred, ISO)
    assert missed.sensitivity == 0.0 and math.isnan(missed.precision) and missed.f1 == 0.0


def test_sensitivity_by_size_bin_in_ml():
    spacing = (2.0, 2.0, 2.0)  # 0.008 mL per voxel
    ref = np.zeros((40, 40, 40), np.uint8)
    box(ref, (1, 1, 1), (5, 5, 5))  # 64 voxels = 0.512 mL  -> <1
    box(ref, (10, 10, 10), (17, 17, 17))  # 343 voxels = 2.744 mL -> 1-5
    box(ref, (20, 20, 20), (35, 35, 35))  # 3375 voxels = 27 mL -> >20
    pred = np.zeros_like(ref)
    box(pred, (10, 10, 10), (12, 12, 12))
    box(pred, (20, 20, 20), (22, 22, 22))
    det = match_lesions(pred, ref, spacing)
    assert det.by_size["<1"] == {"n": 1, "detected": 0, "sensitivity": 0.0}
    assert det.by_size["1-5"]["sensitivity"] == 1.0 and det.by_size[">20"]["sensitivity"] == 1.0
    assert det.by_size["5-20"]["n"] == 0 and math.isnan(det.by_size["5-20"]["sensitivity"])
    assert [les["size_bin"] for les in det.lesions] == ["<1", "1-5", ">20"]
    assert det.lesions[2]["volume_ml"] == pytest.approx(27.0)
    custom = match_lesions(pred, ref, spacing, size_bins_ml=(0.5, 3))
    assert list(custom.by_size) == ["<0.5", "0.5-3", ">3"]
    assert custom.by_size["0.5-3"]["n"] == 2


def test_size_bin_edges_and_errors():
    assert size_bin_labels((1, 5, 20)) == ["<1", "1-5", "5-20", ">20"]
    assert size_bin_of(5.0, (1, 5, 20)) == "5-20" and size_bin_of(0.99, (1, 5, 20)) == "<1"
    for bad in ((5, 1), (), (0, 1)):
        with pytest.raises(ConfigError):
            size_bin_labels(bad)
    with pytest.raises(ConfigError, match="matching rule"):
        match_lesions(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), ISO, rule="hungarian")
    with pytest.raises(ConfigError, match="IoU threshold"):
        match_lesions(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), ISO, rule="iou", iou_threshold=0)
    with pytest.raises(ConfigError, match="connectivity"):
        match_lesions(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), ISO, connectivity=8)
