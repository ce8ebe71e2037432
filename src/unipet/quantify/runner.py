"""Biomarkers of many studies from files: the runner behind ``unipet quantify`` (``unipet.quantify.biomarkers``
holds the measures, as ``unipet.evaluate.metrics`` beside ``unipet.evaluate.runner``).

Each study is a ``QuantifyJob`` (SUV and mask NIfTI, optional liver mask or organ map, metadata); a failing
study is reported and the others go on; ``lesions.csv``, ``patients.csv`` (and Parquet when pyarrow is there)
and ``quantify.json`` (the method record) are written atomically.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from unipet.errors import ImageGeometryError, MissingInputError
from unipet.quantify.biomarkers import (LESION_COLUMNS, PATIENT_COLUMNS, QuantifyConfig, liver_from_organs,
                                        method_record, quantify_study)

OUTPUT_FILES = ("lesions.csv", "patients.csv", "quantify.json")
PARQUET_FILES = ("lesions.parquet", "patients.parquet")


@dataclass
class QuantifyJob:
    """One study to quantify from files: SUV and mask NIfTI, optional liver mask or organ map, metadata."""

    case: str
    suv: Path
    mask: Path
    task: str | None = None
    liver_mask: Path | None = None
    organs: Path | None = None
    liver_label: int | None = None
    weight_kg: float | None = None
    height_m: float | None = None


def _load_mask(path: Path, what: str, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    from unipet.io.nifti import load_volume
    from unipet.study import same_grid

    arr, arr_affine = load_volume(path, what=what)
    if not same_grid(arr.shape, arr_affine, shape, affine, tol_mm=1e-2):
        raise ImageGeometryError(f"{what} grid {arr.shape} differs from the PET grid {tuple(shape)} (shape or affine); "
                                 "resample it onto the PET grid with nearest-neighbour interpolation first")
    return arr


def run_job(job: QuantifyJob, config: QuantifyConfig) -> tuple[Any, dict[str, Any]]:
    """Load one job's files and quantify it; returns ``(lesions, patient)`` with ``case`` and ``task`` added."""
    from unipet.io.manifest import check_suv_range
    from unipet.io.nifti import check_pet_values, load_volume
    from unipet.study import check_binary_mask

    suv, affine = load_volume(job.suv, what=f"case {job.case} SUV")
    mask = check_binary_mask(_load_mask(job.mask, f"case {job.case} lesion mask", suv.shape, affine),
                             f"case {job.case} lesion mask")
    suv, _ = check_pet_values(suv, f"case {job.case} SUV", mask=mask)
    check_suv_range(suv, f"case {job.case} SUV ({job.suv})")
    liver = None
    if config.delineation == "percist":
        if job.liver_mask is not None:
            liver = _load_mask(job.liver_mask, f"case {job.case} liver mask", suv.shape, affine) != 0
        elif job.organs is not None:
            organs = _load_mask(job.organs, f"case {job.case} organ map", suv.shape, affine)
            liver = liver_from_organs(np.rint(organs).astype(np.int64), liver_label=job.liver_label)
    lesions, patient = quantify_study((suv, mask, affine), config=config, liver=liver, weight_kg=job.weight_kg,
                                      height_m=job.height_m)
    lesions.insert(0, "task", job.task)
    lesions.insert(0, "case", job.case)
    return lesions, {"case": job.case, "task": job.task, **patient}


def quantify_jobs(jobs: Sequence[QuantifyJob], out_dir: str | Path | None, config: QuantifyConfig | None = None,
                  overwrite: bool = False, workers: int = 1, extra: dict[str, Any] | None = None) -> tuple[Any, Any, dict]:
    """Quantify studies and write ``lesions.csv``, ``patients.csv``, ``quantify.json`` (+ Parquet with pyarrow).

    Returns:
        ``(lesions, patients, record)``: two DataFrames and the JSON record. Nothing is written when
        ``out_dir`` is None; existing outputs are refused before any work unless ``overwrite``.
    """
    import importlib.util

    import pandas as pd

    from unipet.fileio import atomic_path, atomic_write_json, check_writable

    config = config or QuantifyConfig()
    config.validate()
    parquet = importlib.util.find_spec("pyarrow") is not None
    names = OUTPUT_FILES + (PARQUET_FILES if parquet else ())
    if out_dir is not None:
        for name in names:
            check_writable(Path(out_dir) / name, overwrite)
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(run_job, jobs, [config] * len(jobs)))
    else:
        results = [run_job(job, config) for job in jobs]
    lesion_cols = ["case", "task", *LESION_COLUMNS]
    found = [r[0] for r in results if len(r[0])]
    lesions = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=lesion_cols)
    lesions = lesions.reindex(columns=lesion_cols)
    patient_cols = ["case", "task", *PATIENT_COLUMNS, "delineation", "threshold_suv", "liver_suv_mean", "liver_suv_sd"]
    patients = pd.DataFrame([r[1] for r in results], columns=patient_cols)
    record = {"n_cases": len(results), **method_record(config), **(extra or {}),
              "files": list(names), "parquet": parquet}
    if out_dir is not None:
        out = Path(out_dir)
        for frame, stem in ((lesions, "lesions"), (patients, "patients")):
            with atomic_path(out / f"{stem}.csv", overwrite=overwrite) as tmp:
                frame.to_csv(tmp, index=False)
            if parquet:
                with atomic_path(out / f"{stem}.parquet", overwrite=overwrite) as tmp:
                    frame.to_parquet(tmp, index=False)
        atomic_write_json(out / "quantify.json", record, overwrite=overwrite)
    return lesions, patients, record


def quantify_files(suv: str | Path, mask: str | Path, out_dir: str | Path | None, *, case: str | None = None,
                   task: str | None = None, liver_mask: str | Path | None = None, organs: str | Path | None = None,
                   liver_label: int | None = None, weight_kg: float | None = None, height_m: float | None = None,
                   config: QuantifyConfig | None = None, overwrite: bool = False) -> tuple[Any, Any, dict]:
    """Quantify one SUV NIfTI with one mask NIfTI (see :func:`quantify_jobs`); ``case`` defaults to the mask's name."""
    from unipet.io.nifti import case_name

    mask = Path(mask)
    job = QuantifyJob(case=case or case_name(mask) or mask.stem, suv=Path(suv), mask=mask, task=task,
                      liver_mask=Path(liver_mask) if liver_mask else None, organs=Path(organs) if organs else None,
                      liver_label=liver_label, weight_kg=weight_kg, height_m=height_m)
    return quantify_jobs([job], out_dir, config, overwrite)


def quantify_manifest(manifest: str | Path, out_dir: str | Path | None, *, pred_dir: str | Path | None = None,
                      liver_label: int | None = None, config: QuantifyConfig | None = None, overwrite: bool = False,
                      workers: int = 1) -> tuple[Any, Any, dict]:
    """Quantify every case of a manifest: PET from ``images.PET``, mask ``<pred_dir>/<case>.nii.gz`` (or the
    case's reference label without ``pred_dir``), organ map ``organs`` with ``liver_label``, weight and height
    from the case metadata. Cases without a mask are skipped and listed as ``missing_masks`` in the record.
    """
    from unipet.errors import InputFileError
    from unipet.io.manifest import Manifest
    from unipet.study import StudyMeta

    jobs, missing = [], []
    for c in Manifest.load(manifest):
        if "PET" not in c.images or not c.images["PET"]:
            raise MissingInputError(f"case {c.case_id} has no PET image in the manifest; biomarkers need the SUV volume")
        if pred_dir is not None:
            found = [Path(pred_dir) / f"{c.case_id}{suffix}" for suffix in (".nii.gz", ".nii")]
            mask = next((p for p in found if p.is_file()), None)
        else:
            mask = Path(c.label) if c.label else None
        if mask is None:
            missing.append(c.case_id)
            continue
        meta = StudyMeta.from_dict(c.meta)
        jobs.append(QuantifyJob(case=c.case_id, suv=Path(c.images["PET"]), mask=mask, task=c.task,
                                organs=Path(c.organs) if c.organs else None, liver_label=liver_label,
                                weight_kg=meta.weight_kg, height_m=meta.height_m))
    if not jobs:
        raise InputFileError(f"no case of {manifest} has a mask ({'in ' + str(pred_dir) if pred_dir else 'label'}); "
                             "check the prediction folder (files <case>.nii.gz)")
    return quantify_jobs(jobs, out_dir, config, overwrite, workers, extra={"missing_masks": missing})
