"""int8 post-training quantisation of an exported network with NNCF (OpenVINO's quantiser).

Method (unipet's choice, NNCF's defaults otherwise): ``nncf.quantize`` on the OpenVINO model with the ``MIXED``
preset (symmetric int8 weights per output channel, asymmetric int8 activations: the activations after LeakyReLU and
instance norm are not centred on zero), statistics from ``calibration.phantom_tiles`` — content tiles of
``CALIBRATION_SEEDS`` phantom studies preprocessed as the checkpoint says — and NNCF's fast bias correction.
The task input (``task_mode="input"``) is fed the task each calibration tile is assigned in turn.

ONNX Runtime's static quantiser was tried on the shipped default and not kept: its QDQ 3-D convolutions ran about
4x slower than its own float32 graph on this CPU (no int8 3-D convolution kernel), so int8 is an OpenVINO export.
The quantised graph is accepted only after ``calibration.mask_agreement`` (see ``unipet.infer.backends.export``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from unipet.infer.backends import require


def quantize_openvino(model: Any, tiles: np.ndarray, num_tasks: int | None = None) -> Any:
    """The int8 version of an OpenVINO ``Model`` calibrated on ``tiles [n, C, *patch]`` (one tile per sample).

    ``num_tasks``: the graph takes ``task int64[B]`` as a second input (``task_mode="input"``); tile ``i`` is fed
    task ``i % num_tasks``.
    """
    nncf = require("nncf", "int8 quantisation")
    samples = [tiles[i:i + 1] for i in range(len(tiles))]
    if num_tasks is not None:
        samples = [[s, np.array([i % num_tasks], dtype=np.int64)] for i, s in enumerate(samples)]
    return nncf.quantize(model, nncf.Dataset(samples), preset=nncf.QuantizationPreset.MIXED,
                         subset_size=len(samples), fast_bias_correction=True)
