"""RT structure sets: the rasterisation rule, the writer's exact round trip, refusal of bad structure sets, and
agreement with the source's own rasterisation on the three real DICOM cases."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from unipet.errors import DicomError, ImageGeometryError, LabelError
from unipet.io.dicom import _group, _headers, _pick_pet, sort_slices
from unipet.io.dicom_sr import pet_sources
from unipet.io.dicom_write import write_dicom_study
from unipet.io.rtstruct import (build_rtstruct, lesion_rois, list_rois, rasterise_contours, read_rtstruct_labels,
                                study_reference_label, write_rtstruct)
from unipet.study import Study, StudyMeta, make_affine

SHAPE = (8, 16, 18)
REAL = Path(__file__).resolve().parents[2].parent / "shared"
REAL_CASES = ("STS_019", "STS_025", "STS_042")


@pytest.fixture
def pet_folder(tmp_path):
    rng = np.random.default_rng(3)
    pet = rng.uniform(0.5, 1.5, SHAPE).astype(np.float32)
    study = Study(study_id="s", patient_id="anon", pet=pet, ct=None, affine=make_affine((3.0, 2.0, 2.5)),
                  meta=StudyMeta(weight_kg=70.0))
    return write_dicom_study(study, tmp_path / "study") / "PT"


def lesions() -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:6, 3:10, 3:10] = 1
    mask[3:5, 5:8, 5:8] = 0  # a hole: inner contours must cut it out (XOR)
    mask[6, 12, 14] = 1  # one voxel
    mask[1, 12:15, 2] = 1  # a thin line
    mask[7, 1, 1] = mask[7, 2, 2] = 1  # diagonal neighbours: the marching-squares saddle
    return mask


def grid(folder):
    headers = _headers(folder)
    info, members = _pick_pet(_group(headers), folder, None)
    _, affine = sort_slices([ds for _, ds in members])
    return headers, info, affine


def test_write_then_read_gives_back_every_voxel(pet_folder, tmp_path):
    sources = pet_sources(pet_folder)
    labels, names = lesion_rois(lesions(), "sarcoma", per_lesion=True)
    assert names[0] == "sarcoma lesion 1" and len(names) == labels.max()
    out = tmp_path / "rs.dcm"
    write_rtstruct(labels, sources, out, names)
    ds = pydicom.dcmread(out)
    assert ds.Modality == "RTSTRUCT" and ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0] \
        .SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert [r.ROIName for r in ds.StructureSetROISequence] == names
    sop = {s.SOPInstanceUID for s in sources}
    for rc in ds.ROIContourSequence:
        for c in rc.ContourSequence:
            assert c.ContourGeometricType == "CLOSED_PLANAR" and c.ContourImageSequence[0].ReferencedSOPInstanceUID in sop
    headers, info, affine = grid(tmp_path)  # the PET folder and rs.dcm under one root
    for i, name in enumerate(names, start=1):
        back, got = read_rtstruct_labels(headers, SHAPE, affine, info.frame_of_reference_uid, info.uid, rois=[name])
        assert got == [name] and np.array_equal(back > 0, labels == i)
    # one ROI for all: the union, holes kept
    one, one_names = lesion_rois(lesions(), None, per_lesion=False)
    ds = build_rtstruct(one, sources, one_names)
    back, _ = read_rtstruct_labels([(out, ds)], SHAPE, affine, info.frame_of_reference_uid, info.uid, rois=["lesions"])
    assert one_names == ["lesions"] and np.array_equal(back > 0, lesions() > 0)


def test_an_exact_roi_name_wins_over_a_pattern_match():
    from unipet.io.rtstruct import RoiInfo, choose_rois

    rois = [RoiInfo(f"lesion {n}", n, "1.2", "9.9", 1, Path("rs.dcm")) for n in (1, 10, 11)]
    assert [r.name for r in choose_rois(rois, "Lesion 1", "9.9")] == ["lesion 1"]
    assert [r.name for r in choose_rois(rois, r"lesion 1\d", "9.9")] == ["lesion 10", "lesion 11"]
    assert choose_rois(rois, "PTV", "9.9") == []


def test_rasterisation_rule_centre_in_polygon_and_nearest_plane():
    affine = make_affine((3.0, 2.0, 2.0))  # (z, y, x) spacing; RAS, origin 0
    to_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine

    def square(i0, i1, j0, j1, k):
        ijk = np.array([[i0, j0, k, 1], [i1, j0, k, 1], [i1, j1, k, 1], [i0, j1, k, 1]], float)
        return (ijk @ to_lps.T)[:, :3]

    # voxel centres 2..4 lie inside [1.6, 4.4]; planes every half slice (a CT twice as fine) -> slab +-0.5 slice
    contours = [square(1.6, 4.4, 0.6, 2.4, k) for k in (2.0, 2.5, 3.0)]
    mask = rasterise_contours(contours, (6, 5, 6), affine)
    expected = np.zeros((6, 5, 6), bool)
    expected[2:4, 1:3, 2:5] = True
    assert np.array_equal(mask, expected)
    # a plane half-way between slices with a single contour covers the slices within half a slice: both ties
    mask = rasterise_contours([square(1.6, 4.4, 0.6, 2.4, 2.5)], (6, 5, 6), affine)
    assert mask[2].any() and mask[3].any() and not mask[1].any() and not mask[4].any()
    # nested contours on one plane: XOR makes a hole
    ring = rasterise_contours([square(0.5, 5.5, 0.5, 4.4, 1.0), square(1.5, 3.5, 1.5, 2.5, 1.0)], (3, 5, 6), affine)
    assert ring[1, 1, 1] and not ring[1, 2, 2] and ring.sum() == 5 * 4 - 2
    with pytest.raises(DicomError, match="not in a plane"):
        tilted = square(1, 3, 1, 3, 1.0)
        tilted[0, 2] += 1.5
        rasterise_contours([tilted], (3, 5, 6), affine)
    with pytest.raises(DicomError, match="covers no voxel"):
        rasterise_contours([square(50, 60, 50, 60, 1.0)], (3, 5, 6), affine)


def _edited(pet_folder, tmp_path, edit) -> Path:
    """A one-ROI structure set ('GTV') beside the PET, after ``edit(ds)``."""
    sources = pet_sources(pet_folder)
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:4, 4:8, 4:8] = 1
    ds = build_rtstruct(mask, sources, ["GTV"])
    edit(ds)
    out = pet_folder / "rs.dcm"
    ds.save_as(out, enforce_file_format=True)
    return pet_folder


def test_bad_structure_sets_are_refused_in_one_line(pet_folder, tmp_path):
    headers, info, affine = grid(pet_folder)

    def other_frame(ds):
        ds.StructureSetROISequence[0].ReferencedFrameOfReferenceUID = "1.2.3.4"

    def empty(ds):
        del ds.ROIContourSequence[0].ContourSequence

    def open_contour(ds):
        ds.ROIContourSequence[0].ContourSequence[0].ContourGeometricType = "OPEN_PLANAR"

    for edit, message in ((other_frame, "another frame of reference"), (empty, "no contours"),
                          (open_contour, "OPEN_PLANAR")):
        folder = _edited(pet_folder, tmp_path, edit)
        with pytest.raises(DicomError, match=message):
            study_reference_label(folder, SHAPE, affine)
    with pytest.raises(DicomError, match="ROIs: GTV"):
        study_reference_label(folder, SHAPE, affine, rois=["PTV"])
    (pet_folder / "rs.dcm").unlink()
    assert study_reference_label(pet_folder, SHAPE, affine) is None
    with pytest.raises(DicomError, match="no RT structure set"):
        study_reference_label(pet_folder, SHAPE, affine, rois=["GTV"])


def test_writer_refuses_wrong_grid_and_empty_mask(pet_folder):
    sources = pet_sources(pet_folder)
    with pytest.raises(ImageGeometryError):
        build_rtstruct(np.ones((2, 2, 2), np.uint8), sources, ["x"])
    with pytest.raises(LabelError, match="no lesion"):
        build_rtstruct(np.zeros(SHAPE, np.uint8), sources, ["x"])


def _real_case(case):
    folder = REAL / "real_sts_dicom" / case
    seg = REAL / "real_sts_fdg" / case / f"{case}_0" / "SEG.nii.gz"
    if not folder.is_dir() or not seg.exists():
        pytest.skip(f"real DICOM cases not found under {REAL} (they live in ../shared beside the checkout)")
    return folder, seg


def _dice(a, b) -> float:
    return 2.0 * float(np.sum(a & b)) / float(a.sum() + b.sum())


@pytest.mark.parametrize("case", REAL_CASES)
def test_real_cases_agree_with_the_source_rasterisation_and_round_trip(case, tmp_path):
    from unipet.io.nifti import load_volume

    folder, seg = _real_case(case)
    ref, ref_affine = load_volume(seg, what="mask", dtype=np.uint8)
    headers, info, affine = grid(folder)
    assert np.allclose(ref_affine, affine, atol=1e-2)
    rois = {r.name for r in list_rois([(p, d) for p, d in headers if d.Modality == "RTSTRUCT"])}
    assert rois == {"GTV_Mass_PET", "GTV_Mass_CT"}
    pet, names = study_reference_label(folder, ref.shape, affine)  # default pattern: the PET-drawn structure set
    assert names == ["GTV_Mass_PET"]
    assert _dice(pet > 0, ref > 0) >= 0.99
    ct, _ = study_reference_label(folder, ref.shape, affine, rois=["GTV_Mass_CT"])  # CT contours onto the PET grid
    assert 0 < ct.sum() and _dice(ct > 0, ref > 0) > 0.5  # another expert outline (see RESULTS), same tumour
    out = tmp_path / "rs.dcm"
    write_rtstruct((ref > 0).astype(np.uint8), pet_sources(folder), out, ["sarcoma lesions"])
    back, _ = read_rtstruct_labels([(out, pydicom.dcmread(out))], ref.shape, affine, info.frame_of_reference_uid,
                                   info.uid, rois=["sarcoma lesions"])
    assert _dice(back > 0, ref > 0) >= 0.95
