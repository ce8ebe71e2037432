"""Patient-level folds: every study of a patient in one fold, balanced, reproducible, kept in a file."""
from __future__ import annotations

import pytest

from unipet.data.folds import fold_split, patient_folds, read_folds, write_folds
from unipet.errors import ConfigError, InputFileError

CASES = [(f"P{p}_{v}", f"P{p}") for p in range(11) for v in range(1 + p % 3)]


def test_patients_stay_together_and_folds_are_balanced():
    folds = patient_folds(CASES, k=5, seed=3)
    by_patient: dict[str, set[int]] = {}
    for case, patient in CASES:
        by_patient.setdefault(patient, set()).add(folds[case])
    assert all(len(f) == 1 for f in by_patient.values())
    sizes = [sum(1 for f in by_patient.values() if fold in f) for fold in range(5)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 11
    assert patient_folds(CASES, k=5, seed=3) == folds
    assert patient_folds(CASES, k=5, seed=4) != folds


def test_fold_split_holds_out_one_fold():
    folds = patient_folds(CASES, k=5)
    train, test = fold_split(folds, 2)
    assert set(train) | set(test) == set(folds) and not set(train) & set(test)
    assert {folds[c] for c in test} == {2}
    with pytest.raises(ConfigError, match="fold 7"):
        fold_split(folds, 7)


def test_folds_file_is_reused_never_replaced(tmp_path):
    path = tmp_path / "folds.json"
    folds = patient_folds(CASES, k=5)
    write_folds(path, folds, 5, 0)
    assert read_folds(path) == folds
    write_folds(path, folds, 5, 0)  # the same folds again: fine
    with pytest.raises(ConfigError, match="other folds"):
        write_folds(path, patient_folds(CASES, k=5, seed=9), 5, 9)
    assert read_folds(path) == folds
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(InputFileError, match="not a unipet folds file"):
        read_folds(tmp_path / "bad.json")


def test_too_few_patients_is_refused():
    with pytest.raises(ConfigError, match="at least k patients"):
        patient_folds(CASES[:3], k=5)
