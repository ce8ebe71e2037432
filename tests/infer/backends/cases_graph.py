"""Exported graphs compute what the PyTorch module computes: DpDNet with its task fixed per graph or as an input,
the plain nnU-Net and STU-Net builders (tiny widths: the claim is about the export mechanism)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from unipet.infer.backends.graph import Classifier, FixedTask, TaskInput, export_onnx  # noqa: E402
from unipet.infer.backends.runtime import onnxruntime_session, openvino_session  # noqa: E402
from unipet.models import create  # noqa: E402
from unipet.models.blocks import every_task_branch  # noqa: E402

PATCH = (16, 32, 32)


def _tiny(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create(name, in_channels=2, num_classes=2, tasks=["lymphoma", "lung_cancer", "melanoma"],
                  patch_size=PATCH, **kw).eval()


def _x(batch: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(batch, 2, *PATCH)).astype(np.float32)


@pytest.mark.parametrize("name, kw", [("nnunet", {"base_channels": 4, "max_channels": 16}),
                                      ("stunet-s", {"base_width": 4})])
def test_plain_builders_export_to_the_same_logits(tmp_path, name, kw):
    model = _tiny(name, **kw)
    path = export_onnx(FixedTask(model, None), tmp_path / "n.onnx", PATCH, 2)
    x = _x()
    with torch.inference_mode():
        ref = FixedTask(model, None)(torch.from_numpy(x)).numpy()
    got = onnxruntime_session(path)(x)  # batch 3: the traced batch was 2, the batch axis is dynamic
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4


def test_dpdnet_task_fixed_per_graph_and_task_as_input_give_pytorchs_logits(tmp_path):
    model = _tiny("dpdnet", base_width=4, task_classifier=True)
    x = _x(3)
    task = torch.tensor([2, 0, 2])
    with torch.inference_mode():
        ref = TaskInput(model)(torch.from_numpy(x), task).numpy()
        with every_task_branch():  # the traced path: every head runs, each sample's own output is gathered
            gathered = TaskInput(model)(torch.from_numpy(x), task).numpy()
        probs = Classifier(model)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(gathered, ref, atol=1e-5)
    one = onnxruntime_session(export_onnx(TaskInput(model), tmp_path / "in.onnx", PATCH, 2, num_tasks=3))
    assert np.abs(one(x, task.numpy()) - ref).max() < 1e-4
    for t in (0, 2):
        fixed = onnxruntime_session(export_onnx(FixedTask(model, t), tmp_path / f"t{t}.onnx", PATCH, 2))
        rows = (task == t).numpy()
        assert np.abs(fixed(x[rows]) - ref[rows]).max() < 1e-4
    clf = openvino_session(export_onnx(Classifier(model), tmp_path / "c.onnx", PATCH, 2))
    assert np.abs(clf(x) - probs).max() < 1e-4
