"""Write a Study as DICOM: a PET series in Bq/mL (DecayCorrection START) and a CT series in HU.

PET activity is ``SUV × decayed dose / weight``: the injected dose decayed to the scan start, the weight in
grams, so that reading the series back with :func:`unipet.io.dicom.read_pet_suv` (kind ``bw``) gives the SUV
again. Pixels are 16-bit with one RescaleSlope per slice (the PET Image module allows only 16 bits): unsigned
when the whole PET is ≥ 0, signed otherwise. CT is stored as unsigned 16-bit with RescaleIntercept -1024, so
values below -1024 HU are clipped to -1024.

Both series share the StudyInstanceUID and FrameOfReferenceUID and the geometry of the Study's affine
(which must have orthogonal axes: DICOM cannot express a sheared grid). The patient is named by the Study's
pseudonymous ``patient_id``; no other identifier is written.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from unipet.errors import DicomError, ImageGeometryError, OutputExistsError
from unipet.fileio import umask_mode
from unipet.study import Study

PET_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.128"
CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_F18_HALF_LIFE_S = 6586.2
_CT_INTERCEPT = -1024.0


def _geometry(affine: np.ndarray, n_slices: int) -> tuple[list[float], list[float], float, list[list[float]]]:
    """(ImageOrientationPatient, PixelSpacing [row, col], slice spacing, ImagePositionPatient per slice) in LPS."""
    lps = _RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)[:3]
    axes = lps[:, :3]
    spacing = np.linalg.norm(axes, axis=0)  # (column step, row step, slice step) in mm
    if np.any(spacing <= 0):
        raise ImageGeometryError("the study affine has a zero-length axis; it cannot be written as DICOM")
    unit = axes / spacing
    gram = unit.T @ unit
    if not np.allclose(gram, np.eye(3), atol=1e-4):
        raise ImageGeometryError("the study affine has non-orthogonal (sheared) axes, which DICOM cannot "
                                 "express; resample the study onto an orthogonal grid first")
    iop = [float(v) for v in np.concatenate([unit[:, 0], unit[:, 1]])]
    positions = [[float(v) for v in lps[:, 3] + k * axes[:, 2]] for k in range(n_slices)]
    return iop, [float(spacing[1]), float(spacing[0])], float(spacing[2]), positions


def _ds_number(value: float) -> str:
    """A DS string (at most 16 characters) for ``value``."""
    for digits in range(12, 2, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.3g}"


def new_instance(sop_class: str) -> Any:
    """An empty DICOM file dataset of ``sop_class`` with a new SOPInstanceUID and Explicit VR Little Endian."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    return ds


def _base_dataset(sop_class: str, modality: str, shared: dict[str, Any], series_uid: str, series_number: int,
                  description: str, index: int, iop, spacing, thickness, position, pixels: np.ndarray):
    ds = new_instance(sop_class)
    ds.Modality = modality
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if modality == "CT" else ["ORIGINAL", "PRIMARY"]
    for key, value in shared.items():
        setattr(ds, key, value)
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, series_number, description
    ds.InstanceNumber = index + 1
    ds.ImageOrientationPatient = [_ds_number(v) for v in iop]
    ds.ImagePositionPatient = [_ds_number(v) for v in position]
    ds.PixelSpacing = [_ds_number(v) for v in spacing]
    ds.SliceThickness = _ds_number(thickness)
    ds.SpacingBetweenSlices = _ds_number(thickness)
    normal = np.cross(iop[:3], iop[3:])
    ds.SliceLocation = _ds_number(float(np.dot(normal, position)))
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def _pet_pixels(activity: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
    """16-bit slices and per-slice RescaleSlope for an activity volume ``(z, y, x)`` in Bq/mL."""
    signed = bool(np.min(activity) < 0)
    top, dtype = (32767, np.int16) if signed else (65535, np.uint16)
    slices, slopes = [], []
    for plane in activity:
        peak = float(np.max(np.abs(plane)))
        slope = peak / top if peak > 0 else 1.0
        slope = float(_ds_number(slope))  # the slope as stored, so that stored × slope is what readers get
        stored = np.clip(np.rint(plane / slope), -top if signed else 0, top).astype(dtype)
        slices.append(stored)
        slopes.append(slope)
    return slices, slopes


def _replace_dir(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Move a finished temporary folder onto ``out_dir`` (fileio's atomic helpers handle single files only)."""
    if out_dir.exists():
        if not overwrite:
            raise OutputExistsError(f"{out_dir} already exists; choose another folder or pass overwrite=True")
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def write_dicom_study(
    study: Study,
    out_dir: str | os.PathLike,
    injected_dose_bq: float | None = None,
    injection_to_scan_s: float = 3600.0,
    half_life_s: float = _F18_HALF_LIFE_S,
    overwrite: bool = False,
    scan_datetime: datetime | None = None,
) -> Path:
    """Write ``study`` as ``out_dir/PT/*.dcm`` (Bq/mL) and ``out_dir/CT/*.dcm`` (HU), whichever it has.

    Args:
        study: the Study (PET in SUVbw g/mL, CT in HU); ``study.meta.weight_kg`` is required for PET.
        out_dir: folder to create.
        injected_dose_bq: injected activity (Bq); default ``study.meta.injected_dose_bq``, else 370 MBq.
        injection_to_scan_s: time from injection to scan start (s).
        half_life_s: radionuclide half-life (s); default F-18.
        overwrite: replace an existing ``out_dir``.
        scan_datetime: scan start written to the headers; default now (to the second).

    Returns:
        ``out_dir``.

    Raises:
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is False.
        DicomError: PET without a patient weight, or a non-positive dose / half-life.
        ImageGeometryError: the affine is sheared.
    """
    from pydicom.uid import generate_uid

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OutputExistsError(f"{out_dir} already exists; choose another folder or pass overwrite=True")
    meta = study.meta
    dose = float(injected_dose_bq if injected_dose_bq is not None else (meta.injected_dose_bq or 370e6))
    if not dose > 0 or not half_life_s > 0 or injection_to_scan_s < 0:
        raise DicomError(f"injected dose ({dose} Bq) and half-life ({half_life_s} s) must be > 0 and the uptake "
                         f"time ({injection_to_scan_s} s) >= 0; pass valid values")
    if study.pet is not None and not (meta.weight_kg and meta.weight_kg > 0):
        raise DicomError(f"study {study.study_id} has no patient weight (meta.weight_kg); PET cannot be written in "
                         "Bq/mL without it — set study.meta.weight_kg")
    scan = (scan_datetime or datetime.now()).replace(microsecond=0)
    injection = scan - timedelta(seconds=float(injection_to_scan_s))
    n_slices = study.shape[0]
    iop, spacing, thickness, positions = _geometry(study.affine, n_slices)
    shared = {
        "PatientName": f"{study.patient_id or study.study_id}^", "PatientID": study.patient_id or study.study_id,
        "PatientBirthDate": "", "PatientSex": meta.sex if meta.sex in ("M", "F", "O") else "",
        "StudyInstanceUID": generate_uid(), "StudyID": study.study_id[:16], "StudyDate": scan.strftime("%Y%m%d"),
        "StudyTime": scan.strftime("%H%M%S"), "AccessionNumber": "", "ReferringPhysicianName": "",
        "FrameOfReferenceUID": generate_uid(), "PositionReferenceIndicator": "",
        "SeriesDate": scan.strftime("%Y%m%d"), "SeriesTime": scan.strftime("%H%M%S"),
        "AcquisitionDate": scan.strftime("%Y%m%d"), "AcquisitionTime": scan.strftime("%H%M%S"),
        "ContentDate": scan.strftime("%Y%m%d"), "ContentTime": scan.strftime("%H%M%S"),
        "Manufacturer": "unipet", "PatientPosition": "HFS",
    }
    if meta.weight_kg:
        shared["PatientWeight"] = _ds_number(float(meta.weight_kg))
    if meta.height_m:
        shared["PatientSize"] = _ds_number(float(meta.height_m))
    if meta.age is not None:
        shared["PatientAge"] = f"{int(meta.age):03d}Y"

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    os.chmod(tmp, umask_mode(directory=True))  # mkdtemp makes 0700; the series folder gets the usual mode
    try:
        if study.pet is not None:
            _write_pet(study, tmp / "PT", shared, iop, spacing, thickness, positions, dose, half_life_s,
                       injection, injection_to_scan_s)
        if study.ct is not None:
            _write_ct(study, tmp / "CT", shared, iop, spacing, thickness, positions)
        _replace_dir(tmp, out_dir, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _write_pet(study, folder: Path, shared, iop, spacing, thickness, positions, dose, half_life_s, injection,
               uptake_s) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True)
    decayed = dose * math.exp(-math.log(2.0) * uptake_s / half_life_s)
    activity = study.pet.astype(np.float64) * decayed / (float(study.meta.weight_kg) * 1000.0)
    slices, slopes = _pet_pixels(activity)
    rp = Dataset()
    rp.Radiopharmaceutical = study.meta.tracer or "FDG"
    rp.RadiopharmaceuticalStartTime = injection.strftime("%H%M%S")
    rp.RadiopharmaceuticalStartDateTime = injection.strftime("%Y%m%d%H%M%S")
    rp.RadionuclideTotalDose = _ds_number(dose)
    rp.RadionuclideHalfLife = _ds_number(half_life_s)
    code = Dataset()
    if abs(half_life_s - _F18_HALF_LIFE_S) < 1.0:
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "C-111A1", "SRT", "^18^Fluorine"
        rp.RadionuclidePositronFraction = "0.9686"
    rp.RadionuclideCodeSequence = Sequence([code] if "CodeValue" in code else [])
    series_uid = generate_uid()
    frame_s = 120.0
    for k, (pixels, slope) in enumerate(zip(slices, slopes)):
        ds = _base_dataset(PET_SOP_CLASS, "PT", shared, series_uid, 2, "PET SUV (unipet export)", k, iop, spacing,
                           thickness, positions[k], pixels)
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds_number(slope), "0", "BQML"
        ds.Units, ds.DecayCorrection, ds.CountsSource = "BQML", "START", "EMISSION"
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.CorrectedImage = ["ATTN", "DECY"]
        ds.RandomsCorrectionMethod = "NONE"
        ds.DecayFactor = "1"
        ds.FrameReferenceTime = "0"
        ds.ActualFrameDuration = int(frame_s * 1000)
        ds.ImageIndex = k + 1
        ds.NumberOfSlices = len(slices)
        ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
        ds.save_as(folder / f"PT_{k + 1:04d}.dcm", enforce_file_format=True)


def _write_ct(study, folder: Path, shared, iop, spacing, thickness, positions) -> None:
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True)
    stored = np.clip(np.rint(study.ct.astype(np.float64) - _CT_INTERCEPT), 0, 65535).astype(np.uint16)
    series_uid = generate_uid()
    for k, pixels in enumerate(stored):
        ds = _base_dataset(CT_SOP_CLASS, "CT", shared, series_uid, 1, "CT (unipet export)", k, iop, spacing,
                           thickness, positions[k], pixels)
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", _ds_number(_CT_INTERCEPT), "HU"
        ds.KVP = ""
        ds.save_as(folder / f"CT_{k + 1:04d}.dcm", enforce_file_format=True)
