"""Connected components of a binary mask: the one implementation that evaluation, biomarkers and the
predictor share.

Connectivity is stated in voxels sharing a face (6), a face or an edge (18) or a face, edge or corner (26).
The default, 18, is the autoPET challenge's. Labelling is done by ``cc3d`` (connected-components-3d);
statistics (voxel counts, bounding boxes, centroids) by ``cc3d.statistics`` in one pass.

Physical units: volumes in mL (cm³) from the voxel spacing; centroids in RAS millimetres through the
study affine (``unipet.study`` convention), or ``index × spacing`` when no affine is given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from unipet.errors import ConfigError, ImageGeometryError
from unipet.study import index_to_world_zyx, make_affine

CONNECTIVITIES = (6, 18, 26)
DEFAULT_CONNECTIVITY = 18


@dataclass(frozen=True)
class Component:
    """One connected component.

    Attributes:
        label: its value in the label volume (1..N).
        voxels: number of voxels.
        volume_ml: volume in mL (voxels × voxel volume).
        bbox: ``(z, y, x)`` slices of its bounding box (usable as ``volume[c.bbox]``).
        centroid_zyx: centroid in (fractional) voxel indices ``(z, y, x)``.
        centroid_mm: centroid in world millimetres ``(x, y, z)`` (RAS through the affine).
    """

    label: int
    voxels: int
    volume_ml: float
    bbox: tuple[slice, slice, slice]
    centroid_zyx: tuple[float, float, float]
    centroid_mm: tuple[float, float, float]


def check_connectivity(connectivity: int) -> int:
    """Return ``connectivity`` if it is 6, 18 or 26, else raise ConfigError."""
    if int(connectivity) not in CONNECTIVITIES:
        raise ConfigError(f"connectivity must be 6, 18 or 26 (voxel neighbours), got {connectivity}; "
                          "use 18 for autoPET-style evaluation")
    return int(connectivity)


def voxel_volume_ml(spacing_zyx: Sequence[float]) -> float:
    """Volume of one voxel in mL from its ``(z, y, x)`` spacing in mm."""
    spacing = np.asarray(spacing_zyx, dtype=np.float64)
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise ImageGeometryError(f"voxel spacing must be three positive millimetre values (z, y, x), got {spacing_zyx}")
    return float(np.prod(spacing)) / 1000.0


def label_components(mask: np.ndarray, connectivity: int = DEFAULT_CONNECTIVITY) -> tuple[np.ndarray, int]:
    """Label the connected components of a binary mask.

    Args:
        mask: ``(z, y, x)`` array; every non-zero voxel is foreground.
        connectivity: 6, 18 or 26.

    Returns:
        ``(labels, n)``: labels ``(z, y, x)`` unsigned integers, 0 background and 1..n the components
        (numbered in raster order of their first voxel), and the number of components n.
    """
    if mask.ndim != 3:
        raise ImageGeometryError(f"masks must be 3-D (z, y, x), got shape {mask.shape}")
    import cc3d

    labels, n = cc3d.connected_components(np.ascontiguousarray(mask != 0), connectivity=check_connectivity(connectivity),
                                          return_N=True)
    return labels, int(n)


def component_stats(labels: np.ndarray, spacing_zyx: Sequence[float], affine: np.ndarray | None = None) -> list[Component]:
    """Voxels, volume, bounding box and centroid of every component of a label volume.

    Args:
        labels: ``(z, y, x)`` label volume from :func:`label_components` (0 = background).
        spacing_zyx: voxel spacing in mm.
        affine: NIfTI affine of the grid, for world centroids; default ``make_affine(spacing_zyx)``.

    Returns:
        One :class:`Component` per label 1..max(labels), in label order.
    """
    import cc3d

    vox_ml = voxel_volume_ml(spacing_zyx)
    if labels.size == 0 or int(labels.max()) == 0:
        return []
    stats = cc3d.statistics(np.ascontiguousarray(labels))
    to_world = index_to_world_zyx(make_affine(spacing_zyx) if affine is None else affine)
    counts = np.asarray(stats["voxel_counts"], dtype=np.int64)
    centroids = np.asarray(stats["centroids"], dtype=np.float64)  # (N+1, 3) in array axis order (z, y, x)
    world = (to_world[:3, :3] @ centroids.T).T + to_world[:3, 3]
    out = []
    for lab in range(1, len(counts)):
        if counts[lab] == 0:  # a gap in the numbering (possible for label volumes not made by label_components)
            continue
        out.append(Component(
            label=lab, voxels=int(counts[lab]), volume_ml=float(counts[lab]) * vox_ml,
            bbox=tuple(stats["bounding_boxes"][lab]), centroid_zyx=tuple(float(c) for c in centroids[lab]),
            centroid_mm=tuple(float(c) for c in world[lab]),
        ))
    return out


def components(mask: np.ndarray, spacing_zyx: Sequence[float], affine: np.ndarray | None = None,
               connectivity: int = DEFAULT_CONNECTIVITY) -> tuple[np.ndarray, list[Component]]:
    """Label a binary mask and describe its components: ``(labels, [Component, ...])``."""
    labels, _ = label_components(mask, connectivity)
    return labels, component_stats(labels, spacing_zyx, affine)


def foreground_box(*masks: np.ndarray, pad: int = 0) -> tuple[slice, slice, slice] | None:
    """``(z, y, x)`` slices of the bounding box of the union of ``masks`` grown by ``pad`` voxels (clipped to
    the grid), or None when every mask is empty."""
    union = np.logical_or.reduce([np.asarray(m) != 0 if m.dtype != bool else m for m in masks])
    box = []
    for axis in range(union.ndim):
        hits = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - pad, 0), min(int(hits[-1]) + 1 + pad, union.shape[axis])))
    return tuple(box)


@dataclass(frozen=True)
class ComponentOverlap:
    """The connected components of two masks ``a`` and ``b`` and the voxels each pair of them shares.

    Attributes:
        connectivity: the connectivity used for both masks.
        sizes_a, sizes_b: voxels per component, indexed by component number (index 0 is unused and 0).
        pair_a, pair_b, shared: one entry per (component of a, component of b) sharing voxels, with the
            number of shared voxels.
    """

    connectivity: int
    sizes_a: np.ndarray
    sizes_b: np.ndarray
    pair_a: np.ndarray
    pair_b: np.ndarray
    shared: np.ndarray

    @property
    def n_a(self) -> int:
        return len(self.sizes_a) - 1

    @property
    def n_b(self) -> int:
        return len(self.sizes_b) - 1

    def untouched_a(self) -> np.ndarray:
        """Bool ``(n_a + 1,)``: components of ``a`` that share no voxel with ``b`` (index 0 False)."""
        out = np.ones(self.n_a + 1, dtype=bool)
        out[0] = False
        out[self.pair_a] = False
        return out

    def untouched_b(self) -> np.ndarray:
        """Bool ``(n_b + 1,)``: components of ``b`` that share no voxel with ``a`` (index 0 False)."""
        out = np.ones(self.n_b + 1, dtype=bool)
        out[0] = False
        out[self.pair_b] = False
        return out


def component_overlap(a: np.ndarray, b: np.ndarray, connectivity: int = DEFAULT_CONNECTIVITY) -> ComponentOverlap:
    """Label two same-shape masks and tabulate which components overlap (one pass over their foreground).

    Both masks are cropped to the bounding box of their union first, and the tables are built from the
    foreground voxels only, so whole-body volumes with small lesions cost little.
    """
    if a.shape != b.shape:
        raise ImageGeometryError(f"mask shapes {a.shape} and {b.shape} differ; put both masks on one grid first")
    check_connectivity(connectivity)
    empty = np.zeros(0, dtype=np.int64)
    box = foreground_box(a, b)
    if box is None:
        return ComponentOverlap(connectivity, np.zeros(1, np.int64), np.zeros(1, np.int64), empty, empty, empty)
    a_crop, b_crop = np.asarray(a[box]) != 0, np.asarray(b[box]) != 0
    labels_a, n_a = label_components(a_crop, connectivity)
    labels_b, n_b = label_components(b_crop, connectivity)
    fg = np.flatnonzero(a_crop | b_crop)
    va = labels_a.ravel()[fg].astype(np.int64)
    vb = labels_b.ravel()[fg].astype(np.int64)
    sizes_a = np.bincount(va, minlength=n_a + 1)
    sizes_b = np.bincount(vb, minlength=n_b + 1)
    sizes_a[0] = sizes_b[0] = 0
    both = (va > 0) & (vb > 0)
    pairs, shared = np.unique(va[both] * (n_b + 1) + vb[both], return_counts=True)
    return ComponentOverlap(connectivity, sizes_a, sizes_b, pairs // (n_b + 1), pairs % (n_b + 1), shared)


def remove_small_components(mask: np.ndarray, spacing_zyx: Sequence[float], min_volume_ml: float,
                            connectivity: int = DEFAULT_CONNECTIVITY) -> np.ndarray:
    """Drop components smaller than ``min_volume_ml`` (mL) from a binary mask; returns uint8 0/1 ``(z, y, x)``."""
    labels, n = label_components(mask, connectivity)
    if n == 0:
        return np.zeros(mask.shape, dtype=np.uint8)
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    keep = counts * voxel_volume_ml(spacing_zyx) >= min_volume_ml
    keep[0] = False
    return keep[labels].astype(np.uint8)
