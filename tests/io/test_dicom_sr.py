"""DICOM SR (TID 1500) with per-lesion measurements referencing a per-lesion DICOM-SEG and the PET series:
round trip through highdicom, validation (highdicom's reader; dciodvfy when installed) and the CLI."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from unipet.cli import main
from unipet.errors import LabelError
from unipet.io.dicom_write import write_dicom_study
from unipet.study import Study, StudyMeta, make_affine

hd = pytest.importorskip("highdicom")

from unipet.io.dicom_sr import LesionMeasures, pet_sources, read_measurement_sr, write_lesion_seg, write_measurement_sr  # noqa: E402

SHAPE = (8, 16, 18)


@pytest.fixture
def pet_folder(tmp_path):
    rng = np.random.default_rng(5)
    pet = rng.uniform(0.5, 1.5, SHAPE).astype(np.float32)
    pet[2:5, 3:7, 3:7] += 6.0  # lesion 1: 3 x 4 x 4 voxels, hot
    pet[6, 12, 14] += 3.0  # lesion 2: one voxel
    study = Study(study_id="s", patient_id="anon", pet=pet, ct=None, affine=make_affine((3.0, 2.0, 2.0)),
                  meta=StudyMeta(weight_kg=70.0))
    return write_dicom_study(study, tmp_path / "study") / "PT"


def lesion_mask() -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:5, 3:7, 3:7] = 1
    mask[6, 12, 14] = 1
    return mask


def dciodvfy_errors(path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        return []
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def test_sr_round_trip_references_segments_and_pet_series(pet_folder, tmp_path):
    sources = pet_sources(pet_folder)
    labels = lesion_mask()
    labels[6, 12, 14] = 2
    seg = write_lesion_seg(labels, sources, tmp_path / "seg.dcm", label_name="lymphoma lesion")
    lesions = [LesionMeasures(1, 0.576, 8.1, 7.0, 7.6, 4.032), LesionMeasures(2, 0.012, 4.2, 4.2, 4.2, 0.0504)]
    write_measurement_sr(lesions, seg, sources, tmp_path / "sr.dcm")
    rows = read_measurement_sr(tmp_path / "sr.dcm")
    assert [r["tracking_id"] for r in rows] == ["lesion 1", "lesion 2"]
    for row, m in zip(rows, lesions):
        assert row["segment_number"] == m.label and row["seg_uid"] == seg.SOPInstanceUID
        assert row["source_series_uid"] == sources[0].SeriesInstanceUID
        for key in ("volume_ml", "suv_max", "suv_mean", "suv_peak", "tlg"):
            assert row[key] == pytest.approx(getattr(m, key))
    # the SEG read back: one segment per lesion, same voxels, tracking UIDs shared with the SR
    seg_back = hd.seg.segread(tmp_path / "seg.dcm")
    assert [int(d.SegmentNumber) for d in seg_back.SegmentSequence] == [1, 2]
    assert [d.SegmentLabel for d in seg_back.SegmentSequence] == ["lymphoma lesion 1", "lymphoma lesion 2"]
    assert {r["tracking_uid"] for r in rows} == {str(d.TrackingUID) for d in seg_back.SegmentSequence}
    volume = seg_back.get_volume(combine_segments=True, relabel=False).array  # (slice, row, column)
    assert np.count_nonzero(volume == 1) == 48 and np.count_nonzero(volume == 2) == 1
    # evidence: the PET instances and the SEG; no other patient identifiers than the PET's own
    sr = hd.sr.srread(tmp_path / "sr.dcm")
    evidence = {ref.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
    assert evidence == {seg.SOPInstanceUID} | {ds.SOPInstanceUID for ds in sources}
    assert sr.PatientName == sources[0].PatientName and sr.PatientID == sources[0].PatientID
    assert dciodvfy_errors(tmp_path / "sr.dcm") == [] and dciodvfy_errors(tmp_path / "seg.dcm") == []


def test_seg_refuses_gaps_and_empty_masks(pet_folder, tmp_path):
    sources = pet_sources(pet_folder)
    with pytest.raises(LabelError, match="no lesion"):
        write_lesion_seg(np.zeros(SHAPE, np.uint8), sources, tmp_path / "a.dcm")
    labels = lesion_mask() * 2
    with pytest.raises(LabelError, match="1..N"):
        write_lesion_seg(labels, sources, tmp_path / "b.dcm")


def test_cli_measures_lesions_and_writes_seg_and_sr(pet_folder, tmp_path, capsys):
    from unipet.io.dicom import read_pet_suv
    from unipet.io.nifti import save_volume

    suv, affine, _ = read_pet_suv(pet_folder)
    save_volume(lesion_mask(), affine, tmp_path / "mask.nii.gz")
    out = tmp_path / "results"
    assert main(["dicom-sr", str(tmp_path / "mask.nii.gz"), str(pet_folder), str(out)]) == 0
    rows = read_measurement_sr(out / "sr.dcm")
    assert len(rows) == 2
    big = rows[0] if rows[0]["volume_ml"] > rows[1]["volume_ml"] else rows[1]
    assert big["volume_ml"] == pytest.approx(48 * 12.0 / 1000.0)  # 48 voxels of 3 x 2 x 2 mm
    mask = lesion_mask().astype(bool)
    lesion1 = mask.copy()
    lesion1[6, 12, 14] = False
    assert big["suv_max"] == pytest.approx(float(suv[lesion1].max()), rel=1e-4)
    assert big["suv_mean"] == pytest.approx(float(suv[lesion1].mean()), rel=1e-4)
    assert big["tlg"] == pytest.approx(big["suv_mean"] * big["volume_ml"], rel=1e-6)
    from unipet.quantify.biomarkers import lesion_table

    table = lesion_table(suv, mask, (3.0, 2.0, 2.0), affine, connectivity=18)
    assert big["suv_peak"] == pytest.approx(float(table["suv_peak_percist"].iloc[int(np.argmax(table["voxels"]))]))
    assert 0 < big["suv_peak"] <= big["suv_max"] + 1e-6
    assert "2 lesions" in " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    # existing outputs are not replaced unasked; a mask on another grid is refused in one line
    assert main(["dicom-sr", str(tmp_path / "mask.nii.gz"), str(pet_folder), str(out)]) == 2
    save_volume(np.ones((4, 4, 4), np.uint8), affine, tmp_path / "other.nii.gz")
    assert main(["dicom-sr", str(tmp_path / "other.nii.gz"), str(pet_folder), str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "not on the grid" in err and "Traceback" not in err


def test_single_segment_dicom_seg_is_valid(pet_folder, tmp_path):
    """The `unipet dicom-seg` output passes highdicom's reader and dciodvfy (when installed) as well."""
    from unipet.io.seg_export import write_dicom_seg

    write_dicom_seg(lesion_mask(), pet_folder, tmp_path / "seg.dcm")
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert len(seg.SegmentSequence) == 1
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []
