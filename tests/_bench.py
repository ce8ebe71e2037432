"""Running a benchmark script's ``--tiny`` mode from a test (tests/benchmarks)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_tiny(script: str, tmp_path: Path, *extra: str) -> tuple[dict, Path]:
    """Run ``benchmarks/<script> --tiny [extra...]`` on one thread in a subprocess; return its JSON and its work
    folder (``tmp_path/work``: a second call reuses what the first one trained there).

    Asserts that it exits 0 and that the JSON it prints equals the JSON it writes with ``--out``."""
    work, out = tmp_path / "work", tmp_path / ("out" + "".join(extra) + ".json")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--tiny", "--threads", "1",
                           "--work", str(work), "--out", str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert json.loads(proc.stdout) == data  # printed and written JSON agree
    return data, work


def is_dice(value) -> bool:
    """A Dice value: a finite float in [0, 1]."""
    return isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0


def check_fold_runs(work: Path, arm: str, folds: dict[str, int], prompt: str = "none") -> None:
    """Every fold run of a ``real_cv`` arm trained on no held-out patient and scored exactly its held-out ones
    (under ``prompt``: the scores' key, ``"none"`` for a model without prompts)."""
    for fold in set(folds.values()):
        run = work / "runs" / arm / f"fold{fold}"
        held = {c for c, f in folds.items() if f == fold}
        trained = set(json.loads((run / "recipe.json").read_text())["cases"])
        assert trained and not trained & held, (arm, fold)  # no held-out patient in training
        assert set(json.loads((run / "scores.json").read_text())[prompt]) == held, (arm, fold)
