"""Reference segmentations to read a model's scores against: SUV thresholds, PERCIST's liver threshold, an
organ-aware threshold, and the per-lesion oracle (the delineation limit once a lesion is found).

Every method turns one study (PET in SUV, and an organ map where it needs one) into a binary mask on the study's
grid; ``evaluate_baselines`` writes those masks for every case of a manifest and scores them with the same
``unipet.evaluate.evaluate`` as a model's predictions, so the numbers are comparable line by line.

- ``suv2.5``, ``suv4``: every voxel with SUV >= 2.5 / >= 4 (the classic fixed thresholds; they mark
  physiological uptake — brain, heart, kidneys, bladder — as well).
- ``percist``: SUV >= 1.5 x liver mean + 2 x liver SD (PERCIST 1.0's threshold for measurable disease, Wahl et al.
  2009), the liver reference being a 3 cm diameter sphere; PERCIST puts it in the normal right lobe, here it is
  centred on the liver voxel deepest inside the liver (the farthest from its surface: away from partial-volume
  edges and hilar vessels), which needs the organ map (unipet's choice; no lobe labels exist).
- ``organ-aware``: SUV >= 4 outside the organs of high physiological FDG uptake or excretion — brain, heart,
  liver, kidneys, ureters, bladder, stomach and bowel (``PHYSIOLOGICAL``); needs the organ map.
- ``oracle41``, ``oracle50``: for each true lesion (18-connected component of the reference), voxels within
  ``ORACLE_DILATION`` (2) voxels of it whose SUV is >= 41 % / 50 % of that lesion's SUVmax — the fixed-fraction
  isocontours of the EANM guideline (Boellaard et al. 2015: 41 %) and of PERCIST's SUVpeak-style 50 %, given the
  lesion's location. It uses the reference, so it is an upper bound on delineation, not a method.
- ``suvmax41``, ``suvmax50``: every voxel of the study with SUV >= 41 % / 50 % of the SUVmax inside the reference
  mask (the lesion's SUVmax applied to the whole image: the 41 % rule of the real-sarcoma data's ``cases.json``,
  Boellaard et al. 2015's fixed fraction). On a crop around one tumour this is what a reader who clicks on the
  tumour's hottest voxel gets; it needs the reference for the SUVmax only.
- ``oracle-best``: per true lesion, the best (highest Dice with that lesion) of the 30 %, 41 % and 50 % SUVmax
  isocontours inside the lesion's ``ORACLE_DILATION``-voxel dilation — the per-lesion oracle of issue 24 (0.59
  mean Dice on the 35 real sarcomas of ``../shared/real_sts_fdg``). It picks the fraction with the reference, so
  it bounds any fixed-fraction method from above.

Methods needing an organ map are skipped (with the reason) when a case of the manifest has none. An organ map
without a label table of its own (``Study.organ_labels``) is read with unipet's organ table
(``unipet.data.organs.ORGAN_LABELS``: phantom maps and those of ``unipet anatomy organs``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage

from unipet.data.organs import ORGAN_LABELS
from unipet.errors import ConfigError
from unipet.evaluate.runner import SUV_SUMMARY
from unipet.study import Study

#: organs whose FDG uptake or excretion is physiological (excluded by the organ-aware threshold)
PHYSIOLOGICAL = ("brain", "heart_myocardium", "heart_blood_pool", "liver", "kidney_left", "kidney_right",
                 "ureter_left", "ureter_right", "bladder", "stomach", "bowel")
#: voxels around a true lesion in which the oracle thresholds
ORACLE_DILATION = 2
#: diameter of PERCIST's liver reference sphere (mm)
PERCIST_SPHERE_MM = 30.0

#: SUVmax fractions among which ``oracle-best`` picks, per lesion
ORACLE_FRACTIONS = (0.30, 0.41, 0.50)

BASELINES = ("suv2.5", "suv4", "percist", "organ-aware", "oracle41", "oracle50", "suvmax41", "suvmax50",
             "oracle-best")
NEEDS_ORGANS = ("percist", "organ-aware")
NEEDS_REFERENCE = ("oracle41", "oracle50", "suvmax41", "suvmax50", "oracle-best")


def suv_threshold(suv: np.ndarray, level: float) -> np.ndarray:
    """``(z, y, x)`` uint8 mask of SUV >= ``level``."""
    return (np.nan_to_num(suv, nan=0.0) >= level).astype(np.uint8)


def organ_values(organs: np.ndarray, organ_labels: dict[str, int], names: Sequence[str]) -> list[int]:
    """Label values of the ``names`` present in ``organ_labels`` (missing names are ignored)."""
    return [int(organ_labels[n]) for n in names if n in organ_labels]


def percist_level(suv: np.ndarray, organs: np.ndarray, organ_labels: dict[str, int],
                  spacing_zyx: Sequence[float]) -> float:
    """PERCIST's threshold ``1.5 * mean + 2 * SD`` of SUV in a 3 cm liver sphere (see the module docstring)."""
    liver = np.isin(organs, organ_values(organs, organ_labels, ("liver",)))
    if not liver.any():
        raise ConfigError("the organ map has no liver; PERCIST's threshold needs a liver reference")
    depth = ndimage.distance_transform_edt(liver, sampling=spacing_zyx)
    centre = np.unravel_index(int(np.argmax(depth)), depth.shape)
    grid = np.ogrid[tuple(slice(0, n) for n in suv.shape)]
    dist2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing_zyx))
    sphere = (dist2 <= (PERCIST_SPHERE_MM / 2) ** 2) & liver
    values = suv[sphere]
    return float(1.5 * values.mean() + 2.0 * values.std())


def organ_aware(suv: np.ndarray, organs: np.ndarray, organ_labels: dict[str, int], level: float = 4.0) -> np.ndarray:
    """SUV >= ``level`` outside the ``PHYSIOLOGICAL`` organs: ``(z, y, x)`` uint8."""
    outside = ~np.isin(organs, organ_values(organs, organ_labels, PHYSIOLOGICAL))
    return (suv_threshold(suv, level).astype(bool) & outside).astype(np.uint8)


def reference_fraction(suv: np.ndarray, reference: np.ndarray, fraction: float) -> np.ndarray:
    """``(z, y, x)`` uint8 mask of SUV >= ``fraction`` x the SUVmax inside ``reference``, over the whole image
    (empty when the reference is empty)."""
    inside = reference > 0
    if not inside.any():
        return np.zeros(suv.shape, dtype=np.uint8)
    return suv_threshold(suv, fraction * float(suv[inside].max()))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / total if total else 1.0


def oracle(suv: np.ndarray, reference: np.ndarray, fraction: float | Sequence[float],
           dilation: int = ORACLE_DILATION) -> np.ndarray:
    """Per-lesion SUVmax isocontour within ``dilation`` voxels of each true lesion: ``(z, y, x)`` uint8.

    ``fraction``: one fraction of the lesion's SUVmax, or several, of which each lesion takes the one whose
    contour has the highest Dice with that lesion (``oracle-best``).
    """
    import cc3d

    fractions = (fraction,) if isinstance(fraction, (int, float)) else tuple(fraction)
    labels = cc3d.connected_components((reference > 0).astype(np.uint8), connectivity=18)
    out = np.zeros(suv.shape, dtype=bool)
    struct = ndimage.generate_binary_structure(3, 1)
    for box_index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        # the lesion's box grown by the dilation, clipped to the volume
        grown = tuple(slice(max(0, s.start - dilation), min(n, s.stop + dilation)) for s, n in zip(box, suv.shape))
        lesion = labels[grown] == box_index
        near = ndimage.binary_dilation(lesion, struct, iterations=dilation)
        local = suv[grown]
        peak = float(local[lesion].max())
        contours = [near & (local >= f * peak) for f in fractions]
        out[grown] |= max(contours, key=lambda c: _dice(c, lesion))
    return out.astype(np.uint8)


def baseline_mask(method: str, study: Study) -> np.ndarray:
    """One method's mask of a study (``ConfigError`` when the study lacks what the method needs)."""
    suv = np.nan_to_num(study.pet.astype(np.float32), nan=0.0)
    if method in NEEDS_ORGANS and study.organs is None:
        raise ConfigError(f"baseline {method!r} needs an organ map; study {study.study_id} has none")
    labels = study.organ_labels or ORGAN_LABELS
    if method in NEEDS_REFERENCE and study.label is None:
        raise ConfigError(f"baseline {method!r} needs the reference mask; study {study.study_id} has none")
    makers: dict[str, Callable[[], np.ndarray]] = {
        "suv2.5": lambda: suv_threshold(suv, 2.5),
        "suv4": lambda: suv_threshold(suv, 4.0),
        "percist": lambda: suv_threshold(suv, percist_level(suv, study.organs, labels, study.spacing)),
        "organ-aware": lambda: organ_aware(suv, study.organs, labels),
        "oracle41": lambda: oracle(suv, study.label, 0.41),
        "oracle50": lambda: oracle(suv, study.label, 0.50),
        "suvmax41": lambda: reference_fraction(suv, study.label, 0.41),
        "suvmax50": lambda: reference_fraction(suv, study.label, 0.50),
        "oracle-best": lambda: oracle(suv, study.label, ORACLE_FRACTIONS),
    }
    if method not in makers:
        raise ConfigError(f"unknown baseline {method!r}; choose from {', '.join(BASELINES)}")
    return makers[method]()


def parse_methods(text: str | Sequence[str] | None) -> list[str]:
    """``"suv4,oracle41"`` or a list -> checked method names; None or ``"all"`` -> every method."""
    if text is None or text == "all":
        return list(BASELINES)
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown or not names:
        raise ConfigError(f"unknown baseline(s) {unknown or text!r}; choose from {', '.join(BASELINES)} or 'all'")
    return names


def _write_case_masks(args: tuple[Any, Any, list[str], str, bool]) -> dict[str, str]:
    """Write every method's mask of one case; returns ``{method: reason}`` for the methods it could not make."""
    from unipet.io.manifest import load_study
    from unipet.io.nifti import save_volume

    case, task_set, methods, out, overwrite = args
    study = load_study(case, task_set)
    skipped = {}
    for method in methods:
        try:
            mask = baseline_mask(method, study)
        except ConfigError as err:
            skipped[method] = str(err)
            continue
        save_volume(mask, study.affine, Path(out) / method / "masks" / f"{case.case_id}.nii.gz", overwrite=overwrite)
    return skipped


def evaluate_baselines(manifest_path: str | Path, out_dir: str | Path, methods: Sequence[str] | None = None,
                       config: Any = None, overwrite: bool = False) -> dict[str, Any]:
    """Write and score the baselines of every case of a manifest.

    Masks go to ``OUT/<method>/masks/<case>.nii.gz`` and each method's scores to ``OUT/<method>/`` (the files of
    ``unipet.evaluate.evaluate``).

    Returns:
        ``{method: summary}`` (``unipet.evaluate.evaluate``'s summary) for the methods scored, and
        ``{"skipped": {method: reason}}`` for those that could not run on every case.
    """
    from unipet.evaluate.runner import EvaluationConfig, evaluate
    from unipet.io.manifest import Manifest

    methods = parse_methods(methods)
    manifest = Manifest.load(manifest_path)
    out = Path(out_dir)
    skipped: dict[str, str] = {}
    for case in manifest:
        for method, reason in _write_case_masks((case, manifest.task_set, methods, str(out), overwrite)).items():
            skipped.setdefault(method, reason)
    results: dict[str, Any] = {"skipped": skipped}
    for method in methods:
        if method in skipped:
            continue
        ev = evaluate(out / method / "masks", manifest_path, out / method, config or EvaluationConfig(),
                      overwrite=overwrite)
        results[method] = ev.summary
    return results


def headline(summary: dict[str, Any], task: str | None = None) -> dict[str, float]:
    """The quality-benchmark numbers of one evaluation summary, overall (``task=None``) or for one task.

    Returns ``dice``, ``iou`` (means over the scored studies), ``sens_ge1`` / ``sens_lt1`` (lesion sensitivity
    pooled over lesions >= 1 mL / < 1 mL: the first size bin is the < 1 mL one when the bins start at 1 mL),
    ``fpv_ml``, ``fnv_ml`` (means per study, mL), ``hd95_mm``, ``n`` (studies), and when the evaluation measured
    them (``EvaluationConfig.with_suv``) the mean MTV / SUVmean errors (``unipet.evaluate.runner.SUV_SUMMARY``).
    """
    stats = summary["overall"] if task is None else summary["tasks"].get(task)
    detection = summary["lesion_detection"]["overall" if task is None else "tasks"]
    detection = detection if task is None else detection.get(task)
    if stats is None or detection is None:
        return {}
    bins = list(detection["by_size"].items())
    small, large = bins[:1], bins[1:]

    def pooled(items):
        n = sum(b["n"] for _, b in items)
        return sum(b["detected"] for _, b in items) / n if n else float("nan")

    numbers = {"dice": stats["dice"]["mean"], "iou": stats["iou"]["mean"], "sens_ge1": pooled(large),
               "sens_lt1": pooled(small), "fpv_ml": stats["fpv_ml"]["mean"], "fnv_ml": stats["fnv_ml"]["mean"],
               "hd95_mm": stats["hd95_mm"]["mean"], "n": stats["dice"]["n"]}
    numbers.update({key: stats[key]["mean"] for key in SUV_SUMMARY if key in stats})
    return numbers


def comparison_rows(summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, task) — tasks of the first summary, then ``"overall"`` — with ``headline``'s numbers.

    ``summaries``: ``{method: evaluation summary}`` (a model's first, then the baselines, in display order).
    """
    if not summaries:
        return []
    tasks = list(next(iter(summaries.values()))["tasks"])
    rows = []
    for task in tasks + [None]:
        for method, summary in summaries.items():
            numbers = headline(summary, task)
            if numbers:
                rows.append({"task": task or "overall", "method": method, **numbers})
    return rows
