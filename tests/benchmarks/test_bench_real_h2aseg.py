"""benchmarks/bench_real_h2aseg.py --tiny: H2ASeg's Table 2 / Table 3 on the real-PET protocol (real_cv), tiny."""
from __future__ import annotations

import json
import math

from _bench import check_fold_runs, is_dice, run_tiny

VARIANTS = ("h2aseg-baseline", "h2aseg-mcsa", "h2aseg-tamw", "h2aseg-full")


def test_bench_real_h2aseg_tiny(tmp_path):
    data, work = run_tiny("bench_real_h2aseg.py", tmp_path)
    folds = json.loads((work / "folds.json").read_text())["folds"]
    rows = data["rows"]
    for name in ("SUV >= 2.5", "41 % SUVmax", *VARIANTS, "stunet-s-scratch"):
        assert rows[name]["n"] == len(folds), name  # every real case scored once, from its held-out fold
        assert is_dice(rows[name]["dice"]) and rows[name]["dice_lo"] <= rows[name]["dice"] <= rows[name]["dice_hi"]
    for arm in (*VARIANTS, "stunet-s-scratch"):
        assert rows[arm]["budget"]["init"] is None  # from scratch, as the paper trains
        check_fold_runs(work, arm, folds)
    built = {a: json.loads((work / "runs" / a / "fold0" / "arm.json").read_text())["arm"]["model_kw"] for a in VARIANTS}
    assert [(built[a]["mcsa"], built[a]["tamw"]) for a in VARIANTS] == [(False, False), (True, False), (False, True),
                                                                        (True, True)]
    assert rows["h2aseg-mcsa"]["budget"]["parameters"] > rows["h2aseg-baseline"]["budget"]["parameters"]
    tests = {t["b"] + " vs " + t["a"]: t for t in data["paired"]}
    assert set(tests) == {"h2aseg-full vs h2aseg-baseline", "h2aseg-mcsa vs h2aseg-baseline",
                          "h2aseg-tamw vs h2aseg-baseline", "h2aseg-full vs stunet-s-scratch"}
    for t in tests.values():
        assert t["n"] == len(folds) and t["verdict"] in ("holds", "does not hold", "inconclusive")
        assert t["diff_lo"] <= t["diff"] <= t["diff_hi"]
    t3 = data["table3_tamw"]
    assert set(t3) == {"h2aseg-tamw", "h2aseg-full"}  # only the variants with TAMW have weights
    for name, tab in t3.items():
        assert tab["cases"] == len(folds) and set(tab["per_case"]) == set(folds)
        assert tab["tumour_share"]["tumour"] > tab["tumour_share"]["background"]  # the patches differ in tumour
        for kind in ("tumour", "background"):
            levels = tab["mean"][kind]
            assert [r["level"] for r in levels] == [1, 2, 3, 4]
            for r in levels:
                for g in ("pet_fore", "ct_fore", "decoder_fore", "pet_back", "ct_back", "decoder_back"):
                    assert math.isfinite(r[g]) and -1.0 < r[g] < 1.0  # tanh weights
        for r in tab["tumour_minus_background"]:
            assert r["pet_fore"][1] <= r["pet_fore"][0] <= r["pet_fore"][2]
        assert tab["reading"].startswith(("target-dependent", "input-independent"))
