"""CLI contract of ``unipet evaluate`` and ``unipet quantify``: files, columns, settings, refusals."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unipet.cli import main
from unipet.evaluate.runner import EvaluationConfig, evaluate
from unipet.io.manifest import Case, Manifest
from unipet.io.nifti import save_volume
from unipet.study import make_affine

AFFINE = make_affine((3.0, 2.0, 2.0), origin_xyz=(-30.0, -30.0, 0.0))
SHAPE = (12, 16, 16)
PER_CASE_REQUIRED = ["case", "task", "dice", "iou", "precision", "recall", "hd95_mm", "fpv_ml", "fnv_ml",
                     "lesions_gt", "lesions_detected", "lesion_sensitivity", "lesion_precision"]


def _mask(*boxes) -> np.ndarray:
    m = np.zeros(SHAPE, np.uint8)
    for lo, hi in boxes:
        m[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
    return m


@pytest.fixture
def cohort(tmp_path: Path) -> dict[str, Path]:
    """Four studies: two lung (one perfect, one half-found + a false positive), one lymphoma without a
    prediction, one lesion-free melanoma study with a false positive."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    lesion = ((3, 4, 4), (7, 10, 10))
    refs = {"a": _mask(lesion), "b": _mask(lesion, ((8, 12, 12), (10, 14, 14))), "c": _mask(lesion), "d": _mask()}
    preds = {"a": _mask(lesion), "b": _mask(lesion, ((0, 0, 0), (1, 2, 2))), "d": _mask(((1, 1, 1), (2, 3, 3)))}
    for name, m in refs.items():
        save_volume(m, AFFINE, gt / f"{name}.nii.gz")
    for name, m in preds.items():
        save_volume(m, AFFINE, pred / f"{name}.nii.gz")
    tasks = {"a": "lung_cancer", "b": "lung_cancer", "c": "lymphoma", "d": "melanoma"}
    manifest = Manifest([Case(case_id=n, images={"PET": str(tmp_path / "suv.nii.gz")}, task=t,
                              label=str(gt / f"{n}.nii.gz"), meta={"weight_kg": 70, "height_m": 1.75})
                         for n, t in tasks.items()])
    manifest.save(tmp_path / "manifest.json")
    suv = np.full(SHAPE, 1.0, np.float32)
    suv[3:7, 4:10, 4:10] = 6.0
    suv[8:10, 12:14, 12:14] = 3.0
    save_volume(suv, AFFINE, tmp_path / "suv.nii.gz")
    return {"root": tmp_path, "gt": gt, "pred": pred, "manifest": tmp_path / "manifest.json", "suv": tmp_path / "suv.nii.gz"}


def test_evaluate_folder_writes_tables_and_refuses_overwrite(cohort, capsys):
    out = cohort["root"] / "eval"
    assert main(["evaluate", str(cohort["pred"]), str(cohort["gt"]), "--out", str(out), "--n-boot", "200"]) == 0
    for name in ("per_case.csv", "lesions.csv", "summary.json", "table1.csv"):
        assert (out / name).is_file()
    per_case = pd.read_csv(out / "per_case.csv")
    assert set(PER_CASE_REQUIRED) <= set(per_case.columns)
    assert list(per_case["case"]) == ["a", "b", "d"]  # c has no prediction and is not scored by default
    rows = per_case.set_index("case")
    assert rows.loc["a", "dice"] == 1.0 and rows.loc["a", "fpv_ml"] == 0.0
    voxel_ml = 3 * 2 * 2 / 1000
    assert rows.loc["b", "fnv_ml"] == pytest.approx(8 * voxel_ml)  # the 2×2×2 lesion is missed
    assert rows.loc["b", "fpv_ml"] == pytest.approx(4 * voxel_ml)
    assert rows.loc["b", "lesions_gt"] == 2 and rows.loc["b", "lesions_detected"] == 1
    assert math.isnan(rows.loc["d", "dice"]) and rows.loc["d", "fpv_ml"] == pytest.approx(4 * voxel_ml)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["missing_predictions"] == ["c"]
    assert summary["settings"]["connectivity"] == 18 and summary["settings"]["rule"] == "overlap"
    assert summary["overall"]["dice"]["n"] == 2 and summary["overall"]["dice"]["n_nan"] == 1
    assert summary["lesion_detection"]["overall"]["lesions"] == 3
    # refuses to overwrite, then overwrites when asked
    assert main(["evaluate", str(cohort["pred"]), str(cohort["gt"]), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["evaluate", str(cohort["pred"]), str(cohort["gt"]), "--out", str(out), "--overwrite",
                 "--missing-as-empty", "--n-boot", "50"]) == 0
    per_case = pd.read_csv(out / "per_case.csv").set_index("case")
    assert per_case.loc["c", "dice"] == 0.0 and bool(per_case.loc["c", "missing_prediction"])


def test_evaluate_manifest_tasks_positive_only_and_table1(cohort):
    out = cohort["root"] / "eval_m"
    assert main(["evaluate", str(cohort["pred"]), str(cohort["manifest"]), "--out", str(out), "--positive-only",
                 "--cldice", "--match", "iou", "--iou-threshold", "0.3", "--n-boot", "100"]) == 0
    per_case = pd.read_csv(out / "per_case.csv").set_index("case")
    assert per_case.loc["a", "task"] == "lung_cancer"
    assert {"cldice", "topology_precision", "topology_sensitivity"} <= set(per_case.columns)
    assert math.isnan(per_case.loc["d", "precision"])  # blanked: lesion-free study under --positive-only
    assert per_case.loc["d", "fpv_ml"] > 0  # FPV stays
    table = pd.read_csv(out / "table1.csv")
    assert list(table["task"]) == ["lung_cancer", "melanoma", "overall"]
    assert list(table.columns) == ["task", "n", "DSC", "IoU"]
    assert table.set_index("task").loc["melanoma", "DSC"] == "—"  # undefined: no lesion-positive study
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cohort"] == "positive_only" and summary["settings"]["iou_threshold"] == 0.3
    assert summary["tasks"]["lung_cancer"]["dice"]["n"] == 2


def test_evaluate_errors(cohort, tmp_path, capsys):
    bad = tmp_path / "bad_pred"
    save_volume(np.zeros((12, 16, 15), np.uint8), AFFINE, bad / "a.nii.gz")
    assert main(["evaluate", str(bad), str(cohort["gt"]), "--out", str(tmp_path / "e1")]) == 2
    assert "grid" in capsys.readouterr().err
    soft = tmp_path / "soft_pred"
    save_volume(np.full(SHAPE, 0.7, np.float32), AFFINE, soft / "a.nii.gz")
    assert main(["evaluate", str(soft), str(cohort["gt"]), "--out", str(tmp_path / "e2")]) == 2
    assert "binary" in capsys.readouterr().err
    empty = tmp_path / "none"
    empty.mkdir()
    assert main(["evaluate", str(empty), str(cohort["gt"]), "--out", str(tmp_path / "e3")]) == 2
    assert main(["evaluate", str(cohort["pred"]), str(cohort["gt"]), "--out", str(tmp_path / "e4"),
                 "--connectivity", "8"]) == 2


def test_parallel_evaluation_equals_serial(cohort):
    config = EvaluationConfig(n_boot=50)
    serial = evaluate(cohort["pred"], cohort["gt"], None, config)
    parallel = evaluate(cohort["pred"], cohort["gt"], None, config, workers=2)
    pd.testing.assert_frame_equal(serial.per_case, parallel.per_case)
    assert serial.summary["overall"] == parallel.summary["overall"]


def test_quantify_single_study(cohort, capsys):
    out = cohort["root"] / "q"
    assert main(["quantify", str(cohort["suv"]), str(cohort["gt"] / "b.nii.gz"), "--out", str(out),
                 "--weight-kg", "70", "--height-m", "1.75"]) == 0
    lesions = pd.read_csv(out / "lesions.csv")
    for col in ("case", "task", "lesion", "voxels", "mtv_ml", "suv_max", "suv_mean", "suv_peak_ibsi",
                "suv_peak_percist", "tlg", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm"):
        assert col in lesions.columns
    assert list(lesions["case"]) == ["b", "b"] and list(lesions["voxels"]) == [144, 8]
    assert lesions.loc[0, "suv_mean"] == pytest.approx(6.0)
    assert lesions.loc[0, "mtv_ml"] == pytest.approx(144 * 0.012)
    patients = pd.read_csv(out / "patients.csv")
    for col in ("case", "total_mtv_ml", "total_tlg", "suv_max", "suv_peak", "lesion_count", "dmax_mm", "sdmax_per_m"):
        assert col in patients.columns
    assert patients.loc[0, "lesion_count"] == 2 and patients.loc[0, "sdmax_per_m"] > 0
    pytest.importorskip("pyarrow")
    for stem, frame in (("lesions", lesions), ("patients", patients)):
        back = pd.read_parquet(out / f"{stem}.parquet")
        assert list(back.columns) == list(frame.columns) and len(back) == len(frame)
        numeric = frame.select_dtypes("number").columns
        np.testing.assert_allclose(back[numeric].to_numpy(float), frame[numeric].to_numpy(float), equal_nan=True)
    record = json.loads((out / "quantify.json").read_text())
    assert record["connectivity"] == 18 and record["delineation"] == "mask"
    assert record["suv_peak"]["sphere_radius_mm"] == pytest.approx(6.2035, abs=1e-4)
    assert main(["quantify", str(cohort["suv"]), str(cohort["gt"] / "b.nii.gz"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_quantify_manifest_with_predictions(cohort, capsys):
    out = cohort["root"] / "qm"
    assert main(["quantify", "--manifest", str(cohort["manifest"]), "--pred", str(cohort["pred"]), "--out", str(out),
                 "--delineation", "suv4.0"]) == 0
    patients = pd.read_csv(out / "patients.csv").set_index("case")
    assert list(patients.index) == ["a", "b", "d"]
    assert patients.loc["a", "task"] == "lung_cancer"
    assert patients.loc["d", "lesion_count"] == 0  # its false positive has SUV 1 < 4
    assert patients.loc["a", "bsa_m2"] == pytest.approx(math.sqrt(175 * 70 / 3600))
    record = json.loads((out / "quantify.json").read_text())
    assert record["missing_masks"] == ["c"] and record["delineation"] == "suv4.0"
    assert main(["quantify", str(cohort["suv"]), str(cohort["gt"] / "a.nii.gz"), "--out", str(out / "p"),
                 "--delineation", "percist"]) == 2
    assert "liver" in capsys.readouterr().err
    assert main(["quantify", "--out", str(out / "x")]) == 2
