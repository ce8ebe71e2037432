"""The evaluator's quantification errors (``EvaluationConfig.with_suv``): MTV and SUVmean of a mask vs the reference."""
from __future__ import annotations

import math

import numpy as np
import pytest

from unipet.errors import ConfigError
from unipet.evaluate.runner import SUV_COLUMNS, EvaluationConfig, evaluate, suv_errors
from unipet.io.manifest import Case, Manifest
from unipet.io.nifti import save_volume
from unipet.study import make_affine

SPACING = (2.0, 2.0, 2.0)  # 8 uL voxels


def test_suv_errors_by_hand():
    suv = np.ones((6, 6, 6), np.float32)
    suv[1:3, 1:3, 1:3] = 6.0
    ref = np.zeros(suv.shape, bool)
    ref[1:3, 1:3, 1:3] = True  # 8 voxels at SUV 6 = 0.064 mL
    pred = ref.copy()
    pred[3, 1:3, 1:3] = True  # + 4 voxels at SUV 1
    out = suv_errors(pred, ref, suv, SPACING)
    assert set(out) == set(SUV_COLUMNS)
    assert out["mtv_error_ml"] == pytest.approx(4 * 0.008)
    assert out["mtv_abs_error_pct"] == pytest.approx(50.0)
    assert out["suvmean_ref"] == pytest.approx(6.0) and out["suvmean_pred"] == pytest.approx(52 / 12)
    assert out["suvmean_error"] == pytest.approx(52 / 12 - 6.0) and out["suvmean_abs_error"] > 0
    empty = suv_errors(np.zeros_like(ref), ref, suv, SPACING)
    assert math.isnan(empty["suvmean_error"]) and empty["mtv_abs_error_pct"] == pytest.approx(100.0)


def test_evaluate_with_suv_reads_the_manifests_pet(tmp_path):
    affine = make_affine(SPACING)
    suv = np.ones((8, 8, 8), np.float32)
    suv[2:5, 2:5, 2:5] = 4.0
    ref = (suv > 2).astype(np.uint8)
    pred = np.zeros_like(ref)
    pred[2:5, 2:5, 2:4] = 1
    save_volume(suv, affine, tmp_path / "SUV.nii.gz")
    save_volume(ref, affine, tmp_path / "SEG.nii.gz")
    save_volume(pred, affine, tmp_path / "pred" / "c1.nii.gz")
    Manifest([Case(case_id="c1", images={"PET": str(tmp_path / "SUV.nii.gz")},
                   label=str(tmp_path / "SEG.nii.gz"))]).save(tmp_path / "m.json")
    result = evaluate(tmp_path / "pred", tmp_path / "m.json", tmp_path / "ev", EvaluationConfig(with_suv=True, n_boot=10))
    row = result.per_case.iloc[0]
    assert row["mtv_error_ml"] == pytest.approx(-9 * 0.008) and row["suvmean_error"] == pytest.approx(0.0)
    assert result.summary["overall"]["mtv_abs_error_pct"]["mean"] == pytest.approx(100 / 3)
    # a folder of masks carries no PET: refused up front, in one line
    with pytest.raises(ConfigError, match="PET"):
        evaluate(tmp_path / "pred", tmp_path / "pred", None, EvaluationConfig(with_suv=True))
    # without with_suv nothing changes
    plain = evaluate(tmp_path / "pred", tmp_path / "m.json", None, EvaluationConfig(n_boot=10))
    assert "suvmean_error" not in plain.per_case.columns
