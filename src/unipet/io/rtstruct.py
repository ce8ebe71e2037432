"""RT structure sets in and out: expert contours → a label map on the PET grid, and lesion masks → an RTSTRUCT.

**Reading (rasterisation rule, unipet's choice, stated here once).** An ROI is the set of its
``CLOSED_PLANAR`` contours (``ContourData``: LPS mm triplets). Each contour is mapped into the continuous voxel
index space of the target grid (the PET grid: RAS affine of :mod:`unipet.io.dicom`, arrays ``(z, y, x)``) and
must lie in one plane parallel to its slices (spread along the slice axis <= 0.05 slice, else the structure set
is refused as oblique). Then

1. *in plane*: a voxel belongs to a contour when its **centre** lies inside the polygon
   (``matplotlib.path.Path.contains_points``, the library matplotlib already ships); several contours of one ROI
   on one plane combine by **even–odd (XOR)**, so an inner contour cuts a hole, as DICOM PS3.3 C.8.8.6 intends
   for contours inside contours;
2. *across planes*: each contour plane stands for a slab of half-width ``h`` along the slice normal, ``h`` =
   half the median gap between consecutive contour planes of the ROI, at least half a target slice. A target
   slice takes the polygons of the **nearest** contour plane when that plane lies within ``h`` of its centre.
   Contours drawn on the PET (planes = PET slices) thus fill exactly their own slice; contours drawn on a
   finer or shifted CT fill the PET slices whose centres their slabs cover.

Refused with :class:`~unipet.errors.DicomError` (one line naming the ROI and the fix): an ROI whose
``ReferencedFrameOfReferenceUID`` differs from the PET's, an ROI without contours (or with fewer than 3 points),
an ``OPEN_PLANAR`` / ``OPEN_NONPLANAR`` / ``POINT`` contour, an oblique contour, an ROI that falls outside the
grid entirely.

**Writing.** Each slice of a mask is traced with marching squares at level 0.5 (``contourpy``, matplotlib's
contour engine) after padding by one background voxel, so every contour is closed; vertices are voxel
coordinates mapped to LPS mm through the PET geometry. With the centre-in-polygon + XOR rule above, the traced
polygons rasterise back to the same voxels (the 0.5 iso-line passes half-way between inside and outside
centres), so a round trip is exact up to floating point. The structure set references the PET series (every
contour names its PET image in ``ContourImageSequence``) and copies the patient/study attributes from it, as
highdicom does for the SEG; it adds no other identifier.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from unipet.errors import DicomError, ImageGeometryError, LabelError
from unipet.fileio import atomic_path, check_writable

log = logging.getLogger("unipet")

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: ROI names taken as the tumour when none is named (case-insensitive search); unipet's choice.
DEFAULT_ROI_PATTERN = r"gtv|tumou?r|lesion|mass|metasta"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_PLANAR_TOL = 0.05  # slices: a contour's spread along the slice normal before it counts as oblique
_OPEN_TYPES = {"OPEN_PLANAR", "OPEN_NONPLANAR", "POINT"}


@dataclass(frozen=True)
class RoiInfo:
    """One ROI of a structure set (no patient identifiers).

    Attributes:
        name: ROIName.
        number: ROINumber.
        frame_of_reference_uid: the ROI's ReferencedFrameOfReferenceUID.
        referenced_series_uid: the image series the structure set names (its RT Referenced Series), "" if none.
        n_contours: number of contours of the ROI.
        path: the RTSTRUCT file.
    """

    name: str
    number: int
    frame_of_reference_uid: str
    referenced_series_uid: str
    n_contours: int
    path: Path


def structure_sets(headers: Sequence[tuple[Path, Any]]) -> list[tuple[Path, Any]]:
    """The RTSTRUCT datasets among ``(path, dataset)`` pairs (as ``unipet.io.dicom._headers`` reads them)."""
    return [(p, ds) for p, ds in headers if str(ds.get("Modality", "")).upper() == "RTSTRUCT"]


def _referenced_series(ds: Any) -> str:
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        for study in frame.get("RTReferencedStudySequence", []) or []:
            for series in study.get("RTReferencedSeriesSequence", []) or []:
                return str(series.get("SeriesInstanceUID", "") or "")
    return ""


def list_rois(sets: Sequence[tuple[Path, Any]]) -> list[RoiInfo]:
    """Every ROI of the structure sets ``sets`` (``(path, dataset)`` pairs)."""
    out = []
    for path, ds in sets:
        contours = {int(rc.ReferencedROINumber): len(rc.get("ContourSequence", []) or [])
                    for rc in ds.get("ROIContourSequence", []) or []}
        series = _referenced_series(ds)
        for roi in ds.get("StructureSetROISequence", []) or []:
            number = int(roi.ROINumber)
            out.append(RoiInfo(name=str(roi.get("ROIName", "") or ""), number=number,
                               frame_of_reference_uid=str(roi.get("ReferencedFrameOfReferenceUID", "") or ""),
                               referenced_series_uid=series, n_contours=contours.get(number, 0), path=Path(path)))
    return out


def _matches(pattern: str, name: str) -> bool:
    """``pattern`` names ``name``: equal ignoring case, else a case-insensitive regex search."""
    if pattern.casefold() == name.casefold():
        return True
    try:
        return re.search(pattern, name, flags=re.IGNORECASE) is not None
    except re.error:
        return False


def choose_rois(rois: Sequence[RoiInfo], pattern: str, pet_series_uid: str) -> list[RoiInfo]:
    """The ROIs that ``pattern`` names (ROIs of exactly that name, ignoring case; else those it finds as a
    regular expression), from one structure set.

    Where several structure sets hold a match, the one whose referenced series is the PET series wins (contours
    drawn on the PET), else the first in file order (e.g. one drawn on the CT); the choice is logged. Every match
    inside the chosen structure set is returned (their union becomes one label).
    """
    exact = [r for r in rois if r.name.casefold() == pattern.casefold()]
    found = exact or [r for r in rois if _matches(pattern, r.name)]  # 'lesion 1' never takes 'lesion 10' too
    if not found:
        return []
    by_file: dict[Path, list[RoiInfo]] = {}
    for roi in found:
        by_file.setdefault(roi.path, []).append(roi)
    on_pet = [p for p, rs in by_file.items() if rs[0].referenced_series_uid == pet_series_uid]
    chosen = on_pet[0] if on_pet else next(iter(by_file))
    if len(by_file) > 1:
        log.info("ROI pattern %r matches ROIs in %d structure sets; using %s (%s)", pattern, len(by_file),
                 chosen.name, "drawn on the PET" if on_pet else "first found")
    return by_file[chosen]


def _roi_contours(ds: Any, roi: RoiInfo) -> list[np.ndarray]:
    """The ROI's contours as ``(n, 3)`` LPS mm arrays; refuses open/point contours and empty ROIs."""
    contours = []
    for rc in ds.get("ROIContourSequence", []) or []:
        if int(rc.ReferencedROINumber) != roi.number:
            continue
        for item in rc.get("ContourSequence", []) or []:
            kind = str(item.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
            if kind in _OPEN_TYPES:
                raise DicomError(f"ROI {roi.name!r} in {roi.path.name} has a {kind} contour; only closed planar "
                                 "contours enclose a volume — close it in the contouring software (or choose "
                                 "another ROI with --roi)")
            data = np.asarray([float(v) for v in item.get("ContourData", []) or []], dtype=np.float64)
            if data.size % 3 or data.size < 9:
                raise DicomError(f"ROI {roi.name!r} in {roi.path.name} has a contour with fewer than 3 points; "
                                 "it encloses nothing — fix or delete it in the contouring software")
            contours.append(data.reshape(-1, 3))
    if not contours:
        raise DicomError(f"ROI {roi.name!r} in {roi.path.name} has no contours (it is empty); contour it or choose "
                         "another ROI with --roi")
    return contours


def rasterise_contours(contours: Sequence[np.ndarray], shape: tuple[int, int, int], affine: np.ndarray,
                       what: str = "ROI") -> np.ndarray:
    """Rasterise closed planar contours onto a grid by the rule of this module's docstring.

    Args:
        contours: ``(n_i, 3)`` arrays of LPS mm points (DICOM patient space).
        shape: the grid ``(z, y, x)``.
        affine: its 4x4 RAS affine (mm).
        what: the ROI's name, for messages.

    Returns:
        bool mask ``(z, y, x)``.

    Raises:
        DicomError: an oblique contour, or contours that miss the grid entirely.
    """
    from matplotlib.path import Path as PolyPath

    to_index = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ _LPS_TO_RAS  # LPS mm -> (i, j, k) index
    planes: dict[float, list[np.ndarray]] = {}
    for points in contours:
        ijk = (np.c_[points, np.ones(len(points))] @ to_index.T)[:, :3]
        if float(np.ptp(ijk[:, 2])) > _PLANAR_TOL:
            raise DicomError(f"a contour of {what} is not in a plane parallel to the PET slices (spans "
                             f"{float(np.ptp(ijk[:, 2])):.2f} slices); oblique contours are not supported — "
                             "re-contour on the axial images")
        planes.setdefault(round(float(np.mean(ijk[:, 2])), 3), []).append(ijk[:, :2])
    levels = np.array(sorted(planes))
    half = 0.5 * max(float(np.median(np.diff(levels))) if len(levels) > 1 else 1.0, 1.0)
    nz, ny, nx = shape
    mask = np.zeros(shape, dtype=bool)
    for k in range(nz):
        nearest = int(np.argmin(np.abs(levels - k)))
        if abs(levels[nearest] - k) > half + 1e-6:
            continue
        plane = np.zeros((ny, nx), dtype=bool)
        for poly in planes[float(levels[nearest])]:
            lo = np.maximum(np.floor(poly.min(axis=0)).astype(int), 0)
            hi = np.minimum(np.ceil(poly.max(axis=0)).astype(int), [nx - 1, ny - 1])
            if np.any(hi < lo):  # the polygon lies beside the grid
                continue
            ii, jj = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
            inside = PolyPath(poly).contains_points(np.c_[ii.ravel(), jj.ravel()]).reshape(ii.shape)
            plane[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] ^= inside
        mask[k] = plane
    if not mask.any():
        raise DicomError(f"{what} covers no voxel of the PET grid (its contours lie outside the PET field of view "
                         "or are smaller than a voxel); check that the structure set belongs to this study")
    return mask


def roi_mask(roi: RoiInfo, dataset: Any, shape: tuple[int, int, int], affine: np.ndarray,
             frame_of_reference_uid: str) -> np.ndarray:
    """One ROI rasterised onto a grid (see the module docstring); refuses another frame of reference."""
    if frame_of_reference_uid and roi.frame_of_reference_uid and roi.frame_of_reference_uid != frame_of_reference_uid:
        raise DicomError(f"ROI {roi.name!r} in {roi.path.name} refers to another frame of reference than the PET "
                         f"({roi.frame_of_reference_uid} vs {frame_of_reference_uid}); it was drawn on another study "
                         "or registration — use the structure set of this study")
    return rasterise_contours(_roi_contours(dataset, roi), shape, affine, what=f"ROI {roi.name!r}")


def read_rtstruct_labels(headers: Sequence[tuple[Path, Any]], shape: tuple[int, int, int], affine: np.ndarray,
                         frame_of_reference_uid: str, pet_series_uid: str,
                         rois: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]] | None:
    """The reference label map of a study from its RT structure sets.

    Args:
        headers: ``(path, dataset)`` pairs of the study folder (``unipet.io.dicom._headers``).
        shape, affine: the PET grid ``(z, y, x)`` and its RAS affine.
        frame_of_reference_uid, pet_series_uid: the PET series' FrameOfReferenceUID and SeriesInstanceUID.
        rois: ROI names or regular expressions, one per label (label ``i`` = the ``i``-th, counting from 1);
            None: :data:`DEFAULT_ROI_PATTERN` as label 1, and no label (None) when nothing matches it.

    Returns:
        ``(labels, names)``: uint8 ``(z, y, x)`` (0 background; where ROIs overlap, the later one wins) and, per
        label, the ROI names it holds; None when the folder holds no structure set (or, without ``rois``, no ROI
        matching the default pattern).

    Raises:
        DicomError: a named ROI is missing (the message lists the ROI names), or an ROI is unusable (see the
            module docstring).
    """
    sets = structure_sets(headers)
    if not sets:
        if rois:
            raise DicomError(f"--roi {rois[0]!r} was given but the study holds no RT structure set (Modality "
                             "RTSTRUCT); put the RS file in the study folder or drop --roi")
        return None
    datasets = {Path(p): ds for p, ds in sets}
    all_rois = list_rois(sets)
    patterns = list(rois) if rois else [DEFAULT_ROI_PATTERN]
    labels = np.zeros(shape, dtype=np.uint8)
    names: list[str] = []
    for value, pattern in enumerate(patterns, start=1):
        chosen = choose_rois(all_rois, pattern, pet_series_uid)
        if not chosen:
            listing = ", ".join(sorted({r.name for r in all_rois})) or "none"
            if not rois:
                log.warning("the structure set has no ROI named like %r (ROIs: %s); no reference label — choose "
                            "one with --roi", pattern, listing)
                return None
            raise DicomError(f"no ROI named {pattern!r} in the study's structure sets (ROIs: {listing}); pass one "
                             "of these names (or a regular expression) with --roi")
        for roi in chosen:
            labels[roi_mask(roi, datasets[roi.path], shape, affine, frame_of_reference_uid)] = value
        names.append("+".join(r.name for r in chosen))
    return labels, names


def study_reference_label(folder: str | os.PathLike, shape: tuple[int, int, int], affine: np.ndarray,
                          series_uid: str | Sequence[str] | None = None,
                          rois: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]] | None:
    """The reference label of the DICOM study in ``folder`` on its PET grid (``shape``, ``affine`` as
    ``load_dicom_study`` returns them), from the study's RT structure sets; see :func:`read_rtstruct_labels`.

    The PET series is picked by the rule of ``unipet.io.dicom`` (``series_uid``, else the only one, else the only
    attenuation-corrected one); its FrameOfReferenceUID is the one every ROI must share.
    """
    from unipet.io.dicom import _group, _headers, _pick_pet

    headers = _headers(folder)
    if not structure_sets(headers):
        if rois:
            raise DicomError(f"--roi {rois[0]!r} was given but {folder} holds no RT structure set (Modality "
                             "RTSTRUCT); put the RS file in the study folder or drop --roi")
        return None
    picked = _pick_pet(_group(headers), folder, series_uid)
    if picked is None:
        raise DicomError(f"no PET series (Modality PT) in {folder}; the reference label is drawn on the PET grid")
    info = picked[0]
    return read_rtstruct_labels(headers, shape, affine, info.frame_of_reference_uid, info.uid, rois=rois)


# ------------------------------------------------------------------------------------------------ writing
def mask_contours(plane: np.ndarray) -> list[np.ndarray]:
    """Closed contours of a binary ``(y, x)`` slice: ``(n, 2)`` arrays of ``(x, y)`` voxel coordinates.

    Marching squares at level 0.5 (contourpy) on the slice padded by one background voxel; the repeated end point
    of each closed line is dropped. Filled by centre-in-polygon with XOR, they give back ``plane``.
    """
    import contourpy

    padded = np.pad(plane.astype(np.float64), 1)
    gen = contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate)
    out = []
    for line in gen.lines(0.5):
        line = np.asarray(line, dtype=np.float64) - 1.0
        if len(line) > 1 and np.allclose(line[0], line[-1]):
            line = line[:-1]
        if len(line) >= 3:
            out.append(line)
    return out


_COLOURS = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 200, 0), (255, 0, 255), (0, 200, 200)]


def build_rtstruct(labels_zyx: np.ndarray, sources: Sequence[Any], roi_names: Sequence[str],
                   label: str = "unipet lesions") -> Any:
    """An RT Structure Set dataset for a label map on the PET grid (one ROI per label value 1..N).

    Args:
        labels_zyx: integer ``(z, y, x)`` label map on the grid of ``sources`` (0 background, ``n`` = ROI n).
        sources: the PET datasets sorted along the slice normal (``unipet.io.dicom_sr.pet_sources``).
        roi_names: one ROIName per label value 1..N.
        label: StructureSetLabel / SeriesDescription.

    Raises:
        ImageGeometryError: the label map is not the PET series' shape; LabelError: labels not 1..N or empty.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DSequence
    from pydicom.uid import generate_uid

    from unipet.io.dicom import sort_slices
    from unipet.io.dicom_write import new_instance
    from unipet.version import __version__

    labels = np.asarray(labels_zyx)
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if labels.shape != shape:
        raise ImageGeometryError(f"the mask has shape {labels.shape} but the PET series is {shape} (z, y, x); give "
                                 "the mask predicted on this PET (or resample it onto the PET grid)")
    numbers = [int(v) for v in np.unique(labels) if v > 0]
    if not numbers:
        raise LabelError("the mask holds no lesion; there is nothing to contour (no RTSTRUCT written)")
    if numbers != list(range(1, len(roi_names) + 1)):
        raise LabelError(f"the label map holds values {numbers[:10]} but {len(roi_names)} ROI names were given; "
                         "labels must be 1..N")
    _, affine = sort_slices(sources)
    to_lps = np.linalg.inv(_LPS_TO_RAS) @ np.asarray(affine)  # (i, j, k) index -> LPS mm
    first = sources[0]
    now = datetime.now()
    ds = new_instance(RTSTRUCT_SOP_CLASS)
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "IssuerOfPatientID"):
        if key in first:
            setattr(ds, key, first.get(key))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), 102, 1
    ds.SeriesDescription = label
    ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = "unipet", "unipet", __version__
    ds.OperatorsName = ""
    ds.StructureSetLabel = label[:16]
    ds.StructureSetDate, ds.StructureSetTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ContentDate, ds.ContentTime = ds.StructureSetDate, ds.StructureSetTime
    ds.SpecificCharacterSet = "ISO_IR 192"
    frame_uid = str(first.FrameOfReferenceUID)

    def image_ref(src: Any) -> Any:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = src.SOPClassUID, src.SOPInstanceUID
        return item

    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = DSequence([image_ref(s) for s in sources])
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (as PS3.3 C.8.8.5 says)
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = DSequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    frame.RTReferencedStudySequence = DSequence([study])
    ds.ReferencedFrameOfReferenceSequence = DSequence([frame])

    rois, contours_seq, observations = [], [], []
    for n, name in enumerate(roi_names, start=1):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = n, frame_uid, str(name)[:64]
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        rois.append(roi)
        items = []
        for k in range(shape[0]):
            plane = labels[k] == n
            if not plane.any():
                continue
            for line in mask_contours(plane):
                ijk = np.c_[line, np.full(len(line), k), np.ones(len(line))]
                lps = (ijk @ to_lps.T)[:, :3]
                item = Dataset()
                item.ContourImageSequence = DSequence([image_ref(sources[k])])
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(lps)
                item.ContourData = [f"{v:.4f}" for v in lps.ravel()]
                items.append(item)
        rc = Dataset()
        rc.ReferencedROINumber = n
        rc.ROIDisplayColor = list(_COLOURS[(n - 1) % len(_COLOURS)])
        rc.ContourSequence = DSequence(items)
        contours_seq.append(rc)
        obs = Dataset()
        obs.ObservationNumber, obs.ReferencedROINumber = n, n
        obs.RTROIInterpretedType, obs.ROIInterpreter = "GTV", ""
        observations.append(obs)
    ds.StructureSetROISequence = DSequence(rois)
    ds.ROIContourSequence = DSequence(contours_seq)
    ds.RTROIObservationsSequence = DSequence(observations)
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def write_rtstruct(labels_zyx: np.ndarray, sources: Sequence[Any], out_path: str | os.PathLike,
                   roi_names: Sequence[str], label: str = "unipet lesions", overwrite: bool = False) -> Any:
    """Write :func:`build_rtstruct`'s dataset atomically to ``out_path``; returns the dataset."""
    out_path = check_writable(out_path, overwrite)
    ds = build_rtstruct(labels_zyx, sources, roi_names, label=label)
    with atomic_path(out_path, overwrite=overwrite) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return ds


def lesion_rois(mask_zyx: np.ndarray, task: str | None, per_lesion: bool,
                connectivity: int = 18) -> tuple[np.ndarray, list[str]]:
    """A mask as ROIs: one per connected lesion (``<task> lesion N``, raster order as ``unipet quantify``) or
    one for all (``<task> lesions``); ``task`` None names them ``lesion``."""
    from unipet.components import label_components

    binary = np.asarray(mask_zyx) > 0
    stem = f"{task} " if task else ""
    if not per_lesion:
        return binary.astype(np.uint16), [f"{stem}lesions"]
    labels, n = label_components(binary, connectivity)
    return labels.astype(np.uint16), [f"{stem}lesion {i}" for i in range(1, n + 1)]
