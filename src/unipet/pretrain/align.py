"""Cross-modal alignment in a shared latent space: PET and CT embeddings of the same location are pulled
together, those of other locations pushed apart.

Choices (the seed gives only "self-aligning cross-modal pre-training"):

- Each encoder's bottleneck feature ``[B, C, d, h, w]`` goes through its own projection head (two 1x1x1
  convolutions with a GELU, i.e. a per-location MLP, as SimCLR / CLIP heads) to ``E`` dimensions and is
  L2-normalised: one embedding per bottleneck location and modality.
- The loss is the symmetric InfoNCE of CLIP over the locations of the batch: for location ``i`` the PET
  embedding's positive is the CT embedding of the same location, every other location of the batch (same or
  other study) is a negative; temperature 0.1 (fixed).
- Only **body** locations count (``body_locations``: at least half of the cell's voxels above the air / zero-uptake
  value in some channel): air cells look identical everywhere and would be unresolvable negatives.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """Per-location MLP into the shared space: ``[B, C, d, h, w] -> [B, E, d, h, w]``, unit norm over E."""

    def __init__(self, in_channels: int, dim: int = 128) -> None:
        super().__init__()
        self.fc1 = nn.Conv3d(in_channels, in_channels, 1)
        self.fc2 = nn.Conv3d(in_channels, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc2(F.gelu(self.fc1(x))).float(), dim=1)


def body_locations(x: torch.Tensor, cell: Sequence[int], pad: torch.Tensor | None = None,
                   min_share: float = 0.5) -> torch.Tensor:
    """Which cells of the input are body: ``BoolTensor [B, d*h*w]`` (flattened like ``feature.flatten(2)``).

    Args:
        x: ``[B, C, D, H, W]`` normalised input.
        cell: ``(cz, cy, cx)`` voxels per location (the encoder's total stride).
        pad: ``[C]`` each channel's air / zero-uptake value (``unipet.data.sampling.channel_pad_values``); None
            counts every location as body.
        min_share: share of voxels above ``pad`` (in any channel) that makes a cell body.

    Returns every location when the batch has no body cell at all (so the loss stays defined).
    """
    b = x.shape[0]
    n = 1
    for s, c in zip(x.shape[2:], cell):
        n *= int(s) // int(c)
    if pad is None:
        return torch.ones(b, n, dtype=torch.bool, device=x.device)
    above = (x > pad.to(x.device, x.dtype).view(1, -1, 1, 1, 1) + 1e-3).any(dim=1, keepdim=True).float()
    kernel = tuple(int(c) for c in cell)
    body = (F.avg_pool3d(above, kernel_size=kernel, stride=kernel) >= min_share).flatten(1)
    return body if bool(body.any()) else torch.ones_like(body)


def alignment_loss(za: torch.Tensor, zb: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE between matched rows of ``za [N, E]`` and ``zb [N, E]`` (unit-norm embeddings).

    ``(CE(za zb^T / t, diag) + CE(zb za^T / t, diag)) / 2``; ``log N`` for unrelated embeddings, -> 0 when each row
    is far more similar to its partner than to any other row. 0 for N = 0.
    """
    if za.shape[0] == 0:
        return za.new_zeros(()) + 0.0 * zb.sum()
    logits = za.float() @ zb.float().t() / float(temperature)
    target = torch.arange(za.shape[0], device=za.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


@torch.no_grad()
def alignment_metrics(za: torch.Tensor, zb: torch.Tensor) -> dict[str, float]:
    """How well matched rows of ``za [N, E]`` and ``zb [N, E]`` (unit norm) are aligned.

    Returns:
        ``positive_cosine`` (mean cosine of matched pairs), ``negative_cosine`` (mean over unmatched pairs),
        ``gap`` (their difference) and ``top1`` (share of rows whose most similar row of the other modality is
        their partner, averaged over both directions; chance is 1/N).
    """
    n = za.shape[0]
    sim = za.float() @ zb.float().t()
    pos = sim.diagonal()
    neg = (sim.sum() - pos.sum()) / max(n * n - n, 1)
    idx = torch.arange(n, device=sim.device)
    top1 = 0.5 * ((sim.argmax(1) == idx).float().mean() + (sim.argmax(0) == idx).float().mean())
    return {"positive_cosine": float(pos.mean()), "negative_cosine": float(neg), "gap": float(pos.mean() - neg),
            "top1": float(top1)}
