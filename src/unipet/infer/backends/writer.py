"""Writing a network as ONNX / OpenVINO graphs (``write_graphs``) and opening a checkpoint or an export folder as
the network behind the Predictor's sliding window (``open_network``). Kept apart from ``export`` (the checked
``unipet export``, which runs a Predictor itself) so that the Predictor can open a network without an import cycle.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unipet.errors import ConfigError
from unipet.infer.backends import FORMATS, PRECISIONS, require
from unipet.infer.backends.bundle import is_export, read_export
from unipet.infer.backends.graph import (OPSET, TASK_MODES, Classifier, FixedTask, TaskInput, check_exportable,
                                         export_onnx, has_classifier, needs_task)


def _graphs(model: torch.nn.Module, meta, task_mode: str) -> tuple[dict[str, tuple[torch.nn.Module, int | None]], str]:
    """``{file stem: (wrapper, task index)}`` to export, and the task mode recorded (``"none"`` without prompts)."""
    if not needs_task(model):
        return {"network": (FixedTask(model, None), None)}, "none"
    names = meta.task_set.names
    if task_mode == "input":
        return {"network": (TaskInput(model), None)}, "input"
    return {f"network.{name}": (FixedTask(model, i), i) for i, name in enumerate(names)}, "fixed"


def write_graphs(model: torch.nn.Module, meta, folder: Path, fmt: str = "onnx", task_mode: str = "fixed",
                 precision: str = "fp32", calibration: np.ndarray | None = None) -> dict[str, Any]:
    """Export ``model``'s graphs into ``folder`` (see ``graph``); returns the export record's graph part.

    ``calibration``: tiles for int8 (``calibration.phantom_tiles``), needed when ``precision="int8"``.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use {' or '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if task_mode not in TASK_MODES:
        raise ConfigError(f"unknown task mode {task_mode!r}; use {' or '.join(TASK_MODES)}")
    if precision in ("int8", "bf16") and fmt != "openvino":
        raise ConfigError(f"{precision} is an OpenVINO export (ONNX Runtime's int8 3-D convolutions were slower than "
                          f"its float32 here, and it has no bf16 convolutions); use --format openvino")
    check_exportable(model)
    model = model.float().eval()
    graphs, mode = _graphs(model, meta, task_mode)
    num_tasks = len(meta.task_set.names) if mode == "input" else None
    if mode != "none" and has_classifier(model):
        graphs["classifier"] = (Classifier(model), None)
    ov = require("openvino", "--format openvino") if fmt == "openvino" else None
    files = {}
    for stem, (wrapper, _) in graphs.items():
        onnx_path = export_onnx(wrapper, folder / f"{stem}.onnx", meta.patch, int(meta.model["in_channels"]),
                                num_tasks if stem != "classifier" else None)
        if ov is None:
            files[stem] = onnx_path.name
            continue
        ir = ov.convert_model(str(onnx_path))
        if precision == "int8" and stem != "classifier":
            from unipet.infer.backends.quantize import quantize_openvino

            if calibration is None:
                raise ConfigError("int8 needs calibration tiles")
            ir = quantize_openvino(ir, calibration, num_tasks)
        ov.save_model(ir, str(folder / f"{stem}.xml"), compress_to_fp16=False)
        onnx_path.unlink()
        files[stem] = f"{stem}.xml"
    tasks = meta.task_set.names if mode == "fixed" else None
    networks = {(tasks[graphs[s][1]] if tasks else "*"): f for s, f in files.items() if s != "classifier"}
    return {"format": fmt, "precision": precision, "task_mode": mode, "networks": networks,
            "classifier": files.get("classifier"), "tile": list(meta.patch), "batch": "dynamic", "opset": OPSET}


def open_network(path: str | Path, backend: str, bf16: bool = False):
    """``(network, meta)`` for ``Predictor``: an export folder's graphs, or a checkpoint's network exported here in
    a temporary folder (fp32 ONNX, a graph per task; deleted once loaded: both runtimes hold the graph in memory)."""
    precision = "bf16" if bf16 else None
    if is_export(path):
        meta, record = read_export(path)
        if not record.get("acceptance", {}).get("accepted", True):
            import warnings

            warnings.warn(f"{path} was refused by its acceptance check and kept for measurement only: "
                          f"{record['acceptance'].get('refusal', '')}", stacklevel=2)
        if backend == "onnxruntime" and record["format"] != "onnx":
            raise ConfigError(f"{path} is an OpenVINO export; run it with --backend openvino")
        from unipet.infer.backends.runtime import load_network

        return load_network(Path(path), meta, record, backend, precision), meta
    from unipet.checkpoint import load_checkpoint
    from unipet.infer.backends.runtime import load_network

    model, meta = load_checkpoint(path)
    with tempfile.TemporaryDirectory(prefix="unipet-export-") as tmp:
        record = write_graphs(model, meta, Path(tmp))
        return load_network(Path(tmp), meta, record, backend, precision), meta
