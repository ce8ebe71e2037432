"""``unipet predict``: segment studies with a trained checkpoint; mask NIfTI + lesion table per study."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console, err_console
from unipet.cli.app import HiddenArgumentsCommand, app
from unipet.errors import BatchError


@app.command("predict", cls=HiddenArgumentsCommand)
def predict_command(
    first: Path = typer.Argument(None, metavar="INPUT", show_default=False,
                                 help="One study folder (SUV.nii.gz + CTres.nii.gz), a patient or autoPET folder, "
                                 "an nnU-Net raw folder, a manifest JSON or a DICOM folder; omit with --pet/--ct."),
    second: Path = typer.Argument(None, metavar="OUT_DIR", show_default=False,
                                  help="Output folder (<study>.nii.gz and <study>_lesions.csv)."),
    third: Path = typer.Argument(None, hidden=True, metavar="THIRD", help="The older form CHECKPOINT INPUT OUT_DIR still works."),
    pet: Path = typer.Option(None, "--pet", help="One study as a pair of files: the PET (SUV) NIfTI (with --ct; "
                             "then give only OUT_DIR)."),
    ct: Path = typer.Option(None, "--ct", help="The CT (HU) NIfTI of the --pet study."),
    checkpoint: Path = typer.Option(None, "--checkpoint", "-c", help="Run folder or checkpoint folder written by "
                                    "`unipet train`; default: the checkpoint shipped with unipet."),
    task: str = typer.Option(None, "--task", help="Task name (e.g. lymphoma, 'lung cancer'), or 'auto' (the model "
                             "infers it; reported with its probability, and flagged when below "
                             "AUTO_CONFIDENCE = 0.5), or 'any' (a type without a prompt: every prompt is run and "
                             "a voxel's largest lesion probability is kept). Default: each study's own task, "
                             "else auto."),
    tta: bool = typer.Option(False, "--tta", help="Mirroring test-time augmentation."),
    tta_axes: str = typer.Option(None, "--tta-axes", help="Axes to mirror (0=z, 1=y, 2=x); default: those the "
                                 "checkpoint was trained to be mirrored along (its recipe's flip axes)."),
    tta_budget: float = typer.Option(None, "--tta-budget", help="Seconds per study after which no further mirrored pass starts."),
    overlap: float = typer.Option(0.5, "--overlap", help="Tile overlap fraction."),
    tile_batch: int = typer.Option(2, "--tile-batch", help="Tiles per forward pass."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    cpu_bf16: bool = typer.Option(False, "--cpu-bf16", help="bfloat16 network on the CPU (faster where the CPU has "
                                  "native bf16, e.g. AVX512-BF16; probabilities change by about 1e-2)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Re-predict studies whose outputs exist, also another checkpoint's (default: skip this checkpoint's, refuse another's)."),
    series: list[str] = typer.Option(None, "--series", help="DICOM input: PET SeriesInstanceUID where a study has several (repeatable)."),
    backend: str = typer.Option("torch", "--backend", help="torch, onnxruntime or openvino (the [deploy] extra; "
                                "--checkpoint an `unipet export` folder, or a checkpoint exported while loading)."),
) -> None:
    """Predict lesion masks; resumable (finished studies are skipped), a failing study is reported and skipped.

    A line per study is printed as it finishes, with the task used and how it was chosen (given, the study's
    own, or auto with its probability); an unsure auto choice (p < 0.5) gets a one-line warning. Each mask
    records the checkpoint that made it: a re-run skips the studies this checkpoint finished, completes those a
    crash interrupted, and refuses to mix in another checkpoint's masks unless --overwrite.

    The input, the checkpoint's files and the task are checked before the model stack is imported, and the
    output folder is created only once the input is read.

    Under torchrun every rank predicts every K-th study. The checkpoint's metadata decides the preprocessing.

    Examples:

        unipet predict autopet/ preds/

        unipet predict unipet-demo/cohort/PH1_0002/PH1_0002_0 preds/ --task auto

        unipet predict --pet a/SUV.nii.gz --ct a/CTres.nii.gz preds/

        unipet predict cohort.json preds/ --checkpoint runs/dpdnet --task auto --tta --overlap 0.5

        torchrun --nproc_per_node=4 -m unipet predict autopet/ preds/ -c runs/dpdnet --device cuda

        unipet predict autopet/ preds/ -c models/dpdnet-openvino --backend openvino
    """
    paths = [p for p in (first, second, third) if p is not None]
    inputs, out_dir, checkpoint = _split_paths(paths, checkpoint, pet is not None or ct is not None)
    checkpoint = preflight(inputs, out_dir, checkpoint, task, pet, ct)

    from unipet.infer import Predictor, predict_batch
    from unipet.infer.predictor import (check_device, parse_axes, task_choice_line, task_is_uncertain,
                                        uncertain_task_warning)

    axes = None if tta_axes is None else parse_axes(tta_axes)
    check_device(device)
    predictor = Predictor.from_checkpoint(checkpoint, device=device, overlap=overlap, tta=tta, tta_axes=axes,
                                          tta_budget_s=tta_budget, tile_batch=tile_batch, cpu_bf16=cpu_bf16,
                                          backend=backend)
    unsure: list[str] = []

    def line(i: int, total: int, case_id: str, status: str, detail) -> None:
        width = len(str(total))
        head = f"[{i:>{width}}/{total}] {case_id}:"
        if status == "done":
            r = detail
            choice = task_choice_line(r["task"], r["task_source"], r["task_probability"])
            console.print(f"{head} {choice}, {r['lesions']} lesions, {r['volume_ml']:.1f} mL, {r['seconds']:.1f} s",
                          markup=False)
            if task_is_uncertain(r["task_source"], r["task_probability"]):
                unsure.append(case_id)
                err_console.print(f"{head} warning: " + uncertain_task_warning(r["task"], r["task_probability"],
                                                                                r["task_probabilities"]),
                                  markup=False)
        elif status == "skipped":
            console.print(f"{head} skipped (predicted before by this checkpoint)", markup=False)
        else:
            err_console.print(f"{head} failed: {detail}", markup=False)

    report = predict_batch(predictor, inputs, out_dir, task=task, overwrite=overwrite, on_case=line,
                           series_uid=series or None, pet=pet, ct=ct)
    console.print(f"{len(report.done)} predicted, {len(report.skipped)} skipped (done before), "
                  f"{len(report.failed)} failed; outputs in {out_dir}", markup=False)
    if unsure:
        err_console.print(f"{len(unsure)} studies with an unsure auto task (p < 0.5, listed above): name the "
                          "cancer type with --task where you know it", markup=False)
    total = len(report.failed) + len(report.done) + len(report.skipped)
    if report.failed and total == 1:  # one study: its cause is the run's one line
        case_id, message = next(iter(report.failed.items()))
        raise BatchError(f"{case_id}: {message.split(': ', 1)[-1]}")
    if report.failed:
        raise BatchError(f"{len(report.failed)} of {len(report.failed) + len(report.done) + len(report.skipped)} "
                         f"studies failed (listed above and in {out_dir}/summary.json); fix them and re-run the "
                         "same command to predict only those")


def _split_paths(paths: list[Path], checkpoint: Path | None, pair: bool) -> tuple[Path | None, Path, Path | None]:
    """``(inputs, out_dir, checkpoint)`` from the positional paths: ``INPUT OUT_DIR``, the older
    ``CHECKPOINT INPUT OUT_DIR``, or ``OUT_DIR`` alone with --pet/--ct."""
    from unipet.errors import ConfigError

    if pair and len(paths) == 1:
        return None, paths[0], checkpoint
    if pair and len(paths) == 2 and checkpoint is None:
        return None, paths[1], paths[0]
    if not pair and len(paths) == 3 and checkpoint is None:
        return paths[1], paths[2], paths[0]
    if not pair and len(paths) == 2:
        return paths[0], paths[1], checkpoint
    form = "--pet PET --ct CT OUT_DIR" if pair else "INPUT OUT_DIR"
    raise ConfigError(f"predict takes {form} (and --checkpoint), got {len(paths)} paths; e.g. "
                      "`unipet predict autopet/ preds/` or `unipet predict --pet a/SUV.nii.gz --ct a/CTres.nii.gz "
                      "preds/`")


def preflight(inputs: Path | None, out_dir: Path, checkpoint: Path | None, task: str | None, pet: Path | None,
              ct: Path | None) -> Path:
    """The checks that need no model stack (torch, MONAI), run before it is imported: the input's layout
    (``unipet.io.inputs.resolve_input``), the output folder (without creating it), the checkpoint's files and
    the task name against its task set. Returns the checkpoint folder.

    Raises:
        UnipetError: the first problem found, in that order.
    """
    from unipet.api import checkpoint_meta
    from unipet.checkpoint import default_checkpoint
    from unipet.fileio import check_output_folder
    from unipet.io.inputs import resolve_input

    resolve_input(inputs, pet=pet, ct=ct)
    check_output_folder(out_dir)
    checkpoint = checkpoint if checkpoint is not None else default_checkpoint()
    meta = checkpoint_meta(checkpoint)
    if task not in (None, "auto", "any"):
        meta.task_set.index(task)
    return checkpoint
