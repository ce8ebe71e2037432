"""``unipet compare``: paired significance tests of two methods' predictions on the same studies."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import app


@app.command("compare")
def compare_command(
    pred_a: Path = typer.Argument(..., help="Folder of method A's predicted masks <case>.nii.gz."),
    pred_b: Path = typer.Argument(..., help="Folder of method B's predicted masks <case>.nii.gz."),
    reference: Path = typer.Argument(..., help="Folder of reference masks <case>.nii.gz, or a manifest JSON."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (paired.csv, comparison.csv, summary.json)."),
    metric: list[str] = typer.Option(None, "--metric", help="Per-case metric to compare (repeatable); default "
                                     "dice, iou, hd95_mm, fpv_ml, fnv_ml, lesion_sensitivity, lesion_f1."),
    positive_only: bool = typer.Option(False, "--positive-only",
                                       help="Overlap metrics on lesion-positive studies only (FPV on all)."),
    missing_as_empty: bool = typer.Option(False, "--missing-as-empty",
                                          help="Score reference cases without a prediction as empty predictions."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples for the 95 % interval of the difference."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    workers: int = typer.Option(1, help="Processes scoring cases in parallel."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
) -> None:
    """Compare two methods study by study: mean of each, mean difference B - A with its bootstrap 95 % interval,
    paired t-test and Wilcoxon signed-rank p values, overall and per task.

    Examples:

        unipet compare preds_nnunet/ preds_dpdnet/ labelsTs/ --out compare/

        unipet compare preds_a/ preds_b/ manifest.json --out cmp/ --metric dice --metric hd95_mm --positive-only
    """
    from unipet.evaluate.compare import DEFAULT_METRICS, compare
    from unipet.evaluate.runner import EvaluationConfig

    config = EvaluationConfig(positive_only=positive_only, missing_as_empty=missing_as_empty, n_boot=n_boot,
                              seed=seed)
    result = compare(pred_a, pred_b, reference, out, metrics=metric or DEFAULT_METRICS, config=config,
                     workers=workers, overwrite=overwrite)
    summary = result["summary"]
    console.print(f"{summary['n_paired']} studies paired; {len(summary['only_a'])} only in A, "
                  f"{len(summary['only_b'])} only in B; results in {out}", markup=False)
    from rich.table import Table

    table = Table(title="B - A: mean difference (95 % bootstrap CI), paired t-test and Wilcoxon p")
    for col in ("group", "metric", "n", "A", "B", "B - A (95 % CI)", "t-test p", "Wilcoxon p"):
        table.add_column(col, justify="left" if col in ("group", "metric") else "right")

    def fmt(v: float, digits: int = 4) -> str:
        return "-" if v != v else f"{v:.{digits}g}"

    for _, r in result["comparison"].iterrows():
        table.add_row(r["group"], r["metric"], str(int(r["n"])), fmt(r["mean_a"]), fmt(r["mean_b"]),
                      f"{fmt(r['diff'])} ({fmt(r['diff_lo'])} to {fmt(r['diff_hi'])})", fmt(r["t_p"], 3),
                      fmt(r["wilcoxon_p"], 3))
    console.print(table)
