"""The Study: one PET/CT examination on one grid, and the geometry helpers every stage shares.

Array convention: volumes are NumPy arrays indexed ``(z, y, x)``. The ``affine`` is the 4×4 NIfTI
(RAS+, millimetre) affine of the same data stored the nibabel way, i.e. it maps the *reversed* index
``(x, y, z) = (k, j, i)`` to patient coordinates. ``nifti_to_zyx`` / ``zyx_to_nifti`` convert at the edges;
``index_to_world_zyx`` gives the affine for ``(z, y, x)`` indices directly.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from unipet.errors import ImageGeometryError, IntensityError, LabelError

# Axis permutation that turns a (z, y, x) index into a (x, y, z) index (and back: it is its own inverse).
_REVERSE = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def nifti_to_zyx(data: np.ndarray) -> np.ndarray:
    """Turn a nibabel-ordered ``(x, y, z)`` array into unipet's ``(z, y, x)`` (a view, no copy)."""
    return np.transpose(data, (2, 1, 0))


def zyx_to_nifti(data: np.ndarray) -> np.ndarray:
    """Turn a ``(z, y, x)`` array into nibabel's ``(x, y, z)`` order (a view, no copy)."""
    return np.transpose(data, (2, 1, 0))


def index_to_world_zyx(affine: np.ndarray) -> np.ndarray:
    """4×4 matrix mapping a homogeneous ``(z, y, x, 1)`` index to RAS millimetres."""
    return np.asarray(affine, dtype=np.float64) @ _REVERSE


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing in mm, ordered ``(z, y, x)`` like the arrays (column norms of the affine)."""
    norms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)  # (x, y, z)
    return (float(norms[2]), float(norms[1]), float(norms[0]))


def make_affine(spacing_zyx: Sequence[float], origin_xyz: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """An axis-aligned RAS affine with the given ``(z, y, x)`` spacing (mm) and world origin (mm)."""
    sz, sy, sx = (float(s) for s in spacing_zyx)
    affine = np.diag([sx, sy, sz, 1.0])
    affine[:3, 3] = np.asarray(origin_xyz, dtype=np.float64)
    return affine


def world_bounds(shape_zyx: Sequence[int], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned world bounding box ``(min_xyz, max_xyz)`` in mm of a grid's voxel centres."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape_zyx], indexing="ij")).reshape(3, -1)
    world = (index_to_world_zyx(affine) @ np.vstack([corners, np.ones(corners.shape[1])]))[:3]
    return world.min(axis=1), world.max(axis=1)


def grids_overlap(shape_a, affine_a, shape_b, affine_b) -> bool:
    """True when the world bounding boxes of two grids intersect."""
    lo_a, hi_a = world_bounds(shape_a, affine_a)
    lo_b, hi_b = world_bounds(shape_b, affine_b)
    return bool(np.all(lo_a <= hi_b) and np.all(lo_b <= hi_a))


def same_grid(shape_a, affine_a, shape_b, affine_b, tol_mm: float = 1e-3) -> bool:
    """True when two grids have the same shape and affines equal to within ``tol_mm``."""
    return tuple(shape_a) == tuple(shape_b) and np.allclose(affine_a, affine_b, atol=tol_mm)


def resample_to_grid(
    volume: np.ndarray,
    src_affine: np.ndarray,
    dst_shape: Sequence[int],
    dst_affine: np.ndarray,
    order: int = 1,
    fill: float = 0.0,
) -> np.ndarray:
    """Resample a ``(z, y, x)`` volume onto another grid in physical space.

    Args:
        volume: source array ``(z, y, x)``.
        src_affine, dst_affine: NIfTI affines of the source and destination grids.
        dst_shape: ``(z, y, x)`` shape of the destination.
        order: spline order (1 = linear for images, 0 = nearest for labels).
        fill: value for destination voxels outside the source.

    Returns:
        Array of ``dst_shape`` with the dtype of ``volume`` (labels stay integer).
    """
    from scipy import ndimage

    dst_to_src = np.linalg.solve(index_to_world_zyx(src_affine), index_to_world_zyx(dst_affine))
    work = volume if order == 0 else volume.astype(np.float32, copy=False)
    out = ndimage.affine_transform(
        work, dst_to_src[:3, :3], offset=dst_to_src[:3, 3], output_shape=tuple(int(s) for s in dst_shape),
        order=order, mode="constant", cval=fill, prefilter=False,
    )
    return out.astype(volume.dtype, copy=False)


@dataclass
class StudyMeta:
    """De-identified facts about a study. No names, birth dates or institution identifiers belong here.

    Units: age in years, weight in kg, height in m, injected dose in Bq.
    """

    age: float | None = None
    sex: str | None = None  # "M", "F" or "O"
    weight_kg: float | None = None
    height_m: float | None = None
    tracer: str | None = None
    scanner: str | None = None
    injected_dose_bq: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "StudyMeta":
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        extra = dict(data.pop("extra", {}) or {})
        extra.update({k: v for k, v in data.items() if k not in known})
        return cls(**{k: v for k, v in data.items() if k in known}, extra=extra)


@dataclass
class Study:
    """One PET/CT study resampled onto one grid.

    Attributes:
        study_id: pseudonymous study identifier (never a patient name).
        patient_id: pseudonymous patient identifier; splits are made by it.
        pet: SUV volume ``(z, y, x)`` float32, or None for CT-only data.
        ct: CT volume in HU ``(z, y, x)`` float32 on the PET grid, or None for PET-only data.
        affine: 4×4 NIfTI RAS affine (mm) of the arrays (see the module docstring).
        task: key into the TaskSet in use (cancer type / target), or None when unknown.
        label: binary lesion mask ``(z, y, x)`` uint8 (0/1), optional.
        organs: organ label map ``(z, y, x)`` uint8/uint16, optional (label meaning in ``organ_labels``).
        organ_labels: ``{name: value}`` of the organ map, optional.
        meta: de-identified metadata.
    """

    study_id: str
    pet: np.ndarray | None
    ct: np.ndarray | None
    affine: np.ndarray
    task: str | None = None
    patient_id: str | None = None
    label: np.ndarray | None = None
    organs: np.ndarray | None = None
    organ_labels: dict[str, int] | None = None
    meta: StudyMeta = field(default_factory=StudyMeta)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.patient_id is None:
            self.patient_id = self.study_id
        if self.pet is not None:
            self.pet = np.asarray(self.pet, dtype=np.float32)
        if self.ct is not None:
            self.ct = np.asarray(self.ct, dtype=np.float32)
        self.validate()

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` voxels."""
        ref = self.pet if self.pet is not None else self.ct
        return tuple(int(s) for s in ref.shape)  # type: ignore[union-attr]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """``(z, y, x)`` voxel spacing in mm."""
        return spacing_from_affine(self.affine)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (cm³)."""
        return float(np.prod(self.spacing)) / 1000.0

    def image(self, channels: Sequence[str] = ("CT", "PET")) -> np.ndarray:
        """Stack the named channels (``"CT"``, ``"PET"``) into a float32 array ``(C, z, y, x)``."""
        arrays = {"CT": self.ct, "PET": self.pet}
        out = []
        for name in channels:
            key = name.upper()
            if key not in arrays:
                raise ValueError(f"unknown channel {name!r}; use 'CT' or 'PET'")
            if arrays[key] is None:
                raise ImageGeometryError(f"study {self.study_id} has no {key} image but channel {key} was asked for")
            out.append(arrays[key])
        return np.stack(out, axis=0).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check shapes, grids, finiteness and label values; raise a UnipetError naming the problem."""
        if self.pet is None and self.ct is None:
            raise ImageGeometryError(f"study {self.study_id} has neither PET nor CT; give at least one image")
        if self.affine.shape != (4, 4):
            raise ImageGeometryError(f"study {self.study_id}: affine must be 4x4, got {self.affine.shape}")
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        if not np.isfinite(self.affine).all() or np.any(norms < 1e-6) or abs(np.linalg.det(self.affine[:3, :3])) < 1e-12:
            raise ImageGeometryError(
                f"study {self.study_id}: impossible affine (voxel sizes {np.round(norms, 4).tolist()} mm, zero or not "
                "finite, or dependent axes); give the scanner geometry")
        shape = self.shape
        for name, arr in (("PET", self.pet), ("CT", self.ct), ("label", self.label), ("organs", self.organs)):
            if arr is None:
                continue
            if arr.ndim != 3:
                raise ImageGeometryError(
                    f"study {self.study_id}: {name} must be a 3-D volume, got {arr.ndim}-D {arr.shape}; "
                    "split 4-D series into 3-D volumes first")
            if tuple(arr.shape) != shape:
                raise ImageGeometryError(
                    f"study {self.study_id}: {name} grid {arr.shape} differs from the image grid {shape}; "
                    "resample it onto the PET grid first")
        for name, arr in (("PET", self.pet), ("CT", self.ct)):
            if arr is not None and not np.isfinite(arr).all():
                bad = int((~np.isfinite(arr)).sum())
                raise IntensityError(
                    f"study {self.study_id}: {name} has {bad} NaN/Inf voxels; clean it with "
                    "unipet.io.nifti.replace_non_finite (NaN -> 0 / -1024 HU) before building a Study")
        if self.label is not None:
            self.label = check_binary_mask(self.label, f"study {self.study_id} lesion label")


def check_binary_mask(mask: np.ndarray, what: str = "mask") -> np.ndarray:
    """Return ``mask`` as uint8 0/1 or raise LabelError if it holds any other value."""
    values = np.unique(mask)
    if not np.all(np.isin(values, (0, 1))):
        shown = ", ".join(str(v) for v in values[:8])
        raise LabelError(
            f"{what} must be binary (0/1) but holds values {shown}; binarise it (mask > 0) or pick the "
            "lesion label before using it")
    return mask.astype(np.uint8, copy=False)
