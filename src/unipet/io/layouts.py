"""Dataset layouts in and out: autoPET, nnU-Net raw, DICOM folders and phantom cohorts → a Manifest.

- **autoPET** (``<root>/<patient>/<study>/{SUV,CTres,SEG}.nii.gz``, organ maps as ``ORGANS.nii.gz`` beside
  them): the diagnosis → task mapping comes from a metadata CSV when one is given or found (autoPET's
  ``diagnosis`` column, or unipet's ``task``); studies that have only ``PET.nii.gz`` (Bq/mL) and ``CT.nii.gz``
  are converted to SUV with a dose, weight and delay the user gives (or refused), the CT resampled onto the
  PET grid (linear, fill −1024 HU), and written beside the manifest — the source tree is never modified.
- **nnU-Net raw** (``dataset.json`` + ``imagesTr/<case>_<XXXX>.nii.gz`` + ``labelsTr/<case>.nii.gz``): the
  channel order is read from ``channel_names`` (autoPET I and III used opposite orders), never assumed.
- **DICOM**: one study per sub-folder (or the folder itself); PET converted to SUV per QIBA.
"""
from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from unipet.errors import ConfigError, InputFileError
from unipet.fileio import atomic_write_json, check_writable
from unipet.io.manifest import Case, Manifest, assign_splits, load_study
from unipet.tasks import TaskSet

NIFTI = ".nii.gz"
# autoPET's diagnosis for lesion-free controls; they get no task unless the user names one.
NEGATIVE_DIAGNOSES = {"negative", "none", "control"}
F18_HALF_LIFE_S = 6586.2


# ---------------------------------------------------------------------------------------------- autoPET
def import_autopet(
    root: str | Path,
    task_set: TaskSet | None = None,
    metadata_csv: str | Path | None = None,
    negative_task: str | None = None,
    default_task: str | None = None,
    converted_dir: str | Path | None = None,
    dose_bq: float | None = None,
    weight_kg: float | None = None,
    delay_s: float | None = None,
    half_life_s: float = F18_HALF_LIFE_S,
    split_seed: int = 0,
    source: str = "autopet",
) -> Manifest:
    """Index an autoPET-layout folder.

    Args:
        root: folder holding ``<patient>/<study>/`` sub-folders.
        task_set: tasks the diagnoses map to (default task set when None).
        metadata_csv: CSV with a study key (``study_id``/``Study UID``/``File Location``) and a diagnosis
            (``task``/``diagnosis``) column; ``<root>/clinical.csv`` and autoPET's metadata CSV are found
            automatically when None.
        negative_task: task given to lesion-free control studies (default: none).
        default_task: task for studies that the metadata does not cover (default: none, i.e. unknown).
        converted_dir: where SUV/CTres made from ``PET.nii.gz``/``CT.nii.gz`` are written.
        dose_bq, weight_kg, delay_s: injected activity (Bq), patient weight (kg) and injection-to-scan delay (s)
            for converting Bq/mL PET to SUV (decay-corrected dose); all three or none.
        split_seed: seed of the patient-level train/val/test split.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(f"autoPET folder {root} does not exist or is not a folder")
    task_set = task_set or TaskSet.load()
    study_dirs, data_root = autopet_study_dirs(root)
    meta_rows = _read_metadata(data_root, metadata_csv)
    cases: list[Case] = []
    for study_dir in study_dirs:
        patient, study = study_dir.parent.name, study_dir.name
        if (study_dir / "SUV.nii.gz").exists():
            pet, ct = study_dir / "SUV.nii.gz", study_dir / "CTres.nii.gz"
            if not ct.exists():
                ct = study_dir / "CT.nii.gz"
            if not ct.exists():
                raise InputFileError(f"{study_dir} has SUV.nii.gz but neither CTres.nii.gz nor CT.nii.gz")
        else:
            pet, ct = _convert_bqml_study(study_dir, converted_dir, dose_bq, weight_kg, delay_s, half_life_s)
        row = meta_rows.get(study) or meta_rows.get(f"{patient}/{study}") or {}
        task = _task_from_row(row, task_set, negative_task, default_task)
        label = study_dir / "SEG.nii.gz"
        organs = study_dir / "ORGANS.nii.gz"
        cases.append(Case(
            case_id=_case_id(patient, study), patient_id=str(row.get("patient_id") or patient), task=task,
            images={"PET": str(pet), "CT": str(ct)}, label=str(label) if label.exists() else None,
            organs=str(organs) if organs.exists() else None, meta=_meta_from_row(row)))
    if not cases:
        raise InputFileError(
            f"no studies found in {root}; the autoPET layout is <root>/<patient>/<study>/SUV.nii.gz (+ CTres.nii.gz, "
            "SEG.nii.gz) or PET.nii.gz + CT.nii.gz")
    assign_splits(cases, seed=split_seed)
    return Manifest(cases, task_set=task_set, source=source, root=root)


def autopet_study_dirs(folder: Path) -> tuple[list[Path], Path]:
    """The study folders of an autoPET root, of one patient folder or of one study folder
    (``unipet.io.inputs.find_study_dirs``: a study folder missing its PET or CT is refused, naming it), and the
    autoPET root they belong to, where ``clinical.csv`` / the metadata CSV is looked for: the folder itself for a
    root, its parent for a patient, its grandparent for a study."""
    from unipet.io.inputs import AUTOPET_DEPTHS, find_study_dirs

    kind, found = find_study_dirs(folder)
    root = folder
    for _ in range(2 - [k for k, _ in AUTOPET_DEPTHS].index(kind or "autopet")):
        root = root.parent
    return found, root


def _case_id(patient: str, study: str) -> str:
    """A file-name-safe case id; autoPET's study folders repeat dates and spaces, phantom ones are ids already."""
    safe = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", study) is not None and ".." not in study
    if study.startswith(patient) and safe and len(study) <= 128:
        return study
    patient = re.sub(r"[^A-Za-z0-9_.+-]+", "_", patient).replace("..", "_").lstrip("._") or "p"
    if safe and len(study) < 48:
        return f"{patient}_{study}"
    digest = re.sub(r"[^A-Za-z0-9]+", "", study)[-12:]
    return f"{patient}_{digest}"


def _read_metadata(root: Path, metadata_csv: str | Path | None) -> dict[str, dict[str, Any]]:
    """Rows of the metadata CSV keyed by study folder name and by ``patient/study``."""
    if metadata_csv is None:
        found = [root / "clinical.csv", *sorted(root.glob("*Metadata*.csv"))]
        metadata_csv = next((p for p in found if p.exists()), None)
        if metadata_csv is None:
            return {}
    path = Path(metadata_csv)
    if not path.exists():
        raise InputFileError(f"metadata CSV {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        norm = {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k}
        keys = []
        for col in ("study_id", "Study UID", "study"):
            if norm.get(col):
                keys.append(norm[col])
        if norm.get("File Location"):
            parts = Path(norm["File Location"].replace("\\", "/")).parts
            if len(parts) >= 2:
                keys += [parts[-1], f"{parts[-2]}/{parts[-1]}"]
        for k in keys:
            out.setdefault(k, norm)
    return out


def _task_from_row(row: dict[str, Any], task_set: TaskSet, negative_task: str | None, default_task: str | None) -> str | None:
    diagnosis = row.get("task") or row.get("diagnosis") or row.get("Diagnosis")
    negative = str(row.get("negative", "0")).strip() in {"1", "True", "true"}
    if diagnosis and str(diagnosis).strip().lower() in NEGATIVE_DIAGNOSES:
        return negative_task
    if diagnosis:
        return task_set.resolve(str(diagnosis))
    if negative and negative_task:
        return negative_task
    return default_task


def _meta_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """De-identified metadata from a CSV row (age in years, sex, weight, height, outcome)."""
    meta: dict[str, Any] = {}
    age = row.get("age")
    if age:
        m = re.match(r"0*(\d+(?:\.\d+)?)", str(age))
        meta["age"] = float(m.group(1)) if m else None
    if row.get("sex"):
        meta["sex"] = str(row["sex"])[0].upper()
    for src, dst in (("weight_kg", "weight_kg"), ("height_m", "height_m")):
        if row.get(src) not in (None, ""):
            meta[dst] = float(row[src])
    for col in ("time", "event", "negative"):
        if row.get(col) not in (None, ""):
            meta.setdefault("extra", {})[col] = float(row[col])
    return meta


def _convert_bqml_study(study_dir: Path, converted_dir, dose_bq, weight_kg, delay_s, half_life_s) -> tuple[Path, Path]:
    """Convert ``PET.nii.gz`` (Bq/mL) to SUV and resample ``CT.nii.gz`` onto its grid; returns the new paths."""
    from unipet.io.nifti import load_volume, save_volume
    from unipet.study import resample_to_grid

    given = [v is not None for v in (dose_bq, weight_kg, delay_s)]
    if not all(given):
        raise ConfigError(
            f"{study_dir} has PET.nii.gz in Bq/mL but no SUV.nii.gz; pass the injected dose, weight and injection-to-scan "
            "delay (--dose-bq, --weight-kg, --delay-s) to convert it, or convert it with `unipet suv` from DICOM")
    if converted_dir is None:
        raise ConfigError("converting PET to SUV needs a folder to write to (converted_dir)")
    if dose_bq <= 0 or weight_kg <= 0 or delay_s < 0:
        raise ConfigError("dose and weight must be positive and the delay non-negative for SUV conversion")
    pet, pet_affine = load_volume(study_dir / "PET.nii.gz", what="PET (Bq/mL)")
    ct_path = study_dir / "CT.nii.gz"
    ct, ct_affine = load_volume(ct_path, what="CT")
    decayed_dose = dose_bq * math.exp(-math.log(2.0) * delay_s / half_life_s)
    suv = pet * np.float32(weight_kg * 1000.0 / decayed_dose)
    ct_res = resample_to_grid(ct, ct_affine, pet.shape, pet_affine, order=1, fill=-1024.0)
    out = Path(converted_dir) / study_dir.parent.name / study_dir.name
    out.mkdir(parents=True, exist_ok=True)
    save_volume(suv, pet_affine, out / "SUV.nii.gz", overwrite=True)
    save_volume(ct_res, pet_affine, out / "CTres.nii.gz", overwrite=True)
    return out / "SUV.nii.gz", out / "CTres.nii.gz"


# ---------------------------------------------------------------------------------------------- nnU-Net raw
def import_nnunet(
    root: str | Path,
    task_set: TaskSet | None = None,
    task: str | None = None,
    task_csv: str | Path | None = None,
    include_test: bool = True,
    split_seed: int = 0,
) -> Manifest:
    """Index an nnU-Net raw dataset folder (``dataset.json``, ``imagesTr``, ``labelsTr``, optional ``imagesTs``).

    Channel meaning comes from ``dataset.json``'s ``channel_names`` (``"CT"``, ``"PET"``/``"SUV"`` in any order).
    nnU-Net has no notion of task: give one ``task`` for every case or a CSV (``case``, ``task``).
    """
    root = Path(root)
    ds_path = root / "dataset.json"
    if not ds_path.exists():
        raise InputFileError(f"{ds_path} not found; an nnU-Net raw dataset has dataset.json beside imagesTr/labelsTr")
    try:
        ds = json.loads(ds_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{ds_path} is not valid JSON ({exc})") from None
    channel_map = _channel_map(ds, ds_path)
    ending = ds.get("file_ending", NIFTI)
    task_set = task_set or TaskSet.load()
    per_case_task = {}
    if task_csv is not None:
        with Path(task_csv).open(newline="") as fh:
            per_case_task = {r["case"]: r["task"] for r in csv.DictReader(fh)}
    cases = []
    folders = [("imagesTr", "labelsTr")] + ([("imagesTs", "labelsTs")] if include_test else [])
    for img_folder, lbl_folder in folders:
        img_dir = root / img_folder
        if not img_dir.is_dir():
            continue
        ids = sorted({p.name[: -len(ending)].rsplit("_", 1)[0] for p in img_dir.glob(f"*{ending}")})
        for cid in ids:
            images = {}
            for idx, modality in channel_map.items():
                p = img_dir / f"{cid}_{idx:04d}{ending}"
                if not p.exists():
                    raise InputFileError(f"{p} is missing; dataset.json declares channel {idx} ({modality}) for every case")
                images[modality] = str(p)
            label = root / lbl_folder / f"{cid}{ending}"
            cases.append(Case(case_id=cid, patient_id=cid, task=per_case_task.get(cid, task), images=images,
                              label=str(label) if label.exists() else None,
                              split="test" if img_folder == "imagesTs" else None))
    if not cases:
        raise InputFileError(f"no images found in {root}/imagesTr; expected files like <case>_0000{ending}")
    train_like = [c for c in cases if c.split is None]
    assign_splits(train_like, {"train": 0.8, "val": 0.2}, seed=split_seed)
    return Manifest(cases, task_set=task_set, source="nnunet", root=root)


def _channel_map(ds: dict[str, Any], ds_path: Path) -> dict[int, str]:
    names = ds.get("channel_names") or ds.get("modality")
    if not isinstance(names, dict) or not names:
        raise ConfigError(f"{ds_path} has no 'channel_names'; unipet reads the channel order from it, never assumes it")
    out: dict[int, str] = {}
    for idx, name in names.items():
        key = str(name).strip().upper()
        if key in {"PET", "SUV", "PT"} or "PET" in key or "SUV" in key:
            out[int(idx)] = "PET"
        elif key == "CT" or key.startswith("CT"):
            out[int(idx)] = "CT"
        else:
            raise ConfigError(f"{ds_path}: channel {idx} is named {name!r}; unipet understands CT and PET/SUV channels")
    if len(set(out.values())) != len(out):
        raise ConfigError(f"{ds_path}: two channels map to the same modality ({names})")
    return out


def export_nnunet(
    manifest: Manifest,
    out_dir: str | Path,
    channels: Sequence[str] = ("CT", "PET"),
    dataset_name: str = "unipet",
    overwrite: bool = False,
) -> Path:
    """Write a manifest as an nnU-Net raw dataset (CT resampled onto the PET grid, labels binary).

    Cases whose split is ``test`` go to ``imagesTs``/``labelsTs``; the others to ``imagesTr``/``labelsTr``.
    ``channel_names`` records the channel order; a ``unipet_tasks.csv`` keeps each case's task.
    """
    from unipet.io.nifti import save_volume

    out = Path(out_dir)
    check_writable(out / "dataset.json", overwrite)
    n_train = 0
    task_rows = []
    for case in manifest:
        study = load_study(case, manifest.task_set)
        test = case.split == "test"
        img_dir, lbl_dir = out / ("imagesTs" if test else "imagesTr"), out / ("labelsTs" if test else "labelsTr")
        image = study.image(channels)
        for i in range(len(channels)):
            save_volume(image[i], study.affine, img_dir / f"{case.case_id}_{i:04d}{NIFTI}", overwrite=overwrite)
        if study.label is not None:
            save_volume(study.label, study.affine, lbl_dir / f"{case.case_id}{NIFTI}", overwrite=overwrite)
        n_train += 0 if test else 1
        task_rows.append(f"{case.case_id},{case.task or ''}")
    dataset = {
        "name": dataset_name, "channel_names": {str(i): c for i, c in enumerate(channels)},
        "labels": {"background": 0, "lesion": 1}, "numTraining": n_train, "file_ending": NIFTI,
    }
    (out / "unipet_tasks.csv").write_text("case,task\n" + "\n".join(task_rows) + "\n")
    atomic_write_json(out / "dataset.json", dataset, overwrite=overwrite)
    return out


# ---------------------------------------------------------------------------------------------- DICOM
def import_dicom(
    source: str | Path,
    out_dir: str | Path,
    task_set: TaskSet | None = None,
    task: str | None = None,
    kind: str = "bw",
    split_seed: int = 0,
    overwrite: bool = False,
    series_uid: str | Sequence[str] | None = None,
    rois: Sequence[str] | None = None,
) -> Manifest:
    """Convert DICOM PET/CT studies to NIfTI (SUV + CT on the PET grid) and index them.

    A study holding an RT structure set gets a reference label ``SEG.nii.gz`` on its PET grid
    (``unipet.io.rtstruct``: ROIs named by ``rois`` — one name or regular expression per label value — else the
    ROIs matching ``DEFAULT_ROI_PATTERN``, preferring a structure set drawn on the PET; the rasterisation rule is
    that module's). Label values and ROI names are recorded in the case's ``meta["reference_rois"]``.

    ``patient_id`` is a pseudonym of each study's DICOM PatientID (``unipet.io.dicom.patient_pseudonym``), so the
    visits of one patient share it and the patient-level split keeps them together. A study with several PET
    series is read by the stated rule of ``unipet.io.dicom`` (the only attenuation-corrected one, with a notice)
    or refused with the list of series; ``series_uid`` (one UID or one per study) chooses.

    ``source`` is one study folder or any tree of them: files are grouped by StudyInstanceUID
    (``unipet.io.dicom.study_folders``), so a patient folder with two examinations gives two studies. Converted
    files are written to
    ``out_dir/<study_id>/{SUV,CTres}.nii.gz``; study ids are pseudonyms (never patient names).
    """
    from unipet.io.dicom import load_dicom_study, study_folders
    from unipet.io.nifti import save_volume
    from unipet.io.rtstruct import study_reference_label

    source, out_dir = Path(source), Path(out_dir)
    if not source.is_dir():
        raise InputFileError(f"DICOM folder {source} does not exist or is not a folder")
    study_dirs = study_folders(source)
    task_set = task_set or TaskSet.load()
    cases = []
    for folder in study_dirs:
        study = load_dicom_study(folder, task=task, kind=kind, series_uid=series_uid)
        dest = out_dir / study.study_id
        images = {"PET": dest / "SUV.nii.gz"}
        save_volume(study.pet, study.affine, images["PET"], overwrite=overwrite)
        if study.ct is not None:  # a PET-only study keeps no CT channel
            images["CT"] = dest / "CTres.nii.gz"
            save_volume(study.ct, study.affine, images["CT"], overwrite=overwrite)
        meta = study.meta.to_dict()
        reference = study_reference_label(folder, study.shape, study.affine, series_uid=series_uid, rois=rois)
        label = None
        if reference is not None:
            label = dest / "SEG.nii.gz"
            save_volume(reference[0], study.affine, label, overwrite=overwrite)
            meta["reference_rois"] = {str(i): name for i, name in enumerate(reference[1], start=1)}
        cases.append(Case(case_id=study.study_id, patient_id=study.patient_id, task=task,
                          images={k: str(v) for k, v in images.items()}, meta=meta,
                          label=str(label) if label is not None else None))
    assign_splits(cases, seed=split_seed)
    return Manifest(cases, task_set=task_set, source="dicom", root=out_dir)


def import_phantom(root: str | Path, task_set: TaskSet | None = None, split_seed: int = 0) -> Manifest:
    """Index a cohort written by ``unipet phantom`` (autoPET layout + ``clinical.csv`` + organ maps)."""
    root = Path(root)
    if not (root / "clinical.csv").exists():
        raise InputFileError(f"{root} has no clinical.csv; is it a folder written by `unipet phantom`?")
    return import_autopet(root, task_set=task_set, metadata_csv=root / "clinical.csv", split_seed=split_seed,
                          source="phantom")
