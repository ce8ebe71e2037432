"""HTML report and its figures: self-contained page, every study named, MIP orientation and aspect, CLI."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from unipet.cli import main
from unipet.errors import ImageGeometryError, OutputExistsError
from unipet.io.manifest import Case, Manifest
from unipet.io.nifti import save_volume
from unipet.report.survival import run_survival
from unipet.report import build_report
from unipet.report.plots import agreement_stats, mip_figure, mip_views, to_ras
from unipet.study import make_affine

SHAPE = (24, 32, 32)
SPACING = (3.0, 2.0, 2.0)
CASES = ["pt-a01", "pt-b02", "pt-c03"]


def tiny_study(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SUV (z, y, x) with a hot sphere; reference = the sphere, prediction = the sphere shifted by 2 voxels."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    cz, cy, cx = 8 + 3 * seed, 12 + seed, 14 + 2 * seed
    ref = ((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= 9).astype(np.uint8)
    pred = ((z - cz) ** 2 + (y - cy) ** 2 + (x - cx - 2) ** 2 <= 9).astype(np.uint8)
    suv = (1.0 + 0.2 * rng.random(SHAPE) + 7.0 * ref).astype(np.float32)
    return suv, pred, ref


@pytest.fixture(scope="module")
def pipeline_outputs(tmp_path_factory):
    """Folders as `unipet evaluate`, `unipet quantify` (pred and ref) and `unipet survival` write them."""
    root = tmp_path_factory.mktemp("pipeline")
    (root / "eval").mkdir()
    pd.DataFrame({"case": CASES, "task": "lymphoma", "dice": [0.61, 0.72, 0.55], "iou": [0.44, 0.56, 0.38],
                  "precision": 0.7, "recall": 0.6, "hd95_mm": [4.0, 3.0, 5.0], "fpv_ml": 0.1, "fnv_ml": 0.2,
                  "lesions_gt": 1, "lesions_detected": 1}).to_csv(root / "eval" / "per_case.csv", index=False)
    pd.DataFrame({"task": ["lymphoma", "overall"], "n": [3, 3], "DSC": ["62.7 (55.0–72.0)"] * 2}).to_csv(
        root / "eval" / "table1.csv", index=False)
    pd.DataFrame({"case": np.repeat(CASES, 90)[:250], "lesion": np.arange(250), "volume_ml": 1.0}).to_csv(
        root / "eval" / "lesions.csv", index=False)
    (root / "eval" / "summary.json").write_text(json.dumps(
        {"overall": {"dice": {"mean": 0.627, "lo": 0.55, "hi": 0.72, "n": 3}}, "connectivity": 18}))
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"case": CASES, "total_mtv_ml": [10.0, 20.0, 30.0], "total_tlg": [50.0, 90.0, 200.0],
                        "suv_max": [8.0, 9.0, 10.0], "lesion_count": 1, "dmax_mm": 0.0})
    pred = ref.assign(total_mtv_ml=ref["total_mtv_ml"] + [1.0, 2.0, 3.0], total_tlg=ref["total_tlg"] * 1.1,
                      suv_max=ref["suv_max"] + rng.normal(0, 0.1, 3))
    for name, table in (("q_ref", ref), ("q_pred", pred)):
        (root / name).mkdir()
        table.to_csv(root / name / "patients.csv", index=False)
    n = 60
    mtv = np.exp(rng.normal(2, 1, n))
    t = rng.exponential(1 / (0.002 * mtv))
    run_survival(pd.DataFrame({"mtv": mtv, "os": np.minimum(t, 90), "dead": (t < 90).astype(int)}), "os", "dead",
                 ["mtv"], n_boot=20, out_dir=root / "surv")
    return root


def test_report_from_studies_is_self_contained(tmp_path, pipeline_outputs):
    studies = [(case, *tiny_study(i)) for i, case in enumerate(CASES)]
    studies = [(case, suv, SPACING, pred, ref) for case, suv, pred, ref in studies]
    out = build_report(tmp_path / "report.html", studies=studies, eval_dir=pipeline_outputs / "eval",
                       quant_pred=pipeline_outputs / "q_pred", quant_ref=pipeline_outputs / "q_ref",
                       survival_dir=pipeline_outputs / "surv", settings={"model": "stunet_s", "threshold": 0.5})
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>")
    # 3 MIP figures + the headline's Dice-by-type plot + 1 agreement figure + 1 Kaplan–Meier figure, all embedded
    assert text.count("data:image/png;base64,") == 6
    for bad in ('src="http', "src='http", "href='http", 'href="http', "<link", "<script", "@import", "url("):
        assert bad not in text
    srcs = re.findall(r"src=['\"]([^'\"]+)['\"]", text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    for case in CASES:
        assert case in text
    assert "Dice 0.720" in text  # the per-case Dice is shown under its study
    assert "stunet_s" in text and "Showing 3 of 3 studies" in text
    assert "HR high vs low" in text and "Bland–Altman" in text
    assert "Not included" not in text
    assert "<h3>Table 1</h3>" in text and "First 200 of 250 rows" in text and "overall.dice.mean" in text
    # agreement statistics in the table: MTV bias = mean(1, 2, 3) = 2
    assert re.search(r"<td>MTV \(mL\)</td>\s*<td>3</td>\s*<td>2</td>", text)
    with pytest.raises(OutputExistsError):
        build_report(out, studies=studies)


def test_report_omits_sections_without_input(tmp_path):
    suv, pred, ref = tiny_study(0)
    out = build_report(tmp_path / "r.html", studies=[("pt-x", suv, SPACING, None, ref)])
    text = out.read_text()
    assert text.count("data:image/png;base64,") == 1
    assert text.count("Not included") == 3  # metrics, agreement, survival
    assert "no pred" in text and "pt-x" in text


def test_report_from_manifest_and_prediction_folder(tmp_path, pipeline_outputs):
    affine = make_affine(SPACING, origin_xyz=(-30.0, -30.0, -40.0))
    (tmp_path / "pred").mkdir()
    cases = []
    for i, case in enumerate(CASES):
        suv, pred, ref = tiny_study(i)
        save_volume(suv, affine, tmp_path / f"{case}_SUV.nii.gz")
        save_volume(ref, affine, tmp_path / f"{case}_SEG.nii.gz")
        save_volume(pred, affine, tmp_path / "pred" / f"{case}.nii.gz")
        cases.append(Case(case_id=case, images={"PET": str(tmp_path / f"{case}_SUV.nii.gz")},
                          label=str(tmp_path / f"{case}_SEG.nii.gz")))
    manifest = Manifest(cases).save(tmp_path / "manifest.json")
    out = tmp_path / "report.html"
    rc = main(["report", "--manifest", str(manifest), "--pred", str(tmp_path / "pred"), "--eval",
               str(pipeline_outputs / "eval"), "--max-studies", "2", "--out", str(out)])
    assert rc == 0
    text = out.read_text()
    assert "Showing 2 of 3 studies" in text and text.count("alt='MIPs of ") == 2
    _, pred0, ref0 = tiny_study(0)
    ml = np.count_nonzero(ref0) * 12.0 / 1000.0  # voxel = 3 × 2 × 2 mm³
    assert np.count_nonzero(pred0) == np.count_nonzero(ref0) and 1.0 < ml < 2.0
    assert f"pt-a01 · pred {ml:.1f} mL · ref {ml:.1f} mL" in text
    assert str(tmp_path) not in text  # folder paths are not written, only their last component
    assert main(["report", "--manifest", str(manifest), "--pred", str(tmp_path / "pred"), "--out", str(out)]) == 2
    # a prediction on another grid is refused with a clear error
    save_volume(np.zeros((10, 10, 10), np.uint8), affine, tmp_path / "pred" / f"{CASES[0]}.nii.gz", overwrite=True)
    with pytest.raises(ImageGeometryError, match="differs from its PET grid"):
        build_report(tmp_path / "bad.html", manifest=manifest, pred_dir=tmp_path / "pred")


def test_mip_orientation_is_radiological():
    vol = np.zeros((10, 8, 6), np.float32)
    vol[9, 7, 5] = 1.0  # most superior, anterior and right voxel (RAS: high z, y, x)
    views = mip_views(vol)
    assert views["coronal"].shape == (10, 6) and views["sagittal"].shape == (10, 8)
    assert views["coronal"][9, 0] == 1.0  # right of patient -> left of viewer; superior -> last row (origin lower)
    assert views["sagittal"][9, 0] == 1.0  # anterior -> left of viewer


def test_to_ras_undoes_flips_and_permutations():
    vol = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    flipped_affine = make_affine((3.0, 2.0, 1.0))
    flipped_affine[0, 0] = -1.0  # x index runs to the patient's left (LAS)
    ras, spacing = to_ras(vol, flipped_affine)
    assert np.array_equal(ras, vol[:, :, ::-1]) and spacing == (3.0, 2.0, 1.0)
    # axes swapped: the array's first (z) axis walks along world x in 3 mm steps, its last (x) axis along world z
    # in 1 mm steps (nibabel affine: world x = 3·k, world y = 2·j, world z = 1·i for the (i, j, k) = (x, y, z) index)
    swapped = np.zeros((4, 4))
    swapped[0, 2], swapped[1, 1], swapped[2, 0], swapped[3, 3] = 3.0, 2.0, 1.0, 1.0
    ras, spacing = to_ras(vol, swapped)
    assert ras.shape == (6, 5, 4) and spacing == (1.0, 2.0, 3.0)
    assert np.array_equal(ras, np.transpose(vol, (2, 1, 0)))


def test_mip_figure_keeps_physical_aspect():
    suv, pred, ref = tiny_study(1)
    spacing = (5.0, 1.0, 1.0)  # strongly anisotropic: 120 mm tall, 32 mm wide
    fig = mip_figure("pt", suv, spacing, pred, ref)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    w_in, h_in = fig.get_size_inches()
    for ax, width_mm in zip(fig.axes[:2], (32.0, 32.0)):
        box = ax.get_position()
        ratio = (box.width * w_in) / (box.height * h_in)
        assert ratio == pytest.approx(width_mm / (SHAPE[0] * 5.0), rel=0.03)
    # both outline colours are drawn
    colours = {tuple(np.round(c.get_edgecolor()[0][:3], 3)) for ax in fig.axes[:2] for c in ax.collections}
    assert (0.835, 0.369, 0.0) in colours and (0.0, 0.447, 0.698) in colours


def test_agreement_stats_values():
    s = agreement_stats(np.array([2.0, 4.0, 6.0, np.nan]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert s["n"] == 3 and s["bias"] == pytest.approx(2.0) and s["sd"] == pytest.approx(1.0)
    assert (s["loa_lo"], s["loa_hi"]) == pytest.approx((0.04, 3.96)) and s["pearson_r"] == pytest.approx(1.0)
