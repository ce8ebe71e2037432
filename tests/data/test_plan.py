"""Spacing planning (nnU-Net's rule) and spacing-aware prediction: any voxel size in, the input's grid out."""
from __future__ import annotations

import numpy as np
import pytest

from unipet.data.plan import plan_from_fingerprint, plan_target_spacing
from unipet.errors import ConfigError
from unipet.study import Study, resample_to_grid, spacing_from_affine


def test_isotropic_data_plan_the_median_spacing():
    spacings = [(3.0, 2.0, 2.0), (3.0, 2.0, 2.0), (2.0, 1.5, 1.5), (4.0, 2.5, 2.5), (3.0, 2.0, 2.0)]
    shapes = [(300, 200, 200)] * 5
    assert plan_target_spacing(spacings, shapes) == (3.0, 2.0, 2.0)


def test_anisotropic_data_take_the_tenth_percentile_of_the_coarse_axis():
    # thick slices (z) with few slices: the coarse axis gets its 10th percentile, not the median
    spacings = [(5.0, 0.7, 0.7)] * 8 + [(3.0, 0.7, 0.7), (2.5, 0.7, 0.7)]
    shapes = [(40, 512, 512)] * 10
    planned = plan_target_spacing(spacings, shapes)
    assert planned[1:] == (0.7, 0.7)
    assert planned[0] == pytest.approx(np.percentile([s[0] for s in spacings], 10))
    # many thin slices: anisotropic spacing but not anisotropic in voxels -> the median stays
    assert plan_target_spacing(spacings, [(400, 512, 512)] * 10)[0] == 5.0


def test_the_coarse_axis_is_never_planned_finer_than_the_others():
    spacings = [(4.0, 1.0, 1.0)] * 6 + [(0.6, 1.0, 1.0)] * 4
    planned = plan_target_spacing(spacings, [(30, 400, 400)] * 10)
    assert planned[0] == pytest.approx(1.0 + 1e-5)


def test_bad_fingerprints_are_refused_with_a_way_out():
    with pytest.raises(ConfigError, match="--spacing"):
        plan_target_spacing([], [])
    with pytest.raises(ConfigError, match="zero"):
        plan_target_spacing([(0.0, 1.0, 1.0)], [(10, 10, 10)])
    with pytest.raises(ConfigError, match="rebuild"):
        plan_from_fingerprint({})
    # an old fingerprint without per-case values plans its median
    assert plan_from_fingerprint({"spacing": {"median": [5, 4, 4]}}) == (5.0, 4.0, 4.0)


def test_build_cache_plans_and_records_the_spacing(tmp_path):
    from _synthetic import write_autopet
    from unipet.data.cache import build_cache
    from unipet.io.layouts import import_autopet

    manifest = import_autopet(write_autopet(tmp_path / "ap", n=3))
    cache = build_cache(manifest, tmp_path / "cache")
    assert cache.config.target_spacing == (3.0, 2.0, 2.0)  # the tiny studies' spacing
    assert len(cache.meta["fingerprint"]["cases_spacing"]) >= 1
    native = build_cache(manifest, tmp_path / "native", target_spacing=None)
    assert native.config.target_spacing is None


# ------------------------------------------------------------------ prediction at any spacing
def _resampled(study: Study, factors_zyx, label: bool = True) -> Study:
    """The same field of view stored at ``spacing / factor`` (each voxel repeated ``factor`` times per axis, i.e.
    the finer grid of ``resampled_grid`` sampled by nearest neighbour, edges included)."""
    from unipet.data.preprocess import resampled_grid

    spacing = tuple(s / f for s, f in zip(study.spacing, factors_zyx))
    shape, affine = resampled_grid(study.shape, study.affine, spacing)

    def go(v):
        for axis, f in enumerate(factors_zyx):
            v = np.repeat(v, f, axis=axis)
        assert v.shape == shape
        return v
    return Study(study_id=study.study_id, patient_id=study.patient_id, pet=go(study.pet), ct=go(study.ct),
                 affine=affine, task=study.task, label=go(study.label) if label and study.label is not None else None)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


@pytest.fixture(scope="module")
def shipped():
    from unipet.checkpoint import default_checkpoint
    from unipet.infer.predictor import Predictor

    return Predictor.from_checkpoint(default_checkpoint(), device="cpu")


@pytest.fixture(scope="module")
def study():
    from unipet.data.phantom import generate_study

    return generate_study(3, task="lymphoma", size="small", negative=False).study


@pytest.mark.slow
def test_a_study_upsampled_twice_gives_nearly_the_same_mask(shipped, study):
    assert shipped.config.target_spacing is not None  # the checkpoint's spacing drives prediction
    base = shipped.predict_study(study, task="lymphoma").mask
    assert base.sum() > 50  # the check below means something only if lesions are found
    fine = _resampled(study, (2, 2, 2))
    pred = shipped.predict_study(fine, task="lymphoma")
    # exact grid round trip: the mask is on the input's grid
    assert pred.mask.shape == fine.shape
    # compare on the original grid
    back = resample_to_grid(pred.mask, fine.affine, study.shape, study.affine, order=0, fill=0)
    assert _dice(back, base) >= 0.9


@pytest.mark.slow
def test_anisotropic_input_returns_on_its_own_grid(shipped, study):
    aniso = _resampled(study, (1, 2, 3), label=False)
    assert spacing_from_affine(aniso.affine)[2] == pytest.approx(study.spacing[2] / 3)
    pred = shipped.predict_study(aniso, task="lymphoma")
    assert pred.mask.shape == aniso.shape and pred.mask.dtype == np.uint8
    base = shipped.predict_study(study, task="lymphoma").mask
    back = resample_to_grid(pred.mask, aniso.affine, study.shape, study.affine, order=0, fill=0)
    assert _dice(back, base) >= 0.9
