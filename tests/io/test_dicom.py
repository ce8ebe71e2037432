"""DICOM series discovery, slice geometry, PET/CT reading, the Study loader and ``unipet suv``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from unipet.errors import DicomError, ImageGeometryError, InputFileError
from unipet.io.dicom import find_series, load_dicom_study, pseudonym, read_ct, read_pet_suv
from unipet.io.dicom_write import write_dicom_study
from unipet.study import Study, StudyMeta, index_to_world_zyx, make_affine

SHAPE = (8, 16, 16)


def _study(affine=None, shape=SHAPE, seed=0, patient="SECRET-NAME", hot=(5, 4, 11)) -> Study:
    rng = np.random.default_rng(seed)
    pet = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    pet[hot] = 12.0
    ct = rng.uniform(-900, 900, shape).astype(np.float32)
    affine = make_affine((3.0, 2.0, 2.5), (-20.0, -16.0, 100.0)) if affine is None else affine
    return Study(study_id="case", patient_id=patient, pet=pet, ct=ct, affine=affine,
                 meta=StudyMeta(weight_kg=72.0, height_m=1.7, sex="F", age=61))


def _write(study: Study, folder: Path, **kw) -> Path:
    return write_dicom_study(study, folder, injected_dose_bq=300e6, injection_to_scan_s=3900, **kw)


def _edit(folder: Path, fn, pattern="PT_*.dcm") -> None:
    """Apply ``fn(dataset, index)`` to every matching file and save it in place."""
    for k, path in enumerate(sorted(folder.rglob(pattern))):
        ds = pydicom.dcmread(path)
        fn(ds, k)
        ds.save_as(path)


@pytest.fixture
def written(tmp_path) -> tuple[Study, Path]:
    study = _study()
    return study, _write(study, tmp_path / "study")


def _rotation(ax_deg: float, az_deg: float) -> np.ndarray:
    a, b = np.deg2rad(ax_deg), np.deg2rad(az_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rz @ rx


def _world(affine: np.ndarray, index_zyx) -> np.ndarray:
    return (index_to_world_zyx(affine) @ np.array([*index_zyx, 1.0]))[:3]


# ----------------------------------------------------------------------------------------- discovery
def test_find_series_groups_by_uid_and_skips_non_dicom(written):
    _, folder = written
    (folder / "notes.txt").write_text("not dicom")
    (folder / "PT" / "junk.dcm").write_bytes(b"\x00" * 300)
    (folder / "sub").mkdir()
    (folder / "sub" / "README").write_text("hello")
    series = find_series(folder)
    assert sorted((s.modality, s.n_files) for s in series) == [("CT", 8), ("PT", 8)]
    assert len({s.study_uid for s in series}) == 1 and len({s.frame_of_reference_uid for s in series}) == 1
    assert all("SECRET" not in repr(s) for s in series)


def test_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        find_series(tmp_path / "nope")


# ----------------------------------------------------------------------------------------- PET / CT
def test_read_pet_suv_and_ct_round_trip_values_and_affine(written):
    study, folder = written
    suv, affine, meta = read_pet_suv(folder)
    np.testing.assert_allclose(affine, study.affine, atol=1e-4)
    np.testing.assert_allclose(suv, study.pet, rtol=2e-3)
    assert meta["weight_kg"] == 72 and meta["sex"] == "F" and meta["dose_bq"] == pytest.approx(300e6)
    assert meta["uptake_s"] == pytest.approx(3900) and meta["units"] == "BQML" and meta["age"] == 61
    assert "SECRET" not in repr(meta)
    hu, ct_affine = read_ct(folder)
    np.testing.assert_allclose(hu, study.ct, atol=0.5)
    np.testing.assert_allclose(ct_affine, study.affine, atol=1e-4)


def test_missing_weight_names_the_tag(written):
    _, folder = written
    _edit(folder, lambda ds, k: delattr(ds, "PatientWeight"))
    with pytest.raises(DicomError, match=r"PatientWeight \(0010,1030\) is missing"):
        read_pet_suv(folder)
    read_pet_suv(folder, kind="ibw")  # ideal body weight needs height and sex only


def test_zero_dose_is_an_error(written):
    _, folder = written

    def zero(ds, k):
        ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose = "0"

    _edit(folder, zero)
    with pytest.raises(DicomError, match=r"RadionuclideTotalDose \(0018,1074\) is 0"):
        read_pet_suv(folder)


def test_folder_with_only_ct_has_no_pet(written):
    _, folder = written
    with pytest.raises(DicomError, match=r"the PET is missing: no PET series \(Modality PT\) found in .*found: CT"):
        read_pet_suv(folder / "CT")
    with pytest.raises(DicomError, match="no PET series"):
        load_dicom_study(folder / "CT")


def test_per_slice_rescale_slopes_are_applied(written):
    study, folder = written
    slopes = {float(pydicom.dcmread(p).RescaleSlope) for p in (folder / "PT").glob("*.dcm")}
    assert len(slopes) > 1  # the writer scales each slice to its own maximum

    def halve(ds, k):  # store slice 2 with half the levels and twice the slope: the same activity
        if k == 2:
            ds.PixelData = (ds.pixel_array // 2).astype(np.uint16).tobytes()
            ds.RescaleSlope = repr(float(ds.RescaleSlope) * 2)

    _edit(folder, halve)
    suv, _, _ = read_pet_suv(folder)
    np.testing.assert_allclose(suv[2], study.pet[2], rtol=2e-3)
    np.testing.assert_allclose(suv[3], study.pet[3], rtol=2e-3)


def test_several_pet_series_are_listed_and_selected_by_uid(tmp_path):
    small = _study(shape=(6, 16, 16), hot=(2, 4, 4))
    big = _study(shape=(9, 16, 16), seed=1)
    _write(small, tmp_path / "mixed" / "a")
    _write(big, tmp_path / "mixed" / "b")
    pets = [s for s in find_series(tmp_path / "mixed") if s.modality == "PT"]
    assert [s.n_files for s in pets] == [9, 6]
    with pytest.raises(DicomError, match="2 PET series") as err:  # both attenuation-corrected: no silent pick
        read_pet_suv(tmp_path / "mixed")
    assert pets[0].uid in str(err.value) and pets[1].uid in str(err.value) and "--series" in str(err.value)
    assert read_pet_suv(tmp_path / "mixed", series_uid=pets[0].uid)[0].shape == (9, 16, 16)
    chosen, _, _ = read_pet_suv(tmp_path / "mixed", series_uid=pets[1].uid)
    np.testing.assert_allclose(chosen, small.pet, rtol=2e-3)
    with pytest.raises(DicomError, match="not in"):
        read_pet_suv(tmp_path / "mixed", series_uid="1.2.3.4")
    ct_uid = next(s.uid for s in find_series(tmp_path / "mixed") if s.modality == "CT")
    with pytest.raises(DicomError, match="is Modality CT, not PT"):
        read_pet_suv(tmp_path / "mixed", series_uid=ct_uid)


# ----------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("name, linear", [
    ("oblique", _rotation(20.0, 35.0) @ np.diag([2.0, 2.5, 3.0])),
    ("z-flipped", np.diag([2.0, -2.0, 3.0])),  # slices run against the IOP normal: the reader re-orders them
])
def test_orientation_is_kept_in_physical_space(tmp_path, name, linear):
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = linear, (10.0, -30.0, 55.0)
    hot = (5, 4, 11)
    study = _study(affine=affine, hot=hot)
    folder = _write(study, tmp_path / name)
    # shuffle the file order on disk and the instance numbers: sorting must rely on positions only
    _edit(folder, lambda ds, k: setattr(ds, "InstanceNumber", (k * 5) % 8 + 1))
    suv, read_affine, _ = read_pet_suv(folder)
    found = np.unravel_index(np.argmax(suv), suv.shape)
    np.testing.assert_allclose(_world(read_affine, found), _world(affine, hot), atol=1e-3)
    # every voxel sits where it was written: map each read index to the written index through world space
    read_to_written = np.linalg.solve(index_to_world_zyx(affine), index_to_world_zyx(read_affine))
    idx = np.indices(SHAPE).reshape(3, -1)
    mapped = read_to_written[:3, :3] @ idx + read_to_written[:3, 3:]
    assert np.abs(mapped - np.rint(mapped)).max() < 1e-3
    mapped = np.rint(mapped).astype(int)
    np.testing.assert_allclose(suv[tuple(idx)], study.pet[tuple(mapped)], rtol=2e-3)


def test_irregular_slice_spacing_is_an_error(written):
    _, folder = written

    def shift(ds, k):
        if k == 4:
            ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1],
                                       float(ds.ImagePositionPatient[2]) + 1.2]

    _edit(folder, shift)
    with pytest.raises(DicomError, match="irregular"):
        read_pet_suv(folder)


def test_two_slices_at_one_position_is_an_error(written):
    _, folder = written
    first = pydicom.dcmread(sorted((folder / "PT").glob("*.dcm"))[0])

    def dup(ds, k):
        if k == 1:
            ds.ImagePositionPatient = first.ImagePositionPatient

    _edit(folder, dup)
    with pytest.raises(DicomError, match="same position"):
        read_pet_suv(folder)


# ----------------------------------------------------------------------------------------- Study
def test_load_dicom_study_is_pseudonymous_and_on_one_grid(written):
    study, folder = written
    loaded = load_dicom_study(folder, task="lymphoma")
    uid = pydicom.dcmread(next((folder / "PT").glob("*.dcm"))).StudyInstanceUID
    assert loaded.study_id == pseudonym(uid) and "SECRET" not in loaded.study_id
    assert loaded.task == "lymphoma" and loaded.meta.injected_dose_bq == pytest.approx(300e6)
    assert loaded.meta.extra["suv_kind"] == "bw"
    np.testing.assert_allclose(loaded.ct, study.ct, atol=0.5)
    assert load_dicom_study(folder, study_id="mine").study_id == "mine"


def test_ct_on_another_grid_is_resampled_in_physical_space(tmp_path):
    pet_study = _study()
    folder = tmp_path / "s"
    _write(Study(study_id="p", pet=pet_study.pet, ct=None, affine=pet_study.affine, meta=pet_study.meta),
           folder / "pet")
    # a finer CT grid covering the PET, holding HU = 10 × world x (mm): linear, so resampling is exact
    ct_affine = make_affine((1.5, 1.0, 1.25), (-25.0, -20.0, 95.0))
    zz, yy, xx = np.indices((24, 40, 44))
    world_x = ct_affine[0, 0] * xx + ct_affine[0, 3]
    ct_study = Study(study_id="c", pet=None, ct=(10.0 * world_x).astype(np.float32), affine=ct_affine)
    _write(ct_study, folder / "ct")
    loaded = load_dicom_study(folder)
    pet_x = _world(loaded.affine, (0, 0, 0))[0] + np.arange(SHAPE[2]) * loaded.affine[0, 0]
    np.testing.assert_allclose(loaded.ct[3, 5], 10.0 * pet_x, atol=0.6)


def test_ct_not_overlapping_pet_is_a_geometry_error(written):
    _, folder = written

    def move(ds, k):
        ds.ImagePositionPatient = [float(v) + 5000.0 for v in ds.ImagePositionPatient]

    _edit(folder, move, pattern="CT_*.dcm")
    with pytest.raises(ImageGeometryError, match="do not overlap"):
        load_dicom_study(folder)


# ----------------------------------------------------------------------------------------- CLI
def test_cli_suv_writes_nifti_and_refuses_to_overwrite(written, tmp_path, capsys):
    from unipet.cli import main
    from unipet.io.nifti import load_volume

    study, folder = written
    out = tmp_path / "suv.nii.gz"
    assert main(["suv", str(folder), str(out)]) == 0
    data, affine = load_volume(out)
    np.testing.assert_allclose(data, study.pet, rtol=2e-3)
    np.testing.assert_allclose(affine, study.affine, atol=1e-4)
    assert main(["suv", str(folder), str(out), "--kind", "lbm-janma"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["suv", str(folder), str(out), "--kind", "lbm-janma", "--overwrite"]) == 0
    lbm, _ = load_volume(out)
    assert float(np.median(lbm / data)) < 0.8  # SUL is smaller than SUVbw for a 72 kg woman
