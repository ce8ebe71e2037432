"""benchmarks/train_real.py --tiny: a new task grown onto a pre-trained DpDNet, trained on one fold, scored."""
from __future__ import annotations

import json

from _bench import is_dice, run_tiny


def test_train_real_tiny(tmp_path):
    data, work = run_tiny("train_real.py", tmp_path)
    assert data["init"]["tasks_added"] == ["soft_tissue_sarcoma"]
    assert data["init"]["donors"] == {"soft_tissue_sarcoma": "lymphoma"}
    assert data["init"]["from_donor"] > 0 and data["init"]["initialised"] == 0
    folds = json.loads((work / "folds.json").read_text())["folds"]
    held = set(data["held_out"])
    assert held and held == {c for c, f in folds.items() if f == 0}
    recipe = json.loads((work / "fold0.recipe.json").read_text())
    assert not held & set(recipe["cases"])  # no held-out patient in training
    for task in ("soft_tissue_sarcoma", "auto"):
        assert set(data["scores"][task]["prediction"]["cases"]) == held
        assert is_dice(data["scores"][task]["prediction"]["mean"])
    assert is_dice(data["scores"]["soft_tissue_sarcoma"]["suv2.5"]["mean"])
