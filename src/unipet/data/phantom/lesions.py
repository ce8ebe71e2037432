"""Phantom lesions: metastatic patterns per cancer type, and their rasterisation into masks and uptake.

A *plan* (list of :class:`LesionSpec`) says what a patient has — site, diameter, true peak SUV, CT
appearance, necrosis, spiculation — following each cancer's typical spread and FDG avidity:

- ``lung_cancer``: spiculated lung primary, ipsilateral hilar and mediastinal nodes, adrenal, lytic bone,
  brain and liver metastases, contralateral lung nodules; high avidity.
- ``lymphoma``: chains of enlarged nodes along 1–6 stations, bulky mediastinal / para-aortic masses, splenic
  and bone-marrow foci (CT-occult); high, homogeneous avidity (an indolent quarter is low-grade).
- ``melanoma``: scattered subcutaneous nodules, nodal, small lung nodules, liver, bone, brain; variable avidity.
- ``breast_cancer``: breast primary, ipsilateral axillary nodes, bone-dominant (mostly sclerotic)
  metastases, liver and lung; low to moderate avidity (the hardest task).
- ``soft_tissue_sarcoma`` (only with the wide spectrum, see ``unipet.data.phantom.spectrum``): one large
  primary in the muscle of a limb (thigh or arm; the trunk wall where no limb is in view), 30-160 mm, peak SUV
  3-22, most often with a necrotic low-uptake centre and heterogeneous uptake; lung metastases in 15 %. Extremity
  sarcomas are mostly in the thigh and proximal limbs (Brennan et al., Ann Surg 260:416, 2014); the sizes, SUV
  range and necrosis follow the 35 real sarcomas of ``../shared/real_sts_fdg`` (MTV 17 mL-2.3 L, SUVmax up to
  ~22) and Eary et al., J Nucl Med 49:1973 (2008); lung is the usual first metastatic site.

``widen_plan`` adds the wide spectrum's findings to any plan: a bulky heterogeneous necrotic mass of modest SUV
and skeletal-muscle metastases (reasons and citations in ``unipet.data.phantom.spectrum``).

Rasterisation turns a spec into an irregular, heterogeneous object: an ellipsoid of random aspect and
orientation whose surface is perturbed by smooth noise (plus fine spikes when spiculated), clipped to the
tissue the lesion can occupy, with uptake falling off towards the rim, texture, and a cold necrotic core
for large lesions. The lesion mask is the support of that object on the voxel grid.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from unipet.data.organs import ORGAN_LABELS, label_name, label_values
from unipet.data.phantom.anatomy import Anatomy, point_on
from unipet.data.phantom.geometry import SmoothField, ellipsoid_q, random_rotation, smoothstep

NODE_STATIONS = ("cervical", "axillary", "mediastinal", "hilar", "paraaortic", "iliac", "inguinal")

# Site → (labels a lesion may occupy, label the lesion's voxels get in the organ map or None to keep).
_NODE_ROOM = ("subcutaneous_fat", "muscle", "visceral_fat", "nodes", "breast")
SITE_TISSUE: dict[str, tuple[tuple[str, ...], str | None]] = {
    "lung": (("lung",), None),
    "liver": (("liver",), None),
    "spleen": (("spleen",), None),
    "brain": (("brain",), None),
    "breast": (("breast",), None),
    "adrenal": (("adrenal", "visceral_fat"), "adrenal"),
    "bone": (("bone",), None),
    "marrow": (("spine", "pelvis", "long_bones"), None),
    "subcutaneous": (("subcutaneous_fat",), None),
    "muscle": (("muscle",), None),
    "limb": (("muscle", "subcutaneous_fat"), None),
    **{f"node_{s}": (_NODE_ROOM + (("lung",) if s in ("mediastinal", "hilar") else ()),
                     "nodes_mediastinal" if s == "hilar" else f"nodes_{s}") for s in NODE_STATIONS},
}
# Labels whose voxels a site's centre is drawn from (nodes use the station polylines instead).
SITE_HOST: dict[str, tuple[str, ...]] = {
    "lung": ("lung",), "liver": ("liver",), "spleen": ("spleen",), "brain": ("brain",), "breast": ("breast",),
    "bone": ("bone",), "marrow": ("spine", "pelvis"), "subcutaneous": ("subcutaneous_fat",), "muscle": ("muscle",),
    "limb": ("muscle",),
}
# Limb axes (landmark pairs) near which a ``limb`` lesion's centre is drawn, and how near (mm).
_LIMB_AXES = tuple((f"{a}_{side}", f"{b}_{side}") for side in ("right", "left")
                   for a, b in (("femoral_head", "knee"), ("shoulder", "elbow"), ("elbow", "wrist")))
_LIMB_REACH_MM = 45.0
# Relative frequency of bone metastases by bone.
_BONE_WEIGHTS = {"spine": 0.40, "pelvis": 0.25, "ribs": 0.12, "long_bones": 0.09, "skull": 0.05, "sternum": 0.04,
                 "shoulder_girdle": 0.05}


@dataclass(frozen=True)
class LesionSpec:
    """What one lesion is, before it is placed on a grid.

    Attributes:
        site: ``lung``, ``liver``, ``spleen``, ``brain``, ``breast``, ``adrenal``, ``bone``, ``marrow``,
            ``subcutaneous`` or ``node_<station>``.
        diameter_mm: nominal diameter (mm). suv: true peak SUV (before the scanner's blur).
        ct: CT appearance: ``solid``, ``hypodense``, ``sclerotic``, ``lytic``, ``mixed``, ``occult``, ``brain``.
        necrotic: has a cold necrotic core. spiculated: has spiky margins. primary: is the primary tumour.
        side: +1 right / -1 left / 0 either, for lateralised sites. chain: index along a nodal chain (lymphoma).
        anchor: fraction along the station polyline (nodes), or None to draw one.
        heterogeneity: extra texture amplitude of the uptake (0: the default rasterisation); above 0 the necrotic
            core is also wider (50-85 % of the radius) and colder — the wide spectrum's bulky masses.
    """

    site: str
    diameter_mm: float
    suv: float
    ct: str = "solid"
    necrotic: bool = False
    spiculated: bool = False
    primary: bool = False
    side: int = 0
    anchor: float | None = None
    line: int | None = None
    heterogeneity: float = 0.0


@dataclass
class Lesion:
    """A rasterised lesion: its spec, world centre (z y x mm), boolean ``mask`` and true-SUV ``activity`` on
    ``slices`` of the grid, and the organ label name at its centre before relabelling."""

    spec: LesionSpec
    centre: np.ndarray
    slices: tuple[slice, slice, slice]
    mask: np.ndarray
    activity: np.ndarray
    organ: str = ""


# ------------------------------------------------------------------------------------------------ plans
def _logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _u(rng, lo, hi) -> float:
    return float(rng.uniform(lo, hi))


def _big(rng, d: float, p: float) -> bool:
    return bool(d > 30 and rng.random() < p)


def plan_lesions(task: str, rng: np.random.Generator, female: bool = True) -> list[LesionSpec]:
    """Draw the lesions of a cancer-positive patient of ``task`` (see the module docstring)."""
    plans = {"lung_cancer": _plan_lung, "lymphoma": _plan_lymphoma, "melanoma": _plan_melanoma,
             "breast_cancer": _plan_breast, "soft_tissue_sarcoma": _plan_sarcoma}
    if task not in plans:
        raise KeyError(f"no lesion pattern for task {task!r}; phantom tasks: {', '.join(plans)}")
    avidity = float(np.exp(rng.normal(0, 0.2)))
    specs = plans[task](rng, female) if task == "breast_cancer" else plans[task](rng)
    return [replace(s, suv=round(s.suv * avidity, 3)) for s in specs]


def _plan_lung(rng) -> list[LesionSpec]:
    side = int(rng.choice((-1, 1)))
    d = _logu(rng, 15, 70)
    out = [LesionSpec("lung", d, _u(rng, 6, 20), "solid", _big(rng, d, 0.6), rng.random() < 0.7, True, side)]
    for _ in range(rng.poisson(1.2)):
        out.append(LesionSpec("node_hilar", _logu(rng, 10, 30), _u(rng, 4, 14), side=side))
    for _ in range(rng.poisson(1.5)):
        out.append(LesionSpec("node_mediastinal", _logu(rng, 10, 35), _u(rng, 4, 14)))
    if rng.random() < 0.15:
        out.append(LesionSpec("node_cervical", _logu(rng, 10, 25), _u(rng, 4, 12), side=side))
    if rng.random() < 0.2:
        d = _logu(rng, 10, 45)
        out.append(LesionSpec("adrenal", d, _u(rng, 4, 12), "solid", _big(rng, d, 0.4)))
    if rng.random() < 0.3:
        for _ in range(1 + rng.poisson(1.5)):
            out.append(LesionSpec("bone", _logu(rng, 8, 35), _u(rng, 4, 12), "lytic" if rng.random() < 0.7 else "mixed"))
    if rng.random() < 0.1:
        for _ in range(int(rng.integers(1, 3))):
            out.append(LesionSpec("brain", _logu(rng, 6, 25), _u(rng, 11, 16), "brain"))
    if rng.random() < 0.2:
        for _ in range(1 + rng.poisson(1.5)):
            d = _logu(rng, 8, 45)
            out.append(LesionSpec("liver", d, _u(rng, 4, 12), "hypodense", _big(rng, d, 0.5)))
    if rng.random() < 0.2:
        for _ in range(1 + rng.poisson(2)):
            out.append(LesionSpec("lung", _logu(rng, 4, 20), _u(rng, 3, 10), side=-side))
    return out


def _plan_lymphoma(rng) -> list[LesionSpec]:
    indolent = rng.random() < 0.25
    lo, hi = (3.0, 8.0) if indolent else (8.0, 25.0)
    stations = ("cervical", "axillary", "mediastinal", "paraaortic", "iliac", "inguinal")
    weights = np.array([0.25, 0.15, 0.25, 0.15, 0.1, 0.1])
    n_stations = min(int(rng.geometric(0.45)), 6)
    out: list[LesionSpec] = []
    for st in rng.choice(stations, size=n_stations, replace=False, p=weights):
        side = int(rng.choice((-1, 1)))
        u, n = _u(rng, 0.0, 0.6), int(rng.integers(1, 7))
        line = int(rng.integers(0, 2))
        for k in range(n):
            d = _logu(rng, 12, 40)
            out.append(LesionSpec(f"node_{st}", d, _u(rng, lo, hi), side=side, anchor=min(u + 0.14 * k, 1.0), line=line))
    if rng.random() < 0.3:
        d = _u(rng, 50, 80)
        out.append(LesionSpec(f"node_{rng.choice(('mediastinal', 'paraaortic'))}", d, _u(rng, lo, hi),
                              necrotic=_big(rng, d, 0.3)))
    if rng.random() < 0.25:
        for _ in range(int(rng.integers(1, 6))):
            out.append(LesionSpec("spleen", _logu(rng, 8, 30), _u(rng, max(lo, 5), hi * 0.7), "hypodense"))
    if rng.random() < 0.15:
        for _ in range(int(rng.integers(2, 9))):
            out.append(LesionSpec("marrow", _logu(rng, 6, 20), _u(rng, max(lo, 4), hi * 0.6), "occult"))
    if rng.random() < 0.05:
        out.append(LesionSpec("lung", _logu(rng, 10, 35), _u(rng, lo, hi)))
    if rng.random() < 0.08:
        out.append(LesionSpec("liver", _logu(rng, 10, 40), _u(rng, lo, hi), "hypodense"))
    return out


def _plan_melanoma(rng) -> list[LesionSpec]:
    out: list[LesionSpec] = []
    for _ in range(rng.poisson(1.5)):
        out.append(LesionSpec("subcutaneous", _logu(rng, 5, 30), _u(rng, 4, 15)))
    stations = ("axillary", "inguinal", "cervical", "iliac", "paraaortic", "mediastinal")
    for _ in range(rng.poisson(1.5)):
        st = rng.choice(stations, p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
        d = _logu(rng, 8, 35)
        out.append(LesionSpec(f"node_{st}", d, _u(rng, 4, 16), necrotic=_big(rng, d, 0.5)))
    if rng.random() < 0.4:
        for _ in range(1 + rng.poisson(2)):
            out.append(LesionSpec("lung", _logu(rng, 3, 15), _u(rng, 3, 12)))
    if rng.random() < 0.3:
        for _ in range(1 + rng.poisson(2)):
            d = _logu(rng, 6, 40)
            out.append(LesionSpec("liver", d, _u(rng, 4, 14), "hypodense", _big(rng, d, 0.5)))
    if rng.random() < 0.15:
        for _ in range(int(rng.integers(1, 4))):
            out.append(LesionSpec("bone", _logu(rng, 8, 30), _u(rng, 4, 12), "lytic"))
    if rng.random() < 0.1:
        out.append(LesionSpec("brain", _logu(rng, 5, 20), _u(rng, 11, 15), "brain"))
    if rng.random() < 0.1:
        out.append(LesionSpec("spleen", _logu(rng, 6, 25), _u(rng, 4, 12), "hypodense"))
    if rng.random() < 0.1:
        out.append(LesionSpec("adrenal", _logu(rng, 10, 35), _u(rng, 4, 12)))
    if not out:
        out.append(LesionSpec("subcutaneous", _logu(rng, 5, 30), _u(rng, 4, 15)))
    return out


def _plan_breast(rng, female: bool) -> list[LesionSpec]:
    side = int(rng.choice((-1, 1)))
    out: list[LesionSpec] = []
    if female and rng.random() < 0.7:
        d = _logu(rng, 10, 45)
        out.append(LesionSpec("breast", d, _u(rng, 2, 8), "solid", _big(rng, d, 0.3), rng.random() < 0.6, True, side))
    if rng.random() < 0.6:
        for _ in range(1 + rng.poisson(1)):
            out.append(LesionSpec("node_axillary", _logu(rng, 8, 25), _u(rng, 2, 6), side=side))
    if rng.random() < 0.15:
        out.append(LesionSpec("node_mediastinal", _logu(rng, 8, 20), _u(rng, 2, 5)))
    if rng.random() < 0.1:
        out.append(LesionSpec("node_cervical", _logu(rng, 8, 20), _u(rng, 2, 5), side=side))
    if rng.random() < 0.6:
        for _ in range(1 + rng.poisson(3)):
            kind = rng.choice(("sclerotic", "mixed", "lytic"), p=[0.7, 0.2, 0.1])
            out.append(LesionSpec("bone", _logu(rng, 8, 35), _u(rng, 2.5, 8), str(kind)))
    if rng.random() < 0.2:
        for _ in range(1 + rng.poisson(1.5)):
            out.append(LesionSpec("liver", _logu(rng, 8, 35), _u(rng, 2.5, 7), "hypodense"))
    if rng.random() < 0.15:
        for _ in range(1 + rng.poisson(1.5)):
            out.append(LesionSpec("lung", _logu(rng, 4, 15), _u(rng, 1.5, 5)))
    if not out:
        out.append(LesionSpec("bone", _logu(rng, 8, 35), _u(rng, 2.5, 8), "sclerotic"))
    return out


def _plan_sarcoma(rng) -> list[LesionSpec]:
    d = _logu(rng, 30, 160)
    necrotic = rng.random() < 0.65
    out = [LesionSpec("limb", d, _logu(rng, 3, 22), "solid", necrotic, False, True,
                      heterogeneity=float(rng.uniform(0.1, 0.3)) if necrotic else 0.0)]
    if rng.random() < 0.15:
        for _ in range(1 + rng.poisson(1.5)):
            out.append(LesionSpec("lung", _logu(rng, 4, 20), _u(rng, 2, 8)))
    return out


def widen_plan(specs: list[LesionSpec], bulky: float, muscle: float, rng: np.random.Generator) -> list[LesionSpec]:
    """A plan with the wide spectrum's additions (see ``unipet.data.phantom.spectrum``), drawn from ``rng``.

    With probability ``bulky`` the largest lesion becomes a bulky heterogeneous mass of modest SUV (50-120 mm,
    peak SUV 3-9 but never above the lesion's own — a bulky mass is no more avid than its type —, necrotic,
    ``heterogeneity`` 0.15-0.35); with probability ``muscle`` a skeletal-muscle metastasis
    (10-45 mm, peak SUV 3-12) is appended. Every draw is made for every plan, so the streams stay aligned.
    """
    out = list(specs)
    make_bulky, diameter, suv, het = rng.random() < bulky, _u(rng, 50, 120), _u(rng, 3, 9), _u(rng, 0.15, 0.35)
    add_muscle, m_diameter, m_suv = rng.random() < muscle, _logu(rng, 10, 45), _u(rng, 3, 12)
    if make_bulky and out:
        i = int(np.argmax([s.diameter_mm for s in out]))
        out[i] = replace(out[i], diameter_mm=diameter, suv=min(suv, out[i].suv), necrotic=True, heterogeneity=het,
                         ct="hypodense" if out[i].ct == "hypodense" else "solid")
    if add_muscle and out:
        out.append(LesionSpec("muscle", m_diameter, m_suv, "solid", necrotic=m_diameter > 30))
    return out


# ------------------------------------------------------------------------------------------------ placement
class _Sampler:
    """Draws lesion centres inside host tissue, preferring voxels deep enough for the lesion's radius."""

    def __init__(self, anatomy: Anatomy, rng: np.random.Generator):
        self.an, self.rng = anatomy, rng
        self._cache: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}

    def _depth(self, labels: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices of a tissue's voxels and their depth (mm) from its surface."""
        if labels not in self._cache:
            organs = self.an.organs
            mask = np.isin(organs, labels)
            if not mask.any():
                self._cache[labels] = (np.zeros(0, np.int64), np.zeros(0))
            else:
                sl = ndimage.find_objects(mask.astype(np.uint8))[0]
                sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
                local = mask[sl]
                depth = ndimage.distance_transform_edt(local, sampling=self.an.grid.spacing)
                idx = np.nonzero(local)
                full = np.ravel_multi_index(tuple(i + s.start for i, s in zip(idx, sl)), organs.shape)
                self._cache[labels] = (full, depth[idx])
        return self._cache[labels]

    def organ_point(self, labels: tuple[int, ...], radius: float, side: int = 0) -> np.ndarray | None:
        flat, depth = self._depth(labels)
        if flat.size == 0:
            return None
        if side:
            zyx = np.unravel_index(flat, self.an.organs.shape)
            xw = self.an.grid.origin[2] + self.an.grid.spacing[2] * zyx[2]
            keep = np.sign(xw) == side
            if keep.any():
                flat, depth = flat[keep], depth[keep]
        want = min(0.6 * radius, 0.7 * float(depth.max()))
        ok = np.flatnonzero(depth >= want)
        pick = flat[ok[self.rng.integers(ok.size)]] if ok.size else flat[self.rng.integers(flat.size)]
        idx = np.unravel_index(pick, self.an.organs.shape)
        jitter = self.rng.uniform(-0.5, 0.5, 3) * np.asarray(self.an.grid.spacing)
        return self.an.grid.world(idx) + jitter

    def limb_point(self, radius: float) -> np.ndarray | None:
        """A centre in limb muscle: within ``_LIMB_REACH_MM`` of a thigh or arm axis (any muscle if no limb is in
        the field of view: the trunk wall, also a sarcoma site)."""
        labels = _host_labels(SITE_HOST["limb"])
        flat, depth = self._depth(labels)
        if flat.size == 0:
            return None
        axes = [(self.an.landmarks[a], self.an.landmarks[b]) for a, b in _LIMB_AXES
                if a in self.an.landmarks and b in self.an.landmarks]
        if axes:
            world = np.stack(np.unravel_index(flat, self.an.organs.shape), 1) * np.asarray(self.an.grid.spacing) \
                + np.asarray(self.an.grid.origin)
            near = np.zeros(flat.size, bool)
            for a, b in axes:
                t = np.clip((world - a) @ (b - a) / max(float((b - a) @ (b - a)), 1e-9), 0, 1)
                near |= np.linalg.norm(world - (a + t[:, None] * (b - a)), axis=1) < _LIMB_REACH_MM
            if near.any():
                flat, depth = flat[near], depth[near]
        want = min(0.6 * radius, 0.7 * float(depth.max()))
        ok = np.flatnonzero(depth >= want)
        pick = flat[ok[self.rng.integers(ok.size)]] if ok.size else flat[self.rng.integers(flat.size)]
        return self.an.grid.world(np.unravel_index(pick, self.an.organs.shape))

    def node_point(self, station: str, spec: LesionSpec) -> np.ndarray | None:
        lines = self.an.stations.get(station, [])
        if not lines:
            return None
        if spec.side and len(lines) == 2 and station not in ("mediastinal",):
            # Bilateral stations are stored right (index 0) then left (index 1).
            line = lines[0 if spec.side > 0 else 1]
        elif spec.line is not None:
            line = lines[spec.line % len(lines)]
        else:
            line = lines[int(self.rng.integers(len(lines)))]
        u = spec.anchor if spec.anchor is not None else float(self.rng.uniform(0, 1))
        return point_on(line, u) + self.rng.normal(0, 4.0, 3)


def _host_labels(names: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(sorted(label_values(*names)))


def place_lesions(specs: list[LesionSpec], anatomy: Anatomy, rng: np.random.Generator,
                  scale: np.ndarray | None = None) -> list[Lesion]:
    """Place and rasterise lesions; later lesions only take voxels no earlier lesion holds.

    Args:
        specs: the plan. anatomy: where to put them. rng: placement and shape stream.
        scale: optional per-lesion diameter factors (follow-up response); a lesion scaled below 3 mm vanishes.
            Placement draws are made before scaling, so a follow-up of the same plan puts lesions at the same
            places as the baseline.

    Returns:
        Lesions with a non-empty mask, in plan order. The organ map is relabelled for nodal and adrenal lesions.
    """
    sampler = _Sampler(anatomy, rng)
    grid, organs = anatomy.grid, anatomy.organs
    claimed = np.zeros(grid.shape, bool)
    out: list[Lesion] = []
    for i, spec in enumerate(specs):
        # Every draw happens for every lesion (also vanished ones) so that streams stay aligned across visits.
        bone_pick = rng.choice(list(_BONE_WEIGHTS), p=np.array(list(_BONE_WEIGHTS.values())) / sum(_BONE_WEIGHTS.values()))
        shape_seed = int(rng.integers(2 ** 63))
        if spec.site.startswith("node_"):
            centre = sampler.node_point(spec.site[5:], spec)
        elif spec.site == "limb":
            centre = sampler.limb_point(spec.diameter_mm / 2)
        elif spec.site == "adrenal":
            side = spec.side or int(rng.choice((-1, 1)))
            centre = anatomy.landmarks[f"adrenal_{'right' if side > 0 else 'left'}"] + rng.normal(0, 2, 3)
        else:
            host = (str(bone_pick),) if spec.site == "bone" else SITE_HOST[spec.site]
            centre = sampler.organ_point(_host_labels(host), spec.diameter_mm / 2, spec.side)
        d = spec.diameter_mm * (1.0 if scale is None else float(scale[i]))
        if centre is None or d < 3.0:
            continue
        spec_i = replace(spec, diameter_mm=d)
        lesion = _rasterise(spec_i, centre, anatomy, claimed, np.random.default_rng(shape_seed))
        if lesion is None:
            continue
        claimed[lesion.slices] |= lesion.mask
        relabel = SITE_TISSUE[spec.site][1]
        if relabel == "adrenal":
            relabel = "adrenal_right" if centre[2] > 0 else "adrenal_left"
        if relabel is not None:
            organs[lesion.slices][lesion.mask] = ORGAN_LABELS[relabel]
        out.append(lesion)
    return out


def _rasterise(spec: LesionSpec, centre: np.ndarray, anatomy: Anatomy, claimed: np.ndarray,
               rng: np.random.Generator) -> Lesion | None:
    grid = anatomy.grid
    r = spec.diameter_mm / 2
    aspect = np.exp(rng.normal(0, 0.15, 3))
    radii = r * aspect / np.prod(aspect) ** (1 / 3)
    rot = random_rotation(rng)
    half = 1.6 * radii.max() + max(grid.spacing)
    box = grid.box(centre - half, centre + half)
    if box is None:
        return None
    amp = float(rng.uniform(0.08, 0.22))
    coarse = SmoothField(rng, centre - half, centre + half, max(0.7 * r, 2.0))
    q = ellipsoid_q(box, centre, radii, rot)
    shape_noise = coarse.sample(box)
    qp = q - amp * shape_noise
    if spec.spiculated:
        spikes = SmoothField(rng, centre - half, centre + half, max(0.22 * r, 1.5)).sample(box)
        qp = qp - 0.5 * np.clip(spikes - 0.7, 0, None) * smoothstep(q, 0.6, 0.9)
    tissue = _host_labels(SITE_TISSUE[spec.site][0])
    if spec.site == "bone":
        tissue = _host_labels(("bone",))
    lut = np.zeros(256, bool)
    lut[list(tissue)] = True
    room = lut[anatomy.organs[box.slices]] & ~claimed[box.slices]
    mask = (qp < 1.0) & room
    if not mask.any():
        ci = grid.index(centre)
        local = tuple(c - s.start for c, s in zip(ci, box.slices))
        if not (0 <= min(local) and all(l_ < n for l_, n in zip(local, box.shape)) and room[local]):
            return None
        mask[local] = True
    texture = SmoothField(rng, centre - half, centre + half, max(r / 3, 1.5)).sample(box)
    profile = (1.0 - 0.3 * np.clip(qp, 0, 1) ** 2) * (1.0 + (0.12 + spec.heterogeneity) * texture)
    if spec.necrotic:
        core = float(rng.uniform(0.35, 0.6))
        cold = float(rng.uniform(0.12, 0.35))
        if spec.heterogeneity > 0:  # a wide necrotic centre (drawn after the default draws: streams stay aligned)
            core, cold = float(rng.uniform(0.5, 0.85)), float(rng.uniform(0.08, 0.3))
        profile = profile * (cold + (1 - cold) * smoothstep(qp, core - 0.08, core + 0.08))
    activity = np.where(mask, spec.suv * np.clip(profile, 0.05, None), 0.0).astype(np.float32)
    tight = box.sub(mask)
    local = tuple(slice(b.start - a.start, b.stop - a.start) for b, a in zip(tight.slices, box.slices))
    ci = grid.index(centre)
    return Lesion(spec, np.asarray(centre, dtype=np.float64), tight.slices, mask[local].copy(), activity[local].copy(),
                  organ=label_name(int(anatomy.organs[ci])))
