"""``unipet report``: one self-contained HTML report of a cohort."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console, require_inputs
from unipet.cli.app import app


@app.command("report")
def report_command(
    out: Path = typer.Option(..., "--out", "-o", help="HTML file to write."),
    manifest: Path = typer.Option(None, "--manifest", help="Manifest of the studies (PET, reference label)."),
    pred: Path = typer.Option(None, "--pred", help="Folder of predicted masks <case_id>.nii.gz."),
    eval_dir: Path = typer.Option(None, "--eval", help="Folder of `unipet evaluate` (per_case.csv, summary.json)."),
    quant_pred: Path = typer.Option(None, "--quant-pred", help="`unipet quantify` folder of the predicted masks."),
    quant_ref: Path = typer.Option(None, "--quant-ref", help="`unipet quantify` folder of the reference masks."),
    survival: Path = typer.Option(None, "--survival", help="Folder of `unipet survival`."),
    max_studies: int = typer.Option(None, "--max-studies", help="Show the MIPs of at most N studies."),
    title: str = typer.Option("unipet cohort report", "--title", help="Title of the page."),
    viewers: bool = typer.Option(True, "--viewers/--no-viewers", help="With --manifest: write an interactive 3-D viewer page per shown study (OUT_files/viewers/) and link it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing HTML file."),
) -> None:
    """Write one self-contained HTML report: what was run and the headline per cancer type first (Dice with CI,
    lesion sensitivity by size, FPV/FNV), then biomarker agreement, survival, and per-study PET MIPs worst first,
    each linked to its 3-D viewer; every other number in collapsed details and in CSV/JSON files in OUT_files/.

    Every input is optional; a section whose input is missing is replaced by a note.

    Examples:

        unipet report --manifest cohort.json --pred preds --eval eval --out report.html

        unipet report --manifest cohort.json --pred preds --eval eval --quant-pred q_pred --quant-ref q_ref --survival surv --max-studies 20 --out report.html
    """
    require_inputs(manifest=manifest, prediction_folder=pred, evaluation_folder=eval_dir, quantify_folder=quant_pred, reference_quantify_folder=quant_ref, survival_folder=survival)
    from unipet.report import build_report

    settings = {"max_studies": "all" if max_studies is None else max_studies}
    path = build_report(out, manifest=manifest, pred_dir=pred, eval_dir=eval_dir, quant_pred=quant_pred,
                        quant_ref=quant_ref, survival_dir=survival, settings=settings, max_studies=max_studies,
                        title=title, viewers=viewers and manifest is not None, overwrite=overwrite)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and its data files in "
                  f"{path.with_name(path.stem + '_files')}")
