"""``unipet.io.inputs``: what an input path is, from file names alone, and a diagnosis that names the missing
image instead of calling a NIfTI study folder an empty DICOM folder."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from _synthetic import write_autopet

from unipet.errors import InputFileError
from unipet.io.inputs import resolve_input
from unipet.io.layouts import import_autopet


@pytest.fixture(scope="module")
def ap(tmp_path_factory):
    return write_autopet(tmp_path_factory.mktemp("ap") / "ap", n=3)


def test_every_layout_is_recognised(ap, tmp_path):
    study = next(ap.glob("*/*/SUV.nii.gz")).parent
    assert resolve_input(study).kind == "study"
    assert resolve_input(study.parent).kind == "patient"
    assert resolve_input(ap).kind == "autopet"
    pair = resolve_input(pet=study / "SUV.nii.gz", ct=study / "CTres.nii.gz")
    assert pair.kind == "pair" and pair.single_study and pair.ct.name == "CTres.nii.gz"
    (tmp_path / "nn").mkdir()
    (tmp_path / "nn" / "dataset.json").write_text("{}")
    assert resolve_input(tmp_path / "nn").kind == "nnunet"
    (tmp_path / "m.json").write_text(json.dumps({"cases": []}))
    assert resolve_input(tmp_path / "m.json").kind == "manifest"
    dicom = tmp_path / "dcm" / "PT"
    dicom.mkdir(parents=True)
    (dicom / "1").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    assert resolve_input(tmp_path / "dcm").kind == "dicom"


@pytest.mark.parametrize("keep, missing", [("CTres.nii.gz", "the PET is missing"), ("SUV.nii.gz", "the CT is missing")])
def test_a_study_folder_missing_one_image_names_it(ap, tmp_path, keep, missing):
    study = next(ap.glob("*/*/SUV.nii.gz")).parent
    for depth, folder in enumerate((tmp_path / "s", tmp_path / "p" / "s", tmp_path / "r" / "p" / "s")):
        folder.mkdir(parents=True)
        shutil.copy(study / keep, folder / keep)
        with pytest.raises(InputFileError, match=missing + ".*" + keep):
            resolve_input(folder.parents[depth - 1] if depth else folder)


@pytest.mark.parametrize("what, phrase", [
    ("nothing", "does not exist"), ("nifti", "single NIfTI file.*--pet"), ("txt", "not a manifest JSON"),
    ("empty", "no PET/CT study found"), ("ct-without-pet", "--ct .* without --pet"), ("both", "not both")])
def test_wrong_inputs_say_what_to_give(ap, tmp_path, what, phrase):
    study = next(ap.glob("*/*/SUV.nii.gz")).parent
    (tmp_path / "empty").mkdir()
    (tmp_path / "a.txt").write_text("x")
    args = {"nothing": dict(source=tmp_path / "nope"), "nifti": dict(source=study / "SUV.nii.gz"),
            "txt": dict(source=tmp_path / "a.txt"), "empty": dict(source=tmp_path / "empty"),
            "ct-without-pet": dict(ct=study / "CTres.nii.gz"),
            "both": dict(source=study, pet=study / "SUV.nii.gz")}[what]
    with pytest.raises(InputFileError, match=phrase):
        resolve_input(**args)


def test_import_autopet_takes_a_study_or_patient_folder_with_the_roots_metadata(ap):
    study = next(ap.glob("*/*/SUV.nii.gz")).parent
    whole = {c.case_id: c for c in import_autopet(ap)}
    one = import_autopet(study)
    assert len(one) == 1 and one.cases[0].case_id in whole
    assert one.cases[0].task == whole[one.cases[0].case_id].task  # clinical.csv of the autoPET root is used
    patient = import_autopet(study.parent)
    assert {c.case_id for c in patient} == {k for k, c in whole.items() if c.patient_id == one.cases[0].patient_id}


def test_resolving_imports_nothing_heavy(ap):
    study = next(ap.glob("*/*/SUV.nii.gz")).parent
    code = ("import sys; from unipet.io.inputs import resolve_input; resolve_input(sys.argv[1]); "
            "print(sorted(m for m in ('torch', 'monai', 'nibabel', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(study)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
