"""Image synthesis for the phantom: FDG activity (SUV) and CT attenuation (HU) from an organ map and lesions.

PET: per-organ physiological uptake drawn per scan (brain grey matter ~7–11 with cooler white matter,
myocardium anywhere from suppressed to intense, renal pelvis, ureteric boluses and bladder urine 10–60,
patchy bowel, liver ~2.2, blood pool ~1.7, red marrow, muscle ~0.75, fat ~0.3, salivary glands and tonsils
2–4.5, thyroid, optional brown fat), smooth
tissue heterogeneity, lesions written over it, then the scanner: a Gaussian PSF (5–7 mm FWHM) and
reconstruction-like noise — Gaussian, spatially correlated, with variance proportional to the local mean
activity (a multiplicative, Poisson-like model) scaled by a per-scan count level. Output SUV float32 ≥ 0.

CT (low-dose, non-contrast, as on the PET grid): tissue HU with texture (fat −100, muscle 45, liver 58,
lung −850 with a gravity gradient and branching vessels, cortical 700–1200 / trabecular 150–300 bone,
gas in stomach and colon, air −1000 outside, the patient table), lesion appearance by site (solid nodules
and nodes, hypodense liver/spleen lesions, sclerotic/lytic/mixed bone lesions), slight blur and noise.

The wide spectrum (``unipet.data.phantom.spectrum``, reasons and citations there) widens the scanner
(``widen_scan``: PSF 4–9 mm FWHM, noise 0.7–1.8 x) and the head and neck (``synthesize(head_neck_rng=...)``:
tonsils and salivary glands up to SUV 7, vocal-cord uptake of SUV 2–6 in a third of patients), drawing from its
own stream after the default draws, so that the default images are unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from unipet.data.organs import ORGAN_LABELS as L
from unipet.data.organs import label_values
from unipet.data.phantom.anatomy import Anatomy
from unipet.data.phantom.clinical import Subject
from unipet.data.phantom.geometry import Box, SmoothField, ellipsoid_q, smoothstep
from unipet.data.phantom.lesions import Lesion

# Baseline CT numbers (HU) per label; bones give their trabecular value (cortex is added at bone surfaces).
_HU: dict[str, float] = {
    "subcutaneous_fat": -100, "muscle": 45, "visceral_fat": -95, "brain": 34, "skull": 600, "lung_left": -850,
    "lung_right": -850, "airway": -1000, "heart_myocardium": 42, "heart_blood_pool": 40, "aorta": 40,
    "iliac_arteries": 40, "liver": 58, "spleen": 48, "stomach": 12, "bowel": 20, "kidney_left": 32,
    "kidney_right": 32, "adrenal_left": 25, "adrenal_right": 25, "ureter_left": 10, "ureter_right": 10,
    "bladder": 8, "spine": 230, "spinal_cord": 30, "ribs": 300, "sternum": 250, "shoulder_girdle": 300,
    "pelvis": 220, "long_bones": 250, "breast": -90, "nodes_cervical": 35, "nodes_axillary": 35,
    "nodes_mediastinal": 35, "nodes_paraaortic": 35, "nodes_iliac": 35, "nodes_inguinal": 35,
}
_BONES = label_values("bone")


@dataclass(frozen=True)
class ScanSettings:
    """Per-scan physiology and scanner draws (units: SUV, HU, mm)."""

    suv: dict[str, float]
    urine_kidney: float
    ureter_peak: float
    brown_fat_suv: float
    psf_fwhm_mm: float
    noise_cov_liver: float
    ct_noise_hu: float


def sample_scan(rng: np.random.Generator, subject: Subject, voxel_ml: float) -> ScanSettings:
    """Draw one scan's physiological uptake and image quality for a subject."""
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    blood = u(1.45, 1.95)
    liver = u(1.9, 2.6)
    marrow = u(1.3, 2.2)
    fat = u(0.22, 0.4)
    myo_mode = rng.choice(3, p=[0.35, 0.35, 0.30])
    myo = (u(1.2, 3.0), u(3.0, 7.0), u(7.0, 12.0))[myo_mode]
    nodes = u(0.9, 1.5)
    suv = {
        "subcutaneous_fat": fat, "visceral_fat": fat * 1.15, "muscle": u(0.6, 0.9), "brain": u(7.0, 10.5),
        "skull": 0.6, "lung_left": u(0.35, 0.6), "airway": 0.0, "heart_myocardium": myo,
        "heart_blood_pool": blood, "aorta": blood, "iliac_arteries": blood * 0.95, "liver": liver,
        "spleen": liver * u(0.72, 0.95), "stomach": u(1.4, 3.0), "bowel": u(1.4, 2.4), "kidney_left": u(2.5, 4.0),
        "adrenal_left": u(1.3, 2.0), "ureter_left": u(1.2, 2.5), "bladder": u(15.0, 60.0), "spine": marrow,
        "spinal_cord": u(1.3, 1.9), "ribs": 0.9, "sternum": marrow * 0.9, "shoulder_girdle": 0.8,
        "pelvis": marrow * 0.95, "long_bones": 0.8, "breast": fat, "nodes_cervical": nodes,
        "nodes_axillary": nodes, "nodes_mediastinal": nodes, "nodes_paraaortic": nodes, "nodes_iliac": nodes,
        "nodes_inguinal": nodes * 1.3,
    }
    for name in ("lung", "kidney", "adrenal", "ureter"):
        suv[f"{name}_right"] = suv[f"{name}_left"]
    cov = u(0.08, 0.14) * (subject.weight_kg / 75.0) ** 0.5 * (voxel_ml / 0.064) ** -0.25
    return ScanSettings(suv=suv, urine_kidney=u(8.0, 35.0), ureter_peak=u(8.0, 40.0),
                        brown_fat_suv=u(2.5, 8.0) if subject.brown_fat else 0.0, psf_fwhm_mm=u(5.0, 7.0),
                        noise_cov_liver=float(np.clip(cov, 0.05, 0.3)), ct_noise_hu=u(8.0, 20.0))


def widen_scan(scan: ScanSettings, rng: np.random.Generator) -> ScanSettings:
    """The wide spectrum's scanner: PSF 4–9 mm FWHM and 0.7–1.8 x the drawn noise level (clipped to 0.04–0.4)."""
    fwhm, factor = float(rng.uniform(4.0, 9.0)), float(rng.uniform(0.7, 1.8))
    return replace(scan, psf_fwhm_mm=fwhm, noise_cov_liver=float(np.clip(scan.noise_cov_liver * factor, 0.04, 0.4)))


@dataclass
class Images:
    """Synthesised images ``(z, y, x)`` float32: PET (SUV, with noise), its noise-free version, CT (HU)."""

    pet: np.ndarray
    pet_clean: np.ndarray
    ct: np.ndarray


def _lut(values: dict[str, float], default: float = 0.0) -> np.ndarray:
    lut = np.full(256, default, np.float32)
    for name, v in values.items():
        lut[L[name]] = v
    return lut


def _label_box(anatomy: Anatomy, labels: tuple[int, ...]) -> Box | None:
    """The grid box of the voxels carrying any of ``labels``."""
    mask = np.isin(anatomy.organs, labels)
    objs = ndimage.find_objects(mask.astype(np.uint8))
    if not objs or objs[0] is None:
        return None
    g = anatomy.grid
    sl = objs[0]
    lo = [g.origin[i] + g.spacing[i] * sl[i].start for i in range(3)]
    hi = [g.origin[i] + g.spacing[i] * (sl[i].stop - 1) for i in range(3)]
    return g.box(lo, hi)


def _gauss_sigma(fwhm_mm: float, spacing) -> tuple[float, ...]:
    return tuple(fwhm_mm / 2.3548 / s for s in spacing)


def correlated_noise(rng: np.random.Generator, shape, sigma_vox) -> np.ndarray:
    """Unit-variance Gaussian noise smoothed by a Gaussian of ``sigma_vox`` (voxels per axis), float32."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    sig = np.broadcast_to(np.asarray(sigma_vox, dtype=np.float64), (len(shape),))
    if np.all(sig <= 0):
        return noise
    ndimage.gaussian_filter(noise, sig, output=noise, mode="wrap", truncate=3.0)
    gain = 1.0
    for s in sig:  # the filter's gain on white noise is the root of the sum of squared kernel weights
        if s > 0:
            delta = np.zeros(int(8 * s) * 2 + 1)
            delta[delta.size // 2] = 1.0
            gain *= float(np.sum(ndimage.gaussian_filter1d(delta, s, truncate=3.0) ** 2))
    noise /= np.float32(np.sqrt(gain))
    return noise


def synthesize(anatomy: Anatomy, lesions: list[Lesion], scan: ScanSettings, subject: Subject,
               rng: np.random.Generator, head_neck_rng: np.random.Generator | None = None) -> Images:
    """Make PET (SUV) and CT (HU) of one study (see the module docstring).

    ``head_neck_rng``: the wide spectrum's head-and-neck uptake is drawn from it (None: the default phantom).
    """
    g, organs = anatomy.grid, anatomy.organs
    lo, hi = g.world((0, 0, 0)), g.world(np.asarray(g.shape) - 1)
    texture = SmoothField(rng, lo, hi, 22.0)
    patches = SmoothField(rng, lo, hi, 11.0)
    act = _lut(scan.suv)[organs]
    ct = _lut(_HU, -1000.0)[organs]
    body = organs > 0
    full = g.full_box()
    tex = texture.sample(full)
    act *= np.where(body, 1.0 + 0.07 * tex, 1.0).astype(np.float32)

    _bones(anatomy, act, ct, rng)
    _soft_tissue_detail(anatomy, act, ct, scan, patches, rng)
    if head_neck_rng is not None:
        _head_neck_wide(anatomy, act, ct, head_neck_rng)
    _lungs_ct(anatomy, ct, rng)
    _aortic_calcification(anatomy, ct, subject, rng)
    _lesions(lesions, anatomy, act, ct, rng)

    # Scanner: PSF blur, then activity-dependent correlated noise.
    sigma = _gauss_sigma(scan.psf_fwhm_mm, g.spacing)
    pet_clean = ndimage.gaussian_filter(act, sigma, mode="constant", truncate=3.0)
    np.maximum(pet_clean, 0, out=pet_clean)
    noise = correlated_noise(rng, g.shape, tuple(max(0.6 * s, 0.45) for s in sigma))
    liver = scan.suv["liver"]
    pet = pet_clean + np.float32(scan.noise_cov_liver * np.sqrt(liver)) * np.sqrt(pet_clean) * noise
    np.maximum(pet, 0, out=pet)

    # CT: table, slight blur (resampling onto the PET grid), noise.
    _table(anatomy, ct)
    ct = ndimage.gaussian_filter(ct, 0.5, truncate=2.0)
    ct += np.float32(scan.ct_noise_hu) * correlated_noise(rng, g.shape, 0.6)
    np.clip(ct, -1024, 3071, out=ct)
    return Images(pet=pet.astype(np.float32, copy=False), pet_clean=pet_clean.astype(np.float32, copy=False),
                  ct=ct.astype(np.float32, copy=False))


def _bones(anatomy: Anatomy, act: np.ndarray, ct: np.ndarray, rng: np.random.Generator) -> None:
    """Cortical shell (HU up, uptake down) at bone surfaces; fatty marrow cavity in long-bone shafts."""
    g, organs = anatomy.grid, anatomy.organs
    box = _label_box(anatomy, _BONES)
    if box is None:
        return
    bone = np.isin(organs[box.slices], _BONES)
    cortex = bone & ~ndimage.binary_erosion(bone)
    # A voxel larger than the ~2.5 mm cortex averages it with marrow (partial volume).
    frac = min(1.0, 2.0 / float(min(g.spacing)))
    cort_hu = float(rng.uniform(900, 1250))
    sub_ct, sub_act = ct[box.slices], act[box.slices]
    sub_ct[cortex] = frac * cort_hu + (1 - frac) * sub_ct[cortex]
    sub_act[cortex] *= np.float32(1 - 0.5 * frac)
    for sl, m in anatomy.regions.get("marrow_cavity", []):
        m = m & (organs[sl] == L["long_bones"]) & ~_cortex_at(cortex, box, sl)
        ct[sl][m] = -30.0
        act[sl][m] = 0.6


def _overlap(a, b) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Where two grid slice-tuples intersect: ``(slices into a's array, slices into b's array)`` or None."""
    ia, ib = [], []
    for sa, sb in zip(a, b):
        lo, hi = max(sa.start, sb.start), min(sa.stop, sb.stop)
        if hi <= lo:
            return None
        ia.append(slice(lo - sa.start, hi - sa.start))
        ib.append(slice(lo - sb.start, hi - sb.start))
    return tuple(ia), tuple(ib)


def _cortex_at(cortex: np.ndarray, box: Box, sl) -> np.ndarray:
    """The cortex mask (given on ``box``) cut to slices ``sl`` of the grid (False outside ``box``)."""
    out = np.zeros(tuple(s.stop - s.start for s in sl), bool)
    ov = _overlap(sl, box.slices)
    if ov is not None:
        out[ov[0]] = cortex[ov[1]]
    return out


def _soft_tissue_detail(anatomy: Anatomy, act, ct, scan: ScanSettings, patches: SmoothField, rng) -> None:
    g, organs = anatomy.grid, anatomy.organs
    # Brain: grey-matter cortex and deep nuclei hot, white matter cool.
    for sl, depth in anatomy.regions.get("brain_depth", []):
        brain = organs[sl] == L["brain"]
        gm = 1.0 - smoothstep(depth, 0.10, 0.26)
        box = g.box(*_bounds(g, sl))
        c = anatomy.landmarks["brain"]
        for dx in (-18.0, 18.0):
            gm = np.maximum(gm, (ellipsoid_q(box, c + np.array([-8.0, 0.0, dx]), (14, 22, 10)) < 1).astype(np.float32))
        act[sl][brain] = (scan.suv["brain"] * (0.38 + 0.62 * gm))[brain]
        ct[sl][brain] = (28.0 + 12.0 * gm)[brain]
    # Myocardium: regional heterogeneity (the septum and base often cooler).
    for label, amp in (("heart_myocardium", 0.25), ("bowel", 0.5), ("stomach", 0.35)):
        box = _label_box(anatomy, (L[label],))
        if box is None:
            continue
        m = organs[box.slices] == L[label]
        f = np.clip(1.0 + amp * patches.sample(box), 0.45, 2.2)
        act[box.slices][m] *= f[m]
        if label == "bowel":
            _bowel_ct(anatomy, box, m, ct, patches, rng)
        if label == "stomach":
            ymid = np.median(np.broadcast_to(box.y, m.shape)[m])
            gas = m & (box.y > ymid + 0.35 * (box.y.max() - ymid))
            ct[box.slices][gas] = -1000.0
    for sl, m in anatomy.regions.get("kidney_pelvis", []):
        m = m & np.isin(organs[sl], label_values("kidney"))
        act[sl][m] = scan.urine_kidney
        ct[sl][m] = 10.0
    for side in ("left", "right"):
        boluses = rng.uniform(0, 300, 3), rng.uniform(12, 45, 3), rng.uniform(0.2, 1.0, 3)
        for sl, t in anatomy.regions.get(f"ureter_{side}_t", []):
            m = np.isfinite(t) & (organs[sl] == L[f"ureter_{side}"])
            tt = t[m]
            b = np.zeros_like(tt)
            for pos, width, height in zip(*boluses):
                b = np.maximum(b, height * np.exp(-0.5 * ((tt - pos) / width) ** 2))
            act[sl][m] = scan.suv[f"ureter_{side}"] + (scan.ureter_peak - scan.suv[f"ureter_{side}"]) * b
    for sl, m in anatomy.regions.get("breast_gland", []):
        m = m & (organs[sl] == L["breast"])
        act[sl][m] = float(rng.uniform(0.8, 1.6))
        ct[sl][m] = 30.0
    for name, lo, hi in (("salivary_tonsils", 1.8, 4.5), ("thyroid", 1.2, 2.5)):
        for sl, m in anatomy.regions.get(name, []):
            act[sl][m] = float(rng.uniform(lo, hi))
            if name == "thyroid":
                ct[sl][m] = 90.0  # iodine-rich gland, dense on non-contrast CT
    for sl, m in anatomy.regions.get("brown_fat", []):
        act[sl][m] = scan.brown_fat_suv


def _head_neck_wide(anatomy: Anatomy, act, ct, rng: np.random.Generator) -> None:
    """Tonsils and salivary glands at SUV 1.8–7 (one draw per gland); vocal cords at SUV 2–6 with probability
    1/3 (soft-tissue CT), both over the default values (see the module docstring)."""
    for sl, m in anatomy.regions.get("salivary_tonsils", []):
        act[sl][m] = float(rng.uniform(1.8, 7.0))
    speaking, cords = rng.random() < 1 / 3, float(rng.uniform(2.0, 6.0))
    for sl, m in anatomy.regions.get("vocal_cords", []):
        if speaking:
            act[sl][m] = cords
            ct[sl][m] = 45.0


def _bounds(g, sl) -> tuple[list[float], list[float]]:
    lo = [g.origin[i] + g.spacing[i] * sl[i].start for i in range(3)]
    hi = [g.origin[i] + g.spacing[i] * (sl[i].stop - 1) for i in range(3)]
    return lo, hi


def _bowel_ct(anatomy: Anatomy, box: Box, bowel: np.ndarray, ct, patches: SmoothField, rng) -> None:
    """Fluid-filled small bowel, colon with mottled stool and gas pockets."""
    g = anatomy.grid
    f = SmoothField(rng, *_bounds(g, box.slices), 8.0).sample(box)
    sub = ct[box.slices]
    sub[bowel] = (15.0 + 15.0 * f)[bowel]
    sub[bowel & (f > 1.4)] = -1000.0
    for sl, m in anatomy.regions.get("colon", []):
        ov = _overlap(sl, box.slices)
        if ov is None:
            continue
        fl = f[ov[1]]
        cm = m[ov[0]] & bowel[ov[1]]
        sub[ov[1]][cm] = np.where(fl > 0.5, -1000.0, np.where(fl < -0.6, 30.0, -250.0 + 180.0 * fl))[cm]


def _lungs_ct(anatomy: Anatomy, ct: np.ndarray, rng) -> None:
    """Lung parenchyma with a dependent-density gradient and branching vessels (denser near the hila)."""
    g, organs = anatomy.grid, anatomy.organs
    box = _label_box(anatomy, label_values("lung"))
    if box is None:
        return
    lung = np.isin(organs[box.slices], label_values("lung"))
    lo, hi = _bounds(g, box.slices)
    f1 = SmoothField(rng, lo, hi, 9.0).sample(box)
    f2 = SmoothField(rng, lo, hi, 9.0).sample(box)
    ymid = 0.5 * (box.y.min() + box.y.max())
    hu = -860.0 + 70.0 * np.clip((ymid - box.y) / 90.0, -1, 1) + 12.0 * f1
    dist = np.full(box.shape, 1e9, np.float32)
    for name in ("hilum_left", "hilum_right"):
        h = anatomy.landmarks.get(name)
        if h is not None:
            d = np.sqrt((box.z - h[0]) ** 2 + (box.y - h[1]) ** 2 + (box.x - h[2]) ** 2)
            dist = np.minimum(dist, d)
    width = 0.07 + 0.28 * np.exp(-dist / 55.0)
    vessel = (np.abs(f1) < width) & (np.abs(f2) < width)
    hu = np.where(vessel, 40.0, hu)
    ct[box.slices][lung] = hu[lung]


def _aortic_calcification(anatomy: Anatomy, ct: np.ndarray, subject: Subject, rng) -> None:
    """Calcified plaques on the aortic and iliac wall, more with age (about one per 5 years over 50)."""
    n = int(rng.poisson(max(0.0, (subject.age - 50.0) / 5.0)))
    if n == 0:
        return
    vessels = np.isin(anatomy.organs, (L["aorta"], L["iliac_arteries"]))
    wall = vessels & ~ndimage.binary_erosion(vessels)
    idx = np.flatnonzero(wall)
    if idx.size:
        ct.reshape(-1)[rng.choice(idx, size=min(n, idx.size), replace=False)] = rng.uniform(300, 900, min(n, idx.size))


def _lesions(lesions: list[Lesion], anatomy: Anatomy, act, ct, rng) -> None:
    """Write lesion uptake and CT appearance over the host tissue."""
    hu_lut = _lut(_HU, -1000.0)
    for les in lesions:
        sl, m = les.slices, les.mask
        act[sl][m] = les.activity[m]
        rel = les.activity[m] / max(les.spec.suv, 1e-6)  # < ~0.5 in necrosis
        host = hu_lut[anatomy.organs[sl][m]]
        kind = les.spec.ct
        n = rng.normal(0, 6, rel.shape)
        if kind == "solid":
            hu = np.where(rel < 0.45, 15.0, 38.0) + n
        elif kind == "hypodense":
            hu = host - np.where(rel < 0.45, 40.0, 24.0) + n
        elif kind == "brain":
            hu = 24.0 + n
        elif kind == "sclerotic":
            hu = rng.uniform(650, 1100) + 4 * n
        elif kind == "lytic":
            hu = 40.0 + n
        elif kind == "mixed":
            hu = np.where(rng.random(rel.shape) < 0.5, rng.uniform(500, 900), 40.0) + n
        else:  # occult (marrow): CT unchanged
            continue
        ct[sl][m] = hu


def _table(anatomy: Anatomy, ct: np.ndarray) -> None:
    """A curved carbon-fibre patient table under the body (not part of the patient: organ label 0)."""
    g, organs = anatomy.grid, anatomy.organs
    body_y = np.flatnonzero(organs.any(axis=(0, 2)))
    if body_y.size == 0:
        return
    y0 = g.origin[1] + g.spacing[1] * (body_y[0] - 0.5)
    x = g.axis(2)
    y = g.axis(1)
    top = y0 - 1.0 + 0.0006 * x ** 2  # curved pallet, higher at the sides
    plate = (y[:, None] < top[None, :]) & (y[:, None] > top[None, :] - max(8.0, g.spacing[1])) & (np.abs(x) < 230)[None, :]
    sl = ct.transpose(1, 0, 2)  # (y, z, x) view
    mask = np.broadcast_to(plate[:, None, :], sl.shape) & (organs.transpose(1, 0, 2) == 0)
    sl[mask] = 120.0
