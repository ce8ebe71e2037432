"""``unipet dicom-rtstruct`` and ``unipet import dicom`` with RT structure sets: files written, reference labels
read back, bad structure sets refused in one line with exit 2."""
from __future__ import annotations

import json

import numpy as np
import pydicom

from unipet.cli import main
from unipet.io.dicom import read_pet_suv
from unipet.io.dicom_write import write_dicom_study
from unipet.io.nifti import load_volume, save_volume
from unipet.study import Study, StudyMeta, make_affine

SHAPE = (6, 12, 14)


def _study(tmp_path):
    rng = np.random.default_rng(0)
    pet = rng.uniform(0.5, 1.5, SHAPE).astype(np.float32)
    study = Study(study_id="s", patient_id="anon", pet=pet, ct=None, affine=make_affine((3.0, 2.0, 2.0)),
                  meta=StudyMeta(weight_kg=70.0))
    return write_dicom_study(study, tmp_path / "dicom" / "study")


def test_mask_to_rtstruct_then_import_reads_the_reference_label(tmp_path, capsys):
    folder = _study(tmp_path)
    _, affine, _ = read_pet_suv(folder / "PT")
    mask = np.zeros(SHAPE, np.uint8)
    mask[1:3, 2:5, 2:6] = 1
    mask[4, 8:10, 9:12] = 1
    save_volume(mask, affine, tmp_path / "mask.nii.gz")
    rs = folder / "rs.dcm"
    assert main(["dicom-rtstruct", str(tmp_path / "mask.nii.gz"), str(folder / "PT"), str(rs), "--task", "sarcoma",
                 "--per-lesion"]) == 0
    assert "2 ROI(s)" in capsys.readouterr().out
    assert [r.ROIName for r in pydicom.dcmread(rs).StructureSetROISequence] == ["sarcoma lesion 1", "sarcoma lesion 2"]
    # existing output kept; a mask on another grid refused
    assert main(["dicom-rtstruct", str(tmp_path / "mask.nii.gz"), str(folder / "PT"), str(rs)]) == 2
    save_volume(np.ones((3, 3, 3), np.uint8), affine, tmp_path / "other.nii.gz")
    assert main(["dicom-rtstruct", str(tmp_path / "other.nii.gz"), str(folder / "PT"), str(tmp_path / "x.dcm")]) == 2
    assert "not on the grid" in capsys.readouterr().err
    # import: two ROIs -> labels 1 and 2 on the PET grid (the default pattern takes 'lesion' names as one label)
    out = tmp_path / "m.json"
    assert main(["import", "dicom", str(tmp_path / "dicom"), "--out", str(out), "--roi", "lesion 1",
                 "--roi", "lesion 2"]) == 0
    case = json.loads(out.read_text())["cases"][0]
    assert case["meta"]["reference_rois"] == {"1": "sarcoma lesion 1", "2": "sarcoma lesion 2"}
    label, label_affine = load_volume(tmp_path / case["label"], what="label", dtype=np.uint8)
    assert np.allclose(label_affine, affine)
    expected = mask.copy()
    expected[4, 8:10, 9:12] = 2
    assert np.array_equal(label, expected)
    assert main(["import", "dicom", str(tmp_path / "dicom"), "--out", str(tmp_path / "m2.json")]) == 0
    case = json.loads((tmp_path / "m2.json").read_text())["cases"][0]
    label, _ = load_volume(tmp_path / case["label"], what="label", dtype=np.uint8)
    assert np.array_equal(label, mask)


def test_import_refuses_a_bad_structure_set_in_one_line(tmp_path, capsys):
    folder = _study(tmp_path)
    _, affine, _ = read_pet_suv(folder / "PT")
    mask = np.zeros(SHAPE, np.uint8)
    mask[1:3, 2:5, 2:6] = 1
    save_volume(mask, affine, tmp_path / "mask.nii.gz")
    rs = folder / "rs.dcm"
    assert main(["dicom-rtstruct", str(tmp_path / "mask.nii.gz"), str(folder / "PT"), str(rs), "--task", "GTV"]) == 0
    ds = pydicom.dcmread(rs)
    ds.ROIContourSequence[0].ContourSequence[0].ContourGeometricType = "OPEN_PLANAR"
    ds.save_as(rs)
    capsys.readouterr()
    assert main(["import", "dicom", str(tmp_path / "dicom"), "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert "OPEN_PLANAR" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m.json").exists()
