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
    volume = np.ascontiguousarray(nifti_to_zyx(data), dtype=dtype)
    return volume, np.asarray(img.affine, dtype=np.float64)


def save_volume(volume: np.ndarray, affine: np.ndarray, path: str | Path, overwrite: bool = False) -> Path:
    """Write a ``(z, y, x)`` volume as NIfTI atomically (dtype kept; labels should be uint8).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    import nibabel as nib

    path = check_writable(path, overwrite)
    if volume.ndim != 3:
        raise ImageGeometryError(f"can only write 3-D volumes, got shape {volume.shape}")
    img = nib.Nifti1Image(np.ascontiguousarray(zyx_to_nifti(volume)), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with atomic_path(path, overwrite=overwrite) as tmp:
        nib.save(img, str(tmp))
    return path


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
