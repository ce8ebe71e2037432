"""PET biomarkers per lesion and per patient from an SUV volume and a lesion mask.

Per lesion (a connected component of the — optionally re-delineated — mask; connectivity 18 by default):
voxels, MTV (mL), SUVmax, SUVmean, SUVpeak (IBSI and PERCIST, see :mod:`unipet.quantify.suvpeak`),
TLG = SUVmean × MTV (SUV·mL) and the centroid in RAS mm. Per patient: total MTV, total TLG, SUVmax,
SUVmean of all lesion voxels, SUVpeak (the highest lesion PERCIST peak, as PERCIST reports the hottest
lesion; the highest IBSI peak too), lesion count, Dmax (largest distance between two lesion centroids, mm;
0 with fewer than two lesions) and SDmax = Dmax / BSA in m⁻¹ (Dmax in m, BSA in m² by Mosteller:
``sqrt(height_cm × weight_kg / 3600)``; NaN without weight and height).

Re-delineation inside the mask (``delineation``):

* ``"mask"``: the mask as given;
* ``"41pct"``: per connected component of the mask, voxels with SUV ≥ 41 % of that component's SUVmax;
* ``"suv2.5"`` / ``"suv4.0"``: voxels of the mask with SUV ≥ 2.5 / 4.0;
* ``"percist"``: voxels of the mask with SUV ≥ 1.5 × liver SUVmean + 2 × liver SD (PERCIST 1.0), the
  liver statistics from a 3-cm-diameter sphere in the right liver lobe (:func:`liver_reference`); it needs
  a liver mask (or an organ map with a liver label) and raises MissingInputError without one.

Lesions are then the components of the re-delineated mask (a lesion may split). Everything is in physical
units from the voxel spacing. This module measures arrays and Studies; ``unipet.quantify.runner`` reads files,
runs these measures per study and writes the tables.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from unipet.errors import ConfigError, ImageGeometryError, LabelError, MissingInputError
from unipet.components import DEFAULT_CONNECTIVITY, check_connectivity, component_stats, label_components
from unipet.quantify.suvpeak import DEFAULT_SUPERSAMPLE, PEAK_VOLUME_ML, sphere_radius_mm, suv_peaks_in_box
from unipet.study import Study, index_to_world_zyx, make_affine, spacing_from_affine

DELINEATIONS = ("mask", "41pct", "suv2.5", "suv4.0", "percist")
FIXED_THRESHOLDS = {"suv2.5": 2.5, "suv4.0": 4.0}
RELATIVE_THRESHOLD = 0.41
LIVER_SPHERE_DIAMETER_MM = 30.0
LESION_COLUMNS = ("lesion", "voxels", "mtv_ml", "suv_max", "suv_mean", "suv_peak_ibsi", "suv_peak_percist", "tlg",
                  "centroid_x_mm", "centroid_y_mm", "centroid_z_mm")
PATIENT_COLUMNS = ("total_mtv_ml", "total_tlg", "suv_max", "suv_mean", "suv_peak", "suv_peak_ibsi", "lesion_count",
                   "dmax_mm", "bsa_m2", "sdmax_per_m")


@dataclass
class QuantifyConfig:
    """How lesions are delineated and measured (recorded in ``quantify.json``).

    Attributes:
        delineation: one of :data:`DELINEATIONS`.
        connectivity: 6, 18 or 26 for lesion components.
        peak_volume_ml: SUVpeak sphere volume (1 mL).
        supersample: sub-voxel points per axis for partial-voxel weights of the peak sphere.
    """

    delineation: str = "mask"
    connectivity: int = DEFAULT_CONNECTIVITY
    peak_volume_ml: float = PEAK_VOLUME_ML
    supersample: int = DEFAULT_SUPERSAMPLE

    def validate(self) -> None:
        if self.delineation not in DELINEATIONS:
            raise ConfigError(f"unknown delineation {self.delineation!r}; use one of {', '.join(DELINEATIONS)}")
        check_connectivity(self.connectivity)


def _check_pair(suv: np.ndarray, mask: np.ndarray, what: str = "lesion mask") -> np.ndarray:
    if suv.ndim != 3:
        raise ImageGeometryError(f"the SUV volume must be 3-D (z, y, x), got shape {suv.shape}")
    if mask.shape != suv.shape:
        raise ImageGeometryError(f"{what} shape {mask.shape} differs from the SUV shape {suv.shape}; resample the "
                                 "mask onto the PET grid (nearest neighbour) first")
    return np.asarray(mask) != 0


def liver_reference(suv: np.ndarray, liver: np.ndarray, spacing_zyx: Sequence[float], affine: np.ndarray | None = None,
                    diameter_mm: float = LIVER_SPHERE_DIAMETER_MM) -> dict[str, Any]:
    """PERCIST liver reference: SUV mean and SD in a sphere of ``diameter_mm`` inside the right liver lobe.

    The sphere centre is the voxel deepest inside the liver (largest Euclidean distance to non-liver, in mm)
    among the liver voxels on the patient's right of the liver's median (RAS x below the median), restricted
    to centres whose whole sphere lies inside the liver; the sphere holds the voxels whose centres are
    within its radius. SD is the sample SD (ddof=1).

    Returns:
        ``{"mean", "sd", "threshold", "centre_zyx", "voxels"}`` with ``threshold = 1.5 × mean + 2 × sd``.

    Raises:
        LabelError: the liver mask is empty or has no room for the sphere.
    """
    from scipy import ndimage

    liver = _check_pair(suv, liver, "liver mask")
    if not liver.any():
        raise LabelError("the liver mask is empty; give a liver mask (or organ map and liver label) that covers the liver")
    radius = diameter_mm / 2.0
    box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n))
                for s, n in zip(ndimage.find_objects(liver.astype(np.uint8))[0], liver.shape))
    local = np.pad(liver[box], 1)
    depth = ndimage.distance_transform_edt(local, sampling=spacing_zyx)[1:-1, 1:-1, 1:-1]
    local = local[1:-1, 1:-1, 1:-1]
    idx = np.argwhere(local) + [s.start for s in box]
    to_world = index_to_world_zyx(make_affine(spacing_zyx) if affine is None else affine)
    world_x = idx @ to_world[0, :3] + to_world[0, 3]
    right = world_x <= np.median(world_x)
    fits = depth[local] > radius
    candidates = np.flatnonzero(fits & right)
    if candidates.size == 0:
        candidates = np.flatnonzero(fits)
    if candidates.size == 0:
        raise LabelError(f"the liver mask has no place for a {diameter_mm:g}-mm sphere (deepest point "
                         f"{depth.max():.1f} mm from its edge); check the liver mask or use another delineation")
    centre = idx[candidates[np.argmax(depth[local][candidates])]]
    # The sphere lies inside the liver, hence inside the image: no clipping needed.
    reach = [int(math.floor(radius / s)) for s in spacing_zyx]  # farthest voxel offset inside the sphere
    around = tuple(slice(c - r, c + r + 1) for c, r in zip(centre, reach))
    offsets = np.ogrid[tuple(slice(-r, r + 1) for r in reach)]
    d2 = sum((o * s) ** 2 for o, s in zip(offsets, spacing_zyx))
    values = suv[around][d2 <= radius * radius].astype(np.float64)
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    return {"mean": mean, "sd": sd, "threshold": 1.5 * mean + 2.0 * sd,
            "centre_zyx": tuple(int(c) for c in centre), "voxels": int(values.size)}


def delineate(suv: np.ndarray, mask: np.ndarray, spacing_zyx: Sequence[float], method: str = "mask", *,
              connectivity: int = DEFAULT_CONNECTIVITY, liver: np.ndarray | None = None,
              affine: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Re-delineate lesions inside ``mask`` (see the module docstring for the methods).

    Returns:
        ``(new_mask, info)``: uint8 0/1 ``(z, y, x)`` mask and ``{"method", "threshold_suv", "liver"}``
        (threshold NaN for per-lesion or no threshold; liver statistics for ``percist``).
    """
    m = _check_pair(suv, mask)
    info: dict[str, Any] = {"method": method, "threshold_suv": math.nan, "liver": None}
    if method == "mask":
        return m.astype(np.uint8), info
    if method in FIXED_THRESHOLDS:
        info["threshold_suv"] = FIXED_THRESHOLDS[method]
        return (m & (suv >= FIXED_THRESHOLDS[method])).astype(np.uint8), info
    if method == "41pct":
        labels, n = label_components(m, connectivity)
        if n == 0:
            return m.astype(np.uint8), info
        from scipy import ndimage

        maxima = np.zeros(n + 1)
        maxima[1:] = ndimage.maximum(suv, labels, index=np.arange(1, n + 1))
        return ((labels > 0) & (suv >= RELATIVE_THRESHOLD * maxima[labels])).astype(np.uint8), info
    if method == "percist":
        if liver is None:
            raise MissingInputError("PERCIST delineation needs the liver: give a liver mask (--liver-mask) or an "
                                    "organ map with its liver label (--liver-label), or choose another delineation")
        ref = liver_reference(suv, liver, spacing_zyx, affine)
        info.update(threshold_suv=ref["threshold"], liver=ref)
        return (m & (suv >= ref["threshold"])).astype(np.uint8), info
    raise ConfigError(f"unknown delineation {method!r}; use one of {', '.join(DELINEATIONS)}")


def lesion_table(suv: np.ndarray, mask: np.ndarray, spacing_zyx: Sequence[float], affine: np.ndarray | None = None, *,
                 connectivity: int = DEFAULT_CONNECTIVITY, delineation: str = "mask", liver: np.ndarray | None = None,
                 peak_volume_ml: float = PEAK_VOLUME_ML, supersample: int = DEFAULT_SUPERSAMPLE) -> Any:
    """One row per lesion: the columns of :data:`LESION_COLUMNS`.

    Args:
        suv: SUV volume ``(z, y, x)``.
        mask: lesion mask on the same grid (non-zero = lesion).
        spacing_zyx: voxel spacing in mm.
        affine: NIfTI affine for world centroids (default: axis-aligned from the spacing, origin 0).
        connectivity, delineation, liver: see :func:`delineate`.
        peak_volume_ml, supersample: SUVpeak sphere (see :mod:`unipet.quantify.suvpeak`).

    Returns:
        pandas DataFrame; ``lesion`` numbers 1..N in raster order; SUV in g/mL units, MTV in mL, TLG in SUV·mL.
        The delineation info is in ``DataFrame.attrs["delineation"]``.
    """
    import pandas as pd

    from unipet.io.nifti import check_pet_values

    QuantifyConfig(delineation, connectivity, peak_volume_ml, supersample).validate()
    # the same rule as preprocess and predict: NaN in a lesion is an error, negatives clipped with a warning
    suv, _ = check_pet_values(np.asarray(suv), "the SUV volume", mask=_check_pair(np.asarray(suv), np.asarray(mask)))
    new_mask, info = delineate(suv, mask, spacing_zyx, delineation, connectivity=connectivity, liver=liver, affine=affine)
    labels, _ = label_components(new_mask, connectivity)
    rows = []
    for comp in component_stats(labels, spacing_zyx, affine):
        in_box = labels[comp.bbox] == comp.label
        values = suv[comp.bbox][in_box].astype(np.float64)
        peaks = suv_peaks_in_box(suv, in_box, comp.bbox, spacing_zyx, peak_volume_ml, supersample)
        suv_mean = float(values.mean())
        rows.append({
            "lesion": comp.label, "voxels": comp.voxels, "mtv_ml": comp.volume_ml, "suv_max": float(values.max()),
            "suv_mean": suv_mean, "suv_peak_ibsi": peaks.ibsi, "suv_peak_percist": peaks.percist,
            "tlg": suv_mean * comp.volume_ml, "centroid_x_mm": comp.centroid_mm[0],
            "centroid_y_mm": comp.centroid_mm[1], "centroid_z_mm": comp.centroid_mm[2],
        })
    table = pd.DataFrame(rows, columns=list(LESION_COLUMNS))
    table.attrs["delineation"] = info
    return table


def body_surface_area_m2(weight_kg: float | None, height_m: float | None) -> float:
    """Mosteller body-surface area in m² (``sqrt(height_cm × weight_kg / 3600)``); NaN when either is unknown."""
    if weight_kg is None or height_m is None or not (weight_kg > 0 and height_m > 0):
        return math.nan
    return math.sqrt(height_m * 100.0 * weight_kg / 3600.0)


def dmax_mm(centroids_mm: np.ndarray) -> float:
    """Largest distance (mm) between two of the ``(N, 3)`` centroids; 0 for N ≤ 1."""
    pts = np.asarray(centroids_mm, dtype=np.float64).reshape(-1, 3)
    if len(pts) < 2:
        return 0.0
    from scipy.spatial.distance import pdist

    return float(pdist(pts).max())


def patient_summary(lesions: Any, weight_kg: float | None = None, height_m: float | None = None) -> dict[str, Any]:
    """Patient-level biomarkers (keys :data:`PATIENT_COLUMNS`) from a :func:`lesion_table`.

    SUV values are NaN when there is no lesion; totals, lesion count and Dmax are then 0.
    """
    n = int(len(lesions))
    total_mtv = float(lesions["mtv_ml"].sum()) if n else 0.0
    total_tlg = float(lesions["tlg"].sum()) if n else 0.0
    dmax = dmax_mm(lesions[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()) if n else 0.0
    bsa = body_surface_area_m2(weight_kg, height_m)
    return {
        "total_mtv_ml": total_mtv, "total_tlg": total_tlg,
        "suv_max": float(lesions["suv_max"].max()) if n else math.nan,
        "suv_mean": total_tlg / total_mtv if total_mtv > 0 else math.nan,
        "suv_peak": float(lesions["suv_peak_percist"].max()) if n else math.nan,
        "suv_peak_ibsi": float(lesions["suv_peak_ibsi"].max()) if n else math.nan,
        "lesion_count": n, "dmax_mm": dmax, "bsa_m2": bsa,
        "sdmax_per_m": (dmax / 1000.0) / bsa if not math.isnan(bsa) else math.nan,
    }


def liver_from_organs(organs: np.ndarray | None, organ_labels: dict[str, int] | None = None,
                      liver_label: int | None = None) -> np.ndarray | None:
    """The liver mask from an organ map: label ``liver_label``, else ``organ_labels["liver"]``; None if neither."""
    if organs is None:
        return None
    if liver_label is None and organ_labels:
        liver_label = next((v for k, v in organ_labels.items() if k.lower() == "liver"), None)
    if liver_label is None:
        return None
    liver = organs == liver_label
    if not liver.any():
        raise LabelError(f"the organ map has no voxel with the liver label {liver_label}; give the right --liver-label")
    return liver


def quantify_study(study_or_arrays: Study | tuple[np.ndarray, np.ndarray, np.ndarray], *,
                   mask: np.ndarray | None = None, config: QuantifyConfig | None = None, liver: np.ndarray | None = None,
                   liver_label: int | None = None, weight_kg: float | None = None,
                   height_m: float | None = None) -> tuple[Any, dict[str, Any]]:
    """Lesion table and patient summary of one study.

    Args:
        study_or_arrays: a :class:`~unipet.study.Study` (PET in SUV; its label is the mask unless ``mask`` is
            given; weight, height and organ map come from it) or a tuple ``(suv, mask, affine)``.
        mask: lesion mask overriding the study's label.
        config: delineation, connectivity and peak settings.
        liver: liver mask for PERCIST delineation (else taken from the study's organ map via ``liver_label``
            or its ``organ_labels["liver"]``).
        weight_kg, height_m: override the study's metadata (for SDmax).

    Returns:
        ``(lesions, patient)``: :func:`lesion_table`'s DataFrame and :func:`patient_summary`'s dict plus
        ``delineation`` and ``threshold_suv``.
    """
    config = config or QuantifyConfig()
    config.validate()
    if isinstance(study_or_arrays, Study):
        study = study_or_arrays
        if study.pet is None:
            raise MissingInputError(f"study {study.study_id} has no PET image; biomarkers need the SUV volume")
        suv, affine = study.pet, study.affine
        mask = study.label if mask is None else mask
        if liver is None and config.delineation == "percist":
            liver = liver_from_organs(study.organs, study.organ_labels, liver_label)
        weight_kg = study.meta.weight_kg if weight_kg is None else weight_kg
        height_m = study.meta.height_m if height_m is None else height_m
    else:
        suv, arr_mask, affine = study_or_arrays
        mask = arr_mask if mask is None else mask
    if mask is None:
        raise MissingInputError("no lesion mask: give mask=... or a study with a label")
    affine = np.asarray(affine, dtype=np.float64)
    lesions = lesion_table(suv, mask, spacing_from_affine(affine), affine, connectivity=config.connectivity,
                           delineation=config.delineation, liver=liver, peak_volume_ml=config.peak_volume_ml,
                           supersample=config.supersample)
    patient = patient_summary(lesions, weight_kg, height_m)
    info = lesions.attrs["delineation"]
    liver_stats = info["liver"] or {}
    patient.update(delineation=info["method"], threshold_suv=info["threshold_suv"],
                   liver_suv_mean=liver_stats.get("mean", math.nan), liver_suv_sd=liver_stats.get("sd", math.nan))
    return lesions, patient


def method_record(config: QuantifyConfig) -> dict[str, Any]:
    """What ``quantify.json`` records about the method and units."""
    return {
        **asdict(config),
        "delineation_rule": {
            "mask": "the mask as given", "41pct": "per component, SUV >= 0.41 x component SUVmax",
            "suv2.5": "SUV >= 2.5 inside the mask", "suv4.0": "SUV >= 4.0 inside the mask",
            "percist": "SUV >= 1.5 x liver mean + 2 x liver SD (30-mm sphere, right lobe) inside the mask",
        }[config.delineation],
        "connectivity_meaning": f"{config.connectivity}-connected voxel neighbourhood",
        "suv_peak": {
            "sphere_volume_ml": config.peak_volume_ml,
            "sphere_radius_mm": sphere_radius_mm(config.peak_volume_ml),
            "partial_voxel_weighting": f"fraction of each voxel inside the sphere from {config.supersample}^3 "
                                       "sub-voxel points; voxels outside the image excluded",
            "ibsi": "sphere centred on the hottest lesion voxel (IBSI local intensity peak)",
            "percist": "sphere centre on the lesion voxel maximising the sphere mean; the sphere may extend "
                       "beyond the lesion (PERCIST 1.0)",
            "patient_suv_peak": "highest PERCIST peak over the patient's lesions",
        },
        "units": {"suv": "g/mL (body-weight SUV as given)", "mtv_ml": "mL", "tlg": "SUV x mL",
                  "centroid_mm": "RAS mm (NIfTI affine)", "dmax_mm": "mm between lesion centroids",
                  "bsa_m2": "m^2 (Mosteller)", "sdmax_per_m": "1/m (Dmax in m / BSA in m^2)"},
    }
