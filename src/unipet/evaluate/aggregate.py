"""Aggregate per-study metrics per task (cancer type) and overall, with percentile-bootstrap intervals.

``bootstrap_ci`` resamples the studies with replacement ``n_boot`` times and takes the
``(1 ± confidence) / 2`` percentiles of the resampled means. NaN values (a metric that is undefined for a
study, e.g. Dice of a lesion-free study) are left out before resampling and counted in ``n_nan``. The
generator is ``numpy.random.default_rng(seed)`` restarted for every (group, metric), so a summary is
reproducible from its seed and all metrics of one group are resampled with the same study indices
(a paired bootstrap) when they have the same NaN pattern.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from unipet.errors import ConfigError

UNASSIGNED_TASK = "unassigned"
OVERALL = "overall"
TABLE1_COLUMNS = {"DSC": "dice", "IoU": "iou"}
_BOOT_CHUNK = 256  # resamples drawn at once; bounds memory at _BOOT_CHUNK × n indices


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> dict[str, float | int]:
    """Mean and percentile-bootstrap interval of ``values``.

    Returns:
        ``{"mean", "lo", "hi", "n", "n_nan"}``: ``n`` finite values used, ``n_nan`` left out. With no finite
        value everything but the counts is NaN; with one value the interval is that value.
    """
    if n_boot < 1:
        raise ConfigError(f"n_boot must be a positive number of bootstrap resamples, got {n_boot}; 1000 is usual")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")
    arr = np.asarray(values, dtype=np.float64).ravel()
    finite = arr[~np.isnan(arr)]
    n = int(finite.size)
    out: dict[str, float | int] = {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": n, "n_nan": int(arr.size - n)}
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, _BOOT_CHUNK):
        stop = min(start + _BOOT_CHUNK, n_boot)
        means[start:stop] = finite[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    out.update(mean=float(finite.mean()), lo=float(lo), hi=float(hi))
    return out


def aggregate(per_case: Any, metrics: Sequence[str], group: str = "task", n_boot: int = 1000,
              confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Per-group and overall bootstrap summaries of per-study metric columns.

    Args:
        per_case: pandas DataFrame, one row per study, with the ``group`` column and the ``metrics`` columns.
        metrics: column names to summarise (missing columns raise ConfigError).
        group: grouping column; empty / NaN groups are reported as ``"unassigned"``.

    Returns:
        ``{"overall": {"n_cases", metric: stats...}, "tasks": {name: {"n_cases", metric: stats...}}}`` where
        stats is :func:`bootstrap_ci`'s dict; tasks in sorted order.
    """
    missing = [m for m in metrics if m not in per_case.columns]
    if missing:
        raise ConfigError(f"metrics {missing} are not columns of the per-case table (columns: {list(per_case.columns)})")
    groups = per_case[group].fillna(UNASSIGNED_TASK).replace("", UNASSIGNED_TASK) if group in per_case.columns \
        else np.full(len(per_case), UNASSIGNED_TASK)

    def summarise(rows: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"n_cases": int(len(rows))}
        for m in metrics:
            entry[m] = bootstrap_ci(rows[m].to_numpy(dtype=np.float64), n_boot, confidence, seed)
        return entry

    tasks = {str(name): summarise(per_case[groups == name]) for name in sorted(set(groups))}
    return {"overall": summarise(per_case), "tasks": tasks}


def format_ci(stats: Mapping[str, float], scale: float = 100.0, decimals: int = 1) -> str:
    """``"mean (lo–hi)"`` of a :func:`bootstrap_ci` dict, values multiplied by ``scale``; ``"—"`` if undefined
    (no finite value; a dash rather than "n/a", which CSV readers turn into NaN)."""
    if stats["n"] == 0 or math.isnan(stats["mean"]):
        return "—"
    f = lambda v: f"{v * scale:.{decimals}f}"  # noqa: E731 - local formatter
    return f"{f(stats['mean'])} ({f(stats['lo'])}–{f(stats['hi'])})"


def table1(summary: Mapping[str, Any], columns: Mapping[str, str] | None = None, scale: float = 100.0,
           decimals: int = 1) -> Any:
    """Table-1 layout: one row per task then ``overall``; columns ``n`` (studies) and each metric as
    ``"mean (lo–hi)"`` (default DSC and IoU in %, i.e. ``scale=100``).

    Args:
        summary: the output of :func:`aggregate`.
        columns: ``{column title: metric key}``; default ``{"DSC": "dice", "IoU": "iou"}``.

    Returns:
        pandas DataFrame indexed by task name.
    """
    import pandas as pd

    columns = dict(columns or TABLE1_COLUMNS)
    rows = {**summary["tasks"], OVERALL: summary["overall"]}
    data = []
    for name, entry in rows.items():
        row: dict[str, Any] = {"task": name, "n": entry["n_cases"]}
        for title, key in columns.items():
            if key not in entry:
                raise ConfigError(f"metric {key!r} is not in the summary; aggregate it first")
            row[title] = format_ci(entry[key], scale, decimals)
        data.append(row)
    return pd.DataFrame(data).set_index("task")
