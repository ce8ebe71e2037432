"""Figures of the unipet report: PET MIPs with lesion outlines, Kaplan–Meier curves, agreement plots.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state, safe in
threads and head-less); ``figure_png`` turns one into PNG bytes with the Agg renderer.

Display conventions of the MIPs: volumes are first put in RAS orientation (``to_ras``), then shown
in the radiological convention — superior at the top, the patient's right on the viewer's left
(coronal), anterior on the viewer's left (sagittal) — with square millimetres (aspect from the
spacing) and an inverted grey scale of SUV 0–8 by default.
"""
from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from unipet.study import spacing_from_affine, zyx_to_nifti, nifti_to_zyx

# Okabe–Ito colours: distinguishable with the common colour-vision deficiencies.
PRED_COLOUR = "#D55E00"  # vermillion
REF_COLOUR = "#0072B2"  # blue
LOW_COLOUR, HIGH_COLOUR = "#0072B2", "#D55E00"
SUV_WINDOW = (0.0, 8.0)

# Biomarker columns of ``patients.csv`` shown in the agreement plots, with their axis labels.
AGREEMENT_MARKERS = {"total_mtv_ml": "MTV (mL)", "total_tlg": "TLG (SUV·mL)", "suv_max": "SUVmax"}


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render ``fig`` to PNG bytes (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- MIPs
def to_ras(volume_zyx: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Reorient a ``(z, y, x)`` volume so that x→Right, y→Anterior, z→Superior (axis flips/permutations only).

    Returns:
        ``(volume_zyx_ras, spacing_zyx_mm)`` — a view where possible; no interpolation.
    """
    import nibabel.orientations as nio

    ornt = nio.io_orientation(np.asarray(affine, dtype=np.float64))
    spacing_xyz = np.asarray(spacing_from_affine(affine)[::-1])
    new_spacing = np.empty(3)
    new_spacing[ornt[:, 0].astype(int)] = spacing_xyz
    ras = nifti_to_zyx(nio.apply_orientation(zyx_to_nifti(volume_zyx), ornt))
    return ras, (float(new_spacing[2]), float(new_spacing[1]), float(new_spacing[0]))


def mip_views(volume_zyx: np.ndarray) -> dict[str, np.ndarray]:
    """Coronal and sagittal maximum-intensity projections of a RAS ``(z, y, x)`` volume, display-ready.

    Returns:
        ``{"coronal": (z, x), "sagittal": (z, y)}`` with row 0 inferior (plot with ``origin="lower"``) and
        columns flipped so that the patient's right (coronal) and anterior (sagittal) are on the left.
    """
    return {"coronal": np.max(volume_zyx, axis=1)[:, ::-1], "sagittal": np.max(volume_zyx, axis=2)[:, ::-1]}


def mip_figure(case_id: str, suv_zyx: np.ndarray, spacing_zyx: Sequence[float], pred: np.ndarray | None = None,
               ref: np.ndarray | None = None, *, window: tuple[float, float] = SUV_WINDOW, height_in: float = 5.0,
               caption: str | None = None) -> Figure:
    """Coronal and sagittal PET MIPs with the MIPs of the predicted and reference masks outlined.

    Args:
        suv_zyx: SUV volume ``(z, y, x)`` in RAS orientation (see ``to_ras``).
        spacing_zyx: voxel spacing in mm, ``(z, y, x)``.
        pred, ref: binary masks on the same grid, or None.
        window: SUV display range (inverted grey: SUV ≥ window[1] is black).
    """
    dz, dy, dx = (float(s) for s in spacing_zyx)
    nz, ny, nx = suv_zyx.shape
    widths = {"coronal": nx * dx, "sagittal": ny * dy}
    height_mm = nz * dz
    total_w = sum(widths.values())
    fig = Figure(figsize=(max(height_in * total_w / height_mm + 0.6, 3.2), height_in + 0.8))
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [widths["coronal"], widths["sagittal"]]})
    # The reference is drawn first and wider, so a prediction that coincides with it stays visible on top.
    masks = {"reference": (ref, REF_COLOUR, 2.2), "predicted": (pred, PRED_COLOUR, 1.1)}
    views = mip_views(suv_zyx)
    mask_views = {name: (mip_views(m > 0) if m is not None else None, colour, lw)
                  for name, (m, colour, lw) in masks.items()}
    for ax, view in zip(axes, ("coronal", "sagittal")):
        extent = (0.0, widths[view], 0.0, height_mm)
        ax.imshow(views[view], cmap="gray_r", vmin=window[0], vmax=window[1], origin="lower", extent=extent,
                  aspect="equal", interpolation="antialiased")
        for mviews, colour, lw in mask_views.values():
            if mviews is not None and mviews[view].any():
                ax.contour(mviews[view].astype(np.float32), levels=[0.5], colors=[colour], linewidths=lw,
                           origin="lower", extent=extent)
        ax.set_title(view, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], color=colour, lw=2, label=name) for name, (m, colour, _) in masks.items()
               if m is not None]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(caption or case_id, fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 0.95))  # top 5 %: the suptitle
    return fig


# ---------------------------------------------------------------------------------------------- Kaplan–Meier
def km_figure(fitters: Sequence, title: str, subtitle: str = "", time_unit: str = "days") -> Figure:
    """Kaplan–Meier curves (95 % CI bands, censoring ticks) of fitted lifelines ``KaplanMeierFitter``s
    with a numbers-at-risk table under the axes (lifelines ``add_at_risk_counts``).

    The first fitter is drawn in the low-risk colour, the second in the high-risk colour.
    """
    from lifelines.plotting import add_at_risk_counts

    fig = Figure(figsize=(7.0, 5.6))
    ax = fig.subplots()
    colours = [LOW_COLOUR, HIGH_COLOUR, "#009E73", "#CC79A7"]
    for fitter, colour in zip(fitters, colours):
        fitter.plot_survival_function(ax=ax, ci_show=True, show_censors=True, color=colour,
                                      censor_styles={"ms": 5, "marker": "|"})
    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(left=0.0)
    ax.set_xlabel(f"time ({time_unit})")
    ax.set_ylabel("survival probability")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, title=subtitle or None, title_fontsize=8)
    ax.set_title(title, fontsize=11)
    short = [str(f._label).split(":")[0] for f in fitters]
    add_at_risk_counts(*fitters, ax=ax, fig=fig, labels=short, rows_to_show=["At risk", "Events"])
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- agreement
def agreement_stats(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Bland–Altman statistics of paired values (NaN pairs dropped).

    Returns:
        ``n``, ``bias`` (mean of pred − ref), ``sd`` (SD of the differences, ddof=1), ``loa_lo`` / ``loa_hi``
        (bias ∓ 1.96 SD), ``pearson_r``.
    """
    pred, ref = np.asarray(pred, dtype=float), np.asarray(ref, dtype=float)
    ok = np.isfinite(pred) & np.isfinite(ref)
    pred, ref = pred[ok], ref[ok]
    diff = pred - ref
    n = int(ok.sum())
    bias = float(diff.mean()) if n else float("nan")
    sd = float(diff.std(ddof=1)) if n > 1 else float("nan")
    r = float(np.corrcoef(pred, ref)[0, 1]) if n > 1 and pred.std() > 0 and ref.std() > 0 else float("nan")
    return {"n": n, "bias": bias, "sd": sd, "loa_lo": bias - 1.96 * sd, "loa_hi": bias + 1.96 * sd, "pearson_r": r}


def agreement_figure(pairs: pd.DataFrame, markers: dict[str, str] | None = None) -> Figure:
    """Predicted-vs-reference scatter (with the identity line) and Bland–Altman plot of each marker.

    Args:
        pairs: one row per case with columns ``<marker>_pred`` and ``<marker>_ref``.
        markers: ``{column: axis label}``; defaults to ``AGREEMENT_MARKERS`` present in ``pairs``.
    """
    markers = markers or {m: label for m, label in AGREEMENT_MARKERS.items() if f"{m}_pred" in pairs.columns}
    fig = Figure(figsize=(4.0 * max(len(markers), 1), 7.6))
    axes = np.asarray(fig.subplots(2, max(len(markers), 1), squeeze=False))
    for col, (marker, label) in enumerate(markers.items()):
        pred, ref = pairs[f"{marker}_pred"].to_numpy(float), pairs[f"{marker}_ref"].to_numpy(float)
        ok = np.isfinite(pred) & np.isfinite(ref)
        stats = agreement_stats(pred, ref)
        ax = axes[0, col]
        ax.scatter(ref[ok], pred[ok], s=14, color=PRED_COLOUR, alpha=0.8, edgecolors="none")
        hi = float(max(np.max(ref[ok], initial=0.0), np.max(pred[ok], initial=0.0))) * 1.05 or 1.0
        ax.plot([0, hi], [0, hi], color="0.3", lw=1, ls="--", label="identity")
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_aspect("equal")
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        ax.set_title(f"{label}: r = {stats['pearson_r']:.3f}, n = {stats['n']}", fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
        ax = axes[1, col]
        mean, diff = (pred[ok] + ref[ok]) / 2, pred[ok] - ref[ok]
        ax.scatter(mean, diff, s=14, color=REF_COLOUR, alpha=0.8, edgecolors="none")
        ax.axhline(stats["bias"], color="0.2", lw=1, label=f"bias {stats['bias']:.3g}")
        for key in ("loa_lo", "loa_hi"):
            ax.axhline(stats[key], color="0.4", lw=1, ls="--")
        ax.plot([], [], color="0.4", ls="--", label=f"95% LoA {stats['loa_lo']:.3g} to {stats['loa_hi']:.3g}")
        ax.set_xlabel(f"mean of predicted and reference {label}")
        ax.set_ylabel(f"predicted − reference {label}")
        ax.set_title("Bland–Altman", fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- headline
# One colour per cancer type (Okabe–Ito order), cycled when there are more types.
TASK_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def dice_by_task_figure(per_case: pd.DataFrame, task_col: str = "task", value_col: str = "dice") -> Figure:
    """Per-study Dice by cancer type: a box plot (median, quartiles, 1.5 IQR whiskers) with every study as a
    jittered point and ``n`` under each type. Studies whose Dice is undefined (NaN: no reference lesion) are
    left out and counted in the axis label.

    Args:
        per_case: one row per study with ``task_col`` and ``value_col`` (Dice in 0..1).
    """
    tasks = sorted(per_case[task_col].astype(str).unique())
    values = [per_case.loc[per_case[task_col].astype(str) == t, value_col].to_numpy(float) for t in tasks]
    finite = [v[np.isfinite(v)] for v in values]
    fig = Figure(figsize=(max(3.2, 1.05 * len(tasks) + 1.0), 3.4))
    ax = fig.subplots()
    rng = np.random.default_rng(0)  # jitter only; fixed so the page is reproducible
    positions = np.arange(1, len(tasks) + 1)
    shown = [v if v.size else np.array([np.nan]) for v in finite]
    ax.boxplot(shown, positions=positions, widths=0.55, showfliers=False, medianprops={"color": "0.15"},
               boxprops={"color": "0.45"}, whiskerprops={"color": "0.45"}, capprops={"color": "0.45"})
    for pos, v, colour in zip(positions, finite, TASK_COLOURS * (len(tasks) // len(TASK_COLOURS) + 1)):
        ax.scatter(pos + rng.uniform(-0.17, 0.17, v.size), v, s=16, color=colour, alpha=0.85, edgecolors="none",
                   zorder=3)
    ax.set_xticks(positions, [f"{t.replace('_', ' ')}\nn = {v.size}" for t, v in zip(tasks, finite)], fontsize=8)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("Dice per study")
    n_undefined = int(sum(v.size - f.size for v, f in zip(values, finite)))
    ax.set_title("Dice by cancer type" + (f" ({n_undefined} lesion-free studies not shown)" if n_undefined else ""),
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def detection_by_size_figure(detection: dict[str, dict[str, Any]]) -> Figure:
    """Lesion detection sensitivity by lesion-size bin, one bar per cancer type, ``detected/n`` over each bar.

    Args:
        detection: ``{task: {"by_size": {bin: {"n", "detected", "sensitivity"}}}}`` — the per-task
            ``lesion_detection`` of ``unipet evaluate``'s ``summary.json`` (pooled over lesions).
    """
    tasks = sorted(detection)
    bins = list(next(iter(detection.values()))["by_size"]) if tasks else []
    fig = Figure(figsize=(max(4.0, 1.1 * len(bins) + 1.4), 3.4))
    ax = fig.subplots()
    width = 0.8 / max(len(tasks), 1)
    for k, (task, colour) in enumerate(zip(tasks, TASK_COLOURS * (len(tasks) // len(TASK_COLOURS) + 1))):
        x = np.arange(len(bins)) - 0.4 + width * (k + 0.5)
        cells = [detection[task]["by_size"].get(b, {"n": 0, "detected": 0}) for b in bins]
        sens = [c["detected"] / c["n"] if c["n"] else 0.0 for c in cells]
        ax.bar(x, sens, width=width * 0.92, color=colour, label=task.replace("_", " "))
        for xi, s, c in zip(x, sens, cells):
            ax.text(xi, s + 0.02, f"{c['detected']}/{c['n']}" if c["n"] else "–", ha="center", va="bottom",
                    fontsize=6.5, rotation=90 if len(tasks) > 3 else 0)
    ax.set_xticks(np.arange(len(bins)), [f"{b} mL" for b in bins], fontsize=8)
    ax.set_ylim(0, 1.25)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel("reference lesion volume")
    ax.set_ylabel("sensitivity (detected / lesions)")
    ax.set_title("Lesion detection by size", fontsize=9)
    ax.legend(fontsize=7, ncol=min(len(tasks), 4), loc="upper left", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
