"""Predictor: sliding window equals a full forward, TTA flips, orientation round trip, batch resume / failures."""
from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from _synthetic import tiny_study, write_autopet
from unipet.cli import main
from unipet.data.preprocess import PreprocessConfig
from unipet.infer import Predictor, predict_batch, write_prediction
from unipet.infer.batch import shard
from unipet.io.layouts import import_autopet
from unipet.io.nifti import load_volume
from unipet.models.base import UnipetModel
from unipet.study import Study, index_to_world_zyx
from unipet.tasks import TaskSet

TASKS = TaskSet.load(["lymphoma", "lung_cancer", "melanoma"])
NORM = {"CT": {"scheme": "ct-window", "level": 0.0, "width": 1800.0}, "PET": {"scheme": "suv-clip", "clip": 20.0}}


class PointModel(UnipetModel):
    """1x1x1 convolution: every voxel's output depends on that voxel only."""

    def __init__(self, kernel: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(2, 2, kernel, padding=kernel // 2)

    def forward(self, x, task=None, text=None, organs=None):
        return self.conv(x)


class ThresholdModel(UnipetModel):
    """Lesion where normalised PET (SUV / 20) exceeds 0.2, i.e. SUV > 4."""

    def forward(self, x, task=None, text=None, organs=None):
        fg = 50.0 * (x[:, 1:2] - 0.2)
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


def _meta(patch, spacing=None, crop=True) -> dict:
    cfg = PreprocessConfig(channels=("CT", "PET"), normalisation=NORM, target_spacing=spacing, crop_to_body=crop)
    return {"preprocess": cfg.to_dict(), "patch_size": list(patch),
            "model": {"tasks": TASKS.to_dict(), "patch_size": list(patch), "num_classes": 2}}


def test_sliding_window_equals_a_full_volume_forward():
    model = PointModel()
    image = np.random.default_rng(0).random((2, 20, 24, 28), dtype=np.float32)
    for overlap in (0.0, 0.5):
        predictor = Predictor(model, _meta((8, 8, 8)), device="cpu", overlap=overlap, tile_batch=3)
        full = model(torch.from_numpy(image)[None]).softmax(1)[0]
        torch.testing.assert_close(predictor.probabilities(image), full, atol=1e-5, rtol=0)
    small = image[:, :5, :6, :7]  # smaller than one patch: padded with the channel minimum, cropped back
    probs = Predictor(model, _meta((8, 8, 8)), device="cpu").probabilities(small)
    torch.testing.assert_close(probs, model(torch.from_numpy(small.copy())[None]).softmax(1)[0], atol=1e-5, rtol=0)


def test_mirroring_tta_averages_flipped_predictions():
    model = PointModel(kernel=3)  # not flip-equivariant
    image = np.random.default_rng(1).random((2, 8, 8, 8), dtype=np.float32)  # one tile = full forward
    x = torch.from_numpy(image)[None]
    expected = torch.zeros(2, 8, 8, 8)
    axes = [2, 3, 4]
    for r in range(4):
        for dims in itertools.combinations(axes, r):
            out = model(x.flip(dims) if dims else x).softmax(1)
            expected += (out.flip(dims) if dims else out)[0] / 8
    predictor = Predictor(model, _meta((8, 8, 8)), device="cpu", tta=True)
    torch.testing.assert_close(predictor.probabilities(image), expected, atol=1e-5, rtol=0)
    assert predictor.last_passes == 8
    plain = Predictor(model, _meta((8, 8, 8)), device="cpu").probabilities(image)
    assert not torch.allclose(plain, expected, atol=1e-4)
    budget = Predictor(model, _meta((8, 8, 8)), device="cpu", tta=True, tta_budget_s=0.0)
    torch.testing.assert_close(budget.probabilities(image), plain)
    assert budget.last_passes == 1
    two_axes = Predictor(model, _meta((8, 8, 8)), device="cpu", tta=True, tta_axes=(2,))
    two_axes.probabilities(image)
    assert two_axes.last_passes == 2


def _oblique_study() -> Study:
    """A study whose affine permutes and flips the axes: array z runs along -x (RAS), y along -z, x along +y."""
    base = tiny_study(3, shape=(14, 18, 22))
    affine = np.array([[0.0, 0.0, -2.5, 30.0], [2.0, 0.0, 0.0, -12.0], [0.0, -3.0, 0.0, 40.0], [0, 0, 0, 1.0]])
    label = np.zeros_like(base.label)
    label[5:9, 9:13, 12:17] = 1
    pet = np.where(base.pet > 0, 1.0, 0.0).astype(np.float32)
    pet[label == 1] = 8.0
    return Study("oblique", pet=pet, ct=base.ct, affine=affine, task="melanoma", label=label)


def _world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    idx = np.argwhere(mask > 0).mean(axis=0)
    return (index_to_world_zyx(affine) @ np.append(idx, 1.0))[:3]


def test_masks_land_at_the_right_physical_place(tmp_path):
    study = _oblique_study()
    exact = Predictor(ThresholdModel(), _meta((8, 8, 8)), device="cpu").predict_study(study)
    np.testing.assert_array_equal(exact.mask, study.label)
    resampled = Predictor(ThresholdModel(), _meta((8, 8, 8), spacing=(2.0, 2.0, 2.0)), device="cpu")
    pred = resampled.predict_study(study)
    assert pred.mask.shape == study.shape and pred.task == "melanoma" and pred.task_probability is None
    inter = float((pred.mask & study.label).sum())
    assert 2 * inter / (pred.mask.sum() + study.label.sum()) > 0.75
    truth = _world_centroid(study.label, study.affine)
    np.testing.assert_allclose(_world_centroid(pred.mask, study.affine), truth, atol=2.0)
    path = write_prediction(pred, study, tmp_path)
    mask, affine = load_volume(path, dtype=np.uint8)
    np.testing.assert_array_equal(mask, pred.mask)
    np.testing.assert_allclose(affine, study.affine)
    rows = list(csv.DictReader(open(tmp_path / "oblique_lesions.csv")))
    assert len(rows) == 1 and int(rows[0]["voxels"]) == int(pred.mask.sum())
    centre = [float(rows[0][f"centroid_{a}_mm"]) for a in "xyz"]
    np.testing.assert_allclose(centre, truth, atol=2.0)
    assert float(rows[0]["volume_ml"]) == pytest.approx(pred.mask.sum() * 2.5 * 2 * 3 / 1000, rel=1e-3)


def test_batch_prediction_resumes_isolates_failures_and_shards(tmp_path):
    root = write_autopet(tmp_path / "ap", n=4)
    manifest = import_autopet(root)
    manifest.save(tmp_path / "m.json")
    broken = manifest.cases[1]
    with open(broken.images["PET"], "wb") as fh:
        fh.write(b"not a nifti file")
    predictor = Predictor(ThresholdModel(), _meta((8, 8, 8)), device="cpu")
    out = tmp_path / "pred"
    first = predict_batch(predictor, tmp_path / "m.json", out)
    assert set(first.failed) == {broken.case_id} and len(first.done) == 3
    assert "InputFileError" in first.failed[broken.case_id]
    for cid in first.done:
        mask, _ = load_volume(out / f"{cid}.nii.gz", dtype=np.uint8)
        truth, _ = load_volume(manifest.by_id(cid).label, dtype=np.uint8)
        np.testing.assert_array_equal(mask, truth)
    again = predict_batch(predictor, tmp_path / "m.json", out)
    assert sorted(again.skipped) == sorted(first.done) and not again.done and set(again.failed) == {broken.case_id}
    rank1 = predict_batch(predictor, tmp_path / "m.json", tmp_path / "shard", rank=1, world_size=2)
    assert sorted(rank1.done + list(rank1.failed)) == sorted(c.case_id for c in manifest.cases[1::2])
    assert (tmp_path / "shard" / "summary.rank1.json").exists()
    assert [c.case_id for c in shard([type("C", (), {"case_id": i})() for i in range(5)], 0, 2)] == [0, 2, 4]


def test_prompt_free_prediction_reports_the_inferred_task_and_cli(tmp_path):
    from unipet.models import create
    from unipet.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create("dpdnet", in_channels=2, num_classes=2, tasks=TASKS, patch_size=(8, 16, 16), base_width=4,
                   min_feature=2, task_classifier=True)
    meta = {**_meta((8, 16, 16)), "model": model.config}
    study = tiny_study(0)
    pred = Predictor(model, meta, device="cpu").predict_study(study, task="auto")
    assert pred.task in TASKS.names and 1 / len(TASKS) <= pred.task_probability <= 1.0
    with torch.no_grad():  # a classifier that is sure of melanoma: every tile votes for it
        model.task_classifier.fc.weight.zero_()
        model.task_classifier.fc.bias.copy_(torch.tensor([0.0, 0.0, 5.0]))
    pred = Predictor(model, meta, device="cpu").predict_study(study, task="auto")
    assert pred.task == "melanoma" and pred.task_probability == pytest.approx(np.exp(5) / (np.exp(5) + 2), rel=1e-5)
    assert pred.mask.shape == study.shape
    save_checkpoint(tmp_path / "run", model, meta)
    root = write_autopet(tmp_path / "ap", n=2)
    args = ["predict", str(tmp_path / "run"), str(root), str(tmp_path / "out"), "--task", "auto", "--device", "cpu",
            "--tta", "--tta-axes", "2"]
    assert main(args) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["pat000_case000.nii.gz", "pat000_case001.nii.gz"]
    assert (tmp_path / "out" / "pat000_case001_lesions.csv").exists()
    assert main([*args[:3], str(tmp_path / "out2"), "--task", "no_such_task", "--device", "cpu"]) == 2
    assert main([*args[:3], str(tmp_path / "out3"), "--task", "any", "--device", "cpu"]) == 0  # the generic path
    summary = __import__("json").loads((tmp_path / "out3" / "summary.json").read_text())
    assert {(r["task"], r["task_source"]) for r in summary["cases"]} == {("any", "any")}


def test_tta_mirrors_only_the_axes_the_checkpoint_was_trained_flipped_along():
    model = PointModel(kernel=3)
    image = np.random.default_rng(1).random((2, 8, 8, 8), dtype=np.float32)
    meta = {**_meta((8, 8, 8)), "recipe": {"augmentation": {"enabled": True, "flip_axes": [2]}}}
    left_right = Predictor(model, meta, device="cpu", tta=True)
    assert left_right.tta_axes == (2,)
    left_right.probabilities(image)
    assert left_right.last_passes == 2  # no flip, x flip: never head-to-feet
    every = Predictor(model, meta, device="cpu", tta=True, tta_axes=(0, 1, 2))
    every.probabilities(image)
    assert every.last_passes == 8


def test_a_checkpoint_without_a_planned_spacing_predicts_at_its_recorded_one():
    """A checkpoint trained on a native-grid cache (``preprocess.target_spacing: null``) records the spacing it saw
    in ``spacing``: prediction resamples every input to it, so the mask comes back on the input's own grid."""
    meta = {**_meta((8, 8, 8)), "spacing": [6.0, 4.0, 4.0]}
    predictor = Predictor(ThresholdModel(), meta, device="cpu")
    assert predictor.config.target_spacing == (6.0, 4.0, 4.0)
    study = tiny_study(5, shape=(12, 16, 20), spacing=(3.0, 2.0, 2.0))
    pred = predictor.predict_study(study, task="lymphoma")
    assert pred.mask.shape == study.shape
    assert pred.mask[study.label > 0].mean() > 0.5 and pred.mask[study.pet < 2].sum() == 0
    assert Predictor(ThresholdModel(), _meta((8, 8, 8)), device="cpu").config.target_spacing is None


# ----------------------------------------------------------------------------------------- resume after a crash
def test_a_rerun_completes_studies_a_crash_left_half_written(tmp_path):
    """A lone lesion table (killed between the table and the mask), a lone mask and an atomic write's temporary
    file are the partial outputs of an interrupted study: the same command completes them, without --overwrite,
    and leaves the finished studies alone."""
    root = write_autopet(tmp_path / "ap", n=3)
    predictor = Predictor(ThresholdModel(), _meta((8, 8, 8)), device="cpu")
    out = tmp_path / "pred"
    first = predict_batch(predictor, root, out)
    ids = sorted(first.done)
    (out / f"{ids[0]}.nii.gz").unlink()  # killed after the table, before the mask
    (out / f"{ids[1]}_lesions.csv").unlink()  # a lone mask
    (out / f".{ids[1]}.nii.gz.abc123.tmp.nii.gz").write_bytes(b"half")
    finished = (out / f"{ids[2]}.nii.gz").stat().st_mtime_ns
    again = predict_batch(predictor, root, out)
    assert sorted(again.done) == ids[:2] and again.skipped == [ids[2]] and not again.failed
    assert all((out / f"{c}.nii.gz").exists() and (out / f"{c}_lesions.csv").exists() for c in ids)
    assert not list(out.glob(".*.tmp*")) and (out / f"{ids[2]}.nii.gz").stat().st_mtime_ns == finished


def test_a_second_run_into_the_same_folder_is_refused_and_summary_keeps_earlier_records(tmp_path):
    from unipet.errors import OutputError
    from unipet.infer.batch import folder_lock

    root = write_autopet(tmp_path / "ap", n=2)
    predictor = Predictor(ThresholdModel(), _meta((8, 8, 8)), device="cpu")
    out = tmp_path / "pred"
    first = predict_batch(predictor, root, out)
    with folder_lock(out):  # another run holds the folder
        with pytest.raises(OutputError, match="another `unipet predict`.*is writing into"):
            predict_batch(predictor, root, out)
    again = predict_batch(predictor, root, out)
    summary = __import__("json").loads((out / "summary.json").read_text())
    assert summary["done"] == [] and sorted(summary["finished"]) == sorted(first.done) == sorted(again.skipped)
    assert sorted(r["case_id"] for r in summary["cases"]) == sorted(first.done)  # not "done: []" and nothing else


def test_a_run_that_never_starts_leaves_no_output_folder(tmp_path):
    predictor = Predictor(ThresholdModel(), _meta((8, 8, 8)), device="cpu")
    (tmp_path / "empty").mkdir()
    for source in (tmp_path / "nope", tmp_path / "empty"):
        with pytest.raises(Exception, match="does not exist|no PET/CT study"):
            predict_batch(predictor, source, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_the_task_choice_is_reported_given_study_or_auto():
    from unipet.infer.predictor import AUTO_CONFIDENCE, task_choice_line, uncertain_task_warning

    predictor = Predictor(ThresholdModel(), _meta((8, 8, 8)), device="cpu")
    study = tiny_study(0)
    assert predictor.predict_study(study).task_source == "study"
    given = predictor.predict_study(study, task="lung cancer")  # spaces for underscores
    assert (given.task, given.task_source, given.task_probabilities) == ("lung_cancer", "given", None)
    assert task_choice_line("melanoma", "auto", 0.81) == "task melanoma (auto, p=0.81)"
    line = uncertain_task_warning("breast_cancer", 0.28, {"breast_cancer": 0.28, "lymphoma": 0.2})
    assert "unsure" in line and "--task" in line and "task=" in line and f"{AUTO_CONFIDENCE:.2f}" in line
    assert "\n" not in line


class TaskThresholdModel(UnipetModel):
    """A prompted stand-in: task t marks SUV > (4, 8, 12)[t] (normalised PET > 0.2, 0.4, 0.6)."""

    accepts = ("task",)

    def forward(self, x, task=None, text=None, organs=None):
        cut = torch.tensor([0.2, 0.4, 0.6])[task].view(-1, 1, 1, 1, 1)
        fg = 50.0 * (x[:, 1:2] - cut) - 3.0 * task.view(-1, 1, 1, 1, 1)
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


def test_task_any_keeps_the_largest_lesion_probability_over_every_prompt(tmp_path):
    predictor = Predictor(TaskThresholdModel(), _meta((8, 8, 8)), device="cpu")
    image = np.random.default_rng(1).random((2, 12, 12, 12), dtype=np.float32)
    each = [predictor.probabilities(image, t)[1] for t in range(len(TASKS))]
    generic = predictor.any_probabilities(image)
    torch.testing.assert_close(generic[1], torch.stack(each).max(0).values)
    torch.testing.assert_close(generic.sum(0), torch.ones_like(generic[0]))
    study = tiny_study(0)
    pred = predictor.predict_study(study, task="any")
    assert (pred.task, pred.task_source, pred.task_probability) == ("any", "any", None)
    union = np.zeros(study.shape, bool)
    for name in TASKS.names:  # lymphoma's low cut dominates: the generic mask is at least every prompt's mask
        union |= predictor.predict_study(study, task=name).mask > 0
    assert union.any() and np.array_equal(pred.mask > 0, union)
    with pytest.raises(Exception, match="takes no task prompt"):
        Predictor(ThresholdModel(), _meta((8, 8, 8)), device="cpu").any_probabilities(image)
    report = predict_batch(predictor, write_autopet(tmp_path / "ap", n=1), tmp_path / "out", task="any")
    assert report.done and not report.failed
