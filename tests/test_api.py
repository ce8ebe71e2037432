"""``unipet.segment``: the main job in one call, with the shipped checkpoint by default; ``unipet predict`` with the
checkpoint as an option (and its older positional form)."""
from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from _synthetic import tiny_study, write_autopet

import unipet
from unipet.checkpoint import checkpoint_id, default_checkpoint
from unipet.cli import main
from unipet.errors import ConfigError, UnknownTaskError
from unipet.infer.predictor import Predictor, lesion_table_csv
from unipet.study import nifti_to_zyx


@pytest.fixture(scope="module")
def shipped():
    return Predictor.from_checkpoint(default_checkpoint(), device="cpu")


def test_import_unipet_stays_light():
    """``unipet.segment`` is served lazily: importing the package does not import torch."""
    code = "import sys, unipet; assert callable(unipet.segment); print('torch' in sys.modules)"
    light = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "False"


def test_segment_a_study_with_the_shipped_checkpoint_equals_the_predictor(shipped):
    study = tiny_study(0, shape=(24, 32, 40))
    mask, lesions = unipet.segment(study, task="lymphoma", device="cpu")
    expected = shipped.predict_study(study, task="lymphoma")
    assert isinstance(mask, nib.Nifti1Image) and mask.get_data_dtype() == np.uint8
    np.testing.assert_allclose(mask.affine, study.affine)
    np.testing.assert_array_equal(nifti_to_zyx(np.asarray(mask.dataobj)), expected.mask)
    assert mask.header["descrip"].tobytes().decode().rstrip("\x00").endswith(checkpoint_id(default_checkpoint()))
    assert list(lesions.columns) == ["id", "voxels", "volume_ml", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]
    assert lesions.to_csv(index=False, float_format="%.4f").splitlines()[0] == lesion_table_csv(expected.lesions).splitlines()[0]
    assert len(lesions) == len(expected.lesions)
    assert lesions["voxels"].sum() == int((expected.mask > 0).sum())
    assert lesions.attrs["task"] == "lymphoma" and lesions.attrs["study_id"] == study.study_id


def test_segment_a_folder_and_its_errors(tmp_path, shipped):
    one = write_autopet(tmp_path / "one", n=1)
    mask, lesions = unipet.segment(one, checkpoint=default_checkpoint(), device="cpu")
    study = tiny_study(0)
    assert mask.shape == study.shape[::-1]  # nibabel's (x, y, z) of the study's own grid
    np.testing.assert_array_equal(nifti_to_zyx(np.asarray(mask.dataobj)),
                                  shipped.predict_study(study, task="lymphoma").mask)
    with pytest.raises(ConfigError, match="holds 2 studies"):
        unipet.segment(write_autopet(tmp_path / "two", n=2), device="cpu")
    with pytest.raises(UnknownTaskError):
        unipet.segment(one, task="glioma", device="cpu")


def test_predict_takes_the_checkpoint_as_an_option_and_keeps_the_positional_form(tmp_path):
    data = write_autopet(tmp_path / "data", n=1)
    assert main(["predict", str(data), str(tmp_path / "new"), "--device", "cpu"]) == 0  # the shipped checkpoint
    assert main(["predict", str(default_checkpoint()), str(data), str(tmp_path / "old"), "--device", "cpu"]) == 0
    assert main(["predict", str(data), str(tmp_path / "opt"), "-c", str(default_checkpoint()), "--device", "cpu"]) == 0
    masks = [np.asarray(nib.load(tmp_path / d / "pat000_case000.nii.gz").dataobj) for d in ("new", "old", "opt")]
    assert all(np.array_equal(masks[0], m) for m in masks[1:])
    assert main(["predict", str(data), "--device", "cpu"]) == 2  # one path is not enough


def test_segment_takes_one_study_folder_a_patient_folder_or_a_pair_and_reports_the_task(tmp_path, shipped, caplog):
    """The README's example on the demo's layout: ``unipet.segment("<cohort>/<patient>/<study>")``."""
    import logging

    root = write_autopet(tmp_path / "ap", n=2)
    study_dir = root / "pat000" / "case000"
    expected = shipped.predict_study(tiny_study(0), task="lymphoma").mask
    by_folder = unipet.segment(study_dir, device="cpu")
    mask, lesions = by_folder  # unpacks as before
    np.testing.assert_array_equal(nifti_to_zyx(np.asarray(mask.dataobj)), expected)
    assert (by_folder.task, by_folder.task_source, by_folder.task_probability) == ("lymphoma", "study", None)
    assert by_folder[1] is lesions and len(by_folder) == 2 and lesions.attrs["task_source"] == "study"
    pair = unipet.segment(pet=study_dir / "SUV.nii.gz", ct=study_dir / "CTres.nii.gz", task="lymphoma", device="cpu")
    np.testing.assert_array_equal(nifti_to_zyx(np.asarray(pair.mask.dataobj)), expected)
    assert pair.task_source == "given" and pair.study_id == "case000"
    with caplog.at_level(logging.WARNING, logger="unipet"):
        auto = unipet.segment(study_dir, task="auto", device="cpu")
    assert auto.task_source == "auto" and auto.task in shipped.task_set.names
    assert set(auto.task_probabilities) == set(shipped.task_set.names)
    assert auto.task_probabilities[auto.task] == pytest.approx(auto.task_probability, abs=1e-4)
    unsure = [r.getMessage() for r in caplog.records if "unsure" in r.getMessage()]
    assert auto.task_uncertain == bool(unsure)
    if unsure:
        assert len(unsure) == 1 and "task=" in unsure[0]
    with pytest.raises(ConfigError, match="holds 2 studies.*one study folder"):
        unipet.segment(root / "pat000", device="cpu")


def test_segment_reports_what_is_missing_before_loading_the_model(tmp_path):
    import shutil

    from unipet.errors import InputFileError

    root = write_autopet(tmp_path / "ap", n=1)
    (tmp_path / "ctonly").mkdir()
    shutil.copy(root / "pat000" / "case000" / "CTres.nii.gz", tmp_path / "ctonly")
    with pytest.raises(InputFileError, match="the PET is missing"):
        unipet.segment(tmp_path / "ctonly")
    with pytest.raises(UnknownTaskError, match="did you mean 'lymphoma'"):
        unipet.segment(root, task="lymphona")
