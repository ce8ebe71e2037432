"""The demo pipeline behind ``unipet demo``: the whole chain on a phantom cohort with simulated outcomes.

phantom cohort → manifest → segmentation with a checkpoint (the shipped default unless one is given) →
evaluation against the phantom's reference masks → biomarkers from the predicted and from the reference
masks → survival analysis (the phantom's simulated outcomes; reference vs prediction in seed 000's
Table-3 layout) → one self-contained ``report.html``.

Every step writes into one working folder and is skipped when its output is already there, so the demo can
be interrupted and re-run. Follow-up examinations of a patient are segmented and evaluated like any study;
the survival analysis keeps one row per patient (the baseline examination, ``visit == 0``).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.table import Table

from unipet.errors import ConfigError, InputFileError

#: biomarkers analysed for survival (columns of ``patients.csv``), as in seed 000's Table 3
SURVIVAL_MARKERS = ("total_mtv_ml", "total_tlg", "suv_max")
STEPS = 8  # steps of the full demo, for the progress lines


@dataclass
class DemoResult:
    """Where the demo's outputs are and its headline numbers."""

    out: Path
    report: Path | None = None
    dice_by_task: dict[str, float] = field(default_factory=dict)
    #: studies behind each task's mean Dice: its lesion-positive examinations (baselines and follow-ups; Dice is
    #: undefined without a reference lesion)
    studies_by_task: dict[str, int] = field(default_factory=dict)
    agreement: dict[str, dict[str, float]] = field(default_factory=dict)
    survival: dict[str, Any] = field(default_factory=dict)
    summary: Table | None = None


def baseline_outcomes(clinical_csv: Path, patients: Any) -> Any:
    """One survival row per patient: the baseline examination's biomarkers (``patients`` from
    ``unipet quantify``, column ``case``) joined with the phantom's ``clinical.csv`` (time in months, event).

    A patient without any lesion has no lesion SUVmax (NaN in ``patients.csv``); for survival it counts as 0,
    like its MTV and TLG — no tumour burden (the phantom's outcome model uses the same rule).

    Returns:
        DataFrame with ``case``, ``patient_id``, ``time``, ``event``, ``task`` and the biomarker columns.
    """
    import pandas as pd

    clinical = pd.read_csv(clinical_csv)
    clinical = clinical[clinical["visit"] == 0][["study_id", "patient_id", "task", "time", "event"]]
    merged = patients.merge(clinical.rename(columns={"study_id": "case"}), on="case", how="inner",
                            suffixes=("", "_clinical"))
    no_lesion = merged["lesion_count"] == 0
    merged.loc[no_lesion, list(SURVIVAL_MARKERS)] = merged.loc[no_lesion, list(SURVIVAL_MARKERS)].fillna(0.0)
    return merged.reset_index(drop=True)


def biomarker_agreement(predicted: Any, reference: Any, markers: tuple[str, ...] = SURVIVAL_MARKERS
                        ) -> dict[str, dict[str, float]]:
    """Agreement of patient biomarkers from predicted vs reference masks (tables joined on ``case``; the demo
    passes the baseline examinations' survival tables).

    Per marker: Bland–Altman ``bias``, ``sd``, ``loa_lo``/``loa_hi`` and ``pearson_r``
    (``unipet.report.plots.agreement_stats``), plus ``median_abs_rel_diff`` — the median of
    ``|pred − ref| / ref`` over cases whose reference value is positive — and ``n``.
    """
    import numpy as np

    from unipet.report.plots import agreement_stats

    pairs = predicted.merge(reference, on="case", suffixes=("_pred", "_ref"))
    out = {}
    for m in markers:
        pred, ref = pairs[f"{m}_pred"].to_numpy(float), pairs[f"{m}_ref"].to_numpy(float)
        stats = agreement_stats(pred, ref)
        positive = np.isfinite(pred) & np.isfinite(ref) & (ref > 0)
        stats["median_abs_rel_diff"] = (float(np.median(np.abs(pred[positive] - ref[positive]) / ref[positive]))
                                        if positive.any() else float("nan"))
        out[m] = stats
    return out


def run_demo(out: str | Path, n: int = 40, seed: int = 1, workers: int = 1, checkpoint: str | Path | None = None,
             segment: bool = True, device: str | None = None, echo: Callable[[str], None] = print) -> DemoResult:
    """Run the demo chain in ``out``.

    Args:
        out: working folder (re-used: finished steps are skipped).
        n: phantom studies (≥ 30 so that both survival cohorts get at least 10 patients).
        seed: cohort and split seed (the default checkpoint was trained on the cohort of seed 0: the demo's
            default seed 1 gives other studies).
        checkpoint: run or checkpoint folder; None = the shipped default.
        segment: False stops after preprocessing (the foundation's summary only).
        device: ``cpu``/``cuda`` (default: CUDA when available).

    Returns:
        A ``DemoResult`` (report path, mean Dice per task, survival summaries, the cohort table).
    """
    from unipet.data.cache import build_cache
    from unipet.data.phantom import write_phantom_cohort
    from unipet.io.layouts import import_phantom

    out = Path(out)
    cohort = out / "cohort"
    steps = STEPS if segment else 3
    if not (cohort / "clinical.csv").exists():
        echo(f"[1/{steps}] generating {n} phantom PET/CT studies in {cohort}")
        write_phantom_cohort(cohort, n=n, seed=seed, size="small", workers=workers, overwrite=cohort.exists())
    else:
        with (cohort / "clinical.csv").open() as fh:
            existing = sum(1 for _ in fh) - 1
        if existing != n:
            raise ConfigError(f"{out} holds a demo cohort of {existing} studies, not {n}; pass --n {existing} to "
                              "re-use it or choose another --out")
        echo(f"[1/{steps}] re-using the phantom cohort in {cohort}")
    manifest = import_phantom(cohort, split_seed=seed)
    manifest.save(out / "cohort.json", overwrite=True)
    echo(f"[2/{steps}] imported {len(manifest)} studies into {out / 'cohort.json'}")
    cache = build_cache(manifest, out / "cache", workers=workers)
    echo(f"[3/{steps}] preprocessed into {out / 'cache'}")
    result = DemoResult(out=out, summary=summary_table(cache))
    if segment:
        _segment_and_analyse(out, manifest, checkpoint, device, workers, echo, result)
    return result


def _segment_and_analyse(out: Path, manifest: Any, checkpoint: str | Path | None, device: str | None,
                         workers: int, echo: Callable[[str], None], result: DemoResult) -> None:
    """Steps 4-8: predict, evaluate, quantify (predicted and reference), survival, report."""
    import json

    import pandas as pd

    from unipet.evaluate import evaluate
    from unipet.infer import Predictor, predict_batch
    from unipet.quantify.runner import quantify_manifest
    from unipet.report.survival import compare_sources, run_survival
    from unipet.report.html import build_report

    from unipet.checkpoint import default_checkpoint

    ckpt = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    pred_dir = out / "predictions"
    predictor = Predictor.from_checkpoint(ckpt, device=device or "auto")
    report = predict_batch(predictor, out / "cohort.json", pred_dir,
                           progress=lambda i, total, cid: echo(f"      {i}/{total} {cid}") if i == total else None)
    if report.failed:
        raise InputFileError(f"{len(report.failed)} studies could not be segmented (first: "
                             f"{next(iter(report.failed.items()))}); see {pred_dir / 'summary.json'}")
    seconds = [r["seconds"] for r in report.records]
    timing = f", {sum(seconds) / len(seconds):.1f} s per study" if seconds else " (all re-used)"
    echo(f"[4/{STEPS}] segmented {len(report.done) + len(report.skipped)} studies into {pred_dir}{timing}")

    eval_dir = out / "evaluation"
    if (eval_dir / "summary.json").exists():  # a resumed demo re-uses the finished step's outputs
        per_case = pd.read_csv(eval_dir / "per_case.csv")
    else:
        per_case = evaluate(pred_dir, out / "cohort.json", eval_dir, overwrite=True).per_case
    result.dice_by_task = {str(t): float(g["dice"].mean()) for t, g in per_case.groupby("task")}
    result.studies_by_task = {str(t): int(g["dice"].notna().sum()) for t, g in per_case.groupby("task")}
    echo(f"[5/{STEPS}] evaluated against the reference masks in {eval_dir}")

    quant = {"predicted": out / "quantify_predicted", "reference": out / "quantify_reference"}
    patients = {}
    for source, folder in quant.items():
        if (folder / "patients.csv").exists():
            patients[source] = pd.read_csv(folder / "patients.csv")
        else:
            patients[source] = quantify_manifest(out / "cohort.json", folder, overwrite=True, workers=workers,
                                                 pred_dir=pred_dir if source == "predicted" else None)[1]
    echo(f"[6/{STEPS}] biomarkers from predicted and reference masks in {quant['predicted']}, "
         f"{quant['reference']}")

    tables = {source: baseline_outcomes(out / "cohort" / "clinical.csv", frame) for source, frame in patients.items()}
    result.agreement = biomarker_agreement(tables["predicted"], tables["reference"])
    survival_dir = out / "survival"
    if (survival_dir / "summary.json").exists():
        result.survival = json.loads((survival_dir / "summary.json").read_text())["results"]
    else:
        result.survival = run_survival(tables["predicted"], "time", "event", SURVIVAL_MARKERS, out_dir=survival_dir,
                                       log=True, id_col="case", time_unit="months", n_boot=300,
                                       overwrite=True)["results"]
        compare_sources({"reference": tables["reference"], "predicted": tables["predicted"]}, "time", "event",
                        SURVIVAL_MARKERS, id_col="case", log=True, n_boot=300,
                        out_csv=survival_dir / "comparison.csv", overwrite=True)
    echo(f"[7/{STEPS}] survival analysis (validation cohort) in {survival_dir}")

    html = out / "report.html"
    build_report(html, manifest=out / "cohort.json", pred_dir=pred_dir, eval_dir=eval_dir,
                 quant_pred=quant["predicted"], quant_ref=quant["reference"], survival_dir=survival_dir,
                 settings={"checkpoint": ckpt.name, "model": predictor.meta.model_name,
                           "studies": len(manifest), "survival markers": ", ".join(SURVIVAL_MARKERS)},
                 max_studies=12, title="unipet demo: phantom cohort", viewers=True, overwrite=True)
    result.report = html
    echo(f"[8/{STEPS}] report written")


def summary_table(cache) -> Table:
    """Per task: studies, lesion-positive studies, lesions, and splits of a cache."""
    rows: dict[str, Counter] = {}
    for cid in cache.case_ids:
        info = cache.info(cid)
        c = rows.setdefault(str(info["task"]), Counter())
        c["studies"] += 1
        c["positive"] += bool(info["lesions"])
        c["lesions"] += len(info["lesions"])
        c[f"split:{info['split']}"] += 1
    table = Table(title=f"cache {cache.root} — channels {', '.join(cache.config.channels)}")
    for col in ("task", "studies", "lesion-positive", "lesions", "train/val/test"):
        table.add_column(col)
    for task, c in sorted(rows.items()):
        table.add_row(task, str(c["studies"]), str(c["positive"]), str(c["lesions"]),
                      f"{c['split:train']}/{c['split:val']}/{c['split:test']}")
    return table
