"""U-Mamba (Ma, Li & Wang, 2024), the ``U-Mamba_Bot`` variant: nnU-Net's residual U-Net with a Mamba layer at the
bottleneck. One of the baselines of DpDNet's Table 1 (42.12 M parameters, 1067.69 G MACs published).

Architecture (source: the U-Mamba release, ``umamba_bot_3d.py``, on nnU-Net's plan for the patch):

- encoder: a 3x3x3 conv-IN-LeakyReLU stem, then one stage per plan stage of residual blocks (conv-IN-LReLU-conv-IN
  + shortcut; the first block of a stage downsamples with the plan's stride and has a 1x1x1 projection). The
  release starts from nnU-Net's 2 blocks per stage and sets the deeper stages to 1 block;
- bottleneck: ``MambaLayer``: the ``[B, C, d, h, w]`` features as a sequence of ``d*h*w`` tokens of width C,
  LayerNorm, one Mamba block (d_state 16, d_conv 4, expand 2; mamba_ssm's ``Mamba``, here ``mambapy``'s
  identical pure-PyTorch block, which runs on CPU), back to a volume;
- decoder: per stage a transposed convolution (kernel = stride) to the skip's width, concatenation, residual
  blocks (the first with a projection from 2C); a 1x1x1 head per decoder stage (deep supervision, nnU-Net's
  convention).

Block counts (unipet's reconstruction, documented): the release reduces some stages to 1 block, and reading its
rule as "the deeper half" (encoder 2-2-2-1-1-1, decoder deepest-first 2-2-2-1-1) gives 43.2 M / 870 G MACs,
4 % / 18 % off Table 1. A search over 1 or 2 blocks for every encoder and decoder stage finds exactly one layout
within 1 % of both published numbers: encoder **2-2-2-2-1-1**, decoder (deepest first) **1-2-2-2-2**; that is
the default (``encoder_blocks`` / ``decoder_blocks`` select any other).

Size with 2 input channels, 2 classes and a 112x160x128 patch (``unipet models``): see ``build`` below.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from unipet.errors import ConfigError
from unipet.models.base import UnipetModel, as_tuple3
from unipet.models.blocks import ResBlock, check_divisible, conv_norm_act, run_encoder
from unipet.models.registry import register


class MambaLayer(nn.Module):
    """U-Mamba's bottleneck layer: ``[B, C, d, h, w]`` -> tokens ``[B, d*h*w, C]`` -> LayerNorm -> Mamba -> volume.

    Args:
        dim: C; d_state, d_conv, expand: the Mamba block's state size, causal-convolution width and expansion.
    """

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        from mambapy.mamba import MambaBlock, MambaConfig

        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mamba = MambaBlock(MambaConfig(d_model=dim, n_layers=1, d_state=d_state, d_conv=d_conv,
                                            expand_factor=expand))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        tokens = x.reshape(b, c, -1).transpose(1, 2)
        out = self.mamba(self.norm(tokens))
        return out.transpose(1, 2).reshape(x.shape)


def _stage(in_channels: int, out_channels: int, blocks: int, stride: Sequence[int] = (1, 1, 1)) -> nn.Sequential:
    """``blocks`` residual blocks; the first changes width / stride (with a projection when it does)."""
    return nn.Sequential(ResBlock(in_channels, out_channels, stride=tuple(stride)),
                         *[ResBlock(out_channels, out_channels) for _ in range(blocks - 1)])


class UMambaBot(UnipetModel):
    """U-Mamba_Bot: ``x [B, C, D, H, W] -> logits [B, K, D, H, W]`` (a list, full resolution first, in training
    with deep supervision on: one per decoder stage at its own resolution).

    Args:
        in_channels, num_classes: input channels and output classes.
        strides, widths: the plan's per-stage strides (first ``(1, 1, 1)``) and widths.
        encoder_blocks, decoder_blocks: residual blocks per encoder stage and per decoder stage (deepest first).
        d_state, d_conv, expand: the bottleneck Mamba block's settings.
    """

    def __init__(self, in_channels: int, num_classes: int, strides: Sequence[Sequence[int]], widths: Sequence[int],
                 encoder_blocks: Sequence[int], decoder_blocks: Sequence[int], d_state: int = 16, d_conv: int = 4,
                 expand: int = 2) -> None:
        super().__init__()
        self.strides = [as_tuple3(s) for s in strides]
        w = [int(v) for v in widths]
        n = len(w)
        if len(self.strides) != n or len(encoder_blocks) != n or len(decoder_blocks) != n - 1:
            raise ConfigError(f"U-Mamba needs one stride, width and encoder block count per stage ({n}) and one "
                              "decoder block count per decoder stage")
        self.stem = conv_norm_act(in_channels, w[0])
        self.encoder = nn.ModuleList(_stage(w[s - 1] if s else w[0], w[s], int(encoder_blocks[s]), self.strides[s])
                                     for s in range(n))
        self.mamba = MambaLayer(w[-1], d_state, d_conv, expand)
        # decoder index i = 0 is the deepest: it brings stage n-1 up to stage n-2
        levels = list(range(n - 2, -1, -1))
        self.transpconvs = nn.ModuleList(nn.ConvTranspose3d(w[lv + 1], w[lv], self.strides[lv + 1],
                                                            stride=self.strides[lv + 1]) for lv in levels)
        self.decoder = nn.ModuleList(_stage(2 * w[lv], w[lv], int(decoder_blocks[i])) for i, lv in enumerate(levels))
        self.seg_outputs = nn.ModuleList(nn.Conv3d(w[lv], num_classes, 1) for lv in levels)

    def forward(self, x: torch.Tensor, task=None, text=None, organs=None):
        self.check_inputs(x, task, text, organs)
        check_divisible(x.shape[2:], self.strides, type(self).__name__)
        skips = run_encoder(self.stem, self.encoder, x)
        h = self.mamba(skips.pop())
        all_outputs = self.deep_supervision and self.training
        logits: list[torch.Tensor] = []
        for i, (up, stage) in enumerate(zip(self.transpconvs, self.decoder)):
            h = stage(torch.cat((up(h), skips[-(i + 1)]), dim=1))
            if all_outputs or i == len(self.decoder) - 1:
                logits.insert(0, self.seg_outputs[i](h))
        return logits if all_outputs else logits[0]


def release_block_counts(n_stages: int, per_stage: int = 2) -> tuple[list[int], list[int]]:
    """The U-Mamba release's block counts: encoder ``per_stage`` with the deeper half 1; decoder (deepest first)
    ``per_stage`` with the last ``n - 1 - ceil((n - 1) / 2 + 0.5)`` stages 1."""
    enc = [per_stage] * n_stages
    for s in range(math.ceil(n_stages / 2), n_stages):
        enc[s] = 1
    dec = [per_stage] * (n_stages - 1)
    for s in range(math.ceil((n_stages - 1) / 2 + 0.5), n_stages - 1):
        dec[s] = 1
    return enc, dec


#: (encoder, decoder deepest-first) block counts that reproduce Table 1's size and MACs for a 6-stage plan
TABLE1_BLOCKS = ([2, 2, 2, 2, 1, 1], [1, 2, 2, 2, 2])


@register("umamba", prompts=(), family="umamba",
          description="U-Mamba_Bot: nnU-Net residual U-Net with a Mamba layer at the bottleneck (Table-1 size)")
def build(in_channels: int, num_classes: int, tasks, patch_size, base_channels: int = 32, max_channels: int = 320,
          max_stages: int = 6, spacing: Sequence[float] | None = None, encoder_blocks: Sequence[int] | None = None,
          decoder_blocks: Sequence[int] | None = None, d_state: int = 16, d_conv: int = 4,
          expand: int = 2) -> UMambaBot:
    """U-Mamba_Bot on nnU-Net's plan for ``patch_size`` (needs the ``[mamba]`` extra: ``mambapy``).

    With 2 inputs, 2 classes and 112x160x128 (nnU-Net's 6 stages, widths 32..320, isotropic 3x3x3 kernels) and
    the default blocks (``TABLE1_BLOCKS``, see the module docstring): 41.50 M parameters (-1.5 %) and
    1073.5 G MACs (+0.5 %) (``unipet models``) vs. 42.12 M / 1067.69 G in DpDNet's Table 1. ``encoder_blocks`` (one per stage) and
    ``decoder_blocks`` (one per decoder stage, deepest first) override them, ``release_block_counts`` gives the
    "deeper half" reading; ``base_channels``/``max_channels`` shrink it for tests.
    """
    from unipet.models.baselines import nnunet_plan

    plan = nnunet_plan(patch_size, spacing, base_channels, max_channels, max_stages)
    n = len(plan["strides"])
    enc, dec = TABLE1_BLOCKS if n == len(TABLE1_BLOCKS[0]) else release_block_counts(n)
    enc = list(encoder_blocks) if encoder_blocks is not None else enc
    dec = list(decoder_blocks) if decoder_blocks is not None else dec
    return UMambaBot(in_channels, num_classes, plan["strides"], plan["widths"], enc, dec, d_state, d_conv, expand)
