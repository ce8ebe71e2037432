"""One received study → result files: refuse what cannot be processed (one reason), segment with
``unipet.segment``, write SEG + SR (+ RTSTRUCT) with ``unipet.quantify.dicom_results``.

Results are written to ``results/<study>/`` and completed by ``results.json`` written last (atomically): a study
whose results folder holds it is never segmented again, so a node restarted after segmenting sends the same
objects (same SOPInstanceUIDs) instead of making new ones — a PACS that got one already keeps one copy.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unipet.errors import DicomError, UnipetError
from unipet.fileio import atomic_write_json

log = logging.getLogger("unipet.serve")

RESULT_NAMES = ("seg", "sr", "rtstruct")


class StudyRejected(UnipetError):
    """A received study that the node cannot process (the message is the one-line reason logged and stored)."""


@dataclass(frozen=True)
class StudyResults:
    """What processing a study gave: result files by name (``seg``, ``sr``, ``rtstruct``; empty when the model
    found no lesion), the number of lesions and the segmentation time (s)."""

    files: dict[str, Path]
    n_lesions: int
    segment_s: float


def check_study(folder: Path) -> None:
    """Refuse a study that cannot be segmented, with one reason.

    Checks (in order): a PET series exists (a CT alone, or no image at all, is refused); the PET series is
    complete when its headers say how many slices it has (NumberOfSlices, 0054,0081); the PET headers carry what
    SUV needs and the slices form one regular volume (``unipet.io.dicom`` / ``unipet.io.suv`` messages).
    """
    from unipet.io.dicom import _group, _headers, _pick_pet, sort_slices
    from unipet.io.suv import suv_factors

    groups = _group(_headers(folder))
    modalities = sorted({info.modality for info, _ in groups})
    try:
        picked = _pick_pet(groups, folder, None)
    except DicomError as exc:
        raise StudyRejected(str(exc)) from None
    if picked is None:
        raise StudyRejected(f"no PET series (received: {', '.join(modalities) or 'nothing'}); send the PET/CT study "
                            "with its PET series")
    info, members = picked
    expected = members[0][1].get("NumberOfSlices", None)
    if expected is not None and int(expected) > len(members):
        raise StudyRejected(f"incomplete PET series: {len(members)} of {int(expected)} slices (NumberOfSlices) "
                            "arrived; send the whole series again")
    headers = [ds for _, ds in members]
    try:
        sort_slices(headers)
        suv_factors(headers, "bw")
    except DicomError as exc:
        raise StudyRejected(str(exc)) from None


def process_study(folder: Path, out_dir: Path, checkpoint: str | None, task: str | None, device: str,
                  rtstruct: bool, per_lesion_rois: bool) -> StudyResults:
    """Segment the study in ``folder`` and write its result objects into ``out_dir`` (reused when complete).

    Raises:
        StudyRejected: see :func:`check_study`; UnipetError: the segmentation refused the input.
    """
    done = out_dir / "results.json"
    if done.exists():
        record = json.loads(done.read_text())
        return StudyResults({k: out_dir / v for k, v in record["files"].items()}, record["n_lesions"],
                            record["segment_s"])
    check_study(folder)
    from unipet.api import segment
    from unipet.io.nifti import load_volume
    from unipet.quantify.dicom_results import write_lesion_results

    start = time.perf_counter()
    mask_img, _ = segment(folder, task=task, checkpoint=checkpoint, device=device)
    out_dir.mkdir(parents=True, exist_ok=True)
    mask_path = out_dir / "mask.nii.gz"
    mask_img.to_filename(str(mask_path))
    mask, affine = load_volume(mask_path, what="mask", dtype=np.uint8)
    files: dict[str, str] = {}
    n_lesions = 0
    if mask.any():
        names = {"seg": "seg.dcm", "sr": "sr.dcm"} | ({"rtstruct": "rtstruct.dcm"} if rtstruct else {})
        table = write_lesion_results(mask, affine, folder, out_dir / names["seg"], out_dir / names["sr"],
                                     rtstruct_path=out_dir / names["rtstruct"] if rtstruct else None,
                                     task=task, per_lesion_rois=per_lesion_rois, overwrite=True)
        files, n_lesions = names, len(table)
    segment_s = time.perf_counter() - start
    atomic_write_json(done, {"files": files, "n_lesions": n_lesions, "segment_s": segment_s}, overwrite=True)
    return StudyResults({k: out_dir / v for k, v in files.items()}, n_lesions, segment_s)
