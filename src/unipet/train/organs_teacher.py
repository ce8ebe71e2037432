"""Organ pseudo-labels by teacher–student training (seed 004): organ maps for PET/CT studies that have none.

1. **Teacher**: an organ segmenter is trained with unipet's engine (``unipet.train.train``) on the studies that
   have organ maps (phantom ``ORGANS.nii.gz``, or TotalSegmentator outputs a user imports in the manifest's
   ``organs`` field, remapped to one label table). Their cache is built with ``label_source="organs"``
   (``unipet.data.cache.build_cache``: the organ map is cached as the label), so the sampler, trainer, checkpoint
   and predictor are used unchanged: the segmenter is a softmax model with ``1 + max(label value)`` classes (default STU-Net-B, the
   residual nnU-Net TotalSegmentator-style organ models use; recipe ``organs``: nnU-Net's, uniform patches).
2. **Pseudo-labels**: the teacher predicts organ maps of the studies without one (``predict_organs``: the
   common ``Predictor``'s sliding window, then back onto each study's grid).
3. **Student**: a second segmenter, trained from scratch on the labelled studies *and* the pseudo-labelled ones
   (Noisy Student: the student sees the augmented images while its targets come from the un-augmented teacher),
   predicts the final organ maps of the studies without one.

``teacher_student`` runs all three and writes ``OUT/manifest.json`` (the input manifest with ``organs`` filled
in for every study that had none) and ``OUT/organs.json`` (the label table), so ``unipet preprocess`` caches the
maps as the ``organs`` input of the ``anatomy`` model. Every map is written as ``OUT/maps/<case>/ORGANS.nii.gz``
on its study's grid (uint8). Runs are resumable at the stage level: a finished teacher/student run and existing
map files are reused.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from unipet.data.organs import ORGAN_LABELS
from unipet.errors import ConfigError, LabelError
from unipet.io.manifest import Case, Manifest

ORGAN_FILE = "ORGANS.nii.gz"
DEFAULT_MODEL = "stunet-b"


def organ_classes(labels: dict[str, int] | None = None) -> int:
    """Softmax classes of an organ segmenter for a label table (``1 + max value``; background 0).

    Raises:
        ConfigError: a value outside 1..255 (the cache stores labels as uint8).
    """
    table = ORGAN_LABELS if labels is None else labels
    values = list(table.values())
    if not values or min(values) < 1 or max(values) > 255:
        raise ConfigError("an organ label table needs values 1..255 (0 is background); remap the organ maps")
    return 1 + max(values)


def organ_manifest(cases: Sequence[Case], task_set=None, source: str = "organs") -> Manifest:
    """The manifest of an organ model's training cache: the cases with an organ map, without lesion labels.

    Splits are dropped (every study with an organ map trains the organ model) and tasks too (organ models are
    not prompted).

    Raises:
        LabelError: no case has an organ map.
    """
    out = [Case(case_id=c.case_id, images=dict(c.images), patient_id=c.patient_id, task=None, label=None,
                organs=c.organs, split=None, meta=dict(c.meta)) for c in cases if c.organs]
    if not out:
        raise LabelError("no case has an organ map to train an organ model on; give studies with organ maps "
                         "(phantom ORGANS.nii.gz, or imported TotalSegmentator maps in the manifest's 'organs' field)")
    return Manifest(out, task_set=task_set, source=source)


def train_organ_model(cases: Sequence[Case], run_dir: str | Path, model: str = DEFAULT_MODEL,
                      recipe: Any = "organs", labels: dict[str, int] | None = None,
                      model_kw: dict[str, Any] | None = None, task_set=None, **train_kw: Any) -> Path:
    """Train an organ segmenter on the organ maps of ``cases`` into ``run_dir`` (cache in ``run_dir/cache``).

    A run folder that already holds a complete checkpoint is reused as is.

    Args:
        cases: studies; those with an organ map are used.
        model: registry name of the segmenter; recipe: shipped name, file or Recipe.
        labels: the label table (default ``unipet.data.organs.ORGAN_LABELS``): sets the number of classes.
        model_kw: builder options (``num_classes`` is set from ``labels``).
        **train_kw: ``unipet.train.train`` options (``device``, ``iterations``, ``patch_size``, ...).

    Returns:
        ``run_dir``.
    """
    from unipet.data.cache import build_cache
    from unipet import checkpoint as ckpt
    from unipet.train.trainer import train

    run_dir = Path(run_dir)
    if (run_dir / ckpt.CHECKPOINT).exists() and ckpt.read_meta(run_dir).complete:
        return run_dir
    manifest = organ_manifest(cases, task_set)
    cache = build_cache(manifest, run_dir / "cache", label_source="organs")
    resume = (run_dir / ckpt.CHECKPOINT).exists() or (run_dir / ckpt.OLD).exists()
    kw = {**(model_kw or {}), "num_classes": organ_classes(labels)}
    train(cache, model, run_dir, recipe=None if resume else recipe, model_kw=kw, resume=resume, **train_kw)
    return run_dir


def predict_organs(run_dir: str | Path, cases: Sequence[Case], out_dir: str | Path, device: str | None = None,
                   overwrite: bool = False, progress: Callable[[int, int], None] | None = None) -> dict[str, Path]:
    """Organ maps of ``cases`` by the organ model in ``run_dir``, written to ``OUT_DIR/<case>/ORGANS.nii.gz``.

    Each map is on its study's grid (the study's shape and affine; uint8 labels). Existing files are kept unless
    ``overwrite``.

    Returns:
        ``{case_id: path}``.
    """
    from unipet.data.preprocess import preprocess_study, restore_to_study_grid
    from unipet.infer.predictor import Predictor
    from unipet.io.manifest import load_study
    from unipet.io.nifti import save_volume

    out = Path(out_dir)
    paths: dict[str, Path] = {}
    predictor = None
    for i, case in enumerate(cases):
        path = out / case.case_id / ORGAN_FILE
        if overwrite or not path.exists():
            if predictor is None:
                predictor = Predictor.from_checkpoint(run_dir, device=device or "auto")
            study = load_study(case, with_label=False)
            pre = preprocess_study(study, predictor.config, with_label=False)
            labels = restore_to_study_grid(predictor.segment(pre.image), pre, order=0, fill=0)
            save_volume(labels.astype(np.uint8), study.affine, path, overwrite=overwrite)
        paths[case.case_id] = path
        if progress:
            progress(i + 1, len(cases))
    return paths


@dataclass
class OrganPipelineResult:
    """What ``teacher_student`` produced: run folders, the maps of the studies that had none, the manifest."""

    teacher_dir: Path
    student_dir: Path | None
    maps: dict[str, Path]
    pseudo_labels: dict[str, Path]
    manifest_path: Path
    manifest: Manifest = field(repr=False, default=None)  # type: ignore[assignment]


def teacher_student(manifest: Manifest, out_dir: str | Path, model: str = DEFAULT_MODEL, recipe: Any = "organs",
                    labels: dict[str, int] | None = None, model_kw: dict[str, Any] | None = None,
                    student: bool = True, teacher_dir: str | Path | None = None, overwrite: bool = False,
                    device: str | None = None, **train_kw: Any) -> OrganPipelineResult:
    """Teacher–student organ maps for the studies of ``manifest`` without one (see the module docstring).

    Args:
        manifest: studies; those with ``organs`` teach, those without get maps.
        out_dir: ``teacher/``, ``pseudo/``, ``student/``, ``maps/``, ``manifest.json`` and ``organs.json`` go here.
        model, recipe, labels, model_kw: the organ segmenter (both teacher and student).
        student: False stops after the teacher (its predictions are the maps).
        teacher_dir: an organ model trained before (skips training the teacher).
        overwrite: replace an existing ``OUT/manifest.json`` and map files.
        device, **train_kw: ``unipet.train.train`` options (``iterations``, ``patch_size``, ...).

    Raises:
        LabelError: no study has an organ map; ConfigError: every study has one already.
    """
    from unipet.fileio import atomic_write_json, check_writable

    out = Path(out_dir)
    manifest_path = check_writable(out / "manifest.json", overwrite)
    labelled = [c for c in manifest if c.organs]
    missing = [c for c in manifest if not c.organs]
    if not labelled:
        raise LabelError("no study of the manifest has an organ map; the teacher needs some (phantom cohorts write "
                         "ORGANS.nii.gz; or import TotalSegmentator maps into the manifest's 'organs' field)")
    if not missing:
        raise ConfigError("every study of the manifest has an organ map already; there is nothing to predict")
    opts = dict(model=model, recipe=recipe, labels=labels, model_kw=model_kw, task_set=manifest.task_set,
                device=device, **train_kw)
    teacher = Path(teacher_dir) if teacher_dir is not None else train_organ_model(labelled, out / "teacher", **opts)
    pseudo = predict_organs(teacher, missing, out / ("pseudo" if student else "maps"), device, overwrite)
    student_dir = None
    maps = pseudo
    if student:
        taught = [replace(c, organs=str(pseudo[c.case_id])) for c in missing]
        student_dir = train_organ_model(labelled + taught, out / "student", **opts)
        maps = predict_organs(student_dir, missing, out / "maps", device, overwrite)
    filled = [replace(c, organs=str(maps[c.case_id])) if c.case_id in maps else c for c in manifest]
    result_manifest = Manifest(filled, task_set=manifest.task_set, source=manifest.source, root=manifest.root)
    atomic_write_json(out / "organs.json", dict(ORGAN_LABELS if labels is None else labels), overwrite=True)
    result_manifest.save(manifest_path, overwrite=overwrite)
    return OrganPipelineResult(teacher, student_dir, maps, pseudo, manifest_path, result_manifest)
