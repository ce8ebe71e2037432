r"""H2ASeg (Lu et al., MICCAI 2024): hierarchical adaptive interaction and weighting of PET and CT for tumour
segmentation — a dual-branch residual U-Net whose encoder branches exchange information by window-based
cross-modal attention (MCSA) and whose decoder re-weights the PET and CT channels by target-aware attention (TAMW).

Axes: unipet volumes are ``(z, y, x)``. The paper's patch 128x128x64 and window (8, 8, 4) are given in (x, y, z)
(NIfTI order; 64 slices): here they are ``PAPER_PATCH = (64, 128, 128)`` and ``WINDOW = (4, 8, 8)``.

Architecture (``x [B, 2, D, H, W]``, PET in channel ``pet_channel``, CT in the other; logits ``[B, K, D, H, W]``):

- **Encoder**: two ResUNet-3D branches of identical structure (CT, PET; 1 input channel each), five levels of
  widths ``c_1..c_5 = 8, 16, 32, 64, 128``: level 1 is ``conv3-IN-PReLU-Dropout-conv3`` + a conv3 shortcut at full
  resolution, levels 2-5 are pre-activation residual units (``IN-PReLU-conv3(stride 2)-Dropout-IN-PReLU-conv3`` +
  ``IN-PReLU-conv3(stride 2)`` shortcut). Instance norms without affine parameters, PReLU, 3-D dropout 0.5 as in the
  released code.
- **MCSA** (Modality-Cooperative Spatial Attention, the paper's name) after encoder levels ``mcsa_levels``:
  *inter-window*: each
  window of ``WINDOW`` voxels is pooled to one token by a convolution whose kernel and stride equal the window (one
  per modality), BDSA runs over the token grid, the result is upsampled trilinearly back to the feature size, added
  to the feature and normalised (IN-PReLU); *intra-window*: the feature is partitioned into windows, BDSA runs inside
  every window, the windows are reassembled, added and normalised. Queries/keys have ``C / qk_reduction`` (4)
  channels. Two layouts (``layout``): ``"paper"`` (default; source: the paper, which places MCSA after every
  encoder level: ``mcsa_levels = (1, 2, 3, 4, 5)``; the input must then be a multiple of ``16 x window``, which the
  paper's patch is) and ``"release"`` (the authors' code: MCSA after levels 2 and 3 only, one global BDSA with a
  residual connection at levels 4 and 5, nothing at level 1).
- **BDSA** (bi-directional spatial attention): for a target modality, a self-attention (Q, K, V from the target)
  and a cross-attention (Q from the target, K, V from the other modality), both single-head scaled dot-product
  attention ``softmax(Q K^T / sqrt(d_k)) V`` with ``d_k`` the query/key width ``C / qk_reduction`` (source: the
  released code, which divides the scores by ``sqrt(C // channel_scale)``; the paper's text names scaled
  dot-product attention without another scale), with dropout on the attention weights; their outputs are concatenated and fused by a 3x3x3
  convolution (then dropout). Two directions (CT <- PET, PET <- CT) with their own weights.
- **Decoder**: from the bottleneck ``h_5 = [F_ct5, F_pet5]`` up: the coarser decoder feature is upsampled
  trilinearly to the level's size, fused with the level's skip features by **TAMW** (or concatenated), and a
  residual unit maps the ``2 c_l + 2 c_{l+1}`` channels to ``2 c_l``.
- **TAMW** (target-aware modality weighting) at decoder levels 1-4: ``F = concat(F_pet, F_ct, up)``; the coarser
  level's logits are upsampled trilinearly and soft-maxed; ``P_fore = 1 - p_background``; ``F_fore = F * P_fore``,
  ``F_back = F * (1 - P_fore)``; for each, global average pooling (adaptive: any input size) -> ``Linear(C, C/4)``
  -> tanh -> ``Linear(C/4, C)`` -> tanh gives channel weights in (-1, 1);
  ``F_enh = F + W_fore * F_fore + W_back * F_back``.
- **Heads and deep supervision**: an ``IN-PReLU-conv3`` head on every decoder level (5 outputs, the bottleneck's
  included). In training with deep supervision the five logits are upsampled trilinearly to the input size (as the
  paper does) and returned full resolution first; ``deep_supervision_weights`` gives the paper's loss weights
  ``6 - k`` for level ``k`` (5, 4, 3, 2, 1).
- **Loss** (``activation``): ``"sigmoid"`` (default; source: the paper, BCE + Dice on every output): the heads
  have ``K - 1`` sigmoid channels, and unipet's trainer applies BCE + soft Dice per output
  (``unipet.train.losses``); TAMW's foreground probability is then the sigmoid of the coarse logit.
  ``"softmax"``: ``K`` softmax channels trained with cross-entropy + batch Dice (unipet's earlier default).

Ablations (the paper's Table 2), through constructor switches (``VARIANTS``; ``--model-kw``): ``baseline``
(``mcsa=False, tamw=False``: the same dual-branch ResUNet with channel concatenation), ``mcsa`` (``tamw=False``),
``tamw`` (``mcsa=False``) and ``full``. ``unipet.analysis.h2aseg.tamw_weight_report`` gives the mean TAMW weights of the PET and CT
channels per level (the paper's Table 3).

Differences from the released code (JinPLu/H2ASeg), all deliberate:

- any patch whose per-level sizes are divisible by the windows works: TAMW pools adaptively (the release uses an
  ``AvgPool3d`` with the training patch's size as kernel) and every upsampling targets the skip's size; the
  inter-window tokeniser's kernel and stride equal the window as the paper describes (the release uses the smallest
  window side, 4, isotropically);
- BDSA fuses self- and cross-attention by concatenation and a 3x3x3 convolution as the paper describes (the release
  averages them and applies a 1x1x1 convolution);
- TAMW masks the whole concatenation (decoder feature included) and adds the background term (the release subtracts
  it; tanh is odd, so that only flips the sign of the learnt background weights);
- inference uses unipet's Gaussian sliding-window predictor.

Sizes at the paper's patch 64x128x128 (``unipet.models.profile.profile_model``; 2 classes, sigmoid heads; MACs
of one forward):

======== ================= =================
variant  paper layout      release layout
======== ================= =================
baseline 6.483 M, 107.1 G  6.483 M, 107.1 G
mcsa     22.634 M, 137.2 G 9.888 M, 120.0 G
tamw     6.680 M, 107.1 G  6.680 M, 107.1 G
full     22.832 M, 137.2 G 10.086 M, 120.0 G
======== ================= =================

MCSA at levels 4 and 5 holds most of the paper layout's extra parameters: its window tokenisers are
convolutions with a window-sized kernel (4x8x8) on 64 and 128 channels.

No published parameter count of the paper's model was available to compare with.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from unipet.errors import ConfigError, ImageGeometryError
from unipet.models.base import UnipetModel, as_tuple3
from unipet.models.registry import register

#: encoder widths per level (both branches)
WIDTHS = (8, 16, 32, 64, 128)
#: attention window (z, y, x) voxels — the paper's (8, 8, 4) in (x, y, z)
WINDOW = (4, 8, 8)
#: the paper's training patch (z, y, x) — 128 x 128 x 64 in (x, y, z)
PAPER_PATCH = (64, 128, 128)
LEVELS = 5
#: the paper's Table 2 ablation variants as builder keyword arguments
VARIANTS: dict[str, dict[str, bool]] = {
    "baseline": {"mcsa": False, "tamw": False},
    "mcsa": {"mcsa": True, "tamw": False},
    "tamw": {"mcsa": False, "tamw": True},
    "full": {"mcsa": True, "tamw": True},
}


def _norm_act(channels: int) -> nn.Sequential:
    """``InstanceNorm3d`` (no affine, as released) followed by ``PReLU``; keeps the shape."""
    return nn.Sequential(nn.InstanceNorm3d(channels), nn.PReLU())


def _upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Trilinear resize of ``x [B, C, d, h, w]`` to ``size`` (corners aligned, as the paper's upsampling)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="trilinear", align_corners=True)


class ResidualUnit(nn.Module):
    """H2ASeg's residual unit: ``[B, in, D, H, W] -> [B, out, D/s, H/s, W/s]``.

    ``first=True`` (level 1, on the raw image): ``conv3(stride) -> IN -> PReLU -> Dropout3d -> conv3`` plus a conv3
    shortcut. Otherwise pre-activation: ``IN -> PReLU -> conv3(stride) -> Dropout3d -> IN -> PReLU -> conv3`` plus an
    ``IN -> PReLU -> conv3(stride)`` shortcut. Written here because MONAI's ``ResidualUnit`` has no normalised,
    activated convolutional shortcut.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0,
                 first: bool = False) -> None:
        super().__init__()
        conv_in = nn.Conv3d(in_channels, out_channels, 3, stride, 1)
        conv_out = nn.Conv3d(out_channels, out_channels, 3, 1, 1)
        if first:
            layers = [conv_in, _norm_act(out_channels), nn.Dropout3d(dropout), conv_out]
            shortcut: list[nn.Module] = [nn.Conv3d(in_channels, out_channels, 3, stride, 1)]
        else:
            layers = [_norm_act(in_channels), conv_in, nn.Dropout3d(dropout), _norm_act(out_channels), conv_out]
            shortcut = [_norm_act(in_channels), nn.Conv3d(in_channels, out_channels, 3, stride, 1)]
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(*shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class DirectedAttention(nn.Module):
    """One direction of BDSA: the target modality attends to itself and to the source modality.

    ``(target, source) [B, C, d, h, w] -> [B, C, d, h, w]``: self-attention (Q, K, V from the target) and
    cross-attention (Q from the target, K, V from the source), single-head scaled dot product over the ``d*h*w``
    positions, queries/keys of ``qk_channels``; the two outputs are concatenated and fused by a 3x3x3 convolution.
    Projections are 1x1x1 convolutions without bias (stacked into one convolution per input for speed).
    """

    def __init__(self, channels: int, qk_channels: int, dropout: float = 0.0, residual: bool = False) -> None:
        super().__init__()
        self.qk = int(qk_channels)
        self.channels = int(channels)
        # target -> [q_self, k_self, q_cross, v_self]; source -> [k_cross, v_cross]
        self.target_proj = nn.Conv3d(channels, 3 * self.qk + channels, 1, bias=False)
        self.source_proj = nn.Conv3d(channels, self.qk + channels, 1, bias=False)
        self.fuse = nn.Conv3d(2 * channels, channels, 3, padding=1)
        self.attention_dropout = float(dropout)
        self.dropout = nn.Dropout(dropout)
        self.residual = bool(residual)

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = target.shape
        # [B, 1 head, N, channels]: the 4-D layout lets SDPA pick a fused kernel on the GPU
        t = self.target_proj(target).flatten(2).transpose(1, 2).unsqueeze(1)  # [B, 1, N, 3qk + C]
        s = self.source_proj(source).flatten(2).transpose(1, 2).unsqueeze(1)  # [B, 1, N, qk + C]
        q_self, k_self, q_cross, v_self = t.split([self.qk, self.qk, self.qk, c], dim=3)
        k_cross, v_cross = s.split([self.qk, c], dim=3)
        p = self.attention_dropout if self.training else 0.0
        a_self = F.scaled_dot_product_attention(q_self, k_self, v_self, dropout_p=p)
        a_cross = F.scaled_dot_product_attention(q_cross, k_cross, v_cross, dropout_p=p)
        both = torch.cat((a_self, a_cross), dim=3)[:, 0].transpose(1, 2).reshape(b, 2 * c, d, h, w)
        out = self.dropout(self.fuse(both))
        return out + target if self.residual else out


class BDSA(nn.Module):
    """Bi-directional spatial attention: ``(ct, pet) -> (ct', pet')``, each ``[B, C, d, h, w]``; CT attends to PET
    and PET to CT with separate weights (``to_ct``, ``to_pet``)."""

    def __init__(self, channels: int, qk_channels: int, dropout: float = 0.0, residual: bool = False) -> None:
        super().__init__()
        self.to_ct = DirectedAttention(channels, qk_channels, dropout, residual)
        self.to_pet = DirectedAttention(channels, qk_channels, dropout, residual)

    def forward(self, ct: torch.Tensor, pet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.to_ct(ct, pet), self.to_pet(pet, ct)


def window_partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """``[B, C, D, H, W] -> [B * nD * nH * nW, C, wd, wh, ww]`` (sizes divisible by ``window``)."""
    wd, wh, ww = window
    return rearrange(x, "b c (nd wd) (nh wh) (nw ww) -> (b nd nh nw) c wd wh ww", wd=wd, wh=wh, ww=ww)


def window_merge(x: torch.Tensor, window: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """Inverse of ``window_partition``: windows ``[B * n, C, wd, wh, ww]`` back to ``[B, C, *size]``."""
    nd, nh, nw = (int(s) // int(w) for s, w in zip(size, window))
    return rearrange(x, "(b nd nh nw) c wd wh ww -> b c (nd wd) (nh wh) (nw ww)", nd=nd, nh=nh, nw=nw)


class MCSA(nn.Module):
    """Multi-modal cross-window spatial attention: ``(ct, pet) [B, C, D, H, W] -> (ct', pet')`` same shape.

    Inter-window attention (BDSA over one token per window, tokens from a conv with kernel = stride = ``window``,
    upsampled trilinearly back, added, IN-PReLU), then intra-window attention (BDSA inside every window, windows
    reassembled, added, IN-PReLU). ``D, H, W`` must be divisible by ``window``.
    """

    def __init__(self, channels: int, window: Sequence[int], qk_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.window = as_tuple3(window)
        self.tokens_ct = nn.Conv3d(channels, channels, self.window, stride=self.window)
        self.tokens_pet = nn.Conv3d(channels, channels, self.window, stride=self.window)
        self.inter = BDSA(channels, qk_channels, dropout)
        self.intra = BDSA(channels, qk_channels, dropout)
        self.post_inter_ct, self.post_inter_pet = _norm_act(channels), _norm_act(channels)
        self.post_intra_ct, self.post_intra_pet = _norm_act(channels), _norm_act(channels)

    def forward(self, ct: torch.Tensor, pet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = tuple(ct.shape[2:])
        if any(s % w for s, w in zip(size, self.window)):
            raise ImageGeometryError(f"MCSA needs feature sizes divisible by its window {self.window}, got {size}; "
                                     "give the model an input whose size suits its patch rule (see h2aseg.check_patch)")
        t_ct, t_pet = self.inter(self.tokens_ct(ct), self.tokens_pet(pet))
        ct = self.post_inter_ct(ct + _upsample(t_ct, size))
        pet = self.post_inter_pet(pet + _upsample(t_pet, size))
        w_ct, w_pet = self.intra(window_partition(ct, self.window), window_partition(pet, self.window))
        ct = self.post_intra_ct(ct + window_merge(w_ct, self.window, size))
        pet = self.post_intra_pet(pet + window_merge(w_pet, self.window, size))
        return ct, pet


class TAMW(nn.Module):
    """Target-aware modality weighting: ``(pet, ct [B, c, d, h, w], up [B, u, d, h, w], coarse logits [B, K, ...])
    -> F_enh [B, 2c + u, d, h, w]``.

    ``F = concat(pet, ct, up)``; the coarse logits are upsampled to ``(d, h, w)``; ``P_fore`` is one minus the
    background probability of their softmax (or, for sigmoid heads, the largest foreground sigmoid); ``F_fore = F * P_fore``, ``F_back = F * (1 - P_fore)``; per branch a global
    average pool (any size), ``Linear(C, C/r) -> tanh -> Linear(C/r, C) -> tanh`` gives channel weights in (-1, 1);
    ``F_enh = F + W_fore * F_fore + W_back * F_back``. Channels ``[0, c)`` are PET, ``[c, 2c)`` CT, the rest the
    decoder feature. While ``recorded`` is a list, each call appends ``(W_fore, W_back)`` (``[B, C]``, detached).
    """

    def __init__(self, skip_channels: int, up_channels: int, reduction: int = 4, activation: str = "softmax") -> None:
        super().__init__()
        self.activation = activation
        self.skip_channels = int(skip_channels)
        total = 2 * self.skip_channels + int(up_channels)
        hidden = max(1, total // int(reduction))
        self.fore = nn.Sequential(nn.Linear(total, hidden), nn.Tanh(), nn.Linear(hidden, total), nn.Tanh())
        self.back = nn.Sequential(nn.Linear(total, hidden), nn.Tanh(), nn.Linear(hidden, total), nn.Tanh())
        self.recorded: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def weights(self, features: torch.Tensor, coarse_logits: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(W_fore [B, C], W_back [B, C], F_fore, F_back)`` for the concatenated ``features [B, C, d, h, w]``."""
        coarse = _upsample(coarse_logits.float(), features.shape[2:])
        if self.activation == "sigmoid":  # foreground = the most probable foreground class
            p_back = (1 - coarse.sigmoid().amax(1, keepdim=True)).to(features.dtype)
        else:
            p_back = coarse.softmax(1)[:, :1].to(features.dtype)
        f_fore, f_back = features * (1 - p_back), features * p_back
        return self.fore(f_fore.mean((2, 3, 4))), self.back(f_back.mean((2, 3, 4))), f_fore, f_back

    def forward(self, pet: torch.Tensor, ct: torch.Tensor, up: torch.Tensor, coarse_logits: torch.Tensor) -> torch.Tensor:
        f = torch.cat((pet, ct, up), dim=1)
        w_fore, w_back, f_fore, f_back = self.weights(f, coarse_logits)
        if self.recorded is not None:
            self.recorded.append((w_fore.detach().float(), w_back.detach().float()))
        return f + w_fore[..., None, None, None] * f_fore + w_back[..., None, None, None] * f_back


class Head(nn.Sequential):
    """Segmentation head ``[B, C, ...] -> [B, K, ...]``: IN -> PReLU -> 3x3x3 convolution."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__(nn.InstanceNorm3d(channels), nn.PReLU(), nn.Conv3d(channels, num_classes, 3, padding=1))


#: MCSA / global-BDSA encoder levels of the two layouts
LAYOUTS: dict[str, dict[str, tuple[int, ...]]] = {
    "paper": {"mcsa_levels": (1, 2, 3, 4, 5), "bdsa_levels": ()},
    "release": {"mcsa_levels": (2, 3), "bdsa_levels": (4, 5)},
}


def patch_multiple(window: Sequence[int] = WINDOW, mcsa_levels: Sequence[int] = (1, 2, 3, 4, 5)) -> tuple[int, int, int]:
    """Per axis ``(z, y, x)``, the number every input size must be a multiple of: 16 (four halvings) and, for each
    MCSA level ``l`` (1-based), ``window * 2^(l-1)`` (the level's feature must hold whole windows)."""
    multiple = [16, 16, 16]
    for level in mcsa_levels:
        scale = 2 ** (int(level) - 1)
        multiple = [math.lcm(m, int(w) * scale) for m, w in zip(multiple, as_tuple3(window))]
    return tuple(multiple)  # type: ignore[return-value]


def check_patch(patch_size: Sequence[int], window: Sequence[int] = WINDOW,
                mcsa_levels: Sequence[int] = (1, 2, 3, 4, 5)) -> tuple[int, int, int]:
    """``patch_size`` as a 3-tuple; ConfigError naming the nearest valid patch unless it suits ``patch_multiple``."""
    patch = as_tuple3(patch_size)
    multiple = patch_multiple(window, mcsa_levels)
    if any(p <= 0 or p % m for p, m in zip(patch, multiple)):
        valid = tuple(max(m, round(p / m) * m) for p, m in zip(patch, multiple))
        raise ConfigError(f"h2aseg needs a patch whose sizes (z, y, x) are multiples of {multiple} (16 and the "
                          f"window {tuple(as_tuple3(window))} at every MCSA level), got {patch}; use e.g. "
                          f"--patch {' '.join(map(str, valid))} or a smaller window (--model-kw '{{\"window\": ...}}')")
    return patch


class H2ASeg(UnipetModel):
    """H2ASeg (see the module docstring): ``x [B, 2, D, H, W] -> logits [B, K', D, H, W]`` (``K' = K - 1`` sigmoid
    channels, or ``K`` softmax channels), or in training with deep
    supervision the 5 level logits upsampled to ``(D, H, W)``, full resolution first.

    Args:
        in_channels: must be 2 (PET and CT).
        num_classes: softmax classes (2: background, lesion).
        widths: encoder widths of the 5 levels (each branch).
        window: MCSA window ``(z, y, x)``.
        mcsa: cross-modal attention in the encoder (MCSA at ``mcsa_levels``, global BDSA at ``bdsa_levels``);
            False gives two independent branches.
        tamw: TAMW fusion in the decoder; False concatenates ``[pet, ct, up]``.
        mcsa_levels, bdsa_levels: 1-based encoder levels with MCSA / with global BDSA (+ residual).
        qk_reduction: MCSA query/key channels are ``C / qk_reduction``; bdsa_qk_reduction: the same for global BDSA.
        tamw_reduction: hidden size ``C / tamw_reduction`` of the TAMW MLPs.
        encoder_dropout, decoder_dropout: ``Dropout3d`` in the residual units; attention_dropout: on the attention
            weights and after each BDSA fusion convolution.
        pet_channel: input channel holding PET (0 or 1; unipet caches put CT first, so 1).
        activation: ``"sigmoid"`` (the paper's BCE + Dice; ``K - 1`` output channels) or ``"softmax"``.
    """

    def __init__(self, in_channels: int = 2, num_classes: int = 2, widths: Sequence[int] = WIDTHS,
                 window: Sequence[int] = WINDOW, mcsa: bool = True, tamw: bool = True,
                 mcsa_levels: Sequence[int] = LAYOUTS["paper"]["mcsa_levels"],
                 bdsa_levels: Sequence[int] = LAYOUTS["paper"]["bdsa_levels"], qk_reduction: int = 4,
                 bdsa_qk_reduction: int = 1, tamw_reduction: int = 4, encoder_dropout: float = 0.5,
                 decoder_dropout: float = 0.5, attention_dropout: float = 0.5, pet_channel: int = 1,
                 activation: str = "sigmoid") -> None:
        super().__init__()
        if activation not in ("sigmoid", "softmax"):
            raise ConfigError(f"unknown h2aseg activation {activation!r}; use 'sigmoid' (the paper's BCE + Dice) or "
                              "'softmax'")
        if activation == "sigmoid" and num_classes < 2:
            raise ConfigError(f"num_classes={num_classes}: give background + at least one foreground class (>= 2)")
        self.output_activation = activation
        self.out_channels = num_classes - 1 if activation == "sigmoid" else num_classes
        widths = [int(w) for w in widths]
        if in_channels != 2:
            raise ConfigError(f"h2aseg has one encoder branch per modality and needs exactly 2 input channels (PET, "
                              f"CT), got {in_channels}; build the cache with --channels CT PET")
        if len(widths) != LEVELS or min(widths) < 1:
            raise ConfigError(f"h2aseg needs {LEVELS} positive encoder widths, got {widths}")
        if pet_channel not in (0, 1):
            raise ConfigError(f"pet_channel must be 0 or 1, got {pet_channel}")
        levels = {int(v) for v in mcsa_levels} | {int(v) for v in bdsa_levels}
        if not levels <= set(range(1, LEVELS + 1)) or set(mcsa_levels) & set(bdsa_levels):
            raise ConfigError(f"mcsa_levels {list(mcsa_levels)} and bdsa_levels {list(bdsa_levels)} must be distinct "
                              f"levels among 1..{LEVELS}")
        self.widths, self.window = widths, as_tuple3(window)
        self.use_mcsa, self.use_tamw = bool(mcsa), bool(tamw)
        self.mcsa_levels = tuple(int(v) for v in mcsa_levels) if mcsa else ()
        self.pet_channel = int(pet_channel)

        def branch() -> nn.ModuleList:
            return nn.ModuleList([ResidualUnit(1, widths[0], 1, encoder_dropout, first=True)] + [
                ResidualUnit(widths[i - 1], widths[i], 2, encoder_dropout) for i in range(1, LEVELS)])

        self.ct_branch, self.pet_branch = branch(), branch()
        interactions: dict[str, nn.Module] = {}
        if mcsa:
            for level in mcsa_levels:
                c = widths[level - 1]
                interactions[str(level)] = MCSA(c, self.window, max(1, c // qk_reduction), attention_dropout)
            for level in bdsa_levels:
                c = widths[level - 1]
                interactions[str(level)] = BDSA(c, max(1, c // bdsa_qk_reduction), attention_dropout, residual=True)
        self.interactions = nn.ModuleDict(interactions)
        # decoder level l (0-based, 0..3) fuses skips of width w_l with the upsampled 2 * w_{l+1} decoder feature
        self.fusions = nn.ModuleList(TAMW(widths[l], 2 * widths[l + 1], tamw_reduction, activation)
                                     for l in range(LEVELS - 1)) if tamw else None
        self.decoder = nn.ModuleList(ResidualUnit(2 * widths[l] + 2 * widths[l + 1], 2 * widths[l], 1, decoder_dropout)
                                     for l in range(LEVELS - 1))
        self.heads = nn.ModuleList(Head(2 * widths[l], self.out_channels) for l in range(LEVELS))

    def deep_supervision_weights(self, n: int) -> list[float]:
        """The paper's weights ``6 - k`` for level ``k`` (full resolution ``k = 1`` first): ``[5, 4, 3, 2, 1]``
        for the 5 outputs (``n - i`` for output ``i`` in general), not normalised."""
        return [float(n - i) for i in range(n)]

    def split_modalities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ct, pet)``, each ``[B, 1, D, H, W]``, from ``x [B, 2, D, H, W]``."""
        pet = x[:, self.pet_channel:self.pet_channel + 1]
        ct = x[:, 1 - self.pet_channel:2 - self.pet_channel]
        return ct, pet

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-level CT and PET features (after their interaction), finest first: two lists of 5 tensors."""
        ct, pet = self.split_modalities(x)
        feats_ct, feats_pet = [], []
        for level in range(LEVELS):
            ct, pet = self.ct_branch[level](ct), self.pet_branch[level](pet)
            key = str(level + 1)
            if key in self.interactions:
                ct, pet = self.interactions[key](ct, pet)
            feats_ct.append(ct)
            feats_pet.append(pet)
        return feats_ct, feats_pet

    def forward(self, x: torch.Tensor, task=None, text=None, organs=None):
        self.check_inputs(x, task, text, organs)
        if x.shape[1] != 2:
            raise ImageGeometryError(f"h2aseg expects 2 input channels (PET, CT), got {x.shape[1]}")
        size = tuple(int(s) for s in x.shape[2:])
        multiple = patch_multiple(self.window, self.mcsa_levels)
        if any(s % m for s, m in zip(size, multiple)):
            raise ImageGeometryError(f"h2aseg needs input sizes (z, y, x) divisible by {multiple}, got {size}; pad "
                                     "the volume or run it through the sliding-window predictor with its patch size")
        feats_ct, feats_pet = self.encode(x)
        h = torch.cat((feats_ct[-1], feats_pet[-1]), dim=1)
        logits = [self.heads[-1](h)]
        for level in range(LEVELS - 2, -1, -1):
            up = _upsample(h, feats_ct[level].shape[2:])
            if self.fusions is not None:
                fused = self.fusions[level](feats_pet[level], feats_ct[level], up, logits[-1])
            else:
                fused = torch.cat((feats_pet[level], feats_ct[level], up), dim=1)
            h = self.decoder[level](fused)
            logits.append(self.heads[level](h))
        logits.reverse()
        if self.deep_supervision and self.training:
            return [_upsample(o, size) for o in logits]
        return logits[0]


@register("h2aseg", prompts=(), family="h2aseg",
          description="H2ASeg: dual-branch PET/CT ResUNet with cross-modal window attention (MCSA/BDSA) and "
                      "target-aware modality weighting (TAMW), deep supervision at 5 levels")
def build(in_channels: int, num_classes: int, tasks, patch_size: Sequence[int], widths: Sequence[int] = WIDTHS,
          window: Sequence[int] = WINDOW, mcsa: bool = True, tamw: bool = True, layout: str = "paper",
          mcsa_levels: Sequence[int] | None = None, bdsa_levels: Sequence[int] | None = None, qk_reduction: int = 4,
          bdsa_qk_reduction: int = 1, tamw_reduction: int = 4, encoder_dropout: float = 0.5,
          decoder_dropout: float = 0.5, attention_dropout: float = 0.5, pet_channel: int = 1,
          activation: str = "sigmoid") -> H2ASeg:
    """H2ASeg for ``patch_size`` (z, y, x); the paper's configuration at ``PAPER_PATCH`` by default.

    ``layout``: ``"paper"`` (MCSA after every encoder level) or ``"release"`` (the authors' code: MCSA at levels
    2-3, global BDSA at 4-5); ``mcsa_levels`` / ``bdsa_levels`` override the layout's levels. ``activation``:
    ``"sigmoid"`` (the paper's BCE + Dice) or ``"softmax"`` (CE + batch Dice).

    Table 2 variants: ``mcsa``/``tamw`` switches (``VARIANTS``), e.g. ``--model-kw '{"mcsa": false, "tamw":
    false}'`` for the channel-concatenation ResUNet baseline. Small widths (``widths=[2, 4, 4, 8, 8]``) and windows
    (``window=[2, 2, 2]``) make test-size models.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown h2aseg layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    mcsa_levels = tuple(LAYOUTS[layout]["mcsa_levels"] if mcsa_levels is None else mcsa_levels)
    bdsa_levels = tuple(LAYOUTS[layout]["bdsa_levels"] if bdsa_levels is None else bdsa_levels)
    check_patch(patch_size, window, mcsa_levels if mcsa else ())
    return H2ASeg(in_channels, num_classes, widths, window, mcsa, tamw, mcsa_levels, bdsa_levels, qk_reduction,
                  bdsa_qk_reduction, tamw_reduction, encoder_dropout, decoder_dropout, attention_dropout, pet_channel,
                  activation)
