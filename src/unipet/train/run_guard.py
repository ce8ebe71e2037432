"""Guards around a training run: options refused up front, a clean run folder on (re)start, and no hang or
orphaned worker on any error path.

- ``check_options``: ``--checkpoint-every 0``, non-positive iterations / batch / patch, negative workers, builder
  options the model does not take — refused before any data is read.
- ``prepare_run``: removes the ``.checkpoint.tmp*`` folders a killed checkpoint write left, puts back a
  ``.checkpoint.old/`` left alone by a write killed between its renames; on ``--resume``
  drops the ``log.jsonl`` rows after the checkpoint's iteration (they are written again), so the log has no
  duplicate iterations.
- ``guarded``: every exception leaving the training loop first shuts the DataLoader worker processes down
  (they ignore SIGTERM so that a scheduler's SIGTERM reaches only the trainer, which would otherwise leave the
  interpreter waiting for them forever at exit); a full disk becomes ``DiskFullError`` naming the space needed;
  an unexpected exception becomes one ``TrainingFailed`` line with its traceback saved to ``RUN_DIR/error.log``.

``unipet.train.train`` itself calls ``check_options`` (checkpoint interval), ``prepare_run`` and
``shutdown_loader`` (its own DataLoader, on every exit), so API callers get the same; ``unipet train`` adds the
up-front option checks and ``guarded``.

Exit codes of ``unipet train`` (see ``unipet.cli``): 0 finished, 2 refused or failed (one line),
143 stopped by SIGTERM after saving a checkpoint (128 + 15, what schedulers expect), 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import contextlib
import gc
import inspect
import json
import shutil
import traceback
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

from unipet.errors import ConfigError, DiskFullError, UnipetError
from unipet import checkpoint as ckpt


class TrainingFailed(UnipetError):
    """Training stopped on an unexpected error; the message names it and where its traceback was saved."""


def check_options(model: str | None = None, model_kw: dict[str, Any] | None = None, iterations: int | None = None,
                  batch_size: int | None = None, workers: int | None = None, checkpoint_every: int | None = None,
                  patch_size: Sequence[int] | None = None) -> None:
    """Refuse impossible training options before anything runs (``ConfigError`` naming the option and fix)."""
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ConfigError(f"--checkpoint-every must be >= 1 iteration, got {checkpoint_every}; a checkpoint is also "
                          "written at the end, so give a large value for few checkpoints")
    if iterations is not None and iterations < 1:
        raise ConfigError(f"--iterations must be >= 1, got {iterations}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch_size}")
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers must be >= 0 (0 = load data in the training process), got {workers}")
    if patch_size is not None and any(int(p) < 1 for p in patch_size):
        raise ConfigError(f"--patch sizes must be >= 1 voxel, got {tuple(patch_size)}")
    if model is not None and model_kw:
        from unipet.models.registry import info

        params = inspect.signature(info(model).builder).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            fixed = {"in_channels", "tasks", "patch_size"}
            known = sorted(k for k in params if k not in fixed)
            unknown = sorted(k for k in model_kw if k not in params or k in fixed)
            if unknown:
                raise ConfigError(f"model {model!r} takes no option {', '.join(unknown)} (--model-kw); its options "
                                  f"are: {', '.join(known) or 'none'}")


def prepare_run(run_dir: str | Path, resume: bool) -> dict[str, Any]:
    """Tidy a run folder before training starts (see the module docstring).

    Returns:
        ``{"removed": [stale temporary folders], "dropped_rows": log rows after the resumed iteration}``.
    """
    run_dir = Path(run_dir)
    removed = [str(p) for p in ckpt.clean_stale_temporaries(run_dir)]
    ckpt.recover_interrupted_swap(run_dir)
    dropped = 0
    if resume:
        try:
            iteration = int(ckpt.read_meta(run_dir).iteration or 0)
        except UnipetError:
            iteration = None  # the trainer reports the missing/damaged checkpoint itself
        if iteration is not None:
            dropped = truncate_log(run_dir / "log.jsonl", iteration)
    return {"removed": removed, "dropped_rows": dropped}


def truncate_log(path: str | Path, iteration: int) -> int:
    """Drop the rows of a ``log.jsonl`` whose ``iteration`` exceeds ``iteration`` (and unparseable trailing
    rows a crash cut off); rewritten atomically. Returns how many rows were dropped."""
    from unipet.fileio import atomic_write_text

    path = Path(path)
    if not path.exists():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(row, dict) and int(row.get("iteration", 0)) > iteration:
            dropped += 1
        else:
            keep.append(line)
    if dropped:
        atomic_write_text(path, "".join(f"{line}\n" for line in keep), overwrite=True)
    return dropped


def shutdown_workers(timeout_s: float = 5.0) -> int:
    """Shut down every live DataLoader worker pool of this process; returns how many worker processes were
    running. Pools are asked to stop first; workers still alive after ``timeout_s`` are killed."""
    import multiprocessing

    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

    before = len(multiprocessing.active_children())
    with warnings.catch_warnings():  # isinstance() on some lazy torch objects warns about deprecations
        warnings.simplefilter("ignore")
        iterators = [obj for obj in gc.get_objects() if isinstance(obj, _MultiProcessingDataLoaderIter)]
    for it in iterators:
        shutdown_loader(it, timeout_s)
    for proc in multiprocessing.active_children():
        proc.join(timeout_s)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout_s)
    return before


def shutdown_loader(iterator: Any, timeout_s: float = 5.0) -> None:
    """Stop the worker processes of one DataLoader iterator (nothing to do for single-process loading).

    The iterator is asked to stop (``_shutdown_workers``); a worker still alive after that is killed — the
    workers ignore SIGTERM, so torch's own ``terminate()`` fallback cannot end them.
    """
    stop = getattr(iterator, "_shutdown_workers", None)
    if stop is None:
        return
    try:
        stop()
    except Exception:  # a half-built iterator: its workers are killed below
        pass
    for worker in list(getattr(iterator, "_workers", None) or []):
        if worker.is_alive():
            worker.kill()
            worker.join(timeout_s)


@contextlib.contextmanager
def guarded(run_dir: str | Path) -> Iterator[None]:
    """Run a training in this context: on any exception the workers are shut down and the error becomes one
    clear ``UnipetError`` (see the module docstring)."""
    run_dir = Path(run_dir)
    try:
        yield
    except UnipetError:
        shutdown_workers()
        raise
    except (KeyboardInterrupt, SystemExit):
        shutdown_workers()
        raise
    except Exception as exc:
        shutdown_workers()
        if ckpt.is_disk_full(exc):
            where = run_dir if run_dir.exists() else run_dir.parent
            need = _checkpoint_bytes(run_dir)
            free = shutil.disk_usage(where).free if where.exists() else 0
            raise DiskFullError(f"disk full while training into {run_dir} ({getattr(exc, 'filename', None) or 'a file'}): a checkpoint "
                                f"needs about {need / 1e6:.0f} MB, {free / 1e6:.0f} MB are free; free space and "
                                "resume with --resume") from None
        raise TrainingFailed(_failure(run_dir, exc)) from None


def _checkpoint_bytes(run_dir: Path) -> int:
    """Size of the run's current checkpoint (x2: one is written beside the other), or 0."""
    try:
        folder = ckpt.find_checkpoint(run_dir)
    except UnipetError:
        return 0
    return 2 * sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def _failure(run_dir: Path, exc: BaseException) -> str:
    """One line for an unexpected exception; its traceback goes to ``RUN_DIR/error.log`` when writable."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    where = ""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "error.log", "a") as fh:
            fh.write(text + "\n")
        where = f"; the traceback is in {run_dir / 'error.log'}"
    except OSError:
        pass
    first = str(exc).strip().splitlines()
    try:
        ckpt.find_checkpoint(run_dir)
        then = "fix the cause and continue with --resume (the last checkpoint is intact)"
    except UnipetError:
        then = "fix the cause and start the run again (no checkpoint was written yet)"
    return f"training failed: {type(exc).__name__}: {first[0] if first else ''}{where}; {then}"


def stopped_exit_code() -> int:
    """Exit status of a run stopped by SIGTERM: 128 + 15."""
    import signal

    return 128 + int(signal.SIGTERM)


__all__ = ["TrainingFailed", "check_options", "prepare_run", "truncate_log", "shutdown_workers", "shutdown_loader",
           "guarded", "stopped_exit_code"]
