"""benchmarks/bench_real_mastpro.py --tiny: claim 2's table (full fine-tuning vs PEFT of a phantom-pretrained
MAST-Pro at k = 1 and all training cases of a fold) on the tiny cohorts of the real-PET protocol (real_cv)."""
from __future__ import annotations

import json

from _bench import is_dice, run_tiny


def test_bench_real_mastpro_tiny(tmp_path):
    data, work = run_tiny("bench_real_mastpro.py", tmp_path)
    folds = json.loads((work / "folds.json").read_text())["folds"]
    rows = data["rows"]
    arms = ["mastpro-full-k1", "mastpro-peft-k1", "mastpro-full-all", "mastpro-peft-all"]
    for name in ["SUV >= 2.5", "41 % SUVmax", "stunet-s-scratch", *arms]:
        assert rows[name]["n"] == len(folds), name  # every real case, scored once from its held-out fold
        assert is_dice(rows[name]["dice"]) and rows[name]["dice_lo"] <= rows[name]["dice"] <= rows[name]["dice_hi"]
    pre = work / "runs" / "mastpro-pretrain"
    pre_cases = set(json.loads((pre / "recipe.json").read_text())["cases"])
    assert pre_cases and not pre_cases & set(folds)  # the pre-training sees phantoms only
    for arm in arms:
        for fold in set(folds.values()):
            run = work / "runs" / arm / f"fold{fold}"
            held = {c for c, f in folds.items() if f == fold}
            trained = set(json.loads((run / "recipe.json").read_text())["cases"])
            assert trained and not trained & held and trained <= set(folds)  # real training cases of the fold only
            assert len(trained) == (1 if arm.endswith("k1") else len(folds) - len(held))
            assert set(json.loads((run / "scores.json").read_text())["soft_tissue_sarcoma"]) == held
            budget = json.loads((run / "budget.json").read_text())
            assert budget["init_from"]["loaded"] > 0 and budget["init_from"]["mismatched"] == 0
        # the same draw of k cases for both arms of a fold
    for fold in set(folds.values()):
        draws = [json.loads((work / "runs" / a / f"fold{fold}" / "recipe.json").read_text())["cases"]
                 for a in ("mastpro-full-k1", "mastpro-peft-k1")]
        assert draws[0] == draws[1]
    full, peft = rows["mastpro-full-all"]["budget"], rows["mastpro-peft-all"]["budget"]
    assert full["trainable"] == "all" and peft["trainable"] == "peft"
    assert 0 < peft["trained_parameters"] < full["trained_parameters"] == full["parameters"] == peft["parameters"]
    assert data["trained_parameter_reduction_pct"] == round(
        100 * (1 - peft["trained_parameters"] / full["trained_parameters"]), 2)
    for arm in arms:
        mem = rows[arm]["budget"]["memory"]
        assert mem["peak_gib"] >= mem["rss_before_train_gib"] > 0
        assert mem["trained_parameters"] == rows[arm]["budget"]["trained_parameters"]
    tests = {(t["a"], t["b"]): t for t in data["paired"]}
    assert set(tests) == {("mastpro-full-k1", "mastpro-peft-k1"), ("mastpro-full-all", "mastpro-peft-all"),
                          ("stunet-s-scratch", "mastpro-full-all")}
    for (a, b), t in tests.items():
        assert t["n"] == len(folds) and t["verdict"] in ("holds", "does not hold", "inconclusive")
        assert t["diff_lo"] <= t["diff"] <= t["diff_hi"]
        assert t["margin"] == (0.05 if "peft" in b else 0.0)
