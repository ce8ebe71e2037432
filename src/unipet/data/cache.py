"""The preprocessing cache: memory-mappable ``.npy`` arrays + JSON per case, built once, read by the sampler.

Layout::

    CACHE/cache.json          channels, normalisation, spacing, fingerprint, task set, case ids
    CACHE/fingerprint.json    dataset fingerprint (spacings, shapes, intensity statistics)
    CACHE/<case>/image.npy    (C, z, y, x) float32, normalised
    CACHE/<case>/label.npy    (z, y, x) uint8 lesion mask (absent when the case has none); the organ map in a
                              cache built with ``label_source="organs"`` (organ segmenters, ``unipet anatomy organs``)
    CACHE/<case>/organs.npy   (z, y, x) uint16 organ map (optional)
    CACHE/<case>/case.json    ids, task, split, grids, crop, and the lesion-instance index

A case folder is written under a temporary name and renamed into place, so a crash leaves no half-written
case; re-running skips cases that are complete. The lesion-instance index lists connected components
(18-connectivity, as autoPET) with voxel count, bounding box and centroid, for lesion-balanced sampling.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from unipet.data.normalize import foreground_stats, make_spec
from unipet.data.plan import plan_from_fingerprint
from unipet.data.preprocess import PreprocessConfig, body_bbox, preprocess_study
from unipet.errors import ConfigError, InputFileError, LabelError
from unipet.fileio import atomic_write_json, umask_mode
from unipet.io.manifest import Case, Manifest, load_study
from unipet.study import spacing_from_affine
from unipet.tasks import TaskSet

CACHE_VERSION = 1
#: voxels sampled per case for the intensity fingerprint
FINGERPRINT_SAMPLES = 200_000


@dataclass
class CachedCase:
    """One cached case; arrays are memory-mapped (read-only) unless loaded with ``mmap=False``."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    organs: np.ndarray | None
    info: dict[str, Any]

    @property
    def task(self) -> str | None:
        return self.info.get("task")

    @property
    def lesions(self) -> list[dict[str, Any]]:
        return self.info.get("lesions", [])


class Cache:
    """Read access to a cache folder written by ``build_cache``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / "cache.json"
        if not path.exists():
            raise InputFileError(f"{self.root} is not a unipet cache (no cache.json); build one with `unipet preprocess`")
        self.meta = json.loads(path.read_text())
        self.config = PreprocessConfig.from_dict(self.meta["preprocess"])
        self.task_set = TaskSet.from_dict(self.meta["task_set"])
        self.case_ids: list[str] = list(self.meta["cases"])

    def __len__(self) -> int:
        return len(self.case_ids)

    def info(self, case_id: str) -> dict[str, Any]:
        return json.loads((self.root / case_id / "case.json").read_text())

    def load(self, case_id: str, mmap: bool = True) -> CachedCase:
        folder = self.root / case_id
        if not (folder / "case.json").exists():
            raise InputFileError(f"case {case_id} is missing from cache {self.root}; re-run `unipet preprocess`")
        mode = "r" if mmap else None
        info = json.loads((folder / "case.json").read_text())
        label = np.load(folder / "label.npy", mmap_mode=mode) if (folder / "label.npy").exists() else None
        organs = np.load(folder / "organs.npy", mmap_mode=mode) if (folder / "organs.npy").exists() else None
        return CachedCase(case_id, np.load(folder / "image.npy", mmap_mode=mode), label, organs, info)

    def split(self, name: str | None) -> list[str]:
        """Case ids of a split (all cases when ``name`` is None)."""
        if name is None:
            return list(self.case_ids)
        return [c for c in self.case_ids if self.info(c).get("split") == name]


# ------------------------------------------------------------------------------------------ fingerprint
def _fingerprint_case(args: tuple[Case, TaskSet, int]) -> dict[str, Any]:
    case, task_set, seed = args
    study = load_study(case, task_set)
    rng = np.random.default_rng(seed)
    box = body_bbox(study)
    sl = tuple(slice(a, b) for a, b in box)
    out: dict[str, Any] = {"spacing": list(study.spacing), "shape": list(study.shape), "task": study.task,
                           "crop_shape": [b - a for a, b in box],
                           "lesion_voxels": int(study.label.sum()) if study.label is not None else 0}
    body = (study.ct[sl] > -500) if study.ct is not None else (study.pet[sl] > 0.05)
    lesion = study.label[sl].astype(bool) if study.label is not None else np.zeros_like(body)
    for name, vol in (("CT", study.ct), ("PET", study.pet)):
        if vol is None:
            continue
        v = vol[sl]
        for region, mask in (("body", body), ("lesion", lesion)):
            vals = v[mask]
            if vals.size > FINGERPRINT_SAMPLES:
                vals = rng.choice(vals, FINGERPRINT_SAMPLES, replace=False)
            out[f"{name}_{region}"] = vals.astype(np.float32)
    return out


def compute_fingerprint(manifest: Manifest, cases: Sequence[Case], workers: int = 1, seed: int = 0) -> dict[str, Any]:
    """Dataset fingerprint: spacings, shapes, and foreground intensity statistics per modality.

    CT statistics use lesion voxels when the dataset has ≥ 1000 of them (nnU-Net's CT scheme uses the label
    foreground), else body voxels; PET statistics use body voxels.
    """
    jobs = [(c, manifest.task_set, seed + i) for i, c in enumerate(cases)]
    parts = _map(_fingerprint_case, jobs, workers)
    spacings = np.array([p["spacing"] for p in parts])
    shapes = np.array([p["shape"] for p in parts])
    intensity, sources = {}, {}
    for name in ("CT", "PET"):
        lesion = [p[f"{name}_lesion"] for p in parts if f"{name}_lesion" in p]
        body = [p[f"{name}_body"] for p in parts if f"{name}_body" in p]
        if not body:
            continue
        lesion_vals = np.concatenate(lesion) if lesion else np.empty(0, np.float32)
        use_lesion = name == "CT" and lesion_vals.size >= 1000
        intensity[name] = foreground_stats(lesion_vals if use_lesion else np.concatenate(body))
        sources[name] = "lesion" if use_lesion else "body"
    tasks: dict[str, int] = {}
    for p in parts:
        tasks[str(p["task"])] = tasks.get(str(p["task"]), 0) + 1
    return {
        "n_cases": len(parts),
        "spacing": {"median": np.median(spacings, 0).tolist(), "min": spacings.min(0).tolist(), "max": spacings.max(0).tolist()},
        "shape": {"median": np.median(shapes, 0).tolist(), "min": shapes.min(0).tolist(), "max": shapes.max(0).tolist()},
        # per case, for spacing planning (unipet.data.plan): spacing (mm) and body-cropped shape (voxels)
        "cases_spacing": spacings.tolist(), "cases_shape": [p["crop_shape"] for p in parts],
        "intensity": intensity, "intensity_source": sources, "tasks": tasks,
        "cases_with_lesions": int(sum(p["lesion_voxels"] > 0 for p in parts)),
    }


# ------------------------------------------------------------------------------------------ lesion index
def lesion_instances(label: np.ndarray, spacing_zyx, connectivity: int = 18) -> list[dict[str, Any]]:
    """Connected components of a binary mask (18-connectivity, as autoPET) for lesion-balanced sampling.

    Returns one dict per lesion: ``id``, ``voxels``, ``volume_ml``, ``bbox`` ``[[z0, z1], [y0, y1], [x0, x1]]``
    (half-open voxel indices) and ``centroid`` ``(z, y, x)`` in voxels.
    """
    from unipet.components import components

    _, comps = components(label, spacing_zyx, connectivity=connectivity)
    return [{"id": c.label, "voxels": c.voxels, "volume_ml": round(c.volume_ml, 4),
             "bbox": [[int(b.start), int(b.stop)] for b in c.bbox],
             "centroid": [round(v, 3) for v in c.centroid_zyx]} for c in comps]


# ------------------------------------------------------------------------------------------ build
def _write_case(args: tuple[Case, TaskSet, PreprocessConfig, str, str]) -> str:
    case, task_set, config, root, label_source = args
    dest = Path(root) / case.case_id
    if (dest / "case.json").exists():
        return "skipped"
    study = load_study(case, task_set)
    pre = preprocess_study(study, config)
    if label_source == "organs":  # the organ map is the training target; no lesion label, no organ input
        if pre.organs is None:
            raise LabelError(f"case {case.case_id} has no organ map; an organ-label cache needs one per case")
        if int(pre.organs.max(initial=0)) > 255:
            raise LabelError(f"case {case.case_id} organ map holds labels above 255; remap it to at most 255 labels")
        pre.label, pre.organs = pre.organs.astype(np.uint8), None
    tmp = Path(tempfile.mkdtemp(prefix=f".{case.case_id}.", dir=root))
    os.chmod(tmp, umask_mode(True))  # mkdtemp made it 0700: a case folder gets the mode any tool would give it
    try:
        np.save(tmp / "image.npy", pre.image)
        if pre.label is not None:
            np.save(tmp / "label.npy", pre.label)
        if pre.organs is not None:
            np.save(tmp / "organs.npy", pre.organs)
        lesions = lesion_instances(pre.label, pre.spacing) if pre.label is not None and label_source == "label" else []
        info = {
            "case_id": case.case_id, "patient_id": case.patient_id, "task": study.task, "split": case.split,
            "shape": list(pre.image.shape[1:]), "spacing": list(spacing_from_affine(pre.affine)),
            "affine": pre.affine.tolist(), "study_shape": list(pre.study_shape),
            "study_affine": pre.study_affine.tolist(), "crop": [list(c) for c in pre.crop],
            "has_label": pre.label is not None, "lesions": lesions,
            "foreground_voxels": int(sum(l["voxels"] for l in lesions)),
            "organ_labels": study.organ_labels, "meta": study.meta.to_dict(),
        }
        (tmp / "case.json").write_text(json.dumps(info, indent=1))
        if dest.exists():  # an incomplete folder from an older crash: replace it
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return "written"


def build_cache(
    manifest: Manifest,
    out_dir: str | Path,
    channels: Sequence[str] = ("CT", "PET"),
    ct_norm: str = "ct-zscore",
    pet_norm: str = "suv-zscore",
    target_spacing: Sequence[float] | str | None = "plan",
    crop_to_body: bool = True,
    splits: Sequence[str] | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    label_source: str = "label",
    preprocess: PreprocessConfig | None = None,
) -> Cache:
    """Preprocess every case of a manifest into a cache folder (resumable; see the module docstring).

    Args:
        manifest: cases to cache.
        out_dir: cache folder (created; an existing cache must have the same settings).
        channels: network input channel order.
        ct_norm, pet_norm: normalisation scheme names (``unipet.data.normalize``).
        target_spacing: ``(z, y, x)`` mm; ``"plan"`` (default) plans it from the training cases' fingerprint
            (``unipet.data.plan``: nnU-Net's median rule with its anisotropy handling); None keeps each study's
            own grid (the checkpoint then records the median spacing, at which prediction runs).
        crop_to_body: crop to the body's bounding box.
        splits: only cache cases of these splits (all when None).
        workers: parallel processes.
        progress: ``callback(done, total)``.
        label_source: ``"label"`` (the lesion mask) or ``"organs"``: cache each case's organ map as its label
            (multi-class, no lesion index, no organ input) to train organ segmenters.
        preprocess: use exactly this preprocessing (channels, normalisation, spacing, crop), e.g. a checkpoint's
            (``unipet preprocess --like RUN``), so that fine-tuning it on new data sees what it was trained on;
            ``channels``, the norm schemes, ``target_spacing`` and ``crop_to_body`` are then ignored.

    Returns:
        The Cache.
    """
    if label_source not in ("label", "organs"):
        raise ConfigError(f"label_source must be 'label' or 'organs', got {label_source!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = [c for c in manifest if splits is None or c.split in splits]
    if not cases:
        raise ConfigError("no cases to preprocess (check the manifest and --splits)")
    fp_path = out / "fingerprint.json"
    fingerprint = json.loads(fp_path.read_text()) if fp_path.exists() else None
    if fingerprint is None:
        train = [c for c in cases if c.split in (None, "train")] or cases
        fingerprint = compute_fingerprint(manifest, train, workers)
        atomic_write_json(fp_path, fingerprint, overwrite=True)
    if preprocess is not None:
        config = preprocess
    else:
        if isinstance(target_spacing, str):
            if target_spacing != "plan":
                raise ConfigError(f"target spacing {target_spacing!r} is not known; give three numbers (z y x mm), "
                                  "'plan' or None")
            target_spacing = plan_from_fingerprint(fingerprint)
        schemes = {"CT": ct_norm, "PET": pet_norm}
        config = PreprocessConfig(channels=tuple(c.upper() for c in channels),
                                  normalisation={ch: make_spec(schemes[ch], fingerprint)
                                                 for ch in (c.upper() for c in channels)},
                                  target_spacing=tuple(float(s) for s in target_spacing) if target_spacing else None,
                                  crop_to_body=crop_to_body)
    meta = {"version": CACHE_VERSION, "preprocess": config.to_dict(), "fingerprint": fingerprint,
            "task_set": manifest.task_set.to_dict(), "cases": [c.case_id for c in cases], "source": manifest.source}
    meta_path = out / "cache.json"
    if label_source != "label":
        meta["label_source"] = label_source
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("preprocess") != meta["preprocess"] or old.get("label_source", "label") != label_source:
            raise ConfigError(f"{out} holds a cache built with other settings; choose a new folder or delete it")
        meta["cases"] = list(dict.fromkeys(old["cases"] + meta["cases"]))
    jobs = [(c, manifest.task_set, config, str(out), label_source) for c in cases]
    done = 0
    for _ in _map(_write_case, jobs, workers, lazy=True):
        done += 1
        if progress:
            progress(done, len(jobs))
    atomic_write_json(meta_path, meta, overwrite=True)
    return Cache(out)


def _map(fn, jobs, workers: int, lazy: bool = False):
    """``map`` in this process (workers ≤ 1) or in a process pool, preserving order."""
    if workers <= 1:
        results = map(fn, jobs)
        return results if lazy else list(results)
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        results = list(pool.map(fn, jobs))
    finally:
        pool.shutdown()
    return results
