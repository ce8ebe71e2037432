"""Model profiling (parameters, MACs on the meta device) and the ``unipet models`` command."""
from __future__ import annotations

import json

import pytest

import torch
from torch import nn

from unipet.cli import main
from unipet.models.base import UnipetModel
from unipet.models.profile import profile_model, profile_models

BASELINES = ("nnunet", "nnunet-res", "unetr", "swinunetr", "uxnet3d")


def test_conv_macs_are_analytic():
    with torch.device("meta"):
        conv = nn.Conv3d(2, 8, 3, padding=1)
        depthwise = nn.Conv3d(8, 8, 7, padding=3, groups=8)
        up = nn.ConvTranspose3d(8, 4, 2, stride=2)
    voxels = 8 * 10 * 12
    assert profile_model(conv, patch=(8, 10, 12))["macs"] == voxels * 8 * 2 * 27
    assert profile_model(depthwise, patch=(8, 10, 12), in_channels=8)["macs"] == voxels * 8 * 343
    # transposed conv: every input voxel scatters in_ch x out_ch x k^3 products
    assert profile_model(up, patch=(4, 5, 6), in_channels=8)["macs"] == 4 * 5 * 6 * 8 * 4 * 8
    row = profile_model(conv, patch=(8, 10, 12))
    assert row["params"] == 8 * 2 * 27 + 8 and row["reason"] is None and row["name"] == "Conv3d"


def test_profile_nnunet_full_size_matches_paper():
    for name, params, macs in (("nnunet", 30.79e6, 526.29e9), ("nnunet-res", 46.71e6, 833.94e9)):
        row = profile_model(name)
        assert abs(row["params"] / params - 1) < 0.03
        assert abs(row["macs"] / macs - 1) < 0.03
        assert row["prompts"] == [] and row["patch"] == [112, 160, 128]


def test_meta_counts_equal_real_device_counts():
    meta = profile_model("uxnet3d", patch=(32, 32, 48), widths=(8, 16, 32, 64), hidden_size=64)
    cpu = profile_model("uxnet3d", patch=(32, 32, 48), widths=(8, 16, 32, 64), hidden_size=64, device="cpu")
    assert meta["macs"] == cpu["macs"] > 0 and meta["params"] == cpu["params"]


def test_meta_build_fallback_keeps_exact_counts():
    # MONAI's SwinUNETR constructor calls .item(), so it is built on the CPU and moved to meta
    row = profile_model("swinunetr", patch=(64, 64, 64))
    assert row["params"] == 62_188_436
    assert row["macs"] is not None and row["macs"] > 0


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 2, 1)

    def forward(self, x):
        return self.conv(x) * float(x.abs().max().item())


def test_forward_that_needs_values_reports_reason():
    with torch.device("meta"):
        model = _DataDependent()
    row = profile_model(model, patch=(4, 4, 4))
    assert row["macs"] is None and "meta" in row["reason"]
    assert row["params"] == 6
    cpu = profile_model(_DataDependent(), patch=(4, 4, 4))  # the same module on a real device is counted
    assert cpu["macs"] == 64 * 2 * 2 and cpu["reason"] is None


class _Prompted(UnipetModel):
    """Needs a task and text embeddings."""

    requires = ("task", "text")

    def __init__(self, text_dim: int | None = 16) -> None:
        super().__init__()
        if text_dim is not None:
            self.text_dim = text_dim
        self.conv = nn.Conv3d(2, 4, 1)
        self.proj = nn.Linear(16, 4)

    def forward(self, x, task=None, text=None, organs=None):
        self.check_inputs(x, task, text, organs)
        weights = self.proj(text)[task]  # [B, 4]
        return self.conv(x) * weights[:, :, None, None, None]


def test_prompted_model_gets_dummy_prompts():
    row = profile_model(_Prompted(), patch=(4, 4, 4), tasks=3)
    assert row["prompts"] == ["task", "text"]
    assert row["macs"] == 64 * 4 * 2 + 3 * 16 * 4  # conv + text projection of 3 task embeddings
    missing = profile_model(_Prompted(text_dim=None), patch=(4, 4, 4))
    assert missing["macs"] is None and "text_dim" in missing["reason"]


def test_profile_models_reports_unbuildable_models():
    rows = {r["name"]: r for r in profile_models(BASELINES, patch=(48, 48, 48), count_macs=False)}
    assert rows["swinunetr"]["params"] is None and "multiples of 32" in rows["swinunetr"]["reason"]
    assert rows["nnunet"]["params"] > 0 and rows["nnunet"]["macs"] is None and rows["nnunet"]["reason"] is None


def test_cli_models_json(capsys):
    assert main(["models", "--json", "--patch", "64", "64", "64", "--classes", "3"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(BASELINES) <= set(rows)
    for name in BASELINES:
        assert set(rows[name]) >= {"name", "params", "macs", "prompts", "description"}
        assert rows[name]["params"] > 0 and rows[name]["macs"] > 0 and rows[name]["prompts"] == []
    assert rows["nnunet"]["macs"] == profile_model("nnunet", patch=(64, 64, 64), num_classes=3)["macs"]


def test_cli_models_table(capsys):
    assert main(["models", "--patch", "48", "48", "48", "--no-macs"]) == 0
    out = capsys.readouterr().out
    assert "nnunet-res" in out and "uxnet3d" in out
    assert "swinunetr: Swin UNETR needs a patch whose sizes are multiples of 32" in out.replace("\n", " ")


def test_table1_rows_are_matched_within_3pct_or_carry_their_reason(capsys):
    from unipet.models.profile import TABLE1

    assert main(["models", "--json", "--no-macs"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(TABLE1) <= set(rows)
    for name in TABLE1:
        t1 = rows[name]["table1"]
        if t1["note"] is None:
            assert t1["within_3pct"] is True and abs(t1["params_diff_pct"]) <= 3, (name, t1)
        else:  # an unmatched row says why
            assert t1["within_3pct"] is not True and len(t1["note"]) > 20
    assert rows["dpdnet"]["table1"]["params_diff_pct"] == pytest.approx(-0.01, abs=0.01)
    assert rows["nnunet"]["table1"]["macs"] == 526.29e9 and rows["stunet-s"]["table1"]["note"] is None
    swin = profile_model("swinunetr-v2", patch=(128, 160, 128), count_macs=False)  # Swin needs multiples of 32
    assert swin["table1"]["params_diff_pct"] > 50 and "no published" in swin["table1"]["note"]
    assert profile_model("dpdnet", in_channels=1, count_macs=False)["table1"]["params_diff_pct"] is None


def test_gcis_row_shows_its_papers_full_and_pruned_counts():
    """gCIS is not in DpDNet's Table 1; its row carries its own paper's counts (``paper``): the release layout's
    one-task model is fitted to the article's 26.75 M, the full model falls out at 67.70 M (60.50 M published)."""
    from unipet.cli.models import _paper_note

    row = profile_model("gcis", patch=(128, 160, 128), in_channels=1, count_macs=False)
    paper = row["paper"]
    assert row["table1"] is None and paper["full"] == row["params"] == 67_698_696
    assert paper["pruned"] == 26_754_912 and (paper["paper_full"], paper["paper_pruned"]) == (60.50e6, 26.75e6)
    assert paper["pruned_diff_pct"] == 0.02 and paper["full_diff_pct"] == 11.9
    assert _paper_note(paper).startswith("full 67.70 M [60.50] (+11.9 %), one task pruned 26.75 M [26.75] (+0.0 %)")
    assert profile_model("gcis", patch=(128, 160, 128), count_macs=False, layout="levels5")["paper"] is None
    assert profile_model("nnunet", count_macs=False)["paper"] is None
