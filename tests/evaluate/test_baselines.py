"""Reference methods (SUV thresholds, PERCIST, organ-aware threshold, per-lesion oracle) and `evaluate --baselines`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from unipet.errors import ConfigError
from unipet.evaluate.baselines import (BASELINES, ORACLE_FRACTIONS, baseline_mask, comparison_rows,
                                       evaluate_baselines, oracle, organ_aware, parse_methods, percist_level,
                                       reference_fraction, suv_threshold)
from unipet.io.manifest import Case, Manifest
from unipet.io.nifti import save_volume
from unipet.study import Study, make_affine

SHAPE = (20, 24, 24)
SPACING = (4.0, 4.0, 4.0)
LABELS = {"muscle": 2, "brain": 4, "liver": 13}  # values of unipet's organ table (unipet.data.organs)


def _study() -> Study:
    """Body at SUV 1; brain (SUV 8) at the top; liver SUV 2 +- 0.5; a lesion (SUV 10 core, 5 rim) and its halo."""
    rng = np.random.default_rng(0)
    pet = np.full(SHAPE, 1.0, np.float32)
    organs = np.full(SHAPE, LABELS["muscle"], np.uint16)
    organs[15:19, 6:18, 6:18] = LABELS["brain"]
    pet[15:19, 6:18, 6:18] = 8.0
    organs[2:10, 2:14, 2:14] = LABELS["liver"]
    pet[2:10, 2:14, 2:14] = 2.0 + rng.normal(0, 0.5, (8, 12, 12)).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    label[10:13, 16:19, 16:19] = 1
    pet[10:13, 16:19, 16:19] = 5.0
    pet[11, 17, 17] = 10.0
    pet[10:13, 15, 16:19] = 4.5  # a voxel-thick halo above 41 % of 10 next to the lesion
    pet[5, 20, 20] = 9.0  # a hot voxel far from the lesion: never in the oracle
    return Study(study_id="s1", patient_id="p1", pet=pet, ct=None, affine=make_affine(SPACING), task="lymphoma",
                 label=label, organs=organs, organ_labels=dict(LABELS))


def test_thresholds_and_organ_aware():
    s = _study()
    assert suv_threshold(s.pet, 4.0).sum() == (s.pet >= 4.0).sum()
    aware = organ_aware(s.pet, s.organs, s.organ_labels)
    assert aware[15:19].sum() == 0  # brain excluded
    assert aware[11, 17, 17] == 1 and aware[5, 20, 20] == 1  # outside the organs, SUV >= 4 stays


def test_percist_level_uses_a_liver_sphere():
    s = _study()
    level = percist_level(s.pet, s.organs, s.organ_labels, SPACING)
    liver = s.pet[s.organs == LABELS["liver"]]
    assert 1.5 * 1.8 + 2 * 0.3 < level < 1.5 * 2.2 + 2 * 0.7  # 1.5 x ~2 + 2 x ~0.5
    assert level == pytest.approx(1.5 * liver.mean() + 2 * liver.std(), rel=0.15)
    with pytest.raises(ConfigError, match="liver"):
        percist_level(s.pet, np.zeros_like(s.organs), s.organ_labels, SPACING)


def test_oracle_thresholds_each_lesion_locally():
    s = _study()
    m41 = oracle(s.pet, s.label, 0.41)
    m50 = oracle(s.pet, s.label, 0.50)
    assert m41[s.label > 0].all()  # every lesion voxel >= 4.1
    assert m41[10:13, 15, 16:19].all() and not m50[10:13, 15, 16:19].any()  # the 4.5 halo: 41 % yes, 50 % no
    assert m41[5, 20, 20] == 0 and m41[15:19].sum() == 0  # nothing far from a true lesion
    assert oracle(s.pet, np.zeros_like(s.label), 0.41).sum() == 0


def test_methods_needing_an_organ_map_say_so():
    s = _study()
    s.organs, s.organ_labels = None, None
    with pytest.raises(ConfigError, match="organ map"):
        baseline_mask("organ-aware", s)
    with pytest.raises(ConfigError, match="choose from"):
        baseline_mask("suv3", s)
    assert parse_methods("all") == list(BASELINES)
    with pytest.raises(ConfigError, match="unknown baseline"):
        parse_methods("suv4,bogus")


@pytest.fixture
def manifest(tmp_path):
    s = _study()
    affine = make_affine(SPACING)
    save_volume(s.pet, affine, tmp_path / "s1" / "SUV.nii.gz")
    save_volume(s.label, affine, tmp_path / "s1" / "SEG.nii.gz")
    save_volume(s.organs, affine, tmp_path / "s1" / "ORGANS.nii.gz")
    (tmp_path / "organs.json").write_text(json.dumps(LABELS))
    case = Case(case_id="s1", images={"PET": str(tmp_path / "s1" / "SUV.nii.gz")}, task="lymphoma",
                label=str(tmp_path / "s1" / "SEG.nii.gz"), organs=str(tmp_path / "s1" / "ORGANS.nii.gz"),
                meta={"organ_labels": LABELS})
    Manifest([case]).save(tmp_path / "m.json")
    return tmp_path / "m.json"


def test_evaluate_baselines_scores_every_method(manifest, tmp_path):
    found = evaluate_baselines(manifest, tmp_path / "base", ["suv4", "oracle41", "organ-aware", "percist"])
    assert found["skipped"] == {}
    # the brain (SUV 8) is a false positive of SUV >= 4 only
    assert found["organ-aware"]["overall"]["fpv_ml"]["mean"] < found["suv4"]["overall"]["fpv_ml"]["mean"]
    assert found["oracle41"]["overall"]["dice"]["mean"] > found["suv4"]["overall"]["dice"]["mean"]
    assert (tmp_path / "base" / "suv4" / "masks" / "s1.nii.gz").exists()
    rows = comparison_rows({m: found[m] for m in ("oracle41", "suv4")})
    assert [r["method"] for r in rows] == ["oracle41", "suv4", "oracle41", "suv4"]
    assert rows[-1]["task"] == "overall" and rows[0]["sens_ge1"] == 1.0


def test_cli_evaluate_with_baselines(manifest, tmp_path, capsys):
    from unipet.cli import main

    pred = tmp_path / "pred"
    s = _study()
    save_volume(s.label, make_affine(SPACING), pred / "s1.nii.gz")
    assert main(["evaluate", str(pred), str(manifest), "--out", str(tmp_path / "ev"), "--baselines",
                 "suv2.5,oracle50"]) == 0
    table = json.loads((tmp_path / "ev" / "baselines.json").read_text())
    methods = {r["method"] for r in table["rows"]}
    assert methods == {"prediction", "suv2.5", "oracle50"}
    assert "prediction vs baselines" in capsys.readouterr().out
    # a folder of masks has no images to threshold
    assert main(["evaluate", str(pred), str(pred), "--out", str(tmp_path / "ev2"), "--baselines", "all"]) == 2
    assert "manifest" in capsys.readouterr().err


def test_suvmax_fraction_thresholds_the_whole_image():
    s = _study()
    m41 = baseline_mask("suvmax41", s)
    # 41 % of the lesion's SUVmax (10) over the whole image: the far hot voxel and the brain are in it too
    assert (m41.astype(bool) == (s.pet >= 4.1)).all()
    assert baseline_mask("suvmax50", s)[10:13, 15, 16:19].sum() == 0  # the 4.5 halo is below 5
    assert reference_fraction(s.pet, np.zeros_like(s.label), 0.41).sum() == 0


def test_oracle_best_takes_each_lesions_best_fraction():
    s = _study()
    best = baseline_mask("oracle-best", s).astype(bool)
    lesion = s.label > 0

    def dice(m):
        return 2 * (m & lesion).sum() / (m.sum() + lesion.sum())

    # the 3x3x3 lesion at SUV 5 (core 10) with a 4.5 halo: 50 % of 10 gives the lesion exactly, 30 % / 41 % add
    # the halo, so the best is 50 %
    assert dice(best) == pytest.approx(1.0)
    assert dice(best) >= max(dice(oracle(s.pet, s.label, f).astype(bool)) for f in ORACLE_FRACTIONS)
    assert best[5, 20, 20] == 0
    # a second lesion whose best fraction is 30 %: each lesion chooses for itself
    pet, label = s.pet.copy(), s.label.copy()
    label[2:5, 16:21, 16:21] = 1
    pet[2:5, 16:21, 16:21] = 3.5
    pet[3, 18, 18] = 10.0  # 3.5 >= 30 % of 10 but < 41 %
    both = oracle(pet, label, ORACLE_FRACTIONS).astype(bool)
    assert both[2:5, 16:21, 16:21].all() and both[10:13, 16:19, 16:19].all() and not both[10:13, 15, 16:19].any()


def test_real_sarcoma_baselines_match_the_data_readme(tmp_path):
    """SUV >= 2.5 and 41 % of the lesion's SUVmax reproduce ``cases.json`` of ../shared/real_sts_fdg per case."""
    from conftest import SHARED
    from unipet.io.layouts import import_autopet

    root = SHARED / "real_sts_fdg"
    if not (root / "cases.json").exists():
        pytest.skip(f"real sarcoma cohort not found at {root} (it lives in ../shared beside the checkout)")
    table = {c["case"]: c for c in json.loads((root / "cases.json").read_text())}
    manifest = import_autopet(root)
    cases = [c for c in manifest if c.patient_id in ("STS_003", "STS_005", "STS_006")]
    Manifest(cases, manifest.task_set).save(tmp_path / "m.json")
    found = evaluate_baselines(tmp_path / "m.json", tmp_path / "b", ["suv2.5", "suvmax41", "oracle-best"])
    import pandas as pd

    for method, key in (("suv2.5", "dice_suv25"), ("suvmax41", "dice_41pct")):
        rows = pd.read_csv(tmp_path / "b" / method / "per_case.csv")
        for _, row in rows.iterrows():
            assert row["dice"] == pytest.approx(table[row["case"][:-2]][key], abs=1e-3), (method, row["case"])
    assert found["oracle-best"]["overall"]["dice"]["mean"] >= found["suvmax41"]["overall"]["dice"]["mean"]
