"""benchmarks/bench_real_dpdnet.py --tiny: the real-PET protocol (real_cv) on tiny cohorts, claim 1's table."""
from __future__ import annotations

import json

from _bench import check_fold_runs, is_dice, run_tiny


def test_bench_real_dpdnet_tiny(tmp_path):
    data, work = run_tiny("bench_real_dpdnet.py", tmp_path)
    folds = json.loads((work / "folds.json").read_text())["folds"]
    rows = data["rows"]
    for name in ("SUV >= 2.5", "41 % SUVmax", "dpdnet-ft", "dpdnet-ft --task auto", "stunet-ft", "uniseg-ft",
                 "dpdnet-newhead", "stunet-s-scratch"):
        assert rows[name]["n"] == len(folds), name  # every real case, each scored once from its held-out fold
        assert is_dice(rows[name]["dice"]) and rows[name]["dice_lo"] <= rows[name]["dice"] <= rows[name]["dice_hi"]
    for arm in ("dpdnet-ft", "stunet-ft", "uniseg-ft", "stunet-s-scratch"):
        prompt = "none" if arm in ("stunet-ft", "stunet-s-scratch") else "soft_tissue_sarcoma"
        check_fold_runs(work, arm, folds, prompt)
    grown = json.loads((work / "runs" / "dpdnet-ft" / "fold0" / "budget.json").read_text())["init_from"]
    assert grown["tasks_added"] == ["soft_tissue_sarcoma"] and grown["initialised"] == 0
    copied = json.loads((work / "runs" / "stunet-ft" / "fold0" / "budget.json").read_text())["init_from"]
    assert copied["loaded"] > 0  # STU-Net takes DpDNet's backbone by name
    assert rows["stunet-s-scratch"]["budget"]["init"] is None
    claims = {t["b"] + " vs " + t["a"]: t for t in data["paired"]}
    assert set(claims) == {"dpdnet-ft vs stunet-ft", "dpdnet-ft vs uniseg-ft", "dpdnet-ft vs stunet-s-scratch",
                           "dpdnet-ft vs dpdnet-newhead"}
    head = rows["dpdnet-newhead"]["budget"]
    assert head["trainable"] == "new-head" and head["trained_parameters"] < rows["dpdnet-ft"]["budget"]["trained_parameters"]
    for t in claims.values():
        assert t["n"] == len(folds) and t["verdict"] in ("holds", "does not hold", "inconclusive")
        assert t["diff_lo"] <= t["diff"] <= t["diff_hi"]

    # issue 24's few-shot curve in the same work folder: the pre-trained "all" point is the claim's run, reused
    curve, _ = run_tiny("bench_real_dpdnet.py", tmp_path, "--few-shot")
    assert curve["rows"]["dpdnet-ft"]["dice"] == rows["dpdnet-ft"]["dice"]
    assert {"dpdnet-ft-k1", "dpdnet-scratch-k1", "dpdnet-scratch-all"} <= set(curve["rows"])
    for fold in set(folds.values()):
        k1 = json.loads((work / "runs" / "dpdnet-ft-k1" / f"fold{fold}" / "recipe.json").read_text())["cases"]
        scratch = json.loads((work / "runs" / "dpdnet-scratch-k1" / f"fold{fold}" / "recipe.json").read_text())
        assert len(k1) == 1 and scratch["cases"] == k1  # the same case for both
        assert scratch["prior_init"] == 0.01 and "task_donors" not in scratch
    assert curve["rows"]["dpdnet-scratch-k1"]["budget"]["init"] is None
    assert [t["verdict"] in ("holds", "does not hold", "inconclusive") for t in curve["paired"]] == [True, True]
