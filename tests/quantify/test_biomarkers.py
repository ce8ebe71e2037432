"""Biomarkers on analytic spheres: MTV, SUVmean/max/peak, TLG, centroids, Dmax/SDmax, re-delineation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from unipet.errors import LabelError, MissingInputError
from unipet.quantify.biomarkers import (body_surface_area_m2, delineate, dmax_mm, lesion_table, liver_reference,
                                        patient_summary, quantify_study)
from unipet.components import components, remove_small_components
from unipet.study import Study, StudyMeta, make_affine

SPACING = (2.0, 2.0, 2.0)


def ball(shape, centre, radius_mm, spacing=SPACING):
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing)) <= radius_mm ** 2


def test_sphere_of_known_suv_and_volume():
    shape = (40, 40, 40)
    lesion = ball(shape, (20, 20, 20), 15.0)
    suv = np.where(lesion, 4.0, 1.0).astype(np.float32)
    table = lesion_table(suv, lesion, SPACING)
    assert len(table) == 1
    row = table.iloc[0]
    assert row["mtv_ml"] == pytest.approx(4 / 3 * math.pi * 15.0 ** 3 / 1000, rel=0.03)  # voxelisation error
    assert row["voxels"] * 0.008 == pytest.approx(row["mtv_ml"])
    assert row["suv_mean"] == pytest.approx(4.0) and row["suv_max"] == pytest.approx(4.0)
    assert row["tlg"] == pytest.approx(4.0 * row["mtv_ml"])
    assert row["suv_peak_percist"] == pytest.approx(4.0) and row["suv_peak_ibsi"] == pytest.approx(4.0)
    # centroid in mm through the default affine (origin 0): index × spacing
    assert (row["centroid_x_mm"], row["centroid_y_mm"], row["centroid_z_mm"]) == pytest.approx((40.0, 40.0, 40.0))


def test_centroids_follow_the_affine_and_dmax():
    shape = (30, 40, 50)
    spacing = (3.0, 2.0, 1.0)
    affine = make_affine(spacing, origin_xyz=(-100.0, 50.0, 10.0))
    centres = [(5, 10, 10), (5, 10, 40), (25, 30, 25)]
    mask = np.zeros(shape, bool)
    for c in centres:
        mask |= ball(shape, c, 4.0, spacing)
    suv = np.where(mask, 3.0, 0.5).astype(np.float32)
    table = lesion_table(suv, mask, spacing, affine)
    world = table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()
    expected = np.array([[-100 + c[2] * 1.0, 50 + c[1] * 2.0, 10 + c[0] * 3.0] for c in centres])
    assert np.allclose(world, expected)
    pairwise = [np.linalg.norm(a - b) for i, a in enumerate(expected) for b in expected[i + 1:]]
    patient = patient_summary(table, weight_kg=70, height_m=1.75)
    assert patient["dmax_mm"] == pytest.approx(max(pairwise))
    assert patient["lesion_count"] == 3
    bsa = math.sqrt(175 * 70 / 3600)
    assert patient["bsa_m2"] == pytest.approx(bsa)
    assert patient["sdmax_per_m"] == pytest.approx(max(pairwise) / 1000 / bsa)
    assert patient["total_mtv_ml"] == pytest.approx(table["mtv_ml"].sum())
    assert patient["suv_mean"] == pytest.approx(3.0)


def test_dmax_and_empty_patient():
    assert dmax_mm(np.zeros((0, 3))) == 0.0 and dmax_mm(np.array([[1.0, 2.0, 3.0]])) == 0.0
    assert dmax_mm(np.array([[0, 0, 0], [3, 4, 0], [1, 1, 1]])) == pytest.approx(5.0)
    empty = lesion_table(np.ones((8, 8, 8)), np.zeros((8, 8, 8)), SPACING)
    patient = patient_summary(empty)
    assert patient["lesion_count"] == 0 and patient["dmax_mm"] == 0.0 and patient["total_mtv_ml"] == 0.0
    assert math.isnan(patient["suv_max"]) and math.isnan(patient["sdmax_per_m"])
    assert math.isnan(body_surface_area_m2(70, None))


def test_lesion_count_follows_connectivity():
    mask = np.zeros((8, 8, 8), np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    mask[3:5, 3:5, 1:3] = 1  # edge contact only
    suv = np.ones(mask.shape, np.float32)
    assert len(lesion_table(suv, mask, SPACING, connectivity=6)) == 2
    assert len(lesion_table(suv, mask, SPACING)) == 1  # default 18


def test_41pct_is_per_lesion():
    shape = (20, 20, 40)
    mask = np.zeros(shape, np.uint8)
    suv = np.ones(shape, np.float32)
    mask[5:10, 5:10, 2:12] = 1
    suv[5:10, 5:10, 2:7] = 10.0  # core of lesion A
    suv[5:10, 5:10, 7:12] = 3.0  # rim of lesion A: below 4.1
    mask[5:10, 5:10, 20:30] = 1
    suv[5:10, 5:10, 20:25] = 4.0  # lesion B: max 4 → threshold 1.64
    suv[5:10, 5:10, 25:30] = 2.0  # kept in B although lower than A's dropped rim
    new, info = delineate(suv, mask, SPACING, "41pct")
    assert new[5:10, 5:10, 2:7].all() and not new[5:10, 5:10, 7:12].any()
    assert new[5:10, 5:10, 20:30].all()
    assert math.isnan(info["threshold_suv"])
    table = lesion_table(suv, mask, SPACING, delineation="41pct")
    assert sorted(table["voxels"]) == [125, 250]


@pytest.mark.parametrize("method, threshold, kept", [("suv2.5", 2.5, 250), ("suv4.0", 4.0, 125)])
def test_fixed_thresholds_inside_the_mask(method, threshold, kept):
    suv = np.ones((10, 10, 20), np.float32)
    suv[2:7, 2:7, 2:7] = 5.0
    suv[2:7, 2:7, 7:12] = 3.0
    suv[2:7, 2:7, 12:17] = 2.0
    mask = np.zeros(suv.shape, np.uint8)
    mask[2:7, 2:7, 2:17] = 1
    suv[0, 0, 0] = 9.0  # outside the mask: never included
    new, info = delineate(suv, mask, SPACING, method)
    assert info["threshold_suv"] == threshold and int(new.sum()) == kept and new[0, 0, 0] == 0


def test_percist_liver_threshold(rng):
    shape = (50, 50, 50)
    liver = ball(shape, (25, 25, 25), 30.0)  # sphere of radius 30 mm: the 15-mm sphere fits at its centre
    suv = np.ones(shape, np.float32)
    suv[liver] = rng.normal(2.0, 0.3, size=int(liver.sum())).astype(np.float32)
    ref = liver_reference(suv, liver, SPACING)
    assert ref["centre_zyx"] == (25, 25, 25)  # the deepest point of a ball is its centre
    sphere = ball(shape, (25, 25, 25), 15.0)
    values = suv[sphere].astype(np.float64)
    assert ref["voxels"] == values.size
    assert ref["mean"] == pytest.approx(values.mean()) and ref["sd"] == pytest.approx(values.std(ddof=1))
    assert ref["threshold"] == pytest.approx(1.5 * values.mean() + 2 * values.std(ddof=1))
    lesion = np.zeros(shape, np.uint8)
    lesion[2:6, 2:6, 2:6] = 1
    suv[2:4, 2:6, 2:6] = ref["threshold"] + 0.5
    suv[4:6, 2:6, 2:6] = ref["threshold"] - 0.5
    new, info = delineate(suv, lesion, SPACING, "percist", liver=liver)
    assert int(new.sum()) == 32 and info["liver"]["mean"] == pytest.approx(ref["mean"])


def test_percist_prefers_the_right_lobe():
    shape = (30, 30, 80)
    # two equally deep lobes; RAS x grows with the x index, so the patient's right is the low-x lobe
    liver = ball(shape, (15, 15, 20), 24.0) | ball(shape, (15, 15, 60), 24.0)
    suv = np.where(liver, 2.0, 0.0).astype(np.float32)
    ref = liver_reference(suv, liver, SPACING)
    assert ref["centre_zyx"][2] < 40


def test_percist_needs_a_usable_liver():
    suv = np.ones((20, 20, 20), np.float32)
    mask = np.zeros(suv.shape, np.uint8)
    mask[5:8, 5:8, 5:8] = 1
    with pytest.raises(MissingInputError, match="liver"):
        delineate(suv, mask, SPACING, "percist")
    small = ball(suv.shape, (10, 10, 10), 8.0)
    with pytest.raises(LabelError, match="sphere"):
        delineate(suv, mask, SPACING, "percist", liver=small)
    with pytest.raises(LabelError, match="empty"):
        liver_reference(suv, np.zeros(suv.shape, bool), SPACING)


def test_quantify_study_uses_study_label_meta_and_organs():
    shape = (40, 40, 40)
    affine = make_affine(SPACING)
    lesion = ball(shape, (10, 10, 10), 8.0)
    organs = ball(shape, (25, 25, 25), 26.0).astype(np.uint8) * 5
    pet = np.ones(shape, np.float32)
    pet[organs == 5] = 2.0
    pet[lesion] = 6.0
    study = Study("s1", pet=pet, ct=None, affine=affine, label=lesion.astype(np.uint8), organs=organs,
                  organ_labels={"Liver": 5}, meta=StudyMeta(weight_kg=80, height_m=1.8))
    lesions, patient = quantify_study(study)
    assert patient["lesion_count"] == 1 and patient["suv_max"] == pytest.approx(6.0)
    assert patient["bsa_m2"] == pytest.approx(math.sqrt(180 * 80 / 3600))
    assert patient["delineation"] == "mask" and math.isnan(patient["liver_suv_mean"])
    from unipet.quantify.biomarkers import QuantifyConfig

    _, percist = quantify_study(study, config=QuantifyConfig(delineation="percist"))
    assert percist["liver_suv_mean"] == pytest.approx(2.0) and percist["threshold_suv"] == pytest.approx(3.0)
    assert percist["total_mtv_ml"] == pytest.approx(patient["total_mtv_ml"])
    arrays_lesions, _ = quantify_study((pet, lesion, affine))
    assert arrays_lesions.equals(lesions)


def test_components_share_one_implementation():
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[1:3, 1:3, 1:3] = 1  # 8 voxels = 0.064 mL
    mask[5:9, 5:9, 5:9] = 1  # 64 voxels = 0.512 mL
    labels, comps = components(mask, SPACING)
    assert [c.voxels for c in comps] == [8, 64]
    assert comps[1].volume_ml == pytest.approx(0.512)
    assert comps[1].bbox == (slice(5, 9), slice(5, 9), slice(5, 9))
    assert comps[1].centroid_zyx == pytest.approx((6.5, 6.5, 6.5))
    kept = remove_small_components(mask, SPACING, min_volume_ml=0.1)
    assert int(kept.sum()) == 64 and kept[1, 1, 1] == 0
