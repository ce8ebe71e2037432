"""benchmarks/bench_real_gcis.py --tiny: claim 3's table (gcis adapt vs fine-tuning the whole gCIS vs the same
path from scratch at k = 1 and 5) and the pruned-vs-full masks on the tiny cohorts of the real-PET protocol."""
from __future__ import annotations

import json

from _bench import is_dice, run_tiny


def test_bench_real_gcis_tiny(tmp_path):
    data, work = run_tiny("bench_real_gcis.py", tmp_path)
    folds = json.loads((work / "folds.json").read_text())["folds"]
    rows = data["rows"]
    arms = [f"gcis-{mode}-k{k}" for k in (1, 5) for mode in ("adapt", "ft", "scratch")]
    for name in ["SUV >= 2.5", "41 % SUVmax", "stunet-s-scratch", *arms]:
        assert rows[name]["n"] == len(folds), name  # every real case, scored once from its held-out fold
        assert is_dice(rows[name]["dice"]) and rows[name]["dice_lo"] <= rows[name]["dice"] <= rows[name]["dice_hi"]
    pre_cases = set(json.loads((work / "runs" / "gcis-pretrain" / "recipe.json").read_text())["cases"])
    assert pre_cases and not pre_cases & set(folds)  # the pre-training sees phantoms only
    for fold in set(folds.values()):
        held = {c for c, f in folds.items() if f == fold}
        for k in (1, 5):
            draws = []
            for mode in ("adapt", "ft", "scratch"):
                run = work / "runs" / f"gcis-{mode}-k{k}" / f"fold{fold}"
                trained = json.loads((run / "recipe.json").read_text())["cases"]
                assert trained and not set(trained) & held and set(trained) <= set(folds)
                assert len(trained) == min(k, len(folds) - len(held))
                assert set(json.loads((run / "scores.json").read_text())["soft_tissue_sarcoma"]) == held
                draws.append(trained)
            assert draws[0] == draws[1] == draws[2]  # the same k cases for every arm of the fold
            adapt, scratch, ft = (json.loads((work / "runs" / f"gcis-{m}-k{k}" / f"fold{fold}" / "budget.json")
                                             .read_text()) for m in ("adapt", "scratch", "ft"))
            assert adapt["route"] == scratch["route"] == data["routes"][f"gcis-adapt-k{k}"][f"fold{fold}"]
            assert adapt["init_from"]["loaded"] > 0 and scratch["init_from"] is None
            # adapt trains the pruned path's decoder; scratch every parameter of the same network; ft the full one
            assert 0 < adapt["trained_parameters"] < scratch["trained_parameters"] == scratch["parameters"]
            assert adapt["parameters"] == scratch["parameters"] < ft["parameters"] == ft["trained_parameters"]
    checks = data["pruned_vs_full"]
    assert set(checks["per_fold"]) == {"gcis-ft-k1", "gcis-ft-k5"}
    for arm, per_fold in checks["per_fold"].items():
        assert sorted(r["fold"] for r in per_fold) == sorted(set(folds.values()))
        for r in per_fold:
            assert r["differing_voxels"] == 0 and r["voxels"] > 0 and r["cases"] >= 1  # same masks, voxel for voxel
            assert 0 < r["params_pruned"] < r["params_full"]
    assert checks["differing_voxels"] == 0
    tests = {(t["a"], t["b"]): t for t in data["paired"]}
    assert set(tests) == {(f"gcis-{m}-k{k}", f"gcis-adapt-k{k}") for k in (1, 5) for m in ("scratch", "ft")}
    for (a, b), t in tests.items():
        assert t["n"] == len(folds) and t["verdict"] in ("holds", "does not hold", "inconclusive")
        assert t["diff_lo"] <= t["diff"] <= t["diff_hi"] and t["margin"] == (0.05 if "-ft-" in a else 0.0)
