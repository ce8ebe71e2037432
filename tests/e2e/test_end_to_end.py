"""End to end on a phantom cohort with simulated outcomes: reference-mask biomarkers reproduce the outcome
model, and ``unipet demo`` runs phantom -> predict -> evaluate -> quantify -> survival -> report."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from unipet.cli import main
from unipet.checkpoint import default_checkpoint
from unipet.demo import SURVIVAL_MARKERS, baseline_outcomes, biomarker_agreement, run_demo
from unipet.quantify.survival import c_index, cox_hazard_ratio

N_STUDIES, SEED = 30, 11


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    return run_demo(out, n=N_STUDIES, seed=SEED, workers=2, device="cpu", echo=lambda line: None)


def test_reference_biomarkers_reproduce_the_outcome_model(tmp_path):
    from unipet.data.phantom import write_phantom_cohort
    from unipet.io.layouts import import_phantom
    from unipet.quantify.runner import quantify_manifest

    cohort = write_phantom_cohort(tmp_path / "cohort", n=64, seed=SEED, workers=2)
    import_phantom(cohort).save(tmp_path / "cohort.json")
    _, patients, _ = quantify_manifest(tmp_path / "cohort.json", None, workers=2)
    table = baseline_outcomes(cohort / "clinical.csv", patients)
    assert table["case"].is_unique and len(table) >= 55  # one baseline row per patient
    truth = pd.read_csv(cohort / "clinical.csv").set_index("study_id")
    # reference-mask MTV is the phantom's true MTV (same voxels)
    np.testing.assert_allclose(table["total_mtv_ml"], truth.loc[table["case"], "true_mtv_ml"], rtol=1e-3, atol=0.05)
    for marker in ("total_mtv_ml", "total_tlg"):
        ci = c_index(table, marker, "time", "event", n_boot=300, seed=0)
        assert ci["value"] > 0.62 and ci["lo"] > 0.5, (marker, ci)
        hr = cox_hazard_ratio(table, marker, "time", "event", log=True)
        assert hr["hr"] > 1.0 and hr["p"] < 0.05, (marker, hr)


def test_demo_writes_a_self_contained_report_naming_every_study(demo):
    html = demo.report.read_text()
    cases = pd.read_csv(demo.out / "evaluation" / "per_case.csv")["case"].astype(str)
    assert len(cases) == N_STUDIES
    assert all(case in html for case in cases)  # the per-case table names every study
    assert len(re.findall(r"alt='MIPs of ", html)) == 12  # MIPs of the first 12 (the demo's max_studies)
    assert "data:image/png;base64," in html and not re.search(r"<(img|script|link)[^>]+(src|href)=['\"]?https?:", html)
    for section in ("Segmentation metrics", "Biomarker agreement", "Survival"):
        assert section in html


def test_demo_report_opens_in_chromium_with_the_headline_first(demo, tmp_path):
    """The demo's report in a real browser: no console error, the headline table on the first screen and its two
    figures under it; nothing flattened in the main flow; every shown study linked to its viewer page."""
    from _browser import require_chromium, screenshot

    require_chromium()
    px, console = screenshot(demo.report.as_uri(), tmp_path / "report.png", size=(1280, 1800))
    assert console == [], console
    header = np.all(px == (240, 244, 248), axis=-1)  # table header cells (#f0f4f8)
    rows = np.nonzero(header.sum(axis=1) > 300)[0]
    assert rows.size and rows.min() < 800, "the headline table is not on the first screen"
    below = px[rows.min():]
    green = np.all(np.abs(below.astype(int) - (0, 158, 115)) < 30, axis=-1).sum()  # lymphoma's colour (#009E73)
    pink = np.all(np.abs(below.astype(int) - (204, 121, 167)) < 30, axis=-1).sum()  # melanoma's (#CC79A7)
    assert green > 400 and pink > 400, (green, pink)  # the detection bars and Dice points are drawn
    html = demo.report.read_text()
    flow = re.sub(r"<details>.*?</details>", "", html, flags=re.S)
    assert html.index("id='metrics'") < html.index("id='agreement'") < html.index("id='studies'")
    assert not re.search(r"tasks\.\w+\.|n_nan|by_size\.", flow)
    links = re.findall(r"<a class='viewer' href='([^']+)'", html)
    assert len(links) == 12 and all((demo.report.parent / link).exists() for link in links)


def test_demo_segments_every_cancer_type_and_runs_the_table3_comparison(demo):
    """What the shipped CPU-trained checkpoint does on this cohort (measured: Dice lung 0.82, lymphoma 0.72, breast
    0.50, melanoma 0.53; the previous default had 0.70 / 0.52 / 0.20 / 0.20): every prompt-aware head finds lesions."""
    assert set(demo.dice_by_task) == {"breast_cancer", "lung_cancer", "lymphoma", "melanoma"}
    per_case = pd.read_csv(demo.out / "evaluation" / "per_case.csv")
    assert demo.studies_by_task == per_case[per_case["dice"].notna()].groupby("task").size().to_dict()
    assert demo.dice_by_task["lung_cancer"] > 0.7 and demo.dice_by_task["lymphoma"] > 0.6, demo.dice_by_task
    assert demo.dice_by_task["breast_cancer"] > 0.4 and demo.dice_by_task["melanoma"] > 0.4, demo.dice_by_task
    assert set(demo.agreement) == set(SURVIVAL_MARKERS) and demo.agreement["total_mtv_ml"]["n"] >= 25
    assert set(demo.survival) == set(SURVIVAL_MARKERS)
    comparison = pd.read_csv(demo.out / "survival" / "comparison.csv")  # seed 000's Table-3 layout
    assert set(comparison["source"]) == {"reference", "predicted"}
    assert set(comparison["marker"]) == set(SURVIVAL_MARKERS) and len(comparison) == 2 * len(SURVIVAL_MARKERS)
    assert {"cutoff", "hr", "hr_lo", "hr_hi", "c_index", "c_lo", "c_hi"} <= set(comparison.columns)


def _same_side_hazard_ratios(demo) -> None:
    comparison = pd.read_csv(demo.out / "survival" / "comparison.csv")
    for marker, rows in comparison.groupby("marker"):
        hr = rows.set_index("source")["hr"]
        assert (hr["reference"] > 1) == (hr["predicted"] > 1), (marker, hr.to_dict())


def test_predicted_biomarkers_track_the_reference(demo):
    """What the shipped default reaches on this cohort (benchmarks/RESULTS.md, "Default checkpoint v2": MTV r 0.80,
    TLG r 0.91, SUVmax r 0.65, median |rel. MTV diff| 30 %), held with a margin, and every predicted-mask hazard
    ratio on the same side of 1 as the reference-mask one."""
    assert demo.agreement["total_mtv_ml"]["pearson_r"] > 0.7, demo.agreement["total_mtv_ml"]
    assert demo.agreement["total_tlg"]["pearson_r"] > 0.8, demo.agreement["total_tlg"]
    assert demo.agreement["total_mtv_ml"]["median_abs_rel_diff"] < 0.45, demo.agreement["total_mtv_ml"]
    _same_side_hazard_ratios(demo)


@pytest.mark.xfail(strict=True, reason="target of the quality issue not reached by the CPU-trained default (MTV r "
                   "0.80, TLG r 0.91, SUVmax r 0.65: false positives in lesion-free studies, benchmarks/RESULTS.md); "
                   "strict, so a checkpoint that meets it turns this red until the mark is removed")
def test_predicted_biomarkers_agree_with_reference_as_the_quality_issue_asks(demo):
    """The issue's targets: total MTV and TLG Pearson r >= 0.95, SUVmax r >= 0.9, hazard ratios on the same side."""
    for marker in ("total_mtv_ml", "total_tlg"):
        assert demo.agreement[marker]["pearson_r"] >= 0.95, (marker, demo.agreement[marker])
    assert demo.agreement["suv_max"]["pearson_r"] >= 0.9, demo.agreement["suv_max"]
    _same_side_hazard_ratios(demo)


def test_agreement_statistics_on_known_pairs():
    pred = pd.DataFrame({"case": ["a", "b", "c"], "total_mtv_ml": [11.0, 18.0, 0.0], "total_tlg": [1.0, 2.0, 0.0],
                         "suv_max": [5.0, 6.0, 0.0]})
    ref = pred.assign(total_mtv_ml=[10.0, 20.0, 0.0])
    a = biomarker_agreement(pred, ref)["total_mtv_ml"]
    assert a["n"] == 3 and a["bias"] == pytest.approx(-1.0 / 3)
    assert a["median_abs_rel_diff"] == pytest.approx(0.1)  # |11-10|/10 and |18-20|/20; the zero case is left out


def test_demo_reuses_its_folder_and_refuses_another_cohort_size(demo, capsys):
    assert main(["demo", "--out", str(demo.out), "--n", "31", "--device", "cpu"]) == 2
    assert "holds a demo cohort of 30 studies" in capsys.readouterr().err
    assert main(["demo", "--out", str(demo.out), "--n", "12"]) == 2  # too few for the survival analysis


def test_default_checkpoint_is_shipped_and_small():
    folder = default_checkpoint()
    assert (folder / "meta.json").exists() and (folder / "model.safetensors").stat().st_size <= 25 * 2 ** 20
