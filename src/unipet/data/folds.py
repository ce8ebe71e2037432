"""Patient-level k-fold cross-validation: which held-out fold each case belongs to, kept in a file and reused.

Every study of one patient falls in the same fold, so a fold's model never trains on a patient it is tested
on. Folds are balanced in patients (sizes differ by at most one), reproducible from a seed, and written as JSON
(``{"k": 5, "seed": 0, "folds": {case_id: fold}}``) so that every method of a comparison is scored on the same
held-out cases (unipet's choice of file; nnU-Net keeps its folds in ``splits_final.json`` the same way).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterable, Mapping

from unipet.errors import ConfigError, InputFileError
from unipet.fileio import atomic_write_json


def patient_folds(cases: Iterable[tuple[str, str]], k: int = 5, seed: int = 0) -> dict[str, int]:
    """``{case_id: fold}`` for ``(case_id, patient_id)`` pairs: patients shuffled by ``seed``, dealt round-robin.

    Raises:
        ConfigError: ``k < 2`` or fewer patients than folds.
    """
    pairs = list(cases)
    patients = sorted({p for _, p in pairs})
    if k < 2 or len(patients) < k:
        raise ConfigError(f"{k}-fold cross-validation needs k >= 2 and at least k patients (have {len(patients)})")
    random.Random(seed).shuffle(patients)
    fold_of = {p: i % k for i, p in enumerate(patients)}
    return {case_id: fold_of[p] for case_id, p in pairs}


def write_folds(path: str | Path, folds: Mapping[str, int], k: int, seed: int) -> None:
    """Write the folds file (atomically; an existing file with other folds is refused, never overwritten)."""
    path = Path(path)
    record = {"k": int(k), "seed": int(seed), "folds": {c: int(f) for c, f in sorted(folds.items())}}
    if path.exists():
        if read_folds(path) != record["folds"]:
            raise ConfigError(f"{path} already holds other folds; reuse it (every method must see the same folds) or "
                              "choose another file")
        return
    atomic_write_json(path, record)


def read_folds(path: str | Path) -> dict[str, int]:
    """``{case_id: fold}`` from a folds file written by ``write_folds``."""
    try:
        data = json.loads(Path(path).read_text())
        return {str(c): int(f) for c, f in data["folds"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputFileError(f"{path} is not a unipet folds file ({exc}); write one with write_folds") from None


def fold_split(folds: Mapping[str, int], fold: int) -> tuple[list[str], list[str]]:
    """``(training case ids, held-out case ids)`` of ``fold``."""
    if fold not in set(folds.values()):
        raise ConfigError(f"fold {fold} is not in the folds file (folds {sorted(set(folds.values()))})")
    train = sorted(c for c, f in folds.items() if f != fold)
    test = sorted(c for c, f in folds.items() if f == fold)
    return train, test
