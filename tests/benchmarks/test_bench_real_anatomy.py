"""benchmarks/bench_real_anatomy.py --tiny: anatomy prompts vs plain at label fractions on the real-PET protocol."""
from __future__ import annotations

import json

from _bench import check_fold_runs, is_dice, run_tiny


def test_bench_real_anatomy_tiny(tmp_path):
    data, work = run_tiny("bench_real_anatomy.py", tmp_path)
    folds = json.loads((work / "folds.json").read_text())["folds"]
    rows = data["rows"]
    arms = [f"anatomy-{pre}-{kind}-{f}" for f in (10, 30, 100) for pre in ("pre", "scratch") for kind in ("prompt", "plain")]
    for name in ("SUV >= 2.5", "41 % SUVmax", *arms):
        assert rows[name]["n"] == len(folds), name  # every real case scored once, from its held-out fold
        assert is_dice(rows[name]["dice"]) and rows[name]["dice_lo"] <= rows[name]["dice"] <= rows[name]["dice_hi"]
    for fold in set(folds.values()):
        held = {c for c, f in folds.items() if f == fold}
        folder = work / "anatomy" / f"fold{fold}"
        # the teacher learns rule maps of the training crops only; held-out crops get the teacher's maps
        assert not {p.name for p in (folder / "rules").iterdir()} & held
        assert not set(json.loads((folder / "teacher" / "cache" / "cache.json").read_text())["cases"]) & held
        manifest = json.loads((folder / "manifest.json").read_text())
        organs = {c["case_id"]: folder / c["organs"] for c in manifest["cases"]}  # relative to the manifest
        for cid in held:
            assert organs[cid] == folder / "maps" / cid / "ORGANS.nii.gz" and organs[cid].exists()
        assert not set(json.loads((folder / "fold.json").read_text())["pretrain_cases"]) & held
    for arm in arms:
        check_fold_runs(work, arm, folds)
    pre, scratch = rows["anatomy-pre-prompt-10"]["budget"], rows["anatomy-scratch-prompt-10"]["budget"]
    assert pre["init_from"]["loaded"] > 0 and scratch["init"] is None  # the encoders come from the pre-training
    assert rows["anatomy-pre-prompt-10"]["budget"]["parameters"] > rows["anatomy-pre-plain-10"]["budget"]["parameters"]
    fractions = {a: rows[a]["budget"]["train_cases"] for a in arms}
    assert all(n10 <= n100 for n10, n100 in zip(fractions["anatomy-pre-plain-10"], fractions["anatomy-pre-plain-100"]))
    tests = {t["b"] + " vs " + t["a"]: t for t in data["paired"]}
    assert set(tests) == {f"anatomy-{pre}-prompt-{f} vs anatomy-{pre}-plain-{f}" for f in (10, 30, 100)
                          for pre in ("pre", "scratch")}
    for t in [*tests.values(), *data["scarce_labels"]]:
        assert t["n"] == len(folds) and t["verdict"] in ("holds", "does not hold", "inconclusive")
        assert t["diff_lo"] <= t["diff"] <= t["diff_hi"]
    for t in data["scarce_labels"]:  # gain@10 - gain@100 is the difference of the two prompt gains
        assert abs(t["diff"] - (t["gain_10"]["dice"] - t["gain_100"]["dice"])) < 2e-3
    assert set(data["teacher"]["labels"]) == {"fat", "soft_tissue", "bone"}
