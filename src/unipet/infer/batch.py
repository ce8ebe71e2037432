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

from unipet.errors import UnipetError
from unipet.fileio import atomic_write_json
from unipet.infer.predictor import ANY, AUTO, Predictor, write_prediction
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
    """What a batch run did: ``done``/``skipped`` case ids, ``failed`` ``{case_id: message}``, per-case records
    (those of skipped studies carried over from the summary of the run that predicted them)."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed,
                "finished": self.done + self.skipped, "cases": self.records}


def collect_cases(source: Any, out_dir: str | Path, task_set: TaskSet | None = None,
                  series_uid: str | Sequence[str] | None = None, pet: str | Path | None = None,
                  ct: str | Path | None = None) -> list[CaseSource]:
    """Turn any supported input into a list of ``CaseSource``: Study objects, or what
    ``unipet.io.inputs.resolve_input`` recognises (a ``pet``/``ct`` pair of files, one study / patient / autoPET
    folder, nnU-Net raw, a manifest, DICOM); ``series_uid`` picks the PET series of DICOM studies that hold
    several (``unipet.io.dicom``)."""
    from unipet.io.inputs import resolve_input
    from unipet.io.layouts import import_autopet, import_dicom, import_nnunet
    from unipet.io.manifest import Manifest, load_study

    if isinstance(source, Study):
        return [CaseSource(source.study_id, lambda s=source: s)]
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, Study) for s in source):
        return [CaseSource(s.study_id, lambda s=s: s) for s in source]
    spec = resolve_input(source, pet=pet, ct=ct)
    if spec.kind == "pair":
        manifest = Manifest([pair_case(spec.pet, spec.ct)], task_set=task_set, source="pair")
    elif spec.kind == "manifest":
        manifest = Manifest.load(spec.path)
    elif spec.kind == "nnunet":
        manifest = import_nnunet(spec.path, task_set=task_set)
    elif spec.kind in ("study", "patient", "autopet"):
        manifest = import_autopet(spec.path, task_set=task_set)
    else:
        manifest = import_dicom(spec.path, Path(out_dir) / "_converted", task_set=task_set, overwrite=False,
                                series_uid=series_uid)
    ts = manifest.task_set
    return [CaseSource(c.case_id, lambda c=c: load_study(c, ts, with_label=False)) for c in manifest]


def pair_case(pet: Path, ct: Path | None):
    """The ``Case`` of a PET/CT pair of files; its id is the PET file's name without ``.nii.gz`` (its folder's
    name for autoPET's generic ``SUV.nii.gz``), made file-name safe."""
    import re

    from unipet.io.inputs import PET_NAMES
    from unipet.io.manifest import Case
    from unipet.io.nifti import case_name

    pet = Path(pet)
    stem = pet.parent.resolve().name if pet.name in PET_NAMES else (case_name(pet) or pet.stem)
    cid = re.sub(r"[^A-Za-z0-9_.+-]+", "_", stem).strip("._") or "study"
    images = {"PET": str(pet.resolve())}
    if ct is not None:
        images["CT"] = str(Path(ct).resolve())
    return Case(case_id=cid, patient_id=cid, images=images)


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
                  series_uid: str | Sequence[str] | None = None, pet: str | Path | None = None,
                  ct: str | Path | None = None) -> BatchReport:
    """Predict every study of ``source`` into ``out_dir`` (mask + lesion table per study).

    Each mask records the id of the checkpoint that made it (``write_prediction``). Finished outputs are
    skipped on a re-run only when the same checkpoint made them; outputs of another (or an unrecorded)
    checkpoint are refused up front — nothing is predicted — unless ``overwrite`` re-predicts them.

    Resume: a study counts as finished when both its mask and its lesion table exist. A study with only one of
    them (or the temporary files of an atomic write) was interrupted — SIGKILL, a full disk — and its partial
    outputs are replaced by the re-run without ``overwrite`` (``--overwrite`` is only for re-predicting finished
    studies). Two runs into one folder: each run holds ``OUT_DIR/.unipet-predict[.rank<R>].lock`` (an OS file
    lock, released when the process dies) and a second run is refused with one line rather than writing over the
    first. ``summary.json`` describes the folder, not only this run: studies skipped as finished keep the record
    an earlier run wrote for them.

    Args:
        predictor: the loaded predictor.
        source: see ``collect_cases`` (None with ``pet``/``ct``).
        out_dir: output folder; created only once the input has been read (a run that never starts leaves none).
        task: task name, ``"auto"``, ``"any"`` (every prompt, voxel-wise maximum), or None (each study's own
            task, else auto).
        overwrite: re-predict studies whose outputs exist (default: skip them).
        rank, world_size: shard (default: torchrun's ``RANK``/``WORLD_SIZE``, else 0/1).
        progress: ``callback(done, total, case_id)`` after each study.
        on_case: ``callback(done, total, case_id, status, detail)`` after each study, as it happens: status
            ``"done"`` (detail: the summary record), ``"skipped"`` (None) or ``"failed"`` (the message).
        series_uid: DICOM input: the PET series to read where a study holds several.
        pet, ct: one study as a pair of NIfTI files instead of ``source``.

    Returns:
        A ``BatchReport``; also written as ``summary.json`` (``summary.rank<R>.json`` when sharded).

    Raises:
        OutputExistsError: outputs of another checkpoint are in ``out_dir`` and ``overwrite`` is False.
        OutputError: another run holds the folder's lock.
    """
    from unipet.fileio import check_output_folder, ensure_folder
    from unipet.device import env_world

    if task not in (None, AUTO, ANY):
        predictor.task_index(task)  # an unknown task name fails before any study is read
    env_rank, env_world_size, _ = env_world()
    rank = env_rank if rank is None else rank
    world_size = env_world_size if world_size is None else world_size
    check_output_folder(out_dir)
    existed = Path(out_dir).exists()
    try:
        cases = shard(collect_cases(source, out_dir, predictor.task_set, series_uid, pet=pet, ct=ct), rank,
                      world_size)
        out = ensure_folder(out_dir)
    except BaseException:
        _remove_if_created(Path(out_dir), existed)
        raise
    with folder_lock(out, rank if world_size > 1 else None):
        return _predict_cases(predictor, cases, out, task, overwrite, rank, world_size, progress, on_case)


def _remove_if_created(folder: Path, existed: bool) -> None:
    """Remove ``folder`` when this run created it (a run that never started leaves no output folder)."""
    import shutil

    if not existed and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


class folder_lock:
    """An exclusive, non-blocking OS lock on ``folder/.unipet-predict[.rank<R>].lock`` (``fcntl.flock``; the OS
    releases it when the process ends, so a killed run leaves no stale lock behind)."""

    def __init__(self, folder: Path, rank: int | None = None) -> None:
        self.path = folder / (".unipet-predict.lock" if rank is None else f".unipet-predict.rank{rank}.lock")
        self.fh = None

    def __enter__(self) -> "folder_lock":
        import fcntl
        import os

        from unipet.errors import OutputError

        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "another process"
            self.fh.close()
            raise OutputError(f"another `unipet predict` ({holder}) is writing into {self.path.parent}; wait for it "
                              "to finish, or choose another output folder") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()}")
        self.fh.flush()
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def _partial_outputs(out: Path, case_id: str) -> list[Path]:
    """An unfinished study's leftovers: a lone mask or table, and temporary files of interrupted atomic writes."""
    names = [out / f"{case_id}.nii.gz", out / f"{case_id}_lesions.csv"]
    temps = [*out.glob(f".{case_id}.nii.gz.*.tmp*"), *out.glob(f".{case_id}_lesions.csv.*.tmp*")]
    return [p for p in names if p.exists()] + temps


def _previous_records(out: Path, name: str) -> dict[str, dict[str, Any]]:
    """Per-case records of an earlier run's summary in ``out`` (empty when there is none or it is unreadable)."""
    import json

    try:
        data = json.loads((out / name).read_text())
        return {r["case_id"]: r for r in data.get("cases", []) if isinstance(r, dict) and "case_id" in r}
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return {}


def _predict_cases(predictor, cases, out, task, overwrite, rank, world_size, progress, on_case) -> BatchReport:
    """``predict_batch``'s loop over ``cases`` in the locked, existing ``out``."""
    from unipet.errors import OutputExistsError

    model_id = getattr(predictor, "checkpoint_id", None)
    if not overwrite:
        stale = stale_outputs(out, [c.case_id for c in cases], model_id)
        if stale:
            other = sorted({r or "unrecorded" for _, r in stale})
            raise OutputExistsError(
                f"{len(stale)} studies in {out} were predicted by another checkpoint ({', '.join(other[:3])}; this "
                f"one is {model_id}), e.g. {stale[0][0]}; pass --overwrite to re-predict them, or choose another "
                "output folder")
    name = "summary.json" if world_size == 1 else f"summary.rank{rank}.json"
    earlier = _previous_records(out, name)
    report = BatchReport()
    for i, case in enumerate(cases):
        status, detail = "skipped", None
        if not overwrite and is_done(out, case.case_id):
            report.skipped.append(case.case_id)
            if case.case_id in earlier:
                report.records.append(earlier[case.case_id])
        else:
            try:
                partial = _partial_outputs(out, case.case_id)
                if partial and not overwrite:
                    log.warning("case %s: replacing the partial outputs of an interrupted run (%s)", case.case_id,
                                ", ".join(p.name for p in partial))
                for p in partial:
                    if p.name.startswith("."):
                        p.unlink(missing_ok=True)
                study = case.load()
                pred = predictor.predict_study(study, task=task)
                # not finished (or --overwrite): whatever is there is replaced
                write_prediction(pred, study, out, overwrite=True, checkpoint_id=model_id)
                report.done.append(case.case_id)
                detail = {"case_id": case.case_id, "task": pred.task,
                          "task_source": getattr(pred, "task_source", None),
                          "task_probability": pred.task_probability,
                          "task_probabilities": getattr(pred, "task_probabilities", None),
                          "lesions": len(pred.lesions),
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
    atomic_write_json(out / name, report.to_dict(), overwrite=True)
    return report
