"""``unipet demo``: the README's first command — the whole chain on an embedded default cohort."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import app


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("unipet-demo"), "--out", "-o", help="Working folder (re-used when it exists)."),
    n: int = typer.Option(40, "--n", help="Number of phantom studies (>= 30 for the survival analysis)."),
    seed: int = typer.Option(1, "--seed", help="Phantom and split seed (the default model was trained on seed 0)."),
    workers: int = typer.Option(1, "--workers", "-j", help="Parallel processes."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Run or checkpoint folder (default: the shipped DpDNet)."),
    device: str = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    no_segment: bool = typer.Option(False, "--no-segment", help="Stop after generating, importing and preprocessing."),
) -> None:
    """Generate a phantom PET/CT cohort, segment it, evaluate, quantify, analyse survival, write report.html.

    Steps: phantom -> import -> preprocess -> predict (the shipped DpDNet unless --checkpoint) -> evaluate ->
    quantify (predicted and reference masks) -> survival (simulated outcomes) -> report.html. Finished steps
    are re-used when the folder is run again.

    Examples:

        unipet demo

        unipet demo --out /tmp/demo --n 60 -j 4 --device cuda

        unipet demo --checkpoint runs/dpdnet --out demo-mine
    """
    from unipet.demo import run_demo
    from unipet.errors import ConfigError

    if n < 30 and not no_segment:
        raise ConfigError(f"--n {n} is too few studies for the survival analysis; use --n 30 or more (or --no-segment)")
    result = run_demo(out, n=n, seed=seed, workers=workers, checkpoint=checkpoint, segment=not no_segment,
                      device=device, echo=console.print)
    console.print(result.summary)
    if result.report is None:
        return
    console.print("  mean Dice per cancer type over its lesion-positive examinations (baselines and follow-ups):")
    for task, dice in sorted(result.dice_by_task.items()):
        n_studies = result.studies_by_task.get(task, 0)
        console.print(f"  Dice {task:<16} {dice:.3f} (n = {n_studies} studies)" if dice == dice else
                      f"  Dice {task:<16} n/a (no lesion-positive study)")
    n_pat = next((int(a.get("n", 0)) for a in result.agreement.values()), 0)
    console.print(f"  biomarker agreement, baseline examination per patient (n = {n_pat} patients; the report's "
                  "agreement table covers every examination):")
    for marker, a in result.agreement.items():
        console.print(f"  {marker:<14} predicted - reference: bias {a['bias']:.2f}, 95 % LoA {a['loa_lo']:.2f} to "
                      f"{a['loa_hi']:.2f}, median |rel. diff| {100 * a['median_abs_rel_diff']:.0f} % "
                      f"(n = {int(a.get('n', 0))})")
    from unipet.report.html import format_stat as f

    for marker, res in result.survival.items():
        hr, ci = res["hr_dichotomised"], res["c_index"]
        console.print(f"  {marker:<14} HR {f(hr['hr'], '.2f')} ({f(hr['lo'], '.2f')}-{f(hr['hi'], '.2f')}), "
                      f"C-index {f(ci['value'], '.3f')} ({f(ci['lo'], '.3f')}-{f(ci['hi'], '.3f')})")
    console.print(f"report: {result.report}")
