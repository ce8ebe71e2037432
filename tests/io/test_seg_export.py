"""DICOM-SEG export of a lesion mask referencing its PET series."""
from __future__ import annotations

import numpy as np
import pytest

from unipet.errors import ImageGeometryError, LabelError, OutputExistsError
from unipet.io.dicom import find_series, sort_slices
from unipet.io.dicom_write import write_dicom_study
from unipet.io.seg_export import write_dicom_seg
from unipet.study import Study, StudyMeta, make_affine

hd = pytest.importorskip("highdicom")


@pytest.fixture
def pet_folder(tmp_path):
    rng = np.random.default_rng(3)
    study = Study(study_id="s", patient_id="anon", pet=rng.uniform(0, 2, (6, 12, 14)).astype(np.float32), ct=None,
                  affine=make_affine((3.0, 2.0, 2.0)), meta=StudyMeta(weight_kg=70.0))
    return write_dicom_study(study, tmp_path / "study") / "PT"


def _mask() -> np.ndarray:
    mask = np.zeros((6, 12, 14), np.uint8)
    mask[1:4, 2:6, 3:9] = 1
    mask[5, 10, 12] = 1
    return mask


def test_seg_round_trip_matches_mask_and_references_pet(pet_folder, tmp_path):
    import pydicom

    mask = _mask()
    out = write_dicom_seg(mask, pet_folder, tmp_path / "seg.dcm", label_name="lymphoma lesion")
    seg = hd.seg.segread(out)
    assert seg.SegmentSequence[0].SegmentLabel == "lymphoma lesion"
    pet = next(s for s in find_series(pet_folder) if s.modality == "PT")
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in pet.files]
    order, _ = sort_slices(headers)
    uids = [headers[i].SOPInstanceUID for i in order]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pet.uid
    back = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1],
                                             assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(back[..., 0].astype(np.uint8), mask)


def test_seg_rejects_wrong_shape_non_binary_and_existing_output(pet_folder, tmp_path):
    with pytest.raises(ImageGeometryError, match="resample the mask"):
        write_dicom_seg(np.zeros((5, 12, 14), np.uint8), pet_folder, tmp_path / "a.dcm")
    with pytest.raises(LabelError):
        write_dicom_seg(_mask() * 2, pet_folder, tmp_path / "b.dcm")
    write_dicom_seg(_mask(), pet_folder, tmp_path / "c.dcm")
    with pytest.raises(OutputExistsError):
        write_dicom_seg(_mask(), pet_folder, tmp_path / "c.dcm")
    write_dicom_seg(_mask(), pet_folder, tmp_path / "c.dcm", overwrite=True)


def test_cli_writes_seg_for_a_mask_on_the_pet_grid_and_refuses_another_grid(pet_folder, tmp_path, capsys):
    from unipet.cli import main
    from unipet.io.dicom import read_pet_suv
    from unipet.io.nifti import save_volume

    _, affine, _ = read_pet_suv(pet_folder)
    save_volume(_mask(), affine, tmp_path / "mask.nii.gz")
    assert main(["dicom-seg", str(tmp_path / "mask.nii.gz"), str(pet_folder), str(tmp_path / "seg.dcm")]) == 0
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert int(np.asarray(seg.pixel_array).sum()) == int(_mask().sum())
    shifted = affine.copy()
    shifted[:3, 3] += 20.0
    save_volume(_mask(), shifted, tmp_path / "moved.nii.gz")
    assert main(["dicom-seg", str(tmp_path / "moved.nii.gz"), str(pet_folder), str(tmp_path / "x.dcm")]) == 2
    assert "not on the grid" in capsys.readouterr().err


def test_library_call_checks_the_grid_given_the_masks_affine(pet_folder, tmp_path):
    """A Python caller of write_dicom_seg gets the CLI's grid check by passing the mask's affine."""
    from unipet.errors import ImageGeometryError
    from unipet.io.dicom import read_pet_suv

    _, affine, _ = read_pet_suv(pet_folder)
    write_dicom_seg(_mask(), pet_folder, tmp_path / "on.dcm", affine=affine)
    shifted = affine.copy()
    shifted[:3, 3] += 20.0
    with pytest.raises(ImageGeometryError, match="not on the grid"):
        write_dicom_seg(_mask(), pet_folder, tmp_path / "off.dcm", affine=shifted)
    assert not (tmp_path / "off.dcm").exists()
