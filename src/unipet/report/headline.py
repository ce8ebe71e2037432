"""The report's headline: one readable row per cancer type (and overall) from ``unipet evaluate``'s outputs.

Columns: studies (lesion-positive), Dice as "mean (95 % CI)" over studies with a reference lesion, pooled
lesion-detection sensitivity overall and per lesion-size bin ("detected/lesions (%)"), and the autoPET
false-positive and false-negative volumes (mean (95 % CI), mL). The numbers are the ones ``summary.json``
holds (percentile-bootstrap intervals, NaN-excluded means); nothing is recomputed here.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

OVERALL = "overall"


def ci_text(stats: Mapping[str, Any] | None, decimals: int = 2) -> str:
    """``"0.52 (0.41–0.63)"`` from a ``bootstrap_ci`` dict (``mean``, ``lo``, ``hi``, ``n``); "–" if undefined."""
    if not stats or not stats.get("n") or stats.get("mean") is None or _nan(stats.get("mean")):
        return "–"
    mean, lo, hi = (float(stats[k]) for k in ("mean", "lo", "hi"))
    return f"{mean:.{decimals}f} ({lo:.{decimals}f}–{hi:.{decimals}f})"


def rate_text(detected: int, n: int) -> str:
    """``"3/4 (75 %)"``; "–" for an empty bin."""
    return f"{detected}/{n} ({100.0 * detected / n:.0f} %)" if n else "–"


def headline_table(summary: Mapping[str, Any], per_case: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cancer type of ``summary["tasks"]`` and a last ``overall`` row.

    Args:
        summary: ``unipet evaluate``'s ``summary.json`` (``tasks``, ``overall``, ``lesion_detection``).
        per_case: its ``per_case.csv`` (for the lesion-positive counts); optional.

    Returns:
        DataFrame with string cells, columns ``cancer type``, ``studies (positive)``, ``Dice (95% CI)``,
        ``lesion sensitivity``, one ``<bin> mL`` column per size bin (detected/lesions), ``FPV mL (95% CI)``,
        ``FNV mL (95% CI)``; empty when the summary has neither tasks nor overall numbers.
    """
    groups: dict[str, Mapping[str, Any]] = dict(summary.get("tasks") or {})
    if summary.get("overall"):
        groups[OVERALL] = summary["overall"]
    detection = summary.get("lesion_detection") or {}
    det_by_group = {**(detection.get("tasks") or {}), **({OVERALL: detection["overall"]} if "overall" in detection else {})}
    bins = list((detection.get("overall") or {}).get("by_size") or {})
    rows = []
    for name, entry in groups.items():
        row: dict[str, Any] = {"cancer type": name.replace("_", " ")}
        n = entry.get("n_cases")
        positive = _positive_count(per_case, None if name == OVERALL else name)
        row["studies (positive)"] = "–" if n is None else (f"{n} ({positive})" if positive is not None else str(n))
        row["Dice (95% CI)"] = ci_text(entry.get("dice"))
        det = det_by_group.get(name)
        row["lesion sensitivity"] = rate_text(int(det["detected"]), int(det["lesions"])) if det else "–"
        for b in bins:
            cell = (det or {}).get("by_size", {}).get(b)
            row[f"{b} mL"] = f"{int(cell['detected'])}/{int(cell['n'])}" if cell and cell["n"] else "–"
        row["FPV mL (95% CI)"] = ci_text(entry.get("fpv_ml"), 1)
        row["FNV mL (95% CI)"] = ci_text(entry.get("fnv_ml"), 1)
        rows.append(row)
    return pd.DataFrame(rows)


def headline_html(table: pd.DataFrame) -> str:
    """The headline table as HTML with the overall row set apart."""
    import html

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = []
    for _, row in table.iterrows():
        cls = " class='overall'" if row["cancer type"] == OVERALL else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
    return f"<div class='wide'><table class='tbl headline'><tr>{head}</tr>{''.join(body)}</table></div>"


def worst_first(per_case: pd.DataFrame) -> list[str]:
    """Case ids ordered worst first: studies with a reference lesion by Dice ascending, then lesion-free studies
    by false-positive volume descending (a lesion-free study's Dice is undefined)."""
    df = per_case.assign(case=per_case["case"].astype(str))
    dice = df["dice"] if "dice" in df.columns else pd.Series(math.nan, index=df.index)
    fpv = df["fpv_ml"] if "fpv_ml" in df.columns else pd.Series(0.0, index=df.index)
    scored = df[dice.notna()].assign(_d=dice[dice.notna()]).sort_values(["_d", "case"], kind="stable")
    free = df[dice.isna()].assign(_f=-fpv[dice.isna()].fillna(0.0)).sort_values(["_f", "case"], kind="stable")
    return list(scored["case"]) + list(free["case"])


def _positive_count(per_case: pd.DataFrame | None, task: str | None) -> int | None:
    if per_case is None or "positive" not in per_case.columns:
        return None
    rows = per_case if task is None or "task" not in per_case.columns else per_case[per_case["task"].astype(str) == task]
    return int(rows["positive"].astype(bool).sum())


def _nan(value: Any) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True
