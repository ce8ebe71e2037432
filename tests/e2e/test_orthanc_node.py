"""The DICOM node against a real PACS: Orthanc (Debian's package) on free loopback ports holds the three real
PET/CT studies and C-STOREs them to ``unipet serve``; the node is killed mid-study and restarted; every study ends
with exactly one SEG, one SR and one RTSTRUCT back in Orthanc — the SEG on the PET grid equal to the node's
prediction, the SR's numbers equal to ``unipet quantify`` on that mask, the RTSTRUCT reading back to it."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from _dicomnet import free_port
from _orthanc import NodeProcess, Orthanc, OrthancUnavailable

pytest.importorskip("pynetdicom")
hd = pytest.importorskip("highdicom")

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "real_sts_dicom"
CASES = ("STS_019", "STS_025", "STS_042")


@pytest.fixture
def orthanc_and_port(tmp_path):
    if not all((REAL / c).is_dir() for c in CASES):
        pytest.skip(f"real DICOM studies not found under {REAL} (they live in ../shared beside the checkout)")
    node_port = free_port()
    try:
        server = Orthanc(tmp_path / "orthanc", {"unipet": ("UNIPET", node_port)})
    except OrthancUnavailable as exc:
        pytest.skip(str(exc))
    yield server, node_port
    server.close()


def test_orthanc_round_trip_with_a_killed_and_restarted_node(orthanc_and_port, tmp_path):
    from unipet.cli import main
    from unipet.io.dicom import _group, _headers, _pick_pet, pseudonym, sort_slices
    from unipet.io.dicom_sr import pet_sources, read_measurement_sr
    from unipet.io.nifti import load_volume
    from unipet.io.rtstruct import read_rtstruct_labels

    orthanc, port = orthanc_and_port
    ids = {case: orthanc.upload(sorted((REAL / case).rglob("*.dcm"))) for case in CASES}
    assert all(len(v) == 1 for v in ids.values())
    ids = {case: next(iter(v)) for case, v in ids.items()}
    keys = {case: pseudonym(pydicom.dcmread(next((REAL / case / "PET" / "image").glob("*.dcm")),
                                            stop_before_pixels=True).StudyInstanceUID) for case in CASES}
    args = ["--allow", "ORTHANC", "--dest", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}", "--stable-s", "1",
            "--rtstruct", "--device", "cpu"]
    work = tmp_path / "node"
    node = NodeProcess(work, port, args)
    try:
        for case in CASES:
            orthanc.send_study(ids[case], "unipet")  # Orthanc C-STOREs the study (PT, CT, RTSTRUCTs) to the node
        state = node.wait_for(lambda s: any(v[0] == "processing" for v in s.values()), 120, "a study in processing")
        killed = next(k for k, v in state.items() if v[0] == "processing")
        node.kill()
        node = NodeProcess(work, port, args)
        state = node.wait_for(lambda s: len(s) == 3 and all(v[0] in ("done", "failed") for v in s.values()), 600,
                              "every study finished")
    finally:
        node.stop()
    assert set(state) == set(keys.values())
    for key, (status, claims, crashes, reason) in state.items():
        assert status == "done", reason
        assert (claims, crashes) == ((2, 1) if key == killed else (1, 0))
    log = (work / "node.log").read_text()
    assert "resuming after a restart" in log
    assert not any(case in log for case in CASES)  # the collection's PatientID/PatientName are the case names

    for case in CASES:
        series = orthanc.series_by_modality(ids[case])
        for modality in ("SEG", "SR", "RTSTRUCT"):
            # RTSTRUCT: the two expert structure sets were uploaded too; ours is the one unipet made
            ours = [s for s in series.get(modality, [])
                    if "unipet" in s["MainDicomTags"].get("SeriesDescription", "")]
            assert len(ours) == 1 and len(ours[0]["Instances"]) == 1, (case, modality, series.get(modality))
        files = {m: pydicom.dcmread(io.BytesIO(orthanc.file(
            next(s for s in series[m] if "unipet" in s["MainDicomTags"].get("SeriesDescription", ""))["Instances"][0])))
            for m in ("SEG", "SR", "RTSTRUCT")}
        mask, mask_affine = load_volume(work / "results" / keys[case] / "mask.nii.gz", what="mask", dtype=np.uint8)
        sources = pet_sources(REAL / case / "PET")
        seg = hd.seg.Segmentation.from_dataset(files["SEG"])
        assert seg.get_source_image_uids()[0][1] == sources[0].SeriesInstanceUID
        pixels = seg.get_pixels_by_source_instance([s.SOPInstanceUID for s in sources], combine_segments=True,
                                                   relabel=True)
        assert pixels.shape == mask.shape and np.array_equal(pixels > 0, mask > 0)
        # SR == unipet quantify on the same mask
        files["SR"].save_as(tmp_path / f"{case}_sr.dcm", enforce_file_format=True)
        rows = read_measurement_sr(tmp_path / f"{case}_sr.dcm")
        suv = tmp_path / f"{case}_suv.nii.gz"
        assert main(["suv", str(REAL / case / "PET"), str(suv)]) == 0
        assert main(["quantify", str(suv), str(work / "results" / keys[case] / "mask.nii.gz"), "--out",
                     str(tmp_path / f"{case}_q")]) == 0
        table = pd.read_csv(tmp_path / f"{case}_q" / "lesions.csv")
        assert len(rows) == len(table) >= 1
        for row, ref in zip(rows, table.itertuples()):
            assert row["volume_ml"] == pytest.approx(ref.mtv_ml, rel=1e-5)
            assert row["suv_max"] == pytest.approx(ref.suv_max, rel=1e-5)
            assert row["suv_mean"] == pytest.approx(ref.suv_mean, rel=1e-5)
            assert row["suv_peak"] == pytest.approx(ref.suv_peak_percist, rel=1e-5)
            assert row["tlg"] == pytest.approx(ref.tlg, rel=1e-5)
        # RTSTRUCT reads back to the mask on the PET grid
        headers = _headers(REAL / case / "PET")
        info, members = _pick_pet(_group(headers), REAL / case, None)
        _, affine = sort_slices([d for _, d in members])
        labels, _ = read_rtstruct_labels([(Path("rs.dcm"), files["RTSTRUCT"])], mask.shape, affine,
                                         info.frame_of_reference_uid, info.uid, rois=["lesion"])
        assert np.array_equal(labels > 0, mask > 0)
