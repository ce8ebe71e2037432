"""``unipet mastpro experts``: how a trained MAST-Pro routes tokens to its generic and task-specific experts, per task."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import family, family_command

mastpro = family("mastpro", "MAST-Pro: expert usage of a trained model, anatomical encoder pre-training.",
                 ["unipet mastpro experts runs/mastpro cache/ --split val",
                  "unipet mastpro pretrain-anatomy cache/ --out runs/anatomy-ae"])
from unipet.errors import ConfigError


@family_command(mastpro, "experts", alias="experts")
def experts_command(
    checkpoint: Path = typer.Argument(..., help="MAST-Pro run folder or checkpoint folder written by `unipet train`."),
    cache: Path = typer.Argument(..., help="Cache folder (`unipet preprocess`) whose studies are run."),
    split: str = typer.Option(None, "--split", help="Only the studies of this split (train, val, test); default all."),
    cases: int = typer.Option(None, "--cases", min=1, help="At most this many studies (in cache order)."),
    general: bool = typer.Option(False, "--general", help="Route every study through the general router (prompt-free)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the full report (per layer and expert) as JSON here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
) -> None:
    """Report MAST-Pro's expert usage per task: the share of token assignments going to the generic experts and
    to the task's own experts (averaged over the D-MoE layers) and how many experts are active.

    Each study runs through the sliding-window predictor with its own task prompt (or with --general, through
    the general router); the full per-layer, per-expert shares go to --out.

    Examples:

        unipet mastpro experts runs/mastpro cache/ --split val

        unipet mastpro experts runs/mastpro cache/ --cases 20 --out usage.json

        unipet mastpro experts runs/mastpro-peft cache/ --general --device cuda
    """
    from unipet.data.cache import Cache
    from unipet.fileio import atomic_write_json, check_writable
    from unipet.infer import Predictor
    from unipet.analysis.mastpro import cohort_usage

    if out is not None:
        check_writable(out, overwrite)
    data = Cache(cache)
    ids = data.split(split)[:cases] if cases else data.split(split)
    if not ids:
        raise ConfigError(f"the cache {cache} has no studies{f' in split {split!r}' if split else ''}; choose another split")
    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    report = cohort_usage(predictor, data, ids, general=general)
    if out is not None:
        atomic_write_json(out, report, overwrite=overwrite)
    from rich.table import Table

    table = Table(title=f"MAST-Pro expert usage over {len(ids)} studies ({report['generic_experts']} generic, "
                        f"{report['task_experts']} per task)")
    for col in ("route", "tokens / layer", "generic share", "own-task share", "active experts"):
        table.add_column(col, justify="left" if col == "route" else "right")
    for name, row in report["routes"].items():
        table.add_row(name, f"{row['tokens']:.0f}", f"{row['generic_share']:.3f}", f"{row['own_share']:.3f}",
                      f"{row['active_experts']:.1f}")
    console.print(table)
