"""Batched data augmentation on the training device (GPU when training on one).

Choice: hand-written batched torch ops rather than MONAI's per-sample dictionary transforms, because these run
the whole batch at once on the device where the batch already is (one ``F.affine_grid``/``F.grid_sample`` for
rotation + scaling (+ elastic), tensor flips, element-wise intensity ops), instead of per-sample CPU work in
the loader processes. Labels are resampled with nearest interpolation. Every random number comes from the
``torch.Generator`` passed in, so a batch is augmented identically given the generator's state.

Defaults follow nnU-Net's ``default_3d`` probabilities: rotation ±30° (p 0.2 per axis set), scaling 0.7–1.4
(p 0.2), elastic off, brightness ×0.75–1.25 (p 0.15), contrast 0.75–1.25 (p 0.15), low resolution 0.5–1
(p 0.25), gamma 0.7–1.5 (p 0.3), Gaussian noise variance ≤ 0.1 (p 0.1), Gaussian blur σ 0.5–1 (p 0.2),
mirroring per axis (p 0.5); plus a PET-vs-CT misalignment of up to 2 voxels (p 0.2) for PET/CT registration
errors.

Two more, off by default (the CLIP-driven lineage's MONAI pipeline that MAST-Pro trains with): quarter-turn
rotations in one plane (``p_rot90``: ``k`` in 1..3 quarter turns of image and label in the ``rot90_plane``, like
MONAI's ``RandRotate90d(max_k=3)``; a non-square plane only takes the half turn, which keeps the patch's
shape) and an intensity shift (``p_shift``: one offset uniform in ``[-shift, shift]`` added to all channels of a
sample, like MONAI's ``RandShiftIntensityd(offsets=shift)``). Their random numbers are drawn only when their
probability is above 0, so the other augmentations draw exactly what they drew before these existed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from unipet.errors import ConfigError


@dataclass
class AugmentConfig:
    """Probabilities (``p_*``, per sample) and ranges of every augmentation; ``enabled=False`` turns all off."""

    enabled: bool = True
    p_rotate: float = 0.2
    rotate_deg: float = 30.0
    p_scale: float = 0.2
    scale: tuple[float, float] = (0.7, 1.4)
    p_elastic: float = 0.0
    elastic_magnitude: float = 0.05  # displacement as a fraction of the patch size
    p_flip: float = 0.5  # per axis
    flip_axes: tuple[int, ...] = (0, 1, 2)  # spatial axes (z, y, x) that may be mirrored
    p_brightness: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    p_noise: float = 0.1
    noise_variance: float = 0.1
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    p_lowres: float = 0.25
    lowres_zoom: tuple[float, float] = (0.5, 1.0)
    p_misalign: float = 0.2
    misalign_voxels: int = 2
    p_rot90: float = 0.0
    rot90_plane: tuple[int, int] = (1, 2)  # spatial axes (z, y, x) of the quarter-turn plane: (y, x) = axial
    p_shift: float = 0.0
    shift: float = 0.1  # offset range, in the normalised intensity units

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "AugmentConfig":
        d = dict(d or {})
        known = {f.name: f for f in fields(cls)}
        unknown = set(d) - set(known)
        if unknown:
            raise ConfigError(f"unknown augmentation settings {sorted(unknown)}; known: {', '.join(known)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=g.device)


def _coin(g: torch.Generator, n: int, p: float) -> torch.Tensor:
    return torch.rand(n, generator=g, device=g.device) < p


def _rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """``[B, 3]`` angles (radians) about the z, y, x axes -> ``[B, 3, 3]`` rotation matrices."""
    c, s = angles.cos(), angles.sin()
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])

    def mat(rows):
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    rz = mat([[one, zero, zero], [zero, c[:, 0], -s[:, 0]], [zero, s[:, 0], c[:, 0]]])
    ry = mat([[c[:, 1], zero, s[:, 1]], [zero, one, zero], [-s[:, 1], zero, c[:, 1]]])
    rx = mat([[c[:, 2], -s[:, 2], zero], [s[:, 2], c[:, 2], zero], [zero, zero, one]])
    return rz @ ry @ rx


def spatial_transform(image: torch.Tensor, label: torch.Tensor, matrix: torch.Tensor, pad: torch.Tensor,
                      displacement: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample ``image [B, C, D, H, W]`` (trilinear) and ``label [B, D, H, W]`` (nearest) through ``matrix``.

    Args:
        matrix: ``[B, 3, 3]`` map from output to input normalised coordinates, axes ordered ``(z, y, x)``.
        pad: ``[C]`` value of each channel outside the input.
        displacement: optional ``[B, D, H, W, 3]`` offset added to the sampling grid (normalised units, z y x).
    """
    # affine_grid / grid_sample order coordinates (x, y, z): permute the (z, y, x) matrix.
    perm = torch.tensor([2, 1, 0], device=matrix.device)
    theta = torch.zeros(matrix.shape[0], 3, 4, dtype=torch.float32, device=image.device)
    theta[:, :, :3] = matrix[:, perm][:, :, perm].to(image.device, torch.float32)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    if displacement is not None:
        grid = grid + displacement.flip(-1)
    pad_b = pad.to(image.device, image.dtype).view(1, -1, 1, 1, 1)
    # grid_sample fills with 0 outside: shift so that 0 is each channel's pad value.
    out = F.grid_sample(image - pad_b, grid.to(image.dtype), mode="bilinear", padding_mode="zeros",
                        align_corners=False) + pad_b
    lab = F.grid_sample(label[:, None].float(), grid.float(), mode="nearest", padding_mode="zeros",
                        align_corners=False)[:, 0].to(label.dtype)
    return out, lab


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``x [C, D, H, W]`` with ``sigma`` voxels (truncated at 3σ, reflect padding)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    y = x[:, None]  # [C, 1, D, H, W]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        mode = "reflect" if min(y.shape[2:]) > radius else "replicate"
        y = F.conv3d(F.pad(y, pad, mode=mode), k.view(shape))
    return y[:, 0]


def _shift(x: torch.Tensor, offset: Sequence[int], fill: float) -> torch.Tensor:
    """Shift ``x [D, H, W]`` by integer voxels ``offset`` (z, y, x), filling uncovered voxels with ``fill``."""
    out = torch.full_like(x, fill)
    src, dst = [], []
    for o, n in zip(offset, x.shape):
        o = int(o)
        src.append(slice(max(0, -o), n - max(0, o)))
        dst.append(slice(max(0, o), n - max(0, -o)))
    out[tuple(dst)] = x[tuple(src)]
    return out


def augment_batch(image: torch.Tensor, label: torch.Tensor, config: AugmentConfig, generator: torch.Generator,
                  pad: torch.Tensor, pet_channel: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch in place of its device.

    Args:
        image: ``[B, C, D, H, W]`` float normalised channels.
        label: ``[B, D, H, W]`` integer labels.
        config: what to apply.
        generator: source of all randomness (on ``image``'s device for GPU training, or CPU).
        pad: ``[C]`` each channel's value outside the volume (``sampling.channel_pad_values``).
        pet_channel: index of the PET channel for the PET-vs-CT misalignment (None: no misalignment).

    Returns:
        ``(image, label)`` of the same shapes and dtypes.
    """
    if not config.enabled:
        return image, label
    g = generator
    b = image.shape[0]
    dev = image.device
    pad = torch.as_tensor(pad, dtype=image.dtype, device=dev)

    # ---- spatial: rotation + scaling (+ elastic) in one resampling, only for the samples that need it
    rotate, scale, elastic = _coin(g, b, config.p_rotate), _coin(g, b, config.p_scale), _coin(g, b, config.p_elastic)
    angles = (_uniform(g, 3 * b, -1.0, 1.0).view(b, 3) * math.radians(config.rotate_deg)).to(dev)
    factors = _uniform(g, b, *config.scale).to(dev)
    matrix = torch.eye(3, device=dev).repeat(b, 1, 1)
    matrix = torch.where(rotate.to(dev)[:, None, None], _rotation_matrices(angles), matrix)
    # sampling coordinates divided by the zoom factor: factor > 1 enlarges the content
    matrix = matrix / torch.where(scale.to(dev), factors, torch.ones_like(factors))[:, None, None]
    coarse = torch.randn((b, 3, 4, 4, 4), generator=g, device=g.device).to(dev) * config.elastic_magnitude * 2
    moving = (rotate | scale | elastic).to(dev)
    if bool(moving.any()):
        idx = moving.nonzero(as_tuple=True)[0]
        disp = None
        if bool(elastic.any()):
            field = F.interpolate(coarse[idx] * elastic.to(dev)[idx, None, None, None, None].float(),
                                  size=image.shape[2:], mode="trilinear", align_corners=False)
            disp = field.permute(0, 2, 3, 4, 1)
        img_t, lab_t = spatial_transform(image[idx], label[idx], matrix[idx], pad, disp)
        image, label = image.clone(), label.clone()
        image[idx], label[idx] = img_t, lab_t

    # ---- intensity (all channels of a sample together, as nnU-Net)
    view = (b, 1, 1, 1, 1)
    mult = torch.where(_coin(g, b, config.p_brightness), _uniform(g, b, *config.brightness), torch.ones(b, device=g.device))
    image = image * mult.to(dev, image.dtype).view(view)
    contrast = torch.where(_coin(g, b, config.p_contrast), _uniform(g, b, *config.contrast), torch.ones(b, device=g.device))
    contrast = contrast.to(dev, image.dtype).view(view)
    mean = image.mean(dim=(2, 3, 4), keepdim=True)
    lo, hi = image.amin(dim=(2, 3, 4), keepdim=True), image.amax(dim=(2, 3, 4), keepdim=True)
    image = torch.where(contrast != 1, ((image - mean) * contrast + mean).clamp(lo, hi), image)
    gamma_on = _coin(g, b, config.p_gamma).to(dev)
    gammas = _uniform(g, b, *config.gamma).to(dev, image.dtype).view(view)
    if bool(gamma_on.any()):
        lo, hi = image.amin(dim=(2, 3, 4), keepdim=True), image.amax(dim=(2, 3, 4), keepdim=True)
        rng_ = (hi - lo).clamp_min(1e-7)
        gamma_img = ((image - lo) / rng_).clamp(0, 1).pow(gammas) * rng_ + lo
        image = torch.where(gamma_on.view(view), gamma_img, image)
    noise_on = _coin(g, b, config.p_noise).to(dev)
    sd = _uniform(g, b, 0.0, config.noise_variance).sqrt().to(dev, image.dtype)
    noise = torch.randn(image.shape, generator=g, device=g.device).to(dev, image.dtype)
    image = image + noise * (sd * noise_on).view(view)

    blur_on, sigmas = _coin(g, b, config.p_blur), _uniform(g, b, *config.blur_sigma)
    lowres_on, zooms = _coin(g, b, config.p_lowres), _uniform(g, b, *config.lowres_zoom)
    misalign_on = _coin(g, b, config.p_misalign)
    offsets = torch.randint(-config.misalign_voxels, config.misalign_voxels + 1, (b, 3), generator=g, device=g.device)
    flips = _coin(g, 3 * b, config.p_flip).view(b, 3)
    # ---- per-sample ops with a per-sample kernel / size (cheap loops over the few samples drawn)
    if bool((blur_on | lowres_on | misalign_on).any()):
        image = image.clone()
    for i in range(b):
        if blur_on[i]:
            image[i] = _gaussian_blur(image[i], float(sigmas[i]))
        if lowres_on[i]:
            size = [max(1, int(round(n * float(zooms[i])))) for n in image.shape[2:]]
            small = F.interpolate(image[i:i + 1], size=size, mode="nearest")
            image[i] = F.interpolate(small, size=image.shape[2:], mode="trilinear", align_corners=False)[0]
        if misalign_on[i] and pet_channel is not None and config.misalign_voxels > 0:
            image[i, pet_channel] = _shift(image[i, pet_channel], offsets[i].tolist(), float(pad[pet_channel]))

    # ---- quarter turns and intensity shift (drawn only when on: the streams above are unchanged otherwise)
    if config.p_rot90 > 0:
        a0, a1 = (int(a) for a in config.rot90_plane)
        if sorted((a0, a1)) not in ([0, 1], [0, 2], [1, 2]):
            raise ConfigError(f"rot90_plane {config.rot90_plane} must name two different spatial axes of 0, 1, 2")
        turn = _coin(g, b, config.p_rot90)
        square = image.shape[2 + a0] == image.shape[2 + a1]
        ks = (torch.randint(1, 4, (b,), generator=g, device=g.device) if square
              else torch.full((b,), 2, dtype=torch.long, device=g.device))
        if bool(turn.any()):
            image, label = image.clone(), label.clone()
            for i in turn.nonzero(as_tuple=True)[0].tolist():
                k = int(ks[i])
                image[i] = torch.rot90(image[i], k, (1 + a0, 1 + a1))
                label[i] = torch.rot90(label[i], k, (a0, a1))
    if config.p_shift > 0:
        shift_on = _coin(g, b, config.p_shift)
        offsets_i = _uniform(g, b, -config.shift, config.shift) * shift_on
        image = image + offsets_i.to(dev, image.dtype).view(view)

    # ---- mirroring per sample and axis
    for axis in config.flip_axes:
        sel = flips[:, axis].to(dev)
        if bool(sel.any()):
            image = torch.where(sel.view(view), image.flip(2 + axis), image)
            label = torch.where(sel.view(b, 1, 1, 1), label.flip(1 + axis), label)
    return image.contiguous(), label.contiguous()
