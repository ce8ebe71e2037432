"""Lesion-wise detection: match the connected components of a prediction to those of the reference.

Lesions are connected components (connectivity 6, 18 or 26; default 18 like autoPET). The matching rule
decides when a predicted component P *matches* a reference lesion R:

* ``"overlap"`` (default): P and R share at least one voxel;
* ``"iou"``: ``|P∩R| / |P∪R| ≥ iou_threshold`` (for a threshold above 0.5 each lesion has at most one match).

Counting is done from each side, without a one-to-one assignment: a reference lesion is *detected* when
at least one predicted component matches it (sensitivity = detected / reference lesions), and a predicted
component is a *true positive* when it matches at least one reference lesion (precision = true-positive
components / predicted components). A lesion split into two predicted parts is one detection and two true
positives; two lesions merged into one predicted blob are two detections and one true positive.
F1 is the harmonic mean of the two; NaN for a lesion-free reference and 0 when nothing is predicted.

Per-lesion Dice compares a reference lesion with the union of the predicted components that match it (0
when undetected). Sensitivity by size bin uses the reference lesion's volume in mL; default bin edges
``(1, 5, 20)`` give bins ``<1``, ``1-5``, ``5-20``, ``>20`` mL (a lesion of exactly 5 mL is in ``5-20``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from unipet.errors import ConfigError
from unipet.evaluate.metrics import NAN, mask_pair
from unipet.components import DEFAULT_CONNECTIVITY, ComponentOverlap, component_overlap, voxel_volume_ml

MATCH_RULES = ("overlap", "iou")
DEFAULT_SIZE_BINS_ML = (1.0, 5.0, 20.0)


def size_bin_labels(edges_ml: Sequence[float]) -> list[str]:
    """Names of the bins cut by ascending ``edges_ml``: ``(1, 5)`` → ``["<1", "1-5", ">5"]``."""
    edges = [float(e) for e in edges_ml]
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] <= 0:
        raise ConfigError(f"size-bin edges must be positive and strictly ascending mL values, got {list(edges_ml)}; "
                          "e.g. 1,5,20")
    fmt = lambda v: f"{v:g}"  # noqa: E731 - local formatter
    names = [f"<{fmt(edges[0])}"]
    names += [f"{fmt(a)}-{fmt(b)}" for a, b in zip(edges, edges[1:])]
    names.append(f">{fmt(edges[-1])}")
    return names


def size_bin_of(volume_ml: float, edges_ml: Sequence[float]) -> str:
    """Name of the size bin holding ``volume_ml`` (lower edge inclusive)."""
    return size_bin_labels(edges_ml)[int(np.searchsorted(np.asarray(edges_ml, dtype=float), volume_ml, side="right"))]


@dataclass
class LesionDetection:
    """Lesion-wise detection result of one study (see the module docstring for the rules).

    Attributes:
        n_ref, n_pred: reference lesions and predicted components.
        detected: reference lesions matched by a prediction.
        true_positive_pred: predicted components matching a reference lesion.
        sensitivity, precision, f1: lesion-wise rates (NaN where undefined).
        lesions: one dict per reference lesion: ``lesion`` (1..n_ref), ``volume_ml``, ``size_bin``,
            ``detected``, ``dice``, ``best_iou`` (highest IoU with any predicted component).
        by_size: ``{bin: {"n", "detected", "sensitivity"}}`` for every bin, empty bins included.
        rule, iou_threshold, connectivity, size_bins_ml: the settings used.
    """

    n_ref: int
    n_pred: int
    detected: int
    true_positive_pred: int
    sensitivity: float
    precision: float
    f1: float
    lesions: list[dict[str, Any]] = field(default_factory=list)
    by_size: dict[str, dict[str, float]] = field(default_factory=dict)
    rule: str = "overlap"
    iou_threshold: float = 0.5
    connectivity: int = DEFAULT_CONNECTIVITY
    size_bins_ml: tuple[float, ...] = DEFAULT_SIZE_BINS_ML


def check_rule(rule: str, iou_threshold: float) -> None:
    """Raise ConfigError for an unknown matching rule or an IoU threshold outside (0, 1]."""
    if rule not in MATCH_RULES:
        raise ConfigError(f"unknown lesion matching rule {rule!r}; use one of {', '.join(MATCH_RULES)}")
    if rule == "iou" and not 0.0 < iou_threshold <= 1.0:
        raise ConfigError(f"IoU threshold must be in (0, 1], got {iou_threshold}; 0.5 is usual")


def match_lesions(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float], *,
                  connectivity: int = DEFAULT_CONNECTIVITY, rule: str = "overlap", iou_threshold: float = 0.5,
                  size_bins_ml: Sequence[float] = DEFAULT_SIZE_BINS_ML) -> LesionDetection:
    """Match predicted components to reference lesions of one study.

    Args:
        pred, ref: binary masks ``(z, y, x)`` on the same grid.
        spacing_zyx: voxel spacing in mm (for lesion volumes in mL).
        connectivity: 6, 18 or 26.
        rule: ``"overlap"`` or ``"iou"`` (with ``iou_threshold``).
        size_bins_ml: ascending bin edges in mL for sensitivity by lesion size.
    """
    check_rule(rule, iou_threshold)
    p, r = mask_pair(pred, ref)
    return detection_from_overlap(component_overlap(p, r, connectivity), spacing_zyx, rule=rule,
                                  iou_threshold=iou_threshold, size_bins_ml=size_bins_ml)


def detection_from_overlap(overlap: ComponentOverlap, spacing_zyx: Sequence[float], *, rule: str = "overlap",
                           iou_threshold: float = 0.5,
                           size_bins_ml: Sequence[float] = DEFAULT_SIZE_BINS_ML) -> LesionDetection:
    """:func:`match_lesions` from a :func:`~unipet.components.component_overlap` of
    ``(prediction, reference)`` (in that order)."""
    check_rule(rule, iou_threshold)
    bin_names = size_bin_labels(size_bins_ml)
    pred_size, ref_size = overlap.sizes_a, overlap.sizes_b
    n_pred, n_ref = overlap.n_a, overlap.n_b
    pi, ri, inter = overlap.pair_a, overlap.pair_b, overlap.shared
    pair_iou = inter / (ref_size[ri] + pred_size[pi] - inter)
    matched = pair_iou >= iou_threshold if rule == "iou" else inter > 0
    mri, mpi, minter = ri[matched], pi[matched], inter[matched]

    detected = np.zeros(n_ref + 1, dtype=bool)
    detected[mri] = True
    tp_pred = np.zeros(n_pred + 1, dtype=bool)
    tp_pred[mpi] = True
    matched_inter = np.bincount(mri, weights=minter, minlength=n_ref + 1)
    matched_pred_size = np.bincount(mri, weights=pred_size[mpi], minlength=n_ref + 1)
    best_iou = np.zeros(n_ref + 1)
    np.maximum.at(best_iou, ri, pair_iou)

    vox_ml = voxel_volume_ml(spacing_zyx)
    lesions = []
    for lab in range(1, n_ref + 1):
        volume = float(ref_size[lab]) * vox_ml
        lesions.append({
            "lesion": lab, "volume_ml": volume, "size_bin": size_bin_of(volume, size_bins_ml),
            "detected": bool(detected[lab]),
            "dice": float(2.0 * matched_inter[lab] / (ref_size[lab] + matched_pred_size[lab])),
            "best_iou": float(best_iou[lab]),
        })
    by_size = {}
    for name in bin_names:
        in_bin = [les for les in lesions if les["size_bin"] == name]
        hits = sum(les["detected"] for les in in_bin)
        by_size[name] = {"n": len(in_bin), "detected": hits, "sensitivity": hits / len(in_bin) if in_bin else NAN}

    n_detected, n_tp = int(detected.sum()), int(tp_pred.sum())
    sens = n_detected / n_ref if n_ref else NAN
    prec = n_tp / n_pred if n_pred else NAN
    if n_ref == 0:
        f1 = NAN
    elif n_pred == 0 or sens + prec == 0:
        f1 = 0.0
    else:
        f1 = 2.0 * sens * prec / (sens + prec)
    return LesionDetection(n_ref=n_ref, n_pred=n_pred, detected=n_detected, true_positive_pred=n_tp,
                           sensitivity=sens, precision=prec, f1=f1, lesions=lesions, by_size=by_size, rule=rule,
                           iou_threshold=float(iou_threshold), connectivity=overlap.connectivity,
                           size_bins_ml=tuple(float(e) for e in size_bins_ml))
