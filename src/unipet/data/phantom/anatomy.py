"""Whole-body phantom anatomy, head to thigh: an organ label map built from smooth, per-subject shapes.

Every structure is placed relative to the subject's own body: landmarks are heights below the vertex for a
1.75 m reference patient (``s`` in mm, scaled by height), and organ positions are fractions of the body
cavity at that height, so that organs follow body size, sex and adiposity. Shapes are noise-perturbed
ellipsoids, superellipse body sections and polyline tubes (vessels, ureters, bowel, ribs' arcs, long bones),
each evaluated only in its bounding box. The patient lies supine, arms raised above the head (the usual
whole-body oncological PET/CT position). Later labels override earlier ones in a fixed, anatomical order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unipet.data.organs import ORGAN_LABELS as L
from unipet.data.phantom.clinical import Subject
from unipet.data.phantom.geometry import Box, Grid, SmoothField, ellipsoid_box, ellipsoid_q, rotation, tube_segments

# Lean male frame (outer surface of the muscle wall, no subcutaneous fat) of the neck and trunk:
# height below vertex s (mm, 1.75 m patient), half-width a0, half-depth b0, centre y cy0 (mm).
_FRAME = np.array([
    (160, 48, 50, 0), (200, 50, 52, -2), (280, 54, 54, -6), (300, 100, 75, -6), (320, 140, 92, -4),
    (360, 150, 98, -2), (420, 150, 102, 0), (520, 144, 104, 3), (600, 136, 96, 3), (700, 127, 88, 2),
    (780, 142, 90, 0), (860, 156, 92, -4), (905, 148, 86, -4), (935, 80, 50, -4), (945, 1, 1, -4)], float)
# Female lateral frame factor by height.
_FEMALE_LAT = np.array([(160, 0.9), (520, 0.9), (620, 0.94), (720, 1.0), (800, 1.05), (880, 1.08), (945, 1.06)], float)
# Subcutaneous fat thickness factors (lateral, anterior, posterior) relative to the subject's trunk value.
_FAT = np.array([
    (160, .35, .35, .35), (280, .5, .5, .6), (330, .8, .7, .9), (520, 1.0, 1.0, 1.0), (620, 1.3, 1.5, 1.0),
    (720, 1.4, 1.7, 1.0), (800, 1.4, 1.4, 1.2), (880, 1.4, 1.2, 1.5), (945, 1.2, 1.0, 1.4)], float)
# Visceral-fat girth profile (fraction of the subject's visceral fat mm).
_VISC = np.array([(540, 0.0), (640, 0.7), (700, 1.0), (800, 0.8), (880, 0.3), (920, 0.0)], float)
# Wall thickness from the frame to the thoraco-abdominal cavity (lateral, anterior, posterior), mm.
_WALL = np.array([
    (283, 56, 40, 28), (300, 55, 36, 30), (320, 70, 32, 31), (345, 51, 27, 33), (380, 35, 25, 34),
    (420, 22, 24, 35), (520, 20, 20, 35),
    (600, 17, 14, 42), (700, 16, 13, 48), (780, 32, 14, 42), (850, 85, 18, 38), (900, 108, 24, 40),
    (915, 130, 40, 50)], float)
_CAVITY_S = (283.0, 912.0)
# Spine: height s, depth of the vertebral-body centre in front of the frame's back (mm), body radius (mm).
_SPINE = np.array([(150, 38, 8), (200, 36, 9), (280, 34, 10), (320, 45, 12), (420, 58, 14), (520, 60, 16),
                   (600, 62, 18), (700, 68, 21), (790, 62, 22)], float)
# Vertebrae C2..L5: (count, body height mm, disc height mm) per region; C2 starts at s = 160.
_VERTEBRAE = ((6, 15.0, 4.0), (12, 22.0, 5.0), (5, 28.0, 9.0))
_SPINE_TOP = 160.0

# Labels that later, softer structures may be painted over.
_SOFT = (L["subcutaneous_fat"], L["muscle"], L["visceral_fat"])


@dataclass
class Anatomy:
    """An organ map and the geometry that lesions and image synthesis need.

    Attributes:
        grid: the voxel grid. organs: uint8 ``(z, y, x)`` map, values in ``ORGAN_LABELS``.
        stations: lymph-node station name → list of polylines (``(n, 3)`` world z y x mm) nodes lie along;
            ``hilar`` is a sub-station of ``mediastinal`` (same label).
        landmarks: named world points (z y x mm): ``adrenal_left``, ``hilum_right``, ``breast_left``, the limb
            joints ``shoulder_*``, ``elbow_*``, ``wrist_*``, ``femoral_head_*``, ``knee_*`` (``*``: right, left)...
        regions: local arrays for image synthesis, each a list of ``(slices, array)``: ``kidney_pelvis``,
            ``brain_depth`` (0 at the brain surface, 1 at its centre), ``colon``, ``breast_gland``,
            ``ureter_left_t``/``ureter_right_t`` (arc length in mm, NaN outside), ``brown_fat``, ``marrow_cavity``,
            ``salivary_tonsils``, ``thyroid``, ``vocal_cords``.
    """

    grid: Grid
    organs: np.ndarray
    stations: dict[str, list[np.ndarray]] = field(default_factory=dict)
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)
    regions: dict[str, list[tuple[tuple[slice, slice, slice], np.ndarray]]] = field(default_factory=dict)


def _interp(s, table: np.ndarray, col: int) -> np.ndarray:
    return np.interp(s, table[:, 0], table[:, col])


class _Profile:
    """Per-height body sections of one subject (frame, skin, cavity, spine), for scalar or array ``s`` (mm)."""

    def __init__(self, sub: Subject, rng: np.random.Generator):
        self.sub = sub
        self.hs = sub.height_m / 1.75
        knots = np.arange(100.0, 1400.0, 90.0)
        self._jit_s, self._jit_a, self._jit_b = knots, rng.normal(0, 0.025, knots.size), rng.normal(0, 0.025, knots.size)

    def ref(self, s):
        return np.asarray(s, dtype=np.float64) / self.hs

    def frame(self, s):
        """``(a, y_ant, y_post, cy0)`` of the muscle frame at height ``s`` (actual mm below the vertex)."""
        r = self.ref(s)
        sub = self.sub
        a0 = _interp(r, _FRAME, 1) * sub.frame * (1 + np.interp(r, self._jit_s, self._jit_a))
        if sub.sex == "F":
            a0 = a0 * _interp(r, _FEMALE_LAT, 1)
        b0 = _interp(r, _FRAME, 2) * sub.depth * (1 + np.interp(r, self._jit_s, self._jit_b))
        cy0 = _interp(r, _FRAME, 3)
        v = sub.visceral_fat_mm * _interp(r, _VISC, 1)
        return a0 + 0.4 * v, cy0 + b0 + v, cy0 - b0, cy0

    def fat(self, s):
        """Subcutaneous fat ``(lateral, anterior, posterior)`` thickness (mm)."""
        r = self.ref(s)
        t = self.sub.subcut_fat_mm
        lat = t * _interp(r, _FAT, 1) * (np.where(r > 740, 1.15, 1.0) if self.sub.sex == "F" else 1.0)
        return lat, t * _interp(r, _FAT, 2), t * _interp(r, _FAT, 3)

    def body(self, s):
        a, ya, yp, _ = self.frame(s)
        tl, ta, tp = self.fat(s)
        return a + tl, ya + ta, yp - tp

    def cavity(self, s):
        """``(a_c, y_ant, y_post)``; half-width ≤ 0 where there is no cavity."""
        r = self.ref(s)
        a, ya, yp, _ = self.frame(s)
        ok = (r >= _CAVITY_S[0]) & (r <= _CAVITY_S[1])
        ac = np.where(ok, a - _interp(r, _WALL, 1), -1.0)
        return ac, ya - _interp(r, _WALL, 2), yp + _interp(r, _WALL, 3)

    def cav_centre(self, s):
        """``(A, C, B)``: cavity half-width, centre y and half-depth (scalars for landmark placement)."""
        ac, ya, yp = self.cavity(s)
        return float(ac), float((ya + yp) / 2), float((ya - yp) / 2)

    def spine(self, s):
        """``(y_centre, radius)`` of the vertebral body at height ``s``."""
        r = self.ref(s)
        _, _, yp, _ = self.frame(s)
        return yp + _interp(r, _SPINE, 1) * self.sub.depth, _interp(r, _SPINE, 2) * self.sub.frame

    # Legs: frame ellipse centres ±xl, half-axes (al, bl), from s_ref 880 down.
    def legs(self, s):
        r = self.ref(s)
        f = self.sub.frame * (1.05 if self.sub.sex == "F" else 1.0)
        al = np.interp(r, [880, 1250], [68, 56]) * f
        bl = np.interp(r, [880, 1250], [70, 58]) * self.sub.depth
        xl = 77 * f
        return xl, al, bl, -4.0

    def front_y(self, s: float, x: float) -> float:
        """Anterior frame surface y (mm) at height ``s`` and lateral position ``x`` (trunk or leg)."""
        a, ya, yp, _ = self.frame(s)
        c, b = (ya + yp) / 2, (ya - yp) / 2
        best = c + b * np.sqrt(max(0.0, 1 - (x / a) ** 2)) if abs(x) < a else -1e9
        if self.ref(s) > 880:
            xl, al, bl, cy = self.legs(s)
            u = (abs(x) - xl) / al
            if abs(u) < 1:
                best = max(best, cy + bl * np.sqrt(1 - u * u))
        return float(best)


class _Builder:
    def __init__(self, sub: Subject, grid: Grid, rng: np.random.Generator):
        self.sub, self.g, self.rng = sub, grid, rng
        self.p = _Profile(sub, rng)
        self.hs = self.p.hs
        self.lab = np.zeros(grid.shape, np.uint8)
        lo, hi = grid.world((0, 0, 0)), grid.world(np.asarray(grid.shape) - 1)
        self.shape_field = SmoothField(rng, lo, hi, 28.0)
        self.fine_field = SmoothField(rng, lo, hi, 9.0)
        self.vox = float(min(grid.spacing))
        self.an = Anatomy(grid=grid, organs=self.lab)
        self.arm_bones: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    # ---------------------------------------------------------------- helpers
    def s(self, s_ref: float) -> float:
        """Actual height below vertex (mm) of a reference height."""
        return s_ref * self.hs

    def pt(self, s_ref: float, y: float, x: float) -> np.ndarray:
        """World point (z y x) from a reference height and y, x in mm."""
        return np.array([-self.s(s_ref), y, x])

    def j(self, sd: float = 1.0) -> float:
        return float(self.rng.normal(0.0, sd))

    def region(self, name: str, box: Box, arr: np.ndarray) -> None:
        self.an.regions.setdefault(name, []).append((box.slices, arr))

    def paint(self, box: Box, mask: np.ndarray, label: str | int, over: tuple[int, ...] | None = None) -> np.ndarray:
        """Write ``label`` where ``mask`` (and, when given, the current label is in ``over``); returns the mask used."""
        value = L[label] if isinstance(label, str) else label
        region = self.lab[box.slices]
        if over is not None:
            lut = np.zeros(256, bool)
            lut[list(over)] = True
            mask = mask & lut[region]
        region[mask] = value
        return mask

    def blob(self, centre, radii, label, rot=None, amp=0.06, over=None, keep=None, field: SmoothField | None = None):
        """Paint a noise-perturbed ellipsoid; ``keep(box) -> bool mask`` restricts it. Returns ``(box, mask)``."""
        box = ellipsoid_box(self.g, centre, radii, margin=1.0 + amp * 3)
        if box is None:
            return None, None
        q = ellipsoid_q(box, centre, radii, rot)
        if amp:
            q = q - amp * (field or self.shape_field).sample(box)
        mask = q < 1.0
        if keep is not None:
            mask &= keep(box)
        if not mask.any():
            return box, mask
        return box, self.paint(box, mask, label, over)

    def tube(self, points, radii, label, over=None, shell: tuple[str, float] | None = None):
        """Paint a polyline tube; ``shell=(label, mm)`` paints a different label in the outer ``mm`` of it."""
        for box, dist, rad, _ in tube_segments(self.g, points, radii):
            inside = dist < np.maximum(rad, 0.5 * self.vox)
            self.paint(box, inside, label, over)
            if shell is not None:
                self.paint(box, inside & (dist > rad - shell[1]), shell[0], over)

    # ---------------------------------------------------------------- body
    def body(self) -> None:
        g, p = self.g, self.p
        z = g.axis(0)[:, None, None]
        y = g.axis(1)[None, :, None]
        x = g.axis(2)[None, None, :]
        s = -z
        r = p.ref(s)
        trunk = (r >= 150) & (r <= 945)

        def section(a, ya, yp):
            c, b = (ya + yp) / 2, np.maximum((ya - yp) / 2, 1e-3)
            tx = (np.abs(x) / np.maximum(a, 1e-3)) ** 2.2
            ty = (y - c) / b
            ty = np.where(ty > 0, ty * ty, np.abs(ty) ** 2.8)
            return (tx + ty < 1.0) & trunk & (a > 1)

        a_b, ya_b, yp_b = p.body(s)
        a_f, ya_f, yp_f, _ = p.frame(s)
        body = section(a_b, ya_b, yp_b)
        frame = section(a_f, ya_f, yp_f)
        a_c, ya_c, yp_c = p.cavity(s)
        cavity = section(a_c, ya_c, yp_c)
        # Legs below the groin.
        xl, al, bl, cy = p.legs(s)
        legs_on = r >= 870
        tl = self.sub.subcut_fat_mm * (1.25 if self.sub.sex == "F" else 0.9)
        u = np.abs(np.abs(x) - xl)
        for ax, ay, target in ((al + tl, bl + tl, body), (al, bl, frame)):
            target |= ((u / ax) ** 2 + ((y - cy) / ay) ** 2 < 1.0) & legs_on
        self.lab[body] = L["subcutaneous_fat"]
        self.lab[frame] = L["muscle"]
        # Head (scalp fat over muscle / face), arms raised beside the head.
        hc = self.pt(112, 10, 0)
        hr = (112 * self.hs, 96 * self.sub.depth, 76 * self.sub.frame)
        box = ellipsoid_box(g, hc, hr)
        if box is not None:
            q = ellipsoid_q(box, hc, hr) - 0.015 * self.shape_field.sample(box)
            self.paint(box, q < 1, "subcutaneous_fat")
            self.paint(box, q < 1 - 5.0 / min(hr), "muscle")
        for side in (1, -1):
            a_sh, _, _, cy_sh = p.frame(self.s(318))
            joint = self.pt(318, cy_sh - 8, side * (a_sh - 22))
            elbow = self.pt(12, -15, side * (0.9 * (a_sh - 22) - 5))
            wrist = self.pt(-230, 0, side * 60)
            fat = 0.45 * self.sub.subcut_fat_mm
            arm = [joint + np.array([-10, 0, 0]), elbow, wrist]
            self.tube(arm, [44 * self.sub.frame + fat, 38 + fat, 30 + fat], "subcutaneous_fat", over=(0,))
            self.tube(arm, [44 * self.sub.frame, 38, 30], "muscle", over=(0, L["subcutaneous_fat"]))
            self.an.landmarks[f"shoulder_{'right' if side > 0 else 'left'}"] = joint
            self.an.landmarks[f"elbow_{'right' if side > 0 else 'left'}"] = elbow
            self.an.landmarks[f"wrist_{'right' if side > 0 else 'left'}"] = wrist
            self.arm_bones.append((joint, elbow, wrist))
        self.lab[cavity & (self.lab == L["muscle"])] = L["visceral_fat"]

    # ---------------------------------------------------------------- skeleton
    def spine(self) -> None:
        g, p = self.g, self.p
        s_top, s_bot = self.s(150), self.s(800)
        box = g.box((-s_bot, -200, -90), (-s_top, 150, 90))
        if box is None:
            return
        s = -box.z
        ysp, rsp = p.spine(s)
        # Vertebra / disc pattern along s.
        inside_body = np.zeros(s.shape, bool)
        upper = np.zeros(s.shape, bool)
        pos = self.s(_SPINE_TOP)
        self.vertebrae: list[tuple[float, float, str]] = []
        names = [f"C{i}" for i in range(2, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
        k = 0
        for count, h, disc in _VERTEBRAE:
            for _ in range(count):
                top, bot = pos, pos + h * self.hs
                inside_body |= (s >= top) & (s < bot)
                upper |= (s >= top) & (s < top + 0.7 * h * self.hs)
                self.vertebrae.append((top, bot, names[k]))
                k += 1
                pos = bot + disc * self.hs
        self.s_l5_bottom = self.vertebrae[-1][1]
        canal_r = np.where(p.ref(s) < 290, 8.0, 6.5)
        canal_y = ysp - rsp - canal_r - 1
        x, y = box.x, box.y
        vb = ((x / (1.15 * rsp)) ** 2 + ((y - ysp) / rsp) ** 2 < 1.0)
        d_canal = np.sqrt(x ** 2 + (y - canal_y) ** 2)
        arch = (d_canal < canal_r + 5.5) & (y < canal_y + 3)
        spinous = (np.abs(x) < max(4.0, 0.5 * self.vox)) & (y < canal_y - canal_r) & (y > canal_y - canal_r - 26) & upper
        transverse = (np.abs(y - canal_y) < max(4.5, 0.5 * self.vox)) & (np.abs(x) < rsp + np.where(p.ref(s) < 290, 12, 22)) & upper
        bone = (vb | arch | spinous | transverse) & inside_body
        self.paint(box, vb & ~inside_body, "muscle")  # intervertebral discs: soft tissue
        self.paint(box, bone, "spine")
        self.paint(box, d_canal < canal_r, "spinal_cord")

    def ribs_sternum(self) -> None:
        g, p = self.g, self.p
        thor = [v for v in self.vertebrae if v[2].startswith("T")]
        s_lo, s_hi = thor[0][0] - 10, self.s(720)
        box = g.box((-s_hi, -250, -260), (-s_lo, 250, 260))
        if box is None:
            return
        s = -box.z
        ac, yca, ycp = p.cavity(s)
        off = 9.0
        A, C, B = ac + off, (yca + ycp) / 2, (yca - ycp) / 2 + off
        dx, dy = box.x, box.y - C
        rho = np.sqrt(dx ** 2 + dy ** 2)
        e = np.sqrt((dx / np.maximum(A, 1)) ** 2 + (dy / np.maximum(B, 1)) ** 2)
        half = max(4.5, 0.55 * self.vox)
        ring = (np.abs(rho * (1 - 1 / np.maximum(e, 1e-6))) < half) & (ac > 5)
        idx = np.nonzero(ring)
        if idx[0].size:
            ss = s[idx[0], 0, 0]
            xx = np.broadcast_to(dx, ring.shape)[idx]
            yy = np.broadcast_to(dy, ring.shape)[idx]
            theta = np.arctan2(np.abs(xx), -yy)
            ysp, rsp = p.spine(ss)
            hit = np.zeros(ss.shape, bool)
            for k, (top, bot, _) in enumerate(thor):
                sv = 0.5 * (top + bot)
                drop = self.hs * (30 + 60 * np.sin(np.pi * (k + 0.5) / 12))
                t_end = np.pi * (0.86 if k < 7 else 0.78 if k < 10 else 0.5 if k == 10 else 0.38)
                sk = sv + drop * (1 - np.cos(theta)) / 2
                hit |= (np.abs(ss - sk) < max(6.0 * self.hs, 0.55 * self.vox)) & (theta <= t_end)
            hit &= np.abs(xx) > rsp + 12
            mask = np.zeros(ring.shape, bool)
            mask[tuple(i[hit] for i in idx)] = True
            self.paint(box, mask, "ribs", over=_SOFT)
        # Sternum: manubrium and body in the anterior chest wall.
        st_box = g.box((-self.s(520), -50, -40), (-self.s(322), 250, 40))
        if st_box is not None:
            s = -st_box.z
            _, yca, _ = p.cavity(s)
            _, yfa, _, _ = p.frame(s)
            yst = 0.5 * (yca + yfa)
            hw = np.interp(p.ref(s), [322, 360, 380, 520], [27, 24, 16, 12]) * self.sub.frame
            m = (np.abs(st_box.x) < hw) & (np.abs(st_box.y - yst) < max(5.5, 0.55 * self.vox))
            self.paint(st_box, m, "sternum", over=_SOFT)
            self.an.landmarks["sternum_top"] = self.pt(325, float(yst[0, 0, 0]), 0)

    def shoulder_girdle_and_limbs(self) -> None:
        p = self.p
        for side in (1, -1):
            a, ya, yp, cy0 = p.frame(self.s(312))
            _, yca, _ = p.cavity(self.s(330))
            clav = [self.pt(325, float(yca) + 14, side * 18), self.pt(305, cy0 + 0.5 * (ya - cy0), side * 0.55 * a),
                    self.pt(312, cy0 - 8, side * (a - 30))]
            self.tube(clav, max(7.0, 0.55 * self.vox), "shoulder_girdle", over=_SOFT)
            a4, _, yp4, _ = p.frame(self.s(390))
            self.blob(self.pt(390, float(yp4) + 14, side * 0.55 * a4), (75 * self.hs, max(5, 0.6 * self.vox), 48),
                      "shoulder_girdle", amp=0.03, over=_SOFT)
        for joint, elbow, wrist in self.arm_bones:
            self.blob(joint, (22, 22, 22), "long_bones", amp=0.0, over=_SOFT)
            self.tube([joint, elbow], [12, 10], "long_bones", over=_SOFT)
            for dy in (-9, 9):
                self.tube([elbow + [0, dy, 0], wrist + [0, dy * 0.6, 0]], 6.5, "long_bones", over=_SOFT)
            self._marrow_cavity(joint + (elbow - joint) * 0.15, elbow, 6.0)

    def _marrow_cavity(self, a: np.ndarray, b: np.ndarray, r: float) -> None:
        """Record the fatty marrow cavity (radius ``r`` mm) of a long-bone shaft from ``a`` to ``b``."""
        for box, dist, rad, _ in tube_segments(self.g, [a, b], r):
            self.region("marrow_cavity", box, dist < rad)

    def skull(self) -> None:
        bc = self.pt(85, 8, 0)
        br = (60 * self.hs, 80 * self.sub.depth, 64 * self.sub.frame)
        self.blob(bc, tuple(r + 8 for r in br), "skull", amp=0.0)
        box, mask = self.blob(bc, br, "brain", amp=0.0)
        if box is not None:
            q = ellipsoid_q(box, bc, br)
            self.region("brain_depth", box, np.clip(1 - q, 0, 1) * mask)
        self.an.landmarks["brain"] = bc
        # Mandible: a U-shaped bar.
        mand = [self.pt(175, -5, 48), self.pt(205, 45, 40), self.pt(215, 72, 0), self.pt(205, 45, -40), self.pt(175, -5, -48)]
        self.tube(mand, max(7.0, 0.55 * self.vox), "skull", over=_SOFT)

    def pelvis(self) -> None:
        g, p = self.g, self.p
        top = self.s_l5_bottom
        bot = self.s(905)
        box = g.box((-bot, -250, -90), (-top, 100, 90))
        if box is not None:
            s = -box.z
            ysp0, _ = p.spine(top)
            _, _, yp, _ = p.frame(s)
            frac = np.clip((s - top) / (bot - top), 0, 1)
            yc = (1 - frac) * ysp0 + frac * (yp + 28)
            hw = (55 - 40 * frac) * self.sub.frame
            th = 14 - 8 * frac
            m = (box.x / hw) ** 2 + ((box.y - yc) / th) ** 2 < 1
            self.paint(box, m, "pelvis", over=_SOFT)
        a7, _, _, _ = p.frame(self.s(770))
        ysac, _ = p.spine(self.s(780))
        for side in (1, -1):
            c = self.pt(770, float(ysac) + 62, side * 0.3 * a7)
            radii = (110 * self.hs, 64 * self.sub.depth, 0.6 * a7)
            crest = self.s(772) + self.j(4)

            def keep(b, c=c, side=side):
                return ((-b.z >= crest) & (-b.z <= self.s(858)) & (b.y <= c[1] + 22) & (side * b.x >= 40 * self.sub.frame))
            box = ellipsoid_box(g, c, radii)
            if box is not None:
                q = ellipsoid_q(box, c, radii)
                shell = (q < 1) & (q > 1 - max(8.0, 1.1 * self.vox) / min(radii[1:]))
                self.paint(box, shell & keep(box), "pelvis", over=_SOFT)
            # Femur: head, neck, shaft; acetabulum around the head.
            a86, ya86, yp86, cy86 = p.frame(self.s(868))
            head = self.pt(868, cy86 + 5, side * 0.6 * a86)
            xl, _, _, _ = p.legs(self.s(1300))
            gt = self.pt(885, cy86 - 5, side * (a86 - 20))
            knee = self.pt(1320, cy86 + 12, side * 0.85 * xl)
            box = ellipsoid_box(g, head, (33, 33, 33))
            if box is not None:
                q = ellipsoid_q(box, head, (24, 24, 24))
                acet = (q > 1.1) & (q < 1.1 + max(8, 1.1 * self.vox) / 24) & (side * (box.x - head[2]) < 6)
                self.paint(box, acet, "pelvis", over=_SOFT)
            self.blob(head, (23, 23, 23), "long_bones", amp=0.0, over=_SOFT)
            self.tube([head, gt], 14, "long_bones", over=_SOFT)
            self.tube([gt, knee], [15, 12], "long_bones", over=_SOFT)
            self._marrow_cavity(gt + (knee - gt) * 0.12, knee, 7.5)
            self.an.landmarks[f"femoral_head_{'right' if side > 0 else 'left'}"] = head
            self.an.landmarks[f"knee_{'right' if side > 0 else 'left'}"] = knee
        # Pelvic ring (pubis, ischium) below the acetabular roof.
        box = g.box((-self.s(905), -200, -200), (-self.s(852), 200, 200))
        if box is not None:
            s = -box.z
            a, ya, yp, cy0 = p.frame(s)
            A, B, C = 0.6 * a, 0.72 * (ya - yp) / 2, cy0 + 6
            e = np.sqrt((box.x / A) ** 2 + ((box.y - C) / B) ** 2)
            rho = np.sqrt(box.x ** 2 + (box.y - C) ** 2)
            ring = np.abs(rho * (1 - 1 / np.maximum(e, 1e-6))) < max(6.0, 0.6 * self.vox)
            ring &= ~((np.abs(box.x) < 20) & (box.y < C))
            self.paint(box, ring, "pelvis", over=_SOFT)

    # ---------------------------------------------------------------- thorax
    def thorax(self) -> None:
        p = self.p
        self.dome_r = 520 + self.j(10)
        self.dome_l = self.dome_r + 15 + self.j(4)
        A, C, B = p.cav_centre(self.s(self.dome_r))
        self._dome = (A, C, B)
        # Heart: blood pool (atria, right ventricle) with the left-ventricular myocardium as a thick shell.
        Ah, Ch, Bh = p.cav_centre(self.s(470))
        sc = 0.5 * (self.sub.frame + self.sub.depth) * (1 + 0.06 * self.j())
        hc = self.pt(0.5 * (self.dome_r + self.dome_l) - 52, Ch + 0.22 * Bh, -0.2 * Ah)
        axis = np.array([-0.45, 0.55, -0.7])
        axis /= np.linalg.norm(axis)
        rot = rotation(axis, hint=(1.0, 0.0, 0.0))
        hr = (62 * sc, 50 * sc, 46 * sc)
        self.heart = (hc, hr, rot)
        below = lambda b: -b.z < self._diaphragm_s(b) - 2  # noqa: E731
        self.blob(hc, hr, "heart_blood_pool", rot=rot, amp=0.03, keep=below)
        lvc = hc + 16 * sc * axis + np.array([0, -6, -8]) * sc
        lvr = (46 * sc, 29 * sc, 29 * sc)
        wall = max(10.0 * sc, 1.2 * self.vox)
        box = ellipsoid_box(self.g, lvc, lvr)
        if box is not None:
            q_out = ellipsoid_q(box, lvc, lvr, rot)
            q_in = ellipsoid_q(box, lvc, tuple(r - wall for r in lvr), rot)
            self.paint(box, (q_out < 1) & below(box), "heart_blood_pool")
            self.paint(box, (q_out < 1) & (q_in >= 1) & below(box), "heart_myocardium")
        self.an.landmarks["heart"] = hc
        # Aorta from the root to the bifurcation, then the iliac arteries.
        age = 1 + 0.004 * (self.sub.age - 60)

        def spine_pt(s_ref, dy, x):
            ys, rs = p.spine(self.s(s_ref))
            return self.pt(s_ref, float(ys + rs) + dy, x(float(rs)))
        A4, C4, B4 = p.cav_centre(self.s(395))
        root = hc - 0.55 * hr[0] * axis + np.array([0, 0, 12])
        pts = [root, self.pt(395, C4 + 0.3 * B4, 0.1 * A4), self.pt(372, C4 + 0.05 * B4, -0.02 * A4),
               spine_pt(390, 12, lambda r: -0.15 * A4), spine_pt(460, 7, lambda r: -(r + 4)),
               spine_pt(560, 8, lambda r: -(r + 2)), spine_pt(650, 10, lambda r: -0.5 * r), spine_pt(765, 12, lambda r: 0.0)]
        radii = np.array([15, 14, 13, 12, 11, 10.5, 9.5, 9.0]) * age * self.sub.frame ** 0.5
        self.aorta = (np.array(pts), radii)
        self.tube(pts, radii, "aorta", over=_SOFT + (L["heart_blood_pool"],))
        bif = pts[-1]
        self.iliac: dict[int, np.ndarray] = {}
        for side in (1, -1):
            ys8, _ = p.spine(self.s(800))
            a90, _, _, _ = p.frame(self.s(900))
            fem = np.array([-self.s(905), p.front_y(self.s(905), 0.5 * a90) - 22, side * 0.5 * a90])
            il = np.array([bif, self.pt(800, float(ys8) + 32, side * 32), self.pt(850, float(p.frame(self.s(850))[3]), side * 58), fem])
            self.iliac[side] = il
            self.tube(il, np.array([7, 6.5, 6, 5.5]) * age, "iliac_arteries", over=_SOFT)
        # Airway: pharynx, trachea, main bronchi.
        _, ya2, yp2, cy2 = p.frame(self.s(230))
        ysp3, rsp3 = p.spine(self.s(380))
        car = self.s(425)
        ytr = float(ysp3 + rsp3) + 26
        trachea = [self.pt(150, cy2 + 0.45 * (ya2 - cy2), 0), self.pt(215, cy2 + 0.5 * (ya2 - cy2), 0),
                   self.pt(300, 0.5 * (cy2 + 0.4 * (ya2 - cy2) + ytr), 0), self.pt(380, ytr, 0), self.pt(car / self.hs, ytr - 3, 0)]
        self.trachea_y = ytr
        self.glottis = self.pt(225, cy2 + 0.5 * (ya2 - cy2), 0)  # the vocal cords, between pharynx and trachea
        self.tube(trachea, [10, 9, 9, 9, 8], "airway")
        for side in (1, -1):
            hil = self.pt(452, ytr - 8, side * 0.33 * A4)
            self.tube([trachea[-1], hil, self.pt(480, C + 0.0 * B, side * 0.5 * A4)], [6.5, 5, 3.5], "airway")
            self.an.landmarks[f"hilum_{'right' if side > 0 else 'left'}"] = hil

    def _diaphragm_s(self, box: Box) -> np.ndarray:
        """Height (mm below vertex) of the diaphragm under each (y, x) of a box; ``(1, ny, nx)``."""
        A, C, B = self._dome
        dome = np.where(box.x > 0, self.dome_r, self.dome_l) * self.hs
        lat = ((np.abs(box.x) / A - 0.4) / 0.6) ** 2
        post = np.clip((C - box.y) / B, 0, 1) ** 2
        return dome + 40 * lat + 55 * post

    def lungs(self) -> None:
        g, p = self.g, self.p
        box = g.box((-self.s(720), -250, -260), (-self.s(280), 250, 260))
        if box is None:
            return
        s = -box.z
        r = p.ref(s)
        med = np.interp(r, [290, 370, 420, 520], [12, 24, 26, 22]) * self.sub.frame
        xm = np.interp(r, [290, 370, 420], [0, -6, 0])
        hc, hr, rot = self.heart
        q_heart = ellipsoid_q(box, hc, tuple(x_ + 6 for x_ in hr), rot)
        ok = (s < self._diaphragm_s(box)) & (np.abs(box.x - xm) > med) & (q_heart > 1)
        ok &= self.lab[box.slices] == L["visceral_fat"]
        ok &= r > 280
        self.paint(box, ok & (box.x > 0), "lung_right")
        self.paint(box, ok & (box.x < 0), "lung_left")
        # Diaphragm muscle: a few mm of cavity under the lungs.
        dia = (s >= self._diaphragm_s(box)) & (s < self._diaphragm_s(box) + max(4.0, self.vox)) & (r > 450)
        self.paint(box, dia, "muscle", over=(L["visceral_fat"],))

    # ---------------------------------------------------------------- abdomen and pelvis
    def abdomen(self) -> None:
        p, g = self.p, self.g
        below = lambda b: (-b.z > self._diaphragm_s(b) + max(4.0, self.vox)) & (self.lab[b.slices] != 0)  # noqa: E731
        soft_or_fat = _SOFT
        # Psoas muscles along the lumbar spine.
        for side in (1, -1):
            pts, rads = [], []
            for s_ref, dx, dy, rr in ((600, 6, -2, 8), (720, 16, 4, 17), (800, 32, 14, 23), (870, 0, 0, 17)):
                ys, rs = p.spine(self.s(s_ref))
                if s_ref == 870:
                    a, _, _, cy0 = p.frame(self.s(870))
                    pts.append(self.pt(s_ref, cy0 + 12, side * 0.45 * a))
                else:
                    pts.append(self.pt(s_ref, float(ys) + dy, side * (float(rs) + dx)))
                rads.append(rr * self.sub.frame)
            self.tube(pts, rads, "muscle", over=(L["visceral_fat"],))
        A, C, B = p.cav_centre(self.s(self.dome_l + 50))
        stom_rot = rotation((-0.8, 0.3, 0.5), hint=(0, 1, 0))
        stom_c = self.pt(self.dome_l + 58, C + 0.3 * B, -0.38 * A)
        self.stomach = (stom_c, (62 * self.hs, 38, 42), stom_rot)
        self.blob(stom_c, self.stomach[1], "stomach", rot=stom_rot, amp=0.08, over=soft_or_fat, keep=below)
        # Liver: right lobe + left lobe (union), under the right dome.
        Ar, Cr, Br = p.cav_centre(self.s(self.dome_r + 70))
        sz = 1 + 0.07 * self.j()
        right = (self.pt(self.dome_r + 78, Cr + 0.04 * Br, 0.42 * Ar), (92 * self.hs * sz, 0.88 * Br * sz, 0.55 * Ar * sz))
        left = (self.pt(self.dome_r + 45, Cr + 0.48 * Br, -0.12 * Ar), (44 * self.hs * sz, 0.4 * Br * sz, 0.44 * Ar * sz))
        lo = np.minimum(right[0] - right[1], left[0] - left[1]) - 10
        hi = np.maximum(right[0] + right[1], left[0] + left[1]) + 10
        box = g.box(lo, hi)
        if box is not None:
            q = np.minimum(ellipsoid_q(box, *right), ellipsoid_q(box, *left)) - 0.07 * self.shape_field.sample(box)
            self.paint(box, (q < 1) & below(box), "liver", over=soft_or_fat + (L["stomach"],))
        self.an.landmarks["liver"] = right[0]
        # Spleen in the left upper quadrant, posterolateral.
        As, Cs, Bs = p.cav_centre(self.s(self.dome_l + 55))
        spl = self.pt(self.dome_l + 52, Cs - 0.38 * Bs, -0.72 * As)
        ssz = (1 + 0.08 * self.j()) * (1.0 + 0.25 * (self.sub.frame - 1))
        self.blob(spl, (60 * ssz * self.hs, 40 * ssz, 22 * ssz), "spleen", rot=rotation((-0.55, 0.7, -0.35), hint=(0, 0, 1)),
                  amp=0.06, over=soft_or_fat + (L["stomach"],), keep=below)
        self.an.landmarks["spleen"] = spl
        self._bowel(below)
        # Kidneys (with renal pelvis) and adrenals.
        for side, s_ref, name in ((1, 706, "right"), (-1, 690, "left")):
            s_k = s_ref + self.j(6)
            ys, rs = p.spine(self.s(s_k))
            kc = self.pt(s_k, float(ys) - 2, side * (float(rs) + 50 * self.sub.frame))
            krot = rotation((1.0, -0.15, -0.22 * side), hint=(0, 0, 1))
            ksz = 1 + 0.06 * self.j()
            kr = (55 * ksz * self.hs, 27 * ksz, 25 * ksz)
            # Perirenal fat around the kidney (it outlines the kidney on non-contrast CT).
            self.blob(kc, tuple(r + 9 for r in kr), "visceral_fat", rot=krot, amp=0.04,
                      over=(L["muscle"], L["bowel"]))
            box, mask = self.blob(kc, kr, f"kidney_{name}", rot=krot, amp=0.04,
                                  over=soft_or_fat + (L["liver"], L["spleen"], L["bowel"], L["stomach"]))
            pelvis_c = kc + np.array([0, 5, -side * 10])
            if box is not None:
                pr = (22, max(8.0, 0.8 * self.vox), max(8.0, 0.8 * self.vox))
                qp = ellipsoid_q(box, pelvis_c, pr, krot)
                self.region("kidney_pelvis", box, (qp < 1) & mask)
            self.an.landmarks[f"kidney_{name}"] = kc
            self.an.landmarks[f"kidney_pelvis_{name}"] = pelvis_c
            top = kc + np.array([kr[0] * 0.95, 0, 0])
            ac = top + np.array([10, 12, -side * 16])
            self.blob(ac, (20, 11, max(4.0, 0.6 * self.vox)), f"adrenal_{name}", rot=rotation((1, 0.3, -0.3 * side), hint=(0, 0, 1)),
                      amp=0.05, over=soft_or_fat + (L["liver"], L["spleen"], L["stomach"]))
            self.an.landmarks[f"adrenal_{name}"] = ac
        # Bladder behind the pubis.
        f = float(self.rng.uniform(0.55, 1.3))
        br = (38 * f * self.hs, 38 * f, 48 * f)
        bz = 893 - br[0] / self.hs
        _, ya_c, _ = p.cavity(self.s(bz))
        bc = self.pt(bz, float(ya_c) - br[1] - 4, 0)
        self.blob(bc, br, "bladder", amp=0.04, over=soft_or_fat + (L["bowel"],))
        self.an.landmarks["bladder"] = bc
        # Ureters: renal pelvis → along the psoas → pelvic side wall → bladder base.
        for side, name in ((1, "right"), (-1, "left")):
            ys7, rs7 = p.spine(self.s(760))
            Ap, Cp, Bp = p.cav_centre(self.s(840))
            pts = [self.an.landmarks[f"kidney_pelvis_{name}"] + np.array([0, 4, -side * 12]),
                   self.pt(760, float(ys7 + rs7) + 4, side * (float(rs7) + 18)), self.pt(840, Cp - 0.25 * Bp, side * 0.62 * Ap),
                   bc + np.array([-0.55 * br[0], -0.6 * br[1], side * 0.35 * br[2]])]
            r_u = max(2.8, 0.5 * self.vox)
            for box, dist, _, t in tube_segments(g, pts, r_u):
                m = self.paint(box, dist < r_u, f"ureter_{name}", over=soft_or_fat + (L["bowel"],))
                self.region(f"ureter_{name}_t", box, np.where(m, t, np.nan).astype(np.float32))

    def _bowel(self, below) -> None:
        p, g, rng = self.p, self.g, self.rng
        over = (L["visceral_fat"],)
        # Small bowel: a persistent random walk confined to the central abdomen.
        A, C, B = p.cav_centre(self.s(760))
        centre = self.pt(752, C + 0.2 * B, 0)
        radii = np.array([105 * self.hs, 0.6 * B, 0.62 * A])
        pos, d = centre.copy(), rng.normal(size=3)
        pts = [pos.copy()]
        for _ in range(190):
            d = d / np.linalg.norm(d) + 0.8 * rng.normal(size=3)
            rel = (pos - centre) / radii
            if np.linalg.norm(rel) > 0.85:
                d -= 2.0 * rel / np.linalg.norm(rel)
            d /= np.linalg.norm(d)
            pos = pos + 13.0 * d
            pts.append(pos.copy())
        self.tube(pts, 13.0, "bowel", over=over)
        # Colon frame: caecum → ascending → transverse → descending → sigmoid → rectum.
        def c(s_ref, fy, fx, jit=7.0):
            Ac, Cc, Bc = p.cav_centre(self.s(s_ref))
            return self.pt(s_ref + self.j(jit), Cc + fy * Bc + self.j(jit), fx * Ac + self.j(jit))
        ys, rs = p.spine(self.s(860))
        colon = [c(805, 0.25, 0.62), c(760, -0.05, 0.74), c(self.dome_r + 140, 0.2, 0.62), c(690, 0.62, 0.35),
                 c(705, 0.66, -0.2), c(self.dome_l + 100, 0.1, -0.72), c(720, -0.2, -0.76), c(795, -0.05, -0.72),
                 c(835, 0.25, -0.3), c(855, -0.1, 0.05), self.pt(880, float(ys) + 30, 0), self.pt(915, float(ys) + 40, 0)]
        radii_c = [26, 22, 21, 21, 20, 20, 19, 18, 17, 16, 16, 14]
        for box, dist, rad, _ in tube_segments(g, colon, radii_c):
            m = self.paint(box, (dist < rad) & below(box), "bowel", over=over + (L["bowel"],))
            self.region("colon", box, m)

    def breasts(self) -> None:
        if self.sub.sex != "F":
            return
        p = self.p
        size = self.sub.breast_size
        for side, name in ((1, "right"), (-1, "left")):
            s_ref = 450 + 10 * size + self.j(5)
            a, ya, _, _ = p.frame(self.s(s_ref))
            x = side * 0.47 * float(a)
            yb = p.front_y(self.s(s_ref), x)
            r = ((52 + 22 * size) * self.hs, 22 + 42 * size, 58 + 22 * size)
            c = self.pt(s_ref, yb + 0.3 * r[1], x)
            rot = rotation((1.0, 0.0, 0.0), hint=(0, 1, 0))
            box, mask = self.blob(c, r, "breast", rot=rot, amp=0.05, over=(0, L["subcutaneous_fat"]),
                                  keep=lambda b, yb=yb: b.y > yb - 4)
            if box is not None and mask is not None and mask.any():
                gland = (ellipsoid_q(box, c, tuple(0.8 * v for v in r), rot) < 1) & (self.fine_field.sample(box) > -0.2 + 0.4 * (1.2 - size)) & mask
                self.region("breast_gland", box, gland)
            self.an.landmarks[f"breast_{name}"] = c

    # ---------------------------------------------------------------- lymph-node stations
    def nodes(self) -> None:
        p = self.p
        st: dict[str, list[np.ndarray]] = {k: [] for k in ("cervical", "axillary", "mediastinal", "hilar", "paraaortic", "iliac", "inguinal")}
        for side in (1, -1):
            cerv = []
            for s_ref, fx, fy in ((205, 0.66, 0.15), (240, 0.72, 0.05), (272, 0.75, -0.05)):
                a, ya, yp, cy0 = p.frame(self.s(s_ref))
                cerv.append(self.pt(s_ref, cy0 + fy * (ya - yp) / 2, side * fx * float(a)))
            a3, _, _, cy3 = p.frame(self.s(298))
            cerv.append(self.pt(298, cy3, side * (0.45 * float(a3) + 8)))
            st["cervical"].append(np.array(cerv))
            ax = []
            for s_ref, fy, dx in ((335, 0.2, 16), (360, 0.0, 20), (386, -0.2, 14)):
                A, C, B = p.cav_centre(self.s(s_ref))
                ax.append(self.pt(s_ref, C + fy * B, side * (A + dx)))
            st["axillary"].append(np.array(ax))
            hil = self.an.landmarks[f"hilum_{'right' if side > 0 else 'left'}"]
            st["hilar"].append(np.array([hil + np.array([0, 8, side * 6]), hil + np.array([-22, 6, side * 12])]))
            aor, rad = self.aorta
            sel = aor[-4:]
            st["paraaortic"].append(sel + np.array([0, 2, side * (rad[-1] + 9)]) + np.array([0, 0, 0 if side < 0 else 4]))
            il = self.iliac[side][1:]
            st["iliac"].append(il + np.array([0, 4, side * 11]))
            ing = []
            for s_ref, fx in ((895, 0.45), (915, 0.52), (935, 0.56)):
                a, _, _, _ = p.frame(self.s(895))
                x = side * fx * float(a)
                t = self.sub.subcut_fat_mm * (1.25 if self.sub.sex == "F" else 0.9)
                ing.append(self.pt(s_ref, p.front_y(self.s(s_ref), x) + 0.45 * t + 3, x))
            st["inguinal"].append(np.array(ing))
        ys3, rs3 = p.spine(self.s(440))
        ytr = self.trachea_y
        st["mediastinal"] = [np.array([self.pt(355, ytr + 2, 14), self.pt(400, ytr + 4, 16), self.pt(440, float(ys3 + rs3) + 16, 4)]),
                             np.array([self.pt(392, ytr + 10, -24), self.pt(440, float(ys3 + rs3) + 16, -6)])]
        self.an.stations = st
        over = _SOFT + (L["breast"],)
        counts = {"cervical": 4, "axillary": 3, "mediastinal": 3, "hilar": 2, "paraaortic": 4, "iliac": 3, "inguinal": 3}
        for name, lines in st.items():
            label = "nodes_mediastinal" if name == "hilar" else f"nodes_{name}"
            for line in lines:
                for u in np.linspace(0.1, 0.9, counts[name]):
                    c = point_on(line, float(u)) + self.rng.normal(0, 3, 3)
                    r = max(3.5, 0.55 * self.vox) * float(self.rng.uniform(0.9, 1.3))
                    self.blob(c, (1.5 * r, r, r), label, amp=0.0, over=over)

    def head_neck_glands(self) -> None:
        """Parotid and submandibular glands, palatine tonsils and the thyroid: physiological FDG uptake in the
        neck that mimics nodes (recorded as regions; their organ label stays the surrounding tissue)."""
        _, yat, _, cyt = self.p.frame(self.s(262))
        glands = [("salivary_tonsils", (150, -8, 52), (26, 14, 11)), ("salivary_tonsils", (198, 22, 34), (11, 11, 11)),
                  ("salivary_tonsils", (172, 22, 15), (9, 7, 7)), ("thyroid", (262, None, 15), (20, 8, 9))]
        for name, (s_ref, y, x), radii in glands:
            for side in (1, -1):
                yy = cyt + 0.62 * (float(yat) - cyt) if y is None else y * self.sub.depth
                c = self.pt(s_ref, yy, side * x * self.sub.frame)
                r = (radii[0] * self.hs, max(radii[1], 0.6 * self.vox), max(radii[2], 0.6 * self.vox))
                box = ellipsoid_box(self.g, c, r)
                if box is None:
                    continue
                m = (ellipsoid_q(box, c, r) < 1) & np.isin(self.lab[box.slices], _SOFT)
                if m.any():
                    self.region(name, box, m)
        # The vocal cords: a thin fold on each side of the glottis (uptake with speech; painted only by the wide
        # spectrum, see unipet.data.phantom.spectrum). No random draw, so the default phantom is unchanged.
        for side in (1, -1):
            c = self.glottis + np.array([0.0, 0.0, side * 6.0 * self.sub.frame])
            r = (max(9.0 * self.hs, 0.6 * self.vox), max(3.0, 0.6 * self.vox), max(4.0, 0.6 * self.vox))
            box = ellipsoid_box(self.g, c, r)
            if box is None:
                continue
            m = (ellipsoid_q(box, c, r) < 1) & np.isin(self.lab[box.slices], _SOFT + (L["airway"],))
            if m.any():
                self.region("vocal_cords", box, m)

    def brown_fat(self) -> None:
        if not self.sub.brown_fat:
            return
        g = self.g
        for side in (1, -1):
            a, _, _, cy0 = self.p.frame(self.s(300))
            c = self.pt(295, cy0 - 5, side * (0.55 * float(a) + 20))
            box = g.box(c - np.array([35, 40, 40]), c + np.array([35, 40, 40]))
            if box is None:
                continue
            q = ellipsoid_q(box, c, (35, 30, 30))
            m = (q < 1) & (self.fine_field.sample(box) > 0.3)
            m &= np.isin(self.lab[box.slices], (L["subcutaneous_fat"], L["muscle"]))
            self.region("brown_fat", box, m)

    def build(self) -> Anatomy:
        self.body()
        self.skull()
        self.spine()
        self.ribs_sternum()
        self.shoulder_girdle_and_limbs()
        self.pelvis()
        self.thorax()
        self.lungs()
        self.abdomen()
        self.breasts()
        self.nodes()
        self.head_neck_glands()
        self.brown_fat()
        return self.an


def point_on(line: np.ndarray, u: float) -> np.ndarray:
    """The point at fraction ``u`` ∈ [0, 1] of a polyline's arc length."""
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    t = u * arc[-1]
    i = int(np.clip(np.searchsorted(arc, t) - 1, 0, len(seg) - 1))
    f = (t - arc[i]) / max(seg[i], 1e-9)
    return line[i] + f * (line[i + 1] - line[i])


def build_anatomy(subject: Subject, grid: Grid, rng: np.random.Generator) -> Anatomy:
    """Build the organ map of one subject on ``grid`` (world ``z = 0`` is the vertex; see the module docstring).

    Returns:
        An :class:`Anatomy` whose ``organs`` is uint8 ``grid.shape`` with values from ``ORGAN_LABELS``.
    """
    return _Builder(subject, grid, rng).build()
