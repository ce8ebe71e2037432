"""Target-spacing planning from a dataset fingerprint (nnU-Net v2's rule for the 3d_fullres configuration).

The cache and every checkpoint record the spacing the network is trained at; prediction resamples each input to
it and returns the mask on the input's own grid. When a user gives no spacing, ``plan_target_spacing`` plans one:

1. the **median** spacing of the training cases, per axis (z, y, x);
2. **anisotropic data** (nnU-Net's ``determine_fullres_target_spacing``): when the coarsest axis's median spacing
   is more than ``anisotropy`` (3) times the finest other axis's *and* that axis has fewer than a third as many
   voxels (median size) as the smallest other axis, the coarse axis gets the **10th percentile** of its spacings
   instead of the median — resampling the thick-slice cases up a little rather than the many thin-slice cases
   down a lot — but never finer than the other axes' largest spacing (nnU-Net adds 1e-5 there).

Source: nnU-Net v2's released code (``ExperimentPlanner.determine_fullres_target_spacing``); written here from
that description, not copied. Median sizes are taken on the body-cropped grid as nnU-Net does on its cropped
data; a fingerprint without per-case values (caches of unipet < 0.2) falls back to the median spacing.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from unipet.errors import ConfigError

#: ratio between the coarsest and the other axes' spacing from which data count as anisotropic (nnU-Net: 3)
ANISOTROPY = 3.0


def plan_target_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]],
                        anisotropy: float = ANISOTROPY) -> tuple[float, float, float]:
    """Target ``(z, y, x)`` spacing in mm for cases of ``spacings [n, 3]`` (mm) and ``shapes [n, 3]`` (voxels)."""
    sp = np.asarray(spacings, dtype=np.float64).reshape(-1, 3)
    sz = np.asarray(shapes, dtype=np.float64).reshape(-1, 3)
    if sp.shape[0] == 0 or sp.shape != sz.shape:
        raise ConfigError("spacing planning needs one (z, y, x) spacing and one shape per case; the fingerprint "
                          "holds none — rebuild the cache or give --spacing")
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ConfigError("a case has a voxel size that is zero, negative or not finite; fix its header or give "
                          "--spacing")
    target = np.median(sp, axis=0)
    size = np.median(sz * sp / target, axis=0)  # median shape once resampled to the median spacing
    coarse = int(np.argmax(target))
    others = [a for a in range(3) if a != coarse]
    aniso_spacing = target[coarse] > anisotropy * max(target[a] for a in others)
    aniso_voxels = size[coarse] * anisotropy < min(size[a] for a in others)
    if aniso_spacing and aniso_voxels:
        low = float(np.percentile(sp[:, coarse], 10))
        finest_allowed = max(target[a] for a in others)
        target[coarse] = low if low >= finest_allowed else finest_allowed + 1e-5
    return tuple(float(round(t, 6)) for t in target)  # type: ignore[return-value]


def plan_from_fingerprint(fingerprint: dict[str, Any]) -> tuple[float, float, float]:
    """``plan_target_spacing`` on a cache fingerprint (``unipet.data.cache.compute_fingerprint``)."""
    per_case = fingerprint.get("cases_spacing"), fingerprint.get("cases_shape")
    if per_case[0] and per_case[1]:
        return plan_target_spacing(per_case[0], per_case[1])
    median = (fingerprint.get("spacing") or {}).get("median")
    if not median:
        raise ConfigError("the dataset fingerprint has no spacings to plan from; rebuild the cache or give --spacing")
    return tuple(float(s) for s in median)  # type: ignore[return-value]
