"""Organ and vessel targets as tasks: derive binary label maps from organ maps, one case per (study, structure).

A task whose ``label`` names organs (``{"organ": ["aorta"]}``; names or groups of ``unipet.data.organs``, e.g.
``"kidney"`` = both kidneys) is segmented from the study's organ map (``ORGANS.nii.gz`` of a phantom cohort, or
any organ map using the same label table). ``add_organ_tasks`` writes each structure's mask
(``OUT/<case>/<task>.nii.gz``) and returns a manifest with one extra case per study and structure
(``<case>__<task>``: same images, patient and split, that mask as label) — so the cache, sampler, trainer and
evaluation treat the aorta or the ureters exactly like a lesion task (gCIS's tubular targets, clDice).
The shipped task set ``phantom_structures`` holds the phantom's cancer types plus liver, spleen, kidney, aorta,
iliac arteries and ureter.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from unipet.data.organs import label_values
from unipet.errors import ConfigError, LabelError
from unipet.io.manifest import Case, Manifest
from unipet.tasks import Task, TaskSet


def organ_label(task: Task) -> tuple[int, ...] | None:
    """Organ-map values of a task whose ``label`` names organs (``{"organ": NAME or [NAMES]}``), else None."""
    names = task.label.get("organ") if isinstance(task.label, dict) else None
    if names is None:
        return None
    names = [names] if isinstance(names, str) else list(names)
    try:
        return label_values(*names)
    except KeyError as exc:
        raise ConfigError(f"task {task.name}: organ {exc.args[0]!r} is not in the organ label table "
                          "(unipet.data.organs.ORGAN_LABELS / ORGAN_GROUPS); fix the task set") from None


def organ_tasks(task_set: TaskSet) -> list[str]:
    """Names of the tasks of ``task_set`` whose label is derived from organ maps."""
    return [t.name for t in task_set if organ_label(t) is not None]


def structure_mask(organs: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """``uint8`` mask (1 inside) of the voxels of an organ map ``(z, y, x)`` whose label is one of ``values``."""
    return np.isin(organs, np.asarray(values)).astype(np.uint8)


def add_organ_tasks(manifest: Manifest, out_dir: str | Path, tasks: Sequence[str] | None = None,
                    overwrite: bool = False) -> Manifest:
    """The manifest plus one case per (study with an organ map, organ task); masks written to ``out_dir``.

    Args:
        manifest: cases with ``organs`` maps; its task set must contain the organ tasks.
        out_dir: where ``<case>/<task>.nii.gz`` masks go.
        tasks: organ tasks to add (default: every organ task of the task set).
        overwrite: replace existing mask files (otherwise an existing mask is reused as is).

    Returns:
        A new Manifest (same task set, source and root) with the original cases first.

    Raises:
        ConfigError: a named task does not derive from organ maps; LabelError: no case has an organ map.
    """
    from unipet.io.nifti import load_volume, save_volume

    ts = manifest.task_set
    names = organ_tasks(ts) if tasks is None else [ts.resolve(t) for t in tasks]
    values = {}
    for name in names:
        v = organ_label(ts[name])
        if v is None:
            raise ConfigError(f"task {name} has no organ label ({{'organ': [...]}}); only organ/vessel tasks derive "
                              "from organ maps")
        values[name] = v
    with_maps = [c for c in manifest if c.organs]
    if names and not with_maps:
        raise LabelError("no case of the manifest has an organ map; organ tasks need ORGANS.nii.gz (phantom cohorts "
                         "write them) or organ maps in the manifest's 'organs' field")
    out = Path(out_dir)
    extra = []
    for case in with_maps:
        organs, affine = None, None
        for name in names:
            path = out / case.case_id / f"{name}.nii.gz"
            if overwrite or not path.exists():
                if organs is None:
                    organs, affine = load_volume(case.organs, what=f"case {case.case_id} organ map", dtype=np.int32)
                save_volume(structure_mask(organs, values[name]), affine, path, overwrite=overwrite)
            extra.append(Case(case_id=f"{case.case_id}__{name}", images=dict(case.images), patient_id=case.patient_id,
                              task=name, label=str(path), organs=case.organs, split=case.split, meta=dict(case.meta)))
    return Manifest([*manifest.cases, *extra], task_set=ts, source=manifest.source, root=manifest.root)
