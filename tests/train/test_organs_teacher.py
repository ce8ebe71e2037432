"""Teacher–student organ maps: the organ-label cache, organ Dice, and the pipeline producing organ maps on each
study's grid (Python API and `unipet organs`)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from _anatomy_data import write_cohort
from unipet.cli import main
from unipet.data.cache import build_cache
from unipet.errors import ConfigError, LabelError
from unipet.io.manifest import Manifest
from unipet.io.nifti import load_volume
from unipet.evaluate.metrics import label_dice as organ_dice
from unipet.train.organs_teacher import organ_classes, organ_manifest, teacher_student

TRAIN = dict(model="stunet-s", model_kw={"base_width": 2}, iterations=2, patch_size=(8, 16, 16), batch_size=1,
             workers=0, device="cpu", progress=False, tensorboard=False)


def test_organ_label_cache_holds_the_organ_map_as_label(tmp_path):
    manifest = write_cohort(tmp_path / "c", n=2, without_organs=(1,))
    organ_cases = organ_manifest(manifest.cases)
    assert [c.case_id for c in organ_cases] == ["s0"] and organ_cases.cases[0].label is None
    cache = build_cache(organ_cases, tmp_path / "cache", label_source="organs")
    case = cache.load("s0", mmap=False)
    ref, _ = load_volume(manifest.cases[0].organs, dtype=np.int32)
    assert case.organs is None and case.label.dtype == np.uint8 and set(np.unique(case.label)) == {0, 2, 13, 17}
    assert int((case.label == 13).sum()) == int((ref == 13).sum()) and case.info["lesions"] == []
    assert cache.meta["label_source"] == "organs"
    with pytest.raises(ConfigError):  # the same folder cannot be reused for lesion labels
        build_cache(organ_cases, tmp_path / "cache")
    with pytest.raises(LabelError):
        organ_manifest([c for c in manifest if not c.organs])
    assert organ_classes() == 38 and organ_classes({"liver": 3}) == 4
    with pytest.raises(ConfigError):
        organ_classes({"a": 300})


def test_organ_dice():
    ref = np.zeros((4, 4, 4), np.uint8)
    ref[:2] = 13
    ref[2:, :2] = 17
    pred = ref.copy()
    pred[3, :2] = 0  # half of organ 17 missed
    scores = organ_dice(pred, ref)
    assert scores == {13: 1.0, 17: pytest.approx(2 * 8 / (8 + 16))}
    with pytest.raises(ConfigError):
        organ_dice(pred[:2], ref)


def test_teacher_student_writes_organ_maps_on_the_study_grid(tmp_path):
    manifest = write_cohort(tmp_path / "c", n=3, without_organs=(2,))
    result = teacher_student(manifest, tmp_path / "out", **TRAIN)
    assert set(result.maps) == set(result.pseudo_labels) == {"s2"}
    assert (result.teacher_dir / "checkpoint").exists() and (result.student_dir / "checkpoint").exists()
    pred, affine = load_volume(result.maps["s2"], dtype=np.int32)
    ref, ref_affine = load_volume(tmp_path / "c" / "s2" / "ORGANS.nii.gz", dtype=np.int32)
    assert pred.shape == ref.shape and np.allclose(affine, ref_affine)
    assert pred.min() >= 0 and pred.max() < 38
    out = Manifest.load(result.manifest_path)
    assert [c.organs is not None for c in out] == [True, True, True]
    assert out.by_id("s2").organs.endswith("maps/s2/ORGANS.nii.gz") and out.by_id("s0").organs == manifest.cases[0].organs
    assert json.loads((tmp_path / "out" / "organs.json").read_text())["liver"] == 13
    # the student was trained on the teacher's pseudo-labels as well as on the labelled studies
    student_cache = json.loads((result.student_dir / "cache" / "cache.json").read_text())
    assert sorted(student_cache["cases"]) == ["s0", "s1", "s2"]
    # the maps feed the anatomy model's organ input through the cache
    cache = build_cache(out, tmp_path / "seg-cache")
    assert cache.load("s2").organs is not None


def test_cli_organs_with_a_given_teacher(tmp_path):
    manifest = write_cohort(tmp_path / "c", n=3, without_organs=(1, 2))
    first = teacher_student(manifest, tmp_path / "first", student=False, **TRAIN)
    assert result_files(first) == {"s1", "s2"} and first.student_dir is None
    path = tmp_path / "m.json"
    manifest.save(path)
    args = ["organs", str(path), "--out", str(tmp_path / "cli"), "--teacher", str(first.teacher_dir), "--no-student",
            "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    a, _ = load_volume(tmp_path / "cli" / "maps" / "s1" / "ORGANS.nii.gz", dtype=np.int32)
    b, _ = load_volume(first.maps["s1"], dtype=np.int32)
    assert np.array_equal(a, b)  # same teacher, same maps
    assert not (tmp_path / "cli" / "teacher").exists()
    assert main(args) == 2  # manifest.json exists: refused without --overwrite
    every = Manifest.load(tmp_path / "cli" / "manifest.json")
    every.save(tmp_path / "all.json")
    assert main(["organs", str(tmp_path / "all.json"), "--out", str(tmp_path / "x")]) == 2  # nothing to predict


def result_files(result) -> set[str]:
    return {cid for cid, p in result.maps.items() if p.exists()}
