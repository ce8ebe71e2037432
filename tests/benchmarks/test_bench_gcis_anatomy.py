"""The gCIS and anatomy-guided benchmarks stay runnable: each script's ``--tiny`` mode end to end in a subprocess
(one CPU thread), and the JSON carries every table the issue asks for, with values in their valid ranges.

The tiny numbers mean nothing as accuracy (a few steps on five or six studies); what is checked is what must hold
at any scale: a pruned gCIS model gives the full model's masks voxel for voxel with fewer parameters, few-shot
runs train only on training-split studies and evaluate on the others, Dice values are finite in [0, 1].
"""
from __future__ import annotations

import math

from _bench import is_dice, run_tiny


def test_gcis_tiny_benchmark(tmp_path):
    from unipet.data.cache import Cache

    data, work = run_tiny("bench_gcis.py", tmp_path)
    assert data["preset"] == "tiny" and data["held_out"] not in data["trained_tasks"]
    assert len(data["trained_tasks"]) >= 6
    # router usage: one path per routed module (bottleneck, 5 levels, output) for every task and the held-out prompt
    usage = data["router_usage"]
    paths = data["model_kw"].get("num_paths", 6)
    assert set(usage["routes"]) == set(data["trained_tasks"]) | {f"{data['held_out']} (held out)"}
    for route in usage["routes"].values():
        assert len(route) == len(usage["levels"]) == 7 and all(0 <= k < paths for k in route)  # release layout
    for levels in usage["probabilities"].values():
        assert all(abs(sum(p) - 1.0) < 0.01 for p in levels)
    assert 0.0 <= usage["sharing"]["within_group"] <= 1.0 and 0.0 <= usage["sharing"]["between_groups"] <= 1.0
    # pruned vs full: identical masks, fewer parameters
    assert data["pruned_vs_full"]
    for task, row in data["pruned_vs_full"].items():
        assert row["differing_voxels"] == 0, task
        assert 0 < row["params_pruned_M"] < row["params_full_M"]
        assert is_dice(row["dice_full"]) and row["dice_full"] == row["dice_pruned"]
        assert row["route"] == usage["routes"][task]
        assert row["seconds_full"] > 0 and row["seconds_pruned"] > 0
    # few-shot: both arms per shot count; the adapted one trains the kept decoder only
    cache = Cache(work / "cache")
    assert data["evaluation_studies"] >= 1
    for shots in (1, 2):
        entry = data["few_shot"][f"{shots}-shot"]
        for mode in ("adapted", "scratch"):
            assert is_dice(entry[mode]["dice"]), entry
            assert len(entry[mode]["shot_studies"]) == shots
            assert all(cache.info(c)["split"] == "train" and cache.info(c)["task"] == data["held_out"]
                       for c in entry[mode]["shot_studies"])
        assert entry["adapted"]["shot_studies"] == entry["scratch"]["shot_studies"]
        held_route = usage["routes"][f"{data['held_out']} (held out)"]
        assert entry["adapted"]["route"] == entry["scratch"]["route"] == held_route
        assert entry["scratch"]["frozen_M"] == 0 and entry["adapted"]["frozen_M"] > 0
        assert 0 < entry["adapted"]["trainable_M"] < entry["scratch"]["trainable_M"]


def test_anatomy_tiny_benchmark(tmp_path):
    data, _ = run_tiny("bench_anatomy.py", tmp_path)
    assert data["preset"] == "tiny"
    # teacher-student organ maps scored against the hidden true maps
    for model in ("teacher", "student"):
        table = data["organs"][model]
        assert 0.0 <= table["mean_dice"] <= 1.0 and table["per_organ"]
        assert all(0.0 <= v <= 1.0 for v in table["per_organ"].values())
    # pre-training: the loss is recorded and the held-out reconstruction metrics are finite
    pre = data["pretrain"]
    assert all(math.isfinite(pre[k]) for k in ("first_loss", "last_loss", "first_align", "last_align"))
    for stage in ("before", "after"):
        assert all(math.isfinite(v) for v in pre[stage].values()) and pre[stage]["mse_ct"] >= 0
    # fine-tuning grid: every fraction x pre-training x prompt, Dice in [0, 1] on the held-out studies
    rows = data["finetune"]
    grid = {(r["fraction"], r["pretrained"], r["anatomy_prompt"]) for r in rows}
    assert grid == {(f, p, a) for f in (0.5, 1.0) for p in (False, True) for a in (False, True)}
    for row in rows:
        assert row["n"] >= 1 and is_dice(row["dice"]), row
        assert 1 <= row["train_studies"] <= data["train_studies"]
        for key in ("dice_breast", "dice_breast_metastatic"):
            assert row[key] is None or is_dice(row[key])
    assert max(r["train_studies"] for r in rows) == data["train_studies"]
    assert min(r["train_studies"] for r in rows) < data["train_studies"]
    student = data["prompt_from_student"]
    assert student["run"].endswith("_prompt") and is_dice(student["dice"])
