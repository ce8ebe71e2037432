"""Batch prediction over many studies: resumable, failure-isolating, sharded over GPUs with torchrun.

Inputs (``collect_cases``): Study objects, a manifest JSON, an nnU-Net raw folder (``dataset.json``), an
autoPET-layout folder (``<patient>/<study>/SUV.nii.gz``), or a DICOM folder (converted to NIfTI under
``OUT_DIR/_converted`` first). A study whose mask and lesion table exist is skipped (resume by re-running);
a study that fails is reported with its error and the batch goes on. Under torchrun each rank takes every
K-th remaining study (``RANK``/``WORLD_SIZE``); each rank writes its own ``summary.rank<R>.json``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from unipet.errors import InputFileError, UnipetError
from unipet.fileio import atomic_write_json
from unipet.infer.predictor import AUTO, Predictor, write_prediction
from unipet.study import Study
from unipet.tasks import TaskSet

log = logging.getLogger("unipet")


@dataclass
class CaseSource:
    """A study to predict: its id and a loader (so studies are read one at a time)."""

    case_id: str
    load: Callable[[], Study]


@dataclass
class BatchReport:
    """What a batch run did: ``done``/``skipped`` case ids, ``failed`` ``{case_id: message}``, per-case records."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed, "cases": self.records}


def collect_cases(source: Any, out_dir: str | Path, task_set: TaskSet | None = None,
                  series_uid: str | Sequence[str] | None = None) -> list[CaseSource]:
    """Turn any supported input into a list of ``CaseSource`` (see the module docstring); ``series_uid`` picks the
    PET series of DICOM studies that hold several (``unipet.io.dicom``)."""
    from unipet.io.layouts import import_autopet, import_dicom, import_nnunet
    from unipet.io.manifest import Manifest, load_study

    if isinstance(source, Study):
        return [CaseSource(source.study_id, lambda s=source: s)]
    if isinstance(source, (list, tuple)) and all(isinstance(s, Study) for s in source):
        return [CaseSource(s.study_id, lambda s=s: s) for s in source]
    path = Path(source)
    if not path.exists():
        raise InputFileError(f"input {path} does not exist; give a manifest, an autoPET / nnU-Net folder or DICOM")
    if path.is_file():
        if path.suffix != ".json":
            raise InputFileError(f"input {path} is a file but not a manifest JSON; give a manifest or a folder")
        manifest = Manifest.load(path)
    elif (path / "dataset.json").exists():
        manifest = import_nnunet(path, task_set=task_set)
    elif any(path.glob("*/*/SUV.nii.gz")) or any(path.glob("*/*/PET.nii.gz")):
        manifest = import_autopet(path, task_set=task_set)
    else:
        manifest = import_dicom(path, Path(out_dir) / "_converted", task_set=task_set, overwrite=False,
                                series_uid=series_uid)
    ts = manifest.task_set
    return [CaseSource(c.case_id, lambda c=c: load_study(c, ts, with_label=False)) for c in manifest]


def shard(cases: Sequence[CaseSource], rank: int, world_size: int) -> list[CaseSource]:
    """Rank ``rank``'s share: every ``world_size``-th case starting at ``rank``."""
    return list(cases[rank::world_size])


def is_done(out_dir: Path, case_id: str) -> bool:
    """True when both the mask and the lesion table of ``case_id`` exist."""
    return (out_dir / f"{case_id}.nii.gz").exists() and (out_dir / f"{case_id}_lesions.csv").exists()


def stale_outputs(out_dir: Path, case_ids: Sequence[str], checkpoint_id: str | None) -> list[tuple[str, str | None]]:
    """``(case_id, recorded id)`` of the finished outputs in ``out_dir`` that another (or an unrecorded)
    checkpoint made; empty when ``checkpoint_id`` is None (a model given directly has no id to compare)."""
    from unipet.infer.predictor import prediction_checkpoint

    if checkpoint_id is None:
        return []
    out = []
    for cid in case_ids:
        if is_done(out_dir, cid):
            recorded = prediction_checkpoint(out_dir / f"{cid}.nii.gz")
            if recorded != checkpoint_id:
                out.append((cid, recorded))
    return out


def predict_batch(predictor: Predictor, source: Any, out_dir: str | Path, task: str | None = None,
                  overwrite: bool = False, rank: int | None = None, world_size: int | None = None,
                  progress: Callable[[int, int, str], None] | None = None,
                  on_case: Callable[[int, int, str, str, Any], None] | None = None,
                  series_uid: str | Sequence[str] | None = None) -> BatchReport:
    """Predict every study of ``source`` into ``out_dir`` (mask + lesion table per study).

    Each mask records the id of the checkpoint that made it (``write_prediction``). Finished outputs are
    skipped on a re-run only when the same checkpoint made them; outputs of another (or an unrecorded)
    checkpoint are refused up front — nothing is predicted — unless ``overwrite`` re-predicts them.

    Args:
        predictor: the loaded predictor.
        source: see ``collect_cases``.
        out_dir: output folder.
        task: task name, ``"auto"``, or None (each study's own task, else auto).
        overwrite: re-predict studies whose outputs exist (default: skip them).
        rank, world_size: shard (default: torchrun's ``RANK``/``WORLD_SIZE``, else 0/1).
        progress: ``callback(done, total, case_id)`` after each study.
        on_case: ``callback(done, total, case_id, status, detail)`` after each study, as it happens: status
            ``"done"`` (detail: the summary record), ``"skipped"`` (None) or ``"failed"`` (the message).
        series_uid: DICOM input: the PET series to read where a study holds several.

    Returns:
        A ``BatchReport``; also written as ``summary.json`` (``summary.rank<R>.json`` when sharded).

    Raises:
        OutputExistsError: outputs of another checkpoint are in ``out_dir`` and ``overwrite`` is False.
    """
    from unipet.errors import OutputExistsError
    from unipet.fileio import ensure_folder
    from unipet.device import env_world

    if task not in (None, AUTO):
        predictor.task_index(task)  # an unknown task name fails before any study is read
    out = ensure_folder(out_dir)
    env_rank, env_world_size, _ = env_world()
    rank = env_rank if rank is None else rank
    world_size = env_world_size if world_size is None else world_size
    cases = shard(collect_cases(source, out, predictor.task_set, series_uid), rank, world_size)
    model_id = getattr(predictor, "checkpoint_id", None)
    if not overwrite:
        stale = stale_outputs(out, [c.case_id for c in cases], model_id)
        if stale:
            other = sorted({r or "unrecorded" for _, r in stale})
            raise OutputExistsError(
                f"{len(stale)} studies in {out} were predicted by another checkpoint ({', '.join(other[:3])}; this "
                f"one is {model_id}), e.g. {stale[0][0]}; pass --overwrite to re-predict them, or choose another "
                "output folder")
    report = BatchReport()
    for i, case in enumerate(cases):
        status, detail = "skipped", None
        if not overwrite and is_done(out, case.case_id):
            report.skipped.append(case.case_id)
        else:
            try:
                study = case.load()
                pred = predictor.predict_study(study, task=task)
                write_prediction(pred, study, out, overwrite=overwrite, checkpoint_id=model_id)
                report.done.append(case.case_id)
                detail = {"case_id": case.case_id, "task": pred.task,
                          "task_probability": pred.task_probability, "lesions": len(pred.lesions),
                          "volume_ml": round(sum(c.volume_ml for c in pred.lesions), 4),
                          "seconds": round(pred.seconds, 3), "tta_passes": pred.tta_passes,
                          "checkpoint_id": model_id}
                report.records.append(detail)
                status = "done"
            except (UnipetError, OSError, ValueError, RuntimeError) as exc:  # isolate the case, go on
                message = f"{type(exc).__name__}: {exc}"
                report.failed[case.case_id] = message
                log.error("case %s failed: %s", case.case_id, message)
                status, detail = "failed", message
        if on_case:
            on_case(i + 1, len(cases), case.case_id, status, detail)
        if progress:
            progress(i + 1, len(cases), case.case_id)
    name = "summary.json" if world_size == 1 else f"summary.rank{rank}.json"
    atomic_write_json(out / name, report.to_dict(), overwrite=True)
    return report
