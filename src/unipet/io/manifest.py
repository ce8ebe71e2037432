"""The manifest: a JSON list of cases that every importer writes and every later stage reads.

Schema (paths are relative to the manifest's folder when they lie below it, else absolute)::

    {"version": 1, "source": "autopet", "task_set": {...TaskSet.to_dict()...},
     "cases": [{"case_id": "...", "patient_id": "...", "task": "lung_cancer" | null,
                "images": {"PET": "a/SUV.nii.gz", "CT": "a/CTres.nii.gz"},
                "label": "a/SEG.nii.gz" | null, "organs": "a/ORGANS.nii.gz" | null,
                "split": "train" | "val" | "test" | null, "meta": {...de-identified...}}]}

PET images referenced by a manifest are in SUV and CT in HU; ``load_study`` resamples the CT onto the
PET grid when the grids differ, checks that they overlap, applies the PET value rule
(``unipet.io.nifti.check_pet_values``: NaN inside the lesion label refused, elsewhere 0 SUV, negatives clipped
with a count, all-zero refused) and refuses PET that looks like Bq/mL. Labels are never narrowed (a value that
does not fit the label type is an error), and case ids must be safe file names (``check_case_id``).
"""
from __future__ import annotations

import logging
import os
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from unipet.errors import ConfigError, ImageGeometryError, InputFileError, IntensityError, LabelError
from unipet.fileio import atomic_write_json, read_json_object
from unipet.study import Study, StudyMeta, grids_overlap, resample_to_grid, same_grid, spacing_from_affine
from unipet.tasks import TaskSet

log = logging.getLogger("unipet")

MANIFEST_VERSION = 1
# SUV above this is physically implausible for any clinical tracer; values like this mean Bq/mL.
SUV_PLAUSIBLE_MAX = 300.0


@dataclass
class Case:
    """One study in a manifest (paths absolute once loaded)."""

    case_id: str
    images: dict[str, str]
    patient_id: str | None = None
    task: str | None = None
    label: str | None = None
    organs: str | None = None
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.case_id = check_case_id(self.case_id)
        if self.patient_id is None:
            self.patient_id = self.case_id
        elif not isinstance(self.patient_id, (str, int)) or isinstance(self.patient_id, bool):
            raise ConfigError(f"case {self.case_id}: patient_id must be a string, got {self.patient_id!r}")
        self.patient_id = str(self.patient_id)


#: what a case id may hold: it names output files (``<case_id>.nii.gz``), so no separators and no ``..``
CASE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def check_case_id(case_id: Any) -> str:
    """``case_id`` if it is a safe file-name stem (letters, digits, ``. _ + -``, at most 128 characters, not
    starting with a dot, no ``..``), else ``ConfigError``: case ids name output files, and one like
    ``../escape`` would write outside the output folder."""
    if not isinstance(case_id, str) or not CASE_ID_PATTERN.fullmatch(case_id) or ".." in case_id:
        raise ConfigError(f"case id {case_id!r} is not a safe file name (letters, digits and . _ + - only, no '..', "
                          "no path separators, at most 128 characters); rename the case")
    return case_id


class Manifest:
    """A list of cases plus the task set they refer to."""

    def __init__(self, cases: Sequence[Case], task_set: TaskSet | None = None, source: str = "custom",
                 root: Path | None = None) -> None:
        self.cases = list(cases)
        self.task_set = task_set or TaskSet.load()
        self.source = source
        self.root = Path(root) if root is not None else Path.cwd()
        ids = [c.case_id for c in self.cases]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            where = "; ".join(f"{d!r} from " + " and ".join(_case_origin(c) for c in self.cases if c.case_id == d)
                              for d in dup[:3])
            raise ConfigError(f"{len(dup)} case ids are given to more than one study ({where}); case ids must be "
                              "unique — rename one of the folders (ids keep only A-Z, a-z, 0-9 and _.+-, so "
                              "'Müller' and 'Möller' both become 'M_ller') or give the cases distinct ids")
        for c in self.cases:
            if c.task is not None:
                c.task = self.task_set.resolve(c.task)  # raises UnknownTaskError with the known names

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def by_id(self, case_id: str) -> Case:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise ConfigError(f"case {case_id!r} is not in the manifest")

    def split(self, name: str) -> list[Case]:
        return [c for c in self.cases if c.split == name]

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        def rel(p: str | None) -> str | None:
            if p is None or relative_to is None:
                return p
            try:
                return os.path.relpath(Path(p).resolve(), relative_to.resolve()) if _is_below(Path(p), relative_to) else str(Path(p).resolve())
            except ValueError:
                return str(p)

        cases = []
        for c in self.cases:
            d = asdict(c)
            d["images"] = {k: rel(v) for k, v in c.images.items()}
            d["label"], d["organs"] = rel(c.label), rel(c.organs)
            cases.append(d)
        return {"version": MANIFEST_VERSION, "source": self.source, "task_set": self.task_set.to_dict(), "cases": cases}

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        path = Path(path)
        return atomic_write_json(path, self.to_dict(relative_to=path.parent), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        path = Path(path)
        data = read_json_object(path, "manifest", "create it with `unipet import`")
        if not isinstance(data.get("cases"), list):
            raise ConfigError(f"manifest {path} has no 'cases' list (found {type(data.get('cases')).__name__}); "
                              "re-create it with `unipet import`")
        task_set = TaskSet.from_dict(data["task_set"]) if isinstance(data.get("task_set"), dict) else TaskSet.load(data.get("task_set"))
        base = path.parent

        def absolute(p: str | None) -> str | None:
            return None if p is None else str((base / p) if not os.path.isabs(p) else Path(p))

        cases = []
        for i, raw in enumerate(data["cases"]):
            if not isinstance(raw, dict):
                raise ConfigError(f"manifest {path}: case {i} is {type(raw).__name__} {raw!r}, not an object with "
                                  "'case_id' and 'images'; re-create the manifest with `unipet import`")
            if not isinstance(raw.get("images"), dict):
                raise ConfigError(f"manifest {path}: case {raw.get('case_id')!r} needs an 'images' mapping "
                                  "(e.g. {\"PET\": \"a/SUV.nii.gz\", \"CT\": \"a/CTres.nii.gz\"})")
            for key in ("task", "label", "organs", "split"):
                if raw.get(key) is not None and not isinstance(raw[key], str):
                    raise ConfigError(f"manifest {path}: case {raw.get('case_id')!r} has {key} {raw[key]!r}; it must "
                                      "be a string or null")
            for key, value in raw["images"].items():
                if not isinstance(key, str) or key.upper() not in ("PET", "CT") or (value is not None and not isinstance(value, str)):
                    raise ConfigError(f"manifest {path}: case {raw.get('case_id')!r} has images.{key} = {value!r}; "
                                      "images map PET and CT to file paths (strings)")
            if not isinstance(raw.get("meta") or {}, dict):
                raise ConfigError(f"manifest {path}: case {raw.get('case_id')!r} has a 'meta' that is not an object")
            try:
                c = Case(**{k: raw.get(k) for k in ("case_id", "images", "patient_id", "task", "label", "organs", "split")},
                         meta=raw.get("meta") or {})
            except TypeError as exc:
                raise ConfigError(f"manifest {path}: malformed case {raw!r} ({exc})") from None
            c.images = {k.upper(): absolute(v) for k, v in c.images.items()}
            c.label, c.organs = absolute(c.label), absolute(c.organs)
            cases.append(c)
        return cls(cases, task_set=task_set, source=data.get("source", "custom"), root=base)


def _case_origin(case: "Case") -> str:
    """Where a case comes from, for messages: the folder of its PET (else CT) image, or its id."""
    image = case.images.get("PET") or case.images.get("CT")
    return str(Path(image).parent) if image else repr(case.case_id)


def _is_below(p: Path, root: Path) -> bool:
    try:
        p.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def check_suv_range(pet: np.ndarray, source: str) -> None:
    """Refuse a PET volume that is evidently in Bq/mL (or counts) where SUV is expected."""
    peak = float(np.percentile(pet, 99.9)) if pet.size else 0.0
    if peak > SUV_PLAUSIBLE_MAX:
        raise IntensityError(
            f"{source} looks like activity concentration, not SUV (99.9th percentile {peak:.0f} > "
            f"{SUV_PLAUSIBLE_MAX:.0f}); convert it first: `unipet suv` for DICOM, or give dose, weight and "
            "times to the autoPET importer (--dose-bq, --weight-kg, --delay-s)")


def load_study(case: Case, task_set: TaskSet | None = None, with_label: bool = True) -> Study:
    """Read a case's NIfTI files into a Study on the PET grid (CT-only cases keep the CT grid).

    The plausibility checks of ``unipet.io.plausibility`` run on the way: sizes from the headers before reading,
    a PET that is a CT or far below SUV, a CT not in HU, a CT that misses part of the PET (warned) or does not
    line up with it (refused).

    Raises InputFileError, ImageGeometryError, IntensityError or LabelError with what to fix.
    """
    from unipet.io.nifti import check_pet_values, load_volume, replace_non_finite
    from unipet.io.plausibility import check_ct_is_hu, check_pet_ct_pair, check_pet_is_pet, check_volume_size

    pet = ct = None
    affine = None
    for key in ("PET", "CT"):  # sizes from the headers, before any voxel is read
        if case.images.get(key):
            check_volume_size(case.images[key], f"case {case.case_id} {key}")
    if "PET" in case.images and case.images["PET"]:
        pet, affine = load_volume(case.images["PET"], what=f"case {case.case_id} PET")
        check_pet_is_pet(pet, f"case {case.case_id} PET ({case.images['PET']})")
    if "CT" in case.images and case.images["CT"]:
        ct, ct_affine = load_volume(case.images["CT"], what=f"case {case.case_id} CT")
        ct, n_bad = replace_non_finite(ct, "CT", f"case {case.case_id} CT")
        _report_non_finite(case.case_id, "CT", n_bad)
        check_ct_is_hu(ct, f"case {case.case_id} CT ({case.images['CT']})")
        if pet is None:
            affine = ct_affine
        elif not same_grid(ct.shape, ct_affine, pet.shape, affine):
            if not grids_overlap(ct.shape, ct_affine, pet.shape, affine):
                raise ImageGeometryError(
                    f"case {case.case_id}: the PET and CT grids do not overlap in space; they are not from the "
                    "same examination or one of the headers is wrong")
            ct = resample_to_grid(ct, ct_affine, pet.shape, affine, order=1, fill=-1024.0)
    if affine is None:
        raise InputFileError(f"case {case.case_id} names no PET or CT image; give images.PET and/or images.CT")
    shape = (pet if pet is not None else ct).shape
    label = organs = None
    if with_label and case.label:
        label = _load_on_grid(case.label, f"case {case.case_id} label", shape, affine, np.uint8)
    if pet is not None:  # NaN inside the lesion label is an error; elsewhere 0 SUV; negatives clipped (warned)
        pet, _ = check_pet_values(pet, f"case {case.case_id} PET", mask=label)
        check_suv_range(pet, f"case {case.case_id} PET ({case.images['PET']})")
        if ct is not None:
            check_pet_ct_pair(pet, ct, spacing_from_affine(affine), f"case {case.case_id}")
    if case.organs:
        organs = _load_on_grid(case.organs, f"case {case.case_id} organ map", shape, affine, np.uint16)
    meta = StudyMeta.from_dict(case.meta)
    task = case.task if (task_set is None or case.task is None) else task_set.resolve(case.task)
    return Study(study_id=case.case_id, patient_id=case.patient_id, pet=pet, ct=ct, affine=affine, task=task,
                 label=label, organs=organs, meta=meta)


def check_cases(manifest: "Manifest", cases: Sequence[Case] | None = None, with_label: bool = True) -> dict[str, str]:
    """Load every case (``load_study``) and collect what is wrong with each instead of stopping at the first.

    Returns:
        ``{case_id: message}`` of the cases that cannot be read (empty when all can).
    """
    from unipet.errors import UnipetError

    bad: dict[str, str] = {}
    for case in manifest if cases is None else cases:
        try:
            load_study(case, manifest.task_set, with_label=with_label)
        except UnipetError as exc:
            bad[case.case_id] = str(exc)
    return bad


def _report_non_finite(case_id: str, modality: str, n_bad: int) -> None:
    if n_bad:
        log.warning("case %s: %d NaN/-Inf %s voxels set to the background (%s)", case_id, n_bad, modality,
                    "0 SUV" if modality == "PET" else "-1024 HU")


def _load_on_grid(path: str, what: str, shape, affine, dtype) -> np.ndarray:
    from unipet.io.nifti import load_volume

    arr, arr_affine = load_volume(path, what=what, dtype=np.float32)
    if not same_grid(arr.shape, arr_affine, shape, affine, tol_mm=1e-2):
        raise ImageGeometryError(
            f"{what} grid {arr.shape} differs from the image grid {tuple(shape)} (shape or affine); labels must be "
            "on the PET grid — resample it with nearest-neighbour interpolation first")
    if not np.isfinite(arr).all() or np.any(arr != np.round(arr)) or arr.min() < 0:
        raise LabelError(f"{what} holds non-integer or negative values; a label map must hold integers >= 0 "
                         "(resample labels with nearest-neighbour interpolation)")
    top = float(arr.max()) if arr.size else 0.0
    if top > np.iinfo(dtype).max:  # never narrow silently: 256 in uint8 would become 0 (the lesion erased)
        fix = ("binarise the lesion mask (mask > 0) or pick its lesion label" if dtype == np.uint8 else
               f"remap its labels to 0..{np.iinfo(dtype).max}")
        raise LabelError(f"{what} holds the value {top:g}, more than {np.dtype(dtype).name} holds (max "
                         f"{np.iinfo(dtype).max}); unipet does not narrow labels silently — {fix}")
    return arr.astype(dtype)


def assign_splits(cases: Sequence[Case], fractions: dict[str, float] | None = None, seed: int = 0) -> None:
    """Assign ``case.split`` by *patient* so that no patient is in two splits; reproducible from ``seed``.

    ``fractions`` defaults to ``{"train": 0.7, "val": 0.1, "test": 0.2}``; the counts are rounded per
    patient, in sorted patient order shuffled by ``seed``.
    """
    fractions = fractions or {"train": 0.7, "val": 0.1, "test": 0.2}
    total = sum(fractions.values())
    if total <= 0:
        raise ConfigError("split fractions must sum to a positive number")
    patients = sorted({c.patient_id for c in cases})
    random.Random(seed).shuffle(patients)
    bounds, acc = [], 0.0
    for name, frac in fractions.items():
        acc += frac / total
        bounds.append((name, round(acc * len(patients))))
    assignment, start = {}, 0
    for name, end in bounds:
        for p in patients[start:end]:
            assignment[p] = name
        start = end
    for c in cases:
        c.split = assignment.get(c.patient_id, bounds[-1][0])
