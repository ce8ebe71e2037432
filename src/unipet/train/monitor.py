"""What a training run shows while it runs: a progress bar, ``metrics.csv`` and TensorBoard.

* **Progress bar** (rich): iteration / total, loss, it/s and the time left; shown only on an interactive
  terminal (a log file or a pipe gets none: ``log.jsonl`` and ``metrics.csv`` are the record there), and never
  under ``--quiet`` / ``--no-progress``.
* **metrics.csv** (always, rank 0): one row per optimizer step — ``iteration``, ``loss``, ``lr``, the loss parts,
  ``data_s`` and ``step_s`` (seconds), ``it_per_s`` (mean since the start of this invocation) and, on the steps
  where validation ran, ``dice/<task>``. A column that appears later (the first validation) rewrites the header
  once; a resumed run appends to the same file.
* **TensorBoard** (with the ``[tensorboard]`` extra): every value above as a scalar, and at each validation an
  example image per validated case: the coronal maximum-intensity projection of its PET channel with the
  reference (blue) and predicted (vermillion) masks' projections outlined (``val_mip/<case>``).
"""
from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

METRICS_CSV = "metrics.csv"
REF_RGB, PRED_RGB = (0, 114, 178), (213, 94, 0)


def interactive(stream: Any = None) -> bool:
    """Whether ``stream`` (default stderr) is an interactive terminal (rich's own test, incl. FORCE_COLOR/TERM)."""
    from rich.console import Console

    return Console(file=stream or sys.stderr).is_terminal


def progress_bar(enabled: bool, total: int, start: int, console: Any = None):
    """A started rich ``Progress`` and its task id, or None when disabled or not on a terminal.

    Update it with ``bar.update(task, completed=it, loss=..., rate=...)``; stop it with ``bar.stop()``.
    """
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = console or Console(stderr=True)
    if not console.is_terminal:
        return None
    bar = Progress(TextColumn("training"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:.2f} it/s"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)
    bar.start()
    task = bar.add_task("train", total=total, completed=start, loss=math.nan, rate=0.0)
    return bar, task


class MetricsCSV:
    """Append-only ``metrics.csv`` of a run folder (see the module docstring)."""

    def __init__(self, run_dir: str | Path, start: int = 0) -> None:
        """Open ``run_dir/metrics.csv``; rows after iteration ``start`` (steps of an interrupted invocation that a
        resume from the checkpoint at ``start`` repeats) are dropped, so every iteration appears once."""
        self.path = Path(run_dir) / METRICS_CSV
        self.columns: list[str] = []
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                self.columns = list(reader.fieldnames or [])
                rows = list(reader)
            kept = [r for r in rows if _iteration(r) <= start]
            if len(kept) != len(rows):
                self._rewrite(kept)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row; new keys extend the header (the file is rewritten once with the new columns)."""
        new = [k for k in row if k not in self.columns]
        if new:
            old_rows = []
            if self.columns and self.path.exists():
                with self.path.open(newline="") as fh:
                    old_rows = list(csv.DictReader(fh))
            self.columns = ["iteration", *[c for c in [*self.columns, *new] if c != "iteration"]]
            self._rewrite(old_rows)
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.columns).writerow({k: _cell(v) for k, v in row.items()})


def mip_overlay_rgb(pet_zyx: np.ndarray, pred: np.ndarray | None, ref: np.ndarray | None,
                    window: tuple[float, float] | None = None) -> np.ndarray:
    """Coronal MIP of a PET volume ``(z, y, x)`` as an RGB image ``(z, x, 3)`` uint8: for a RAS grid superior at
    the top and the patient's right on the left (radiological, as the report's MIPs), inverted grey (``window`` default: 0 to the 99.5th percentile), with the outlines of the reference (blue)
    and predicted (vermillion) masks' projections drawn over it (one-pixel edges)."""
    from scipy import ndimage

    mip = np.max(np.asarray(pet_zyx, np.float32), axis=1)[::-1, ::-1]  # (z, x): top slice first, RAS x flipped
    lo, hi = window or (0.0, float(np.percentile(mip, 99.5)) or 1.0)
    grey = 255 - np.clip((mip - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.uint8)
    for mask, colour in ((ref, REF_RGB), (pred, PRED_RGB)):
        if mask is None:
            continue
        proj = np.max(np.asarray(mask) > 0, axis=1)[::-1, ::-1]
        edge = proj & ~ndimage.binary_erosion(proj)
        rgb[edge] = colour
    return rgb


def log_scalars(writer: Any, it: int, logs: Mapping[str, Any]) -> None:
    """Every finite numeric value of ``logs`` as a TensorBoard scalar at step ``it``."""
    if writer is None:
        return
    for key, value in logs.items():
        if isinstance(value, (int, float, np.floating)) and math.isfinite(float(value)):
            writer.add_scalar(key, float(value), it)


def log_examples(writer: Any, it: int, examples: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
                 pet_channel: int | None) -> None:
    """TensorBoard images ``val_mip/<case>`` from ``(case, image [C, z, y, x], pred, ref)`` validation examples."""
    if writer is None or pet_channel is None:
        return
    for case, image, pred, ref in examples:
        writer.add_image(f"val_mip/{case}", mip_overlay_rgb(np.asarray(image)[pet_channel], pred, ref), it,
                         dataformats="HWC")


def _iteration(row: Mapping[str, Any]) -> int:
    try:
        return int(float(row.get("iteration") or 0))
    except ValueError:
        return 0


def _cell(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return value
