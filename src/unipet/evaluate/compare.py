"""Paired comparison of two methods on the same studies: the significance tests behind the papers' "p < 0.05".

Both prediction folders are scored against the same references (``unipet.evaluate.runner.evaluate``); the
per-study metrics are paired by case, and for each metric, overall and per task:

- the mean of each method and the mean paired difference ``B - A``, with its percentile-bootstrap 95 %
  interval (resampling studies, ``unipet.evaluate.aggregate.bootstrap_ci``);
- the paired t-test p value (``scipy.stats.ttest_rel``, two-sided);
- the Wilcoxon signed-rank p value (``scipy.stats.wilcoxon``, two-sided, zero differences dropped as in
  Wilcoxon's original test; 1.0 when every difference is zero).

A study counts for a metric only where both methods have a finite value (e.g. HD95 and Dice are undefined on
lesion-free references and left out; ``n`` says how many pairs were used). Studies that only one method
predicted are listed and not compared.

Files written to ``out_dir`` (atomically; existing files refused unless ``overwrite``): ``paired.csv`` (one row
per study: ``case``, ``task`` and ``<metric>_a`` / ``<metric>_b`` per metric), ``comparison.csv`` (one row per
group and metric) and ``summary.json`` (the same, with the settings and the unpaired cases).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from unipet.errors import ConfigError, InputFileError
from unipet.evaluate.aggregate import OVERALL, bootstrap_ci
from unipet.fileio import atomic_path, atomic_write_json, check_writable

#: metrics compared by default (columns of ``per_case.csv``)
DEFAULT_METRICS = ("dice", "iou", "hd95_mm", "fpv_ml", "fnv_ml", "lesion_sensitivity", "lesion_f1")
OUTPUT_FILES = ("paired.csv", "comparison.csv", "summary.json")
COMPARISON_COLUMNS = ("group", "metric", "n", "mean_a", "mean_b", "diff", "diff_lo", "diff_hi", "t_p", "wilcoxon_p")


def paired_test(a: Sequence[float], b: Sequence[float], n_boot: int = 1000, confidence: float = 0.95,
                seed: int = 0) -> dict[str, float | int]:
    """Paired statistics of ``b - a`` over the pairs where both are finite.

    Returns:
        ``{"n", "mean_a", "mean_b", "diff", "diff_lo", "diff_hi", "t_p", "wilcoxon_p"}``; with fewer than 2
        pairs the p values are NaN (and everything but ``n`` with no pair).
    """
    from scipy import stats

    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ConfigError(f"paired values need equal lengths, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    d = y - x
    ci = bootstrap_ci(d, n_boot, confidence, seed)
    out: dict[str, float | int] = {"n": int(d.size), "mean_a": float(x.mean()) if d.size else math.nan,
                                   "mean_b": float(y.mean()) if d.size else math.nan, "diff": ci["mean"],
                                   "diff_lo": ci["lo"], "diff_hi": ci["hi"], "t_p": math.nan,
                                   "wilcoxon_p": math.nan}
    if d.size < 2:
        return out
    if np.all(d == 0):
        out.update(t_p=1.0, wilcoxon_p=1.0)
        return out
    out["t_p"] = float(stats.ttest_rel(y, x).pvalue) if np.std(d) > 0 else 0.0
    out["wilcoxon_p"] = float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    return out


def compare_tables(per_case_a: Any, per_case_b: Any, metrics: Sequence[str] = DEFAULT_METRICS,
                   n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Pair two per-case tables (``case``, ``task`` and metric columns, as ``unipet evaluate`` writes) and test.

    Returns:
        ``{"paired": DataFrame, "comparison": DataFrame, "only_a": [...], "only_b": [...]}``; ``comparison`` has
        :data:`COMPARISON_COLUMNS`, one row per group (``overall`` first, then each task) and metric.
    """
    import pandas as pd

    for name, table in (("A", per_case_a), ("B", per_case_b)):
        if "case" not in table.columns:
            raise InputFileError(f"the per-case table of method {name} has no 'case' column; give unipet evaluate's "
                                 "per_case.csv")
    metrics = list(metrics)
    missing = [m for m in metrics if m not in per_case_a.columns or m not in per_case_b.columns]
    if missing:
        raise ConfigError(f"metric(s) {missing} are not columns of both per-case tables; choose from "
                          f"{sorted(set(per_case_a.columns) & set(per_case_b.columns) - {'case', 'task'})}")
    a = per_case_a.drop_duplicates("case").set_index("case")
    b = per_case_b.drop_duplicates("case").set_index("case")
    cases = [c for c in a.index if c in b.index]
    if not cases:
        raise InputFileError("the two methods share no scored study; predict the same cases (file names "
                             "<case>.nii.gz) with both")
    paired = pd.DataFrame({"case": cases})
    task_a = a.loc[cases, "task"] if "task" in a.columns else pd.Series([OVERALL] * len(cases), index=cases)
    paired["task"] = task_a.astype(str).to_numpy()
    for m in metrics:
        paired[f"{m}_a"] = pd.to_numeric(a.loc[cases, m], errors="coerce").to_numpy(dtype=np.float64)
        paired[f"{m}_b"] = pd.to_numeric(b.loc[cases, m], errors="coerce").to_numpy(dtype=np.float64)
    rows = []
    groups = [(OVERALL, paired)] + [(str(t), g) for t, g in paired.groupby("task", sort=True)]
    if paired["task"].nunique() == 1:
        groups = groups[:1]
    for group, frame in groups:
        for m in metrics:
            stats = paired_test(frame[f"{m}_a"], frame[f"{m}_b"], n_boot, confidence, seed)
            rows.append({"group": group, "metric": m, **stats})
    return {"paired": paired, "comparison": pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS)),
            "only_a": sorted(str(c) for c in a.index if c not in b.index),
            "only_b": sorted(str(c) for c in b.index if c not in a.index)}


def compare(pred_a: str | Path, pred_b: str | Path, reference: str | Path, out_dir: str | Path | None = None,
            metrics: Sequence[str] = DEFAULT_METRICS, config=None, workers: int = 1,
            overwrite: bool = False) -> dict[str, Any]:
    """Score two prediction folders against one reference and compare them pairwise (see module docstring).

    Args:
        pred_a, pred_b: folders of predicted masks ``<case>.nii.gz`` of methods A and B.
        reference: folder of reference masks or a manifest JSON.
        out_dir: where to write :data:`OUTPUT_FILES` (None writes nothing).
        metrics: per-case metrics to compare.
        config: ``EvaluationConfig`` of both scorings (its ``n_boot``, ``confidence`` and ``seed`` also set the
            bootstrap of the differences).
        workers: processes scoring cases.
        overwrite: replace existing outputs.

    Returns:
        ``compare_tables``' dict plus ``"summary"`` (what ``summary.json`` holds).
    """
    from unipet.evaluate.runner import EvaluationConfig, evaluate

    config = config or EvaluationConfig()
    if out_dir is not None:
        for name in OUTPUT_FILES:
            check_writable(Path(out_dir) / name, overwrite)
    if Path(pred_a).resolve() == Path(pred_b).resolve():
        raise ConfigError(f"both methods point to {pred_a}; give the prediction folders of two methods")
    scored_a = evaluate(pred_a, reference, None, config=config, workers=workers)
    scored_b = evaluate(pred_b, reference, None, config=config, workers=workers)
    result = compare_tables(scored_a.per_case, scored_b.per_case, metrics, config.n_boot, config.confidence,
                            config.seed)
    comparison = result["comparison"]
    summary = {
        "method_a": str(pred_a), "method_b": str(pred_b), "n_paired": int(len(result["paired"])),
        "only_a": result["only_a"], "only_b": result["only_b"],
        "difference": "B - A per study; mean with percentile-bootstrap interval over studies",
        "tests": {"t_p": "paired t-test (scipy.stats.ttest_rel), two-sided",
                  "wilcoxon_p": "Wilcoxon signed-rank (scipy.stats.wilcoxon, zero differences dropped), two-sided"},
        "settings": {"n_boot": config.n_boot, "confidence": config.confidence, "seed": config.seed,
                     "positive_only": config.positive_only, "missing_as_empty": config.missing_as_empty},
        "results": {g: {r["metric"]: {k: r[k] for k in COMPARISON_COLUMNS[2:]} for _, r in f.iterrows()}
                    for g, f in comparison.groupby("group", sort=False)},
    }
    result["summary"] = summary
    if out_dir is not None:
        out = Path(out_dir)
        for frame, name in ((result["paired"], "paired.csv"), (comparison, "comparison.csv")):
            with atomic_path(out / name, overwrite=overwrite) as tmp:
                frame.to_csv(tmp, index=False)
        atomic_write_json(out / "summary.json", summary, overwrite=overwrite)
    return result
