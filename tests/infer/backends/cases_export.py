"""``unipet export`` and the exported backends: the export folder segments a study on its own, through the same
sliding window, with PyTorch's masks (tiny DpDNet on phantoms: the mechanism); int8 is refused with its numbers
when it misses the acceptance; a missing runtime is one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from unipet.checkpoint import CheckpointMeta, save_checkpoint  # noqa: E402
from unipet.cli import main  # noqa: E402
from unipet.data.preprocess import PreprocessConfig  # noqa: E402
from unipet.errors import ConfigError, OutputExistsError  # noqa: E402
from unipet.infer import Predictor  # noqa: E402
from unipet.infer.backends import MissingDependencyError, require  # noqa: E402
from unipet.infer.backends import export as export_module  # noqa: E402
from unipet.infer.backends.calibration import phantom_studies  # noqa: E402
from unipet.infer.backends.export import ExportRejected, export_checkpoint  # noqa: E402
from unipet.models import create  # noqa: E402

PATCH = (16, 32, 32)
TASKS = ["lymphoma", "lung_cancer", "melanoma", "breast_cancer"]
NORM = {"CT": {"scheme": "ct-window", "level": 0.0, "width": 1800.0}, "PET": {"scheme": "suv-clip", "clip": 20.0}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny DpDNet checkpoint (task classifier on) at 10 mm whose lesion logit follows the PET channel, so that
    its masks are decided, not coin flips of an untrained network."""
    torch.manual_seed(0)
    model = create("dpdnet", in_channels=2, num_classes=2, tasks=TASKS, patch_size=PATCH, base_width=4,
                   task_classifier=True).eval()
    with torch.no_grad():
        for head in model.pa_heads:
            head[-1].weight.mul_(8.0)
    cfg = PreprocessConfig(channels=("CT", "PET"), normalisation=NORM, target_spacing=(10.0, 10.0, 10.0))
    meta = {"model": model.config, "preprocess": cfg.to_dict(), "patch_size": list(PATCH), "spacing": [10.0] * 3,
            "output_activation": "softmax"}
    return save_checkpoint(tmp_path_factory.mktemp("run") / "run", model, meta).parent


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "onnx"
    return out, export_checkpoint(run_dir, out, "onnx")


def _dice(a, b) -> float:
    a, b = a > 0, b > 0
    return 1.0 if a.sum() + b.sum() == 0 else 2 * (a & b).sum() / (a.sum() + b.sum())


def test_export_folder_holds_graphs_meta_and_the_check(run_dir, exported):
    out, record = exported
    meta = CheckpointMeta.from_dict(json.loads((out / "meta.json").read_text()))
    assert meta.preprocess == CheckpointMeta.coerce(json.loads((run_dir / "checkpoint" / "meta.json").read_text())).preprocess
    assert meta.task_set.names == TASKS and meta.patch == PATCH
    on_disk = json.loads((out / "export.json").read_text())
    assert on_disk["id"] == record["id"] and len(record["id"]) == 16
    assert sorted(record["networks"]) == sorted(TASKS) and record["classifier"] == "classifier.onnx"
    assert record["tile"] == list(PATCH) and record["batch"] == "dynamic" and record["task_mode"] == "fixed"
    assert all((out / f).is_file() for f in record["networks"].values())
    diffs = record["check"]["max_abs_diff_probability"]
    assert set(diffs) == {*TASKS, "classifier"} and max(diffs.values()) < 1e-3
    with pytest.raises(OutputExistsError):
        export_checkpoint(run_dir, out, "onnx")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_each_backend_gives_pytorchs_masks_on_phantoms(run_dir, exported, backend):
    ref = Predictor.from_checkpoint(run_dir, device="cpu")
    other = Predictor.from_checkpoint(exported[0], backend=backend)
    assert other.checkpoint_id == exported[1]["id"]
    for study in phantom_studies([9401, 9402]):
        a, b = ref.predict_study(study, task="auto"), other.predict_study(study, task="auto")
        assert b.task == a.task and b.task_probability == pytest.approx(a.task_probability, abs=1e-4)
        assert a.mask.sum() > 0 and _dice(a.mask, b.mask) >= 0.999 and len(a.lesions) == len(b.lesions)
        assert other.last_tiles == ref.last_tiles  # the same sliding window around another network


def test_task_as_input_graph_and_a_checkpoint_exported_while_loading(run_dir, tmp_path):
    study = phantom_studies([9403])[0]
    ref = Predictor.from_checkpoint(run_dir, device="cpu").predict_study(study, task="lung_cancer")
    export_checkpoint(run_dir, tmp_path / "in", "openvino", task_mode="input")
    record = json.loads((tmp_path / "in" / "export.json").read_text())
    assert record["task_mode"] == "input" and record["networks"] == {"*": "network.xml"}
    for predictor in (Predictor.from_checkpoint(tmp_path / "in", backend="openvino"),
                      Predictor.from_checkpoint(run_dir, backend="onnxruntime")):
        got = predictor.predict_study(study, task="lung_cancer")
        assert _dice(ref.mask, got.mask) >= 0.999 and len(ref.lesions) == len(got.lesions)
    with pytest.raises(ConfigError, match="onnxruntime or openvino"):
        Predictor.from_checkpoint(tmp_path / "in", backend="torch")
    with pytest.raises(ConfigError, match="OpenVINO export"):
        Predictor.from_checkpoint(tmp_path / "in", backend="onnxruntime")


def test_int8_that_misses_the_acceptance_is_refused_with_its_numbers(run_dir, tmp_path, monkeypatch):
    from unipet.infer.backends import calibration

    monkeypatch.setattr(export_module, "MIN_DICE", 1.01)  # no int8 graph can pass: the refusal path
    monkeypatch.setattr(export_module, "CALIBRATION_TILES", 8)  # test size: one calibration and one held-out study
    monkeypatch.setattr(calibration, "CALIBRATION_SEEDS", (9201,))
    monkeypatch.setattr(calibration, "HELD_OUT_SEEDS", (9301,))
    with pytest.raises(ExportRejected, match=r"1 of 1 studies miss; lowest Dice \d\.\d{4} .*largest MTV change"):
        export_checkpoint(run_dir, tmp_path / "int8", "openvino", precision="int8", task_mode="input")
    assert not (tmp_path / "int8").exists() and not list(tmp_path.iterdir())
    record = export_checkpoint(run_dir, tmp_path / "kept", "openvino", precision="int8", task_mode="input",
                               keep_rejected=True)  # flagged, for measurement
    assert record["acceptance"]["accepted"] is False and "1 of 1 studies miss" in record["acceptance"]["refusal"]
    assert json.loads((tmp_path / "kept" / "export.json").read_text())["acceptance"]["accepted"] is False
    with pytest.warns(UserWarning, match="refused by its acceptance check"):
        Predictor.from_checkpoint(tmp_path / "kept", backend="openvino")
    with pytest.raises(ConfigError, match="--format openvino"):
        export_checkpoint(run_dir, tmp_path / "x", "onnx", precision="int8")


def test_cli_export_then_predict_from_the_export_alone(run_dir, tmp_path, capsys):
    from _synthetic import write_autopet

    assert main(["export", str(run_dir), str(tmp_path / "exp"), "--format", "openvino", "--task-mode", "input"]) == 0
    assert "max |Δ| of probabilities" in capsys.readouterr().out
    inputs = write_autopet(tmp_path / "ap", n=2)
    assert main(["predict", str(inputs), str(tmp_path / "pred"), "--checkpoint", str(tmp_path / "exp"),
                 "--backend", "openvino", "--task", "lymphoma"]) == 0
    assert len(list((tmp_path / "pred").glob("*.nii.gz"))) == 2
    assert main(["predict", str(inputs), str(tmp_path / "p2"), "--backend", "tensorrt"]) == 2
    assert "unknown backend 'tensorrt'" in capsys.readouterr().err


def test_a_missing_runtime_is_one_line(run_dir, tmp_path, monkeypatch, capsys):
    import importlib

    real = importlib.import_module

    def no_ort(name, *a, **k):
        if name.startswith("onnxruntime"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", no_ort)
    with pytest.raises(MissingDependencyError, match=r"unipet\[deploy\]"):
        require("onnxruntime", "the onnxruntime backend")
    from _synthetic import write_autopet

    inputs = write_autopet(tmp_path / "ap", n=1)
    assert main(["predict", str(inputs), str(tmp_path / "pred"), "-c", str(run_dir), "--backend", "onnxruntime"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'unipet[deploy]'" in err[0]


def test_exported_networks_run_on_the_cpu_only(exported):
    with pytest.raises(ConfigError, match="run on the CPU"):
        Predictor.from_checkpoint(exported[0], backend="onnxruntime", device="cuda")
    assert np.isfinite(exported[1]["check"]["max_abs_diff_probability"]["classifier"])


def test_segment_takes_a_backend(run_dir, exported):
    import unipet

    study = phantom_studies([9401])[0]
    ref = unipet.segment(study, task="lymphoma", checkpoint=run_dir, device="cpu")
    got = unipet.segment(study, task="lymphoma", checkpoint=exported[0], backend="onnxruntime")
    assert _dice(np.asarray(ref.mask.dataobj), np.asarray(got.mask.dataobj)) >= 0.999
    assert len(got.lesions) == len(ref.lesions) and got.lesions.attrs["checkpoint_id"] == exported[1]["id"]
