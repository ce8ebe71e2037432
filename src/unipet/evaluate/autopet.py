"""The autoPET challenge's false-positive and false-negative volumes, exactly as the challenge defines them.

* FPV: total volume (mL) of the *predicted* connected components that share no voxel with the reference.
* FNV: total volume (mL) of the *reference* connected components that share no voxel with the prediction.

Components use 18-connectivity (the challenge's ``cc3d.connected_components(..., connectivity=18)``); the
voxel volume comes from the spacing. A lesion-free study (empty reference) is scored on FPV only: its FNV
is NaN (like its Dice). A component that touches the other mask by a single voxel counts as found whole.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from unipet.evaluate.metrics import NAN, mask_pair
from unipet.components import ComponentOverlap, component_overlap, voxel_volume_ml


def autopet_from_overlap(overlap: ComponentOverlap, spacing_zyx: Sequence[float]) -> dict[str, float]:
    """``{"fpv_ml", "fnv_ml"}`` from a :func:`~unipet.components.component_overlap` of
    ``(prediction, reference)`` (in that order)."""
    vox_ml = voxel_volume_ml(spacing_zyx)
    fpv = float(overlap.sizes_a[overlap.untouched_a()].sum()) * vox_ml
    fnv = float(overlap.sizes_b[overlap.untouched_b()].sum()) * vox_ml if overlap.n_b else NAN
    return {"fpv_ml": fpv, "fnv_ml": fnv}


def autopet_metrics(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float], connectivity: int = 18) -> dict[str, float]:
    """``{"fpv_ml", "fnv_ml"}`` of one study (see the module docstring for the empty-reference rule)."""
    p, r = mask_pair(pred, ref)
    return autopet_from_overlap(component_overlap(p, r, connectivity), spacing_zyx)


def false_positive_volume(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float], connectivity: int = 18) -> float:
    """FPV in mL: predicted components (``connectivity``-connected) touching no reference voxel."""
    return autopet_metrics(pred, ref, spacing_zyx, connectivity)["fpv_ml"]


def false_negative_volume(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float], connectivity: int = 18) -> float:
    """FNV in mL: reference components touched by no predicted voxel; NaN for a lesion-free reference."""
    return autopet_metrics(pred, ref, spacing_zyx, connectivity)["fnv_ml"]
