"""The curated report: headline per cancer type first, nothing flattened in the main flow, studies worst first,
every other number in collapsed details and in the data files beside the page, viewer pages linked."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from unipet.evaluate import evaluate
from unipet.errors import OutputExistsError
from unipet.evaluate.runner import EvaluationConfig
from unipet.io.manifest import Case, Manifest
from unipet.io.nifti import save_volume
from unipet.report import build_report
from unipet.report.headline import headline_table, worst_first
from unipet.report.html import files_folder
from unipet.study import make_affine

SHAPE = (20, 24, 24)
SPACING = (4.0, 4.0, 4.0)  # 0.064 mL voxels
TASKS = {"pt-l1": "lymphoma", "pt-l2": "lymphoma", "pt-m1": "melanoma", "pt-m2": "melanoma", "pt-n1": "lymphoma"}


def masks(case: str):
    """Reference: one 3x3x3 lesion (27 voxels); prediction: shifted by a case-dependent amount (pt-n1: lesion-free
    reference with a false-positive blob)."""
    ref = np.zeros(SHAPE, np.uint8)
    pred = np.zeros(SHAPE, np.uint8)
    shift = {"pt-l1": 0, "pt-l2": 1, "pt-m1": 2, "pt-m2": 3}.get(case)
    if shift is None:
        pred[4:6, 4:6, 4:6] = 1
        return ref, pred
    ref[8:11, 8:11, 8:11] = 1
    pred[8:11, 8:11, 8 + shift:11 + shift] = 1
    return ref, pred


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("curated")
    affine = make_affine(SPACING, origin_xyz=(-40.0, -40.0, -40.0))
    (root / "pred").mkdir()
    cases = []
    rng = np.random.default_rng(0)
    for case, task in TASKS.items():
        ref, pred = masks(case)
        suv = (1.0 + 0.1 * rng.random(SHAPE) + 6.0 * ref).astype(np.float32)
        ct = np.full(SHAPE, -1000.0, np.float32)  # a CT in HU: tissue inside, air at the edge of the field
        ct[:, 1:-1, 1:-1] = 30.0
        save_volume(suv, affine, root / f"{case}_SUV.nii.gz")
        save_volume(ct, affine, root / f"{case}_CT.nii.gz")
        save_volume(ref, affine, root / f"{case}_SEG.nii.gz")
        save_volume(pred, affine, root / "pred" / f"{case}.nii.gz")
        cases.append(Case(case_id=case, images={"PET": str(root / f"{case}_SUV.nii.gz"),
                                                "CT": str(root / f"{case}_CT.nii.gz")},
                          label=str(root / f"{case}_SEG.nii.gz"), task=task))
    Manifest(cases).save(root / "m.json")
    evaluate(root / "pred", root / "m.json", root / "eval", config=EvaluationConfig(n_boot=50))
    return root


def main_flow(text: str) -> str:
    """The page without its collapsed details blocks."""
    return re.sub(r"<details>.*?</details>", "", text, flags=re.S)


def test_headline_first_nothing_flattened_in_the_main_flow(cohort, tmp_path):
    out = build_report(tmp_path / "r.html", manifest=cohort / "m.json", pred_dir=cohort / "pred",
                       eval_dir=cohort / "eval", settings={"model": "dpdnet", "checkpoint": "ck-1"})
    text = out.read_text()
    order = [text.index(f"<section id='{k}'>") for k in ("run", "metrics", "agreement", "survival", "studies",
                                                          "details")]
    assert order == sorted(order)
    headline = text[text.index("<section id='metrics'>"):text.index("<section id='agreement'>")]
    per_case = pd.read_csv(cohort / "eval" / "per_case.csv")
    for task in ("lymphoma", "melanoma", "overall"):
        assert f"<td>{task}</td>" in headline
    # Dice of the lymphoma studies with a lesion: pt-l1 1.0, pt-l2 2*18/54 = 0.667 -> mean 0.83
    assert per_case.set_index("case").loc["pt-l2", "dice"] == pytest.approx(2 * 18 / 54)
    assert re.search(r"<td>0\.83 \(0\.67–1\.00\)</td>", headline)
    assert "<td>3 (2)</td>" in headline  # lymphoma: 3 studies, 2 with a lesion
    assert "alt='Dice by cancer type'" in headline and "alt='detection by size'" in headline
    flow = main_flow(text)
    assert "tasks.lymphoma" not in flow and "n_nan" not in flow and "by_size" not in flow  # no flattened keys
    assert "tasks.lymphoma.dice.n_nan" in text  # ... they are in the collapsed details
    assert "<details open" not in text
    # data files beside the page, linked relatively
    data = files_folder(out)
    for name in ("headline.csv", "evaluation_summary.csv", "per_case.csv", "settings.json"):
        assert (data / name).exists() and f"href='{data.name}/{name}'" in text
    table = pd.read_csv(data / "headline.csv")
    assert list(table["cancer type"]) == ["lymphoma", "melanoma", "overall"]
    assert str(cohort) not in text


def test_studies_are_shown_worst_first(cohort, tmp_path):
    out = build_report(tmp_path / "r.html", manifest=cohort / "m.json", pred_dir=cohort / "pred",
                       eval_dir=cohort / "eval")
    shown = re.findall(r"alt='MIPs of ([\w-]+)'", out.read_text())
    # Dice: m2 (shift 3: 0) < m1 (shift 2: 1/3) < l2 (2/3) < l1 (1); then the lesion-free study
    assert shown == ["pt-m2", "pt-m1", "pt-l2", "pt-l1", "pt-n1"]
    assert worst_first(pd.read_csv(cohort / "eval" / "per_case.csv")) == shown
    assert "lesion-free, FPV 0.5 mL" in out.read_text()  # 8 voxels of 0.064 mL


def test_headline_table_from_a_summary():
    summary = {"tasks": {"lung_cancer": {"n_cases": 4, "dice": {"mean": 0.5, "lo": 0.4, "hi": 0.6, "n": 4},
                                         "fpv_ml": {"mean": 2.0, "lo": 1.0, "hi": 3.5, "n": 4}}},
               "overall": {"n_cases": 4, "dice": {"mean": 0.5, "lo": 0.4, "hi": 0.6, "n": 4}},
               "lesion_detection": {"overall": {"lesions": 4, "detected": 3, "by_size": {
                   "<1": {"n": 0, "detected": 0}, "1-5": {"n": 4, "detected": 3}}},
                   "tasks": {"lung_cancer": {"lesions": 4, "detected": 3, "by_size": {
                       "<1": {"n": 0, "detected": 0}, "1-5": {"n": 4, "detected": 3}}}}}}
    table = headline_table(summary).set_index("cancer type")
    assert table.loc["lung cancer", "Dice (95% CI)"] == "0.50 (0.40–0.60)"
    assert table.loc["lung cancer", "lesion sensitivity"] == "3/4 (75 %)"
    assert table.loc["lung cancer", "1-5 mL"] == "3/4" and table.loc["lung cancer", "<1 mL"] == "–"
    assert table.loc["lung cancer", "FPV mL (95% CI)"] == "2.0 (1.0–3.5)"
    assert table.loc["overall", "FNV mL (95% CI)"] == "–"


def test_report_links_a_viewer_per_shown_study(cohort, tmp_path):
    out = build_report(tmp_path / "r.html", manifest=cohort / "m.json", pred_dir=cohort / "pred",
                       eval_dir=cohort / "eval", max_studies=2, viewers=True)
    text = out.read_text()
    links = re.findall(r"<a class='viewer' href='([^']+)'", text)
    assert links == ["r_files/viewers/pt-m2.html", "r_files/viewers/pt-m1.html"]
    for link in links:
        page = (tmp_path / link).read_text()
        assert "src='niivue.umd.js'" in page and "id='vol-pred'" in page and "id='vol-ref'" in page
    assert (tmp_path / "r_files" / "viewers" / "niivue.umd.js").exists()
    assert (tmp_path / "r_files" / "viewers" / "niivue-LICENSE").exists()
    assert "<script" not in re.sub(r"<a [^>]*>", "", text)  # the report itself stays script-free
    (tmp_path / "r2.html").unlink(missing_ok=True)
    out.rename(tmp_path / "r2.html")  # the page moved away, its data folder is still there: not overwritten unasked
    with pytest.raises(OutputExistsError, match="r_files already exists"):
        build_report(tmp_path / "r.html", manifest=cohort / "m.json")


def test_survival_table_shows_unbounded_intervals_instead_of_failing():
    """A dichotomised Cox fit with one patient in a group has an unbounded interval (JSON null): the table says so."""
    from unipet.report.html import _survival_table

    res = {"cutoff": 82.5, "n_high": 1, "n_low": 14,
           "hr_dichotomised": {"hr": 8.4e7, "lo": 0.0, "hi": None, "p": 0.99},
           "hr_continuous": {"hr": 1.84, "lo": 1.02, "hi": float("inf"), "p": 0.04},
           "logrank_p": 3e-4, "c_index": {"value": 0.70, "lo": 0.43, "hi": 0.91}}
    row = _survival_table({"results": {"total_mtv_ml": res}}).iloc[0]
    assert row["HR high vs low (95% CI)"].endswith("–n/a)")
    assert row["HR continuous (95% CI)"] == "1.84 (1.02–∞)"
