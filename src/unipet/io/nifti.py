"""NIfTI reading and writing with validation, in unipet's ``(z, y, x)`` convention.

``load_volume`` returns ``(array_zyx, affine)``; ``save_volume`` writes atomically and refuses to
overwrite unless asked. The affine is nibabel's (RAS+, mm) for the reversed index — see ``unipet.study``.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from unipet.errors import ImageGeometryError, InputFileError, IntensityError
from unipet.fileio import atomic_path, check_writable
from unipet.study import nifti_to_zyx, zyx_to_nifti

# Rule for non-finite voxels (stated once, used by every importer): NaN and -Inf become the modality's
# background (0 SUV, -1024 HU), +Inf is an error because no scanner produces it legitimately.
BACKGROUND = {"PET": 0.0, "CT": -1024.0, "label": 0.0}


#: file name endings of NIfTI images
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def case_name(path: Path) -> str | None:
    """Case name of a NIfTI file (``abc.nii.gz`` → ``abc``), or None for other files."""
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def load_volume(path: str | Path, what: str = "image", dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3-D NIfTI file.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        what: what the file is meant to hold (used in error messages).
        dtype: NumPy dtype of the returned array (float32 for images, uint8 for labels).

    Returns:
        ``(volume, affine)``: volume ``(z, y, x)`` C-contiguous, affine 4×4 float64 (RAS, mm).

    Raises:
        InputFileError: missing, unreadable or corrupt file.
        ImageGeometryError: not a 3-D volume (a trailing singleton 4th axis is dropped).
    """
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{what} file {path} does not exist; check the path")
    if not path.is_file():
        raise InputFileError(f"{what} path {path} is a folder, not a NIfTI file")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise InputFileError(
            f"{what} file {path} cannot be read as NIfTI ({type(exc).__name__}: {exc}); the file is corrupt or "
            "truncated — copy it again from its source") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ImageGeometryError(
            f"{what} file {path} is {data.ndim}-D with shape {data.shape}; unipet needs one 3-D volume "
            "(split a 4-D series or stack 2-D slices first)")
    affine = np.asarray(img.affine, dtype=np.float64)
    check_header_geometry(img, affine, f"{what} file {path}")
    if np.issubdtype(np.dtype(dtype), np.integer) and data.size:
        lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
        dmin, dmax = float(np.nanmin(data)), float(np.nanmax(data))
        if dmin < lo or dmax > hi:
            raise ImageGeometryError(
                f"{what} file {path} holds values {dmin:g}..{dmax:g}, outside {np.dtype(dtype).name} "
                f"({lo}..{hi}); unipet never narrows values silently — remap them into that range first")
    volume = np.ascontiguousarray(nifti_to_zyx(data), dtype=dtype)
    return volume, affine


def read_description(path: str | Path) -> str:
    """The ``descrip`` field of a NIfTI file's header ("" when empty or unreadable); reads the header only."""
    import nibabel as nib

    try:
        raw = nib.load(str(path)).header["descrip"]
    except Exception:  # a damaged file has no usable description; the caller decides what that means
        return ""
    value = raw.item() if hasattr(raw, "item") else raw
    return (value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)).strip("\x00 ")


def check_header_geometry(img, affine: np.ndarray, source: str) -> None:
    """Refuse a NIfTI header whose geometry is unknown or impossible.

    Both sform and qform codes 0 mean the file says nothing about where its voxels are (nibabel then falls back
    to 1 mm voxels at the origin: volumes would be silently wrong); a singular or non-finite affine, or a voxel
    size of 0, cannot place voxels either.

    Raises:
        ImageGeometryError: naming the problem and the fix.
    """
    header = getattr(img, "header", None)
    if header is not None and hasattr(header, "get_sform"):
        if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
            raise ImageGeometryError(
                f"{source} has neither an sform nor a qform (both codes 0), so its voxel size and position are "
                "unknown (nibabel would assume 1 mm voxels); write the scanner geometry into the header (e.g. "
                "re-convert it from DICOM) and try again")
        zooms = header.get_zooms()[:3]
        if any(not np.isfinite(z) or z <= 0 for z in zooms):
            raise ImageGeometryError(f"{source} has voxel size {tuple(float(z) for z in zooms)} mm; every voxel size "
                                     "must be positive — fix the header (pixdim) from the scanner geometry")
    check_affine(affine, source)


def check_affine(affine: np.ndarray, source: str) -> None:
    """Refuse a non-finite or singular affine, or one with a zero voxel size (``ImageGeometryError``)."""
    affine = np.asarray(affine, dtype=np.float64)
    norms = np.linalg.norm(affine[:3, :3], axis=0) if affine.shape == (4, 4) else np.zeros(3)
    if not np.isfinite(affine).all() or np.any(norms < 1e-6) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ImageGeometryError(f"{source} has an impossible affine (voxel sizes {np.round(norms, 4).tolist()} mm, "
                                 "zero or not finite, or axes that are not independent); fix the header geometry")


def save_volume(volume: np.ndarray, affine: np.ndarray, path: str | Path, overwrite: bool = False,
                description: str | None = None) -> Path:
    """Write a ``(z, y, x)`` volume as NIfTI atomically (dtype kept; labels should be uint8).

    ``description`` (ASCII, at most 79 characters) goes into the header's ``descrip`` field; predictions record
    the checkpoint that made them there (``read_description``).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    import nibabel as nib

    path = check_writable(path, overwrite)
    img = to_nifti_image(volume, affine, description)
    with atomic_path(path, overwrite=overwrite) as tmp:
        nib.save(img, str(tmp))
    return path


def to_nifti_image(volume: np.ndarray, affine: np.ndarray, description: str | None = None):
    """A ``(z, y, x)`` volume as an in-memory ``nibabel.Nifti1Image`` (``(x, y, z)`` data, qform = sform = affine,
    dtype kept); ``description`` goes into ``descrip`` (ASCII, at most 79 characters)."""
    import nibabel as nib

    if volume.ndim != 3:
        raise ImageGeometryError(f"can only write 3-D volumes, got shape {volume.shape}")
    img = nib.Nifti1Image(np.ascontiguousarray(zyx_to_nifti(volume)), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    if description is not None:
        img.header["descrip"] = description.encode("ascii", "replace")[:79]
    return img


def check_pet_values(pet: np.ndarray, source: str, mask: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """unipet's one rule for physically impossible PET (SUV) values, applied the same way wherever PET is read
    (preprocess, predict and quantify).

    - NaN or ±Inf inside ``mask`` (a lesion mask on the same grid): ``IntensityError`` — the lesion's SUV
      cannot be known, and counting it as 0 would give SUVmax 0 and TLG 0.
    - +Inf anywhere: ``IntensityError`` (no scanner produces it); NaN / -Inf elsewhere: 0 SUV, with a warning.
    - No voxel above 0 (an all-zero or all-negative volume): ``IntensityError`` (an empty or failed
      reconstruction).
    - Negative SUV: clipped to 0 with a warning stating how many voxels and the lowest value (reconstruction
      noise below zero has no physical meaning; left in, it makes TLG and SUVmean wrong, even negative).

    Returns:
        ``(clean_pet, n_changed)``: a float32 copy when anything changed, else ``pet`` itself.
    """
    import logging

    log = logging.getLogger("unipet")
    pet = np.asarray(pet)
    finite = np.isfinite(pet)
    if mask is not None and not finite.all():
        inside = int((~finite & (np.asarray(mask) != 0)).sum())
        if inside:
            raise IntensityError(f"{source} has {inside} NaN/Inf voxels inside the lesion mask, so the lesions' SUV "
                                 "is unknown; re-export the PET (or fix the mask) — unipet does not guess them")
    pet, n_bad = replace_non_finite(pet, "PET", source)
    if n_bad:
        log.warning("%s: %d NaN/-Inf voxels set to 0 SUV", source, n_bad)
    if pet.size and not (pet > 0).any():
        raise IntensityError(f"{source} has no voxel above 0 SUV (all zero or negative): the reconstruction is "
                             "empty or failed; export the PET again")
    negative = pet < 0
    n_neg = int(negative.sum())
    if n_neg:
        low = float(pet.min())
        pet = np.where(negative, np.float32(0), pet).astype(np.float32, copy=False)
        log.warning("%s: %d negative SUV voxels (lowest %.3g) clipped to 0", source, n_neg, low)
    return pet, n_bad + n_neg


def replace_non_finite(volume: np.ndarray, modality: str, source: str = "volume") -> tuple[np.ndarray, int]:
    """Apply unipet's rule for non-finite voxels and report how many were replaced.

    NaN and -Inf become the modality background (PET 0 SUV, CT -1024 HU); +Inf raises IntensityError.

    Returns:
        ``(clean_volume, n_replaced)``.
    """
    if np.isposinf(volume).any():
        raise IntensityError(
            f"{source} ({modality}) holds +Inf voxels, which no scanner produces; the file is damaged — "
            "re-export it from the source")
    bad = ~np.isfinite(volume)
    n_bad = int(bad.sum())
    if n_bad:
        volume = volume.copy()
        volume[bad] = BACKGROUND[modality]
    return volume, n_bad
