"""The ONNX Runtime / OpenVINO backend tests, each module in a pytest subprocess of its own.

ONNX Runtime and OpenVINO leave native thread pools in the process that runs them; a later PyTorch training in
the same pytest worker then crashed with a segmentation fault (seen under xdist: ``tests/train/test_trainer.py``
after ``test_export.py``). The cases live in ``cases_*.py`` (not collected directly) and run here in a child
process, so that no worker ever holds those runtimes.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


@pytest.mark.parametrize("module", ["cases_export.py", "cases_graph.py", "cases_runtime.py"])
def test_backend_cases(module):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
                           str(HERE / module)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
