"""Non-prompt baselines: shapes, gradients, deep supervision, planning, sizes of the full configurations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unipet.errors import ConfigError, ImageGeometryError
from unipet.models import create
from unipet.models.base import count_parameters
from unipet.models.baselines import ChannelLayerNorm, nnunet_plan

PATCH = (32, 32, 32)
TINY = {
    "nnunet": {"base_channels": 4, "max_channels": 8},
    "nnunet-res": {"base_channels": 4, "max_channels": 8},
    "unetr": {"feature_size": 4, "hidden_size": 32, "mlp_dim": 64, "num_heads": 4},
    "swinunetr": {"feature_size": 12, "depths": (1, 1, 1, 1), "window_size": 4},
    "swinunetr-v2": {"feature_size": 12, "depths": (1, 1, 1, 1), "window_size": 4},
    "umamba": {"base_channels": 4, "max_channels": 8, "d_state": 4},
    "uxnet3d": {"widths": (4, 8, 16, 32), "depths": (1, 1, 1, 1), "hidden_size": 32},
}
TINY_PATCH = {"swinunetr": (64, 32, 32), "swinunetr-v2": (64, 32, 32)}  # Swin UNETR's 1/32 bottleneck needs more than one voxel
#: parameters a network holds but never uses: MONAI's ViT blocks keep a cross-attention norm UNETR does not call
UNUSED = ("norm_cross_attn",)


def _meta(name: str, patch=(112, 160, 128), **kw):
    with torch.device("meta"):
        return create(name, in_channels=2, num_classes=2, patch_size=patch, **kw)


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_backward_tiny(name):
    torch.manual_seed(0)
    patch = TINY_PATCH.get(name, PATCH)
    model = create(name, in_channels=2, num_classes=3, patch_size=patch, **TINY[name])
    x = torch.randn(1, 2, *patch)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 3, *patch)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(model(x, task=torch.tensor([1])), out)  # prompts are ignored
    model.set_deep_supervision(True)  # every head takes part in the loss
    outs = model(x)
    assert isinstance(outs, list) and outs[0].shape == (1, 3, *patch)
    if not name.startswith(("nnunet", "umamba")):
        assert len(outs) == 1  # UNETR, Swin UNETR, 3D UX-Net have no auxiliary heads
    sum(o.square().mean() for o in outs).backward()
    for pname, p in model.named_parameters():
        if not any(u in pname for u in UNUSED):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ["nnunet", "nnunet-res", "umamba"])
def test_nnunet_deep_supervision_native_resolutions(name):
    torch.manual_seed(0)
    model = create(name, patch_size=PATCH, **TINY[name])
    plan = nnunet_plan(PATCH)  # 32 -> 16 -> 8 -> 4: 4 stages, 3 decoder stages
    assert plan["strides"] == [(1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2)]
    x = torch.randn(1, 2, *PATCH)
    model.eval()
    single = model(x)
    model.set_deep_supervision(True)
    assert torch.is_tensor(model(x))  # eval mode: one output even with deep supervision on
    model.train()
    outs = model(x)
    assert [tuple(o.shape[2:]) for o in outs] == [(32, 32, 32), (16, 16, 16), (8, 8, 8)]
    # instance norm has no running statistics, so the full-resolution output equals the eval output
    torch.testing.assert_close(outs[0], single)
    model.set_deep_supervision(False)
    torch.testing.assert_close(model(x), single)


def test_nnunet_heads_match_dynunet():
    """The native-resolution heads are DynUNet's own deep-supervision outputs before its interpolation."""
    torch.manual_seed(0)
    model = create("nnunet", patch_size=PATCH, **TINY["nnunet"]).train()
    model.set_deep_supervision(True)
    x = torch.randn(1, 2, *PATCH)
    outs = model(x)
    stacked = model.net(x)  # [B, heads, K, D, H, W], all upsampled to full size
    ours = torch.stack([outs[0]] + [F.interpolate(o, size=PATCH) for o in outs[1:]], dim=1)
    torch.testing.assert_close(ours, stacked)


def test_nnunet_plan_default_and_anisotropic():
    plan = nnunet_plan((112, 160, 128))
    assert plan["strides"] == [(1, 1, 1)] + [(2, 2, 2)] * 4 + [(1, 2, 2)]
    assert plan["widths"] == [32, 64, 128, 256, 320, 320]
    assert all(k == (3, 3, 3) for k in plan["kernels"])
    aniso = nnunet_plan((32, 128, 128), spacing=(3.0, 1.0, 1.0))
    assert aniso["strides"][1] == (1, 2, 2)  # the coarse z axis waits for y and x
    assert aniso["kernels"][0] == (1, 3, 3) and aniso["kernels"][1] == (3, 3, 3)
    model = create("nnunet", patch_size=(32, 128, 128), spacing=(3.0, 1.0, 1.0), base_channels=2, max_channels=4)
    assert model(torch.zeros(1, 2, 32, 128, 128)).shape == (1, 2, 32, 128, 128)
    assert model.net.input_block.conv1.conv.weight.shape[2:] == (1, 3, 3)


@pytest.mark.parametrize("name, paper", [("nnunet", 30.79e6), ("nnunet-res", 46.71e6), ("unetr", 96.19e6)])
def test_full_size_parameter_counts_match_paper(name, paper):
    params = count_parameters(_meta(name))
    assert abs(params / paper - 1) < 0.03, params


def test_full_size_uxnet_and_swin_counts():
    # 3D UX-Net re-implementation has the released model's size (53.0 M); Swin UNETR-48 is MONAI's 62.19 M.
    assert abs(count_parameters(_meta("uxnet3d")) / 53.0e6 - 1) < 0.01
    swin = create("swinunetr", patch_size=(128, 160, 128))  # MONAI's constructor cannot run on meta
    assert abs(count_parameters(swin) / 62.19e6 - 1) < 0.001
    uxnet = _meta("uxnet3d")
    assert uxnet.stages[0][0].dwconv.weight.shape == (48, 1, 7, 7, 7)


@pytest.mark.parametrize("name, patch, hint", [
    ("unetr", (100, 160, 128), "112 160 128"),
    ("swinunetr", (112, 160, 128), "128 160 128"),
    ("swinunetr", (32, 32, 32), "64 64 64"),
    ("uxnet3d", (112, 160, 120), "112 160 128"),
    ("nnunet", (8, 8, 8), "patch"),
])
def test_bad_patch_is_config_error(name, patch, hint):
    with pytest.raises(ConfigError, match=hint):
        create(name, patch_size=patch)


def test_input_size_errors():
    unetr = create("unetr", patch_size=PATCH, **TINY["unetr"])
    with pytest.raises(ImageGeometryError, match="exactly"):
        unetr(torch.zeros(1, 2, 32, 32, 48))
    nnunet = create("nnunet", patch_size=PATCH, **TINY["nnunet"])
    with pytest.raises(ImageGeometryError, match="divisible"):
        nnunet(torch.zeros(1, 2, 32, 32, 36))
    assert nnunet(torch.zeros(1, 2, 48, 32, 64)).shape == (1, 2, 48, 32, 64)  # any multiple of the stride works


def test_channel_layer_norm_normalises_each_voxel_over_channels():
    x = torch.randn(2, 6, 3, 4, 5) * 3 + 1
    y = ChannelLayerNorm(6)(x)
    torch.testing.assert_close(y.mean(dim=1), torch.zeros(2, 3, 4, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=1, unbiased=False), torch.ones(2, 3, 4, 5), atol=1e-3, rtol=0)


def test_umamba_matches_table1_and_its_mamba_layer_sees_every_bottleneck_voxel():
    from torch.utils.flop_counter import FlopCounterMode

    from unipet.models.umamba import TABLE1_BLOCKS, release_block_counts

    model = _meta("umamba").eval()
    assert abs(count_parameters(model) / 42.12e6 - 1) < 0.03  # DpDNet Table 1: 42.12 M
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 2, 112, 160, 128, device="meta"))
    assert abs(counter.get_total_flops() / 2 / 1067.69e9 - 1) < 0.03  # 1067.69 G MACs
    assert [len(s) for s in model.encoder] == TABLE1_BLOCKS[0]
    assert [len(s) for s in model.decoder] == TABLE1_BLOCKS[1]
    assert release_block_counts(6) == ([2, 2, 2, 1, 1, 1], [2, 2, 2, 1, 1])
    # the Mamba layer mixes along the whole token sequence: changing one bottleneck voxel changes others
    torch.manual_seed(0)
    layer = create("umamba", patch_size=PATCH, **TINY["umamba"]).mamba.eval()
    x = torch.randn(1, 8, 4, 4, 4)
    y = x.clone()
    y[0, :, 0, 0, 0] = torch.randn(8)  # a new first token (a constant shift would vanish in the LayerNorm)
    with torch.no_grad():
        ref = layer(x)
        diff = (ref - layer(y)).abs().sum(dim=1)[0].flatten() / ref.abs().sum(dim=1)[0].flatten()
    assert diff[0] > 1e-2 and diff[1] > 1e-2 and (diff[1:] > 0).all()  # every later token sees it (the scan)


def test_swinunetr_v2_is_monai_v2_with_the_v2_paper_configuration():
    v2 = create("swinunetr-v2", patch_size=(128, 160, 128))  # MONAI's constructor cannot run on meta
    assert abs(count_parameters(v2) / 72.76e6 - 1) < 0.001  # documented: no published config gives 46.49 M
    assert v2.net.swinViT.layers1c[0] is not None  # the V2 residual conv block before a Swin stage


def test_a_missing_optional_package_is_one_clear_error(monkeypatch, capsys):
    from unipet.cli import main
    from unipet.models.profile import profile_models

    monkeypatch.setitem(__import__("sys").modules, "mambapy", None)
    monkeypatch.setitem(__import__("sys").modules, "mambapy.mamba", None)
    with pytest.raises(ConfigError, match=r"unipet\[mamba\]"):
        create("umamba", patch_size=PATCH, **TINY["umamba"])
    row = profile_models(["umamba"], patch=PATCH, count_macs=False)[0]
    assert row["params"] is None and "mambapy" in row["reason"]
    assert main(["models", "--no-macs", "--patch", "64", "64", "64"]) == 0
    assert "pip install 'unipet[mamba]'" in capsys.readouterr().out.replace("\n", " ")
