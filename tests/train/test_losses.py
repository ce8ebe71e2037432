"""Loss values on known inputs: Dice + CE, deep-supervision weights, partial-label BCE + Dice, task CE."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unipet.errors import ConfigError
from unipet.train.losses import DiceCE, SegmentationLoss, deep_supervision_weights


def _target(b: int = 2, size=(4, 4, 4)) -> torch.Tensor:
    t = torch.zeros((b, *size), dtype=torch.long)
    t[:, :2] = 1  # half the voxels are foreground
    return t


def test_deep_supervision_weights_match_nnunet():
    assert deep_supervision_weights(5) == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0])
    assert deep_supervision_weights(1) == [1.0]


def test_dice_ce_known_values():
    target = _target()
    n = target.numel()
    fg = int(target.sum())
    uniform = torch.zeros((2, 2, 4, 4, 4))  # p = 0.5 everywhere
    s = 1e-5
    dice = (2 * 0.5 * fg + s) / (0.5 * n + fg + s)
    assert float(DiceCE()(uniform, target)) == pytest.approx(math.log(2) + 1 - dice, rel=1e-5)
    perfect = F.one_hot(target, 2).permute(0, 4, 1, 2, 3).float() * 40 - 20
    assert float(DiceCE()(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    # without smoothing and without foreground anywhere: Dice is 0/1e-8 -> loss 1 - 0, never NaN
    empty = torch.zeros_like(target)
    value = float(DiceCE(smooth=0.0)(uniform, empty))
    assert math.isfinite(value) and value == pytest.approx(math.log(2) + 1.0, rel=1e-5)


def test_batch_dice_pools_samples():
    target = _target()
    target[1] = 0  # second sample has no foreground
    logits = F.one_hot(target, 2).permute(0, 4, 1, 2, 3).float() * 40 - 20
    # batch Dice pools both samples' voxels: a perfect prediction scores 0 although one sample is empty
    assert float(DiceCE(batch_dice=True)(logits, target)) == pytest.approx(0.0, abs=1e-6)


def test_lesion_free_samples_leave_the_dice_term():
    target = torch.zeros((2, 4, 4, 4), dtype=torch.long)
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 4, 4, 4)
    ce = F.cross_entropy(logits, target)
    # a lesion-free batch is scored by CE alone ...
    assert float(DiceCE(skip_empty=True)(logits, target)) == pytest.approx(float(ce), rel=1e-6)
    # ... whereas nnU-Net's smoothed Dice scores it ~1 until every probability is ~0: the reward for logits -> -inf
    confident_bg = torch.stack([torch.full((2, 4, 4, 4), 30.0), torch.zeros(2, 4, 4, 4)], dim=1)
    nnunet = DiceCE()  # the default
    assert float(nnunet(torch.zeros_like(confident_bg), target)) > 1.0 and float(nnunet(confident_bg, target)) < 0.5
    # with one lesion sample, the empty one adds only CE: same Dice as the lesion sample alone
    target[0, :2] = 1
    both = DiceCE(skip_empty=True)(logits, target) - F.cross_entropy(logits, target)
    alone = DiceCE(skip_empty=True)(logits[:1], target[:1]) - F.cross_entropy(logits[:1], target[:1])
    assert float(both) == pytest.approx(float(alone), rel=1e-5)


def test_dice_is_pooled_per_task_so_small_lesions_count():
    target = torch.zeros((2, 8, 8, 8), dtype=torch.long)
    target[0, :6] = 1  # task 0: a large lesion (384 voxels), predicted perfectly
    target[1, 0, 0, :2] = 1  # task 1: a 2-voxel lesion, missed
    logits = torch.stack([torch.full((2, 8, 8, 8), 20.0), torch.full((2, 8, 8, 8), -20.0)], dim=1)
    logits[0, 0], logits[0, 1] = -20.0 * (target[0] > 0) + 20.0 * (target[0] == 0), 20.0 * (target[0] > 0)
    task = torch.tensor([0, 1])
    ce = float(F.cross_entropy(logits, target))
    per_task = float(DiceCE(per_task=True)(logits, target, task)) - ce
    pooled = float(DiceCE()(logits, target, task)) - ce
    assert per_task == pytest.approx(0.5, abs=1e-4)  # mean of Dice loss 0 (task 0) and 1 (task 1)
    assert pooled == pytest.approx(1 - 2 * 384 / (384 + 386), abs=1e-4)  # the missed lesion barely shows


def test_deep_supervision_loss_is_the_weighted_sum_and_ignores_the_lowest_resolution():
    target = torch.zeros((1, 8, 8, 8), dtype=torch.long)
    target[0, 2:6, 2:6, 2:6] = 1
    torch.manual_seed(0)
    outs = [torch.randn(1, 2, 8 // 2 ** i, 8 // 2 ** i, 8 // 2 ** i) for i in range(3)]
    loss_fn = SegmentationLoss("softmax", task_weight=0.0)
    total, parts = loss_fn(outs, target)
    w = deep_supervision_weights(3)
    expected = sum(wi * loss_fn.segmentation(o, target, None) for wi, o in zip(w, outs))
    assert float(total) == pytest.approx(float(expected), rel=1e-6) and parts["seg"] == pytest.approx(float(total))
    outs[2] = outs[2] * 100
    assert float(loss_fn(outs, target)[0]) == pytest.approx(float(total), rel=1e-6)


def test_sigmoid_models_use_binary_dice_and_bce_per_class():
    target = _target()
    target[1, 3] = 2  # a second foreground class in sample 1
    loss_fn = SegmentationLoss("sigmoid", task_weight=0.0)
    zeros = torch.zeros((2, 1, 4, 4, 4))
    # one channel at p = 0.5: BCE = ln 2, Dice per sample = (2 * 0.5 * fg + s) / (0.5 n + fg + s), fg = class 1
    n, s = 64, 1e-5
    fg = [float((target[b] == 1).sum()) for b in range(2)]
    dice = [(fg_b + s) / (0.5 * n + fg_b + s) for fg_b in fg]
    assert float(loss_fn(zeros, target)[0]) == pytest.approx(math.log(2) + 1 - sum(dice) / 2, rel=1e-5)
    # two channels: channel c is class c + 1; a perfect prediction of both costs ~0
    onehot = torch.stack([target == 1, target == 2], dim=1).float()
    assert float(loss_fn(onehot * 80 - 40, target)[0]) == pytest.approx(0.0, abs=1e-6)
    swapped = onehot.flip(1) * 40 - 20
    assert float(loss_fn(swapped, target)[0]) > 1.0


def test_task_classifier_term_is_added_with_its_weight():
    target = _target()
    logits = torch.zeros((2, 2, 4, 4, 4))
    task = torch.tensor([1, 0])
    task_logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    plain, _ = SegmentationLoss("softmax", task_weight=0.0)(logits, target, task, task_logits)
    with_aux, parts = SegmentationLoss("softmax", task_weight=0.1)(logits, target, task, task_logits)
    assert float(with_aux - plain) == pytest.approx(0.1 * float(F.cross_entropy(task_logits, task)), rel=1e-6)
    assert parts["task"] == pytest.approx(float(with_aux - plain), rel=1e-5)
    with pytest.raises(ConfigError):
        SegmentationLoss("relu")


@pytest.mark.parametrize("options", [{}, {"skip_empty": True, "per_task": True}])
def test_an_empty_batch_does_not_saturate_a_head_from_ordinary_logits(options):
    """The smoothed batch Dice on a lesion-free batch has a vanishing gradient from ordinary logits (about 1e-9 per
    voxel at a margin of -2), so it is not what drove two heads of the old default to margins of -27 (see
    benchmarks/RESULTS.md, "Why two heads collapsed"): 300 SGD steps leave the margin where CE alone leaves it."""
    logits = torch.zeros(2, 2, 8, 8, 8)
    logits[:, 1] = -2.0
    logits.requires_grad_(True)
    opt = torch.optim.SGD([logits], lr=1.0, momentum=0.9)
    target = torch.zeros(2, 8, 8, 8, dtype=torch.long)
    loss_fn = DiceCE(**options)
    for _ in range(300):
        loss = loss_fn(logits, target, torch.tensor([2, 3]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    margin = (logits[:, 1] - logits[:, 0]).detach()
    assert -3.0 < float(margin.max()) < -2.0


def test_task_ce_leaves_out_samples_without_a_task():
    from unipet.tasks import NO_TASK
    from unipet.train.losses import task_classification_loss

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0]], requires_grad=True)
    task = torch.tensor([0, NO_TASK, 2])
    expected = 0.5 * torch.nn.functional.cross_entropy(logits[[0, 2]], task[[0, 2]])
    torch.testing.assert_close(task_classification_loss(logits, task, 0.5), expected)
    none = task_classification_loss(logits, torch.full((3,), NO_TASK), 0.5)
    assert float(none.detach()) == 0.0
    none.backward()
    assert torch.isfinite(logits.grad).all()
