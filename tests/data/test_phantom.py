"""The phantom generator: determinism, anatomy and uptake, lesion patterns, cohort layout, outcome model."""
from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest
from scipy import ndimage

from unipet.data.organs import ORGAN_GROUPS, ORGAN_LABELS, label_values
from unipet.data.phantom.cohort import CLINICAL_COLUMNS, _generate, _plan_cohort, generate_study, write_phantom_cohort
from unipet.data.phantom.clinical import TASKS, outcome_log_hazard, simulate_outcome
from unipet.data.phantom.lesions import SITE_TISSUE, plan_lesions
from unipet.errors import ConfigError, OutputExistsError, UnknownTaskError

# Sites each cancer type may spread to (from the module docstring of unipet.data.phantom.lesions).
TASK_SITES = {
    "lung_cancer": {"lung", "node_hilar", "node_mediastinal", "node_cervical", "adrenal", "bone", "brain", "liver"},
    "lymphoma": {"node_cervical", "node_axillary", "node_mediastinal", "node_paraaortic", "node_iliac", "node_inguinal",
                 "spleen", "marrow", "lung", "liver"},
    "melanoma": {"subcutaneous", "node_axillary", "node_inguinal", "node_cervical", "node_iliac", "node_paraaortic",
                 "node_mediastinal", "lung", "liver", "bone", "brain", "spleen", "adrenal"},
    "breast_cancer": {"breast", "node_axillary", "node_mediastinal", "node_cervical", "bone", "liver", "lung"},
}


@pytest.fixture(scope="module")
def studies():
    """Two positive small studies per cancer type and two negatives (≈ 5 s)."""
    out = {}
    t0 = time.perf_counter()
    for task in TASKS:
        out[task] = [generate_study(seed, task=task, negative=False) for seed in (11, 12)]
    out["negative"] = [generate_study(seed, task="lymphoma", negative=True) for seed in (11, 13)]
    n = sum(len(v) for v in out.values())
    print(f"\nsmall phantom study: {(time.perf_counter() - t0) / n:.2f} s each ({n} studies)")
    return out


def _mean(study, name):
    return float(study.pet[np.isin(study.organs, label_values(name))].mean())


def test_same_seed_gives_identical_arrays():
    a, b = generate_study(5), generate_study(5)
    for name in ("pet", "ct", "label", "organs"):
        np.testing.assert_array_equal(getattr(a.study, name), getattr(b.study, name))
    assert a.truth == b.truth
    assert a.study.meta.to_dict() == b.study.meta.to_dict()


def test_different_seeds_differ():
    a, b = generate_study(5, task="melanoma"), generate_study(6, task="melanoma")
    assert not np.array_equal(a.study.organs, b.study.organs)
    assert not np.allclose(a.study.pet, b.study.pet)
    assert (a.study.meta.age, a.study.meta.weight_kg) != (b.study.meta.age, b.study.meta.weight_kg)


def test_study_is_a_valid_whole_body_pet_ct(studies):
    ps = studies["lung_cancer"][0]
    st = ps.study
    assert st.shape == (192, 96, 96) and st.spacing == (5.0, 5.0, 5.0)
    assert st.pet.dtype == np.float32 and st.pet.min() >= 0 and st.ct.dtype == np.float32
    assert st.organs.dtype == np.uint8 and set(np.unique(st.organs)) <= {0, *ORGAN_LABELS.values()}
    assert st.organ_labels == ORGAN_LABELS
    assert st.meta.tracer == "FDG" and st.meta.injected_dose_bq > 1e8 and st.meta.sex in ("M", "F")
    # Every organ of the brief is present (breasts in women only; adrenals and ureters are small).
    present = {name for name, v in ORGAN_LABELS.items() if (st.organs == v).any()}
    needed = set(ORGAN_LABELS) - {"breast"}
    assert needed <= present, needed - present
    # Head at the top (high z index), bladder low, liver on the patient's right (+x), spleen on the left.
    zc = {k: np.nonzero(np.isin(st.organs, label_values(k)))[0].mean() for k in ("brain", "heart", "liver", "bladder")}
    assert zc["brain"] > zc["heart"] > zc["liver"] > zc["bladder"]
    xc = {k: np.nonzero(st.organs == ORGAN_LABELS[k])[2].mean() for k in ("liver", "spleen")}
    assert xc["liver"] > 48 > xc["spleen"]


def test_physiological_uptake_ranges(studies):
    for ps in (studies["negative"] + studies["lymphoma"]):
        st = ps.study
        assert 1.5 <= _mean(st, "liver") <= 3.0
        assert _mean(st, "bladder") > 8.0
        assert _mean(st, "subcutaneous_fat") < 0.55
        assert 0.4 < _mean(st, "muscle") < 1.2
        assert _mean(st, "brain") > 4.0
        assert 1.0 < _mean(st, "heart_blood_pool") < 2.6
        assert _mean(st, "lung") < 1.0


def test_ct_numbers_by_tissue(studies):
    st = studies["negative"][0].study
    med = {k: float(np.median(st.ct[np.isin(st.organs, label_values(k))])) for k in
           ("subcutaneous_fat", "muscle", "lung", "liver", "airway")}
    assert -140 < med["subcutaneous_fat"] < -60
    assert 20 < med["muscle"] < 70 and 35 < med["liver"] < 75
    assert med["lung"] < -650 and med["airway"] < -500
    bone = st.ct[np.isin(st.organs, label_values("bone"))]
    assert bone.mean() > 250 and np.percentile(bone, 95) > 500
    outside = st.ct[:, -5:, :]  # anterior edge of the field of view: air
    assert np.median(outside) < -950


def test_negatives_have_empty_masks_and_keep_a_task(studies):
    for ps in studies["negative"]:
        assert ps.truth["negative"] and ps.truth["lesions"] == []
        assert ps.study.label.sum() == 0 and ps.truth["mtv_ml"] == 0 and ps.truth["suv_max"] == 0
        assert ps.study.task == "lymphoma" and ps.study.meta.extra["negative"] == 1


@pytest.mark.parametrize("task", TASKS)
def test_lesions_sit_at_their_cancer_type_sites(studies, task):
    for ps in studies[task]:
        lesions = ps.truth["lesions"]
        assert lesions and not ps.truth["negative"]
        assert {les["site"] for les in lesions} <= TASK_SITES[task]
        for i, les in enumerate(lesions):
            inside = ps.study.organs[ps.instances == i + 1]
            assert inside.size > 0
            tissue, relabel = SITE_TISSUE[les["site"]]
            allowed = set(label_values(*tissue))
            if relabel:
                allowed |= set(label_values("adrenal" if relabel == "adrenal" else relabel))
            values, counts = np.unique(inside, return_counts=True)
            assert values[np.argmax(counts)] in allowed, (task, les["site"])
            # Lesions are hotter than their surroundings in the noise-free image and carry their volume.
            mask = ps.instances == i + 1
            ring = ndimage.binary_dilation(mask, iterations=2) & ~mask
            assert les["suv_max"] > ps.pet_clean[ring].mean(), (task, les)
            assert les["volume_ml"] == pytest.approx(inside.size * ps.study.voxel_volume_ml)
        mask = ps.study.label.astype(bool)
        assert ps.truth["mtv_ml"] == pytest.approx(mask.sum() * ps.study.voxel_volume_ml)
        assert ps.truth["tlg"] == pytest.approx(ps.pet_clean[mask].sum() * ps.study.voxel_volume_ml, rel=1e-4)
        assert ps.truth["suv_max"] == pytest.approx(ps.pet_clean[mask].max(), rel=1e-4)


def test_patterns_differ_by_cancer_type():
    rng = np.random.default_rng(0)
    sites = {t: [s.site for _ in range(60) for s in plan_lesions(t, rng)] for t in TASKS}
    assert sites["lung_cancer"].count("lung") >= 60  # a primary in every patient
    nodal = {t: np.mean([s.startswith("node_") for s in v]) for t, v in sites.items()}
    assert nodal["lymphoma"] > 0.6 > nodal["lung_cancer"]
    assert sites["breast_cancer"].count("bone") > sites["lung_cancer"].count("bone")
    assert "subcutaneous" in sites["melanoma"] and "subcutaneous" not in sites["lymphoma"]
    suv = {t: np.median([s.suv for _ in range(40) for s in plan_lesions(t, rng)]) for t in TASKS}
    assert suv["breast_cancer"] < min(suv["lung_cancer"], suv["lymphoma"], suv["melanoma"])


def test_lesion_sizes_span_3mm_to_8cm():
    rng = np.random.default_rng(1)
    d = np.array([s.diameter_mm for t in TASKS for _ in range(150) for s in plan_lesions(t, rng)])
    assert d.min() < 5.0 and d.max() > 65.0 and d.max() <= 80.0 and d.min() >= 3.0


def test_lesion_volumes_vary_across_a_cohort(studies):
    vols = [les["volume_ml"] for t in TASKS for ps in studies[t] for les in ps.truth["lesions"]]
    assert min(vols) < 1.0 and max(vols) > 8.0


def test_outcome_hazard_grows_with_tumour_burden():
    eta = outcome_log_hazard([0, 10, 100], [0, 50, 800], [0, 5, 20], 60, "lymphoma")
    assert np.all(np.diff(eta) > 0)
    rng = np.random.default_rng(3)
    n = 300
    mtv = np.exp(rng.uniform(0, 6, n)) - 1
    suv_mean = rng.uniform(2, 10, n)
    tlg, suv_max = mtv * suv_mean, suv_mean * 1.6
    time_, event = simulate_outcome(mtv, tlg, suv_max, rng.uniform(40, 80, n), np.array(TASKS * (n // 4)), rng)
    assert time_.shape == (n,) and set(np.unique(event)) <= {0, 1} and time_.min() > 0 and time_.max() <= 60
    from lifelines import CoxPHFitter
    import pandas as pd

    df = pd.DataFrame({"log_mtv": np.log1p(mtv), "time": time_, "event": event})
    fit = CoxPHFitter().fit(df, "time", "event")
    assert fit.params_["log_mtv"] > 0.2 and fit.summary.loc["log_mtv", "p"] < 1e-3


def test_unknown_task_and_size_are_refused():
    with pytest.raises(UnknownTaskError):
        generate_study(0, task="glioma")
    with pytest.raises(ConfigError):
        generate_study(0, size="huge")
    assert generate_study(0, task="LUNG_CANCER", negative=True).study.task == "lung_cancer"


def test_follow_up_keeps_the_patient_anatomy():
    base = _generate(21, "lymphoma", "small", False, visit=0)
    follow = _generate(21, "lymphoma", "small", False, visit=1)
    assert base.study.meta.sex == follow.study.meta.sex and base.study.meta.age == follow.study.meta.age
    body = (base.study.organs > 0) & ~np.isin(base.study.organs, label_values("nodes"))
    assert np.mean(base.study.organs[body] == follow.study.organs[body]) > 0.99
    assert not np.array_equal(base.study.pet, follow.study.pet)
    plan = _plan_cohort(60, seed=2)
    assert sum(p["visits"] for p in plan) == 60 and any(p["visits"] == 2 for p in plan)
    negative_studies = sum(p["visits"] for p in plan if p["negative"])
    assert abs(negative_studies - 18) <= 6


def test_cohort_layout_is_readable(tmp_path):
    from unipet.io.nifti import load_volume

    out = write_phantom_cohort(tmp_path / "cohort", n=3, seed=4)
    with (out / "clinical.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and set(CLINICAL_COLUMNS) <= set(rows[0])
    assert json.loads((out / "organs.json").read_text()) == ORGAN_LABELS
    for row in rows:
        folder = out / row["patient_id"] / row["study_id"]
        suv, aff = load_volume(folder / "SUV.nii.gz")
        ct, aff_ct = load_volume(folder / "CTres.nii.gz")
        seg, _ = load_volume(folder / "SEG.nii.gz", dtype=np.uint8)
        organs, _ = load_volume(folder / "ORGANS.nii.gz", dtype=np.uint8)
        assert suv.shape == ct.shape == seg.shape == organs.shape == (192, 96, 96)
        np.testing.assert_allclose(aff, aff_ct)
        assert set(np.unique(seg)) <= {0, 1} and (seg.sum() == 0) == (row["negative"] == "1")
        truth = json.loads((folder / "truth.json").read_text())
        assert truth["mtv_ml"] == pytest.approx(float(row["true_mtv_ml"]))
        assert row["task"] in TASKS and float(row["time"]) > 0 and row["event"] in ("0", "1")
    with pytest.raises(OutputExistsError):
        write_phantom_cohort(out, n=1, seed=4)
    write_phantom_cohort(out, n=1, seed=5, overwrite=True)
    with (out / "clinical.csv").open() as fh:
        assert [r["study_id"] for r in csv.DictReader(fh)] == ["PH5_0000_0"]
    assert not (out / rows[0]["patient_id"]).exists()


def test_cohort_is_the_same_with_worker_processes(tmp_path):
    a = write_phantom_cohort(tmp_path / "a", n=2, seed=7, workers=1)
    b = write_phantom_cohort(tmp_path / "b", n=2, seed=7, workers=2)
    assert (a / "clinical.csv").read_text() == (b / "clinical.csv").read_text()


def test_cli_writes_a_cohort_and_refuses_to_overwrite(tmp_path, capsys):
    from unipet.cli import main

    out = tmp_path / "c"
    assert main(["phantom", str(out), "--n", "1", "--seed", "2"]) == 0
    assert (out / "clinical.csv").exists() and len(list(out.glob("*/*/SUV.nii.gz"))) == 1
    assert main(["phantom", str(out), "--n", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_organ_groups_name_real_labels():
    for members in ORGAN_GROUPS.values():
        assert set(members) <= set(ORGAN_LABELS)


def test_cohort_with_dicom_reads_back_as_the_same_suv(tmp_path):
    pytest.importorskip("unipet.io.dicom_write")
    from unipet.io.dicom import load_dicom_study
    from unipet.io.nifti import load_volume

    out = write_phantom_cohort(tmp_path / "d", n=1, seed=9, dicom=True)
    folder = next(out.glob("*/*/dicom"))
    assert len(list((folder / "PT").iterdir())) == 192 and len(list((folder / "CT").iterdir())) == 192
    back = load_dicom_study(folder)
    suv, affine = load_volume(folder.parent / "SUV.nii.gz")
    np.testing.assert_allclose(back.pet, suv, atol=0.01)
    np.testing.assert_allclose(back.affine, affine, atol=1e-3)
