"""``unipet demo``: the README's first command — the whole chain on an embedded default cohort."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import app


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("unipet-demo"), "--out", "-o", help="Working folder (re-used when it exists)."),
    n: int = typer.Option(12, "--n", help="Number of phantom studies."),
    seed: int = typer.Option(0, "--seed", help="Phantom and split seed."),
    workers: int = typer.Option(1, "--workers", "-j", help="Parallel processes."),
) -> None:
    """Generate a small phantom PET/CT cohort, import it, preprocess it and summarise it.

    Examples:

        unipet demo

        unipet demo --out /tmp/demo --n 24 -j 4
    """
    from unipet.demo import run_demo

    summary = run_demo(out, n=n, seed=seed, workers=workers, echo=console.print)
    console.print(summary)
