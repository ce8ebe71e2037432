"""``unipet predict``: segment studies with a trained checkpoint; mask NIfTI + lesion table per study."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console, err_console
from unipet.cli.app import app
from unipet.errors import BatchError


@app.command("predict")
def predict_command(
    paths: list[Path] = typer.Argument(..., metavar="INPUTS OUT_DIR",
                                       help="INPUTS: manifest JSON, autoPET or nnU-Net raw folder, or DICOM folder; "
                                       "OUT_DIR: output folder (<study>.nii.gz and <study>_lesions.csv). The older "
                                       "form CHECKPOINT INPUTS OUT_DIR still works."),
    checkpoint: Path = typer.Option(None, "--checkpoint", "-c", help="Run folder or checkpoint folder written by "
                                    "`unipet train`; default: the checkpoint shipped with unipet."),
    task: str = typer.Option(None, "--task", help="Task name, or 'auto' (prompt-free). Default: each study's own task, else auto."),
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

    A line per study is printed as it finishes. Each mask records the checkpoint that made it: a re-run skips the
    studies this checkpoint finished and refuses to mix in another checkpoint's masks unless --overwrite.

    Under torchrun every rank predicts every K-th study. The checkpoint's metadata decides the preprocessing.

    Examples:

        unipet predict autopet/ preds/

        unipet predict cohort.json preds/ --checkpoint runs/dpdnet --task auto --tta --overlap 0.5

        torchrun --nproc_per_node=4 -m unipet predict autopet/ preds/ -c runs/dpdnet --device cuda

        unipet predict autopet/ preds/ -c models/dpdnet-openvino --backend openvino
    """
    from unipet.checkpoint import default_checkpoint
    from unipet.errors import ConfigError
    from unipet.infer import Predictor, predict_batch
    from unipet.infer.predictor import check_device, parse_axes

    if len(paths) == 3 and checkpoint is None:  # the older form: CHECKPOINT INPUTS OUT_DIR
        checkpoint, inputs, out_dir = paths
    elif len(paths) == 2:
        inputs, out_dir = paths
    else:
        raise ConfigError(f"predict takes INPUTS OUT_DIR (and --checkpoint), got {len(paths)} paths; e.g. "
                          "`unipet predict autopet/ preds/ --checkpoint runs/dpdnet`")
    checkpoint = checkpoint if checkpoint is not None else default_checkpoint()

    axes = None if tta_axes is None else parse_axes(tta_axes)
    check_device(device)
    predictor = Predictor.from_checkpoint(checkpoint, device=device, overlap=overlap, tta=tta, tta_axes=axes,
                                          tta_budget_s=tta_budget, tile_batch=tile_batch, cpu_bf16=cpu_bf16,
                                          backend=backend)

    def line(i: int, total: int, case_id: str, status: str, detail) -> None:
        width = len(str(total))
        head = f"[{i:>{width}}/{total}] {case_id}:"
        if status == "done":
            r = detail
            inferred = f" (p={r['task_probability']:.2f})" if r["task_probability"] is not None else ""
            console.print(f"{head} task {r['task']}{inferred}, {r['lesions']} lesions, {r['volume_ml']:.1f} mL, "
                          f"{r['seconds']:.1f} s", markup=False)
        elif status == "skipped":
            console.print(f"{head} skipped (predicted before by this checkpoint)", markup=False)
        else:
            err_console.print(f"{head} failed: {detail}", markup=False)

    report = predict_batch(predictor, inputs, out_dir, task=task, overwrite=overwrite, on_case=line,
                           series_uid=series or None)
    console.print(f"{len(report.done)} predicted, {len(report.skipped)} skipped (done before), "
                  f"{len(report.failed)} failed; outputs in {out_dir}", markup=False)
    if report.failed:
        raise BatchError(f"{len(report.failed)} of {len(report.failed) + len(report.done) + len(report.skipped)} "
                         f"studies failed (listed above and in {out_dir}/summary.json); fix them and re-run the "
                         "same command to predict only those")
