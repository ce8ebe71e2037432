"""gCIS commands: ``unipet gcis export`` (single-path model of one task) and ``unipet gcis adapt`` (few-shot
adaptation); ``unipet adapt`` is the latter's hidden former name (``unipet export`` is now the ONNX / OpenVINO
export of any checkpoint, ``unipet.cli.export``)."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import family, family_command

gcis = family("gcis", "gCIS: prune a model to one task, few-shot adaptation to a new prompt.",
              ["unipet gcis export --model runs/gcis --task aorta --out models/gcis-aorta",
               "unipet gcis adapt --model runs/gcis --data cache/ --task iliac_arteries --shots 5 --out runs/iliac5"])


@family_command(gcis, "export")
def export_command(
    model: Path = typer.Option(..., "--model", "-m", help="A full gcis run (or checkpoint) folder."),
    task: str = typer.Option(..., "--task", help="Task (name or alias) the exported model segments."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the pruned model's checkpoint/."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a checkpoint already in --out."),
) -> None:
    """Prune a gcis model to one task: keep only the sub-pathway that task is routed to at every decoder level.

    The exported model gives the same masks as the full model for that task, with fewer parameters; it is a normal
    checkpoint for `unipet predict`.

    Examples:

        unipet gcis export --model runs/gcis --task aorta --out models/gcis-aorta

        unipet predict cohort.json preds/ --checkpoint models/gcis-aorta --task aorta
    """
    from unipet.analysis.gcis import export

    record = export(model, task, out, overwrite=overwrite)
    full, pruned = record["params_full"], record["params_pruned"]
    console.print(f"exported task {record['task']} (route {record['route']}): {pruned / 1e6:.2f} M parameters of "
                  f"{full / 1e6:.2f} M ({100 * (1 - pruned / full):.1f} % removed); checkpoint in {out / 'checkpoint'}")


@family_command(gcis, "adapt", alias="adapt")
def adapt_command(
    model: Path = typer.Option(..., "--model", "-m", help="A full gcis run whose routers route the new prompt."),
    data: Path = typer.Option(..., "--data", help="Cache folder (`unipet preprocess`) with studies of the new task."),
    task: str = typer.Option(..., "--task", help="The cache's task whose studies are the shots."),
    shots: int = typer.Option(..., "--shots", min=1, help="Number of training studies (N-shot)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder of the adapted model."),
    prompt: str = typer.Option(None, "--prompt", help="Text prompt routed (default: the task's description)."),
    iterations: int = typer.Option(None, "--iterations", help="Optimizer steps (recipe gcis-adapt: 2000)."),
    recipe: str = typer.Option("gcis-adapt", "--recipe", help="Recipe (shipped name or JSON/YAML file)."),
    patch: tuple[int, int, int] = typer.Option(None, "--patch", help="Patch size D H W (multiples of 32)."),
    batch: int = typer.Option(None, "--batch", help="Samples per step."),
    workers: int = typer.Option(None, "--workers", "-j", help="Data-loader processes."),
    seed: int = typer.Option(0, "--seed", help="Which studies are the shots, and the training seed."),
    device: str = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Baseline: same single-path network, random "
                                      "initialisation, everything trained."),
) -> None:
    """Few-shot adaptation: route the prompt, prune to its paths, freeze the encoder, train on N studies.

    Examples:

        unipet gcis adapt --model runs/gcis --data cache/ --task iliac_arteries --prompt "iliac artery" --shots 5 --out runs/iliac5

        unipet gcis adapt --model runs/gcis --data cache/ --task iliac_arteries --shots 1 --out runs/iliac1 --iterations 500
    """
    from unipet.train.gcis import adapt

    result = adapt(model, data, out, task=task, shots=shots, prompt=prompt, recipe=recipe, iterations=iterations,
                   seed=seed, device=device, from_scratch=from_scratch, patch_size=patch, batch_size=batch,
                   workers=workers, progress=True)
    console.print(f"adapted to {result['task']} (prompt {result['prompt']!r}, route {result['route']}) on "
                  f"{len(result['cases'])} studies: {result['trainable_params'] / 1e6:.2f} M trained, "
                  f"{result['frozen_params'] / 1e6:.2f} M frozen; checkpoint in {out / 'checkpoint'}")


@family_command(gcis, "organ-tasks")
def organ_tasks_command(
    manifest: Path = typer.Argument(..., help="Manifest JSON whose cases have organ maps (e.g. a phantom cohort)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the structure masks (<case>/<task>.nii.gz)."),
    manifest_out: Path = typer.Option(..., "--manifest-out", help="Manifest JSON to write (the cases plus one per "
                                      "study and structure)."),
    tasks: list[str] = typer.Option(None, "--task", help="Organ / vessel task to add (repeatable; default every "
                                    "organ task of the task set)."),
    task_set: str = typer.Option(None, "--task-set", help="Task set naming the structures (default: the "
                                 "manifest's own, e.g. phantom_structures)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing masks and --manifest-out."),
) -> None:
    """Organs and vessels as tasks: write each structure's mask from the organ maps and a manifest with one extra
    case per (study, structure), so that gCIS trains on tubular targets (aorta, ureters) like on lesions.

    Examples:

        unipet gcis organ-tasks cohort.json --task-set phantom_structures --out masks/ --manifest-out structures.json

        unipet gcis organ-tasks cohort.json --task aorta --task ureter --out masks/ --manifest-out aorta_ureter.json
    """
    from unipet.data.organ_tasks import add_organ_tasks
    from unipet.fileio import check_writable
    from unipet.io.manifest import Manifest
    from unipet.tasks import TaskSet

    check_writable(manifest_out, overwrite)
    cases = Manifest.load(manifest)
    if task_set is not None:
        cases = Manifest(cases.cases, task_set=TaskSet.load(task_set), source=cases.source, root=cases.root)
    result = add_organ_tasks(cases, out, tasks=tasks or None, overwrite=overwrite)
    result.save(manifest_out, overwrite=overwrite)
    console.print(f"{len(result.cases) - len(cases.cases)} structure cases added to {len(cases.cases)}; masks in "
                  f"{out}, manifest {manifest_out}")
