"""``unipet export``: a checkpoint's network as ONNX or OpenVINO graphs, for ``unipet predict --backend``."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import app


@app.command("export")
def export_command(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="Run folder or checkpoint folder (e.g. the shipped "
                                   "default: python -c 'import unipet.checkpoint as c; print(c.default_checkpoint())')."),
    out: Path = typer.Argument(..., metavar="OUT", help="Folder for the export (graphs, meta.json, export.json)."),
    fmt: str = typer.Option("onnx", "--format", help="onnx (ONNX Runtime or OpenVINO) or openvino (OpenVINO IR)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32; int8 (NNCF, calibrated on phantom tiles) or "
                                  "bf16 with --format openvino — accepted only if the masks stay within Dice 0.98 "
                                  "and MTV / SUVmax within 2 % of PyTorch float32."),
    task_mode: str = typer.Option("fixed", "--task-mode", help="Prompted models: fixed (one graph per task, each "
                                  "runs only its own head) or input (one graph, the task an input; every head runs)."),
    check_studies: Path = typer.Option(None, "--check-studies", help="Real studies (any input of `unipet predict`, "
                                       "e.g. ../shared/real_sts_fdg) added to the int8 / bf16 acceptance check."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export in OUT."),
    keep_rejected: bool = typer.Option(False, "--keep-rejected", help="Write an int8 / bf16 export that misses the "
                                       "acceptance anyway, flagged accepted: false in export.json (for measurement)."),
) -> None:
    """Export a checkpoint's network with its preprocessing and task list, so that a study is segmented from the
    export alone (`unipet predict --checkpoint OUT --backend onnxruntime|openvino`).

    Tiles are fixed at the checkpoint's patch, the batch is dynamic. Every graph is checked against PyTorch on the
    same phantom tiles (max |Δ| of probabilities, printed and kept in OUT/export.json).

    Examples:

        unipet export runs/dpdnet models/dpdnet-onnx

        unipet export runs/dpdnet models/dpdnet-int8 --format openvino --precision int8 --check-studies real/

        unipet predict autopet/ preds/ --checkpoint models/dpdnet-onnx --backend onnxruntime
    """
    from unipet.infer.backends.export import export_checkpoint

    record = export_checkpoint(run_dir, out, fmt=fmt, task_mode=task_mode, precision=precision,
                               check_studies=check_studies, overwrite=overwrite, keep_rejected=keep_rejected,
                               progress=lambda line: console.print(line, markup=False))
    if "acceptance" in record and not record["acceptance"]["accepted"]:
        console.print(f"{precision} REFUSED, kept flagged (accepted: false): {record['acceptance']['refusal']}",
                      markup=False)
    elif "acceptance" in record:
        rows = record["acceptance"]["studies"]
        console.print(f"{precision} accepted on {len(rows)} studies: lowest Dice {min(r['dice'] for r in rows):.4f}, "
                      f"largest MTV difference {max(r['mtv_rel_diff'] for r in rows):.2%}, largest SUVmax difference "
                      f"{max(r['suv_max_rel_diff'] for r in rows):.2%}", markup=False)
    console.print(f"exported {len(record['networks'])} graph(s) ({record['format']}, {record['precision']}, task mode "
                  f"{record['task_mode']}, tile {'x'.join(map(str, record['tile']))}) to {out}; id {record['id']}",
                  markup=False)
