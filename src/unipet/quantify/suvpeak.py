"""SUVpeak: the mean SUV in a 1 cm³ sphere, in its two common definitions.

* **IBSI local intensity peak** (``suv_peak_ibsi``): the sphere is centred on the hottest voxel of the
  lesion (when several voxels share the maximum, the highest of their peaks is taken, as IBSI says).
* **PERCIST peak** (``suv_peak_percist``): the sphere is placed where its mean is largest, its centre on
  any voxel centre of the lesion. Per PERCIST 1.0 (Wahl et al., J Nucl Med 2009) the sphere itself is not
  clipped to the lesion: it averages whatever SUV lies around the centre, lesion or not. The IBSI sphere
  likewise averages all image voxels. So PERCIST ≥ IBSI always.

The sphere of volume V (default 1 mL) has radius ``(3V / 4π)^(1/3)`` = 6.2035 mm. Partial voxels are
weighted by the fraction of each voxel inside the sphere, estimated by supersampling every voxel on an
``s × s × s`` grid of sub-voxel points (default s = 5); the weights are computed once per spacing as a
convolution kernel. ``supersample=1`` gives IBSI's "voxel centre inside the sphere" rule. Voxels outside
the image do not count (weights renormalised). The peak map is the SUV correlated with the normalised
kernel on the lesion's bounding box padded by the kernel radius (``scipy.signal.convolve``, which picks
direct or FFT convolution by cost), so whole-body volumes cost only their lesions' extent.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from unipet.errors import ConfigError, ImageGeometryError

PEAK_VOLUME_ML = 1.0
DEFAULT_SUPERSAMPLE = 5


def sphere_radius_mm(volume_ml: float = PEAK_VOLUME_ML) -> float:
    """Radius in mm of a sphere of ``volume_ml`` mL (1 mL → 6.2035 mm)."""
    return (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)


@functools.lru_cache(maxsize=32)
def _kernel(spacing_zyx: tuple[float, float, float], volume_ml: float, supersample: int) -> np.ndarray:
    radius = sphere_radius_mm(volume_ml)
    axes = []
    for s in spacing_zyx:
        half = int(math.ceil(radius / s + 0.5))  # a voxel whose centre is r + s/2 away can still touch the sphere
        centres = np.arange(-half, half + 1) * s
        offsets = ((np.arange(supersample) + 0.5) / supersample - 0.5) * s
        axes.append((centres[:, None] + offsets[None, :]) ** 2)  # (n, supersample) squared coordinates
    dz, dy, dx = axes
    d2 = dz[:, :, None, None, None, None] + dy[None, None, :, :, None, None] + dx[None, None, None, None, :, :]
    weights = (d2 <= radius * radius).mean(axis=(1, 3, 5))
    weights.setflags(write=False)
    return weights


def sphere_kernel(spacing_zyx: Sequence[float], volume_ml: float = PEAK_VOLUME_ML,
                  supersample: int = DEFAULT_SUPERSAMPLE) -> np.ndarray:
    """Partial-volume weights of a sphere of ``volume_ml`` mL on a grid of ``spacing_zyx`` mm.

    Returns:
        Read-only float64 array ``(2hz+1, 2hy+1, 2hx+1)`` centred on the middle voxel; each entry is the
        fraction (0..1) of that voxel inside the sphere, so ``sum × voxel volume ≈ volume_ml``.
    """
    spacing = tuple(float(s) for s in spacing_zyx)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ImageGeometryError(f"voxel spacing must be three positive mm values (z, y, x), got {spacing_zyx}")
    if volume_ml <= 0 or int(supersample) < 1:
        raise ConfigError(f"the SUVpeak sphere needs a positive volume and supersample >= 1, got {volume_ml} mL "
                          f"and {supersample}")
    return _kernel(spacing, float(volume_ml), int(supersample))


@dataclass(frozen=True)
class SuvPeaks:
    """Both SUVpeaks of one lesion (SUV) and the ``(z, y, x)`` voxel index of each sphere centre."""

    ibsi: float
    ibsi_index: tuple[int, int, int]
    percist: float
    percist_index: tuple[int, int, int]


def suv_peaks_in_box(suv: np.ndarray, lesion_in_box: np.ndarray, box: Sequence[slice], spacing_zyx: Sequence[float],
                     volume_ml: float = PEAK_VOLUME_ML, supersample: int = DEFAULT_SUPERSAMPLE) -> SuvPeaks:
    """SUVpeaks of a lesion given as a mask of its bounding box.

    Args:
        suv: whole SUV volume ``(z, y, x)``.
        lesion_in_box: bool mask of the lesion with the shape of ``suv[box]`` (non-empty).
        box: ``(z, y, x)`` slices of the lesion's bounding box in ``suv``.
        spacing_zyx: voxel spacing in mm.
    """
    kernel = sphere_kernel(spacing_zyx, volume_ml, supersample)
    if not lesion_in_box.any():
        raise ValueError("suv_peaks_in_box needs a non-empty lesion")
    half = [k // 2 for k in kernel.shape]
    region = tuple(slice(max(b.start - h, 0), min(b.stop + h, n)) for b, h, n in zip(box, half, suv.shape))
    lesion = np.zeros([r.stop - r.start for r in region], dtype=bool)
    lesion[tuple(slice(b.start - r.start, b.stop - r.start) for b, r in zip(box, region))] = lesion_in_box
    peak_map = _peak_map(np.asarray(suv[region], dtype=np.float64), kernel)

    values = np.where(lesion, suv[region], -np.inf)
    hottest = np.flatnonzero(values == values.max())
    ibsi_flat = hottest[np.argmax(peak_map.ravel()[hottest])]
    percist_flat = np.flatnonzero(lesion)[np.argmax(peak_map[lesion])]

    def index(flat: int) -> tuple[int, int, int]:
        return tuple(int(i + r.start) for i, r in zip(np.unravel_index(flat, lesion.shape), region))

    return SuvPeaks(ibsi=float(peak_map.ravel()[ibsi_flat]), ibsi_index=index(ibsi_flat),
                    percist=float(peak_map.ravel()[percist_flat]), percist_index=index(percist_flat))


def _peak_map(suv_region: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Sphere-mean SUV at every voxel of ``suv_region``; voxels beyond the region count as outside the image.

    The region reaches the kernel radius past the lesion wherever the image allows, so for lesion voxels
    only the true image edge truncates the sphere; the weights are renormalised there.
    """
    from scipy.signal import convolve

    # The kernel is point-symmetric, so convolution equals correlation.
    weighted = convolve(suv_region, kernel, mode="same")
    coverage = convolve(np.ones_like(suv_region), kernel, mode="same")
    return weighted / coverage


def suv_peaks(suv: np.ndarray, lesion: np.ndarray, spacing_zyx: Sequence[float], volume_ml: float = PEAK_VOLUME_ML,
              supersample: int = DEFAULT_SUPERSAMPLE) -> SuvPeaks:
    """IBSI and PERCIST SUVpeak of one lesion given as a full-size mask ``(z, y, x)`` (non-zero = lesion)."""
    from scipy import ndimage

    lesion = np.asarray(lesion) != 0
    if lesion.shape != suv.shape:
        raise ImageGeometryError(f"lesion mask shape {lesion.shape} differs from the SUV shape {suv.shape}; "
                                 "resample the mask onto the PET grid first")
    if not lesion.any():
        raise ValueError("suv_peaks needs a non-empty lesion mask")
    box = ndimage.find_objects(lesion.astype(np.uint8))[0]
    return suv_peaks_in_box(suv, lesion[box], box, spacing_zyx, volume_ml, supersample)


def suv_peak_ibsi(suv: np.ndarray, lesion: np.ndarray, spacing_zyx: Sequence[float], **kwargs) -> float:
    """IBSI local intensity peak (SUV) of one lesion: 1 mL sphere centred on its hottest voxel."""
    return suv_peaks(suv, lesion, spacing_zyx, **kwargs).ibsi


def suv_peak_percist(suv: np.ndarray, lesion: np.ndarray, spacing_zyx: Sequence[float], **kwargs) -> float:
    """PERCIST SUVpeak of one lesion: the highest 1 mL sphere mean with its centre in the lesion."""
    return suv_peaks(suv, lesion, spacing_zyx, **kwargs).percist
