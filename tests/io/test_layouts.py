import json

import numpy as np
import pytest

from _synthetic import tiny_study, write_autopet
from unipet.errors import ConfigError, ImageGeometryError, InputFileError, IntensityError, LabelError, UnknownTaskError
from unipet.io.layouts import export_nnunet, import_autopet, import_nnunet
from unipet.io.manifest import Case, Manifest, assign_splits, load_study
from unipet.io.nifti import save_volume
from unipet.study import make_affine


def test_autopet_import_tasks_from_csv_and_round_trip(tmp_path):
    root = write_autopet(tmp_path / "ap", n=4)
    m = import_autopet(root)
    assert len(m) == 4
    assert [c.task for c in m] == ["lymphoma", "lung_cancer", "lymphoma", "lung_cancer"]
    assert m.cases[0].meta["age"] == 50 and m.cases[0].meta["extra"]["time"] == 10
    p = m.save(tmp_path / "m.json")
    raw = json.loads(p.read_text())
    assert not raw["cases"][0]["images"]["PET"].startswith("/")  # relative to the manifest
    m2 = Manifest.load(p)
    s = load_study(m2.cases[0], m2.task_set)
    ref = tiny_study(0)
    np.testing.assert_allclose(s.pet, ref.pet)
    np.testing.assert_allclose(s.affine, ref.affine)
    assert s.label.sum() == 27


def test_autopet_metadata_csv_autopet_columns(tmp_path):
    root = write_autopet(tmp_path / "ap", n=2)
    (root / "clinical.csv").unlink()
    csv = tmp_path / "Clinical Metadata FDG PET_CT Lesions.csv"
    csv.write_text('Subject ID,Study UID,diagnosis,age,sex,File Location\n'
                   'pat000,1.2.3,MELANOMA,061Y,M,./FDG-PET-CT-Lesions/pat000/case000\n'
                   'pat000,1.2.4,NEGATIVE,061Y,M,./FDG-PET-CT-Lesions/pat000/case001\n')
    m = import_autopet(root, metadata_csv=csv, negative_task="breast_cancer")
    assert [c.task for c in m] == ["melanoma", "breast_cancer"]
    assert m.cases[0].meta == {"age": 61.0, "sex": "M"}


def test_autopet_bqml_conversion(tmp_path):
    s = tiny_study(0)
    d = tmp_path / "ap" / "p0" / "s0"
    dose, weight, delay = 300e6, 70.0, 3600.0
    decayed = dose * 2 ** (-delay / 6586.2)
    save_volume(s.pet * decayed / (weight * 1000), s.affine, d / "PET.nii.gz")
    coarse = make_affine((6.0, 4.0, 4.0), origin_xyz=(-19.0, -15.0, 101.5))
    from unipet.study import resample_to_grid
    save_volume(resample_to_grid(s.ct, s.affine, (6, 8, 10), coarse), coarse, d / "CT.nii.gz")
    with pytest.raises(ConfigError, match="--dose-bq"):
        import_autopet(tmp_path / "ap", converted_dir=tmp_path / "conv")
    m = import_autopet(tmp_path / "ap", converted_dir=tmp_path / "conv", dose_bq=dose, weight_kg=weight, delay_s=delay)
    st = load_study(m.cases[0])
    np.testing.assert_allclose(st.pet, s.pet, rtol=1e-4, atol=1e-5)
    assert st.ct.shape == s.shape  # CT resampled onto the PET grid
    assert (tmp_path / "ap" / "p0" / "s0").exists() and not (tmp_path / "ap" / "p0" / "s0" / "SUV.nii.gz").exists()


def test_nnunet_channel_order_is_read_not_assumed(tmp_path):
    root = write_autopet(tmp_path / "ap", n=3)
    m = import_autopet(root)
    out = export_nnunet(m, tmp_path / "Dataset900_x", channels=("PET", "CT"))
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "PET", "1": "CT"}
    m2 = import_nnunet(out, task="lymphoma")
    case = next(c for c in m2 if c.case_id == m.cases[0].case_id)
    assert case.images["PET"].endswith("_0000.nii.gz") and case.images["CT"].endswith("_0001.nii.gz")
    s = load_study(case)
    np.testing.assert_allclose(s.pet, tiny_study(0).pet)
    # the opposite order (autoPET III) reads the same study
    out2 = export_nnunet(m, tmp_path / "Dataset901_y", channels=("CT", "PET"))
    s2 = load_study(next(c for c in import_nnunet(out2) if c.case_id == case.case_id))
    np.testing.assert_allclose(s2.pet, s.pet)
    np.testing.assert_allclose(s2.ct, s.ct)


def test_nnunet_bad_dataset_json(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {}}))
    with pytest.raises(ConfigError, match="channel_names"):
        import_nnunet(tmp_path)
    with pytest.raises(InputFileError):
        import_nnunet(tmp_path / "missing")


def test_splits_are_by_patient_and_reproducible():
    cases = [Case(case_id=f"c{i}", patient_id=f"p{i // 2}", images={}) for i in range(40)]
    assign_splits(cases, seed=3)
    by_patient = {}
    for c in cases:
        by_patient.setdefault(c.patient_id, set()).add(c.split)
    assert all(len(s) == 1 for s in by_patient.values())
    first = [c.split for c in cases]
    assign_splits(cases, seed=3)
    assert [c.split for c in cases] == first
    assign_splits(cases, seed=4)
    assert [c.split for c in cases] != first
    assert {c.split for c in cases} == {"train", "val", "test"}


def test_unknown_task_in_manifest(tmp_path):
    with pytest.raises(UnknownTaskError, match="glioma"):
        Manifest([Case(case_id="a", images={}, task="glioma")])
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"version": 1, "cases": [{"case_id": "a", "images": {}, "task": "glioma"}]}))
    with pytest.raises(UnknownTaskError):
        Manifest.load(p)


def _write_case(tmp_path, **over):
    s = tiny_study(0)
    d = tmp_path / "c"
    pet, ct, lab = over.get("pet", s.pet), over.get("ct", s.ct), over.get("label", s.label)
    save_volume(pet, s.affine, d / "SUV.nii.gz", overwrite=True)
    save_volume(ct, over.get("ct_affine", s.affine), d / "CT.nii.gz", overwrite=True)
    save_volume(lab, over.get("label_affine", s.affine), d / "SEG.nii.gz", overwrite=True)
    return Case(case_id="c", images={"PET": str(d / "SUV.nii.gz"), "CT": str(d / "CT.nii.gz")}, label=str(d / "SEG.nii.gz"))


def test_bad_input_grids_and_values(tmp_path, caplog):
    s = tiny_study(0)
    far = make_affine((3, 2, 2), origin_xyz=(5000, 0, 0))
    with pytest.raises(ImageGeometryError, match="do not overlap"):
        load_study(_write_case(tmp_path, ct_affine=far))
    with pytest.raises(ImageGeometryError, match="label grid"):
        load_study(_write_case(tmp_path, label=np.zeros((12, 16, 21), np.uint8)))
    with pytest.raises(LabelError, match="binary"):
        load_study(_write_case(tmp_path, label=(s.label * 3).astype(np.uint8)))
    with pytest.raises(IntensityError, match="not SUV"):
        load_study(_write_case(tmp_path, pet=s.pet * 5000.0))
    nan_pet = s.pet.copy()
    nan_pet[0, 0, :4] = np.nan
    with caplog.at_level("WARNING", logger="unipet"):
        st = load_study(_write_case(tmp_path, pet=nan_pet))
    assert st.pet[0, 0, 0] == 0 and "4 NaN" in caplog.text
