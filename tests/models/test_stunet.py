"""STU-Net backbone, stride planner, parameter / MAC counts, and pretrained-weight loading."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from unipet.errors import ConfigError, ImageGeometryError, InputFileError, OutputExistsError
from unipet.models import create
from unipet.models.base import count_parameters
from unipet.models.stunet import plan_strides
from unipet.models.weights import load_pretrained, read_state_dict, repeat_input_channels, save_weights

TINY = dict(base_width=2, patch_size=(16, 32, 32))
FULL_PATCH = (112, 160, 128)


# ----------------------------------------------------------------------------------------------- planner
def test_plan_strides_paper_patch():
    strides = plan_strides(FULL_PATCH)
    assert strides == [(2, 2, 2)] * 4 + [(1, 2, 2)]


def test_plan_strides_anisotropic_spacing_waits_for_fine_axes():
    # z is 3 mm, y/x 1 mm: z is pooled only once the in-plane spacing has caught up (nnU-Net's rule)
    assert plan_strides((32, 128, 128), spacing=(3.0, 1.0, 1.0)) == [
        (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2)]


def test_plan_strides_odd_and_small_sizes_stop_and_pad():
    # 20 -> 10 -> 5 (odd: stop); 64 -> 4 after four halvings; the fifth stage is padded with ones
    assert plan_strides((20, 64, 64)) == [(2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2), (1, 1, 1)]
    assert plan_strides((8, 8, 8), min_feature=4, max_stages=4) == [(2, 2, 2), (1, 1, 1), (1, 1, 1)]
    with pytest.raises(ConfigError):
        plan_strides((0, 8, 8))


# ----------------------------------------------------------------------------------------------- counts
@pytest.mark.parametrize("variant,target_1in_105,target_2in_2", [
    ("s", 14.60e6, 14.55e6), ("b", 58.26e6, 58.16e6), ("l", 440.30e6, None), ("h", 1457.33e6, None)])
def test_stunet_parameter_counts_match_paper(variant, target_1in_105, target_2in_2):
    with torch.device("meta"):
        big = create(f"stunet-{variant}", in_channels=1, num_classes=105, patch_size=FULL_PATCH)
        small = create(f"stunet-{variant}", in_channels=2, num_classes=2, patch_size=FULL_PATCH)
    assert count_parameters(big) == pytest.approx(target_1in_105, rel=0.002)
    if target_2in_2 is not None:
        assert count_parameters(small) == pytest.approx(target_2in_2, rel=0.002)


@pytest.mark.parametrize("variant,target", [("s", 138.70e9), ("b", 548.61e9)])
def test_stunet_macs_match_table1(variant, target):
    with torch.device("meta"):
        model = create(f"stunet-{variant}", patch_size=FULL_PATCH).eval()
        with FlopCounterMode(display=False) as counter:
            out = model(torch.empty(1, 2, *FULL_PATCH))
    assert out.shape == (1, 2, *FULL_PATCH)
    assert counter.get_total_flops() / 2 == pytest.approx(target, rel=0.03)


# ----------------------------------------------------------------------------------------------- forward
def test_stunet_forward_backward_and_deep_supervision_shapes():
    torch.manual_seed(0)
    model = create("stunet-s", **TINY)
    model.set_deep_supervision(True)
    model.train()
    x = torch.randn(2, 2, 16, 32, 32)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [
        (2, 2, 16, 32, 32), (2, 2, 8, 16, 16), (2, 2, 4, 8, 8), (2, 2, 4, 4, 4), (2, 2, 4, 4, 4)]
    sum(o.square().mean() for o in outs).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert model.conv_blocks_context[0][0].conv1.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 2, 16, 32, 32)


def test_stunet_depth_and_width_follow_variant():
    model = create("stunet-l", base_width=2, patch_size=(16, 16, 16))
    assert model.widths == [2, 4, 8, 16, 32, 32]
    assert all(len(stage) == 2 for stage in model.conv_blocks_context)
    assert all(len(stage) == 2 for stage in model.conv_blocks_localization)
    first = model.conv_blocks_context[0][0]
    assert first.conv3 is not None and model.conv_blocks_context[0][1].conv3 is None


def test_stunet_rejects_indivisible_input():
    model = create("stunet-s", **TINY).eval()
    with pytest.raises(ImageGeometryError, match="divisible"):
        model(torch.zeros(1, 2, 15, 32, 32))
    with pytest.raises(ImageGeometryError, match="2 input channel"):
        model(torch.zeros(1, 3, 16, 32, 32))


# ----------------------------------------------------------------------------------------------- weights
def test_load_pretrained_repeats_input_kernels_and_reproduces_output(tmp_path):
    torch.manual_seed(0)
    ct_model = create("stunet-s", in_channels=1, num_classes=3, **TINY).eval()
    path = save_weights(ct_model, tmp_path / "ct.safetensors")
    petct = create("stunet-s", in_channels=2, num_classes=3, **TINY).eval()
    report = load_pretrained(petct, path)
    assert sorted(report.adapted) == ["conv_blocks_context.0.0.conv1.weight", "conv_blocks_context.0.0.conv3.weight"]
    assert not report.missing and not report.unexpected and not report.mismatched
    w1 = ct_model.conv_blocks_context[0][0].conv1.weight
    w2 = petct.conv_blocks_context[0][0].conv1.weight
    assert torch.equal(w2[:, 0], w1[:, 0]) and torch.equal(w2[:, 1], w1[:, 0])
    # repeated kernels: a zero second channel gives exactly the 1-channel network's output
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(petct(torch.cat([x, torch.zeros_like(x)], 1)), ct_model(x))


def test_load_pretrained_nested_pth_prefixes_and_mismatched_head(tmp_path):
    torch.manual_seed(1)
    source = create("stunet-s", in_channels=2, num_classes=5, **TINY)
    nested = {"network_weights": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}
    torch.save(nested, tmp_path / "w.pth")
    target = create("stunet-s", in_channels=2, num_classes=2, **TINY)
    report = load_pretrained(target, tmp_path / "w.pth")
    assert len(report.mismatched) == 10  # 5 heads x (weight, bias) have 5 instead of 2 classes
    assert set(report.missing) == set(report.mismatched)
    assert torch.equal(target.conv_blocks_context[3][0].conv2.weight, source.conv_blocks_context[3][0].conv2.weight)
    with pytest.raises(ConfigError, match="do not fit"):
        load_pretrained(target, tmp_path / "w.pth", strict=True)
    no_adapt = create("stunet-s", in_channels=1, num_classes=5, **TINY)
    assert len(load_pretrained(no_adapt, source.state_dict(), adapt_input_channels=False).mismatched) == 2


class _Opaque:
    pass


def test_read_state_dict_refuses_pickled_objects_and_unknown_files(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": _Opaque()}, tmp_path / "bad.pt")
    with pytest.raises(InputFileError, match="weights_only"):
        read_state_dict(tmp_path / "bad.pt")
    (tmp_path / "x.bin").write_bytes(b"123")
    with pytest.raises(InputFileError, match="unknown weights format"):
        read_state_dict(tmp_path / "x.bin")
    with pytest.raises(InputFileError, match="does not exist"):
        read_state_dict(tmp_path / "missing.safetensors")


def test_save_weights_never_overwrites_unasked(tmp_path):
    model = create("stunet-s", **TINY)
    path = save_weights(model, tmp_path / "m.safetensors")
    with pytest.raises(OutputExistsError):
        save_weights(model, path)
    save_weights(model, path, overwrite=True)
    assert set(read_state_dict(path)) == set(model.state_dict())


def test_repeat_input_channels_cycles_source_channels():
    w = torch.arange(2 * 3).float().reshape(1, 3, 2, 1, 1)[:, :, :1]  # [1, 3, 1, 1, 1]: channels 0, 2, 4
    out = repeat_input_channels(w, 5)
    assert out[0, :, 0, 0, 0].tolist() == [0.0, 2.0, 4.0, 0.0, 2.0]
    assert repeat_input_channels(w, 2)[0, :, 0, 0, 0].tolist() == [0.0, 2.0]
