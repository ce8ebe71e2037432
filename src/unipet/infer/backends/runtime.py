"""Exported graphs run by ONNX Runtime or OpenVINO, behind the predictor's sliding window.

``ExportedNetwork`` stands where the PyTorch module stands in ``unipet.infer.Predictor``: it is called with a batch
of tiles ``x [B, C, *patch]`` (a CPU torch tensor) and the task ``LongTensor[B]``, and returns the logits
``[B, K, *patch]`` as a float32 torch tensor; ``infer_task`` answers ``--task auto`` from the classifier graph. The
predictor's padding, tile grid, Gaussian stitching, TTA and restoration are the same code for every backend.

Threads: both runtimes use ``torch.get_num_threads()`` intra-op threads (PyTorch's default on this machine is one
per core), so that a comparison with the ``torch`` backend runs on the same cores. OpenVINO compiles for latency
(``PERFORMANCE_HINT=LATENCY``) at the export's precision: ``f32`` for fp32 and int8 graphs (NNCF's int8
convolutions; the operators left in float run in float32), ``bf16`` for a bf16 export or ``cpu_bf16=True``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from unipet.checkpoint import CheckpointMeta
from unipet.errors import ConfigError
from unipet.infer.backends import require

Session = Callable[..., np.ndarray]


def onnxruntime_session(path: Path, threads: int | None = None) -> Session:
    """``run(x, task=None) -> out`` of an ONNX graph on ONNX Runtime's CPU provider."""
    ort = require("onnxruntime", "the onnxruntime backend")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(x: np.ndarray, task: np.ndarray | None = None) -> np.ndarray:
        feed = {names[0]: x} if task is None else {names[0]: x, names[1]: task}
        return session.run(None, feed)[0]

    return run


def openvino_session(path: Path, threads: int | None = None, precision: str = "fp32") -> Session:
    """``run(x, task=None) -> out`` of an ONNX graph or OpenVINO IR compiled by OpenVINO for the CPU."""
    ov = require("openvino", "the openvino backend")
    core = ov.Core()
    hint = "bf16" if precision == "bf16" else "f32"
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {
        "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()), "INFERENCE_PRECISION_HINT": hint,
        "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()

    def run(x: np.ndarray, task: np.ndarray | None = None) -> np.ndarray:
        inputs = [x] if task is None else [x, task]
        request.infer(inputs)
        return np.array(request.get_output_tensor(0).data, copy=True)

    return run


def make_session(path: Path, backend: str, precision: str = "fp32") -> Session:
    """A session of ``backend`` for the graph at ``path``."""
    if backend == "onnxruntime":
        if path.suffix != ".onnx":
            raise ConfigError(f"{path.name} is OpenVINO IR, which ONNX Runtime does not read; use --backend openvino "
                              "or export with --format onnx")
        if precision != "fp32":
            raise ConfigError(f"ONNX Runtime runs this export in fp32 only, not {precision}; use --backend openvino")
        return onnxruntime_session(path)
    if backend == "openvino":
        return openvino_session(path, precision=precision)
    raise ConfigError(f"backend {backend!r} does not run exported graphs; use onnxruntime or openvino")


class ExportedNetwork:
    """The predictor's network from exported graphs (see the module docstring).

    Args:
        networks: task index -> session (``task_mode="fixed"``), or ``{None: session}`` for one graph (a model
            without prompts, or ``task_mode="input"`` where the session takes the task as its second input).
        task_mode: ``"fixed"``, ``"input"`` or ``"none"``.
        classifier: session of the task classifier (``x -> probabilities [B, N]``), or None.
        output_activation: ``"softmax"`` or ``"sigmoid"`` (the checkpoint's).
    """

    accepts: tuple[str, ...] = ()

    def __init__(self, networks: dict[int | None, Session], task_mode: str, classifier: Session | None = None,
                 output_activation: str = "softmax") -> None:
        self.networks, self.task_mode = networks, task_mode
        self.task_classifier = classifier
        self.output_activation = output_activation
        self.requires: tuple[str, ...] = ("task",) if task_mode in ("fixed", "input") else ()

    def __call__(self, x: torch.Tensor, task: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        if "task" in self.requires and task is None:
            from unipet.errors import MissingInputError

            raise MissingInputError("this exported network needs a task prompt; pass --task with one of its tasks")
        xs = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        if self.task_mode == "none":  # a model without prompts ignores a task, as its PyTorch module does
            return torch.from_numpy(self.networks[None](xs))
        if self.task_mode == "input":
            return torch.from_numpy(self.networks[None](xs, task.to("cpu", torch.long).numpy()))
        ids = task.to("cpu").tolist()
        if len(set(ids)) == 1:
            return torch.from_numpy(self.networks[self._known(ids[0])](xs))
        out = None
        for t in sorted(set(ids)):
            idx = [i for i, v in enumerate(ids) if v == t]
            y = self.networks[self._known(t)](np.ascontiguousarray(xs[idx]))
            out = np.empty((xs.shape[0], *y.shape[1:]), y.dtype) if out is None else out
            out[idx] = y
        return torch.from_numpy(out)

    def _known(self, t: int) -> int:
        if t not in self.networks:
            from unipet.errors import UnknownTaskError

            raise UnknownTaskError(f"task index {t} has no exported graph (exported: {sorted(self.networks)})")
        return t

    def infer_task(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(task LongTensor[B], probability FloatTensor[B])`` from the classifier graph."""
        if self.task_classifier is None:
            from unipet.errors import MissingInputError

            raise MissingInputError("this export has no task classifier; pass --task with one of its tasks")
        prob = torch.from_numpy(self.task_classifier(np.ascontiguousarray(x.detach().float().cpu().numpy())))
        conf, idx = prob.max(dim=1)
        return idx, conf


def load_network(folder: Path, meta: CheckpointMeta, record: dict[str, Any], backend: str,
                 precision: str | None = None) -> ExportedNetwork:
    """``ExportedNetwork`` of an export folder (``bundle.read_export``) on ``backend``; ``precision`` overrides the
    export's runtime precision (``"bf16"`` for ``--cpu-bf16`` on OpenVINO)."""
    precision = precision or record.get("precision", "fp32")
    tasks = meta.task_set.names if record["task_mode"] == "fixed" else None
    networks = {(None if tasks is None else tasks.index(name)): make_session(folder / file, backend, precision)
                for name, file in record["networks"].items()}
    classifier = (make_session(folder / record["classifier"], backend, precision)
                  if record.get("classifier") else None)
    return ExportedNetwork(networks, record["task_mode"], classifier, meta.output_activation or "softmax")
