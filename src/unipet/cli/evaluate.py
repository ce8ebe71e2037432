"""``unipet evaluate``: score predicted masks against reference masks or a manifest."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console, require_inputs
from unipet.cli.app import app


def parse_bins(text: str) -> tuple[float, ...]:
    """``"1,5,20"`` → ``(1.0, 5.0, 20.0)``; raises ConfigError for anything else."""
    from unipet.errors import ConfigError

    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--size-bins must be comma-separated mL values such as 1,5,20, got {text!r}") from None


@app.command("evaluate")
def evaluate_command(
    pred_dir: Path = typer.Argument(..., help="Folder of predicted masks <case>.nii.gz."),
    reference: Path = typer.Argument(..., help="Folder of reference masks <case>.nii.gz, or a manifest JSON."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (per_case.csv, lesions.csv, summary.json, table1.csv)."),
    connectivity: int = typer.Option(18, help="Voxel connectivity of lesions and FPV/FNV components: 6, 18 or 26."),
    match: str = typer.Option("overlap", help="Lesion matching rule: 'overlap' (any shared voxel) or 'iou'."),
    iou_threshold: float = typer.Option(0.5, help="IoU needed for a match with --match iou."),
    size_bins: str = typer.Option("1,5,20", help="Lesion-size bin edges in mL for sensitivity by size."),
    with_cldice: bool = typer.Option(False, "--cldice", help="Also compute clDice and topology precision/sensitivity."),
    with_suv: bool = typer.Option(False, "--suv", help="Also compute MTV (mL, %) and SUVmean errors against the "
                                  "reference (needs a manifest as REFERENCE: the PET is read from it)."),
    positive_only: bool = typer.Option(False, "--positive-only",
                                       help="Overlap metrics on lesion-positive studies only (FPV on all)."),
    missing_as_empty: bool = typer.Option(False, "--missing-as-empty",
                                          help="Score reference cases without a prediction as empty predictions."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples for the 95 % intervals."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    workers: int = typer.Option(1, help="Processes scoring cases in parallel."),
    baselines: str = typer.Option(None, "--baselines", help="Also score reference methods on the same studies "
                                  "(needs a manifest as REFERENCE): 'all' or a list of suv2.5, suv4, percist, "
                                  "organ-aware, oracle41, oracle50, suvmax41, suvmax50, oracle-best (see "
                                  "unipet.evaluate.baselines; percist and organ-aware need organ maps and are "
                                  "skipped without them, the last five read the reference)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
) -> None:
    """Score predicted lesion masks: Dice, IoU, precision, recall, HD95, autoPET FPV/FNV and lesion detection,
    per task with bootstrap confidence intervals.

    Examples:

        unipet evaluate preds/ labelsTs/ --out eval/

        unipet evaluate preds/ manifest.json --out eval/ --match iou --iou-threshold 0.5 --cldice

        unipet evaluate preds/ manifest.json --out eval/ --positive-only --missing-as-empty --workers 8

        unipet evaluate preds/ manifest.json --out eval/ --baselines all

        unipet evaluate preds/ real.json --out eval/ --suv --baselines suv2.5,suvmax41,oracle-best
    """
    require_inputs(prediction_folder=pred_dir, reference=reference)
    from unipet.errors import ConfigError
    from unipet.evaluate.baselines import parse_methods
    from unipet.evaluate.runner import EvaluationConfig, evaluate

    methods = parse_methods(baselines) if baselines else []
    if (methods or with_suv) and reference.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise ConfigError("--baselines and --suv need the images: give a manifest JSON as REFERENCE (`unipet import`), "
                          "not a folder of masks")

    config = EvaluationConfig(connectivity=connectivity, rule=match, iou_threshold=iou_threshold,
                              size_bins_ml=parse_bins(size_bins), with_cldice=with_cldice, with_suv=with_suv,
                              positive_only=positive_only,
                              missing_as_empty=missing_as_empty, n_boot=n_boot, seed=seed)
    result = evaluate(pred_dir, reference, out, config=config, workers=workers, overwrite=overwrite)
    summary = result.summary
    console.print(f"scored {summary['n_cases']} studies ({summary['n_positive']} lesion-positive); "
                  f"{len(summary['missing_predictions'])} without prediction; results in {out}")
    from rich.table import Table

    table = Table(title="DSC / IoU in % — mean (95 % bootstrap CI)")
    for col in ("task", "n", "DSC", "IoU"):
        table.add_column(col)
    for task, row in summary["table1"].items():
        table.add_row(task, str(row["n"]), row["DSC"], row["IoU"])
    console.print(table)
    if methods:
        from unipet.evaluate.baselines import comparison_rows, evaluate_baselines
        from unipet.fileio import atomic_write_json

        found = evaluate_baselines(reference, out / "baselines", methods, config=config, overwrite=overwrite)
        for method, reason in found["skipped"].items():
            console.print(f"baseline {method} skipped: {reason}")
        rows = comparison_rows({"prediction": summary, **{m: found[m] for m in methods if m in found}})
        atomic_write_json(out / "baselines.json", {"rows": rows, "skipped": found["skipped"]}, overwrite=overwrite)
        table = Table(title="prediction vs baselines — Dice, lesion sensitivity (>= 1 mL / < 1 mL), FPV / FNV mL, "
                      "HD95 mm" + (", |MTV error| %, |SUVmean error|" if with_suv else ""))
        for col in ("task", "method", "n", "Dice", "sens >=1", "sens <1", "FPV", "FNV", "HD95") + (
                ("|MTV err| %", "|SUVmean err|") if with_suv else ()):
            table.add_column(col)
        for r in rows:
            quantification = ((f"{r['mtv_abs_error_pct']:.0f}", f"{r['suvmean_abs_error']:.2f}") if with_suv else ())
            table.add_row(r["task"], r["method"], str(r["n"]), f"{r['dice']:.3f}", f"{r['sens_ge1']:.2f}",
                          f"{r['sens_lt1']:.2f}", f"{r['fpv_ml']:.1f}", f"{r['fnv_ml']:.1f}", f"{r['hd95_mm']:.1f}",
                          *quantification)
        console.print(table)
        console.print(f"baseline masks and scores in {out / 'baselines'}; the table in {out / 'baselines.json'}")
