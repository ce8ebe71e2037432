"""Batched augmentation: flips, spatial resampling with padding, nearest labels, misalignment, determinism."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unipet.data.augment import AugmentConfig, augment_batch, spatial_transform
from unipet.errors import ConfigError

OFF = {k: 0.0 for k in ("p_rotate", "p_scale", "p_elastic", "p_flip", "p_brightness", "p_contrast", "p_gamma",
                        "p_noise", "p_blur", "p_lowres", "p_misalign")}
PAD = torch.tensor([-2.0, -1.0])


def _batch(seed: int = 0, b: int = 3):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand((b, 2, 8, 10, 12), generator=g)
    label = torch.zeros((b, 8, 10, 12), dtype=torch.long)
    label[:, 2:5, 3:7, 4:9] = 1
    return image, label


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_disabled_and_all_zero_probabilities_are_identity():
    image, label = _batch()
    out, lab = augment_batch(image, label, AugmentConfig(enabled=False), _gen(0), PAD, 1)
    assert out is image and lab is label
    out, lab = augment_batch(image, label, AugmentConfig(**OFF), _gen(0), PAD, 1)
    assert torch.equal(out, image) and torch.equal(lab, label)


def test_flips_mirror_image_and_label_together():
    image, label = _batch()
    cfg = AugmentConfig(**{**OFF, "p_flip": 1.0, "flip_axes": (2,)})
    out, lab = augment_batch(image, label, cfg, _gen(0), PAD, 1)
    assert torch.equal(out, image.flip(4)) and torch.equal(lab, label.flip(3))


def test_identity_matrix_resamples_exactly_and_zoom_out_pads_with_channel_values():
    image, label = _batch()
    eye = torch.eye(3).repeat(3, 1, 1)
    out, lab = spatial_transform(image, label, eye, PAD)
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)
    assert torch.equal(lab, label)
    out, lab = spatial_transform(image, label, eye * 2.0, PAD)  # sample twice as far: content shrinks by 2
    assert torch.allclose(out[:, 0, 0, 0, 0], torch.tensor(-2.0)) and torch.allclose(out[:, 1, -1, -1, -1], torch.tensor(-1.0))
    assert set(lab.unique().tolist()) <= {0, 1} and 0 < int(lab.sum()) < int(label.sum())


def test_rotation_by_90_degrees_about_z_permutes_y_and_x():
    image = torch.rand((1, 2, 4, 6, 6))
    label = (image[:, 0] > 0.5).long()
    angle = math.pi / 2
    rot = torch.tensor([[[1.0, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]]])
    out, lab = spatial_transform(image, label, rot, PAD)
    expected = torch.rot90(image, k=1, dims=(3, 4))
    if not torch.allclose(out, expected, atol=1e-4):
        expected = torch.rot90(image, k=-1, dims=(3, 4))
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    assert torch.equal(lab, (expected[:, 0] > 0.5).long())


def test_same_generator_state_gives_the_same_augmentation():
    image, label = _batch(b=4)
    cfg = AugmentConfig(p_rotate=0.5, p_scale=0.5, p_elastic=0.5, p_brightness=0.5, p_noise=0.5, p_blur=0.5,
                        p_lowres=0.5, p_misalign=0.5)
    a = augment_batch(image, label, cfg, _gen(11), PAD, 1)
    b = augment_batch(image, label, cfg, _gen(11), PAD, 1)
    c = augment_batch(image, label, cfg, _gen(12), PAD, 1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == image.shape and a[1].dtype == label.dtype
    assert set(a[1].unique().tolist()) <= {0, 1}


def test_misalignment_shifts_only_the_pet_channel():
    image, label = _batch(b=2)
    cfg = AugmentConfig(**{**OFF, "p_misalign": 1.0, "misalign_voxels": 2})
    out, lab = augment_batch(image, label, cfg, _gen(3), PAD, pet_channel=1)
    assert torch.equal(out[:, 0], image[:, 0]) and torch.equal(lab, label)
    for i in range(2):
        pet, src = out[i, 1].numpy(), image[i, 1].numpy()
        found = False
        for dz in range(-2, 3):
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    core = (slice(2, -2),) * 3
                    shifted = np.roll(src, (dz, dy, dx), axis=(0, 1, 2))
                    found |= bool(np.array_equal(pet[core], shifted[core]))
        assert found, "the PET channel must be an integer shift of the original"


def test_intensity_changes_keep_labels_and_config_roundtrip():
    image, label = _batch()
    cfg = AugmentConfig(**{**OFF, "p_brightness": 1.0, "brightness": (1.2, 1.2)})
    out, lab = augment_batch(image, label, cfg, _gen(0), PAD, 1)
    torch.testing.assert_close(out, image * 1.2)
    assert torch.equal(lab, label)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError):
        AugmentConfig.from_dict({"p_rotation": 0.1})


def test_rot90_turns_image_and_label_together_in_the_plane():
    g = torch.Generator().manual_seed(0)
    image = torch.rand((4, 2, 6, 8, 8), generator=g)
    label = (image[:, 0] > 0.7).long()
    out, lab = augment_batch(image, label, AugmentConfig(**OFF, p_rot90=1.0), _gen(3), PAD)
    for i in range(4):
        matches = [k for k in (1, 2, 3) if torch.equal(out[i], torch.rot90(image[i], k, (2, 3)))]
        assert len(matches) == 1  # a quarter, half or three-quarter turn in the (y, x) plane
        assert torch.equal(lab[i], torch.rot90(label[i], matches[0], (1, 2)))  # the label turned the same way
    assert not torch.equal(out, image)
    # a non-square plane takes only the half turn, which keeps the patch's shape
    img2, lab2 = _batch(1)  # (8, 10, 12): y != x
    out2, l2 = augment_batch(img2, lab2, AugmentConfig(**OFF, p_rot90=1.0), _gen(1), PAD)
    assert torch.equal(out2, torch.rot90(img2, 2, (3, 4))) and torch.equal(l2, torch.rot90(lab2, 2, (2, 3)))


def test_intensity_shift_adds_one_offset_per_sample_and_new_ops_leave_old_streams_alone():
    image, label = _batch(2, b=64)
    out, lab = augment_batch(image, label, AugmentConfig(**OFF, p_shift=1.0, shift=0.1), _gen(5), PAD)
    delta = out - image
    per_sample = delta.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample), atol=1e-6)  # constant per sample
    assert per_sample[:, 0].abs().max() <= 0.1 and per_sample[:, 0].std() > 0.02 and torch.equal(lab, label)
    # with the new ops off, a default augmentation draws exactly what it drew before they existed
    defaults = AugmentConfig()
    assert (defaults.p_rot90, defaults.p_shift) == (0.0, 0.0)
    a = augment_batch(*_batch(4), defaults, _gen(9), PAD)
    b = augment_batch(*_batch(4), AugmentConfig(**{**defaults.to_dict(), "shift": 0.5, "rot90_plane": (0, 1)}),
                      _gen(9), PAD)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
