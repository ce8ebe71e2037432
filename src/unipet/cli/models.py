"""``unipet models``: list the registered architectures with their parameters and MACs."""
from __future__ import annotations

import json

import typer

from unipet.cli._common import console
from unipet.cli.app import app


@app.command("models")
def models_command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    patch: tuple[int, int, int] = typer.Option((112, 160, 128), "--patch", help="Patch size D H W (voxels) the "
                                               "models are built for and MACs counted at."),
    in_channels: int = typer.Option(2, "--in-channels", min=1, help="Input channels (2 = CT + PET)."),
    classes: int = typer.Option(2, "--classes", min=1, help="Output classes."),
    tasks: int = typer.Option(4, "--tasks", min=1, help="Number of tasks for prompt-driven models."),
    no_macs: bool = typer.Option(False, "--no-macs", help="Count parameters only (skip the forward pass)."),
) -> None:
    """List every registered model with its parameters, MACs (multiply-accumulates of one forward pass of one
    patch, counted on the meta device) and the prompts it takes.

    A model that cannot take the patch (e.g. Swin UNETR needs multiples of 32) is listed with the reason. The
    models of DpDNet's Table 1 show the published counts beside theirs, with the relative difference (and, for a
    row that is not matched within 3 %, the documented reason); parameters are compared at 2 input channels, 2
    classes and 4 tasks, MACs at 112 x 160 x 128. A model whose own paper publishes other counts (gCIS: full and
    one-task pruned sizes) shows them in a note (``paper`` in the JSON).

    Examples:

        unipet models

        unipet models --patch 128 160 128 --json

        unipet models --in-channels 1 --classes 3 --no-macs
    """
    from unipet.models.profile import profile_models

    rows = profile_models(patch=patch, in_channels=in_channels, num_classes=classes, tasks=tasks,
                          count_macs=not no_macs)
    if as_json:
        keys = ("name", "params", "macs", "prompts", "description", "reason", "table1", "paper")
        print(json.dumps([{k: row[k] for k in keys} for row in rows], indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"unipet models at patch {' x '.join(map(str, patch))}, {in_channels} input channel(s), "
                        f"{classes} classes")
    for col, justify in (("name", "left"), ("params (M)", "right"), ("MACs (G)", "right"),
                         ("DpDNet Table 1 (diff)", "right"), ("prompts", "left"), ("description", "left")):
        table.add_column(col, justify=justify)
    notes = []
    for row in rows:
        params = "-" if row["params"] is None else f"{row['params'] / 1e6:.2f}"
        macs = "-" if row["macs"] is None else f"{row['macs'] / 1e9:.2f}"
        cells = (row["name"], params, macs, _table1_cell(row.get("table1")), ", ".join(row["prompts"]) or "none",
                 row["description"])
        table.add_row(*(Text(c) for c in cells))  # plain text: descriptions may hold [brackets]
        if row["reason"]:
            notes.append(f"{row['name']}: {row['reason']}")
        if row.get("table1") and row["table1"]["note"]:
            notes.append(f"{row['name']} vs Table 1: {row['table1']['note']}")
        if row.get("paper"):
            notes.append(f"{row['name']} vs its paper: {_paper_note(row['paper'])}")
    console.print(table)
    for note in notes:
        console.print(note, style="dim", markup=False)


def _table1_cell(t1: dict | None) -> str:
    """``"15.19 M (+0.0 %)"``-style cell of a Table-1 comparison, ``""`` for a model not in the table."""
    if not t1:
        return ""
    cell = f"{t1['params'] / 1e6:.2f} M"
    if t1["params_diff_pct"] is not None:
        cell += f" ({t1['params_diff_pct']:+.1f} %)"
    if t1["macs"] is not None:
        cell += f", {t1['macs'] / 1e9:.1f} G"
        if t1["macs_diff_pct"] is not None:
            cell += f" ({t1['macs_diff_pct']:+.1f} %)"
    return cell


def _paper_note(paper: dict) -> str:
    """``"full 67.70 M [60.50] (+11.9 %), one task pruned 26.75 M [26.75] (+0.0 %)"``: a model's counts beside its
    own paper's (``paper_counts()``)."""
    parts = []
    for key, label in (("full", "full"), ("pruned", "one task pruned")):
        if paper.get(key) is not None:
            parts.append(f"{label} {paper[key] / 1e6:.2f} M [{paper['paper_' + key] / 1e6:.2f}] "
                         f"({paper[key + '_diff_pct']:+.1f} %)")
    return ", ".join(parts) + f" — {paper['source']}"
