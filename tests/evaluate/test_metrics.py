"""Voxel and topology metrics, and the bootstrap aggregation, on hand-built volumes with known answers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from unipet.errors import ConfigError, ImageGeometryError
from unipet.evaluate.aggregate import aggregate, bootstrap_ci, format_ci, table1
from unipet.evaluate.metrics import (_skeleton_block, cldice, confusion, dice, hd95, iou, precision, recall, skeleton,
                                     voxel_metrics)


def cube(shape=(10, 10, 10), lo=(2, 2, 2), size=4) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    m[tuple(slice(a, a + size) for a in lo)] = 1
    return m


def tube(radius: float, x0: int = 5, x1: int = 55, shape=(21, 21, 60)) -> np.ndarray:
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    return ((z - 10) ** 2 + (y - 10) ** 2 <= radius ** 2) & (x >= x0) & (x < x1)


# ---------------------------------------------------------------------------------------------- voxel metrics
def test_shifted_cube_overlap_values():
    ref = cube()
    pred = cube(lo=(2, 2, 3))  # shifted by one voxel along x: 48 of 64 voxels overlap
    assert confusion(pred, ref) == (48, 16, 16)
    assert dice(pred, ref) == pytest.approx(96 / 128)
    assert iou(pred, ref) == pytest.approx(48 / 80)
    assert precision(pred, ref) == pytest.approx(0.75)
    assert recall(pred, ref) == pytest.approx(0.75)


def test_asymmetric_precision_recall():
    ref = cube(size=4)
    pred = cube(size=2)  # inside the reference
    assert precision(pred, ref) == 1.0
    assert recall(pred, ref) == pytest.approx(8 / 64)
    assert dice(pred, ref) == pytest.approx(16 / 72)


def test_empty_reference_rules():
    empty = np.zeros((10, 10, 10), np.uint8)
    pred = cube()
    assert math.isnan(dice(pred, empty)) and math.isnan(iou(pred, empty)) and math.isnan(recall(pred, empty))
    assert precision(pred, empty) == 0.0
    # both empty: Dice is NaN too (the study is scored by FPV), not a perfect 1
    assert math.isnan(dice(empty, empty)) and math.isnan(precision(empty, empty))
    assert math.isnan(hd95(pred, empty, (1, 1, 1))) and math.isnan(hd95(empty, empty, (1, 1, 1)))


def test_empty_prediction_rules():
    empty = np.zeros((10, 10, 10), np.uint8)
    ref = cube()
    assert dice(empty, ref) == 0.0 and iou(empty, ref) == 0.0 and recall(empty, ref) == 0.0
    assert math.isnan(precision(empty, ref))
    assert math.isnan(hd95(empty, ref, (1, 1, 1)))


def test_shape_mismatch_is_a_geometry_error():
    with pytest.raises(ImageGeometryError, match="resample"):
        dice(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))


def test_hd95_respects_anisotropic_spacing_per_axis():
    # A wide thin slab shifted by two slices: almost all surface points are 2 slices from the other surface.
    ref = np.zeros((12, 40, 40), bool)
    ref[3:6, 2:38, 2:38] = True
    pred = np.roll(ref, 2, axis=0)
    assert hd95(pred, ref, (3.0, 1.0, 1.0)) == pytest.approx(6.0)  # z spacing applies to the z shift
    assert hd95(pred, ref, (1.0, 1.0, 3.0)) == pytest.approx(2.0)  # x spacing does not
    assert hd95(ref, ref, (3.0, 1.0, 1.0)) == 0.0


@pytest.mark.slow  # importing MONAI, the oracle, takes several seconds on its own
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 2.0364, 2.0364)])
def test_hd95_reproduces_monai(rng, spacing):
    import torch
    from monai.metrics import compute_hausdorff_distance

    for density in (0.02, 0.3):
        pred = rng.random((14, 18, 20)) < density  # scattered voxels reaching the image border
        ref = np.zeros_like(pred)
        ref[3:11, 4:15, 2:19] = rng.random((8, 11, 17)) < 0.7
        expected = compute_hausdorff_distance(torch.from_numpy(pred[None, None].astype(np.float32)),
                                              torch.from_numpy(ref[None, None].astype(np.float32)),
                                              include_background=True, percentile=95, spacing=list(spacing))
        assert hd95(pred, ref, spacing) == pytest.approx(float(expected), rel=1e-5)


def test_voxel_metrics_volumes_in_ml():
    ref, pred = cube(), cube(lo=(2, 2, 3))
    out = voxel_metrics(pred, ref, (2.0, 1.0, 0.5))
    assert out["ref_ml"] == pytest.approx(64 * 1e-3) and out["pred_ml"] == pytest.approx(64 * 1e-3)
    assert out["dice"] == pytest.approx(0.75)
    assert out["hd95_mm"] == pytest.approx(0.5)  # the one-voxel shift is along x (0.5 mm)


# ---------------------------------------------------------------------------------------------- clDice
def test_skeleton_of_a_tube_is_its_axis():
    skel = skeleton(tube(5))
    idx = np.argwhere(skel)
    assert np.all(idx[:, 0] == 10) and np.all(idx[:, 1] == 10)  # on the axis only
    assert sorted(idx[:, 2]) == list(range(10, 50))  # the axis, shortened by the radius at each end


def test_per_component_skeleton_equals_whole_volume_skeleton(rng):
    mask = np.zeros((30, 30, 30), bool)
    mask[2:12, 3:20, 4:9] = True
    mask[14:25, 10:28, 12:26] = rng.random((11, 18, 14)) > 0.2  # irregular blob(s)
    whole = _skeleton_block(np.pad(mask, 1))[1:-1, 1:-1, 1:-1]
    assert np.array_equal(skeleton(mask), whole)
    assert np.all(mask[skeleton(mask)])  # the skeleton lies inside the object


def test_cldice_thin_tube_inside_thick_tube_is_perfect_topology():
    thick, thin = tube(5), tube(2)
    out = cldice(thin, thick)
    assert out["cldice"] == 1.0 and out["topology_precision"] == 1.0 and out["topology_sensitivity"] == 1.0
    assert dice(thin, thick) < 0.3  # voxel overlap is poor, topology is intact


def test_cldice_broken_tube_loses_the_gap_fraction():
    ref = tube(5)
    pred = ref.copy()
    pred[:, :, 25:35] = False  # 10 of the 40 axis voxels of the reference skeleton
    out = cldice(pred, ref)
    assert out["topology_precision"] == 1.0
    assert out["topology_sensitivity"] == pytest.approx(30 / 40)
    assert out["cldice"] == pytest.approx(2 * 0.75 / 1.75)


def test_cldice_empty_rules():
    empty = np.zeros((21, 21, 60), bool)
    assert math.isnan(cldice(tube(3), empty)["cldice"])
    out = cldice(empty, tube(3))
    assert out["cldice"] == 0.0 and math.isnan(out["topology_precision"]) and out["topology_sensitivity"] == 0.0


# ---------------------------------------------------------------------------------------------- aggregation
def test_bootstrap_ci_contains_mean_and_is_reproducible(rng):
    values = rng.normal(0.7, 0.1, size=200)
    a = bootstrap_ci(values, n_boot=2000, seed=3)
    b = bootstrap_ci(values, n_boot=2000, seed=3)
    c = bootstrap_ci(values, n_boot=2000, seed=4)
    assert a == b and a != c
    assert a["lo"] < a["mean"] < a["hi"]
    assert a["mean"] == pytest.approx(values.mean())
    # percentile bootstrap of a mean ≈ normal interval ±1.96·SE for n = 200
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert (a["hi"] - a["lo"]) / 2 == pytest.approx(half_width, rel=0.15)


def test_bootstrap_ci_excludes_and_counts_nans():
    out = bootstrap_ci([1.0, np.nan, 3.0, np.nan, 2.0], n_boot=200)
    assert out["n"] == 3 and out["n_nan"] == 2 and out["mean"] == pytest.approx(2.0)
    assert 1.0 <= out["lo"] <= out["hi"] <= 3.0
    none = bootstrap_ci([np.nan, np.nan])
    assert none["n"] == 0 and math.isnan(none["mean"])
    one = bootstrap_ci([0.4])
    assert one["lo"] == one["hi"] == one["mean"] == 0.4
    with pytest.raises(ConfigError):
        bootstrap_ci([1.0], n_boot=0)


def test_aggregate_per_task_and_table1_layout():
    frame = pd.DataFrame({
        "task": ["lung", "lung", "lymphoma", "lymphoma", None],
        "dice": [0.8, 0.6, 0.5, np.nan, 0.9],
        "iou": [0.7, 0.5, 0.4, np.nan, 0.8],
    })
    summary = aggregate(frame, ["dice", "iou"], n_boot=500, seed=1)
    assert set(summary["tasks"]) == {"lung", "lymphoma", "unassigned"}
    assert summary["tasks"]["lung"]["dice"]["mean"] == pytest.approx(0.7)
    assert summary["tasks"]["lymphoma"]["dice"]["n_nan"] == 1
    assert summary["overall"]["n_cases"] == 5 and summary["overall"]["dice"]["n"] == 4
    t1 = table1(summary)
    assert list(t1.index) == ["lung", "lymphoma", "unassigned", "overall"]
    assert list(t1.columns) == ["n", "DSC", "IoU"]
    lung = summary["tasks"]["lung"]["dice"]
    assert t1.loc["lung", "DSC"] == f"70.0 ({lung['lo'] * 100:.1f}–{lung['hi'] * 100:.1f})"
    assert format_ci({"n": 0, "mean": float("nan"), "lo": float("nan"), "hi": float("nan")}) == "—"
    with pytest.raises(ConfigError):
        aggregate(frame, ["hd95_mm"])
