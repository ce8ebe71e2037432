"""The foundation end to end: phantom cohort -> importers -> manifest -> Study -> cache, through files and DICOM."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from unipet.cli import main
from unipet.data.cache import build_cache
from unipet.data.phantom import write_phantom_cohort
from unipet.io.layouts import import_dicom, import_phantom
from unipet.io.manifest import Manifest, load_study
from unipet.io.nifti import load_volume


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_phantom_cohort(tmp_path_factory.mktemp("ph") / "cohort", n=4, seed=21, dicom=True)


def _rows(cohort):
    with (cohort / "clinical.csv").open() as fh:
        return {r["study_id"]: r for r in csv.DictReader(fh)}


def test_phantom_import_loads_the_written_volumes_and_tasks(cohort, tmp_path):
    rows = _rows(cohort)
    manifest = import_phantom(cohort)
    assert sorted(c.case_id for c in manifest) == sorted(rows)
    by_patient = {}
    for case in manifest:
        row = rows[case.case_id]
        assert case.task == row["task"] and case.patient_id == row["patient_id"]
        by_patient.setdefault(case.patient_id, set()).add(case.split)
        study = load_study(case, manifest.task_set)
        folder = cohort / row["patient_id"] / row["study_id"]
        suv, affine = load_volume(folder / "SUV.nii.gz")
        seg, _ = load_volume(folder / "SEG.nii.gz", dtype=np.uint8)
        organs, _ = load_volume(folder / "ORGANS.nii.gz", dtype=np.uint8)
        np.testing.assert_array_equal(study.pet, suv)
        np.testing.assert_allclose(study.affine, affine)
        np.testing.assert_array_equal(study.label, seg)
        np.testing.assert_array_equal(study.organs, organs)
        truth = json.loads((folder / "truth.json").read_text())
        voxel_ml = float(np.prod(study.spacing)) / 1000.0
        assert study.label.sum() * voxel_ml == pytest.approx(truth["mtv_ml"], rel=1e-6, abs=1e-9)
    assert all(len(splits) == 1 for splits in by_patient.values())  # follow-ups stay with their patient
    path = tmp_path / "m.json"
    manifest.save(path)
    again = Manifest.load(path)
    assert [c.case_id for c in again] == [c.case_id for c in manifest]
    cache = build_cache(again, tmp_path / "cache")
    assert sorted(cache.case_ids) == sorted(rows)
    for case in again:
        cached = cache.load(case.case_id)
        assert cached.task == case.task and (cached.label.sum() > 0) == (rows[case.case_id]["negative"] == "0")


def test_dicom_export_imports_back_to_the_same_suv_and_ct(cohort, tmp_path):
    rows = _rows(cohort)
    # the cohort root holds patient folders, some with two examinations: one study per StudyInstanceUID
    rc = main(["import", "dicom", str(cohort), "--out", str(tmp_path / "dcm.json")])
    assert rc == 0
    manifest = Manifest.load(tmp_path / "dcm.json")
    assert len(manifest) == len(rows)
    suvs = {}
    for sid, row in rows.items():
        suv, affine = load_volume(cohort / row["patient_id"] / sid / "SUV.nii.gz")
        suvs[round(float(suv.sum()), 1)] = (suv, affine, cohort / row["patient_id"] / sid)
    for case in manifest:
        assert case.case_id.startswith("dcm-") and "PH" not in case.case_id  # pseudonyms, not source names
        study = load_study(case, manifest.task_set)
        ref, affine, folder = min(suvs.items(), key=lambda kv: abs(kv[0] - float(study.pet.sum())))[1]
        hot = ref > 0.5
        rel = np.abs(study.pet[hot] - ref[hot]) / ref[hot]
        assert rel.max() < 0.005, rel.max()
        np.testing.assert_allclose(study.affine, affine, atol=1e-3)
        ct, _ = load_volume(folder / "CTres.nii.gz")
        assert np.abs(study.ct - ct).max() <= 1.0


def test_pet_only_dicom_study_imports_without_ct(cohort, tmp_path):
    row = next(iter(_rows(cohort).values()))
    study_dir = tmp_path / "pet_only" / "s1"
    shutil.copytree(cohort / row["patient_id"] / row["study_id"] / "dicom" / "PT", study_dir / "PT")
    manifest = import_dicom(tmp_path / "pet_only", tmp_path / "out")
    case = manifest.cases[0]
    assert set(case.images) == {"PET"}
    study = load_study(case)
    assert study.ct is None and study.pet.shape == (192, 96, 96)


def test_two_examinations_of_one_patient_are_two_studies_and_mixed_folders_are_refused(cohort, tmp_path):
    from unipet.errors import DicomError
    from unipet.io.dicom import study_folders

    rows = list(_rows(cohort).values())[:2]
    patient = tmp_path / "patient"
    for i, row in enumerate(rows):
        shutil.copytree(cohort / row["patient_id"] / row["study_id"] / "dicom", patient / f"exam{i}")
    assert study_folders(tmp_path) == [patient / "exam0", patient / "exam1"]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, row in enumerate(rows):
        for f in list((cohort / row["patient_id"] / row["study_id"] / "dicom" / "PT").iterdir())[:3]:
            shutil.copy(f, mixed / f"{i}_{f.name}")
    with pytest.raises(DicomError, match="one study per folder"):
        study_folders(mixed)
