import json

import numpy as np
import pytest

from _synthetic import tiny_study, write_autopet
from unipet.data.cache import Cache, build_cache
from unipet.data.normalize import apply_normalisation, make_spec
from unipet.data.preprocess import PreprocessConfig, body_bbox, preprocess_study, restore_to_study_grid
from unipet.errors import ConfigError
from unipet.io.layouts import import_autopet


def _config(spacing=None):
    return PreprocessConfig(normalisation={"CT": make_spec("ct-window"), "PET": make_spec("suv-log")},
                            target_spacing=spacing)


def test_normalisation_schemes():
    ct = np.array([-2000.0, -900, 0, 900, 3000])
    np.testing.assert_allclose(apply_normalisation(ct, make_spec("ct-window")), [0, 0, 0.5, 1, 1])
    fp = {"intensity": {"CT": {"mean": 50.0, "std": 10.0, "p00_5": 0.0, "p99_5": 100.0},
                        "PET": {"mean": 2.0, "std": 1.0, "p00_5": 0.0, "p99_5": 10.0}}}
    np.testing.assert_allclose(apply_normalisation(np.array([-50.0, 60, 500]), make_spec("ct-zscore", fp)), [-5, 1, 5])
    np.testing.assert_allclose(apply_normalisation(np.array([-1.0, 3.0, 50.0]), make_spec("suv-zscore", fp)), [-2, 1, 8])
    with pytest.raises(ConfigError):
        make_spec("ct-zscore", None)
    with pytest.raises(ConfigError):
        make_spec("magic")


def test_body_crop_and_restore_identity():
    s = tiny_study(1)
    box = body_bbox(s, margin=0)
    assert box == ((1, 11), (2, 14), (3, 17))
    pre = preprocess_study(s, _config())
    assert pre.image.shape == (2, 12 - 0, 16, 18)[:1] + tuple(b - a for a, b in pre.crop)
    back = restore_to_study_grid(pre.label, pre)
    np.testing.assert_array_equal(back, s.label)


def test_resampled_preprocessing_restores_lesion():
    s = tiny_study(2)
    pre = preprocess_study(s, _config(spacing=(1.5, 1.0, 1.0)))
    assert pre.spacing == pytest.approx((1.5, 1.0, 1.0))
    assert pre.label.sum() == pytest.approx(27 * 8, rel=0.2)
    back = restore_to_study_grid(pre.label, pre)
    dice = 2 * (back & s.label).sum() / (back.sum() + s.label.sum())
    assert dice > 0.9
    # physical position of the lesion centre is preserved
    from unipet.study import index_to_world_zyx
    c_new = index_to_world_zyx(pre.affine) @ np.r_[np.argwhere(pre.label).mean(0), 1]
    c_old = index_to_world_zyx(s.affine) @ np.r_[np.argwhere(s.label).mean(0), 1]
    np.testing.assert_allclose(c_new[:3], c_old[:3], atol=0.6)


def test_cache_build_resume_and_lesion_index(tmp_path):
    m = import_autopet(write_autopet(tmp_path / "ap", n=3))
    cache = build_cache(m, tmp_path / "cache")
    assert len(cache) == 3 and cache.config.channels == ("CT", "PET")
    fp = json.loads((tmp_path / "cache" / "fingerprint.json").read_text())
    assert fp["n_cases"] >= 1 and fp["intensity"]["PET"]["p99_5"] > 1
    c = cache.load(m.cases[0].case_id)
    assert isinstance(c.image, np.memmap) and c.image.dtype == np.float32 and c.image.shape[0] == 2
    assert len(c.lesions) == 1 and c.lesions[0]["voxels"] == 27
    z0, z1 = c.lesions[0]["bbox"][0]
    assert z1 - z0 == 3
    assert cache.load(m.cases[2].case_id).lesions == []  # lesion-free case
    # resume: finished cases are skipped (mtime unchanged), a half-written temp folder is ignored
    img = tmp_path / "cache" / m.cases[0].case_id / "image.npy"
    before = img.stat().st_mtime_ns
    (tmp_path / "cache" / f".{m.cases[1].case_id}.crashed").mkdir()
    build_cache(m, tmp_path / "cache")
    assert img.stat().st_mtime_ns == before
    with pytest.raises(ConfigError, match="other settings"):
        build_cache(m, tmp_path / "cache", ct_norm="ct-window")
    assert Cache(tmp_path / "cache").split("train") + Cache(tmp_path / "cache").split("val") + \
        Cache(tmp_path / "cache").split("test") != []


def test_cache_preprocessed_like_a_checkpoint_keeps_its_settings(tmp_path):
    """``preprocess=`` (``unipet preprocess --like RUN``): new data cached exactly as a checkpoint was trained."""
    m = import_autopet(write_autopet(tmp_path / "ap", n=2))
    given = PreprocessConfig(channels=("PET", "CT"), target_spacing=(4.0, 3.0, 3.0), crop_to_body=False,
                             normalisation={"CT": {"scheme": "ct-zscore", "lo": -500.0, "hi": 500.0, "mean": 10.0,
                                                   "std": 100.0},
                                            "PET": {"scheme": "suv-zscore", "clip": 12.0, "mean": 1.5, "std": 2.0}})
    cache = build_cache(m, tmp_path / "cache", preprocess=given)
    assert cache.config == given  # nothing planned from this data's fingerprint
    case = cache.load(m.cases[0].case_id, mmap=False)
    study_ct = import_autopet(tmp_path / "ap").cases[0]
    assert case.image.shape[0] == 2 and case.info["task"] == study_ct.task
    planned = build_cache(m, tmp_path / "planned")
    assert planned.config.normalisation != given.normalisation
