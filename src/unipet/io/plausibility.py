"""Plausibility of a PET/CT pair: values and geometry that no real examination has, caught before a model turns
them into a confident, silently wrong answer.

Each class of problem is either **refused** (a ``UnipetError``: the CLI prints one line and exits 2) when no
meaningful result can come out of it, or **warned** about in one line on the ``unipet`` logger when the result
is still meaningful for part of the study. Thresholds are unipet's choice, set far from what real data show:
none fires on the 35 real FDG PET/CT sarcoma crops of ``../shared/real_sts_fdg`` (partial fields of view, CT
-1000 HU outside the CT's field), on the phantoms of ``unipet phantom`` or on the IBSI SUV DROs (checked by
``tests/io/test_plausibility.py``).

============================  =========  ==============================================================
class                          action     why
============================  =========  ==============================================================
volume too small               refuse     fewer than ``MIN_SLICES`` voxels along an axis (one slice): not
                                          a 3-D examination; nothing to segment in 3-D.
volume too large               refuse /   the memory a prediction needs (``bytes_per_voxel`` x voxels,
                               warn       estimated from the header before reading) above
                                          ``MEMORY_REFUSE`` of this machine's RAM is refused with the
                                          numbers; above ``LARGE_VOXELS`` voxels it is warned about.
PET that is a CT in HU         refuse     more than 1 % of voxels below -100: SUV is never that negative
                                          (PET and CT swapped, or a CT saved as SUV.nii.gz).
PET far below SUV              refuse     99.9th percentile below ``SUV_PLAUSIBLE_MIN`` (0.5): even muscle
                                          and blood pool are above it in FDG PET; the values are scaled
                                          (MBq/mL, a kg/g slip); every lesion would be missed.
PET far above SUV              refuse     activity concentration (``unipet.io.manifest.check_suv_range``).
CT not in HU                   refuse     no voxel below -200 (no air, no lung) and either 10 % above 500
                                          (the -1024 RescaleIntercept was not applied) or PET-like values
                                          (median -1..5 SUV); the network's CT window would be wrong
                                          everywhere. A tight crop inside the body passes.
CT not covering the PET        warn       the CT's field misses part of the PET's body along z (more than
                                          ``COVERAGE_WARN`` of the body's slices): where the CT is missing
                                          lesions are not found, elsewhere the result holds.
PET and CT not aligned         refuse     the body outlines of PET and CT overlap best with the CT moved by
                                          ``MISALIGN_MM`` mm or more (a shifted header, the wrong CT): the
                                          network sees lesions where the anatomy is not.
============================  =========  ==============================================================
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from unipet.errors import ImageGeometryError, IntensityError

log = logging.getLogger("unipet")

#: fewest voxels along any axis of a PET or CT (unipet's choice: one or two slices are not a 3-D examination)
MIN_SLICES = 3
#: voxels above which a volume is reported as unusually large (a whole-body PET has ~10-30 million)
LARGE_VOXELS = 64_000_000
#: bytes of working memory per input voxel of a prediction (float32 PET, CT, resampled and preprocessed
#: copies, probabilities and masks; about ten float32 volumes)
BYTES_PER_VOXEL = 40
#: refuse a study whose estimated working memory is above this fraction of the machine's RAM
MEMORY_REFUSE = 0.8
#: SUV below which the 99.9th percentile of a PET cannot be FDG uptake in SUV
SUV_PLAUSIBLE_MIN = 0.5
#: fraction of the PET body's slices that the CT may miss before a warning
COVERAGE_WARN = 0.1
#: shift (mm) of the best PET/CT body overlap from none at which the pair counts as misaligned
MISALIGN_MM = 25.0
#: ... and the gain in Dice of the body outlines that the shift must bring
MISALIGN_DICE_GAIN = 0.03
#: body outline thresholds: PET SUV and CT HU
BODY_SUV, BODY_HU = 0.3, -500.0


def total_memory_bytes() -> int | None:
    """Physical memory of this machine in bytes (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_volume_size(path: str | Path, what: str) -> tuple[int, ...]:
    """Check a NIfTI file's shape from its header alone, before its voxels are read.

    Raises:
        ImageGeometryError: fewer than ``MIN_SLICES`` voxels along an axis, or an estimated working memory above
            ``MEMORY_REFUSE`` of the RAM (the message gives the shape, the estimate and the RAM).

    Returns:
        The shape (as stored, ``(x, y, z)``).
    """
    import nibabel as nib

    try:
        shape = tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception:  # unreadable headers are load_volume's to report, with its message
        return ()
    spatial = shape[:3] if len(shape) >= 3 else shape
    check_shape(spatial, f"{what} ({path})")
    return shape


def check_shape(shape: Sequence[int], what: str, memory: int | None = None) -> None:
    """``check_volume_size``'s rules on a shape (``memory``: RAM in bytes, default this machine's)."""
    if len(shape) < 3 or min(shape) < MIN_SLICES:
        raise ImageGeometryError(f"{what} has shape {tuple(shape)}: fewer than {MIN_SLICES} voxels along an axis is "
                                 "not a 3-D examination (one slice?); give the whole PET/CT volume")
    voxels = int(np.prod(shape, dtype=np.int64))
    need = voxels * BYTES_PER_VOXEL
    memory = total_memory_bytes() if memory is None else memory
    dims = "x".join(str(s) for s in shape)
    if memory and need > MEMORY_REFUSE * memory:
        raise ImageGeometryError(
            f"{what} is {dims} = {voxels / 1e6:.0f} million voxels; segmenting it needs about {need / 2**30:.1f} GiB "
            f"of memory, more than {MEMORY_REFUSE:.0%} of this machine's {memory / 2**30:.1f} GiB; crop or resample "
            "it (a whole-body PET has 10-30 million voxels), or use a machine with more memory")
    if voxels > LARGE_VOXELS:
        log.warning("%s is %s = %.0f million voxels (a whole-body PET has 10-30 million); segmenting it needs about "
                    "%.1f GiB of memory", what, dims, voxels / 1e6, need / 2**30)


def check_pet_is_pet(pet: np.ndarray, source: str) -> None:
    """Refuse a "PET" whose values are a CT's (HU) or far below any SUV; see the module table."""
    if not pet.size:
        return
    below = float((pet < -100).mean())
    if below > 0.01:
        raise IntensityError(
            f"{source} looks like a CT in HU, not a PET in SUV ({below:.0%} of voxels below -100, lowest "
            f"{float(pet.min()):.0f}); give the PET as the PET (are PET and CT swapped, or a CT saved as SUV.nii.gz?)")
    if not (pet > 0).any():
        return  # an empty reconstruction: unipet.io.nifti.check_pet_values names it
    peak = float(np.percentile(pet, 99.9))
    if peak < SUV_PLAUSIBLE_MIN:
        raise IntensityError(
            f"{source} is far below SUV (99.9th percentile {peak:.3g} < {SUV_PLAUSIBLE_MIN}; even muscle and blood "
            "are above it in FDG PET): it is scaled (MBq/mL? g instead of kg?); convert it to SUV first (`unipet "
            "suv` for DICOM, --dose-bq/--weight-kg/--delay-s for PET.nii.gz in Bq/mL)")


def check_ct_is_hu(ct: np.ndarray, source: str) -> None:
    """Refuse a CT that is not in HU (see the module table). Only a CT without any air or lung (no voxel below
    -200 HU) is examined, and refused when it is either

    - stored without its rescale: at least 10 % of voxels above 500 (tissue at ~1024 + HU), or
    - a PET's values: median within -1..5 and 99.9th percentile below 50 (SUV, not tissue at 20-70 HU);

    a tight crop inside the body (soft tissue, fat or bone in HU, no air) passes.
    """
    if not ct.size or (ct < -200).any():
        return
    lo, hi = float(ct.min()), float(ct.max())
    if float((ct > 500).mean()) >= 0.1:
        raise IntensityError(
            f"{source} is not in Hounsfield units: no air or lung and {float((ct > 500).mean()):.0%} of voxels above "
            f"500 (values {lo:.0f}..{hi:.0f}): it was stored without its rescale (0..4095 instead of -1024..3071); "
            "apply the DICOM RescaleIntercept (usually -1024), e.g. ct - 1024")
    median = float(np.median(ct))
    if -1 <= median <= 5 and float(np.percentile(ct, 99.9)) < 50:
        raise IntensityError(
            f"{source} is not in Hounsfield units: its values ({lo:.3g}..{hi:.3g}, median {median:.2g}) look like a "
            "PET's (SUV), not a CT's; are PET and CT swapped?")


def check_pet_ct_pair(pet: np.ndarray, ct: np.ndarray, spacing_zyx: Sequence[float], source: str) -> None:
    """Check that the CT (on the PET grid) covers and matches the PET: a one-line warning for a CT that misses
    part of the PET's body along z, ``ImageGeometryError`` for a pair whose body outlines line up only when the CT
    is shifted by ``MISALIGN_MM`` mm or more (see the module table)."""
    body_pet = pet > BODY_SUV
    body_ct = ct > BODY_HU
    slices = body_pet.reshape(body_pet.shape[0], -1).mean(axis=1) > 0.01
    if slices.sum() >= MIN_SLICES:
        missing = slices & ~body_ct.reshape(body_ct.shape[0], -1).any(axis=1)
        frac = float(missing.sum() / slices.sum())
        if frac > COVERAGE_WARN:
            z = np.flatnonzero(missing)
            log.warning("%s: the CT misses %d of the %d slices where the PET shows the body (slices %d-%d, %.0f%%); "
                        "lesions there will not be found — give a CT that covers the whole PET", source,
                        int(missing.sum()), int(slices.sum()), int(z[0]), int(z[-1]), 100 * frac)
    shift, dice0, dice_best = best_body_shift(body_pet, body_ct, spacing_zyx)
    if np.linalg.norm(shift) >= MISALIGN_MM and dice_best - dice0 >= MISALIGN_DICE_GAIN:
        raise ImageGeometryError(
            f"{source}: the PET and the CT do not line up: their body outlines match best with the CT moved by "
            f"(z, y, x) = ({shift[0]:.0f}, {shift[1]:.0f}, {shift[2]:.0f}) mm (Dice {dice0:.2f} -> {dice_best:.2f}); "
            "one header's position is wrong or the CT is from another examination — fix the geometry or give the "
            "matching CT")


def best_body_shift(body_pet: np.ndarray, body_ct: np.ndarray, spacing_zyx: Sequence[float],
                    search_mm: float = 80.0, step_mm: float = 8.0) -> tuple[np.ndarray, float, float]:
    """The shift of the CT body outline that best overlaps the PET's.

    Both masks are block-averaged to about ``step_mm`` voxels; every shift within ``search_mm`` along each axis
    is scored by the Dice of the outlines (FFT cross-correlation; voxels shifted out of the field count as lost).

    Returns:
        ``(shift_zyx_mm, dice_at_zero, best_dice)``.
    """
    from scipy.signal import fftconvolve

    spacing = np.asarray(spacing_zyx, dtype=float)
    factor = np.maximum(1, np.round(step_mm / spacing)).astype(int)
    a, b = _block_mean(body_pet, factor) > 0.5, _block_mean(body_ct, factor) > 0.5
    total = float(a.sum() + b.sum())
    if total == 0:
        return np.zeros(3), 1.0, 1.0
    corr = fftconvolve(a.astype(np.float32), b[::-1, ::-1, ::-1].astype(np.float32), mode="full")
    centre = np.array(b.shape) - 1  # index of zero shift
    reach = np.minimum(np.floor(search_mm / (spacing * factor)).astype(int), np.array(a.shape) - 1)
    window = corr[tuple(slice(c - r, c + r + 1) for c, r in zip(centre, reach))]
    best = np.unravel_index(int(np.argmax(window)), window.shape)
    offset = np.array(best) - reach
    dice0 = 2 * float(corr[tuple(centre)]) / total
    dice_best = 2 * float(window[best]) / total
    return offset * spacing * factor, dice0, dice_best


def _block_mean(mask: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """``mask`` averaged over ``factor`` blocks (the trailing partial block kept)."""
    out = mask.astype(np.float32)
    for axis, f in enumerate(factor):
        if f > 1:
            n = out.shape[axis]
            pad = (-n) % f
            if pad:
                widths = [(0, 0)] * 3
                widths[axis] = (0, pad)
                out = np.pad(out, widths, mode="edge")
            shape = list(out.shape)
            shape[axis:axis + 1] = [shape[axis] // f, f]
            out = out.reshape(shape).mean(axis=axis + 1)
    return out


def check_study(study) -> None:
    """The value and pair checks above on an in-memory ``unipet.Study`` (``load_study`` runs them on files)."""
    from unipet.study import spacing_from_affine

    check_shape(study.shape, f"study {study.study_id}")
    if study.pet is not None:
        check_pet_is_pet(study.pet, f"study {study.study_id} PET")
    if study.ct is not None:
        check_ct_is_hu(study.ct, f"study {study.study_id} CT")
    if study.pet is not None and study.ct is not None:
        check_pet_ct_pair(study.pet, study.ct, spacing_from_affine(study.affine), f"study {study.study_id}")
