"""Preprocessing of one Study for training and prediction: reorient, crop to the body, resample, normalise.

The same ``preprocess_study`` runs when the cache is built and when a checkpoint predicts, driven by the
``PreprocessConfig`` recorded in the cache and in the checkpoint, so prediction repeats training exactly.
``restore_to_study_grid`` undoes crop, resampling and reorientation for a predicted mask, so the mask lands on
the input's exact grid (shape and affine).

Orientation: every study is first brought to the config's ``orientation`` (axis codes of the stored
``(x, y, z)`` index, ``"RAS"`` by default: x → Right, y → Anterior, z → Superior, i.e. the ``(z, y, x)`` arrays
run inferior→superior, posterior→anterior, left→right), by axis permutations and flips only — no
interpolation, so the voxels are the same. Caches and checkpoints that do not record an orientation were
built from RAS data (the phantoms are RAS) and are read as ``"RAS"``. A header whose axes are *oblique*
(rotated away from the patient axes) is reoriented to its nearest axes, not resampled: the network sees the
volume tilted by that angle; ``preprocess_study`` logs a warning naming the angle when it exceeds
``OBLIQUE_WARN_DEG``, and the mask still comes back on the exact input grid.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from unipet.data.normalize import apply_normalisation
from unipet.errors import ConfigError
from unipet.study import Study, index_to_world_zyx, nifti_to_zyx, resample_to_grid, zyx_to_nifti

log = logging.getLogger("unipet")

#: orientation of checkpoints and caches that do not record one (what the phantoms and caches were built in)
DEFAULT_ORIENTATION = "RAS"
#: obliquity (degrees between an image axis and its nearest patient axis) above which a warning is logged
OBLIQUE_WARN_DEG = 1.0

_REVERSE = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)

#: HU above which a CT voxel belongs to the body (air is −1000, lung parenchyma about −850 but enclosed).
BODY_HU = -500.0
#: SUV above which a PET voxel counts as body when there is no CT.
BODY_SUV = 0.05


@dataclass
class PreprocessConfig:
    """What preprocessing does, recorded with the cache and every checkpoint.

    Attributes:
        channels: channel order of the network input (``("CT", "PET")`` by default).
        normalisation: ``{modality: spec}`` (see ``unipet.data.normalize``).
        target_spacing: ``(z, y, x)`` mm to resample to, or None to keep the native grid.
        crop_to_body: crop to the body's bounding box (plus ``crop_margin`` voxels) before resampling.
        orientation: three axis codes (``"RAS"``, ``"LPS"``, ...) every study is reoriented to first (see the
            module docstring); ``"RAS"`` when a recorded config has none.
    """

    channels: tuple[str, ...] = ("CT", "PET")
    normalisation: dict[str, dict[str, Any]] = field(default_factory=dict)
    target_spacing: tuple[float, float, float] | None = None
    crop_to_body: bool = True
    crop_margin: int = 2
    orientation: str = DEFAULT_ORIENTATION

    def __post_init__(self) -> None:
        self.orientation = check_axcodes(self.orientation)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["target_spacing"] = list(self.target_spacing) if self.target_spacing else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessConfig":
        return cls(channels=tuple(d.get("channels", ("CT", "PET"))), normalisation=dict(d.get("normalisation", {})),
                   target_spacing=tuple(d["target_spacing"]) if d.get("target_spacing") else None,
                   crop_to_body=bool(d.get("crop_to_body", True)), crop_margin=int(d.get("crop_margin", 2)),
                   orientation=d.get("orientation") or DEFAULT_ORIENTATION)


def check_axcodes(codes: Any) -> str:
    """``codes`` as three upper-case axis codes, one of R/L, A/P, S/I each (e.g. ``"RAS"``, ``"LPS"``).

    Raises:
        ConfigError: anything else.
    """
    text = str(codes).strip().upper()
    if len(text) != 3 or sorted("".join({"L": "R", "P": "A", "I": "S"}.get(c, c) for c in text)) != ["A", "R", "S"]:
        raise ConfigError(f"orientation {codes!r} is not three axis codes with one of R/L, A/P and S/I each "
                          "(e.g. RAS or LPS)")
    return text


def axcodes(affine: np.ndarray) -> str:
    """Axis codes (nearest patient axes) of the stored ``(x, y, z)`` index of a NIfTI affine, e.g. ``"LPS"``."""
    import nibabel.orientations as nio

    return "".join(nio.aff2axcodes(np.asarray(affine, dtype=np.float64)))


def obliquity_deg(affine: np.ndarray) -> float:
    """Largest angle (degrees) between an image axis of ``affine`` and its nearest patient axis (0 = not oblique)."""
    cols = np.asarray(affine, dtype=np.float64)[:3, :3]
    norms = np.linalg.norm(cols, axis=0)
    if np.any(norms == 0):
        return 0.0
    cosines = np.abs(cols / norms).max(axis=0).clip(-1.0, 1.0)
    return float(np.degrees(np.arccos(cosines)).max())


def _ornt_transform(affine: np.ndarray, codes: str) -> np.ndarray | None:
    """nibabel orientation transform from ``affine``'s axes to ``codes``; None when they already agree."""
    import nibabel.orientations as nio

    start = nio.io_orientation(np.asarray(affine, dtype=np.float64))
    transform = nio.ornt_transform(start, nio.axcodes2ornt(tuple(codes)))
    identity = np.column_stack([np.arange(3), np.ones(3)])
    return None if np.array_equal(transform, identity) else transform


def reorient_volume(volume: np.ndarray, affine: np.ndarray, codes: str) -> tuple[np.ndarray, np.ndarray]:
    """A ``(z, y, x)`` volume and its affine brought to the axis codes ``codes`` by permutations and flips.

    Returns ``(volume, affine)`` (the inputs themselves when they are already in ``codes``). The voxel values are
    unchanged; only their storage order and the affine change, so the world position of every voxel is kept.
    """
    import nibabel.orientations as nio

    transform = _ornt_transform(affine, codes)
    if transform is None:
        return volume, np.asarray(affine, dtype=np.float64)
    out = np.ascontiguousarray(nifti_to_zyx(nio.apply_orientation(zyx_to_nifti(volume), transform)))
    return out, reoriented_affine(affine, volume.shape, codes)


def reorient_study(study: Study, codes: str) -> Study:
    """A shallow copy of ``study`` with every volume in the orientation ``codes`` (``study`` itself when it is
    already there). See ``reorient_volume``."""
    if _ornt_transform(study.affine, codes) is None:
        return study
    out = copy.copy(study)
    for name in ("pet", "ct", "label", "organs"):
        arr = getattr(study, name)
        if arr is not None:
            setattr(out, name, reorient_volume(arr, study.affine, codes)[0])
    out.affine = reoriented_affine(study.affine, study.shape, codes)
    return out


def reoriented_affine(affine: np.ndarray, shape_zyx: Sequence[int], codes: str) -> np.ndarray:
    """The affine a ``(z, y, x)`` grid of ``shape_zyx`` gets when reoriented to ``codes`` (see ``reorient_volume``)."""
    import nibabel.orientations as nio

    transform = _ornt_transform(affine, codes)
    affine = np.asarray(affine, dtype=np.float64)
    return affine if transform is None else affine @ nio.inv_ornt_aff(transform, tuple(shape_zyx)[::-1])


@dataclass
class Preprocessed:
    """A study ready for the network.

    Attributes:
        image: ``(C, z, y, x)`` float32 normalised channels.
        label: ``(z, y, x)`` uint8 or None; organs likewise (uint16).
        affine: NIfTI affine of the preprocessed grid.
        crop: ``((z0, z1), (y0, y1), (x0, x1))`` crop on the reoriented study grid (half-open).
        study_shape, study_affine: the study grid after reorientation (before crop and resampling).
        input_shape, input_affine: the study's own grid as given, to put predictions back exactly;
            None when the study was already in the config's orientation (then equal to ``study_*``).
    """

    image: np.ndarray
    label: np.ndarray | None
    organs: np.ndarray | None
    affine: np.ndarray
    crop: tuple[tuple[int, int], ...]
    study_shape: tuple[int, int, int]
    study_affine: np.ndarray
    input_shape: tuple[int, int, int] | None = None
    input_affine: np.ndarray | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        from unipet.study import spacing_from_affine

        return spacing_from_affine(self.affine)


def body_bbox(study: Study, margin: int = 2) -> tuple[tuple[int, int], ...]:
    """Bounding box ``((z0, z1), (y0, y1), (x0, x1))`` of the body (CT > −500 HU, else PET > 0.05 SUV).

    Axis projections with a small count threshold ignore isolated noise voxels and the scanner table's edge.
    """
    body = study.ct > BODY_HU if study.ct is not None else study.pet > BODY_SUV
    if not body.any():
        return tuple((0, n) for n in study.shape)
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        counts = body.sum(axis=other)
        keep = np.flatnonzero(counts > max(1, 0.002 * counts.max()))
        lo, hi = int(keep[0]), int(keep[-1]) + 1
        box.append((max(0, lo - margin), min(study.shape[axis], hi + margin)))
    return tuple(box)


def resampled_grid(shape: Sequence[int], affine: np.ndarray, spacing: Sequence[float]) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the grid covering the same field of view at ``spacing`` (z, y, x mm)."""
    from unipet.study import spacing_from_affine

    old = np.array(spacing_from_affine(affine))
    new = np.asarray(spacing, dtype=np.float64)
    factor = new / old
    new_shape = tuple(int(max(1, round(n / f))) for n, f in zip(shape, factor))
    scale = np.eye(4)
    scale[:3, :3] = np.diag(factor)
    scale[:3, 3] = 0.5 * factor - 0.5  # voxel centres: the field of view's edges stay where they were
    new_affine = index_to_world_zyx(affine) @ scale @ _REVERSE
    return new_shape, new_affine


def target_grid(shape: Sequence[int], affine: np.ndarray, box: Sequence[tuple[int, int]],
                spacing: Sequence[float], margin: int = 0
                ) -> tuple[tuple[int, int, int], np.ndarray, tuple[tuple[int, int], ...]]:
    """The grid at ``spacing`` covering ``box`` (half-open voxel ranges of the grid ``shape, affine``).

    The grid at ``spacing`` is laid over the **whole** field of view (``resampled_grid``), cut to the voxels
    covering ``box`` plus ``margin`` voxels *of the new grid*, so the grid a study is resampled to does not
    depend on its voxel size: a study stored at an integer fraction of the target spacing lands exactly on the
    grid of its coarse original, with the same crop.

    Returns:
        ``(shape, affine)`` of the new grid's crop and the crop ``((z0, z1), ...)`` on the input grid whose
        voxels it covers (for putting results back).
    """
    from unipet.study import spacing_from_affine

    full_shape, full_affine = resampled_grid(shape, affine, spacing)
    factor = np.asarray(spacing, dtype=np.float64) / np.asarray(spacing_from_affine(affine))
    lo = [min(n - 1, max(0, int(np.floor(a / f + 1e-6)) - margin)) for (a, _), f, n in zip(box, factor, full_shape)]
    hi = [min(n, max(low + 1, int(np.ceil(b / f - 1e-6)) + margin))
          for (_, b), f, n, low in zip(box, factor, full_shape, lo)]
    crop = tuple((max(0, int(np.floor(low * f + 1e-6))), min(n, int(np.ceil(h * f - 1e-6))))
                 for low, h, f, n in zip(lo, hi, factor, shape))
    return tuple(h - low for low, h in zip(lo, hi)), crop_affine(full_affine, lo), crop  # type: ignore[return-value]


def crop_affine(affine: np.ndarray, start_zyx: Sequence[int]) -> np.ndarray:
    """Affine of a sub-volume starting at voxel ``start_zyx``."""
    shift = np.eye(4)
    shift[:3, 3] = np.asarray(start_zyx, dtype=np.float64)
    return index_to_world_zyx(affine) @ shift @ _REVERSE


def preprocess_study(study: Study, config: PreprocessConfig, with_label: bool = True) -> Preprocessed:
    """Reorient, crop, resample and normalise a study into network input (see ``Preprocessed``)."""
    for ch in config.channels:
        if ch not in config.normalisation:
            raise ConfigError(f"preprocessing config has no normalisation for channel {ch}; give one per channel")
    tilt = obliquity_deg(study.affine)
    if tilt > OBLIQUE_WARN_DEG:
        log.warning("study %s has an oblique header (image axes up to %.1f degrees off the patient axes); it is "
                    "reoriented to the nearest %s axes without resampling, so the network sees it tilted by that "
                    "angle; the mask is written on the input grid", study.study_id, tilt, config.orientation)
    given = study
    study = reorient_study(study, config.orientation)
    reoriented = study is not given
    crop = tuple((0, n) for n in study.shape)
    grid = None
    if config.target_spacing is not None:
        body = body_bbox(study, 0) if config.crop_to_body else crop
        grid = target_grid(study.shape, study.affine, body, config.target_spacing,
                           config.crop_margin if config.crop_to_body else 0)
        crop = grid[2]
    elif config.crop_to_body:
        crop = body_bbox(study, config.crop_margin)
    sl = tuple(slice(a, b) for a, b in crop)
    affine = crop_affine(study.affine, [a for a, _ in crop])
    image = study.image(config.channels)[(slice(None), *sl)]
    label = study.label[sl] if (with_label and study.label is not None) else None
    organs = study.organs[sl] if study.organs is not None else None
    if grid is not None:
        shape, new_affine, _ = grid
        if shape != tuple(image.shape[1:]) or not np.allclose(new_affine, affine, atol=1e-4):
            image = np.stack([resample_to_grid(c, affine, shape, new_affine, order=1,
                                               fill=float(c.min())) for c in image])
            label = None if label is None else resample_to_grid(label, affine, shape, new_affine, order=0)
            organs = None if organs is None else resample_to_grid(organs, affine, shape, new_affine, order=0)
            affine = new_affine
    image = np.stack([apply_normalisation(c, config.normalisation[ch]) for c, ch in zip(image, config.channels)])
    return Preprocessed(image=np.ascontiguousarray(image, dtype=np.float32),
                        label=None if label is None else np.ascontiguousarray(label, dtype=np.uint8),
                        organs=None if organs is None else np.ascontiguousarray(organs, dtype=np.uint16),
                        affine=affine, crop=crop, study_shape=study.shape, study_affine=study.affine,
                        input_shape=given.shape if reoriented else None,
                        input_affine=given.affine if reoriented else None)


def restore_to_study_grid(volume: np.ndarray, pre: Preprocessed, order: int = 0, fill: float = 0.0,
                          threshold: float | None = None) -> np.ndarray:
    """Put a volume on the preprocessed grid back onto the input study's grid (resample, un-crop, undo the
    reorientation): the result has the input's exact shape and lies on its affine.

    Use ``order=0`` for label maps and ``order=1`` for probabilities. ``threshold``: return the uint8 mask
    ``resampled > threshold`` instead, thresholded on the crop before it is placed into the study grid (the same
    mask as thresholding the restored volume when ``fill <= threshold``, without a float volume of the study's size).
    """
    crop_shape = tuple(b - a for a, b in pre.crop)
    crop_aff = crop_affine(pre.study_affine, [a for a, _ in pre.crop])
    if tuple(volume.shape) != crop_shape or not np.allclose(pre.affine, crop_aff, atol=1e-4):
        volume = resample_to_grid(volume, pre.affine, crop_shape, crop_aff, order=order, fill=fill)
    if threshold is not None:
        volume, fill = (volume > threshold).astype(np.uint8), int(fill > threshold)
    out = np.full(pre.study_shape, fill, dtype=volume.dtype)
    out[tuple(slice(a, b) for a, b in pre.crop)] = volume
    if pre.input_affine is not None:
        out, affine = reorient_volume(out, pre.study_affine, axcodes(pre.input_affine))
        if tuple(out.shape) != tuple(pre.input_shape) or not np.allclose(affine, pre.input_affine, atol=1e-4):
            raise AssertionError("reorientation did not return to the input grid")  # a bug, not a user error
    return out
