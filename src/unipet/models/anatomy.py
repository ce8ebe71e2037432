"""Anatomy-guided prompting (seed 004): dual-modality encoders, organ maps as prompts through a Mamba prompt
encoder, and hypernetwork-controlled cross-attention that fuses the anatomy into the image features.

The seed publishes only its abstract; every design choice below is ours and stated here.

Architecture (``model(x [B, 2, D, H, W], organs LongTensor[B, D, H, W]) -> logits [B, K, D, H, W]``):

1. **Modality-specific encoders** (``ct_encoder``, ``pet_encoder``): two residual encoders (STU-Net's residual
   blocks, ``unipet.models.blocks.res_stage``) of ``widths`` with ``depths`` blocks per stage and nnU-Net strides
   planned from the patch (``unipet.models.stunet.plan_strides``). They are the tensors that cross-modal
   pre-training (``unipet.pretrain``) trains: the pre-training module builds the same ``ModalityEncoder`` under
   the same attribute names, so ``unipet train --init PRETRAIN_DIR`` copies them by name. Separate encoders (not
   a 2-channel stem) because the seed pre-trains PET and CT with modality-specific encoders.
2. **Fusion**: at every resolution the two feature maps are concatenated and merged by a 1x1x1
   conv-IN-LReLU (``fuse``) into one skip / bottleneck feature of the level's width.
3. **Organ-prompt tokens** (``OrganPromptEncoder``): one token per organ label value ``0 .. organ_classes - 1``
   of the organ map (label order of ``unipet.data.organs.ORGAN_LABELS``) plus a learned *null* token that is
   always present. A token is the sum of (a) a learned organ embedding, (b) an MLP of the organ's geometry in the
   patch (volume share, centroid and spread per axis, ``organ_geometry``), (c) a linear map of the fused
   bottleneck features averaged over the organ (its appearance in *this* study: e.g. physiological uptake of the
   kidneys); (b) and (c) are zero for organs absent from the patch. Tokens are prompts, not extra input
   channels: the organ map never enters the convolutions.
4. **Mamba prompt encoder**: a bidirectional selective state-space model over the token sequence
   (``mambapy.vim.VMamba``, the maintained pure-PyTorch Mamba with parallel scan; runs on CPU) so that each
   organ's prompt is conditioned on the other organs in view (which organs are present locates the patch in the
   body). Bidirectional because the label order is not causal. It runs in float32 even under autocast (the
   scan's cumulative products are unstable in bf16; the sequence is only ``organ_classes + 1`` tokens long).
5. **Hypernet-controlled cross-attention** (``HyperCrossAttention``), at the ``fusion_levels`` deepest levels:
   image voxels (queries) attend to the prompt tokens (keys / values). A hypernetwork maps the prompt embedding
   (mean of the present tokens) to the query, key and value projections of the sample:
   ``W(p) = W_0 + U(p) V(p)`` with ``U, V`` of rank ``hyper_rank`` generated per sample (a full ``C x C``
   matrix per projection would need ``C^2 x hidden`` hypernetwork weights — 26 M at C = 320 — so the
   hypernetwork generates a low-rank update of a shared base, as HyperLoRA does). Attention logits get a
   learned per-head bias ``beta_h * fraction(organ, voxel)`` (anatomy-guided: a voxel inside the liver looks at
   the liver token first); tokens of organs absent from the patch are masked. Pre-norm, residual.
6. **Decoder**: STU-Net's (nearest upsampling + 1x1x1 conv, concatenated skip, residual blocks, a 1x1x1 head
   per level for deep supervision).

``anatomy=False`` builds the same network without 3–5 (no ``organs`` input): the ablation "without the
anatomical prompt" and the segmentation half of "with / without pre-training".

Size (2 classes, patch 112x160x128, ``unipet.models.profile``): the default configuration (widths 32–320, 1, 2, 2,
2, 2 residual blocks per stage in each encoder; prompt width 128, 2 Mamba layers, cross-attention at the two
deepest levels) has 53.76 M parameters and 1028 G MACs with the anatomical prompt, 49.98 M and 1027 G without
(the prompt path costs 3.8 M parameters and < 0.1 % of the MACs). The two full-resolution encoders give it 1.9x
STU-Net-B's MACs (546.6 G) with fewer parameters (58.2 M). The seed reports no size.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unipet.errors import ConfigError, ImageGeometryError
from unipet.models.base import UnipetModel, as_tuple3
from unipet.data.organs import ORGAN_CLASSES
from unipet.models.blocks import (UpsampleNearest, check_divisible, conv_norm_act, cumulative_stride, organ_fractions,
                                  res_stage)
from unipet.models.registry import register

DEFAULT_WIDTHS = (32, 64, 128, 256, 320)
DEFAULT_DEPTHS = (1, 2, 2, 2, 2)
#: attribute names of the encoders (shared with ``unipet.pretrain``; the tensors ``--init`` copies)
ENCODER_PREFIXES = ("ct_encoder.", "pet_encoder.")
#: geometry features per organ: volume share, centroid (z, y, x), spread (z, y, x)
GEOMETRY_FEATURES = 7


class ModalityEncoder(nn.Module):
    """Residual encoder of one modality: ``[B, 1, D, H, W]`` -> features of every stage, full resolution first.

    Stage 0 keeps the resolution; stage ``i >= 1`` downsamples by ``strides[i - 1]`` in its first block. Stage
    ``i`` has ``widths[i]`` channels and ``depths[i]`` residual blocks.
    """

    def __init__(self, widths: Sequence[int], depths: Sequence[int], strides: Sequence[Sequence[int]]) -> None:
        super().__init__()
        if len(widths) != len(depths) or len(strides) != len(widths) - 1:
            raise ConfigError(f"an encoder needs one depth per width and one stride per stage after the first; got "
                              f"{len(widths)} widths, {len(depths)} depths, {len(strides)} strides")
        self.stages = nn.ModuleList(
            [res_stage(1, int(widths[0]), int(depths[0]))]
            + [res_stage(int(widths[i - 1]), int(widths[i]), int(depths[i]), stride=as_tuple3(strides[i - 1]))
               for i in range(1, len(widths))])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def organ_geometry(fractions: torch.Tensor) -> torch.Tensor:
    """Geometry of every organ in a patch from its fraction map.

    Args:
        fractions: ``[B, K, d, h, w]`` organ shares per cell (``organ_fractions``).

    Returns:
        ``[B, K, 7]``: share of the patch's volume (0..1), centroid ``(z, y, x)`` and standard deviation
        ``(z, y, x)`` in patch coordinates scaled to ``[-1, 1]`` (centre 0). All zero for an absent organ.
    """
    sizes = fractions.shape[2:]
    frac = fractions.float()
    mass = frac.sum((2, 3, 4))
    safe = mass.clamp_min(1e-6)
    out = [mass / float(math.prod(sizes))]
    centroids, spreads = [], []
    for axis, n in enumerate(sizes):
        coord = torch.linspace(-1.0, 1.0, n, device=frac.device) if n > 1 else torch.zeros(1, device=frac.device)
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = n
        coord = coord.view(shape)
        mean = (frac * coord).sum((2, 3, 4)) / safe
        var = (frac * (coord - mean[..., None, None, None]) ** 2).sum((2, 3, 4)) / safe
        centroids.append(mean)
        spreads.append(var.clamp_min(0).sqrt())
    present = (mass > 0).float()
    return torch.stack(out + centroids + spreads, dim=-1) * present[..., None]


class OrganPromptEncoder(nn.Module):
    """Organ map + image features -> prompt tokens (see the module docstring, items 3–4).

    ``forward(fractions [B, K, d1, h1, w1], bottleneck_fractions [B, K, d, h, w], features [B, C, d, h, w])
    -> (tokens [B, K + 1, dim], present BoolTensor[B, K + 1])``; token 0 is the null token (always present),
    token ``1 + k`` is organ label ``k``. ``fractions`` (the finest fused level) give the geometry.
    """

    def __init__(self, organ_classes: int, feature_channels: int, dim: int, layers: int = 2, state: int = 16) -> None:
        super().__init__()
        from mambapy.vim import MambaConfig, VMamba

        self.organ_classes = int(organ_classes)
        self.embed = nn.Embedding(self.organ_classes, dim)
        self.null = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.null, std=0.02)
        self.geometry = nn.Sequential(nn.Linear(GEOMETRY_FEATURES, dim), nn.GELU(), nn.Linear(dim, dim))
        self.appearance = nn.Linear(feature_channels, dim)
        self.ssm = VMamba(MambaConfig(d_model=dim, n_layers=int(layers), d_state=int(state), bidirectional=True))
        self.norm = nn.LayerNorm(dim)

    def forward(self, fractions: torch.Tensor, bottleneck_fractions: torch.Tensor,
                features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = features.shape[0]
        present = fractions.flatten(2).sum(2) > 0  # [B, K]
        # autocast has no "meta" device type (shape-only profiling); the CPU context is a no-op there
        with torch.autocast("cuda" if features.is_cuda else "cpu", enabled=False):
            geometry = organ_geometry(fractions)
            frac = bottleneck_fractions.float().flatten(2)  # [B, K, n]
            pooled = (torch.einsum("bkn,bcn->bkc", frac, features.float().flatten(2))
                      / frac.sum(2, keepdim=True).clamp_min(1e-6))
            mask = present[..., None].float()
            tokens = (self.embed.weight[None].float() + mask * self.geometry(geometry)
                      + mask * self.appearance(pooled))
            seq = torch.cat([self.null.float().expand(b, -1, -1), tokens], dim=1)
            seq = self.norm(self.ssm(seq))
        valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=present.device), present], dim=1)
        return seq, valid


class HyperCrossAttention(nn.Module):
    """Image features attend to prompt tokens with projections generated by a hypernetwork (module item 5).

    Args:
        channels: C, channels of the image feature (also the attention width).
        prompt_dim: P, width of the prompt tokens.
        heads: attention heads (C must be divisible by it).
        rank: rank r of the generated projection updates.
        hidden: hidden width of the hypernetwork.

    ``forward(x [B, C, d, h, w], tokens [B, T, P], present [B, T], fractions [B, T - 1, d, h, w]) -> [B, C, d, h, w]``
    """

    def __init__(self, channels: int, prompt_dim: int, heads: int = 8, rank: int = 4, hidden: int = 256) -> None:
        super().__init__()
        if channels % heads:
            raise ConfigError(f"cross-attention width {channels} is not divisible by {heads} heads; change heads")
        self.channels, self.prompt_dim, self.heads, self.rank = int(channels), int(prompt_dim), int(heads), int(rank)
        self.norm = nn.LayerNorm(channels)
        self.q = nn.Linear(channels, channels)
        self.k = nn.Linear(prompt_dim, channels)
        self.v = nn.Linear(prompt_dim, channels)
        self.out = nn.Linear(channels, channels)
        self._inputs = {"q": channels, "k": prompt_dim, "v": prompt_dim}
        size = sum(rank * (n_in + channels) for n_in in self._inputs.values())
        self.hyper = nn.Sequential(nn.Linear(prompt_dim, hidden), nn.GELU(), nn.Linear(hidden, size))
        # small generated updates at initialisation: the base projections dominate, the prompt modulates them
        nn.init.normal_(self.hyper[-1].weight, std=0.02 / math.sqrt(hidden))
        nn.init.zeros_(self.hyper[-1].bias)
        self.anatomy_bias = nn.Parameter(torch.ones(heads))

    def generated(self, prompt: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The low-rank factors ``{"q"|"k"|"v": (U [B, in, r], V [B, r, C])}`` for prompt embeddings ``[B, P]``."""
        flat = self.hyper(prompt)
        out, start = {}, 0
        for name, n_in in self._inputs.items():
            u = flat[:, start:start + n_in * self.rank].reshape(-1, n_in, self.rank)
            start += n_in * self.rank
            v = flat[:, start:start + self.rank * self.channels].reshape(-1, self.rank, self.channels)
            start += self.rank * self.channels
            out[name] = (u, v)
        return out

    def projection_matrices(self, prompt: torch.Tensor) -> dict[str, torch.Tensor]:
        """The effective projections ``W(p) = W_0 + U(p) V(p)`` as ``{"q"|"k"|"v": [B, in, C]}`` (for inspection)."""
        gen = self.generated(prompt)
        base = {"q": self.q, "k": self.k, "v": self.v}
        return {name: base[name].weight.t()[None] + u @ v for name, (u, v) in gen.items()}

    @staticmethod
    def prompt_embedding(tokens: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Mean of the present tokens: ``[B, T, P], [B, T] -> [B, P]`` (the hypernetwork's input)."""
        m = present[..., None].to(tokens.dtype)
        return (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, present: torch.Tensor,
                fractions: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        n = math.prod(spatial)
        gen = self.generated(self.prompt_embedding(tokens, present))
        xt = self.norm(x.flatten(2).transpose(1, 2))  # [B, n, C]

        def project(name: str, inp: torch.Tensor, base: nn.Linear) -> torch.Tensor:
            u, v = gen[name]
            return base(inp) + (inp @ u.to(inp.dtype)) @ v.to(inp.dtype)

        tokens = tokens.to(xt.dtype)
        q, k, v = project("q", xt, self.q), project("k", tokens, self.k), project("v", tokens, self.v)
        dh = c // self.heads
        q = q.view(b, n, self.heads, dh).transpose(1, 2)
        k = k.view(b, -1, self.heads, dh).transpose(1, 2)
        v = v.view(b, -1, self.heads, dh).transpose(1, 2)
        share = torch.cat([fractions.new_zeros(b, 1, n), fractions.flatten(2)], dim=1).transpose(1, 2)  # [B, n, T]
        bias = self.anatomy_bias.view(1, -1, 1, 1) * share[:, None]
        bias = bias.masked_fill(~present[:, None, None, :], float("-inf")).to(q.dtype)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = self.out(attn.transpose(1, 2).reshape(b, n, c))
        return x + out.transpose(1, 2).reshape(b, c, *spatial).to(x.dtype)


class AnatomyNet(UnipetModel):
    """Anatomy-guided PET/CT segmentation network (see the module docstring).

    Args:
        in_channels: must be 2 (CT and PET, in the order of ``modalities``).
        num_classes: output classes (softmax).
        strides: ``len(widths) - 1`` per-stage strides.
        widths, depths: channels and residual blocks of every encoder stage (the decoder mirrors them).
        modalities: the input channel order, ``("CT", "PET")`` like unipet's caches by default.
        organ_classes: organ label values the organ map may hold (``0 .. organ_classes - 1``).
        prompt_dim: width of the prompt tokens; mamba_layers / mamba_state: the prompt encoder's depth and SSM
            state size.
        fusion_levels: deepest levels that get hypernet cross-attention (1 = bottleneck only).
        heads, hyper_rank, hyper_hidden: cross-attention heads, rank and hidden width of the hypernetwork.
        anatomy: False builds the network without organ prompts (the ablation).
    """

    output_activation = "softmax"

    def __init__(self, in_channels: int, num_classes: int, strides: Sequence[Sequence[int]],
                 widths: Sequence[int] = DEFAULT_WIDTHS, depths: Sequence[int] = DEFAULT_DEPTHS,
                 modalities: Sequence[str] = ("CT", "PET"), organ_classes: int = ORGAN_CLASSES,
                 prompt_dim: int = 128, mamba_layers: int = 2, mamba_state: int = 16, fusion_levels: int = 2,
                 heads: int = 8, hyper_rank: int = 4, hyper_hidden: int = 256, anatomy: bool = True) -> None:
        super().__init__()
        mods = [m.upper() for m in modalities]
        if in_channels != 2 or sorted(mods) != ["CT", "PET"]:
            raise ConfigError(f"the anatomy model reads one CT and one PET channel; got {in_channels} input channels "
                              f"named {list(modalities)} (train it on a cache with channels CT and PET)")
        self.widths, self.depths = [int(w) for w in widths], [int(d) for d in depths]
        self.strides = [as_tuple3(s) for s in strides]
        self.ct_index, self.pet_index = mods.index("CT"), mods.index("PET")
        n = len(self.widths)
        if not 1 <= fusion_levels <= n:
            raise ConfigError(f"fusion_levels must be between 1 and {n} (the number of stages), got {fusion_levels}")
        self.ct_encoder = ModalityEncoder(self.widths, self.depths, self.strides)
        self.pet_encoder = ModalityEncoder(self.widths, self.depths, self.strides)
        self.fuse = nn.ModuleList([conv_norm_act(2 * w, w, kernel_size=1) for w in self.widths])
        self.anatomy = bool(anatomy)
        self.organ_classes = int(organ_classes)
        self.fused_levels = list(range(n - 1, n - 1 - int(fusion_levels), -1))  # deepest first
        if self.anatomy:
            self.prompt_encoder = OrganPromptEncoder(self.organ_classes, self.widths[-1], prompt_dim, mamba_layers,
                                                     mamba_state)
            self.cross_attention = nn.ModuleList([
                HyperCrossAttention(self.widths[lv], prompt_dim, math.gcd(int(heads), self.widths[lv]), hyper_rank,
                                    hyper_hidden) for lv in self.fused_levels])
        self.requires = ("organs",) if self.anatomy else ()
        self.accepts = ("organs",) if self.anatomy else ()
        levels = range(n - 2, -1, -1)
        w = self.widths
        self.upsample_layers = nn.ModuleList([UpsampleNearest(w[lv + 1], w[lv], self.strides[lv]) for lv in levels])
        self.decoder_stages = nn.ModuleList([res_stage(2 * w[lv], w[lv], self.depths[lv]) for lv in levels])
        self.seg_outputs = nn.ModuleList([nn.Conv3d(w[lv], num_classes, 1) for lv in levels])

    def trainable_scopes(self) -> tuple[str, ...]:
        """``all``, or ``decoder``: everything but the two (pre-trained) encoders."""
        return ("all", "decoder")

    def scope_parameters(self, scope: str) -> set[str]:
        if scope == "decoder":
            return {name for name, _ in self.named_parameters() if not name.startswith(ENCODER_PREFIXES)}
        return super().scope_parameters(scope)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Fused features of every level ``[B, widths[i], ...]``, full resolution first."""
        f_ct = self.ct_encoder(x[:, self.ct_index:self.ct_index + 1])
        f_pet = self.pet_encoder(x[:, self.pet_index:self.pet_index + 1])
        return [fuse(torch.cat([a, b], dim=1)) for fuse, a, b in zip(self.fuse, f_ct, f_pet)]

    def level_fractions(self, organs: torch.Tensor) -> dict[int, torch.Tensor]:
        """Organ fractions ``[B, K, ...]`` on the grid of every fused level (finest counted, coarser pooled)."""
        finest = min(self.fused_levels)
        fr = organ_fractions(organs, self.organ_classes, cumulative_stride(self.strides[:finest]))
        out = {finest: fr}
        for lv in range(finest + 1, len(self.widths)):
            stride = self.strides[lv - 1]
            fr = F.avg_pool3d(fr, kernel_size=stride, stride=stride)
            out[lv] = fr
        return out

    def forward(self, x: torch.Tensor, task=None, text=None, organs=None):
        self.check_inputs(x, task, text, organs)
        if x.shape[1] != 2:
            raise ImageGeometryError(f"the anatomy model reads 2 channels (CT, PET), got {x.shape[1]}")
        check_divisible(x.shape[2:], self.strides, type(self).__name__)
        feats = self.encode(x)
        if self.anatomy:
            if tuple(organs.shape) != (x.shape[0], *x.shape[2:]):
                raise ImageGeometryError(f"organ map of shape {tuple(organs.shape)} does not match the image "
                                         f"{(x.shape[0], *x.shape[2:])}; give one organ label map per sample")
            fracs = self.level_fractions(organs)
            bottom = len(self.widths) - 1
            tokens, present = self.prompt_encoder(fracs[min(self.fused_levels)], fracs[bottom], feats[bottom])
            for attention, lv in zip(self.cross_attention, self.fused_levels):
                feats[lv] = attention(feats[lv], tokens, present, fracs[lv].to(feats[lv].dtype))
        y = feats[-1]
        outs = []
        for u, (up, stage) in enumerate(zip(self.upsample_layers, self.decoder_stages)):
            y = stage(torch.cat([up(y), feats[-(u + 2)]], dim=1))
            outs.append(y)
        if not (self.deep_supervision and self.training):
            return self.seg_outputs[-1](outs[-1])
        return [head(f) for head, f in zip(reversed(self.seg_outputs), reversed(outs))]


@register("anatomy", prompts=("organs",), family="anatomy",
          description="Anatomy-guided prompting: PET & CT encoders, Mamba organ-prompt encoder, hypernet cross-attention")
def build(in_channels: int, num_classes: int, tasks, patch_size, widths: Sequence[int] = DEFAULT_WIDTHS,
          depths: Sequence[int] = DEFAULT_DEPTHS, strides: Sequence[Sequence[int]] | None = None,
          modalities: Sequence[str] = ("CT", "PET"), organ_classes: int = ORGAN_CLASSES,
          prompt_dim: int = 128, mamba_layers: int = 2, mamba_state: int = 16, fusion_levels: int = 2,
          heads: int = 8, hyper_rank: int = 4, hyper_hidden: int = 256, anatomy: bool = True) -> AnatomyNet:
    """Anatomy-guided model; strides default to nnU-Net's plan for the patch (``plan_strides``)."""
    from unipet.models.stunet import plan_strides

    del tasks  # the organ map is the prompt; the model is not task-prompted
    if strides is None:
        strides = plan_strides(patch_size, max_stages=len(widths))
    return AnatomyNet(in_channels, num_classes, strides, widths=widths, depths=depths, modalities=modalities,
                      organ_classes=organ_classes, prompt_dim=prompt_dim, mamba_layers=mamba_layers,
                      mamba_state=mamba_state, fusion_levels=fusion_levels, heads=heads, hyper_rank=hyper_rank,
                      hyper_hidden=hyper_hidden, anatomy=anatomy)
