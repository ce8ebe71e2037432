"""The DICOM node in process, against a pynetdicom sink standing in for the PACS: a real study goes in and its
SEG, SR and RTSTRUCT come back; studies it cannot process are failed with one reason while it keeps serving;
unknown calling AE titles are rejected; no patient identifier reaches the log."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from _dicomnet import Sink, copy_study, free_port, push
from unipet.cli import main
from unipet.serve import DicomNode, NodeConfig

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "real_sts_dicom" / "STS_019"


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm"))


def _bqml_without_weight(ds) -> None:
    """A PET slice in Bq/mL without PatientWeight: SUVbw cannot be computed."""
    if ds.Modality == "PT":
        ds.Units = "BQML"
        del ds.PatientWeight


def test_config_defaults_to_loopback_and_needs_an_allow_list(tmp_path):
    from unipet.errors import ConfigError

    cfg = NodeConfig(work_dir=tmp_path, allowed_aes=("ORTHANC",))
    assert cfg.host == "127.0.0.1" and cfg.destination is None
    with pytest.raises(ConfigError, match="--allow"):
        NodeConfig(work_dir=tmp_path)
    with pytest.raises(ConfigError, match="AE@host:port"):
        NodeConfig(work_dir=tmp_path, allowed_aes=("A",), destination="nowhere")
    assert main(["serve", "--work-dir", str(tmp_path / "w")]) == 2  # no --allow: one line, exit 2


def test_node_segments_a_real_study_and_refuses_bad_ones(tmp_path, capsys):
    if not REAL.is_dir():
        pytest.skip(f"real DICOM study not found at {REAL} (it lives in ../shared beside the checkout)")
    import highdicom as hd
    import pydicom

    from unipet.io.dicom import pseudonym
    from unipet.io.dicom_sr import pet_sources, read_measurement_sr
    from unipet.io.nifti import load_volume

    sink = Sink()
    cfg = NodeConfig(work_dir=tmp_path / "node", port=free_port(), allowed_aes=("ORTHANC",),
                     destination=f"SINK@127.0.0.1:{sink.port}", stable_s=0.3, rtstruct=True, device="cpu")
    node = DicomNode(cfg)
    node.start()
    try:
        assert push(_images(REAL / "PET" / "image")[:2], cfg.port, calling_ae="INTRUDER") == []  # not allowed
        good = copy_study(REAL, tmp_path / "good")
        ct_only = copy_study(REAL, tmp_path / "ct", keep=lambda p, ds: ds.Modality == "CT")
        half = copy_study(REAL, tmp_path / "half", keep=lambda p, ds: ds.Modality == "PT" and int(ds.InstanceNumber) % 2)
        no_weight = copy_study(REAL, tmp_path / "weight", keep=lambda p, ds: ds.Modality in ("PT", "CT"),
                               edit=_bqml_without_weight)
        for folder in (good, ct_only, half, no_weight):
            codes = push(_images(folder), cfg.port)
            assert codes and set(codes) == {0}
        time.sleep(0.4)
        for _ in range(10):
            node.step()
        rows = {r.key: r for r in node.queue.studies()}
    finally:
        node.close()
        sink.close()

    def row_of(folder):
        uid = pydicom.dcmread(_images(folder)[0]).StudyInstanceUID
        return rows[pseudonym(uid)]

    assert row_of(ct_only).status == "failed" and "no PET series (received: CT)" in row_of(ct_only).reason
    assert row_of(half).status == "failed" and "incomplete PET series" in row_of(half).reason
    assert row_of(no_weight).status == "failed" and "weight" in row_of(no_weight).reason.lower()
    done = row_of(good)
    assert done.status == "done" and done.claims == 1, done.reason
    # the sink got SEG, SR and RTSTRUCT of that study, referencing its PET series, on its grid
    by_modality = {ds.Modality: ds for ds in sink.received}
    assert sorted(by_modality) == ["RTSTRUCT", "SEG", "SR"]
    good_study = pydicom.dcmread(_images(good)[0]).StudyInstanceUID
    assert {ds.StudyInstanceUID for ds in sink.received} == {good_study}
    mask, _ = load_volume(cfg.work_dir / "results" / done.key / "mask.nii.gz", what="mask", dtype=np.uint8)
    sources = pet_sources(good / ".")
    seg = hd.seg.Segmentation.from_dataset(by_modality["SEG"])
    pixels = seg.get_pixels_by_source_instance([s.SOPInstanceUID for s in sources], combine_segments=True,
                                               relabel=True)
    assert np.array_equal(pixels > 0, mask > 0)
    by_modality["SR"].save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    assert len(read_measurement_sr(tmp_path / "sr.dcm")) == int(pixels.max())
    # logs: every study by pseudonym, never the patient's name or ID
    log = (cfg.work_dir / "node.log").read_text()
    assert "STS_019" not in log and done.key in log and "rejected" in log
    assert main(["serve", "--work-dir", str(cfg.work_dir), "--status"]) == 0
    assert "incomplete PET series" in capsys.readouterr().out
