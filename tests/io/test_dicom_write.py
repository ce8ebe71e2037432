"""Writing a Study as DICOM PET (Bq/mL) + CT (HU), and reading it back."""
from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pydicom
import pytest

from unipet.errors import DicomError, ImageGeometryError, OutputExistsError
from unipet.io.dicom import load_dicom_study
from unipet.io.dicom_write import write_dicom_study
from unipet.study import Study, StudyMeta, make_affine


def _study(pet_low=0.0) -> Study:
    rng = np.random.default_rng(7)
    shape = (8, 16, 16)
    pet = rng.uniform(pet_low, 3.0, shape).astype(np.float32)
    pet[3, 5:8, 6:9] = 25.0
    ct = rng.uniform(-1000, 1500, shape).astype(np.float32)
    return Study(study_id="rt", patient_id="anon-7", pet=pet, ct=ct,
                 affine=make_affine((4.0, 3.0, 3.0), (-30.0, 12.0, -400.0)),
                 meta=StudyMeta(weight_kg=81.5, height_m=1.83, sex="M", tracer="FDG"))


@pytest.mark.parametrize("pet_low", [0.0, -0.3])  # unsigned and signed 16-bit storage
def test_round_trip_keeps_suv_and_affine(tmp_path, pet_low):
    study = _study(pet_low)
    out = write_dicom_study(study, tmp_path / "dcm", injected_dose_bq=250e6, injection_to_scan_s=4200)
    loaded = load_dicom_study(out)
    np.testing.assert_allclose(loaded.affine, study.affine, atol=1e-4)
    big = study.pet > 0.1
    rel = np.abs(loaded.pet[big] - study.pet[big]) / study.pet[big]
    assert rel.max() < 0.005
    assert np.abs(loaded.ct - study.ct).max() <= 0.5
    assert loaded.meta.weight_kg == 81.5 and loaded.meta.height_m == 1.83 and loaded.meta.sex == "M"
    assert loaded.meta.extra["uptake_s"] == pytest.approx(4200)


def test_headers_carry_activity_and_consistent_geometry(tmp_path):
    study = _study()
    scan = datetime(2023, 6, 1, 9, 30, 0)
    out = write_dicom_study(study, tmp_path / "dcm", injected_dose_bq=250e6, injection_to_scan_s=3600,
                            scan_datetime=scan)
    pt = [pydicom.dcmread(p) for p in sorted((out / "PT").glob("*.dcm"))]
    ct = [pydicom.dcmread(p) for p in sorted((out / "CT").glob("*.dcm"))]
    assert len(pt) == len(ct) == 8
    first = pt[0]
    assert first.Units == "BQML" and first.DecayCorrection == "START" and first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.128"
    rp = first.RadiopharmaceuticalInformationSequence[0]
    assert float(rp.RadionuclideTotalDose) == 250e6 and float(rp.RadionuclideHalfLife) == 6586.2
    assert rp.RadiopharmaceuticalStartDateTime == "20230601083000" and first.SeriesTime == "093000"
    # activity = SUV × decayed dose / weight (g)
    value = pt[3].pixel_array[6, 7] * float(pt[3].RescaleSlope) + float(pt[3].RescaleIntercept)
    expected = 25.0 * 250e6 * math.exp(-math.log(2) * 3600 / 6586.2) / 81_500
    assert value == pytest.approx(expected, rel=1e-4)
    assert float(ct[0].RescaleIntercept) == -1024
    assert {p.StudyInstanceUID for p in pt + ct} == {first.StudyInstanceUID}
    assert {p.FrameOfReferenceUID for p in pt + ct} == {first.FrameOfReferenceUID}
    for a, b in zip(pt, ct):
        assert list(a.ImagePositionPatient) == list(b.ImagePositionPatient)
    z = [float(p.ImagePositionPatient[2]) for p in pt]
    np.testing.assert_allclose(np.diff(z), 4.0)
    assert [float(v) for v in first.PixelSpacing] == [3.0, 3.0] and float(first.SliceThickness) == 4.0
    # RAS origin (-30, 12, -400) is LPS (30, -12, -400); RAS +x/+y axes are LPS -x/-y
    assert [float(v) for v in first.ImagePositionPatient] == [30.0, -12.0, -400.0]
    assert [float(v) for v in first.ImageOrientationPatient] == [-1, 0, 0, 0, -1, 0]
    assert "anon-7" in str(first.PatientName) and first.PatientBirthDate == ""


def test_refuses_to_overwrite_and_replaces_when_asked(tmp_path):
    study = _study()
    out = write_dicom_study(study, tmp_path / "dcm")
    with pytest.raises(OutputExistsError):
        write_dicom_study(study, out)
    write_dicom_study(study, out, overwrite=True)
    assert len(list((out / "PT").glob("*.dcm"))) == 8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_pet_needs_a_weight(tmp_path):
    study = _study()
    study.meta.weight_kg = None
    with pytest.raises(DicomError, match="weight"):
        write_dicom_study(study, tmp_path / "dcm")
    assert not (tmp_path / "dcm").exists()


def test_sheared_affine_is_refused(tmp_path):
    study = _study()
    study.affine[0, 1] = 1.0
    with pytest.raises(ImageGeometryError, match="non-orthogonal"):
        write_dicom_study(study, tmp_path / "dcm")
