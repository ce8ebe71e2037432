"""The network behind the sliding window: PyTorch (``torch``), or an exported ONNX / OpenVINO graph.

``unipet.infer.Predictor`` runs one sliding window, TTA and restoration for every backend; only the call that
turns a batch of tiles into logits changes:

- ``torch``: the checkpoint's ``nn.Module`` (``unipet.checkpoint.load_checkpoint``).
- ``onnxruntime``: an ONNX graph run by ONNX Runtime's CPU execution provider.
- ``openvino``: an ONNX graph or OpenVINO IR compiled by OpenVINO for the CPU (float32, bfloat16 on CPUs with
  native bf16, or an int8 graph quantised by NNCF).

``export`` writes a checkpoint's network as such a folder (``unipet export``), ``runtime`` loads one,
``quantize`` makes and checks the int8 graph. ONNX Runtime, OpenVINO, ONNX and NNCF are the optional ``[deploy]``
extra; a missing one is one ``MissingDependencyError`` line.
"""
from __future__ import annotations

import importlib
from typing import Any

from unipet.errors import ConfigError, UnipetError

#: backends ``unipet predict --backend`` takes
BACKENDS = ("torch", "onnxruntime", "openvino")
#: network precisions of an export: fp32, bf16 (OpenVINO's runtime precision on CPUs with native bf16), int8 (NNCF)
PRECISIONS = ("fp32", "bf16", "int8")
#: export formats of ``unipet export --format``
FORMATS = ("onnx", "openvino")


class MissingDependencyError(UnipetError):
    """An optional package of the ``[deploy]`` extra is not installed."""


def check_backend(name: str) -> str:
    """``name`` when it is one of ``BACKENDS``, else a ``ConfigError`` naming them."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    return name


def require(module: str, what: str) -> Any:
    """Import ``module`` (e.g. ``"onnxruntime"``); a missing one is one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = {"openvino": "openvino", "onnxruntime": "onnxruntime", "onnx": "onnx", "nncf": "nncf"}.get(
            module.split(".")[0], module)
        raise MissingDependencyError(f"{what} needs the Python package {package!r}, which is not installed; "
                                     "install unipet's deployment extra: pip install 'unipet[deploy]'") from None
