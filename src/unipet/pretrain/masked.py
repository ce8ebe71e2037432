"""Masked 3-D patch reconstruction of PET and CT with modality-specific encoders (the seed's self-supervised
pre-training; its abstract only, so the choices are ours and stated here).

- **Masking**: the input patch is divided into cells of the encoder's total stride (16^3 voxels for the default
  isotropic plan), so that one bottleneck location is one masked cell. A fraction ``mask_ratio`` (0.6) of the
  cells, drawn independently for PET and CT and per sample, is replaced by a learned mask value per modality
  (SimMIM's dense-convolution scheme: a CNN keeps its dense convolutions, the masked input carries a token).
  Independent masks mean a location hidden in one modality is often visible in the other, which is what the
  cross-modal alignment can exploit.
- **Encoders**: ``ct_encoder`` and ``pet_encoder`` are ``unipet.models.anatomy.ModalityEncoder`` under the names
  the segmentation model uses, so their tensors load into ``anatomy`` by name (``unipet train --init``).
- **Reconstruction**: a light U-shaped decoder per modality (``ReconstructionDecoder``, SparK-style: all
  encoder scales, ``decoder_width`` channels everywhere) predicts the normalised intensities of every voxel; the
  loss is the mean squared error over **masked voxels only** (``masked_mse``), as MAE / SimMIM.
- **Alignment** (``unipet.pretrain.align``): bottleneck features of both encoders are projected into a shared
  latent space and aligned location by location with a symmetric InfoNCE over body locations.

The total loss is ``mse_ct + mse_pet + align_weight * infonce``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from unipet.errors import ConfigError
from unipet.models.anatomy import ModalityEncoder
from unipet.models.base import as_tuple3
from unipet.models.blocks import UpsampleNearest, cumulative_stride, res_stage
from unipet.pretrain.align import ProjectionHead, alignment_loss, alignment_metrics, body_locations


def random_cell_mask(batch: int, cells: Sequence[int], ratio: float, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Random mask of exactly ``round(ratio * n_cells)`` cells per sample.

    Args:
        batch: B.
        cells: ``(d, h, w)`` cells per axis.
        ratio: fraction of cells masked, in ``[0, 1)``.
        generator: source of randomness (CPU generator; the result is moved to ``device``).

    Returns:
        ``BoolTensor [B, d, h, w]`` (True = masked).
    """
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"mask ratio must be in [0, 1), got {ratio}")
    n = math.prod(int(c) for c in cells)
    k = int(round(ratio * n))
    order = torch.rand(batch, n, generator=generator).argsort(dim=1)
    mask = torch.zeros(batch, n, dtype=torch.bool)
    mask.scatter_(1, order[:, :k], True)
    return mask.view(batch, *[int(c) for c in cells]).to(device)


def expand_mask(mask: torch.Tensor, cell: Sequence[int]) -> torch.Tensor:
    """Cell mask ``[B, d, h, w]`` -> voxel mask ``[B, 1, d*cz, h*cy, w*cx]``."""
    cz, cy, cx = (int(c) for c in cell)
    return mask.repeat_interleave(cz, 1).repeat_interleave(cy, 2).repeat_interleave(cx, 3)[:, None]


def apply_mask(x: torch.Tensor, voxel_mask: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """``x [B, 1, D, H, W]`` with the masked voxels replaced by the scalar ``token`` (differentiable in it)."""
    return torch.where(voxel_mask, token.to(x.dtype).view(1, 1, 1, 1, 1).expand_as(x), x)


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, voxel_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked voxels only (``[B, 1, D, H, W]`` each); 0 when nothing is masked."""
    m = voxel_mask.to(prediction.dtype)
    return ((prediction.float() - target.float()) ** 2 * m).sum() / m.sum().clamp_min(1.0)


class ReconstructionDecoder(nn.Module):
    """Light U-shaped decoder: encoder features (full resolution first) -> one channel ``[B, 1, D, H, W]``.

    Each encoder level is mapped to ``width`` channels by a 1x1x1 convolution; from the bottleneck up, the
    feature is upsampled (nearest + 1x1x1 conv), added to the level's mapped skip and refined by one residual
    block; a 1x1x1 convolution gives the intensity.
    """

    def __init__(self, widths: Sequence[int], strides: Sequence[Sequence[int]], width: int = 32) -> None:
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv3d(int(w), width, 1) for w in widths])
        self.up = nn.ModuleList([UpsampleNearest(width, width, as_tuple3(s)) for s in strides])
        self.blocks = nn.ModuleList([res_stage(width, width, 1) for _ in strides])
        self.head = nn.Conv3d(width, 1, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        y = self.lateral[-1](feats[-1])
        for lv in range(len(feats) - 2, -1, -1):
            y = self.blocks[lv](self.up[lv](y) + self.lateral[lv](feats[lv]))
        return self.head(y)


class CrossModalPretrainer(nn.Module):
    """Masked reconstruction + cross-modal alignment (see the module docstring).

    Args:
        widths, depths, strides: of the encoders (the ``anatomy`` model's arguments; its defaults are
            ``unipet.models.anatomy.DEFAULT_WIDTHS`` / ``DEFAULT_DEPTHS``).
        modalities: input channel order (``("CT", "PET")`` for unipet's caches).
        mask_ratio: fraction of cells masked per modality.
        decoder_width: channels of the reconstruction decoders.
        proj_dim: shared latent width; temperature: of the InfoNCE; align_weight: its weight in the loss.

    ``forward(x [B, 2, D, H, W], generator, pad [2]) -> dict`` with ``loss`` (scalar), ``mse_ct``, ``mse_pet``,
    ``align`` (loss terms), ``align_top1`` (retrieval accuracy of the batch), the reconstructions
    ``recon [B, 2, D, H, W]`` and the voxel masks ``mask BoolTensor [B, 2, D, H, W]`` (channel order of ``x``).
    """

    def __init__(self, widths: Sequence[int], depths: Sequence[int], strides: Sequence[Sequence[int]],
                 modalities: Sequence[str] = ("CT", "PET"), mask_ratio: float = 0.6, decoder_width: int = 32,
                 proj_dim: int = 128, temperature: float = 0.1, align_weight: float = 1.0,
                 max_locations: int = 4096) -> None:
        super().__init__()
        mods = [m.upper() for m in modalities]
        if sorted(mods) != ["CT", "PET"]:
            raise ConfigError(f"cross-modal pre-training needs one CT and one PET channel, got {list(modalities)}; "
                              "pre-train on a cache with channels CT and PET")
        self.modalities = mods
        self.strides = [as_tuple3(s) for s in strides]
        self.cell = cumulative_stride(self.strides)
        self.mask_ratio, self.temperature, self.align_weight = float(mask_ratio), float(temperature), float(align_weight)
        self.max_locations = int(max_locations)
        self.ct_encoder = ModalityEncoder(widths, depths, self.strides)
        self.pet_encoder = ModalityEncoder(widths, depths, self.strides)
        self.ct_decoder = ReconstructionDecoder(widths, self.strides, decoder_width)
        self.pet_decoder = ReconstructionDecoder(widths, self.strides, decoder_width)
        self.ct_mask_token = nn.Parameter(torch.zeros(()))
        self.pet_mask_token = nn.Parameter(torch.zeros(()))
        self.ct_projection = ProjectionHead(int(widths[-1]), proj_dim)
        self.pet_projection = ProjectionHead(int(widths[-1]), proj_dim)

    def _parts(self, name: str) -> tuple[ModalityEncoder, ReconstructionDecoder, nn.Parameter, ProjectionHead]:
        return (getattr(self, f"{name}_encoder"), getattr(self, f"{name}_decoder"), getattr(self, f"{name}_mask_token"),
                getattr(self, f"{name}_projection"))

    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unmasked shared-space embeddings ``{"ct"|"pet": [B, E, d, h, w]}`` (L2-normalised over E)."""
        out = {}
        for name in ("ct", "pet"):
            encoder, _, _, projection = self._parts(name)
            c = self.modalities.index(name.upper())
            out[name] = projection(encoder(x[:, c:c + 1])[-1])
        return out

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None,
                pad: torch.Tensor | None = None) -> dict[str, Any]:
        b = x.shape[0]
        cells = [int(s) // c for s, c in zip(x.shape[2:], self.cell)]
        if any(int(s) % c for s, c in zip(x.shape[2:], self.cell)):
            raise ConfigError(f"pre-training patch {tuple(x.shape[2:])} is not divisible by the encoder stride "
                              f"{self.cell}; choose a patch of multiples of it")
        out: dict[str, Any] = {}
        recon, masks, z = [None, None], [None, None], {}
        loss = x.new_zeros(())
        for name in ("ct", "pet"):
            encoder, decoder, token, projection = self._parts(name)
            c = self.modalities.index(name.upper())
            target = x[:, c:c + 1]
            vmask = expand_mask(random_cell_mask(b, cells, self.mask_ratio, generator, x.device), self.cell)
            feats = encoder(apply_mask(target, vmask, token))
            pred = decoder(feats)
            mse = masked_mse(pred, target, vmask)
            out[f"mse_{name}"] = mse
            loss = loss + mse
            recon[c], masks[c] = pred, vmask
            z[name] = projection(feats[-1])
        body = body_locations(x, self.cell, pad)
        za = z["pet"].flatten(2).transpose(1, 2)[body]  # [N, E] body locations only
        zb = z["ct"].flatten(2).transpose(1, 2)[body]
        if za.shape[0] > self.max_locations:  # bound the N x N similarity matrix
            keep = torch.randperm(za.shape[0], generator=generator)[: self.max_locations].to(za.device)
            za, zb = za[keep], zb[keep]
        align = alignment_loss(za, zb, self.temperature)
        out["align"] = align
        out["align_top1"] = alignment_metrics(za.detach(), zb.detach())["top1"] if za.shape[0] else float("nan")
        out["loss"] = loss + self.align_weight * align
        out["recon"] = torch.cat(recon, dim=1)
        out["mask"] = torch.cat(masks, dim=1)
        return out
