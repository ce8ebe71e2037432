"""Odd but legal studies get a correct result with a stated correction: DICOM visits of one patient stay in one
split, an AC + NAC PET pair is resolved by the stated rule (or --series), negative SUVs are clipped with a count,
predictions record their checkpoint, re-runs skip or refuse correctly, a progress line per study, case ids
cannot escape the output folder and outputs follow the umask."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from _synthetic import tiny_study, write_autopet
from unipet.cli import main
from unipet.errors import OutputError
from unipet.infer.predictor import Prediction, prediction_checkpoint, write_prediction
from unipet.io.dicom_write import write_dicom_study
from unipet.io.layouts import import_dicom
from unipet.io.manifest import Case, load_study
from unipet.io.nifti import check_pet_values, save_volume
from unipet.quantify.biomarkers import quantify_study
from unipet.study import Study, StudyMeta, make_affine
from unipet import checkpoint as ckpt


def _dicom_study(patient: str, seed: int) -> Study:
    rng = np.random.default_rng(seed)
    pet = rng.uniform(0.5, 2.0, (5, 8, 8)).astype(np.float32)
    ct = rng.uniform(-200, 200, (5, 8, 8)).astype(np.float32)
    return Study(study_id=f"s{seed}", patient_id=patient, pet=pet, ct=ct, affine=make_affine((3.0, 2.0, 2.0)),
                 meta=StudyMeta(weight_kg=70.0))


def test_dicom_visits_of_one_patient_share_a_pseudonym_and_a_split(tmp_path):
    src = tmp_path / "dicom"
    for v in range(5):  # five visits of one patient, each with new Study/Series UIDs
        write_dicom_study(_dicom_study("MRN-0042", v), src / f"visit{v}")
    for p in range(5):
        write_dicom_study(_dicom_study(f"MRN-{100 + p}", 10 + p), src / f"other{p}")
    manifest = import_dicom(src, tmp_path / "nifti")
    assert len(manifest) == 10
    by_patient: dict[str, set] = {}
    for c in manifest:
        by_patient.setdefault(c.patient_id, set()).add(c.split)
        assert "MRN" not in c.patient_id and c.patient_id.startswith("pat-")
    assert len(by_patient) == 6
    visits = [pid for pid in by_patient if sum(c.patient_id == pid for c in manifest) == 5]
    assert len(visits) == 1 and len(by_patient[visits[0]]) == 1  # all five visits in one split
    manifest.save(tmp_path / "m.json")
    assert "MRN" not in (tmp_path / "m.json").read_text()
    assert not any("MRN" in p.name for p in (tmp_path / "nifti").rglob("*"))


def _add_pet_series(folder: Path, corrected: list[str], description: str) -> str:
    uid = generate_uid()
    out = folder / f"PT_{description}"
    out.mkdir()
    for f in sorted((folder / "PT").iterdir()):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription = description
        ds.CorrectedImage = corrected
        ds.save_as(out / f.name)
    return uid


def test_ac_and_nac_pet_series_pick_the_corrected_one_and_say_so(tmp_path, caplog):
    folder = tmp_path / "study"
    write_dicom_study(_dicom_study("P", 0), folder)
    ac_uid = pydicom.dcmread(next((folder / "PT").iterdir())).SeriesInstanceUID
    nac_uid = _add_pet_series(folder, ["DECY"], "NAC")
    with caplog.at_level(logging.WARNING, logger="unipet"):
        manifest = import_dicom(folder, tmp_path / "n1")
    assert len(manifest) == 1
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "2 PET series" in message and ac_uid in message and nac_uid in message and "--series" in message
    # a second attenuation-corrected series: no rule decides -> refused with the list; --series chooses
    other = _add_pet_series(folder, ["ATTN", "DECY"], "AC2")
    from unipet.errors import DicomError

    with pytest.raises(DicomError, match="3 PET series"):
        import_dicom(folder, tmp_path / "n2")
    chosen = import_dicom(folder, tmp_path / "n3", series_uid=[other])
    assert len(chosen) == 1
    assert main(["import", "dicom", str(folder), "--out", str(tmp_path / "m.json"), "--series", other]) == 0


def test_negative_suv_is_clipped_with_a_count_everywhere(tmp_path, caplog):
    s = tiny_study(4)
    pet = s.pet.copy()
    pet[0, 0, :5] = -3.0  # reconstruction undershoot outside the body
    lesion_neg = pet.copy()
    idx = np.argwhere(s.label > 0)[0]
    lesion_neg[tuple(idx)] = -50.0
    save_volume(lesion_neg, s.affine, tmp_path / "SUV.nii.gz")
    save_volume(s.ct, s.affine, tmp_path / "CT.nii.gz")
    save_volume(s.label, s.affine, tmp_path / "SEG.nii.gz")
    case = Case(case_id="neg", images={"PET": str(tmp_path / "SUV.nii.gz"), "CT": str(tmp_path / "CT.nii.gz")},
                label=str(tmp_path / "SEG.nii.gz"))
    with caplog.at_level(logging.WARNING, logger="unipet"):
        study = load_study(case)
    assert study.pet.min() == 0.0
    assert any("6 negative SUV voxels" in r.getMessage() and "clipped to 0" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="unipet"):
        lesions, patient = quantify_study((lesion_neg, s.label, s.affine))
    assert patient["total_tlg"] >= 0 and lesions["suv_mean"].min() >= 0 and lesions["tlg"].min() >= 0
    assert any("6 negative SUV voxels" in r.getMessage() for r in caplog.records)
    # the CLI quantifies the same file the same way
    assert main(["quantify", str(tmp_path / "SUV.nii.gz"), str(tmp_path / "SEG.nii.gz"), "--out",
                 str(tmp_path / "q")]) == 0


def test_nan_outside_lesions_becomes_zero_with_a_warning(caplog):
    pet = np.ones((4, 4, 4), np.float32)
    pet[0, 0, 0] = np.nan
    mask = np.zeros((4, 4, 4), np.uint8)
    mask[2, 2, 2] = 1
    with caplog.at_level(logging.WARNING, logger="unipet"):
        clean, n = check_pet_values(pet, "test PET", mask=mask)
    assert n == 1 and clean[0, 0, 0] == 0 and np.isfinite(clean).all()
    assert "1 NaN/-Inf voxels set to 0 SUV" in caplog.text


def _tiny_run(run: Path, seed: int) -> Path:
    import torch

    from unipet.data.preprocess import PreprocessConfig
    from unipet.models import create

    torch.manual_seed(seed)
    model = create("nnunet", in_channels=2, num_classes=2, tasks=["lymphoma", "lung_cancer"], patch_size=(16, 16, 16),
                   base_channels=2, max_channels=4, max_stages=3)
    norm = {"CT": {"scheme": "ct-window", "level": 0.0, "width": 1800.0}, "PET": {"scheme": "suv-clip", "clip": 20.0}}
    meta = {"model": model.config, "preprocess": PreprocessConfig(normalisation=norm).to_dict(),
            "patch_size": [16, 16, 16], "output_activation": "softmax"}
    ckpt.save_checkpoint(run, model, meta)
    return run


def test_predictions_record_their_checkpoint_and_reruns_respect_it(tmp_path, capsys):
    root = write_autopet(tmp_path / "ap", n=2)
    assert main(["import", "autopet", str(root), "--out", str(tmp_path / "m.json")]) == 0
    run_a, run_b = _tiny_run(tmp_path / "a", 0), _tiny_run(tmp_path / "b", 1)
    out = tmp_path / "preds"
    capsys.readouterr()
    old = os.umask(0o022)
    try:
        assert main(["predict", str(run_a), str(tmp_path / "m.json"), str(out)]) == 0
    finally:
        os.umask(old)
    printed = capsys.readouterr().out
    assert "[1/2]" in printed and "[2/2]" in printed  # a line per study as it goes
    masks = sorted(out.glob("*.nii.gz"))
    assert len(masks) == 2
    id_a, id_b = ckpt.checkpoint_id(run_a), ckpt.checkpoint_id(run_b)
    assert all(prediction_checkpoint(m) == id_a for m in masks)
    assert all((p.stat().st_mode & 0o777) == 0o644 for p in out.iterdir() if p.is_file())
    # same checkpoint: skipped; another one: refused, nothing changed; --overwrite: re-predicted, new id recorded
    assert main(["predict", str(run_a), str(tmp_path / "m.json"), str(out)]) == 0
    assert "skipped (predicted before by this checkpoint)" in capsys.readouterr().out
    before = {m: m.read_bytes() for m in masks}
    assert main(["predict", str(run_b), str(tmp_path / "m.json"), str(out)]) == 2
    assert "another checkpoint" in capsys.readouterr().err
    assert all(m.read_bytes() == b for m, b in before.items())
    assert main(["predict", str(run_b), str(tmp_path / "m.json"), str(out), "--overwrite"]) == 0
    assert all(prediction_checkpoint(m) == id_b for m in masks)


def test_study_ids_cannot_escape_the_output_folder(tmp_path):
    s = tiny_study(0)
    s.study_id = "../escape"
    pred = Prediction(mask=np.zeros(s.shape, np.uint8), task=None, task_probability=None)
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputError, match="outside"):
        write_prediction(pred, s, tmp_path / "out")
    assert not (tmp_path / "escape.nii.gz").exists() and not (tmp_path / "escape_lesions.csv").exists()
    from unipet.errors import ConfigError

    with pytest.raises(ConfigError, match="not a safe file name"):
        Case(case_id="..", images={})
    shutil.rmtree(tmp_path / "out")


def test_predict_applies_the_same_pet_rule_to_study_objects(tmp_path, caplog):
    from unipet.errors import IntensityError
    from unipet.infer import Predictor

    predictor = Predictor.from_checkpoint(_tiny_run(tmp_path / "r", 0), device="cpu")
    s = tiny_study(5)
    s.pet[0, 0, :4] = -2.0
    with caplog.at_level(logging.WARNING, logger="unipet"):
        pred = predictor.predict_study(s)
    assert pred.mask.shape == s.shape and "4 negative SUV voxels" in caplog.text
    s.pet[:] = 0.0
    with pytest.raises(IntensityError, match="no voxel above 0 SUV"):
        predictor.predict_study(s)
