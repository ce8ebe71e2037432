"""DICOM PET/CT folders → volumes: series discovery, slice sorting, rescaling, the RAS affine, and a Study.

Files are grouped by SeriesInstanceUID (the folder is searched recursively; files that are not DICOM are
skipped). Slices are sorted by their position along the slice normal (the cross product of the two
ImageOrientationPatient directions, dotted with ImagePositionPatient) and rescaled per slice
(RescaleSlope/Intercept). DICOM patient space is LPS; the affine returned is NIfTI RAS (x and y negated) for
unipet's ``(z, y, x)`` arrays stored the nibabel way (see :mod:`unipet.study`): index ``(x, y, z)`` = (column,
row, slice).

PET is converted to SUV by :mod:`unipet.io.suv`. Nothing that identifies the patient leaves this module:
study ids are a hash of the StudyInstanceUID and the metadata holds only weight, height, sex, age, tracer,
dose, scanner model and timing durations.
"""
from __future__ import annotations

import hashlib
import logging
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from unipet.errors import DicomError, ImageGeometryError, InputFileError
from unipet.study import Study, StudyMeta, grids_overlap, resample_to_grid

log = logging.getLogger("unipet")

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SPACING_RTOL = 0.01  # slice gaps may differ by 1 % (+ 0.01 mm) before the series counts as irregular
_N_THREADS = min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found in a folder (no patient identifiers).

    Attributes:
        uid: SeriesInstanceUID.
        modality: Modality (0008,0060), e.g. ``"PT"``, ``"CT"``.
        n_files: number of files (slices) in the series.
        description: SeriesDescription (the protocol name the scanner gives the series).
        study_uid: StudyInstanceUID.
        frame_of_reference_uid: FrameOfReferenceUID ("" when absent).
        files: the files, in no particular order.
    """

    uid: str
    modality: str
    n_files: int
    description: str
    study_uid: str
    frame_of_reference_uid: str
    files: tuple[Path, ...] = field(repr=False)


def _read_header(path: Path) -> Any | None:
    """The header of ``path`` without pixel data, or None when it is not a DICOM image file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, struct.error):
        return None
    if "SeriesInstanceUID" not in ds or "Modality" not in ds:
        return None
    return ds


def _headers(folder: str | os.PathLike) -> list[tuple[Path, Any]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"DICOM folder {folder} does not exist or is not a folder; check the path")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    with ThreadPoolExecutor(_N_THREADS) as pool:
        headers = list(pool.map(_read_header, paths))
    return [(p, h) for p, h in zip(paths, headers) if h is not None]


def _group(headers: list[tuple[Path, Any]]) -> list[tuple[SeriesInfo, list[tuple[Path, Any]]]]:
    groups: dict[str, list[tuple[Path, Any]]] = {}
    for path, ds in headers:
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    out = []
    for uid, members in groups.items():
        ds = members[0][1]
        info = SeriesInfo(uid=uid, modality=str(ds.get("Modality", "")).upper(), n_files=len(members),
                          description=str(ds.get("SeriesDescription", "") or ""),
                          study_uid=str(ds.get("StudyInstanceUID", "") or ""),
                          frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
                          files=tuple(p for p, _ in members))
        out.append((info, members))
    out.sort(key=lambda item: (item[0].modality, -item[0].n_files, item[0].uid))
    return out


def find_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """All DICOM series under ``folder`` (recursive; non-DICOM files are skipped).

    Returns:
        One :class:`SeriesInfo` per SeriesInstanceUID, sorted by modality then size (largest first).

    Raises:
        InputFileError: ``folder`` is not a folder.
    """
    return [info for info, _ in _group(_headers(folder))]


def study_folders(source: str | os.PathLike) -> list[Path]:
    """One folder per DICOM study (StudyInstanceUID) under ``source``: the deepest folder holding all its files.

    A patient folder with a baseline and a follow-up study thus gives two folders, and one study spread over
    ``PT/`` and ``CT/`` sub-folders gives their parent.

    Raises:
        InputFileError: ``source`` is not a folder.
        DicomError: no DICOM image under ``source``, or two studies' files share one folder (they cannot be
            told apart by folder; sort them into one folder per study).
    """
    series = find_series(source)
    if not series:
        raise DicomError(f"no DICOM image files under {source}; point unipet at a folder of DICOM studies")
    files_by_study: dict[str, list[Path]] = {}
    for info in series:
        files_by_study.setdefault(info.study_uid, []).extend(info.files)
    folders = {uid: Path(os.path.commonpath([str(f.parent) for f in files])) for uid, files in files_by_study.items()}
    for uid, folder in folders.items():
        for other, files in files_by_study.items():
            if other != uid and any(folder in f.parents for f in files):
                raise DicomError(f"{folder} holds files of two DICOM studies (StudyInstanceUID differs); put one "
                                 "study per folder, then import again")
    return sorted(set(folders.values()))


def _pick(groups, modality: str, folder, series_uid: str | None, prefer: SeriesInfo | None = None):
    """The series of ``modality`` asked for (by UID), else the one sharing ``prefer``'s frame/study, else the largest."""
    found = [(info, members) for info, members in groups if info.modality == modality]
    if series_uid is not None:
        for info, members in groups:
            if info.uid == series_uid:
                if info.modality != modality:
                    raise DicomError(f"series {series_uid} is Modality {info.modality}, not {modality}; pick a "
                                     f"{modality} series (`unipet suv --help` lists how)")
                return info, members
        raise DicomError(f"series {series_uid} is not in {folder}; list the series with "
                         "unipet.io.dicom.find_series and pass one of their UIDs")
    if not found:
        return None
    if prefer is not None:
        for key in ("frame_of_reference_uid", "study_uid"):
            same = [item for item in found if getattr(item[0], key) and getattr(item[0], key) == getattr(prefer, key)]
            if same:
                return same[0]
    return found[0]  # groups are sorted largest first


# ------------------------------------------------------------------------------------------- geometry
def _vec(ds: Any, name: str, n: int) -> np.ndarray:
    value = ds.get(name, None)
    if value is None or len(value) != n:
        raise DicomError(f"{name} is missing or malformed on a slice; the series has no usable geometry — "
                         "export it again from the scanner")
    return np.asarray([float(v) for v in value], dtype=np.float64)


def sort_slices(headers: Sequence[Any]) -> tuple[list[int], np.ndarray]:
    """Order slices along the normal and build the RAS affine.

    Args:
        headers: datasets of one single-frame series.

    Returns:
        ``(order, affine)``: indices of ``headers`` from first to last slice, and the 4×4 RAS affine of the
        ``(z, y, x)`` volume stacked in that order.

    Raises:
        DicomError: mixed orientations/sizes, two slices at one position, irregular slice spacing.
    """
    first = headers[0]
    iop = _vec(first, "ImageOrientationPatient", 6)
    spacing = _vec(first, "PixelSpacing", 2)  # (between rows, between columns) in mm
    size = (int(first.Rows), int(first.Columns))
    for ds in headers[1:]:
        if not np.allclose(_vec(ds, "ImageOrientationPatient", 6), iop, atol=1e-4):
            raise DicomError("the slices of the series have different ImageOrientationPatient; it is not one "
                             "volume — split it or export it again")
        if (int(ds.Rows), int(ds.Columns)) != size or not np.allclose(_vec(ds, "PixelSpacing", 2), spacing):
            raise DicomError("the slices of the series differ in Rows/Columns/PixelSpacing; it is not one volume")
    row_dir, col_dir = iop[:3], iop[3:]  # along a row (column index grows), along a column (row index grows)
    normal = np.cross(row_dir, col_dir)
    positions = np.array([_vec(ds, "ImagePositionPatient", 3) for ds in headers])
    along = positions @ normal
    order = [int(i) for i in np.argsort(along, kind="stable")]
    along = along[order]
    positions = positions[order]
    if len(order) > 1:
        gaps = np.diff(along)
        if np.min(gaps) < 1e-3:
            raise DicomError(
                f"two slices of the series lie at the same position ({len(order)} slices); it holds several "
                "frames or volumes (dynamic/gated) — export one frame per series")
        step = (positions[-1] - positions[0]) / (len(order) - 1)
        expected = positions[0] + np.outer(np.arange(len(order)), step)
        deviation = float(np.max(np.linalg.norm(positions - expected, axis=1)))
        if deviation > _SPACING_RTOL * float(np.linalg.norm(step)) + 0.01:
            raise DicomError(
                f"the slice spacing of the series is irregular (gaps {np.min(gaps):.3f}–{np.max(gaps):.3f} mm, "
                f"off a regular grid by up to {deviation:.3f} mm); resample it onto a regular grid or export "
                "it without missing slices")
    else:
        thickness = float(first.get("SpacingBetweenSlices", None) or first.get("SliceThickness", None) or 1.0)
        step = normal * thickness
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]
    lps[:3, 1] = col_dir * spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    return order, _LPS_TO_RAS @ lps


def _read_pixels(path: Path) -> tuple[Any, np.ndarray]:
    import pydicom

    ds = pydicom.dcmread(path)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise DicomError(f"{path.name} is a multi-frame (enhanced) image; unipet reads single-frame series — "
                         "convert it to single-frame (e.g. with dcmtk or emf2sf) first")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for missing codecs / broken data
        raise DicomError(f"the pixel data of {path.name} cannot be decoded ({type(exc).__name__}: {exc}); install "
                         "a codec (pip install pylibjpeg pylibjpeg-libjpeg) or decompress the series") from None
    return ds, pixels


def _volume(members: list[tuple[Path, Any]]) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Stack one series as rescaled float64 ``(z, y, x)`` in slice order; returns (volume, affine, headers)."""
    order, affine = sort_slices([ds for _, ds in members])
    paths = [members[i][0] for i in order]
    with ThreadPoolExecutor(_N_THREADS) as pool:
        read = list(pool.map(_read_pixels, paths))
    first = read[0][1]
    volume = np.empty((len(read),) + first.shape, dtype=np.float64)
    for k, (ds, pixels) in enumerate(read):
        if pixels.shape != first.shape:
            raise DicomError("the slices of the series differ in size; it is not one volume")
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        volume[k] = pixels * slope + intercept
    return volume, affine, [ds for ds, _ in read]


# ------------------------------------------------------------------------------------------- public readers
def _age_years(ds: Any) -> float | None:
    from unipet.io.suv import parse_da

    age = str(ds.get("PatientAge", "") or "").strip().upper()
    if len(age) >= 2 and age[:-1].isdigit() and age[-1] in "DWMY":
        return round(int(age[:-1]) / {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0}[age[-1]], 2)
    birth, when = parse_da(ds.get("PatientBirthDate", None)), parse_da(ds.get("StudyDate", None))
    if birth and when and when >= birth:
        return round((when - birth).days / 365.25, 2)
    return None


def _tracer(ds: Any) -> str | None:
    seq = ds.get("RadiopharmaceuticalInformationSequence", None)
    if not seq:
        return None
    item = seq[0]
    name = str(item.get("Radiopharmaceutical", "") or "").strip()
    if not name and item.get("RadiopharmaceuticalCodeSequence", None):
        name = str(item.RadiopharmaceuticalCodeSequence[0].get("CodeMeaning", "") or "").strip()
    return name or None


def _scanner(ds: Any) -> str | None:
    parts = [str(ds.get(k, "") or "").strip() for k in ("Manufacturer", "ManufacturerModelName")]
    return " ".join(p for p in parts if p) or None


def _attenuation_corrected(members: list[tuple[Path, Any]]) -> bool:
    """True when the series' CorrectedImage (0028,0051) lists ATTN (attenuation corrected)."""
    value = members[0][1].get("CorrectedImage", None)
    values = [value] if isinstance(value, str) else list(value or [])
    return any(str(v).strip().upper() == "ATTN" for v in values)


def _describe(info: SeriesInfo, members) -> str:
    ac = "AC" if _attenuation_corrected(members) else "no ATTN"
    desc = f" '{info.description}'" if info.description else ""
    return f"{info.uid}{desc} ({info.n_files} slices, {ac})"


def _pick_pet(groups, folder, series_uid: str | Sequence[str] | None):
    """The PET series to read, by a stated rule.

    1. ``series_uid`` given: that series (with several UIDs, e.g. one per study of an import, the one in
       ``folder``; none of them there -> the rule below).
    2. One PET series: it.
    3. Several: the only one whose CorrectedImage says attenuation-corrected (ATTN), e.g. an AC series beside its
       non-AC (NAC) reconstruction; the choice is logged with the other series' UIDs.
    4. Otherwise ``DicomError`` listing every PET series (UID, description, slices, AC) and how to choose one.
    """
    if isinstance(series_uid, str):
        return _pick(groups, "PT", folder, series_uid)
    pets = [(info, members) for info, members in groups if info.modality == "PT"]
    if series_uid:
        wanted = [item for item in pets if item[0].uid in set(series_uid)]
        if len(wanted) == 1:
            return wanted[0]
        if len(wanted) > 1:
            raise DicomError(f"{folder}: --series names {len(wanted)} of its PET series; name one per study")
    if len(pets) <= 1:
        return pets[0] if pets else None
    corrected = [item for item in pets if _attenuation_corrected(item[1])]
    listing = "; ".join(_describe(info, members) for info, members in pets)
    if len(corrected) == 1:
        info, members = corrected[0]
        log.warning("%s holds %d PET series; using the attenuation-corrected one, %s (others: %s); choose another "
                    "with --series UID", folder, len(pets), _describe(info, members),
                    ", ".join(i.uid for i, _ in pets if i.uid != info.uid))
        return corrected[0]
    raise DicomError(f"{folder} holds {len(pets)} PET series and no rule tells which to use: {listing}; choose one "
                     "with --series UID")


def patient_pseudonym(ds: Any) -> str | None:
    """A stable pseudonymous patient id from PatientID (+ IssuerOfPatientID), or None without a PatientID.

    The visits of one patient share it, so splits are made by patient. It is a truncated SHA-256 of a fixed
    prefix and the id: it keeps the identifier out of every output, but it is a pseudonym, not anonymisation
    (short numeric ids could be recovered by trying them all), so treat manifests as confidential.
    """
    pid = str(ds.get("PatientID", "") or "").strip()
    if not pid:
        return None
    issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
    return "pat-" + hashlib.sha256(f"unipet-patient:{issuer}|{pid}".encode("utf-8", "ignore")).hexdigest()[:12]


def _pet(folder, kind: str, series_uid: str | Sequence[str] | None, groups=None):
    from unipet.io.suv import suv_factors

    groups = groups if groups is not None else _group(_headers(folder))
    picked = _pick_pet(groups, folder, series_uid)
    if picked is None:
        found = ", ".join(sorted({info.modality for info, _ in groups})) or "no DICOM images"
        missing = "the PET is missing: " if groups else ""
        raise DicomError(f"{missing}no PET series (Modality PT) found in {folder} (found: {found}); point unipet at "
                         "the folder holding the PET series")
    info, members = picked
    volume, affine, headers = _volume(members)
    factors, suv_info = suv_factors(headers, kind)
    suv = (volume * factors[:, None, None]).astype(np.float32)
    first = headers[0]
    meta = suv_info.to_dict()
    meta.update(age=_age_years(first), tracer=_tracer(first), scanner=_scanner(first),
                patient_pseudonym=patient_pseudonym(first))
    return suv, affine, meta, info, groups


def read_pet_suv(folder: str | os.PathLike, kind: str = "bw",
                 series_uid: str | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a PET series and convert it to SUV.

    Args:
        folder: folder holding the series (searched recursively).
        kind: SUV normalisation, one of ``unipet.io.suv.KINDS`` (``"bw"``, ``"lbm-james"``, ``"lbm-janma"``,
            ``"bsa"``, ``"ibw"``).
        series_uid: the PET SeriesInstanceUID to read; default the only PET series, else the only
            attenuation-corrected one (logged), else a ``DicomError`` listing them (see ``_pick_pet``).

    Returns:
        ``(suv, affine, meta)``: SUV ``(z, y, x)`` float32 (g/mL; cm²/mL for ``bsa``), 4×4 RAS affine (mm), and
        de-identified metadata: ``weight_kg``, ``height_m``, ``sex``, ``age``, ``tracer``, ``dose_bq``,
        ``scanner``, ``units``, ``decay_correction``, ``half_life_s``, ``uptake_s``, ``scan_start_rule``,
        ``kind``, ``source_kind``.

    Raises:
        DicomError: no PET series, a missing or zero SUV tag (named), irregular geometry.
    """
    suv, affine, meta, _, _ = _pet(folder, kind, series_uid)
    meta.pop("patient_pseudonym", None)
    return suv, affine, meta


def read_ct(folder: str | os.PathLike, series_uid: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a CT series in HU.

    Returns:
        ``(hu, affine)``: HU ``(z, y, x)`` float32 and its 4×4 RAS affine (mm).

    Raises:
        DicomError: no CT series in ``folder``, or the series is not one regular volume.
    """
    groups = _group(_headers(folder))
    picked = _pick(groups, "CT", folder, series_uid)
    if picked is None:
        raise DicomError(f"no CT series (Modality CT) found in {folder}; point unipet at the folder holding the CT")
    volume, affine, _ = _volume(picked[1])
    return volume.astype(np.float32), affine


def pseudonym(study_instance_uid: str) -> str:
    """A stable pseudonymous study id from a StudyInstanceUID (no patient identifier involved)."""
    return "dcm-" + hashlib.sha256(study_instance_uid.encode("ascii", "ignore")).hexdigest()[:12]


def load_dicom_study(folder: str | os.PathLike, study_id: str | None = None, task: str | None = None,
                     kind: str = "bw", series_uid: str | Sequence[str] | None = None) -> Study:
    """Load a PET/CT study from DICOM: PET in SUV, CT (if any) resampled onto the PET grid.

    The PET series is picked by the rule of ``_pick_pet`` (``series_uid``, else the only one, else the only
    attenuation-corrected one, else an error listing them); the patient id is a pseudonym of the DICOM
    PatientID (``patient_pseudonym``), so visits of one patient stay together in splits. The CT is the largest
    CT series sharing the PET's FrameOfReferenceUID
    (else its StudyInstanceUID, else the largest). CT is resampled linearly onto the PET grid, with -1024 HU
    outside the CT.

    Args:
        folder: study folder (searched recursively).
        study_id: id for the Study; default a pseudonym hashed from the StudyInstanceUID.
        task: task (cancer type) key, if known.
        kind: SUV normalisation (see :func:`read_pet_suv`).

    Raises:
        DicomError: no PET series, or the SUV cannot be computed (message names the tag).
        ImageGeometryError: the CT and PET do not overlap in patient space.
    """
    suv, affine, meta, pet_info, groups = _pet(folder, kind, series_uid)
    patient = meta.pop("patient_pseudonym", None)
    ct = None
    picked = _pick(groups, "CT", folder, None, prefer=pet_info)
    if picked is not None:
        hu, ct_affine, _ = _volume(picked[1])
        if not grids_overlap(hu.shape, ct_affine, suv.shape, affine):
            raise ImageGeometryError(
                f"the CT and PET series in {folder} do not overlap in patient space; they belong to different "
                "studies or frames of reference — put one study per folder")
        ct = resample_to_grid(hu.astype(np.float32), ct_affine, suv.shape, affine, order=1, fill=-1024.0)
    sid = study_id or pseudonym(pet_info.study_uid or pet_info.uid)
    study_meta = StudyMeta(
        age=meta.pop("age"), sex=meta.pop("sex"), weight_kg=meta.pop("weight_kg"), height_m=meta.pop("height_m"),
        tracer=meta.pop("tracer"), scanner=meta.pop("scanner"), injected_dose_bq=meta.pop("dose_bq"),
        extra={"suv_" + k if k == "kind" else k: v for k, v in meta.items()})
    return Study(study_id=sid, patient_id=patient, pet=suv, ct=ct, affine=affine, task=task, meta=study_meta)
