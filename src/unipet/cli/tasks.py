"""``unipet tasks``: show a task set (names, kinds, prompts)."""
from __future__ import annotations

import json

import typer

from unipet.cli._common import console
from unipet.cli.app import app


@app.command("tasks")
def tasks_command(
    task_set: str = typer.Option("default", "--set", help="Shipped task-set name or path to a task-set JSON."),
    as_json: bool = typer.Option(False, "--json", help="Print the task set as JSON."),
) -> None:
    """List the tasks (cancer types / targets) of a task set and their text prompts.

    Examples:

        unipet tasks

        unipet tasks --set pet_tumours --json
    """
    from rich.table import Table

    from unipet.tasks import TaskSet, shipped_task_sets

    ts = TaskSet.load(task_set)
    if as_json:
        print(json.dumps(ts.to_dict(), indent=2))
        return
    table = Table(title=f"task set {ts.name!r} (shipped: {', '.join(shipped_task_sets())})")
    for col in ("index", "name", "kind", "tracer", "prompt"):
        table.add_column(col)
    for i, t in enumerate(ts):
        table.add_row(str(i), t.name, t.kind, t.tracer or "", ts.prompts()[i])
    console.print(table)
