"""Patch sampler: lesion-instance balance, kind shares, padding, counter-based determinism, DataLoader workers."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from _synthetic import tiny_study
from unipet.data.cache import Cache, build_cache
from unipet.data.sampling import PatchSampler, channel_pad_values, make_loader, read_patch
from unipet.errors import ConfigError
from unipet.io.layouts import import_autopet
from unipet.io.nifti import save_volume

SHAPE = (16, 24, 24)


def _write(root: Path, study) -> None:
    d = root / study.patient_id / study.study_id
    save_volume(study.pet, study.affine, d / "SUV.nii.gz")
    save_volume(study.ct, study.affine, d / "CTres.nii.gz")
    save_volume(study.label, study.affine, d / "SEG.nii.gz")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Cache:
    """Three cases: one with a big (5x6x6) and a small (1 voxel) lesion, one with a medium lesion, one lesion-free."""
    root = tmp_path_factory.mktemp("ap")
    specs = {0: [(slice(3, 8), slice(4, 10), slice(5, 11)), (slice(11, 12), slice(17, 18), slice(16, 17))],
             1: [(slice(6, 9), slice(8, 11), slice(8, 11))], 2: []}
    studies = []
    for i, boxes in specs.items():
        s = tiny_study(i, shape=SHAPE, lesion=False, task=("lymphoma", "melanoma", "lung_cancer")[i])
        for box in boxes:
            s.label[box] = 1
            s.pet[box] = 8.0
        studies.append(s)
    return _train_cache(studies, root, tmp_path_factory.mktemp("cache") / "c")


def _train_cache(studies, root: Path, out: Path) -> Cache:
    """The studies written in the autoPET layout under ``root`` (an empty task cell for a study without one),
    every one in the training split, cached in ``out``."""
    rows = ["study_id,patient_id,task"]
    for s in studies:
        _write(root, s)
        rows.append(f"{s.study_id},{s.patient_id},{s.task or ''}")
    (root / "clinical.csv").write_text("\n".join(rows) + "\n")
    manifest = import_autopet(root)
    for c in manifest:
        c.split = "train"
    return build_cache(manifest, out, crop_to_body=False)


def test_read_patch_pads_outside_with_channel_value():
    arr = np.arange(2 * 4 * 5 * 6, dtype=np.float32).reshape(2, 4, 5, 6)
    out = read_patch(arr, (-1, 3, 4), (3, 4, 4), np.array([-7.0, -9.0], np.float32))
    assert out.shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(out[:, 1:, :2, :2], arr[:, 0:2, 3:5, 4:6])
    assert np.all(out[0, 0] == -7.0) and np.all(out[1, 0] == -9.0)  # z = -1 is outside
    assert np.all(out[:, :, 2:] == [[[[-7.0]]], [[[-9.0]]]])  # y >= 5 outside
    assert np.all(read_patch(arr, (10, 0, 0), (2, 2, 2), 0.0) == 0)


def test_pad_values_are_the_normalised_minimum(cache):
    pad = channel_pad_values(cache.config)
    for c, case_id in enumerate(cache.case_ids):
        image = cache.load(case_id).image
        assert np.all(image.reshape(image.shape[0], -1).min(axis=1) >= pad - 1e-5)
    ct_index = list(cache.config.channels).index("CT")
    air = cache.load(cache.case_ids[0]).image[ct_index, 0, 0, 0]  # the corner is air (-1000 HU, clipped)
    assert air == pytest.approx(pad[ct_index], abs=1e-5)


def test_lesions_are_sampled_equally_often_whatever_their_size(cache):
    sampler = PatchSampler(cache, patch_size=(8, 8, 8), mix={"lesion": 1.0}, seed=3)
    rng = sampler.rng(0)
    counts: Counter = Counter()
    for _ in range(1500):
        p = sampler.draw(rng)
        counts[p.lesion] += 1
        assert p.kind == "lesion" and p.label.sum() > 0  # the chosen lesion voxel lies inside the patch
    sizes = {(c, les["id"]): les["voxels"] for c, les in sampler.lesions}
    assert len(counts) == 3 and max(sizes.values()) >= 180 and min(sizes.values()) == 1
    for key, n in counts.items():
        assert 1500 / 3 * 0.85 < n < 1500 / 3 * 1.15, (key, sizes[key], n)


def test_task_balance_gives_every_task_with_lesions_the_same_share(cache):
    """lymphoma has two lesions and melanoma one: over lesions 2:1, over tasks first 1:1 (lung has none)."""
    shares = {}
    for balance in ("lesion", "task"):
        sampler = PatchSampler(cache, patch_size=(8, 8, 8), mix={"lesion": 1.0}, seed=5, lesion_balance=balance)
        assert sampler.describe()["lesion_balance"] == balance
        tasks = Counter(int(sampler.batch(i, 1)["task"][0]) for i in range(1200))
        shares[balance] = {cache.task_set.names[t]: n / 1200 for t, n in tasks.items()}
    assert set(shares["task"]) == set(shares["lesion"]) == {"lymphoma", "melanoma"}
    assert shares["lesion"]["lymphoma"] == pytest.approx(2 / 3, abs=0.05)
    assert shares["task"]["lymphoma"] == pytest.approx(1 / 2, abs=0.05)
    with pytest.raises(ConfigError, match="lesion_balance"):
        PatchSampler(cache, patch_size=(8, 8, 8), lesion_balance="case")


def test_task_weights_set_each_tasks_share_of_lesion_patches(cache):
    """melanoma weighted 3: 3 of every 4 lesion patches are melanoma's (1:1 without weights)."""
    sampler = PatchSampler(cache, patch_size=(8, 8, 8), mix={"lesion": 1.0}, seed=5, lesion_balance="task",
                           task_weights={"melanoma": 3})
    assert sampler.describe()["task_weights"] == {"melanoma": 3}
    tasks = Counter(cache.task_set.names[int(sampler.batch(i, 1)["task"][0])] for i in range(1200))
    assert tasks["melanoma"] / 1200 == pytest.approx(3 / 4, abs=0.05)
    for kw, match in (({"lesion_balance": "lesion", "task_weights": {"melanoma": 3}}, "lesion_balance 'task'"),
                      ({"lesion_balance": "task", "task_weights": {"prostate": 3}}, "not a task of the cache"),
                      ({"lesion_balance": "task", "task_weights": {"melanoma": 0}}, "positive number")):
        with pytest.raises(ConfigError, match=match):
            PatchSampler(cache, patch_size=(8, 8, 8), **kw)


def test_as_task_presents_a_share_of_other_cases_under_one_prompt(cache):
    """as_task melanoma, share 0.5: melanoma's cases keep their task, half the draws of the others become melanoma
    (same patch, same label: only the prompt changes)."""
    melanoma = cache.task_set.index("melanoma")
    plain = PatchSampler(cache, patch_size=(8, 8, 8), mix={"lesion": 0.5, "random": 0.5}, seed=5)
    swapped = PatchSampler(cache, patch_size=(8, 8, 8), mix={"lesion": 0.5, "random": 0.5}, seed=5,
                           as_task={"task": "melanoma", "share": 0.5})
    assert swapped.describe()["as_task"] == {"task": "melanoma", "share": 0.5}
    own = Counter()
    for i in range(400):
        a, b = plain.batch(i, 1), swapped.batch(i, 1)
        assert a["case_id"] == b["case_id"] and np.array_equal(a["label"], b["label"])
        if int(a["task"][0]) == melanoma:
            assert int(b["task"][0]) == melanoma
        else:
            own[int(b["task"][0]) == melanoma] += 1
    assert own[True] / sum(own.values()) == pytest.approx(0.5, abs=0.08)
    always = PatchSampler(cache, patch_size=(8, 8, 8), mix={"random": 1.0}, seed=5, as_task={"task": "melanoma"})
    assert {int(always.batch(i, 2)["task"][j]) for i in range(50) for j in range(2)} == {melanoma}
    lesions = PatchSampler(cache, patch_size=(8, 8, 8), mix={"lesion": 1.0}, seed=5)
    cleared = PatchSampler(cache, patch_size=(8, 8, 8), mix={"lesion": 1.0}, seed=5,
                           as_task={"task": "melanoma", "labels": "background"})
    for i in range(60):  # another type's lesion under melanoma's prompt is background; melanoma's own stay lesions
        a, b = lesions.batch(i, 1), cleared.batch(i, 1)
        assert a["case_id"] == b["case_id"] and a["label"].sum() > 0
        own_case = cache.info(b["case_id"][0])["task"] == "melanoma"
        assert int(b["task"][0]) == melanoma and b["label"].sum() == (a["label"].sum() if own_case else 0)
    for bad, match in (({"task": "prostate"}, "task of the cache"), ({"task": "melanoma", "share": 0}, r"\(0, 1\]"),
                       ({"task": "melanoma", "weight": 1}, "as_task must be"),
                       ({"task": "melanoma", "labels": "ignore"}, "keep' or 'background")):
        with pytest.raises(ConfigError, match=match):
            PatchSampler(cache, patch_size=(8, 8, 8), as_task=bad)


def test_kind_shares_and_negatives(cache):
    sampler = PatchSampler(cache, patch_size=(8, 8, 8), mix={"lesion": 0.5, "random": 0.3, "negative": 0.2}, seed=1)
    kinds = Counter()
    negative_case = [c for c in cache.case_ids if not cache.info(c)["lesions"]]
    for i in range(250):
        b = sampler.batch(i, 4)
        kinds.update(b["kind"])
        for k, cid, lab in zip(b["kind"], b["case_id"], b["label"]):
            if k == "negative":
                assert [cid] == negative_case and lab.sum() == 0
    total = sum(kinds.values())
    assert kinds["negative"] / total == pytest.approx(0.2, abs=0.035)
    assert kinds["lesion"] / total == pytest.approx(0.5, abs=0.045)
    assert sampler.describe()["mix"] == pytest.approx({"lesion": 0.5, "random": 0.3, "negative": 0.2})


def test_mix_without_lesion_free_cases_is_renormalised(cache):
    with_lesions = [c for c in cache.case_ids if cache.info(c)["lesions"]]
    sampler = PatchSampler(cache, with_lesions, patch_size=(8, 8, 8), mix={"lesion": 0.5, "random": 0.3, "negative": 0.2})
    assert sampler.mix == pytest.approx({"lesion": 0.625, "random": 0.375, "negative": 0.0})
    with pytest.raises(ConfigError):
        PatchSampler(cache, with_lesions, patch_size=(8, 8, 8), mix={"negative": 1.0})
    with pytest.raises(ConfigError):
        PatchSampler(cache, patch_size=(8, 8, 8), mix={"lesions": 1.0})


def test_batches_are_counter_based_and_single_task_batches_share_a_task(cache):
    a = PatchSampler(cache, patch_size=(8, 8, 8), seed=5)
    b = PatchSampler(cache, patch_size=(8, 8, 8), seed=5)
    other_rank = PatchSampler(cache, patch_size=(8, 8, 8), seed=5, rank=1)
    np.testing.assert_array_equal(a.batch(7, 3)["image"], b.batch(7, 3)["image"])
    assert not np.array_equal(a.batch(7, 3)["image"], other_rank.batch(7, 3)["image"])
    single = PatchSampler(cache, patch_size=(8, 8, 8), seed=5, batch_mode="single-task")
    for i in range(20):
        tasks = single.batch(i, 4)["task"]
        assert len(set(tasks.tolist())) == 1


def test_loader_stream_is_independent_of_worker_count(cache):
    sampler = PatchSampler(cache, patch_size=(8, 8, 8), seed=2)
    serial = make_loader(sampler, 2, start=3, workers=0)
    parallel = make_loader(sampler, 2, start=3, workers=2)
    for (x, y), _ in zip(zip(serial, parallel), range(4)):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
        assert x["image"].shape == (2, 2, 8, 8, 8) and x["task"].dtype == torch.int64


def test_hot_patches_centre_physiological_uptake_outside_lesions(tmp_path):
    """``hot`` (hard-negative) patches hold a hot spot that is not a lesion; lesions never count as hot spots."""
    s = tiny_study(7, shape=SHAPE, lesion=True, task="lymphoma")  # lesion cube at SUV 8
    s.pet[10:13, 14:17, 4:7] = 6.0  # physiological hot spot (e.g. a kidney) away from the lesion
    s.pet[2, 20, 20] = 9.0  # a single hot voxel: noise, not a hot spot (fewer than HOT_MIN_VOXELS)
    root = tmp_path / "ap"
    _write(root, s)
    (root / "clinical.csv").write_text(f"study_id,patient_id,task\n{s.study_id},{s.patient_id},lymphoma\n")
    manifest = import_autopet(root)
    for c in manifest:
        c.split = "train"
    cache = build_cache(manifest, tmp_path / "c", crop_to_body=False)
    sampler = PatchSampler(cache, patch_size=(6, 6, 6), mix={"hot": 1.0}, jitter=0.5)
    assert sampler.mix == {"hot": 1.0}
    case_id = cache.case_ids[0]
    spots = sampler.hot_spots(case_id)
    assert len(spots) == 1 and len(spots[0]) == 27
    assert {tuple(v) for v in spots[0]} == {(z, y, x) for z in range(10, 13) for y in range(14, 17) for x in range(4, 7)}
    pet = list(cache.config.channels).index("PET")
    for i in range(20):
        patch = sampler.batch(i, 1)
        assert patch["kind"] == ["hot"]
        assert patch["image"][0, pet].max() >= sampler.hot_level  # the hot spot is inside the patch


def test_task_less_cases_carry_a_random_task_or_no_task(tmp_path):
    from unipet.tasks import NO_TASK

    # the second study's metadata names no tumour type
    studies = [tiny_study(i, shape=SHAPE, lesion=True, task=task) for i, task in enumerate(("lymphoma", None))]
    cache = _train_cache(studies, tmp_path / "ap", tmp_path / "c")
    taskless = next(c for c in cache.case_ids if cache.info(c).get("task") is None)
    lymphoma = cache.task_set.index("lymphoma")
    seen = {"random": set(), "general": set()}
    for mode in seen:
        sampler = PatchSampler(cache, patch_size=(8, 8, 8), seed=3, taskless=mode)
        for i in range(40):
            b = sampler.batch(i, 4)
            for cid, task in zip(b["case_id"], b["task"]):
                if cid == taskless:
                    seen[mode].add(int(task))
                else:
                    assert task == lymphoma
    assert seen["general"] == {NO_TASK}
    assert len(seen["random"]) > 1 and NO_TASK not in seen["random"]
    with pytest.raises(ConfigError, match="taskless"):
        PatchSampler(cache, patch_size=(8, 8, 8), taskless="none")
