"""benchmarks/bench_real_resolution.py --tiny: the 5 mm grid vs the planned grid, 250 vs 900 steps (real_cv)."""
from __future__ import annotations

import json

from _bench import check_fold_runs, is_dice, run_tiny

ARMS = ("stunet-s-scratch", "stunet-s-5mm-6", "stunet-s-planned-4", "stunet-s-planned-6")


def test_bench_real_resolution_tiny(tmp_path):
    data, work = run_tiny("bench_real_resolution.py", tmp_path)
    folds = json.loads((work / "folds.json").read_text())["folds"]
    rows = data["rows"]
    for name in ("SUV >= 2.5", *ARMS):
        assert rows[name]["n"] == len(folds) and is_dice(rows[name]["dice"]), name
    for arm, steps in zip(ARMS, (4, 6, 4, 6)):
        assert rows[arm]["budget"]["iterations"] == steps and rows[arm]["budget"]["init"] is None
        check_fold_runs(work, arm, folds)
        for fold in set(folds.values()):
            run = work / "runs" / arm / f"fold{fold}"
            spacing = json.loads((run / "checkpoint" / "meta.json").read_text())["preprocess"]["target_spacing"]
            expected = data["planned_spacing_mm"] if "planned" in arm else data["default_spacing_mm"]
            assert spacing == expected  # each arm trains and predicts on its grid
    planned = json.loads((work / "planned-grid-tiny" / "cache" / "cache.json").read_text())
    assert planned["preprocess"]["target_spacing"] == data["planned_spacing_mm"]
    assert planned["preprocess"]["normalisation"] == json.loads((work / "cache" / "cache.json").read_text())[
        "preprocess"]["normalisation"]  # only the grid differs
    assert sorted(planned["cases"]) == sorted(folds)
    assert {(t["a"], t["b"]) for t in data["paired"]} == {(ARMS[0], ARMS[2]), (ARMS[1], ARMS[3]), (ARMS[0], ARMS[1]),
                                                          (ARMS[2], ARMS[3])}
    for t in data["paired"]:
        assert t["n"] == len(folds) and t["verdict"] in ("holds", "does not hold", "inconclusive")
