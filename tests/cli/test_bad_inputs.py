"""The bad-input table: every command given something wrong answers with one line naming the problem and the fix,
exits 2, and changes no file that existed before.

Each row: an id, the command (built from the workspace), the expected exit code and a phrase of the message.
The workspace (a tiny autoPET-layout dataset, its manifest and cache, a tiny checkpoint, broken variants of each)
is built once per module; after every command, every file that existed before is compared byte for byte.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from _synthetic import body_pair, tiny_study, write_autopet
from unipet.cli import main
from unipet.data.preprocess import PreprocessConfig
from unipet.io.nifti import save_volume
from unipet.models import create
from unipet import checkpoint as ckpt

NORM = {"CT": {"scheme": "ct-window", "level": 0.0, "width": 1800.0}, "PET": {"scheme": "suv-clip", "clip": 20.0}}


def _write_checkpoint(run: Path, seed: int = 0) -> Path:
    import torch

    torch.manual_seed(seed)
    model = create("nnunet", in_channels=2, num_classes=2, tasks=["lymphoma", "lung_cancer"], patch_size=(16, 16, 16),
                   base_channels=2, max_channels=4, max_stages=3)
    meta = {"model": model.config, "preprocess": PreprocessConfig(normalisation=NORM).to_dict(),
            "patch_size": [16, 16, 16], "output_activation": "softmax", "iteration": 1}
    return ckpt.save_checkpoint(run, model, meta)


def _manifest(path: Path, cases) -> Path:
    path.write_text(json.dumps({"version": 1, "cases": cases}))
    return path


def _case(cid: str, study_dir: Path, **over) -> dict:
    d = {"case_id": cid, "task": "lymphoma", "images": {"PET": str(study_dir / "SUV.nii.gz"),
                                                        "CT": str(study_dir / "CTres.nii.gz")},
         "label": str(study_dir / "SEG.nii.gz")}
    d.update(over)
    return d


def _nifti_raw(path: Path, data_zyx: np.ndarray, affine: np.ndarray | None, codes: int = 1) -> Path:
    img = nib.Nifti1Image(np.ascontiguousarray(data_zyx.transpose(2, 1, 0)), None)
    img.set_qform(None, code=0)
    img.set_sform(affine, code=codes if affine is not None else 0)
    nib.save(img, str(path))
    return path


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    """The workspace: every input the table refers to, by name."""
    root = tmp_path_factory.mktemp("bad")
    w: dict[str, Path] = {"root": root}
    ap = write_autopet(root / "ap", n=2)
    w["ap"] = ap
    studies = sorted(p.parent for p in ap.glob("*/*/SUV.nii.gz"))
    good = studies[0]
    w["good"] = good
    assert main(["import", "autopet", str(ap), "--out", str(root / "m.json")]) == 0
    w["manifest"] = root / "m.json"
    w["run"] = root / "run"
    _write_checkpoint(w["run"])
    w["run_b"] = root / "run_b"
    _write_checkpoint(w["run_b"], seed=1)
    assert main(["predict", str(w["run"]), str(w["manifest"]), str(root / "preds")]) == 0
    w["preds"] = root / "preds"
    # broken manifests
    w["m_dict"] = root / "m_dict.json"
    w["m_dict"].write_text(json.dumps({"version": 1, "cases": {"a": {}}}))
    w["m_ints"] = _manifest(root / "m_ints.json", [1, 2])
    w["m_pet5"] = _manifest(root / "m_pet5.json", [{"case_id": "a", "images": {"PET": 5}}])
    w["m_escape"] = _manifest(root / "m_escape.json", [_case("../escape", good)])
    w["m_slash"] = _manifest(root / "m_slash.json", [_case("a/b", good)])
    w["m_task"] = _manifest(root / "m_task.json", [_case("a", good, task="glioma")])
    w["m_notjson"] = root / "m_notjson.json"
    w["m_notjson"].write_text("{not json")
    w["m_images_list"] = _manifest(root / "m_images_list.json", [{"case_id": "a", "images": ["x.nii.gz"]}])
    w["m_split_int"] = _manifest(root / "m_split_int.json", [_case("a", good, split=3)])
    # broken images
    s = tiny_study(7)
    bad = root / "badimg"
    bad.mkdir()
    seg256 = s.label.astype(np.uint16) * 256
    save_volume(seg256, s.affine, bad / "SEG256.nii.gz")
    save_volume(np.zeros_like(s.pet), s.affine, bad / "ZERO.nii.gz")
    nan_pet = s.pet.copy()
    nan_pet[s.label > 0] = np.nan
    save_volume(nan_pet, s.affine, bad / "NANLESION.nii.gz")
    _nifti_raw(bad / "NOFORM.nii.gz", s.pet, None)
    zero_vox = s.affine.copy()
    zero_vox[:3, 0] = 0.0
    _nifti_raw(bad / "ZEROVOX.nii.gz", s.pet, zero_vox)
    save_volume(s.pet * 5000.0, s.affine, bad / "BQML.nii.gz")
    (bad / "TRUNC.nii.gz").write_bytes((good / "SUV.nii.gz").read_bytes()[:200])
    save_volume(s.label[:, :, :-2].copy(), s.affine, bad / "SEGSMALL.nii.gz")
    save_volume((s.label * 2).astype(np.uint8), s.affine, bad / "SEG2.nii.gz")
    save_volume(s.pet, s.affine, bad / "SUV.nii.gz")
    save_volume(s.ct, s.affine, bad / "CTres.nii.gz")
    save_volume(s.label, s.affine, bad / "SEG.nii.gz")
    w["bad"] = bad

    def one(name: str, **over) -> Path:
        return _manifest(root / f"m_{name}.json", [_case(name, bad, **over)])

    w["m_seg256"] = one("seg256", label=str(bad / "SEG256.nii.gz"))
    w["m_zero"] = one("zero", images={"PET": str(bad / "ZERO.nii.gz"), "CT": str(bad / "CTres.nii.gz")})
    w["m_nanlesion"] = one("nanlesion", images={"PET": str(bad / "NANLESION.nii.gz"), "CT": str(bad / "CTres.nii.gz")})
    w["m_noform"] = one("noform", images={"PET": str(bad / "NOFORM.nii.gz")}, label=None)
    w["m_zerovox"] = one("zerovox", images={"PET": str(bad / "ZEROVOX.nii.gz")}, label=None)
    w["m_bqml"] = one("bqml", images={"PET": str(bad / "BQML.nii.gz"), "CT": str(bad / "CTres.nii.gz")})
    w["m_trunc"] = one("trunc", images={"PET": str(bad / "TRUNC.nii.gz"), "CT": str(bad / "CTres.nii.gz")})
    w["m_segsmall"] = one("segsmall", label=str(bad / "SEGSMALL.nii.gz"))
    w["m_missing"] = one("missing", images={"PET": str(bad / "NOPE.nii.gz")})
    w["m_two_bad"] = _manifest(root / "m_two_bad.json", [
        _case("okcase", bad), _case("zeropet", bad, images={"PET": str(bad / "ZERO.nii.gz"), "CT": str(bad / "CTres.nii.gz")}),
        _case("bigseg", bad, label=str(bad / "SEG256.nii.gz"))])
    # broken checkpoints
    for name in ("ck_flip", "ck_header", "ck_name", "ck_kwargs"):
        shutil.copytree(w["run"], root / name)
        w[name] = root / name
    weights = w["ck_flip"] / "checkpoint" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2:len(data) // 2 + 16] = b"\x00\x11" * 8
    weights.write_bytes(bytes(data))
    header = w["ck_header"] / "checkpoint" / "model.safetensors"
    meta_h = json.loads((w["ck_header"] / "checkpoint" / "meta.json").read_text())
    meta_h.pop(ckpt.CHECKSUM_KEY)
    (w["ck_header"] / "checkpoint" / "meta.json").write_text(json.dumps(meta_h))
    header.write_bytes(b"\xff" * 8 + header.read_bytes()[8:])
    for name, edit in (("ck_name", lambda m: m["model"].update(name="nnunet-typo")),
                       ("ck_kwargs", lambda m: m["model"]["kwargs"].update(base_channels=3))):
        mp = w[name] / "checkpoint" / "meta.json"
        meta = json.loads(mp.read_text())
        edit(meta)
        mp.write_text(json.dumps(meta))
    # --- issue 26: one study folder missing an image, implausible PET/CT, survival, import collisions
    for name, keep in (("ctonly", "CTres.nii.gz"), ("petonly", "SUV.nii.gz")):
        w[name] = root / name
        w[name].mkdir()
        shutil.copy(good / keep, w[name] / keep)
    pet, ct, spacing = body_pair()
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    shift = affine.copy()
    shift[0, 3] = 50.0  # the CT's header says 50 mm further left
    for name, pet_v, ct_v, ct_affine in (
            ("ct_as_pet", ct, ct, affine), ("ct_no_offset", pet, ct + 1024.0, affine),
            ("pet_tiny", pet * 0.001, ct, affine), ("ct_shifted", pet, ct, shift),
            ("one_slice", pet[:, :, 20:21].copy(), ct[:, :, 20:21].copy(), affine)):
        d = root / "implausible" / name / f"{name}_0"
        save_volume(pet_v, affine, d / "SUV.nii.gz")
        save_volume(ct_v, ct_affine, d / "CTres.nii.gz")
        w[name] = d
    rows = ["case,os,dead,mtv"] + [f"c{i},0,{i % 2},{i + 1}" for i in range(30)]
    w["surv_zero"] = root / "surv_zero.csv"
    w["surv_zero"].write_text("\n".join(rows) + "\n")
    for folder in ("Müller", "Möller"):
        d = root / "umlaut" / folder / "study1"
        shutil.copytree(good, d)
    w["umlaut"] = root / "umlaut"
    w["empty_dir"] = root / "empty"
    w["empty_dir"].mkdir()
    w["a_file"] = root / "a_file.txt"
    w["a_file"].write_text("x")
    w["ro_dir"] = root / "ro"
    w["ro_dir"].mkdir()
    os.chmod(w["ro_dir"], 0o555)
    w["recipe0"] = root / "recipe0.json"
    w["recipe0"].write_text(json.dumps({"base": "nnunet", "checkpoint_every": 0}))
    # a cache for train commands
    assert main(["preprocess", str(w["manifest"]), "--out", str(root / "cache"), "--ct-norm", "ct-window"]) == 0
    w["cache"] = root / "cache"
    # quantify inputs
    w["suv"], w["seg"] = good / "SUV.nii.gz", good / "SEG.nii.gz"
    # DICOM: one study whose PT series is duplicated (both attenuation-corrected)
    w["dicom2"] = _two_pet_series(root / "dicom2", s, corrected=("ATTN", "DECY"))
    yield w
    os.chmod(w["ro_dir"], 0o755)


def _two_pet_series(folder: Path, study, corrected) -> Path:
    """A DICOM study with a second PET series (new series/instance UIDs, CorrectedImage ``corrected``)."""
    import pydicom
    from pydicom.uid import generate_uid

    from unipet.io.dicom_write import write_dicom_study

    study.meta.weight_kg = 70.0
    write_dicom_study(study, folder)
    uid = generate_uid()
    (folder / "PT2").mkdir()
    for f in sorted((folder / "PT").iterdir()):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription = "PET second"
        ds.CorrectedImage = list(corrected)
        ds.save_as(folder / "PT2" / f.name)
    return folder


def _args(ws, *parts):
    """Arguments with ``{name}`` replaced by the workspace path of that name."""
    out = []
    for p in parts:
        out.append(p.format(**{k: str(v) for k, v in ws.items()}) if isinstance(p, str) else str(p))
    return out


# id, command, expected exit code, phrase of the message (regular expression, case-insensitive)
TABLE = [
    # --- manifests and preprocessing
    ("manifest-cases-dict", ["preprocess", "{m_dict}", "--out", "{root}/c1"], 2, "no 'cases' list"),
    ("manifest-cases-ints", ["preprocess", "{m_ints}", "--out", "{root}/c1"], 2, "case 0 is int"),
    ("manifest-pet-int", ["preprocess", "{m_pet5}", "--out", "{root}/c1"], 2, r"images map PET and CT"),
    ("manifest-images-list", ["preprocess", "{m_images_list}", "--out", "{root}/c1"], 2, "needs an 'images' mapping"),
    ("manifest-split-int", ["preprocess", "{m_split_int}", "--out", "{root}/c1"], 2, "split 3; it must be a string"),
    ("manifest-escape-id", ["preprocess", "{m_escape}", "--out", "{root}/c1"], 2, "not a safe file name"),
    ("manifest-slash-id", ["preprocess", "{m_slash}", "--out", "{root}/c1"], 2, "not a safe file name"),
    ("manifest-unknown-task", ["preprocess", "{m_task}", "--out", "{root}/c1"], 2, "unknown task 'glioma'"),
    ("manifest-not-json", ["preprocess", "{m_notjson}", "--out", "{root}/c1"], 2, "not valid JSON"),
    ("manifest-missing", ["preprocess", "{root}/nope.json", "--out", "{root}/c1"], 2, "does not exist"),
    ("label-256", ["preprocess", "{m_seg256}", "--out", "{root}/c1"], 2, "value 256, more than uint8"),
    ("pet-all-zero", ["preprocess", "{m_zero}", "--out", "{root}/c1"], 2, "no voxel above 0 SUV"),
    ("pet-nan-in-lesion", ["preprocess", "{m_nanlesion}", "--out", "{root}/c1"], 2, "NaN/Inf voxels inside the lesion"),
    ("nifti-no-sform-qform", ["preprocess", "{m_noform}", "--out", "{root}/c1"], 2, "neither an sform nor a qform"),
    ("nifti-zero-voxel", ["preprocess", "{m_zerovox}", "--out", "{root}/c1"], 2, "voxel size|impossible affine"),
    ("pet-in-bqml", ["preprocess", "{m_bqml}", "--out", "{root}/c1"], 2, "looks like activity concentration"),
    ("nifti-truncated", ["preprocess", "{m_trunc}", "--out", "{root}/c1"], 2, "cannot be read as NIfTI"),
    ("label-other-grid", ["preprocess", "{m_segsmall}", "--out", "{root}/c1"], 2, "differs from the image grid"),
    ("image-missing", ["preprocess", "{m_missing}", "--out", "{root}/c1"], 2, "does not exist"),
    ("preprocess-all-bad-cases", ["preprocess", "{m_two_bad}", "--out", "{root}/c1"], 2,
     "2 of 3 cases.*zeropet.*bigseg"),
    ("preprocess-out-is-file", ["preprocess", "{manifest}", "--out", "{a_file}"], 2, "a file stands where|is a file"),
    ("preprocess-spacing-zero", ["preprocess", "{manifest}", "--out", "{root}/c1", "--spacing", "0", "2", "2"], 2,
     "--spacing must be three positive"),
    ("preprocess-channels", ["preprocess", "{manifest}", "--out", "{root}/c1", "--channels", "CT,MRI"], 2,
     "--channels must list CT and/or PET"),
    # --- import
    ("import-missing-folder", ["import", "autopet", "{root}/nope", "--out", "{root}/x.json"], 2, "does not exist"),
    ("import-out-is-folder", ["import", "autopet", "{ap}", "--out", "{empty_dir}", "--overwrite"], 2, "is a folder"),
    ("import-out-exists", ["import", "autopet", "{ap}", "--out", "{manifest}"], 2, "--overwrite"),
    ("import-nnunet-no-dataset", ["import", "nnunet", "{empty_dir}", "--out", "{root}/x.json"], 2, "dataset.json"),
    ("import-dicom-nothing", ["import", "dicom", "{empty_dir}", "--out", "{root}/x.json"], 2, "no DICOM image"),
    ("import-dicom-two-pet", ["import", "dicom", "{dicom2}", "--out", "{root}/x.json"], 2, "2 PET series.*--series"),
    ("suv-two-pet", ["suv", "{dicom2}", "{root}/x.nii.gz"], 2, "2 PET series"),
    # --- predict
    ("predict-no-checkpoint", ["predict", "{empty_dir}", "{manifest}", "{root}/p1"], 2, "holds no unipet checkpoint"),
    ("predict-damaged-weights", ["predict", "{ck_flip}", "{manifest}", "{root}/p1"], 2, "damaged.*SHA-256"),
    ("predict-damaged-header", ["predict", "{ck_header}", "{manifest}", "{root}/p1"], 2, "cannot be read as safetensors"),
    ("predict-edited-name", ["predict", "{ck_name}", "{manifest}", "{root}/p1"], 2, "unknown model 'nnunet-typo'"),
    ("predict-edited-kwargs", ["predict", "{ck_kwargs}", "{manifest}", "{root}/p1"], 2, "does not fit"),
    ("predict-tta-axes", ["predict", "{run}", "{manifest}", "{root}/p1", "--tta", "--tta-axes", "x"], 2, "TTA axes"),
    ("predict-device", ["predict", "{run}", "{manifest}", "{root}/p1", "--device", "tpu"], 2, "unknown device 'tpu'"),
    ("predict-tile-batch", ["predict", "{run}", "{manifest}", "{root}/p1", "--tile-batch", "0"], 2, "tile batch"),
    ("predict-overlap", ["predict", "{run}", "{manifest}", "{root}/p1", "--overlap", "1.5"], 2, "overlap must be"),
    ("predict-out-is-file", ["predict", "{run}", "{manifest}", "{a_file}"], 2, "is a file, not a folder"),
    ("predict-other-checkpoint", ["predict", "{run_b}", "{manifest}", "{preds}"], 2,
     "predicted by another checkpoint.*--overwrite"),
    ("predict-unknown-task", ["predict", "{run}", "{manifest}", "{root}/p1", "--task", "glioma"], 2, "unknown task"),
    ("predict-escape-id", ["predict", "{run}", "{m_escape}", "{root}/p1"], 2, "not a safe file name"),
    ("predict-input-missing", ["predict", "{run}", "{root}/nope", "{root}/p1"], 2, "does not exist"),
    ("predict-input-not-json", ["predict", "{run}", "{a_file}", "{root}/p1"], 2, "not a manifest JSON"),
    # --- issue 26: inputs that name the real cause, implausible values and geometry, degenerate survival
    ("predict-ct-only-folder", ["predict", "{run}", "{ctonly}", "{root}/p1"], 2, "the PET is missing.*CTres"),
    ("predict-pet-only-folder", ["predict", "{run}", "{petonly}", "{root}/p1"], 2, "the CT is missing.*SUV"),
    ("predict-one-nifti", ["predict", "{run}", "{suv}", "{root}/p1"], 2, "single NIfTI file.*--pet"),
    ("predict-task-typo", ["predict", "{run}", "{good}", "{root}/p1", "--task", "lymphona"], 2,
     "did you mean 'lymphoma'"),
    ("predict-pair-missing-ct", ["predict", "-c", "{run}", "--pet", "{suv}", "--ct", "{root}/no.nii.gz", "{root}/p1"],
     2, "CT file .* does not exist"),
    ("predict-ct-as-pet", ["predict", "{run}", "{ct_as_pet}", "{root}/p_ct_as_pet"], 2, "looks like a CT in HU"),
    ("predict-ct-without-offset", ["predict", "{run}", "{ct_no_offset}", "{root}/p_ct_no_offset"], 2,
     "not in Hounsfield units.*RescaleIntercept"),
    ("predict-pet-far-below-suv", ["predict", "{run}", "{pet_tiny}", "{root}/p_pet_tiny"], 2, "far below SUV"),
    ("predict-ct-header-shifted", ["predict", "{run}", "{ct_shifted}", "{root}/p_ct_shifted"], 2, "do not line up"),
    ("predict-one-slice", ["predict", "{run}", "{one_slice}", "{root}/p_one_slice"], 2, "fewer than 3 voxels"),
    ("quantify-survival-all-times-zero", ["survival", "{surv_zero}", "--time", "os", "--event", "dead", "--markers",
                                          "mtv", "--out", "{root}/s1"], 2, "every follow-up time"),
    ("import-umlaut-collision", ["import", "autopet", "{umlaut}", "--out", "{root}/x.json"], 2,
     "M_ller_study1.*Müller.*Möller|M_ller_study1.*Möller.*Müller"),
    # --- train
    ("train-checkpoint-every-0", ["train", "{cache}", "--model", "nnunet", "--out", "{root}/r1", "--checkpoint-every", "0"],
     2, "--checkpoint-every must be >= 1"),
    ("train-recipe-checkpoint-every-0", ["train", "{cache}", "--model", "nnunet", "--out", "{root}/r1", "--recipe",
                                         "{recipe0}"], 2, "--checkpoint-every must be >= 1"),
    ("train-model-kw-bogus", ["train", "{cache}", "--model", "nnunet", "--out", "{root}/r1", "--model-kw", "bogus=1"],
     2, "takes no option bogus"),
    ("train-model-kw-no-value", ["train", "{cache}", "--model", "nnunet", "--out", "{root}/r1", "--model-kw", "bogus"],
     2, "is not key=value"),
    ("train-device", ["train", "{cache}", "--model", "nnunet", "--out", "{root}/r1", "--device", "tpu"], 2,
     "unknown device"),
    ("train-iterations-0", ["train", "{cache}", "--model", "nnunet", "--out", "{root}/r1", "--iterations", "0"], 2,
     "--iterations must be >= 1"),
    ("train-unknown-model", ["train", "{cache}", "--model", "nonet", "--out", "{root}/r1"], 2, "unknown model"),
    ("train-not-a-cache", ["train", "{empty_dir}", "--model", "nnunet", "--out", "{root}/r1"], 2,
     "neither a unipet cache"),
    ("train-resume-nothing", ["train", "{cache}", "--model", "nnunet", "--out", "{root}/r_none", "--resume"], 2,
     "holds no unipet checkpoint"),
    ("train-existing-run", ["train", "{cache}", "--model", "nnunet", "--out", "{run}", "--patch", "16", "16", "16"], 2,
     "already holds a checkpoint"),
    ("train-patch-33", ["train", "{cache}", "--model", "nnunet", "--out", "{root}/r2", "--patch", "33", "33", "33",
                        "--model-kw", "base_channels=2", "--model-kw", "max_channels=4", "--workers", "0",
                        "--no-progress"], 2, "divisible by 4"),
    # --- quantify
    ("quantify-nan-in-lesion", ["quantify", "{bad}/NANLESION.nii.gz", "{bad}/SEG.nii.gz", "--out", "{root}/q1"], 2,
     "inside the lesion mask"),
    ("quantify-all-zero", ["quantify", "{bad}/ZERO.nii.gz", "{bad}/SEG.nii.gz", "--out", "{root}/q1"], 2,
     "no voxel above 0"),
    ("quantify-mask-not-binary", ["quantify", "{bad}/SUV.nii.gz", "{bad}/SEG2.nii.gz", "--out", "{root}/q1"], 2,
     "must be binary"),
    ("quantify-no-sform", ["quantify", "{bad}/NOFORM.nii.gz", "{bad}/SEG.nii.gz", "--out", "{root}/q1"], 2,
     "neither an sform nor a qform"),
]


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in root.rglob("*"):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_the_table_is_large_enough():
    assert len(TABLE) >= 40 and len({row[0] for row in TABLE}) == len(TABLE)


@pytest.mark.parametrize("name, command, code, phrase", TABLE, ids=[row[0] for row in TABLE])
def test_bad_input(ws, capsys, name, command, code, phrase):
    import re

    before = _snapshot(ws["root"])
    capsys.readouterr()
    assert main(_args(ws, *command)) == code
    captured = capsys.readouterr()
    lines = [l for l in captured.err.splitlines() if l.strip()]
    assert lines, f"no message for {name}"
    assert lines[-1].startswith("unipet: error:"), captured.err
    assert re.search(phrase, lines[-1], flags=re.IGNORECASE), lines[-1]
    assert "Traceback" not in captured.err
    after = _snapshot(ws["root"])
    changed = [k for k, v in before.items() if after.get(k) != v]
    assert not changed, f"{name} changed or removed {changed}"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(ws, capsys):
    assert main(_args(ws, "predict", "{run}", "{manifest}", "{ro_dir}/p")) == 2
    err = capsys.readouterr().err
    assert "unipet: error:" in err and ("not writable" in err or "permission denied" in err.lower())


def test_read_only_output_folder_patched(ws, capsys, monkeypatch):
    """The same refusal where the tests run as root (who may write anywhere): the access check is patched."""
    from unipet import fileio

    real = os.access
    ro = str(ws["ro_dir"])
    monkeypatch.setattr(fileio.os, "access", lambda path, mode, **kw: False if str(path).startswith(ro) and mode & os.W_OK
                        else real(path, mode, **kw))
    before = _snapshot(ws["root"])
    assert main(_args(ws, "predict", "{run}", "{manifest}", "{ro_dir}")) == 2
    err = capsys.readouterr().err
    assert err.strip().startswith("unipet: error:") and "is not writable" in err
    assert _snapshot(ws["root"]) == before


# The fail-fast contract (issues 26 and 28): a missing path, a wrong layout or an unknown task is reported before the
# model stack (torch, MONAI) is imported — well under 1.5 s — and no output folder is left behind.
FAST = [
    ("predict", "{root}/no/such/path", "{out}"),
    ("predict", "{ctonly}", "{out}"),
    ("predict", "{suv}", "{out}"),
    ("predict", "{good}", "{out}", "--task", "lymphona"),
    ("predict", "-c", "{run}", "{good}", "{out}", "--task", "glioma"),
    ("predict", "-c", "{empty_dir}", "{good}", "{out}"),
    ("preprocess", "{root}/nope.json", "--out", "{out}"),
    ("train", "{root}/nope", "--model", "nnunet", "--out", "{out}"),
    ("quantify", "{root}/nope.nii.gz", "{seg}", "--out", "{out}"),
    ("evaluate", "{root}/nope", "{manifest}", "--out", "{out}"),
    ("import", "autopet", "{root}/nope", "--out", "{out}/m.json"),
    ("survival", "{root}/nope.csv", "--time", "t", "--event", "e", "--markers", "m", "--out", "{out}"),
    ("report", "--manifest", "{root}/nope.json", "--out", "{out}/r.html"),
]


@pytest.mark.parametrize("command", FAST, ids=[" ".join(c[:2]) + f"-{i}" for i, c in enumerate(FAST)])
def test_input_errors_come_before_the_heavy_imports_and_leave_no_output_folder(ws, tmp_path, command):
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    args = [a.format(out=out, **{k: str(v) for k, v in ws.items()}) for a in command]
    code = ("import sys; from unipet.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, sorted(m for m in ('torch', 'monai') if m in sys.modules))")
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    assert run.stdout.strip().splitlines()[-1] == "2 []", (run.stdout, run.stderr)
    assert run.stderr.strip().startswith("unipet: error:") and "Traceback" not in run.stderr
    assert not out.exists()
    assert seconds < 6.0  # generous for a loaded 2-core CI machine; about 0.4 s unloaded (benchmarks/RESULTS.md)
