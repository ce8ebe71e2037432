"""The real-data benchmark stays runnable: ``bench_real.py --tiny`` (3 real sarcomas, the shipped default under each
prompt and ``--task auto``) end to end in a subprocess; it needs ../shared/real_sts_fdg and skips without it.

What is checked holds at any scale: the baselines reproduce the data's own table (SUV >= 2.5 and 41 % of SUVmax
Dice of ``cases.json``), the per-lesion oracle is at least the fixed 41 % contour per case, every prompt of the
checkpoint and ``auto`` is scored on every case, and the means are the means of the per-case numbers.
"""
from __future__ import annotations

import json

import pytest
from _bench import is_dice, run_tiny
from conftest import SHARED


def test_real_tiny_benchmark(tmp_path):
    root = SHARED / "real_sts_fdg"
    if not (root / "cases.json").exists():
        pytest.skip(f"real sarcoma cohort not found at {root} (it lives in ../shared beside the checkout)")
    table = {c["case"]: c for c in json.loads((root / "cases.json").read_text())}
    data, _ = run_tiny("bench_real.py", tmp_path)
    assert data["cases"] == ["STS_003_0", "STS_005_0", "STS_006_0"]
    per = data["per_case"]
    for case in data["cases"]:
        assert per["baseline suv2.5"][case]["dice"] == pytest.approx(table[case[:-2]]["dice_suv25"], abs=1e-3)
        assert per["baseline suvmax41"][case]["dice"] == pytest.approx(table[case[:-2]]["dice_41pct"], abs=1e-3)
        assert per["baseline oracle-best"][case]["dice"] >= per["baseline oracle41"][case]["dice"] - 1e-9
    models = [m for m in data["rows"] if not m.startswith("baseline")]
    assert models and models[-1].endswith("--task auto") and len(models) >= 2
    (info,) = data["models"].values()
    assert set(info["auto"]["chosen"]) == set(data["cases"])
    for name, row in data["rows"].items():
        assert row["n"] == 3 and set(per[name]) == set(data["cases"])
        assert is_dice(row["dice"])
        assert row["dice"] == pytest.approx(sum(c["dice"] for c in per[name].values()) / 3, abs=1e-3)
        assert 0 <= row["above_suv2.5"] <= 3 and row["mtv_abs_error_pct"] >= 0
