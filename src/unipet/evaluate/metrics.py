"""Voxel-wise and topology metrics between a predicted and a reference binary mask.

All masks are ``(z, y, x)`` arrays on the same grid; any non-zero voxel is foreground. Spacing is the
``(z, y, x)`` voxel size in mm.

Empty masks (stated once, used everywhere in ``unipet.evaluate``):

* Dice and IoU are NaN when the reference is empty — **also when both are empty**: a lesion-free study has
  no lesion to overlap, so it is scored by its false-positive volume (autoPET convention) and left out of
  mean Dice rather than counted as a perfect 1. A non-empty reference with an empty prediction gives 0.
* precision is NaN when the prediction is empty; recall is NaN when the reference is empty.
* HD95 is NaN when either mask is empty (a distance to nothing is undefined).
* clDice is NaN when the reference is empty and 0 when only the prediction is.

HD95 is the larger of the two directed 95th-percentile surface distances (prediction→reference and
reference→prediction), in mm — the definition of MONAI's ``compute_hausdorff_distance(percentile=95)``,
whose results :func:`hd95` reproduces (see its docstring for why it is not called directly).

clDice (Shit et al., CVPR 2021) needs skeletons. ``skimage`` is not a dependency, so :func:`skeleton`
applies the clDice paper's own soft-skeleton recursion to a binary volume: with ``E`` the erosion by the
6-neighbourhood (the paper's min-pooling over 3×1×1, 1×3×1, 1×1×3) and ``O(X) = D(E(X))`` an opening with
``D`` the 3×3×3 dilation (its max-pooling), ``S = ∪_k (E^k(X) \\ O(E^k(X)))`` iterated until ``E^k(X)`` is
empty. On binary input the soft recursion reduces exactly to this (Lantuéjoul's morphological skeleton);
it lies inside the object and on its medial axis but, unlike homotopic thinning (Lee 1994), it is not
guaranteed to be connected. It is computed in voxel units (clDice is a ratio of voxel counts).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

from unipet.errors import ConfigError, ImageGeometryError
from unipet.components import foreground_box

NAN = float("nan")


def mask_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays after checking that they share a 3-D shape."""
    if pred.shape != ref.shape:
        raise ImageGeometryError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}; "
                                 "resample the prediction onto the reference grid (nearest neighbour) first")
    if pred.ndim != 3:
        raise ImageGeometryError(f"masks must be 3-D (z, y, x), got shape {pred.shape}")
    return _as_bool(pred), _as_bool(ref)


def _as_bool(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    return mask if mask.dtype == bool else mask != 0


def confusion(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int]:
    """Voxel counts ``(true positives, false positives, false negatives)``."""
    p, r = mask_pair(pred, ref)
    tp = int(np.count_nonzero(p & r))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(r)) - tp


def _ratio(num: float, den: float) -> float:
    return NAN if den == 0 else float(num) / float(den)


def dice(pred: np.ndarray, ref: np.ndarray, empty: float | None = None) -> float:
    """Dice similarity coefficient ``2|P∩R| / (|P|+|R|)``.

    An empty reference gives NaN (undefined), or with ``empty`` given: ``empty`` when the prediction is empty
    too, else 0 (training-time validation scores a correctly empty prediction 1).
    """
    tp, fp, fn = confusion(pred, ref)
    if tp + fn == 0:
        return NAN if empty is None else (float(empty) if fp == 0 else 0.0)
    return 2.0 * tp / (2 * tp + fp + fn)


def label_dice(prediction: np.ndarray, reference: np.ndarray, classes: int | None = None) -> dict[int, float]:
    """Dice of every label ``1 .. K - 1`` present in ``reference`` (``(z, y, x)`` integer maps on one grid).

    Counted in one pass with a joint histogram (``bincount`` of ``pred * K + ref``) rather than a mask per label;
    ``classes`` is K (default: the largest label of either map + 1).

    Raises:
        ConfigError: the maps are not of one shape.
    """
    if prediction.shape != reference.shape:
        raise ConfigError(f"label maps of shapes {prediction.shape} and {reference.shape} are not on one grid")
    p, r = prediction.astype(np.int64).ravel(), reference.astype(np.int64).ravel()
    k = int(classes or max(int(p.max(initial=0)), int(r.max(initial=0))) + 1)
    joint = np.bincount(p * k + r, minlength=k * k).reshape(k, k)  # [pred, ref]
    tp = np.diag(joint)
    pred_n, ref_n = joint.sum(1), joint.sum(0)
    return {int(c): float(2 * tp[c] / (pred_n[c] + ref_n[c])) for c in range(1, k) if ref_n[c] > 0}


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union (Jaccard) ``|P∩R| / |P∪R|``; NaN when the reference is empty."""
    tp, fp, fn = confusion(pred, ref)
    return NAN if tp + fn == 0 else tp / (tp + fp + fn)


def precision(pred: np.ndarray, ref: np.ndarray) -> float:
    """Voxel precision ``|P∩R| / |P|``; NaN when the prediction is empty."""
    tp, fp, _ = confusion(pred, ref)
    return _ratio(tp, tp + fp)


def recall(pred: np.ndarray, ref: np.ndarray) -> float:
    """Voxel recall (sensitivity) ``|P∩R| / |R|``; NaN when the reference is empty."""
    tp, _, fn = confusion(pred, ref)
    return _ratio(tp, tp + fn)


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a bool mask: the mask minus its erosion by the 6-neighbourhood (outside = background)."""
    return mask & ~ndimage.binary_erosion(mask)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float], percentile: float = 95.0) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm; NaN when either mask is empty.

    Same definition and result as MONAI's ``compute_hausdorff_distance(percentile=95, spacing=...)``
    (surface = mask XOR its 6-neighbourhood erosion; distances between surface voxel centres in mm; the larger
    of the two directed percentiles, linear interpolation), which the tests check. Written here with a k-d tree
    on the surface voxels of the union's bounding box because MONAI converts the whole cropped volume to
    float tensors and costs seconds to import per process; on a whole-body study this is several times faster.
    """
    from scipy.spatial import cKDTree

    p, r = mask_pair(pred, ref)
    if not p.any() or not r.any():
        return NAN
    box = foreground_box(p, r, pad=1)
    scale = np.asarray(spacing_zyx, dtype=np.float64)
    pts_p = np.argwhere(surface(p[box])) * scale
    pts_r = np.argwhere(surface(r[box])) * scale
    d_pr = cKDTree(pts_r).query(pts_p, k=1)[0]
    d_rp = cKDTree(pts_p).query(pts_r, k=1)[0]
    return float(max(np.percentile(d_pr, percentile), np.percentile(d_rp, percentile)))


_CROSS = ndimage.generate_binary_structure(3, 1)
_CUBE = np.ones((3, 3, 3), dtype=bool)


def _skeleton_block(block: np.ndarray) -> np.ndarray:
    """The clDice binary skeleton of one zero-padded block (see the module docstring)."""
    img = block
    skel = np.zeros_like(block)
    while img.any():
        eroded = ndimage.binary_erosion(img, _CROSS)
        skel |= img & ~ndimage.binary_dilation(eroded, _CUBE)
        img = eroded
    return skel


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Binary skeleton ``(z, y, x)`` bool of a binary mask (clDice soft-skeleton recursion run to completion).

    Each 26-connected component is skeletonised in its own bounding box (padded by one voxel); the
    operators reach one voxel, so this equals skeletonising the whole volume, at the cost of the lesions only.
    """
    import cc3d

    mask = np.asarray(mask) != 0
    out = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        return out
    labels = cc3d.connected_components(np.ascontiguousarray(mask), connectivity=26)
    for lab, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        block = np.pad(labels[box] == lab, 1)  # zero border: the image edge counts as background
        out[box] |= _skeleton_block(block)[1:-1, 1:-1, 1:-1]
    return out


def cldice(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Centreline Dice with its two halves.

    Returns:
        ``{"cldice", "topology_precision", "topology_sensitivity"}``: topology precision is the fraction
        of the prediction's skeleton inside the reference (NaN for an empty prediction), topology
        sensitivity the fraction of the reference's skeleton inside the prediction (NaN for an empty
        reference); clDice is their harmonic mean, NaN for an empty reference and 0 for an empty prediction.
    """
    p, r = mask_pair(pred, ref)
    sp, sr = skeleton(p), skeleton(r)
    tprec = _ratio(np.count_nonzero(sp & r), np.count_nonzero(sp))
    tsens = _ratio(np.count_nonzero(sr & p), np.count_nonzero(sr))
    if not r.any():
        value = NAN
    elif not p.any() or tprec + tsens == 0:
        value = 0.0
    else:
        value = 2.0 * tprec * tsens / (tprec + tsens)
    return {"cldice": value, "topology_precision": tprec, "topology_sensitivity": tsens}


def voxel_metrics(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float]) -> dict[str, float]:
    """Dice, IoU, precision, recall, HD95 (mm) and the two masks' volumes (mL) in one pass over the voxels."""
    tp, fp, fn = confusion(pred, ref)
    vox_ml = math.prod(float(s) for s in spacing_zyx) / 1000.0
    return {
        "dice": NAN if tp + fn == 0 else 2.0 * tp / (2 * tp + fp + fn),
        "iou": NAN if tp + fn == 0 else tp / (tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "hd95_mm": hd95(pred, ref, spacing_zyx),
        "pred_ml": (tp + fp) * vox_ml,
        "ref_ml": (tp + fn) * vox_ml,
    }
