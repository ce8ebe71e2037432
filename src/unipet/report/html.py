"""One self-contained HTML report per cohort.

The page holds the segmentation metrics (``per_case.csv`` / ``summary.json`` of ``unipet evaluate``),
the biomarker agreement of predicted vs reference masks (``patients.csv`` of ``unipet quantify`` run on
each), the survival analysis (``summary.json`` and ``km_*.png`` of ``unipet survival``), per-study PET
MIPs with the predicted and reference lesions outlined, and the recorded settings. Images are embedded
as base64 PNG and the CSS is inline: the file opens anywhere, offline, with no external request.
A section whose input was not given is replaced by a one-line note. Only the pseudonymous case ids
appear; folder paths are shown by their last component only.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Sized

import numpy as np
import pandas as pd

from unipet.errors import ConfigError, ImageGeometryError, InputFileError
from unipet.fileio import atomic_write_text, check_writable, read_csv_table, read_json_object

# Longer secondary tables (e.g. one row per lesion) are cut to this many rows in the page.
MAX_TABLE_ROWS = 200
# (case_id, suv_zyx, spacing_zyx, pred_mask or None, ref_mask or None); arrays in RAS orientation.
StudyTuple = tuple[str, np.ndarray, Sequence[float], "np.ndarray | None", "np.ndarray | None"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1200px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:2px solid #0072B2;padding-bottom:4px;margin-top:2em}
h3{margin-bottom:4px}.meta,.note{color:#666;font-size:.9em}.note{font-style:italic}
table.tbl{border-collapse:collapse;font-size:.85em;margin:8px 0}
table.tbl th,table.tbl td{border:1px solid #ccc;padding:3px 8px;text-align:right}
table.tbl th{background:#f0f4f8}table.tbl td:first-child,table.tbl th:first-child{text-align:left}
.scroll{max-height:420px;overflow:auto;display:inline-block}
.grid{display:flex;flex-wrap:wrap;gap:16px}.grid figure{margin:0}
figure figcaption{font-size:.85em;color:#444;text-align:center}
img{max-width:100%;height:auto}nav a{margin-right:12px}
"""


@dataclass
class Section:
    """One part of the report: an anchor id, a heading and its HTML body (already escaped)."""

    key: str
    title: str
    body: str


def build_report(out_html: str | Path, *, studies: Iterable[StudyTuple] | None = None,
                 manifest: str | Path | Any = None, pred_dir: str | Path | None = None,
                 eval_dir: str | Path | None = None, quant_pred: str | Path | None = None,
                 quant_ref: str | Path | None = None, survival_dir: str | Path | None = None,
                 settings: dict[str, Any] | None = None, max_studies: int | None = None,
                 title: str = "unipet cohort report", overwrite: bool = False) -> Path:
    """Write the cohort report as one self-contained HTML file.

    Args:
        out_html: output ``.html`` path (refused if it exists unless ``overwrite``).
        studies: ``(case_id, suv_zyx, spacing_zyx, pred_mask, ref_mask)`` tuples — SUV ``(z, y, x)`` float
            in RAS orientation (as ``unipet.study.make_affine`` grids are), spacing in mm ``(z, y, x)``,
            binary masks on the same grid or None. An iterator is consumed lazily (one study in memory).
        manifest: a manifest path (or ``Manifest``) instead of ``studies``: PET from ``images.PET``, the
            reference from ``label`` and the prediction from ``pred_dir/<case_id>.nii.gz``.
        eval_dir: folder of ``unipet evaluate`` (``per_case.csv``, ``summary.json``).
        quant_pred, quant_ref: folders of ``unipet quantify`` (``patients.csv``) for predicted and reference masks.
        survival_dir: folder of ``unipet survival`` (``summary.json``, ``km_*.png``, optional ``comparison.csv``).
        settings: anything to record (model, checkpoint, thresholds, ...), shown as a table.
        max_studies: show at most this many studies' MIPs.

    Returns:
        ``out_html``.
    """
    out_html = check_writable(out_html, overwrite)
    if studies is not None and manifest is not None:
        raise ConfigError("give either studies or a manifest to the report, not both")
    per_case = _read_csv(Path(eval_dir) / "per_case.csv") if eval_dir is not None else None
    sections = [
        _settings_section(settings, {"eval": eval_dir, "quant_pred": quant_pred, "quant_ref": quant_ref,
                                     "survival": survival_dir, "predictions": pred_dir}),
        _metrics_section(eval_dir, per_case),
        _agreement_section(quant_pred, quant_ref),
        _survival_section(survival_dir),
    ]
    n_total = len(studies) if isinstance(studies, Sized) else None
    if manifest is not None:
        from unipet.io.manifest import Manifest

        manifest = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
        studies, n_total = iter_manifest_studies(manifest, pred_dir), len(manifest)
    sections.append(_studies_section(studies, per_case, max_studies, n_total))
    atomic_write_text(out_html, _page(title, sections), overwrite=overwrite)
    return out_html


# ---------------------------------------------------------------------------------------------- studies
def iter_manifest_studies(manifest: str | Path | Any, pred_dir: str | Path | None) -> Iterator[StudyTuple]:
    """Yield report tuples for every case of a manifest, reoriented to RAS, one case in memory at a time.

    Raises:
        InputFileError: a case has no PET image.
        ImageGeometryError: a prediction or label is on another grid than its PET.
    """
    from unipet.io.manifest import Manifest
    from unipet.io.nifti import load_volume, replace_non_finite
    from unipet.report.plots import to_ras
    from unipet.study import same_grid

    manifest = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
    for case in manifest:
        if not case.images.get("PET"):
            raise InputFileError(f"case {case.case_id} has no PET image in the manifest; the report shows PET MIPs only")
        suv, affine = load_volume(case.images["PET"], what=f"case {case.case_id} PET")
        suv, _ = replace_non_finite(suv, "PET", f"case {case.case_id} PET")
        masks = []
        for what, path in (("prediction", Path(pred_dir) / f"{case.case_id}.nii.gz" if pred_dir else None),
                           ("label", case.label)):
            if path is None or not Path(path).exists():
                masks.append(None)
                continue
            mask, mask_affine = load_volume(path, what=f"case {case.case_id} {what}", dtype=np.uint8)
            if not same_grid(mask.shape, mask_affine, suv.shape, affine, tol_mm=1e-2):
                raise ImageGeometryError(f"case {case.case_id} {what} grid {mask.shape} differs from its PET grid "
                                         f"{suv.shape}; resample the mask onto the PET grid first")
            masks.append(to_ras(mask > 0, affine)[0])
        suv_ras, spacing = to_ras(suv, affine)
        yield case.case_id, suv_ras, spacing, masks[0], masks[1]


def _studies_section(studies: Iterable[StudyTuple] | None, per_case: pd.DataFrame | None,
                     max_studies: int | None, n_total: int | None) -> Section:
    from unipet.report.plots import figure_png, mip_figure

    key, title = "studies", "Studies: PET maximum-intensity projections"
    if studies is None:
        return Section(key, title, _note("No studies given (pass a manifest and a prediction folder)."))
    dice = {}
    if per_case is not None and {"case", "dice"} <= set(per_case.columns):
        dice = dict(zip(per_case["case"].astype(str), per_case["dice"]))
    figures, shown = [], 0
    for case_id, suv, spacing, pred, ref in studies:
        if max_studies is not None and shown >= max_studies:
            break  # stop before loading the next study; n_total says how many there were
        suv = np.asarray(suv)
        for what, mask in (("prediction", pred), ("reference", ref)):
            if mask is not None and np.shape(mask) != suv.shape:
                raise ImageGeometryError(f"study {case_id}: {what} mask shape {np.shape(mask)} differs from the SUV "
                                         f"shape {suv.shape}; give masks on the PET grid")
        voxel_ml = float(np.prod(spacing)) / 1000.0
        parts = [str(case_id)]
        for what, mask in (("pred", pred), ("ref", ref)):
            parts.append(f"{what} {np.count_nonzero(mask) * voxel_ml:.1f} mL" if mask is not None else f"no {what}")
        if str(case_id) in dice and pd.notna(dice[str(case_id)]):
            parts.append(f"Dice {float(dice[str(case_id)]):.3f}")
        caption = " · ".join(parts)
        fig = mip_figure(str(case_id), suv, spacing, pred, ref, caption=caption)
        figures.append(_figure(figure_png(fig, dpi=90), caption, alt=f"MIPs of {case_id}"))
        shown += 1
    if shown == 0:
        return Section(key, title, _note("No study shown (max_studies is 0)." if max_studies == 0 else
                                         "The study list is empty."))
    total = n_total if n_total is not None else ("≥ " if max_studies is not None and shown >= max_studies else "") + str(shown)
    intro = (f"<p>Inverted grey, SUV 0–8; outlines are the projections of the <span style='color:#D55E00'>"
             f"predicted</span> and <span style='color:#0072B2'>reference</span> masks. Radiological view: the "
             f"patient's right on the left (coronal), anterior on the left (sagittal). Showing {shown} of "
             f"{total} studies.</p>")
    return Section(key, title, intro + "<div class='grid'>" + "".join(figures) + "</div>")


# ---------------------------------------------------------------------------------------------- other sections
def _settings_section(settings: dict[str, Any] | None, inputs: dict[str, Any]) -> Section:
    rows = [("input: " + k, Path(v).name) for k, v in inputs.items() if v is not None]
    rows += _flatten(settings or {})
    body = _kv_table(rows) if rows else _note("No settings were recorded.")
    return Section("settings", "Settings", body)


def _metrics_section(eval_dir: str | Path | None, per_case: pd.DataFrame | None) -> Section:
    key, title = "metrics", "Segmentation metrics"
    if eval_dir is None:
        return Section(key, title, _note("Not included: no evaluation folder given (run `unipet evaluate`)."))
    eval_dir = Path(eval_dir)
    parts = []
    if (eval_dir / "table1.csv").exists():
        parts.append("<h3>Table 1</h3>" + _df_table(_read_csv(eval_dir / "table1.csv")))
    if per_case is not None:
        parts.append("<h3>Per case</h3>" + _df_table(per_case, scroll=True))
    for extra in sorted(eval_dir.glob("*.csv")):
        if extra.name not in ("per_case.csv", "table1.csv"):
            parts.append(f"<h3>{html.escape(extra.stem)}</h3>" + _df_table(_read_csv(extra), scroll=True,
                                                                         max_rows=MAX_TABLE_ROWS))
    summary_path = eval_dir / "summary.json"
    if summary_path.exists():
        parts.append("<h3>Summary and settings</h3>" + _kv_table(_flatten(_read_json(summary_path))))
    if not parts:
        return Section(key, title, _note(f"The evaluation folder {eval_dir.name} holds no summary.json or CSV."))
    return Section(key, title, "".join(parts))


def _agreement_section(quant_pred: str | Path | None, quant_ref: str | Path | None) -> Section:
    from unipet.report.plots import AGREEMENT_MARKERS, agreement_figure, agreement_stats, figure_png

    key, title = "agreement", "Biomarker agreement: predicted vs reference"
    if quant_pred is None or quant_ref is None:
        return Section(key, title, _note("Not included: give both --quant-pred and --quant-ref (`unipet quantify` "
                                         "folders of the predicted and reference masks)."))
    pred = _read_csv(Path(quant_pred) / "patients.csv")
    ref = _read_csv(Path(quant_ref) / "patients.csv")
    for name, table in (("predicted", pred), ("reference", ref)):
        if "case" not in table.columns:
            raise ConfigError(f"the {name} patients.csv has no 'case' column; re-run `unipet quantify`")
    markers = {m: lab for m, lab in AGREEMENT_MARKERS.items() if m in pred.columns and m in ref.columns}
    if not markers:
        return Section(key, title, _note(f"patients.csv has none of the columns {list(AGREEMENT_MARKERS)}."))
    pairs = pred.assign(case=pred["case"].astype(str)).merge(ref.assign(case=ref["case"].astype(str)), on="case",
                                                             suffixes=("_pred", "_ref"))
    if pairs.empty:
        return Section(key, title, _note("The predicted and reference patients.csv share no case id."))
    stats = pd.DataFrame([{"marker": lab, **agreement_stats(pairs[f"{m}_pred"], pairs[f"{m}_ref"])}
                          for m, lab in markers.items()])
    body = ("<p>Bias and 95 % limits of agreement (LoA = bias ± 1.96 SD) of predicted − reference, over "
            f"{len(pairs)} cases present in both tables.</p>" + _df_table(stats)
            + _figure(figure_png(agreement_figure(pairs, markers), dpi=90), "Scatter with identity line (top) and "
                      "Bland–Altman plots (bottom)", alt="biomarker agreement"))
    return Section(key, title, body)


def _survival_section(survival_dir: str | Path | None) -> Section:
    key, title = "survival", "Survival analysis"
    if survival_dir is None:
        return Section(key, title, _note("Not included: no survival folder given (run `unipet survival`)."))
    survival_dir = Path(survival_dir)
    parts = []
    summary_path = survival_dir / "summary.json"
    if summary_path.exists():
        summary = _read_json(summary_path)
        split = summary.get("split", {})
        parts.append(
            f"<p>Cut-offs ({html.escape(str(summary.get('cutoff_method')))}) derived on a derivation cohort of "
            f"{split.get('n_derivation')} patients ({split.get('events_derivation')} events) and applied to a "
            f"validation cohort of {split.get('n_validation')} ({split.get('events_validation')} events); random "
            f"split, fraction {split.get('derive_fraction')}, seed {split.get('seed')}, stratified by "
            f"{html.escape(str(split.get('stratified_by')))}. Dichotomisation: {html.escape(str(summary.get('dichotomisation')))}; "
            f"statistics on the {html.escape(str(summary.get('cohort_for_statistics')))} cohort. "
            f"C-index convention: {html.escape(str(summary.get('risk_convention')))}.</p>")
        parts.append(_df_table(_survival_table(summary)))
    if (survival_dir / "comparison.csv").exists():
        parts.append("<h3>Comparison of segmentation sources</h3>" + _df_table(_read_csv(survival_dir / "comparison.csv")))
    images = sorted(survival_dir.glob("km_*.png"))
    if images:
        parts.append("<div class='grid'>" + "".join(
            _figure(p.read_bytes(), p.stem[3:], alt=f"Kaplan–Meier {p.stem[3:]}") for p in images) + "</div>")
    if not parts:
        return Section(key, title, _note(f"The survival folder {survival_dir.name} holds no summary.json or km_*.png."))
    return Section(key, title, "".join(parts))


def _survival_table(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per marker of a ``unipet survival`` summary, formatted like a paper's table."""
    def hr(d: dict[str, Any]) -> str:
        return f"{d['hr']:.2f} ({d['lo']:.2f}–{d['hi']:.2f})"

    rows = []
    for marker, r in summary.get("results", {}).items():
        c = r["c_index"]
        rows.append({"marker": marker, "cut-off": f"{r['cutoff']:.4g}", "n (high/low)": f"{r['n_high']}/{r['n_low']}",
                     "HR high vs low (95% CI)": hr(r["hr_dichotomised"]), "p": f"{r['hr_dichotomised']['p']:.3g}",
                     "HR continuous (95% CI)": hr(r["hr_continuous"]), "p (cont.)": f"{r['hr_continuous']['p']:.3g}",
                     "log-rank p": f"{r['logrank_p']:.3g}",
                     "C-index (95% CI)": f"{c['value']:.3f} ({c['lo']:.3f}–{c['hi']:.3f})"})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- HTML helpers
def _page(title: str, sections: list[Section]) -> str:
    from unipet import __version__

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f"<a href='#{s.key}'>{html.escape(s.title.split(':')[0])}</a>" for s in sections)
    body = "".join(f"<section id='{s.key}'><h2>{html.escape(s.title)}</h2>{s.body}</section>" for s in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='meta'>generated {stamp} by unipet {html.escape(str(__version__))}</p><nav>{nav}</nav>"
            f"{body}</body></html>\n")


def _figure(png: bytes, caption: str, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(alt, quote=True)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def _df_table(df: pd.DataFrame, scroll: bool = False, max_rows: int | None = None) -> str:
    note = ""
    if max_rows is not None and len(df) > max_rows:
        note = _note(f"First {max_rows} of {len(df)} rows; the full table is in the CSV file.")
        df = df.head(max_rows)
    table = df.to_html(index=False, escape=True, classes="tbl", border=0, na_rep="–",
                       float_format=lambda v: f"{v:.4g}")
    return note + (f"<div class='scroll'>{table}</div>" if scroll else table)


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table class='tbl'><tr><th>key</th><th>value</th></tr>{cells}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        text = json.dumps(value, default=str)
        return text if len(text) <= 200 else text[:197] + "..."
    return str(value)


def _flatten(obj: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dict → ``[("a.b.c", value), ...]`` (lists kept as values)."""
    rows: list[tuple[str, Any]] = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, name + "."))
        else:
            rows.append((name, value))
    return rows


def _read_csv(path: Path) -> pd.DataFrame:
    return read_csv_table(path, "input", "run the stage that writes it or leave that option out")


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, "input", "run the stage that writes it again")
