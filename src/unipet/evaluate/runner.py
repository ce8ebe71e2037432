"""Evaluate a folder of predicted masks against reference masks (a folder or a manifest).

Predictions are ``<pred_dir>/<case>.nii.gz`` (or ``.nii``), matched by file name to ``<ref_dir>/<case>.nii.gz``
or to a manifest's cases (``case.label`` is the reference, ``case.task`` the task). Each study gets voxel
metrics (:mod:`unipet.evaluate.metrics`), autoPET FPV/FNV (:mod:`unipet.evaluate.autopet`) and lesion-wise
detection (:mod:`unipet.evaluate.lesions`); :mod:`unipet.evaluate.aggregate` summarises them per task.

Files written to ``out_dir`` (atomically; existing files are refused unless ``overwrite``):

* ``per_case.csv``: one row per scored study (columns :data:`PER_CASE_COLUMNS`, + clDice ones and the
  quantification-error ones :data:`SUV_COLUMNS` if asked);
* ``lesions.csv``: one row per reference lesion (case, task, lesion, volume_ml, size_bin, detected, dice, best_iou);
* ``summary.json``: settings, per-task and overall means with bootstrap CIs, pooled lesion detection by size,
  the Table-1 rows, and the cases that could not be scored (``missing_predictions``, ``no_reference``,
  ``unmatched_predictions``);
* ``table1.csv``: rows = tasks + overall, columns n, DSC and IoU as "mean (lo–hi)" in %.

With ``positive_only`` the overlap metrics (everything but FPV) are reported on lesion-positive studies only
(H2ASeg-style): they are blanked for lesion-free studies in ``per_case.csv`` and left out of the summary;
FPV is averaged over all studies either way, as autoPET does.

With ``with_suv`` (needs a manifest as the reference: the PET of each case is read from it) each study also gets
the errors of the two biomarkers a mask is made for: MTV (predicted minus reference volume, mL, and its absolute
value in % of the reference) and SUVmean (SUVmean inside the prediction minus SUVmean inside the reference; NaN
when the prediction is empty).
"""
from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from unipet.errors import ConfigError, ImageGeometryError, InputFileError, LabelError
from unipet.evaluate.aggregate import UNASSIGNED_TASK, aggregate, table1
from unipet.evaluate.autopet import autopet_from_overlap
from unipet.evaluate.lesions import DEFAULT_SIZE_BINS_ML, check_rule, detection_from_overlap, size_bin_labels
from unipet.evaluate.metrics import cldice, mask_pair, voxel_metrics
from unipet.fileio import atomic_path, atomic_write_json, check_writable
from unipet.io.nifti import case_name
from unipet.components import DEFAULT_CONNECTIVITY, check_connectivity, component_overlap, foreground_box
from unipet.study import same_grid, spacing_from_affine

PER_CASE_COLUMNS = (
    "case", "task", "positive", "missing_prediction", "ref_ml", "pred_ml", "dice", "iou", "precision", "recall",
    "hd95_mm", "fpv_ml", "fnv_ml", "lesions_gt", "lesions_pred", "lesions_detected", "lesions_tp_pred",
    "lesion_sensitivity", "lesion_precision", "lesion_f1",
)
CLDICE_COLUMNS = ("cldice", "topology_precision", "topology_sensitivity")
SUV_COLUMNS = ("mtv_error_ml", "mtv_abs_error_pct", "suvmean_ref", "suvmean_pred", "suvmean_error",
               "suvmean_abs_error")
SUV_SUMMARY = ("mtv_error_ml", "mtv_abs_error_pct", "suvmean_error", "suvmean_abs_error")
LESION_COLUMNS = ("case", "task", "lesion", "volume_ml", "size_bin", "detected", "dice", "best_iou")
# Metrics that ``positive_only`` restricts to lesion-positive studies (FPV is always over all studies).
OVERLAP_METRICS = ("dice", "iou", "precision", "recall", "hd95_mm", "fnv_ml", "lesion_sensitivity",
                   "lesion_precision", "lesion_f1") + CLDICE_COLUMNS + SUV_COLUMNS
SUMMARY_METRICS = ("dice", "iou", "precision", "recall", "hd95_mm", "fpv_ml", "fnv_ml", "lesion_sensitivity",
                   "lesion_precision", "lesion_f1")
OUTPUT_FILES = ("per_case.csv", "lesions.csv", "summary.json", "table1.csv")
GRID_TOLERANCE_MM = 1e-2


@dataclass
class EvaluationConfig:
    """Settings of an evaluation (all recorded in ``summary.json``).

    Attributes:
        connectivity: 6, 18 or 26 for FPV/FNV and lesion components (autoPET: 18).
        rule, iou_threshold: lesion matching (see :mod:`unipet.evaluate.lesions`).
        size_bins_ml: lesion-size bin edges (mL) for sensitivity by size.
        with_cldice: also compute clDice and its topology precision / sensitivity.
        with_suv: also compute the MTV and SUVmean errors (:data:`SUV_COLUMNS`); needs a manifest reference.
        positive_only: overlap metrics on lesion-positive studies only.
        missing_as_empty: score a reference case without a prediction as an empty prediction
            (otherwise it is only listed in ``missing_predictions``).
        n_boot, confidence, seed: percentile bootstrap of the means.
    """

    connectivity: int = DEFAULT_CONNECTIVITY
    rule: str = "overlap"
    iou_threshold: float = 0.5
    size_bins_ml: tuple[float, ...] = DEFAULT_SIZE_BINS_ML
    with_cldice: bool = False
    with_suv: bool = False
    positive_only: bool = False
    missing_as_empty: bool = False
    n_boot: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def validate(self) -> None:
        check_connectivity(self.connectivity)
        check_rule(self.rule, self.iou_threshold)
        size_bin_labels(self.size_bins_ml)


@dataclass
class CasePair:
    """A reference mask to score, its task and its prediction (None when missing)."""

    case: str
    reference: Path
    prediction: Path | None
    task: str | None = None
    pet: Path | None = None


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns: the two tables (pandas DataFrames) and the summary dict."""

    per_case: Any
    lesions: Any
    summary: dict[str, Any] = field(default_factory=dict)


def _nifti_files(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputFileError(f"{what} folder {folder} does not exist or is not a folder; check the path")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = case_name(path)
        if name is None or not path.is_file():
            continue
        if name in found:
            raise InputFileError(f"{what} folder {folder} holds both {found[name].name} and {path.name}; keep one")
        found[name] = path
    return found


def collect_pairs(pred_dir: str | Path, reference: str | Path) -> tuple[list[CasePair], dict[str, list[str]]]:
    """Match predictions to references.

    Args:
        pred_dir: folder of ``<case>.nii.gz`` predictions.
        reference: folder of ``<case>.nii.gz`` reference masks, or a manifest JSON file.

    Returns:
        ``(pairs, unscored)``: pairs in case order (prediction None where missing) and
        ``{"no_reference": [...], "unmatched_predictions": [...]}``: manifest cases without a label and
        predictions that match no reference case.
    """
    preds = _nifti_files(Path(pred_dir), "prediction")
    reference = Path(reference)
    no_reference: list[str] = []
    if reference.is_dir():
        refs = _nifti_files(reference, "reference")
        pairs = [CasePair(name, path, preds.get(name)) for name, path in refs.items()]
    elif reference.is_file():
        from unipet.io.manifest import Manifest

        pairs = []
        for c in Manifest.load(reference):
            if not c.label:
                no_reference.append(c.case_id)
                continue
            pet = c.images.get("PET")
            pairs.append(CasePair(c.case_id, Path(c.label), preds.get(c.case_id), c.task, Path(pet) if pet else None))
    else:
        raise InputFileError(f"reference {reference} does not exist; give a folder of reference masks or a manifest JSON")
    known = {p.case for p in pairs} | set(no_reference)
    return pairs, {"no_reference": no_reference, "unmatched_predictions": sorted(set(preds) - known)}


def _binary(volume: np.ndarray, what: str) -> np.ndarray:
    if not np.all((volume == 0) | (volume == 1)):
        raise LabelError(f"{what} must be a binary 0/1 mask but holds other values; threshold it (e.g. > 0.5) or "
                         "select the lesion label before evaluating")
    return volume.astype(bool)


def suv_errors(pred: np.ndarray, ref: np.ndarray, suv: np.ndarray, spacing_zyx: Sequence[float]) -> dict[str, float]:
    """MTV and SUVmean errors of a predicted mask (see the module docstring): keys of :data:`SUV_COLUMNS`.

    Args:
        pred, ref: binary ``(z, y, x)`` masks; suv: ``(z, y, x)`` PET in SUV on the same grid; spacing in mm.
    """
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    p, r = pred.astype(bool), ref.astype(bool)
    ref_ml, pred_ml = r.sum() * voxel_ml, p.sum() * voxel_ml
    suv = np.nan_to_num(suv.astype(np.float64), nan=0.0)
    ref_mean = float(suv[r].mean()) if r.any() else math.nan
    pred_mean = float(suv[p].mean()) if p.any() else math.nan
    error = pred_mean - ref_mean
    return {"mtv_error_ml": float(pred_ml - ref_ml),
            "mtv_abs_error_pct": float(abs(pred_ml - ref_ml) / ref_ml * 100.0) if ref_ml else math.nan,
            "suvmean_ref": ref_mean, "suvmean_pred": pred_mean, "suvmean_error": error,
            "suvmean_abs_error": abs(error)}


def evaluate_case(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float],
                  config: EvaluationConfig | None = None,
                  suv: np.ndarray | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """All metrics of one study.

    Args:
        pred, ref: binary ``(z, y, x)`` masks on one grid.
        spacing_zyx: voxel spacing in mm.
        suv: ``(z, y, x)`` PET in SUV on that grid, for the MTV / SUVmean errors (``config.with_suv``).

    Returns:
        ``(row, lesions)``: the per-case row (keys of :data:`PER_CASE_COLUMNS` but case/task/missing_prediction,
        plus clDice keys when asked) and one dict per reference lesion.
    """
    config = config or EvaluationConfig()
    p, r = mask_pair(pred, ref)
    quantification = suv_errors(p, r, suv, spacing_zyx) if config.with_suv and suv is not None else None
    # Every metric is unchanged by cropping to the union's bounding box plus one background voxel.
    box = foreground_box(p, r, pad=1) or (slice(0, 1),) * 3
    p, r = p[box], r[box]
    row: dict[str, Any] = {"positive": bool(r.any())}
    row.update(voxel_metrics(p, r, spacing_zyx))
    overlap = component_overlap(p, r, config.connectivity)
    row.update(autopet_from_overlap(overlap, spacing_zyx))
    det = detection_from_overlap(overlap, spacing_zyx, rule=config.rule, iou_threshold=config.iou_threshold,
                                 size_bins_ml=config.size_bins_ml)
    row.update(lesions_gt=det.n_ref, lesions_pred=det.n_pred, lesions_detected=det.detected,
               lesions_tp_pred=det.true_positive_pred, lesion_sensitivity=det.sensitivity,
               lesion_precision=det.precision, lesion_f1=det.f1)
    if config.with_cldice:
        row.update(cldice(p, r))
    if quantification is not None:
        row.update(quantification)
    if config.positive_only and not row["positive"]:
        row.update({key: math.nan for key in OVERLAP_METRICS if key in row})
    return row, det.lesions


def _score_pair(pair: CasePair, config: EvaluationConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from unipet.io.nifti import load_volume

    ref, ref_affine = load_volume(pair.reference, what=f"case {pair.case} reference mask")
    ref = _binary(ref, f"case {pair.case} reference mask")
    if pair.prediction is None:
        pred = np.zeros_like(ref)
    else:
        pred, pred_affine = load_volume(pair.prediction, what=f"case {pair.case} prediction")
        if not same_grid(pred.shape, pred_affine, ref.shape, ref_affine, tol_mm=GRID_TOLERANCE_MM):
            raise ImageGeometryError(
                f"case {pair.case}: prediction grid {pred.shape} differs from the reference grid {ref.shape} "
                "(shape or affine); resample the prediction onto the reference grid with nearest-neighbour "
                "interpolation before evaluating")
        pred = _binary(pred, f"case {pair.case} prediction")
    suv = None
    if config.with_suv:
        if pair.pet is None:
            raise ConfigError(f"case {pair.case} has no PET to measure SUVmean in; give a manifest whose cases "
                              "carry their PET as the reference, or leave out the SUV errors")
        suv, pet_affine = load_volume(pair.pet, what=f"case {pair.case} PET")
        if not same_grid(suv.shape, pet_affine, ref.shape, ref_affine, tol_mm=GRID_TOLERANCE_MM):
            raise ImageGeometryError(f"case {pair.case}: PET grid {suv.shape} differs from the reference grid "
                                     f"{ref.shape}; resample the mask onto the PET grid before evaluating")
    row, lesions = evaluate_case(pred, ref, spacing_from_affine(ref_affine), config, suv)
    head = {"case": pair.case, "task": pair.task, "missing_prediction": pair.prediction is None}
    return {**head, **row}, [{"case": pair.case, "task": pair.task, **les} for les in lesions]


def _pooled_detection(lesions: Any, per_case: Any, bins: Sequence[str]) -> dict[str, Any]:
    """Lesion detection pooled over all lesions of a set of studies (not a mean of per-study rates)."""
    n, hit = int(len(lesions)), int(lesions["detected"].sum()) if len(lesions) else 0
    n_pred, tp_pred = int(per_case["lesions_pred"].sum()), int(per_case["lesions_tp_pred"].sum())
    by_size = {}
    for name in bins:
        sel = lesions[lesions["size_bin"] == name] if len(lesions) else lesions
        k, d = int(len(sel)), int(sel["detected"].sum()) if len(sel) else 0
        by_size[name] = {"n": k, "detected": d, "sensitivity": d / k if k else math.nan}
    return {"lesions": n, "detected": hit, "sensitivity": hit / n if n else math.nan,
            "predicted_components": n_pred, "true_positive_components": tp_pred,
            "precision": tp_pred / n_pred if n_pred else math.nan, "by_size": by_size}


def evaluate(pred_dir: str | Path, reference: str | Path, out_dir: str | Path | None = None,
             config: EvaluationConfig | None = None, workers: int = 1, overwrite: bool = False) -> EvaluationResult:
    """Score every reference case and write the tables and summary.

    Args:
        pred_dir: folder of predicted masks ``<case>.nii.gz``.
        reference: folder of reference masks or a manifest JSON.
        out_dir: where to write :data:`OUTPUT_FILES`; None writes nothing.
        config: settings (defaults: autoPET's 18-connectivity, overlap matching, 1000 bootstrap resamples).
        workers: processes scoring cases in parallel (results are identical for any number).
        overwrite: replace existing output files.

    Raises:
        OutputExistsError before any work when an output file exists and ``overwrite`` is False;
        InputFileError when no case can be scored; ImageGeometryError for a prediction on another grid;
        LabelError for non-binary masks.
    """
    import pandas as pd

    config = config or EvaluationConfig()
    config.validate()
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if out_dir is not None:
        for name in OUTPUT_FILES:
            check_writable(Path(out_dir) / name, overwrite)
    pairs, unscored = collect_pairs(pred_dir, reference)
    missing = [p.case for p in pairs if p.prediction is None]
    todo = pairs if config.missing_as_empty else [p for p in pairs if p.prediction is not None]
    if not todo:
        raise InputFileError(f"no prediction in {pred_dir} matches a reference case of {reference} (expected "
                             "<case>.nii.gz named like the references); check both paths, or pass "
                             "--missing-as-empty to score missing predictions as empty")
    no_pet = [p.case for p in todo if p.pet is None]
    if config.with_suv and no_pet:
        raise ConfigError(f"the MTV / SUVmean errors need each case's PET, which {reference} does not give for "
                          f"{no_pet[0]}; give a manifest (`unipet import`) as the reference")
    if workers == 1:
        results = [_score_pair(p, config) for p in todo]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_score_pair, todo, [config] * len(todo)))

    columns = (list(PER_CASE_COLUMNS) + (list(CLDICE_COLUMNS) if config.with_cldice else [])
               + (list(SUV_COLUMNS) if config.with_suv else []))
    per_case = pd.DataFrame([r for r, _ in results], columns=columns)
    lesions = pd.DataFrame([les for _, ls in results for les in ls], columns=list(LESION_COLUMNS))
    per_case["task"] = per_case["task"].fillna(UNASSIGNED_TASK)
    lesions["task"] = lesions["task"].fillna(UNASSIGNED_TASK)

    metrics = (list(SUMMARY_METRICS) + (list(CLDICE_COLUMNS) if config.with_cldice else [])
               + (list(SUV_SUMMARY) if config.with_suv else []))
    stats = aggregate(per_case, metrics, "task", config.n_boot, config.confidence, config.seed)
    bins = size_bin_labels(config.size_bins_ml)
    cohort = per_case[per_case["positive"].astype(bool)] if config.positive_only else per_case
    detection = {"overall": _pooled_detection(lesions, cohort, bins),
                 "tasks": {t: _pooled_detection(lesions[lesions["task"] == t], cohort[cohort["task"] == t], bins)
                           for t in stats["tasks"]}}
    t1 = table1(stats)
    summary = {
        "n_cases": int(len(per_case)),
        "n_positive": int(per_case["positive"].sum()),
        "n_negative": int((~per_case["positive"].astype(bool)).sum()),
        "cohort": "positive_only" if config.positive_only else "all",
        "settings": {**asdict(config), "size_bins": bins,
                     "matching": f"{config.rule}" + (f" (IoU >= {config.iou_threshold})" if config.rule == "iou" else
                                                     " (any shared voxel)"),
                     "connectivity_meaning": f"{config.connectivity}-connected voxel neighbourhood",
                     "hd95": "max of the two directed 95th-percentile surface-voxel distances (MONAI definition), mm",
                     "empty_reference": "dice, iou, recall, hd95, fnv, lesion sensitivity/F1 are NaN and excluded",
                     "bootstrap": "percentile bootstrap over studies; NaNs excluded and counted in n_nan"},
        "missing_predictions": missing,
        "missing_scored_as_empty": bool(config.missing_as_empty),
        **unscored,
        "overall": stats["overall"],
        "tasks": stats["tasks"],
        "lesion_detection": detection,
        "table1": t1.to_dict(orient="index"),
    }
    if out_dir is not None:
        out = Path(out_dir)
        _write_csv(per_case, out / "per_case.csv", overwrite)
        _write_csv(lesions, out / "lesions.csv", overwrite)
        _write_csv(t1.reset_index(), out / "table1.csv", overwrite)
        atomic_write_json(out / "summary.json", summary, overwrite=overwrite)
    return EvaluationResult(per_case=per_case, lesions=lesions, summary=summary)


def _write_csv(frame: Any, path: Path, overwrite: bool) -> None:
    with atomic_path(path, overwrite=overwrite) as tmp:
        frame.to_csv(tmp, index=False)

