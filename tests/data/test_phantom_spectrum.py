"""The phantom's wide spectrum (``unipet.data.phantom.spectrum``): each new feature, and that the default phantom
is unchanged by it (same arrays, same cohort task mix)."""
from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest

from unipet.data.organs import label_values
from unipet.data.phantom.clinical import TASKS
from unipet.data.phantom.cohort import _generate, _grid, _plan_cohort, _streams, generate_study
from unipet.data.phantom.imaging import ScanSettings, _head_neck_wide, widen_scan
from unipet.data.phantom.lesions import plan_lesions, widen_plan
from unipet.data.phantom.spectrum import SARCOMA, SPECTRA, Spectrum, get_spectrum
from unipet.errors import ConfigError, UnknownTaskError

DEFAULT = SPECTRA["default"]


def _arrays(ps):
    return (ps.study.pet, ps.study.ct, ps.study.label, ps.study.organs, ps.pet_clean)


def test_the_default_spectrum_is_the_phantom_every_cohort_had():
    a, b = generate_study(3), generate_study(3, spectrum="default")
    assert all(np.array_equal(x, y) for x, y in zip(_arrays(a), _arrays(b)))
    assert "spectrum" not in a.study.meta.extra
    # a wide study of a seed keeps the patient: subject, task, grid and anatomy (outside lesions) are the same
    w = _generate(3, None, "small", None, 0, spectrum=replace(SPECTRA["wide"], partial_fov=0.0))
    assert w.study.task == a.study.task and w.study.meta.age == a.study.meta.age and w.study.shape == a.study.shape
    body = (a.study.label == 0) & (w.study.label == 0) & ~np.isin(a.study.organs, label_values("nodes"))
    assert np.mean(a.study.organs[body] == w.study.organs[body]) > 0.99
    assert w.study.meta.extra["spectrum"] == "wide"
    with pytest.raises(ConfigError, match="spectrum"):
        get_spectrum("huge")
    assert get_spectrum("wide-body") == replace(SPECTRA["wide"], partial_fov=0.0, name="wide-body")


def test_widen_plan_bulky_mass_and_muscle_metastasis():
    rng = np.random.default_rng(0)
    plan = plan_lesions("lymphoma", np.random.default_rng(4))
    assert widen_plan(plan, 0.0, 0.0, np.random.default_rng(1)) == plan
    wide = widen_plan(plan, 1.0, 1.0, rng)
    big = max(range(len(plan)), key=lambda i: plan[i].diameter_mm)
    bulky = wide[big]
    assert 50 <= bulky.diameter_mm <= 120 and bulky.suv <= min(9, plan[big].suv) and bulky.necrotic
    assert bulky.heterogeneity > 0
    assert bulky.site == plan[big].site  # the same lesion, made bulky
    assert wide[-1].site == "muscle" and len(wide) == len(plan) + 1
    # every draw is made whatever the probabilities: the stream after it is the same
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    widen_plan(plan, 0.0, 0.0, r1)
    widen_plan(plan, 1.0, 1.0, r2)
    assert r1.random() == r2.random()


def test_bulky_heterogeneous_mass_is_large_with_a_cold_centre():
    spectrum = Spectrum(bulky=1.0, name="bulky")
    ps = _generate(12, "lung_cancer", "small", False, 0, spectrum=spectrum)
    bulky = max(ps.truth["lesions"], key=lambda les: les["volume_ml"])
    assert bulky["volume_ml"] > 30 and bulky["necrotic"]
    # modest, heterogeneous uptake: the mean far below the peak (a necrotic centre), as in the real sarcomas
    assert bulky["suv_mean"] / bulky["suv_max"] < 0.6 and bulky["suv_max"] < 12


def test_muscle_metastasis_sits_in_muscle():
    ps = _generate(12, "melanoma", "small", False, 0, spectrum=Spectrum(muscle=1.0, name="muscle"))
    (muscle,) = [les for les in ps.truth["lesions"] if les["site"] == "muscle"]
    assert muscle["organ"] == "muscle" and muscle["volume_ml"] > 0


def test_sarcoma_only_with_the_wide_spectrum_and_in_a_limb():
    with pytest.raises(UnknownTaskError, match="wide"):
        generate_study(0, task=SARCOMA)
    seen = []
    for seed in range(3):
        ps = generate_study(seed, task=SARCOMA, spectrum=Spectrum(sarcoma=True, name="sts"), negative=False)
        primary = ps.truth["lesions"][0]
        assert ps.study.task == SARCOMA and primary["site"] == "limb" and primary["primary"]
        assert primary["organ"] in ("muscle", "subcutaneous_fat") and primary["volume_ml"] > 5
        seen.append(primary["centre_xyz_mm"][2])
    # the limbs: thighs below the pelvis or the raised arms beside the head, not the trunk
    assert all(z < -800 or z > -350 for z in seen)
    # a cohort keeps the four-type mix unless the sarcoma is asked for by name
    assert {p["task"] for p in _plan_cohort(8, 0)} == set(TASKS)
    assert {p["task"] for p in _plan_cohort(4, 0, (SARCOMA,))} == {SARCOMA}


def test_plan_sarcoma_sizes_span_the_real_range():
    diameters = [plan_lesions(SARCOMA, np.random.default_rng(s))[0].diameter_mm for s in range(200)]
    assert min(diameters) < 40 and max(diameters) > 120  # MTV 17 mL to 2.3 L in the real 35


def test_widen_scan_spans_a_wider_scanner_range():
    scan = ScanSettings(suv={}, urine_kidney=10, ureter_peak=10, brown_fat_suv=0, psf_fwhm_mm=6.0,
                        noise_cov_liver=0.1, ct_noise_hu=10)
    rng = np.random.default_rng(0)
    draws = [widen_scan(scan, rng) for _ in range(200)]
    fwhm = [d.psf_fwhm_mm for d in draws]
    noise = [d.noise_cov_liver for d in draws]
    assert 4.0 <= min(fwhm) < 5.0 and 7.0 < max(fwhm) <= 9.0  # beyond the default 5-7 mm on both sides
    assert min(noise) < 0.08 and max(noise) > 0.15 and all(0.04 <= v <= 0.4 for v in noise)
    assert all(d.suv == scan.suv for d in draws)


def test_head_and_neck_uptake_tonsils_and_vocal_cords():
    from unipet.data.phantom.anatomy import build_anatomy
    from unipet.data.phantom.clinical import sample_subject

    rs = _streams(5, 0)
    subject = sample_subject(rs["subject"], "lymphoma")
    anatomy = build_anatomy(subject, _grid("small", rs["subject"]), rs["anatomy"])
    assert anatomy.regions.get("vocal_cords") and anatomy.regions.get("salivary_tonsils")
    tonsil_max, cords = [], []
    for seed in range(12):
        act = np.zeros(anatomy.grid.shape, np.float32)
        ct = np.zeros(anatomy.grid.shape, np.float32)
        _head_neck_wide(anatomy, act, ct, np.random.default_rng(seed))
        sl, m = anatomy.regions["salivary_tonsils"][0]
        tonsil_max.append(float(act[sl][m].max()))
        csl, cm = anatomy.regions["vocal_cords"][0]
        cords.append(float(act[csl][cm].max()))
    assert max(tonsil_max) > 4.5 and min(tonsil_max) >= 1.8  # above the default 4.5 at times
    assert any(c == 0 for c in cords) and any(2.0 <= c <= 6.0 for c in cords)  # a third of patients speak
    # the glottis sits in the neck, between the skull base and the thorax
    glottis_z = [anatomy.grid.world(np.array(np.nonzero(cm)).mean(1) + [s.start for s in csl])[0]]
    assert -300 < glottis_z[0] < -150


def test_partial_field_of_view_is_a_crop_around_a_lesion():
    full = _generate(12, "lymphoma", "small", False, 0, spectrum=Spectrum(head_neck=True, name="hn"))
    ps = _generate(12, "lymphoma", "small", False, 0, spectrum=Spectrum(head_neck=True, partial_fov=1.0, name="fov"))
    fov = ps.truth["field_of_view"]
    box = tuple(slice(a, b) for a, b in fov["box_zyx"])
    assert ps.study.shape == tuple(b - a for a, b in fov["box_zyx"]) and ps.study.shape < full.study.shape
    assert np.array_equal(ps.study.pet, full.study.pet[box]) and np.array_equal(ps.study.label, full.study.label[box])
    assert np.array_equal(ps.study.label, (ps.instances > 0).astype(np.uint8)) and ps.study.label.any()
    # the crop's voxel (0, 0, 0) is where the full study's box starts, in world coordinates
    from unipet.study import index_to_world_zyx

    start = index_to_world_zyx(full.study.affine) @ np.array([b.start for b in box] + [1.0])
    np.testing.assert_allclose(index_to_world_zyx(ps.study.affine) @ np.array([0, 0, 0, 1.0]), start)
    assert any(les["in_view"] for les in ps.truth["lesions"]) and ps.study.meta.extra["partial_fov"] == 1
    assert 30 <= fov["margin_mm"] <= 80


def test_cli_wide_sarcoma_cohort_and_refusal(tmp_path, capsys):
    from unipet.cli import main

    out = tmp_path / "sts"
    assert main(["phantom", str(out), "--n", "2", "--seed", "3", "--spectrum", "wide", "--tasks", SARCOMA]) == 0
    with (out / "clinical.csv").open() as fh:
        assert {r["task"] for r in csv.DictReader(fh)} == {SARCOMA}
    assert main(["phantom", str(tmp_path / "x"), "--n", "1", "--tasks", SARCOMA]) == 2
    assert "wide" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
