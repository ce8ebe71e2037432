"""Survival results as files: the summary JSON, the Kaplan–Meier figures and the source comparison CSV.

The statistics come from ``unipet.quantify.survival`` as data (a summary dict, ``KMCurves``, a DataFrame); this
module draws the curves (``unipet.report.plots.km_figure``) and writes the files atomically, refusing existing
ones unless ``overwrite``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from unipet.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, check_writable
from unipet.quantify.survival import KMCurves, compare_sources as _compare_table, km_curves, survival_statistics


def write_km_png(curves: KMCurves, out_png: str | Path, overwrite: bool = False) -> Path:
    """Draw ``curves`` (numbers-at-risk table under the axes) into a PNG, written atomically. Returns ``out_png``."""
    from unipet.report.plots import figure_png, km_figure

    out_png = check_writable(out_png, overwrite)
    fig = km_figure(curves.fitters, title=curves.title, subtitle=curves.subtitle, time_unit=curves.time_unit)
    return atomic_write_bytes(out_png, figure_png(fig, dpi=120), overwrite=overwrite)


def kaplan_meier_plot(df: pd.DataFrame, marker: str, time: str, event: str, cutoff: float, out_png: str | Path, *,
                      hr: Mapping[str, float] | None = None, logrank_p: float | None = None,
                      time_unit: str = "days", title: str | None = None, overwrite: bool = False) -> Path:
    """Kaplan–Meier curves of low (≤ cut-off) and high (> cut-off) patients with a numbers-at-risk table
    (``unipet.quantify.survival.km_curves``), drawn into ``out_png``. Returns ``out_png``."""
    check_writable(out_png, overwrite)
    curves = km_curves(df, marker, time, event, cutoff, hr=hr, logrank_p=logrank_p, time_unit=time_unit, title=title)
    return write_km_png(curves, out_png, overwrite)


def run_survival(df: pd.DataFrame, time: str, event: str, markers: Sequence[str], derive_fraction: float = 0.4,
                 seed: int = 0, out_dir: str | Path | None = None, *, overwrite: bool = False,
                 **options: Any) -> dict[str, Any]:
    """``unipet.quantify.survival.survival_statistics`` (same arguments in ``options``), and with ``out_dir`` its
    ``summary.json`` and one ``km_<marker>.png`` per marker there (existing files refused unless ``overwrite``;
    all are checked before any statistic is computed). Returns the summary dict.
    """
    out_dir = Path(out_dir) if out_dir is not None else None
    if out_dir is not None:
        for name in ["summary.json", *[f"km_{_safe(m)}.png" for m in markers]]:
            check_writable(out_dir / name, overwrite)
    summary, curves = survival_statistics(df, time, event, markers, derive_fraction, seed, **options)
    if out_dir is not None:
        for marker, marker_curves in curves.items():
            png = write_km_png(marker_curves, out_dir / f"km_{_safe(marker)}.png", overwrite)
            summary["results"][marker]["km_png"] = png.name
        atomic_write_json(out_dir / "summary.json", summary, overwrite=overwrite)
    return summary


def compare_sources(tables: Mapping[str, pd.DataFrame], time: str, event: str, markers: Sequence[str], *,
                    out_csv: str | Path | None = None, overwrite: bool = False, **options: Any) -> pd.DataFrame:
    """``unipet.quantify.survival.compare_sources`` (same arguments in ``options``), written to ``out_csv`` as CSV
    (atomically) when given. Returns the table."""
    if out_csv is not None:
        check_writable(out_csv, overwrite)
    result = _compare_table(tables, time, event, markers, **options)
    if out_csv is not None:
        atomic_write_text(out_csv, result.to_csv(index=False), overwrite=overwrite)
    return result


def _safe(name: str) -> str:
    """A file-name-safe version of a column name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
