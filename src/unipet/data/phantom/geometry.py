"""Geometry kit of the phantom: the voxel grid, local boxes, smooth random fields and shape primitives.

Everything is in world millimetres ordered ``(z, y, x)`` like the arrays: ``x`` grows to the patient's right,
``y`` anteriorly and ``z`` superiorly (RAS), and ``z = 0`` is the vertex of the skull. Shapes are evaluated
only inside their bounding box (a :class:`Box`), with 1-D coordinate vectors broadcast to 3-D, so that the
cost of an organ is the size of its box, not of the volume.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from unipet.study import make_affine


@dataclass(frozen=True)
class Grid:
    """A regular axis-aligned voxel grid.

    Attributes:
        shape: ``(z, y, x)`` voxels.
        spacing: ``(z, y, x)`` voxel size in mm.
        origin: world ``(z, y, x)`` mm of the centre of voxel ``(0, 0, 0)``.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        """NIfTI RAS affine of the grid (see ``unipet.study``)."""
        return make_affine(self.spacing, origin_xyz=self.origin[::-1])

    @property
    def voxel_ml(self) -> float:
        """Voxel volume in mL."""
        return float(np.prod(self.spacing)) / 1000.0

    def axis(self, i: int) -> np.ndarray:
        """World coordinates (mm) of the voxel centres along axis ``i`` (0 = z, 1 = y, 2 = x)."""
        return (self.origin[i] + self.spacing[i] * np.arange(self.shape[i])).astype(np.float64)

    def index(self, point_zyx: Sequence[float]) -> tuple[int, int, int]:
        """Nearest voxel index of a world point, clipped into the grid."""
        out = []
        for i in range(3):
            k = int(round((point_zyx[i] - self.origin[i]) / self.spacing[i]))
            out.append(min(max(k, 0), self.shape[i] - 1))
        return tuple(out)  # type: ignore[return-value]

    def world(self, index_zyx: Sequence[int]) -> np.ndarray:
        """World ``(z, y, x)`` mm of a voxel index."""
        return np.asarray(self.origin) + np.asarray(self.spacing) * np.asarray(index_zyx, dtype=np.float64)

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> "Box | None":
        """The voxels whose centres lie in the world box ``[lo, hi]`` (mm, z y x); None when it misses the grid."""
        slices, coords = [], []
        for i in range(3):
            a = int(np.ceil((min(lo[i], hi[i]) - self.origin[i]) / self.spacing[i]))
            b = int(np.floor((max(lo[i], hi[i]) - self.origin[i]) / self.spacing[i])) + 1
            a, b = max(a, 0), min(b, self.shape[i])
            if b <= a:
                return None
            slices.append(slice(a, b))
            coords.append(self.origin[i] + self.spacing[i] * np.arange(a, b, dtype=np.float64))
        return Box(tuple(slices), coords[0][:, None, None], coords[1][None, :, None], coords[2][None, None, :])

    def full_box(self) -> "Box":
        """The whole grid as a box."""
        box = self.box(self.world((0, 0, 0)), self.world(np.asarray(self.shape) - 1))
        assert box is not None
        return box


@dataclass(frozen=True)
class Box:
    """A rectangular block of a grid: its index ``slices`` and broadcastable world coordinates (mm).

    ``z`` has shape ``(nz, 1, 1)``, ``y`` ``(1, ny, 1)`` and ``x`` ``(1, 1, nx)``.
    """

    slices: tuple[slice, slice, slice]
    z: np.ndarray
    y: np.ndarray
    x: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.z.shape[0], self.y.shape[1], self.x.shape[2])

    def sub(self, mask: np.ndarray) -> "Box":
        """The tightest sub-box holding every True voxel of a box-shaped ``mask`` (which must have one)."""
        idx = [np.flatnonzero(mask.any(axis=tuple(j for j in range(3) if j != i))) for i in range(3)]
        lo = [int(v[0]) for v in idx]
        hi = [int(v[-1]) + 1 for v in idx]
        sl = tuple(slice(s.start + a, s.start + b) for s, a, b in zip(self.slices, lo, hi))
        return Box(sl, self.z[lo[0]:hi[0]], self.y[:, lo[1]:hi[1]], self.x[:, :, lo[2]:hi[2]])  # type: ignore[arg-type]


def _bspline_basis(f: np.ndarray) -> list[np.ndarray]:
    """Cubic B-spline weights of the four nodes ``i-1, i, i+1, i+2`` for fractional positions ``f`` in [0, 1)."""
    f2, f3 = f * f, f * f * f
    return [(1 - f) ** 3 / 6, (3 * f3 - 6 * f2 + 4) / 6, (-3 * f3 + 3 * f2 + 3 * f + 1) / 6, f3 / 6]


def _mean_square_weight() -> float:
    f = np.linspace(0.0, 1.0, 257)[:-1]
    return float(np.mean(sum(w * w for w in _bspline_basis(f))))


# Variance of a cubic-B-spline interpolant of unit-variance white nodes, per axis (used to normalise fields).
_BSPLINE_VAR_1D = _mean_square_weight()


class SmoothField:
    """A smooth zero-mean, unit-variance random field: white Gaussian nodes on a coarse lattice (``step`` mm)
    interpolated by cubic B-splines, so it is C² and its correlation length is about ``step``.

    Sampling a box is three small matrix products (separable weights), far cheaper than ``map_coordinates``.
    """

    def __init__(self, rng: np.random.Generator, lo: Sequence[float], hi: Sequence[float], step: float | Sequence[float]):
        self.step = np.broadcast_to(np.asarray(step, dtype=np.float64), (3,)).copy()
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        self.start = lo - 2 * self.step
        n = (np.ceil((hi - lo) / self.step).astype(int) + 5).clip(4, None)
        scale = 1.0 / np.sqrt(_BSPLINE_VAR_1D ** 3)
        self.nodes = (rng.standard_normal(tuple(n)) * scale).astype(np.float32)

    def _weights(self, coords: np.ndarray, axis: int) -> tuple[np.ndarray, slice]:
        n = self.nodes.shape[axis]
        t = (np.ravel(coords) - self.start[axis]) / self.step[axis]
        i0 = np.floor(t).astype(np.int64)
        basis = _bspline_basis(t - i0)
        lo = int(np.clip(i0.min() - 1, 0, n - 1))
        hi = int(np.clip(i0.max() + 3, lo + 1, n))
        w = np.zeros((t.size, hi - lo), np.float32)
        rows = np.arange(t.size)
        for k, wk in zip(range(-1, 3), basis):
            np.add.at(w, (rows, np.clip(i0 + k, lo, hi - 1) - lo), wk.astype(np.float32))
        return w, slice(lo, hi)

    def sample(self, box: Box) -> np.ndarray:
        """Field values on a box, float32 ``box.shape``."""
        wz, sz = self._weights(box.z, 0)
        wy, sy = self._weights(box.y, 1)
        wx, sx = self._weights(box.x, 2)
        c = self.nodes[sz, sy, sx]
        c = c @ wx.T                       # (cz, cy, nx)
        c = np.matmul(wy, c)               # (cz, ny, nx)
        return np.tensordot(wz, c, axes=(1, 0))  # (nz, ny, nx)


def rotation(axis_long: Sequence[float], hint: Sequence[float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """Rotation whose first row is the unit vector ``axis_long`` (z y x) and whose rows are orthonormal.

    Used as ``R @ (p - c)`` to express a point in a shape's own axes (long axis first).
    """
    a = np.asarray(axis_long, dtype=np.float64)
    a = a / np.linalg.norm(a)
    h = np.asarray(hint, dtype=np.float64)
    if abs(float(h @ a)) > 0.95:
        h = np.array([1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    b = h - (h @ a) * a
    b /= np.linalg.norm(b)
    c = np.cross(a, b)
    return np.stack([a, b, c])


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3×3 rotation (QR of a Gaussian matrix with sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[0] *= -1
    return q


def ellipsoid_q(box: Box, centre: Sequence[float], radii: Sequence[float], rot: np.ndarray | None = None) -> np.ndarray:
    """Normalised ellipsoid radius ``q`` on a box: ``q < 1`` inside, ``q = 1`` on the surface.

    Args:
        centre: world ``(z, y, x)`` mm. radii: semi-axes (mm) along the rows of ``rot`` (or z, y, x when None).
    """
    dz, dy, dx = box.z - centre[0], box.y - centre[1], box.x - centre[2]
    if rot is None:
        q2 = (dz / radii[0]) ** 2 + (dy / radii[1]) ** 2 + (dx / radii[2]) ** 2
    else:
        q2 = 0.0
        for k in range(3):
            u = rot[k, 0] * dz + rot[k, 1] * dy + rot[k, 2] * dx
            q2 = q2 + (u / radii[k]) ** 2
    return np.sqrt(np.broadcast_to(q2, box.shape)).astype(np.float32)


def ellipsoid_box(grid: Grid, centre: Sequence[float], radii: Sequence[float], margin: float = 1.3) -> Box | None:
    """The grid box holding an ellipsoid of any orientation (a cube of half-side ``margin × max(radii)``)."""
    r = margin * float(max(radii))
    c = np.asarray(centre, dtype=np.float64)
    return grid.box(c - r, c + r)


def tube_segments(grid: Grid, points: Sequence[Sequence[float]], radii: Sequence[float] | float,
                  margin: float = 1.0) -> Iterator[tuple[Box, np.ndarray, np.ndarray, np.ndarray]]:
    """Walk a polyline tube segment by segment.

    Args:
        points: ``(n, 3)`` world ``(z, y, x)`` mm vertices. radii: radius (mm) per vertex or one for all.
        margin: box half-width as a multiple of the local radius (>1 leaves room for perturbations).

    Yields:
        ``(box, dist, radius, t)`` per segment on its box: distance (mm) to the segment, the radius interpolated
        along it and the arc length (mm) from the first vertex of the foot point — all float32 ``box.shape``.
        Boxes of consecutive segments overlap; callers combine them with ``minimum``/``|=``.
    """
    pts = np.asarray(points, dtype=np.float64)
    rad = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(pts),))
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    for i in range(len(pts) - 1):
        a, b = pts[i], pts[i + 1]
        r = margin * max(rad[i], rad[i + 1]) + max(grid.spacing)
        box = grid.box(np.minimum(a, b) - r, np.maximum(a, b) + r)
        if box is None:
            continue
        ab = b - a
        L2 = float(ab @ ab) or 1e-9
        s = ((box.z - a[0]) * ab[0] + (box.y - a[1]) * ab[1] + (box.x - a[2]) * ab[2]) / L2
        s = np.clip(s, 0.0, 1.0)
        d2 = (box.z - a[0] - s * ab[0]) ** 2 + (box.y - a[1] - s * ab[1]) ** 2 + (box.x - a[2] - s * ab[2]) ** 2
        dist = np.sqrt(d2).astype(np.float32)
        s = np.broadcast_to(s, box.shape)
        radius = (rad[i] + s * (rad[i + 1] - rad[i])).astype(np.float32)
        t = (arc[i] + s * np.sqrt(L2)).astype(np.float32)
        yield box, dist, radius, t


def smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 below ``lo``, 1 above ``hi``, a C¹ cubic ramp between."""
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)
