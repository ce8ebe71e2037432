"""One self-contained HTML report per cohort, curated: the headline first, every other number one click away.

Order of the page:

1. **What was run** (model, checkpoint, studies, evaluation settings in one short list) and the **headline per
   cancer type**: Dice with its 95 % CI, lesion sensitivity overall and by lesion size, FPV/FNV and n as one
   table, with a per-study Dice box/strip plot per type and a detection-by-size bar plot
   (``unipet evaluate``'s ``summary.json`` and ``per_case.csv``);
2. **biomarker agreement** of predicted vs reference masks (scatter + Bland–Altman; ``patients.csv`` of
   ``unipet quantify`` run on each);
3. **survival** (``unipet survival``: Kaplan–Meier curves with numbers at risk, the HR / C-index table and the
   comparison of segmentation sources);
4. **studies**, worst first (lowest Dice, then lesion-free studies by false-positive volume): coronal and sagittal
   PET MIPs with the reference (blue) and predicted (vermillion) outlines, each linked to its interactive
   viewer page when viewers are written (``unipet.report.viewer``);
5. **details**, collapsed: the settings, every number of the evaluation summary (flattened), the per-case and
   per-lesion tables, Table 1 — and the list of CSV/JSON files written beside the report.

Images are embedded as base64 PNG and the CSS is inline; the page has no script: it opens anywhere, offline,
with no external request. The data files go to ``<report stem>_files/`` beside it (linked relatively).
A section whose input was not given is replaced by a one-line note. Only the pseudonymous case ids
appear; folder paths are shown by their last component only.
"""
from __future__ import annotations

import html
import math
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Sized

import numpy as np
import pandas as pd

from unipet.errors import ConfigError, ImageGeometryError, InputFileError, OutputExistsError
from unipet.fileio import (atomic_path, atomic_write_json, atomic_write_text, check_writable, ensure_folder,
                           read_csv_table, read_json_object)
from unipet.report.page import (Section, definition_list, details, df_table, figure, flatten, kv_table, note,
                                page)

# Longer secondary tables (e.g. one row per lesion) are cut to this many rows in the page.
MAX_TABLE_ROWS = 200
# (case_id, suv_zyx, spacing_zyx, pred_mask or None, ref_mask or None); arrays in RAS orientation.
StudyTuple = tuple[str, np.ndarray, Sequence[float], "np.ndarray | None", "np.ndarray | None"]


def files_folder(out_html: str | Path) -> Path:
    """The folder beside the report holding its CSV/JSON files and viewer pages: ``<stem>_files``."""
    out_html = Path(out_html)
    return out_html.with_name(f"{out_html.stem}_files")


def build_report(out_html: str | Path, *, studies: Iterable[StudyTuple] | None = None,
                 manifest: str | Path | Any = None, pred_dir: str | Path | None = None,
                 eval_dir: str | Path | None = None, quant_pred: str | Path | None = None,
                 quant_ref: str | Path | None = None, survival_dir: str | Path | None = None,
                 settings: dict[str, Any] | None = None, max_studies: int | None = None,
                 title: str = "unipet cohort report", viewers: bool = False, overwrite: bool = False) -> Path:
    """Write the cohort report as one self-contained HTML file and its data files beside it.

    Args:
        out_html: output ``.html`` path (refused if it exists unless ``overwrite``; so is its ``_files`` folder).
        studies: ``(case_id, suv_zyx, spacing_zyx, pred_mask, ref_mask)`` tuples — SUV ``(z, y, x)`` float
            in RAS orientation (as ``unipet.study.make_affine`` grids are), spacing in mm ``(z, y, x)``,
            binary masks on the same grid or None. An iterator is consumed lazily (one study in memory);
            a list is shown worst first when the evaluation gives per-case Dice.
        manifest: a manifest path (or ``Manifest``) instead of ``studies``: PET from ``images.PET``, the
            reference from ``label`` and the prediction from ``pred_dir/<case_id>.nii.gz``.
        eval_dir: folder of ``unipet evaluate`` (``per_case.csv``, ``summary.json``, ``lesions.csv``, ``table1.csv``).
        quant_pred, quant_ref: folders of ``unipet quantify`` (``patients.csv``) for predicted and reference masks.
        survival_dir: folder of ``unipet survival`` (``summary.json``, ``km_*.png``, optional ``comparison.csv``).
        settings: anything to record (model, checkpoint, thresholds, ...): the first lines of "what was run";
            the whole dict goes to the details and to ``settings.json``.
        max_studies: show at most this many studies' MIPs (the worst ones).
        viewers: with a manifest, write an interactive NiiVue page per shown study into
            ``<stem>_files/viewers/`` and link it under the study's MIPs.

    Returns:
        ``out_html``.
    """
    out_html = check_writable(out_html, overwrite)
    data_dir = files_folder(out_html)
    if data_dir.exists() and not overwrite:
        raise OutputExistsError(f"{data_dir} already exists; choose another output or pass --overwrite to replace it")
    if studies is not None and manifest is not None:
        raise ConfigError("give either studies or a manifest to the report, not both")
    if viewers and manifest is None:
        raise ConfigError("viewer pages need the studies' images: give a manifest (--manifest) with --viewers")
    per_case = _read_csv(Path(eval_dir) / "per_case.csv") if eval_dir is not None and \
        (Path(eval_dir) / "per_case.csv").exists() else None
    summary = _read_json(Path(eval_dir) / "summary.json") if eval_dir is not None and \
        (Path(eval_dir) / "summary.json").exists() else None
    if eval_dir is not None and per_case is None and summary is None:
        raise InputFileError(f"the evaluation folder {eval_dir} holds neither per_case.csv nor summary.json; run "
                             "`unipet evaluate` into it or leave --eval out")
    files: dict[str, Path] = {}  # label -> file written beside the report

    order = _worst_first(per_case)
    n_total = len(studies) if isinstance(studies, Sized) else None
    if manifest is not None:
        from unipet.io.manifest import Manifest

        manifest = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
        n_total = len(manifest)
    elif isinstance(studies, Sequence) and order:
        rank = {cid: i for i, cid in enumerate(order)}
        studies = sorted(studies, key=lambda s: rank.get(str(s[0]), len(rank)))

    inputs = {"evaluation": eval_dir, "biomarkers (predicted)": quant_pred, "biomarkers (reference)": quant_ref,
              "survival": survival_dir, "predictions": pred_dir}
    sections = [
        _run_section(settings, summary, per_case, n_total),
        _headline_section(eval_dir, summary, per_case, data_dir, files),
        _agreement_section(quant_pred, quant_ref, data_dir, files),
        _survival_section(survival_dir, data_dir, files),
    ]
    viewer_dir = data_dir / "viewers" if viewers else None
    if manifest is not None:
        cases = _ordered_cases(manifest, order)
        studies = iter_manifest_studies(manifest, pred_dir, cases=cases)
    sections.append(_studies_section(studies, per_case, max_studies, n_total, viewer_dir, manifest, pred_dir,
                                     out_html.parent))
    sections.append(_details_section(settings, inputs, eval_dir, summary, per_case, survival_dir, data_dir, files))
    atomic_write_text(out_html, page(title, sections), overwrite=overwrite)
    return out_html


# ---------------------------------------------------------------------------------------------- studies
def iter_manifest_studies(manifest: str | Path | Any, pred_dir: str | Path | None,
                          cases: Sequence[Any] | None = None) -> Iterator[StudyTuple]:
    """Yield report tuples for every case of a manifest (or the given ``cases`` of it, in that order), reoriented
    to RAS, one case in memory at a time.

    Raises:
        InputFileError: a case has no PET image.
        ImageGeometryError: a prediction or label is on another grid than its PET.
    """
    from unipet.io.manifest import Manifest
    from unipet.io.nifti import load_volume, replace_non_finite
    from unipet.report.plots import to_ras
    from unipet.study import same_grid

    manifest = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
    for case in (cases if cases is not None else manifest):
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


def _ordered_cases(manifest: Any, order: list[str]) -> list[Any]:
    """The manifest's cases, the ones of ``order`` first in that order, then the rest as listed."""
    rank = {cid: i for i, cid in enumerate(order)}
    cases = list(manifest)
    return sorted(cases, key=lambda c: (rank.get(str(c.case_id), len(rank)), cases.index(c)))


def _studies_section(studies: Iterable[StudyTuple] | None, per_case: pd.DataFrame | None,
                     max_studies: int | None, n_total: int | None, viewer_dir: Path | None, manifest: Any,
                     pred_dir: str | Path | None, report_dir: Path) -> Section:
    from unipet.report.plots import figure_png, mip_figure

    key, title = "studies", "Studies: PET maximum-intensity projections, worst first"
    if studies is None:
        return Section(key, title, note("No studies given (pass a manifest and a prediction folder)."))
    metrics: dict[str, dict[str, Any]] = {}
    if per_case is not None and "case" in per_case.columns:
        metrics = {str(r["case"]): r for r in per_case.to_dict(orient="records")}
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
        row = metrics.get(str(case_id), {})
        if pd.notna(row.get("dice", np.nan)):
            parts.append(f"Dice {float(row['dice']):.3f}")
        elif pd.notna(row.get("fpv_ml", np.nan)):
            parts.append(f"lesion-free, FPV {float(row['fpv_ml']):.1f} mL")
        caption = " · ".join(parts)
        link = ""
        if viewer_dir is not None:
            from unipet.report.viewer import write_case_viewer

            page_path = write_case_viewer(manifest.by_id(str(case_id)), viewer_dir, pred_dir, manifest.task_set)
            rel = page_path.relative_to(report_dir).as_posix()
            link = (f"<a class='viewer' href='{html.escape(rel, quote=True)}'>open the 3-D PET/CT viewer of "
                    f"{html.escape(str(case_id))}</a>")
        fig = mip_figure(str(case_id), suv, spacing, pred, ref, caption=caption)
        figures.append(figure(figure_png(fig, dpi=80), caption, alt=f"MIPs of {case_id}", extra=link))
        shown += 1
    if shown == 0:
        return Section(key, title, note("No study shown (max_studies is 0)." if max_studies == 0 else
                                        "The study list is empty."))
    total = n_total if n_total is not None else ("≥ " if max_studies is not None and shown >= max_studies else "") + str(shown)
    order = " in order of increasing Dice (then lesion-free studies by false-positive volume)" if metrics else ""
    intro = (f"<p>Inverted grey, SUV 0–8; outlines are the projections of the <span style='color:#0072B2'>"
             f"reference</span> and <span style='color:#D55E00'>predicted</span> masks. Radiological view: the "
             f"patient's right on the left (coronal), anterior on the left (sagittal). Showing {shown} of "
             f"{total} studies{order}.</p>")
    return Section(key, title, intro + "<div class='grid'>" + "".join(figures) + "</div>")


def _worst_first(per_case: pd.DataFrame | None) -> list[str]:
    from unipet.report.headline import worst_first

    if per_case is None or "case" not in per_case.columns:
        return []
    return worst_first(per_case)


# ---------------------------------------------------------------------------------------------- first screen
def _run_section(settings: dict[str, Any] | None, summary: dict[str, Any] | None,
                 per_case: pd.DataFrame | None, n_total: int | None) -> Section:
    rows: list[tuple[str, str]] = []
    for k, v in (settings or {}).items():
        if not isinstance(v, dict):
            rows.append((str(k), _short(v)))
    if summary is not None and "n_cases" in summary:
        rows.append(("evaluated studies", f"{summary['n_cases']} ({summary.get('n_positive', '?')} with lesions, "
                                          f"{summary.get('n_negative', '?')} lesion-free)"))
    elif per_case is not None:
        rows.append(("evaluated studies", str(len(per_case))))
    elif n_total is not None:
        rows.append(("studies", str(n_total)))
    evset = (summary or {}).get("settings") or {}
    if evset:
        rows.append(("lesion matching", f"{evset.get('matching', '?')}, {evset.get('connectivity', '?')}-connected "
                                        f"components"))
        if "n_boot" in evset:
            rows.append(("confidence intervals", f"{100 * float(evset.get('confidence', 0.95)):.0f} % percentile "
                                                 f"bootstrap over studies ({evset['n_boot']} resamples)"))
    body = definition_list(rows) if rows else note("No settings were recorded.")
    return Section("run", "What was run", body)


def _headline_section(eval_dir: str | Path | None, summary: dict[str, Any] | None, per_case: pd.DataFrame | None,
                      data_dir: Path, files: dict[str, Path]) -> Section:
    from unipet.report.headline import headline_html, headline_table
    from unipet.report.plots import detection_by_size_figure, dice_by_task_figure, figure_png

    key, title = "metrics", "Segmentation metrics: headline per cancer type"
    if eval_dir is None:
        return Section(key, title, note("Not included: no evaluation folder given (run `unipet evaluate`)."))
    parts = []
    table = headline_table(summary or {}, per_case)
    if not table.empty:
        parts.append(headline_html(table))
        parts.append("<p class='meta'>Dice over studies with a reference lesion; lesion sensitivity pooled over "
                     "reference lesions (detected/lesions), then by reference-lesion volume (the mL columns); "
                     "FPV/FNV: autoPET false-positive and false-negative volumes per study. Intervals: 95 % "
                     "bootstrap CI.</p>")
        files["headline table (CSV)"] = _write_csv(table, data_dir / "headline.csv")
    else:
        parts.append(note(f"The evaluation folder {Path(eval_dir).name} has no per-type summary (summary.json)."))
    figs = []
    if per_case is not None and {"task", "dice"} <= set(per_case.columns):
        figs.append(figure(figure_png(dice_by_task_figure(per_case), dpi=85), "Per-study Dice by cancer type "
                           "(box: quartiles; points: studies)", alt="Dice by cancer type"))
    detection = ((summary or {}).get("lesion_detection") or {}).get("tasks") or {}
    if detection and all("by_size" in d for d in detection.values()):
        figs.append(figure(figure_png(detection_by_size_figure(detection), dpi=85), "Lesion detection sensitivity "
                           "by reference-lesion volume (detected/lesions over each bar)", alt="detection by size"))
    if figs:
        parts.append("<div class='grid'>" + "".join(figs) + "</div>")
    return Section(key, title, "".join(parts))


# ---------------------------------------------------------------------------------------------- agreement, survival
def _agreement_section(quant_pred: str | Path | None, quant_ref: str | Path | None, data_dir: Path,
                       files: dict[str, Path]) -> Section:
    from unipet.report.plots import AGREEMENT_MARKERS, agreement_figure, agreement_stats, figure_png

    key, title = "agreement", "Biomarker agreement: predicted vs reference"
    if quant_pred is None or quant_ref is None:
        return Section(key, title, note("Not included: give both --quant-pred and --quant-ref (`unipet quantify` "
                                        "folders of the predicted and reference masks)."))
    pred = _read_csv(Path(quant_pred) / "patients.csv")
    ref = _read_csv(Path(quant_ref) / "patients.csv")
    for name, table in (("predicted", pred), ("reference", ref)):
        if "case" not in table.columns:
            raise ConfigError(f"the {name} patients.csv has no 'case' column; re-run `unipet quantify`")
    markers = {m: lab for m, lab in AGREEMENT_MARKERS.items() if m in pred.columns and m in ref.columns}
    if not markers:
        return Section(key, title, note(f"patients.csv has none of the columns {list(AGREEMENT_MARKERS)}."))
    pairs = pred.assign(case=pred["case"].astype(str)).merge(ref.assign(case=ref["case"].astype(str)), on="case",
                                                             suffixes=("_pred", "_ref"))
    if pairs.empty:
        return Section(key, title, note("The predicted and reference patients.csv share no case id."))
    stats = pd.DataFrame([{"marker": lab, **agreement_stats(pairs[f"{m}_pred"], pairs[f"{m}_ref"])}
                          for m, lab in markers.items()])
    files["biomarker agreement (CSV)"] = _write_csv(stats, data_dir / "agreement.csv")
    body = ("<p>Bias and 95 % limits of agreement (LoA = bias ± 1.96 SD) of predicted − reference, over "
            f"{len(pairs)} cases present in both tables.</p>" + df_table(stats)
            + figure(figure_png(agreement_figure(pairs, markers), dpi=80), "Scatter with identity line (top) and "
                     "Bland–Altman plots (bottom)", alt="biomarker agreement"))
    return Section(key, title, body)


def _survival_section(survival_dir: str | Path | None, data_dir: Path, files: dict[str, Path]) -> Section:
    key, title = "survival", "Survival analysis"
    if survival_dir is None:
        return Section(key, title, note("Not included: no survival folder given (run `unipet survival`)."))
    survival_dir = Path(survival_dir)
    parts = []
    summary_path = survival_dir / "summary.json"
    if summary_path.exists():
        summary = _read_json(summary_path)
        split = summary.get("split", {})
        table = _survival_table(summary)
        parts.append(df_table(table))
        files["survival table (CSV)"] = _write_csv(table, data_dir / "survival.csv")
        parts.append(
            f"<p class='meta'>Cut-offs ({html.escape(str(summary.get('cutoff_method')))}) derived on a derivation "
            f"cohort of {split.get('n_derivation')} patients ({split.get('events_derivation')} events) and applied to "
            f"a validation cohort of {split.get('n_validation')} ({split.get('events_validation')} events); random "
            f"split, fraction {split.get('derive_fraction')}, seed {split.get('seed')}, stratified by "
            f"{html.escape(str(split.get('stratified_by')))}. Dichotomisation: "
            f"{html.escape(str(summary.get('dichotomisation')))}; statistics on the "
            f"{html.escape(str(summary.get('cohort_for_statistics')))} cohort. C-index convention: "
            f"{html.escape(str(summary.get('risk_convention')))}.</p>")
    images = sorted(survival_dir.glob("km_*.png"))
    if images:
        parts.append("<div class='grid'>" + "".join(
            figure(p.read_bytes(), f"Kaplan–Meier: {p.stem[3:]} (numbers at risk under the axes)",
                   alt=f"Kaplan–Meier {p.stem[3:]}") for p in images).replace("<figure>", "<figure class='km'>")
            + "</div>")
    if (survival_dir / "comparison.csv").exists():
        comparison = _read_csv(survival_dir / "comparison.csv")
        files["comparison of segmentation sources (CSV)"] = _copy(survival_dir / "comparison.csv",
                                                                   data_dir / "survival_comparison.csv")
        parts.append("<h3>Comparison of segmentation sources</h3>" + df_table(_comparison_table(comparison)))
    if not parts:
        return Section(key, title, note(f"The survival folder {survival_dir.name} holds no summary.json or km_*.png."))
    return Section(key, title, "".join(parts))


def _comparison_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """The readable columns of ``unipet survival-compare``'s table (all of them are in the CSV beside the report)."""
    keep = {"marker": "marker", "source": "source", "n": "n", "events": "events", "cutoff": "cut-off",
            "HR (95% CI)": "HR high vs low (95% CI)", "p": "p", "logrank_p": "log-rank p",
            "C-index (95% CI)": "C-index (95% CI)"}
    cols = [c for c in keep if c in comparison.columns]
    if len(cols) < 4:
        return comparison
    return comparison[cols].rename(columns=keep)


def format_stat(value: Any, spec: str) -> str:
    """``format(value, spec)``, or ``n/a`` for a missing value (None, NaN) and ``∞`` for an infinite one: a Cox fit on
    a degenerate split (one patient in a group) has an unbounded interval, stored as JSON null."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return format(value, spec)


def _survival_table(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per marker of a ``unipet survival`` summary, formatted like a paper's table."""
    num = format_stat

    def hr(d: dict[str, Any]) -> str:
        return f"{num(d['hr'], '.2f')} ({num(d['lo'], '.2f')}–{num(d['hi'], '.2f')})"

    rows = []
    for marker, r in summary.get("results", {}).items():
        c = r["c_index"]
        rows.append({"marker": marker, "cut-off": f"{r['cutoff']:.4g}", "n (high/low)": f"{r['n_high']}/{r['n_low']}",
                     "HR high vs low (95% CI)": hr(r["hr_dichotomised"]), "p": num(r["hr_dichotomised"]["p"], ".3g"),
                     "HR continuous (95% CI)": hr(r["hr_continuous"]), "p (cont.)": num(r["hr_continuous"]["p"], ".3g"),
                     "log-rank p": num(r["logrank_p"], ".3g"),
                     "C-index (95% CI)": f"{num(c['value'], '.3f')} ({num(c['lo'], '.3f')}–{num(c['hi'], '.3f')})"})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- details
def _details_section(settings: dict[str, Any] | None, inputs: dict[str, Any], eval_dir: str | Path | None,
                     summary: dict[str, Any] | None, per_case: pd.DataFrame | None,
                     survival_dir: str | Path | None, data_dir: Path, files: dict[str, Path]) -> Section:
    blocks = []
    rows = [("input: " + k, Path(v).name) for k, v in inputs.items() if v is not None] + flatten(settings or {})
    files["settings (JSON)"] = _write_json({k: v for k, v in rows}, data_dir / "settings.json")
    blocks.append(details("Settings", kv_table(rows) if rows else note("No settings were recorded.")))
    if eval_dir is not None:
        eval_dir = Path(eval_dir)
        if summary is not None:
            flat = flatten(summary)
            files["every evaluation number (CSV)"] = _write_csv(pd.DataFrame(flat, columns=["key", "value"]),
                                                                data_dir / "evaluation_summary.csv")
            blocks.append(details(f"Every number of the evaluation summary ({len(flat)} values)",
                                  "<div class='scroll'>" + kv_table(flat) + "</div>"))
        if per_case is not None:
            files["per-study metrics (CSV)"] = _copy(eval_dir / "per_case.csv", data_dir / "per_case.csv")
            blocks.append(details(f"Per-study metrics ({len(per_case)} studies)", df_table(per_case, scroll=True)))
        if (eval_dir / "table1.csv").exists():
            files["Table 1 (CSV)"] = _copy(eval_dir / "table1.csv", data_dir / "table1.csv")
            blocks.append(details("Table 1 (DSC and IoU in %, mean (95% CI))",
                                  "<h3>Table 1</h3>" + df_table(_read_csv(eval_dir / "table1.csv"))))
        for extra in sorted(eval_dir.glob("*.csv")):
            if extra.name not in ("per_case.csv", "table1.csv"):
                table = _read_csv(extra)
                files[f"{extra.stem} (CSV)"] = _copy(extra, data_dir / extra.name)
                blocks.append(details(f"{extra.stem} ({len(table)} rows)",
                                      df_table(table, scroll=True, max_rows=MAX_TABLE_ROWS)))
    if survival_dir is not None and (Path(survival_dir) / "summary.json").exists():
        flat = flatten(_read_json(Path(survival_dir) / "summary.json"))
        blocks.append(details(f"Every number of the survival summary ({len(flat)} values)",
                              "<div class='scroll'>" + kv_table(flat) + "</div>"))
    links = "".join(f"<li><a href='{html.escape(data_dir.name + '/' + p.name, quote=True)}'>{html.escape(p.name)}</a>"
                    f" — {html.escape(label)}</li>" for label, p in files.items())
    body = (f"<p>The data of this page are in the folder <code>{html.escape(data_dir.name)}</code> beside it:</p>"
            f"<ul>{links}</ul>" + "".join(blocks))
    return Section("details", "Details and data files", body)


# ---------------------------------------------------------------------------------------------- helpers
def _short(value: Any) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return text if len(text) <= 160 else text[:157] + "..."


def _write_csv(table: pd.DataFrame, path: Path) -> Path:
    ensure_folder(path.parent)
    with atomic_path(path, overwrite=True) as tmp:
        table.to_csv(tmp, index=False)
    return path


def _write_json(obj: Any, path: Path) -> Path:
    ensure_folder(path.parent)
    return atomic_write_json(path, obj, overwrite=True)


def _copy(src: Path, dest: Path) -> Path:
    ensure_folder(dest.parent)
    with atomic_path(dest, overwrite=True) as tmp:
        shutil.copyfile(src, tmp)
    return dest


def _read_csv(path: Path) -> pd.DataFrame:
    return read_csv_table(path, "input", "run the stage that writes it or leave that option out")


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, "input", "run the stage that writes it again")
