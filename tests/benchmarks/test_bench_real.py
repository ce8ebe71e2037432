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


def test_factor_transforms_change_one_thing():
    """The one-factor probes of ``bench_real_factors.py`` on a synthetic crop: each changes what it says only."""
    import sys

    import numpy as np

    from _bench import ROOT
    from unipet.study import Study, index_to_world_zyx, make_affine

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_real_factors import FACTORS, transform

    rng = np.random.default_rng(0)
    pet = rng.uniform(0.5, 1.5, (10, 12, 14)).astype(np.float32)
    ct = rng.normal(40, 20, pet.shape).astype(np.float32)
    ct[:, :, :2] = -1000  # some air at one side
    label = np.zeros(pet.shape, np.uint8)
    label[3:7, 4:8, 5:9] = 1
    pet[3:7, 4:8, 5:9] = 2.0
    pet[5, 6, 7] = 10.0
    study = Study("s", pet, ct, make_affine((3.0, 5.0, 5.0), (10.0, -20.0, 30.0)), label=label)
    for factor in FACTORS:
        out, box = transform(factor, study, 30.0, np.random.default_rng(1))
        assert np.array_equal(out.label[box], label), factor
        world = index_to_world_zyx(out.affine) @ np.array([b.start for b in box] + [1.0])
        np.testing.assert_allclose(world, index_to_world_zyx(study.affine) @ np.array([0, 0, 0, 1.0]))
        if factor == "pad-tissue":
            assert out.pet.shape == (30, 24, 26)  # 30 mm = 10 x 3 mm, 6 x 5 mm a side and np.array_equal(out.pet[box], pet)
            rim = out.pet[0]
            assert 0.5 < float(np.median(rim)) < 1.5 and float(np.median(out.ct[0])) > -100  # tissue, not air
        elif factor == "fill-necrosis":
            assert np.array_equal(out.pet[label == 0], pet[label == 0]) and out.pet[label > 0].min() >= 5.0
        elif factor == "ct-flat":
            assert set(np.unique(out.ct)) <= {40.0, -1000.0} and np.array_equal(out.pet, pet)
        elif factor == "ct-smooth":
            assert out.ct.std() < ct.std() and np.array_equal(out.pet, pet)
        elif factor.startswith("suv-x"):
            np.testing.assert_allclose(out.pet, pet * float(factor[5:]))
        else:
            assert np.array_equal(out.pet, pet) and np.array_equal(out.ct, ct)


def test_held_out_selection_from_a_folds_file_or_a_case_list(tmp_path):
    """``--folds FILE --fold N`` takes fold N's cases of a ``{"k", "seed", "folds"}`` file; ``--cases`` a JSON list
    or one id a line."""
    import sys

    from _bench import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_real import selected_cases

    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps({"k": 2, "seed": 0, "folds": {"STS_003_0": 1, "STS_005_0": 0, "STS_006_0": 1}}))
    assert selected_cases(None, folds, 1) == ["STS_003_0", "STS_006_0"]
    assert selected_cases(None, folds, 0) == ["STS_005_0"]
    with pytest.raises(SystemExit, match="fold 3"):
        selected_cases(None, folds, 3)
    listed = tmp_path / "cases.txt"
    listed.write_text("# held out\nSTS_003\nSTS_010\n")
    assert selected_cases(listed, None, None) == ["STS_003", "STS_010"]
    listed.write_text('["STS_003_0"]')
    assert selected_cases(listed, None, None) == ["STS_003_0"]
    assert selected_cases(None, None, None) is None
