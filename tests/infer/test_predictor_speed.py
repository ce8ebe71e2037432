"""The predictor's CPU speed-ups leave its output unchanged: channels-last equals the default layout, skipped
empty tiles and the crop to the content (body) do not change the shipped default's mask on a phantom."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from unipet.data.preprocess import PreprocessConfig, preprocess_study
from unipet.infer import Predictor
from unipet.models import create
from unipet.study import Study
from unipet.tasks import TaskSet

TASKS = TaskSet.load(["lymphoma", "lung_cancer"])
NORM = {"CT": {"scheme": "ct-window", "level": 0.0, "width": 1800.0}, "PET": {"scheme": "suv-clip", "clip": 20.0}}


def _meta(patch) -> dict:
    cfg = PreprocessConfig(channels=("CT", "PET"), normalisation=NORM, crop_to_body=False)
    return {"preprocess": cfg.to_dict(), "patch_size": list(patch),
            "model": {"tasks": TASKS.to_dict(), "patch_size": list(patch), "num_classes": 2}}


def test_channels_last_equals_the_default_layout():
    torch.manual_seed(0)
    model = create("nnunet", in_channels=2, num_classes=2, tasks=None, patch_size=(16, 16, 16), base_channels=4,
                   max_channels=8).eval()
    image = np.random.default_rng(0).random((2, 20, 24, 20), dtype=np.float32)
    ref = Predictor(model, _meta((16, 16, 16)), device="cpu", channels_last=False).probabilities(image)
    fast = Predictor(model, _meta((16, 16, 16)), device="cpu", channels_last=True)
    assert next(fast.model.parameters()).is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(fast.probabilities(image), ref, atol=1e-5, rtol=0)


def test_content_box_keeps_the_tiles_of_the_whole_volume_that_reach_the_content():
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    model = create("nnunet", in_channels=2, num_classes=2, tasks=None, patch_size=(16, 16, 16), base_channels=4,
                   max_channels=8)
    predictor = Predictor(model, _meta((16, 16, 16)), device="cpu")
    for size in (16, 17, 40, 61):  # the grid MONAI's sliding window uses
        interval = _get_scan_interval((size, 16, 16), (16, 16, 16), 3, (0.5,) * 3)
        monai_starts = sorted({s[0].start for s in dense_patch_slices((size, 16, 16), (16, 16, 16), interval)})
        assert predictor.tile_starts(size, 0) == monai_starts
    x = predictor.pad.view(1, -1, 1, 1, 1).expand(1, 2, 40, 40, 61).clone()
    x[0, 1, 20, 5, 30] = 1.0  # one PET voxel: tiles starting at 8/16 (z), 0 (y), 16/24 (x) reach it
    box = predictor.content_box(x)
    assert [(s.start, s.stop) for s in box] == [(8, 32), (0, 16), (16, 40)]
    crop = x[(slice(None), slice(None), *box)]
    for axis, s in enumerate(box):  # the box's own grid is the kept part of the whole volume's grid
        kept = [t for t in predictor.tile_starts(x.shape[2 + axis], axis) if s.start <= t and t + 16 <= s.stop]
        assert [s.start + t for t in predictor.tile_starts(crop.shape[2 + axis], axis)] == kept
    empty = predictor.pad.view(1, -1, 1, 1, 1).expand(1, 2, 40, 40, 61).clone()
    assert [(s.start, s.stop) for s in predictor.content_box(empty)] == [(0, 40), (0, 40), (0, 61)]


@pytest.fixture(scope="module")
def phantom_in_air() -> Study:
    """A 5 mm phantom's pelvis-to-chest slab with 80 voxels of air added on each side along x."""
    from unipet.data.phantom import generate_study

    study = generate_study(3, task="lymphoma", size="small", negative=False).study
    z = int(np.argmax(study.label.sum(axis=(1, 2))))  # centre the slab on the largest lesion slice
    z0 = int(np.clip(z - 24, 0, study.shape[0] - 48))
    sl = slice(z0, z0 + 48)
    pad = ((0, 0), (0, 0), (80, 80))
    return Study(study_id="slab", patient_id="p", affine=study.affine, task="lymphoma",
                 pet=np.pad(study.pet[sl], pad), ct=np.pad(study.ct[sl], pad, constant_values=-1000.0),
                 label=np.pad(study.label[sl], pad))


@pytest.mark.slow
def test_skipping_empty_tiles_and_the_content_crop_keep_the_default_checkpoints_mask(phantom_in_air):
    from unipet.checkpoint import default_checkpoint

    plain = Predictor.from_checkpoint(default_checkpoint(), device="cpu", crop_to_content=False, skip_empty=False,
                                      channels_last=False)
    plain.config.crop_to_body = False  # keep the air around the body, so that there is something to skip
    pre = preprocess_study(phantom_in_air, plain.config, with_label=False)
    task = plain.task_index("lymphoma")
    ref = plain.segment(pre.image, task)
    assert plain.last_tiles["skipped"] == 0 and ref.sum() > 0

    skip = Predictor.from_checkpoint(default_checkpoint(), device="cpu", crop_to_content=False, skip_empty=True)
    mask = skip.segment(pre.image, task)
    assert skip.last_tiles["skipped"] > 0 and skip.last_tiles["run"] < plain.last_tiles["run"]
    np.testing.assert_array_equal(mask, ref)  # a skipped tile would have said background

    crop = Predictor.from_checkpoint(default_checkpoint(), device="cpu")  # every speed-up on (the default)
    box = crop.content_box(crop._padded(pre.image)[0])
    assert box[2].stop - box[2].start < pre.image.shape[3]  # the crop removes air along x
    mask = crop.segment(pre.image, task)
    assert crop.last_tiles["run"] < plain.last_tiles["run"]
    np.testing.assert_array_equal(mask, ref)  # the same tiles, less all-air ones


@pytest.mark.slow
@pytest.mark.skipif(not __import__("unipet.infer.predictor", fromlist=["cpu_has_bf16"]).cpu_has_bf16(),
                    reason="this CPU has no native bfloat16 arithmetic")
def test_cpu_bf16_keeps_the_default_checkpoints_mask_within_a_few_voxels(phantom_in_air):
    from unipet.checkpoint import default_checkpoint

    fp32 = Predictor.from_checkpoint(default_checkpoint(), device="cpu")
    bf16 = Predictor.from_checkpoint(default_checkpoint(), device="cpu", cpu_bf16=True)
    assert fp32.amp is None and bf16.amp == torch.bfloat16
    pre = preprocess_study(phantom_in_air, fp32.config, with_label=False)
    task = fp32.task_index("lymphoma")
    p32, p16 = fp32.probabilities(pre.image, task), bf16.probabilities(pre.image, task)
    assert float((p32 - p16).abs().max()) < 0.1
    a, b = fp32.labels_from_probabilities(p32) > 0, bf16.labels_from_probabilities(p16) > 0
    assert a.sum() > 0 and 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.97
