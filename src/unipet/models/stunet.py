"""STU-Net (Huang et al., 2023): the scalable residual nnU-Net that the prompt-driven models are built on.

Six stages of residual blocks, widths ``base_width x (1, 2, 4, 8, 16, 16)``; every convolution 3x3x3; the first
block of a stage downsamples with its stride and has a 1x1x1 projection shortcut; decoder stages upsample
by nearest interpolation + 1x1x1 conv, concatenate the skip and run residual blocks; a 1x1x1 head on every
decoder stage gives deep supervision. Strides come from the patch size (``plan_strides``, nnU-Net's rule).

Variants (depth = residual blocks per stage, in encoder and decoder):

======== ========== ===== ============================= ===========================================
variant  base_width depth params, 1 in-ch / 105 classes params, 2 in-ch / 2 classes (MACs at 112x160x128)
======== ========== ===== ============================= ===========================================
S        16         1     14.60 M                       14.55 M (137.7 G; published 138.70 G)
B        32         1     58.26 M                       58.16 M (546.6 G; published 548.61 G)
L        64         2     440.30 M                      440.10 M
H        96         3     1457.33 M                     1457.02 M
======== ========== ===== ============================= ===========================================

Parameter counts equal the published ones; MACs are PyTorch ``FlopCounterMode`` totals / 2 (convolutions
only, no norms or activations), 0.7 % under the published values.

Module names follow the released STU-Net checkpoints (``conv_blocks_context``, ``upsample_layers``,
``conv_blocks_localization``, ``seg_outputs``) so their weights load by name.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from unipet.errors import ConfigError, ImageGeometryError
from unipet.models.base import UnipetModel, as_tuple3
from unipet.models.blocks import bottleneck_size, check_divisible, res_stage, UpsampleNearest
from unipet.models.registry import register

WIDTH_MULTIPLIERS = (1, 2, 4, 8, 16, 16)
VARIANTS: dict[str, dict[str, int]] = {
    "s": {"base_width": 16, "depth": 1},
    "b": {"base_width": 32, "depth": 1},
    "l": {"base_width": 64, "depth": 2},
    "h": {"base_width": 96, "depth": 3},
}


def plan_strides(patch_size: Sequence[int], spacing: Sequence[float] | None = None, min_feature: int = 4,
                 max_stages: int = 6) -> list[tuple[int, int, int]]:
    """Per-stage downsampling strides for a patch, by nnU-Net's planning rule.

    An axis is halved at a stage while (a) its current size is even and the halved size stays
    ``>= min_feature`` voxels, and (b) its current spacing is less than twice the finest current spacing
    among the axes that (a) allows (so anisotropic axes wait until the others catch up; nnU-Net v2's rule).
    Each axis stops independently.

    Args:
        patch_size: ``(D, H, W)`` in voxels.
        spacing: ``(z, y, x)`` voxel spacing in mm; None = isotropic.
        min_feature: smallest bottleneck size per axis, in voxels.
        max_stages: number of resolution stages; ``max_stages - 1`` strides are returned.

    Returns:
        ``max_stages - 1`` strides ``(sz, sy, sx)`` for stages 2..max_stages (the first stage has stride 1),
        padded with ``(1, 1, 1)`` once no axis can be halved (STU-Net always has six stages). For
        ``(112, 160, 128)``: ``[(2, 2, 2)] * 4 + [(1, 2, 2)]``, bottleneck ``patch / (16, 32, 32)``.
    """
    size = list(as_tuple3(patch_size))
    space = [1.0, 1.0, 1.0] if spacing is None else [float(s) for s in spacing]
    if len(space) != 3 or min(space) <= 0 or min(size) <= 0:
        raise ConfigError(f"plan_strides needs a positive 3-D patch and spacing, got {patch_size} and {spacing}; "
                          "give (D, H, W) voxels and (z, y, x) mm")
    strides: list[tuple[int, int, int]] = []
    for _ in range(max_stages - 1):
        poolable = [a for a in range(3) if size[a] % 2 == 0 and size[a] // 2 >= min_feature]
        finest = min((space[a] for a in poolable), default=0.0)
        stride = tuple(2 if a in poolable and space[a] < 2 * finest else 1 for a in range(3))
        for a in range(3):
            size[a] //= stride[a]
            space[a] *= stride[a]
        strides.append(stride)  # type: ignore[arg-type]
    return strides


class STUNet(UnipetModel):
    """STU-Net: ``x [B, in_channels, D, H, W] -> logits [B, num_classes, D, H, W]``.

    Args:
        in_channels: input channels (2 = CT, PET).
        num_classes: output channels of every head.
        strides: 5 per-stage strides (``plan_strides``).
        base_width: width of the first stage; stage widths are ``base_width x (1, 2, 4, 8, 16, 16)``.
        depth: residual blocks per stage (int, or 6 values; the decoder stage at a resolution uses the
            encoder stage's depth).
        bottleneck_extra: extra channels concatenated to the bottleneck before the decoder (prompts).

    Ignores ``task``/``text``/``organs``. In training mode with deep supervision on, returns the list of
    logits of all five decoder stages, full resolution first.
    """

    def __init__(self, in_channels: int, num_classes: int, strides: Sequence[Sequence[int]],
                 base_width: int = 16, depth: int | Sequence[int] = 1, bottleneck_extra: int = 0) -> None:
        super().__init__()
        self.strides = [as_tuple3(s) for s in strides]
        if len(self.strides) != len(WIDTH_MULTIPLIERS) - 1:
            raise ConfigError(f"STU-Net needs {len(WIDTH_MULTIPLIERS) - 1} strides, got {len(self.strides)}; "
                              "use plan_strides(patch_size)")
        depths = [int(depth)] * len(WIDTH_MULTIPLIERS) if isinstance(depth, int) else [int(d) for d in depth]
        self.widths = [base_width * m for m in WIDTH_MULTIPLIERS]
        self.in_channels, self.num_classes = in_channels, num_classes
        w = self.widths
        self.conv_blocks_context = nn.ModuleList(
            [res_stage(in_channels, w[0], depths[0])]
            + [res_stage(w[d - 1], w[d], depths[d], stride=self.strides[d - 1]) for d in range(1, len(w))])
        # Decoder index u = 0 is the deepest stage (resolution level len(w) - 2 - u).
        levels = range(len(w) - 2, -1, -1)
        self.upsample_layers = nn.ModuleList(
            [UpsampleNearest(w[lv + 1] + (bottleneck_extra if lv == len(w) - 2 else 0), w[lv], self.strides[lv])
             for lv in levels])
        self.conv_blocks_localization = nn.ModuleList([res_stage(2 * w[lv], w[lv], depths[lv]) for lv in levels])
        self.seg_outputs = nn.ModuleList([nn.Conv3d(w[lv], num_classes, 1) for lv in levels])

    # ------------------------------------------------------------------ pieces reused by the prompt models
    def input_parameter_names(self) -> list[str]:
        """Parameters that read the network input (adapted when loading weights with other input channels)."""
        return ["conv_blocks_context.0.0.conv1.weight", "conv_blocks_context.0.0.conv3.weight"]

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Encoder: ``x`` -> (skips of stages 1..5, full resolution first; bottleneck ``[B, 16w, d, h, w]``)."""
        if x.shape[1] != self.in_channels:
            raise ImageGeometryError(f"{type(self).__name__} was built for {self.in_channels} input channel(s), got "
                                     f"{x.shape[1]}; stack the modalities the model was trained on (e.g. CT, PET)")
        check_divisible(x.shape[2:], self.strides, type(self).__name__)
        skips = []
        for stage in self.conv_blocks_context[:-1]:
            x = stage(x)
            skips.append(x)
        return skips, self.conv_blocks_context[-1](x)

    def up_and_concat(self, u: int, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Upsample decoder input ``x`` of decoder stage ``u`` and concatenate its skip (``[B, 2w, ...]``)."""
        return torch.cat((self.upsample_layers[u](x), skips[-(u + 1)]), dim=1)

    def decode(self, x: torch.Tensor, skips: list[torch.Tensor], stages: int | None = None) -> list[torch.Tensor]:
        """Run the first ``stages`` decoder stages (all by default); returns their features, deepest first."""
        feats = []
        for u in range(len(self.conv_blocks_localization) if stages is None else stages):
            x = self.conv_blocks_localization[u](self.up_and_concat(u, x, skips))
            feats.append(x)
        return feats

    def wants_all_outputs(self) -> bool:
        """True when the forward must return deep-supervision outputs."""
        return self.deep_supervision and self.training

    def heads_output(self, feats: list[torch.Tensor]):
        """Logits from decoder features (deepest first): the full-resolution head, or every head (full first)."""
        if not self.wants_all_outputs():
            return self.seg_outputs[-1](feats[-1])
        return [head(f) for head, f in zip(reversed(self.seg_outputs), reversed(feats))]

    def forward(self, x: torch.Tensor, task=None, text=None, organs=None):
        self.check_inputs(x, task, text, organs)
        skips, bottleneck = self.encode(x)
        return self.heads_output(self.decode(bottleneck, skips))


def resolve_backbone(patch_size: Sequence[int], variant: str = "s", base_width: int | None = None,
                     depth: int | Sequence[int] | None = None, strides: Sequence[Sequence[int]] | None = None,
                     spacing: Sequence[float] | None = None, min_feature: int = 4) -> dict[str, Any]:
    """STU-Net constructor arguments for a variant, a patch size and optional overrides.

    Returns ``{"strides", "base_width", "depth"}``; ``base_width``/``depth`` override the variant's (small
    widths are for tests); ``strides`` override ``plan_strides(patch_size, spacing, min_feature)``.
    """
    key = variant.lower().removeprefix("stunet-")
    if key not in VARIANTS:
        raise ConfigError(f"unknown STU-Net variant {variant!r}; use one of {', '.join(VARIANTS)}")
    conf = dict(VARIANTS[key])
    if base_width is not None:
        conf["base_width"] = int(base_width)
    if depth is not None:
        conf["depth"] = depth
    conf["strides"] = ([as_tuple3(s) for s in strides] if strides is not None
                       else plan_strides(patch_size, spacing, min_feature))
    bottleneck = bottleneck_size(patch_size, conf["strides"])
    if min(bottleneck) < 1:
        raise ConfigError(f"patch {tuple(patch_size)} is smaller than the total stride of strides {conf['strides']}; "
                          "use a larger patch or smaller strides")
    return conf


def _builder(variant: str):
    def build(in_channels: int, num_classes: int, tasks, patch_size, base_width: int | None = None,
              depth: int | Sequence[int] | None = None, strides=None, spacing=None, min_feature: int = 4) -> STUNet:
        conf = resolve_backbone(patch_size, variant, base_width, depth, strides, spacing, min_feature)
        return STUNet(in_channels, num_classes, **conf)

    build.__doc__ = (f"STU-Net-{variant.upper()}: residual nnU-Net, widths "
                     f"{VARIANTS[variant]['base_width']}x(1,2,4,8,16,16), {VARIANTS[variant]['depth']} block(s)/stage.")
    return build


for _variant in VARIANTS:
    register(f"stunet-{_variant}", prompts=(), family="stunet",
             description=f"STU-Net-{_variant.upper()} (residual nnU-Net, {VARIANTS[_variant]['base_width']} base "
                         f"width, {VARIANTS[_variant]['depth']} block(s) per stage)")(_builder(_variant))
