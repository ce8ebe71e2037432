"""The one training loop: any module whose forward returns a loss dict, trained by a recipe.

``run(job)`` repeats, from ``job.start`` to the recipe's last iteration: next batch from the loader, ``job.prepare``
(batch to device, augmentation, the forward's keyword arguments), one optimizer step (``optimise``: forward under
autocast, ``out["loss"]`` in float32, non-finite check, scaled backward, gradient clipping, step), logging
(``log.jsonl``, ``metrics.csv``, TensorBoard), callbacks, validation when the job has one, and a checkpoint every
``checkpoint_every`` iterations, at the end and when SIGTERM arrives (``job.save``). Segmentation training
(``unipet.train.trainer.train``) and cross-modal pre-training (``unipet.pretrain.loop.pretrain``) are two jobs of
this loop; what differs between them (the module, its inputs, its metadata) is in the job.

Everything random is reproducible from the recipe's seed: patches are counter-based (``unipet.data.sampling``)
and each step's augmentation generator is seeded from ``(seed, rank, iteration)`` (``step_seed``), so a resumed
run continues bit-for-bit where its checkpoint was written (on the same hardware and settings).
"""
from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from unipet.errors import ConfigError
from unipet.train import run_guard
from unipet.train.distributed import DistInfo, any_flag, barrier
from unipet.train.monitor import MetricsCSV, log_scalars, progress_bar
from unipet.train.recipes import Recipe

Callback = Callable[[int, dict[str, Any]], None]
DIVERGED = ("training diverged (the loss became {loss}); train again with a lower lr (a recipe file with 'base' and "
            "'lr') or with amp 'bf16' / 'none'")


@dataclass
class TrainResult:
    """Outcome of a run: where it is, the last iteration done, and this invocation's losses and per-step logs."""

    run_dir: Path
    iteration: int
    stopped: bool
    losses: list[float] = field(default_factory=list)
    validation: dict[str, float] = field(default_factory=dict)
    model: torch.nn.Module | None = None
    data_wait_share: float = 0.0
    iterations_per_s: float = 0.0
    logs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Job:
    """What the loop trains and how.

    Attributes:
        net: the module the step calls, ``net(**prepare(batch, it)) -> {"loss": scalar tensor, other scalars}``
            (possibly DDP-wrapped or compiled).
        model: the plain module whose parameters are clipped and whose weights ``save`` writes.
        optimizer, scaler, recipe, amp_dtype: the optimisation (``recipe.lr_at`` sets the learning rate).
        loader: iterator of batches (``unipet.data.sampling.make_loader`` started at ``start``).
        prepare: ``(batch, iteration) -> forward keyword arguments`` (to the device, augmented).
        save: ``(iteration, complete)``: write the checkpoint (rank 0 only; the loop waits for every rank after it).
        start: the iteration to continue from; run_dir: where logs go; info: this process in the DDP world.
        validate: ``(iteration, writer) -> dict of scores or {}``, called on rank 0 after every step.
        resumed: the run continues a checkpoint (its ``log.jsonl`` rows after ``start`` are dropped).
        diverged: the message of a non-finite loss (``{loss}`` is replaced).
    """

    net: torch.nn.Module
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any
    recipe: Recipe
    amp_dtype: torch.dtype | None
    loader: Any
    prepare: Callable[[dict[str, Any], int], dict[str, Any]]
    save: Callable[[int, bool], None]
    start: int
    run_dir: Path
    info: DistInfo
    validate: Callable[[int, Any], dict[str, float]] | None = None
    resumed: bool = False
    diverged: str = DIVERGED


def step_seed(seed: int, rank: int, iteration: int) -> int:
    """Seed of the augmentation generator at ``iteration`` (63-bit, from numpy's SeedSequence)."""
    return int(np.random.SeedSequence([seed, rank, iteration, 7]).generate_state(1, np.uint64)[0] >> 1)


def optimise(job: Job, lr: float, inputs: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """One optimizer step at learning rate ``lr``: forward under autocast, the loss in float32, (scaled) backward,
    gradient clipping, step. Returns ``(loss, the forward's other scalar outputs as floats)``."""
    for group in job.optimizer.param_groups:
        group["lr"] = lr
    job.optimizer.zero_grad(set_to_none=True)
    device = next(job.model.parameters()).device
    with torch.autocast(device.type, dtype=job.amp_dtype or torch.float32, enabled=job.amp_dtype is not None):
        out = job.net(**inputs)
    loss = out["loss"].float()
    if not torch.isfinite(loss):
        raise ConfigError(job.diverged.format(loss=float(loss)))
    if loss.requires_grad:  # False for a batch that reaches no trained parameter (e.g. no sample of the one
        # head a 'new-head' scope trains): nothing to step, the iteration still counts
        job.scaler.scale(loss).backward()
        if job.recipe.grad_clip > 0:
            job.scaler.unscale_(job.optimizer)
            torch.nn.utils.clip_grad_norm_(job.model.parameters(), job.recipe.grad_clip)
        job.scaler.step(job.optimizer)
        job.scaler.update()
    parts = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in out.items()
             if k != "loss" and (isinstance(v, (int, float)) or (torch.is_tensor(v) and v.ndim == 0))}
    return float(loss.detach()), parts


def run(job: Job, *, progress: bool = True, tensorboard: bool = True, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train ``job`` to its recipe's last iteration (or a SIGTERM); see the module docstring."""
    recipe, info, run_dir, start = job.recipe, job.info, job.run_dir, job.start
    result = TrainResult(run_dir=run_dir, iteration=start, stopped=False, model=job.model)
    if start >= recipe.iterations:
        return result
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        run_guard.prepare_run(run_dir, job.resumed)  # stale checkpoint temporaries; log.jsonl rows after `start`
    writer = _tensorboard(run_dir, tensorboard and info.is_main)
    metrics = MetricsCSV(run_dir, start) if info.is_main else None
    bar = progress_bar(progress and info.is_main, recipe.iterations, start)
    wait_total, t_begin = 0.0, time.perf_counter()
    it = start
    try:
        with _StopFlag() as stop:
            while it < recipe.iterations:
                t0 = time.perf_counter()
                batch = next(job.loader)
                wait = time.perf_counter() - t0
                wait_total += wait
                inputs = job.prepare(batch, it)
                lr = recipe.lr_at(it)
                value, parts = optimise(job, lr, inputs)
                it += 1
                result.losses.append(value)
                logs = {"loss": value, "lr": lr, **parts, "data_s": wait, "step_s": time.perf_counter() - t0}
                if job.validate is not None and info.is_main:
                    scores = job.validate(it, writer)
                    if scores:
                        logs.update(scores)
                        result.validation = dict(scores)
                result.logs.append(logs)
                if bar is not None:
                    bar[0].update(bar[1], completed=it, loss=value,
                                  rate=(it - start) / max(time.perf_counter() - t_begin, 1e-9))
                for cb in callbacks:
                    cb(it, logs)
                stopping = any_flag(stop.set, info)
                saving = it % recipe.checkpoint_every == 0 or it == recipe.iterations or stopping
                if info.is_main:
                    _log(run_dir, writer, it, logs, wait_total, time.perf_counter() - t_begin, it - start, saving,
                         metrics)
                if saving:
                    if info.is_main:
                        job.save(it, it == recipe.iterations)
                    barrier(info)
                if stopping:
                    result.stopped = True
                    break
    finally:
        run_guard.shutdown_loader(job.loader)  # no orphaned (SIGTERM-ignoring) workers on any exit
        if bar is not None:
            bar[0].stop()
        if writer is not None:
            writer.close()
    elapsed = time.perf_counter() - t_begin
    result.iteration = it
    result.data_wait_share = wait_total / elapsed if elapsed > 0 else 0.0
    result.iterations_per_s = (it - start) / elapsed if elapsed > 0 else 0.0
    return result


class _StopFlag:
    """SIGTERM handler that only sets a flag (installed in the main thread; restored on exit)."""

    def __init__(self) -> None:
        self.set = False
        self._previous = None

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal API
        self.set = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _tensorboard(run_dir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _log(run_dir: Path, writer, it: int, logs: dict[str, Any], wait: float, elapsed: float, steps: int,
         force: bool, metrics: MetricsCSV | None = None) -> None:
    """TensorBoard scalars and a ``metrics.csv`` row every step (with ``it_per_s``); a ``log.jsonl`` line every 10
    steps, after validation and when ``force``."""
    rate = {"it_per_s": steps / elapsed} if elapsed > 0 else {}
    log_scalars(writer, it, {**logs, **rate})
    if metrics is not None:
        metrics.write({"iteration": it, **logs, **rate})
    if force or it % 10 == 0 or any(k.startswith("dice/") for k in logs):
        record = {"iteration": it, **{k: round(v, 6) for k, v in logs.items()},
                  "it_per_s": round(steps / elapsed, 4) if elapsed > 0 else None,
                  "data_wait_share": round(wait / elapsed, 4) if elapsed > 0 else None}
        with open(run_dir / "log.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
