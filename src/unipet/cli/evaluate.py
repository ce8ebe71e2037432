"""``unipet evaluate``: score predicted masks against reference masks or a manifest."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console
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
    positive_only: bool = typer.Option(False, "--positive-only",
                                       help="Overlap metrics on lesion-positive studies only (FPV on all)."),
    missing_as_empty: bool = typer.Option(False, "--missing-as-empty",
                                          help="Score reference cases without a prediction as empty predictions."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples for the 95 % intervals."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    workers: int = typer.Option(1, help="Processes scoring cases in parallel."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
) -> None:
    """Score predicted lesion masks: Dice, IoU, precision, recall, HD95, autoPET FPV/FNV and lesion detection,
    per task with bootstrap confidence intervals.

    Examples:

        unipet evaluate preds/ labelsTs/ --out eval/

        unipet evaluate preds/ manifest.json --out eval/ --match iou --iou-threshold 0.5 --cldice

        unipet evaluate preds/ manifest.json --out eval/ --positive-only --missing-as-empty --workers 8
    """
    from unipet.evaluate.runner import EvaluationConfig, evaluate

    config = EvaluationConfig(connectivity=connectivity, rule=match, iou_threshold=iou_threshold,
                              size_bins_ml=parse_bins(size_bins), with_cldice=with_cldice, positive_only=positive_only,
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
