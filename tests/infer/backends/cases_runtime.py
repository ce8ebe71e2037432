"""The shipped default exported to fp32 ONNX and run by ONNX Runtime and OpenVINO gives PyTorch's masks on real
FDG PET/CT (three sarcoma crops of ``../shared/real_sts_fdg``): Dice >= 0.999 and the same lesion counts; an
exported network groups a batch of mixed tasks as PyTorch does."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from unipet.infer import Predictor  # noqa: E402
from unipet.infer.backends.runtime import ExportedNetwork  # noqa: E402

REAL = Path(__file__).resolve().parents[3].parent / "shared" / "real_sts_fdg"
CASES = ("STS_003", "STS_005", "STS_006")


@pytest.fixture(scope="module")
def default_export(tmp_path_factory):
    from unipet.checkpoint import default_checkpoint, load_checkpoint
    from unipet.infer.backends.export import write_graphs

    model, meta = load_checkpoint(default_checkpoint())
    folder = tmp_path_factory.mktemp("default-onnx")
    return model, meta, folder, write_graphs(model, meta, folder, "onnx")


@pytest.fixture(scope="module")
def real_studies():
    if not REAL.is_dir():
        pytest.skip(f"real sarcoma studies not found at {REAL} (they live in ../shared beside the checkout)")
    from unipet.io.layouts import import_autopet
    from unipet.io.manifest import load_study

    manifest = import_autopet(REAL)
    cases = [c for c in manifest.cases if c.patient_id in CASES]
    return [load_study(c, manifest.task_set, with_label=False) for c in cases]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_default_checkpoint_backends_give_pytorchs_masks_on_real_studies(default_export, real_studies, backend):
    from unipet.infer.backends.runtime import load_network

    model, meta, folder, record = default_export
    ref = Predictor(model, meta, device="cpu")
    other = Predictor(load_network(folder, meta, record, backend), meta)
    assert len(real_studies) == 3
    voxels = 0
    for study in real_studies:
        a, b = ref.predict_study(study, task="auto"), other.predict_study(study, task="auto")
        m1, m2 = a.mask > 0, b.mask > 0
        dice = 1.0 if not (m1.any() or m2.any()) else 2 * (m1 & m2).sum() / (m1.sum() + m2.sum())
        assert b.task == a.task and dice >= 0.999 and len(a.lesions) == len(b.lesions), (study.study_id, dice)
        voxels += int(m1.sum())
    assert voxels > 0  # the check is not one of empty masks


def test_a_batch_of_mixed_tasks_runs_each_tiles_own_graph():
    calls = []

    def graph(k):
        def run(x, task=None):
            calls.append((k, len(x)))
            return np.full((len(x), 2, *x.shape[2:]), float(k), np.float32)
        return run

    net = ExportedNetwork({0: graph(0), 1: graph(1)}, "fixed")
    out = net(torch.zeros(3, 2, 2, 2, 2), task=torch.tensor([1, 0, 1]))
    assert out[:, 0, 0, 0, 0].tolist() == [1.0, 0.0, 1.0] and sorted(calls) == [(0, 1), (1, 2)]
    assert net.requires == ("task",) and net.task_classifier is None
    plain = ExportedNetwork({None: graph(7)}, "none")  # a model without prompts ignores a task
    assert plain.requires == () and float(plain(torch.zeros(1, 2, 2, 2, 2), task=torch.tensor([3]))[0, 0, 0, 0, 0]) == 7
