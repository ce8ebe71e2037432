"""Interactive viewer pages (NiiVue): size limit by cropping/downsampling, embedded NIfTI round trip, the
`unipet view` command, and the page rendered in headless Chromium (canvas drawn, overlay toggles change it)."""
from __future__ import annotations

import base64
import gzip
import json
import re

import nibabel as nib
import numpy as np
import pytest

from _browser import dump_dom, non_blank_fraction, screenshot
from unipet.cli import main
from unipet.io.manifest import Case, Manifest
from unipet.io.nifti import save_volume
from unipet.report.viewer import (NIIVUE_FILE, SUV_STEP, niivue_dir, niivue_version, prepare_volumes,
                                  write_viewer)
from unipet.study import make_affine, nifti_to_zyx

SHAPE = (40, 48, 48)  # z, y, x
SPACING = (4.0, 3.0, 3.0)


def phantom(seed: int = 0):
    """A body (ellipse cylinder, soft tissue + noise) in air with one hot lesion (radius 4 voxels)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    body = ((y - 24) / 14.0) ** 2 + ((x - 24) / 18.0) ** 2 <= 1.0
    body &= (z >= 3) & (z < 37)
    lesion = (z - 20) ** 2 + (y - 22) ** 2 + (x - 18) ** 2 <= 16
    ct = np.where(body, 40.0, -1000.0) + rng.normal(0, 5, SHAPE)
    pet = np.where(body, 1.2, 0.0) + np.where(lesion, 9.0, 0.0) + np.abs(rng.normal(0, 0.01, SHAPE))
    pred = np.roll(lesion, 2, axis=2)
    return pet.astype(np.float32), ct.astype(np.float32), lesion.astype(np.uint8), pred.astype(np.uint8)


def embedded_volumes(text: str) -> dict[str, nib.Nifti1Image]:
    found = re.findall(r"id='vol-(\w+)'>([A-Za-z0-9+/=]+)</script>", text)
    return {k: nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(b))) for k, b in found}


def test_vendored_niivue_has_licence_and_version():
    folder = niivue_dir()
    assert (folder / NIIVUE_FILE).stat().st_size > 1_000_000
    assert "BSD 2-Clause License" in (folder / "LICENSE").read_text()
    assert re.fullmatch(r"\d+\.\d+\.\d+", niivue_version())
    assert niivue_version() in (folder / NIIVUE_FILE).read_text(encoding="utf-8")  # the build names its version
    sums = (folder / "SHA256SUMS").read_text().split()
    import hashlib

    assert sums[0] == hashlib.sha256((folder / NIIVUE_FILE).read_bytes()).hexdigest()


def test_page_embeds_the_study_as_nifti_on_its_grid(tmp_path):
    pet, ct, ref, pred = phantom()
    affine = make_affine(SPACING, origin_xyz=(-70.0, -70.0, -80.0))
    out = write_viewer(tmp_path / "v.html", pet, ct, affine, ref=ref, pred=pred, title="pt-001", subtitle="lymphoma")
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and "pt-001" in text and f"NiiVue {niivue_version()}" in text
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=['\"]?(https?:|//)", text)  # no network
    vols = embedded_volumes(text)
    assert set(vols) == {"ct", "pet", "ref", "pred"}
    # cropped to the body (z 3..36 plus a 2-voxel margin), not downsampled: voxel centres keep their world position
    img = vols["pet"]
    assert img.get_data_dtype() == np.uint16 and img.dataobj.slope == pytest.approx(SUV_STEP)
    suv = nifti_to_zyx(img.get_fdata())
    assert suv.shape == (38, 33, 41)  # body z 3..36, y 10..38, x 6..42, each ± 2
    z0, y0, x0 = 1, 8, 4
    np.testing.assert_allclose(suv, pet[z0:z0 + 38, y0:y0 + 33, x0:x0 + 41], atol=SUV_STEP / 2 + 1e-6)
    np.testing.assert_allclose(img.affine[:3, 3], (affine @ [x0, y0, z0, 1])[:3])
    ref_back = nifti_to_zyx(np.asarray(vols["ref"].dataobj))
    assert ref_back.sum() == ref.sum() and vols["ref"].get_data_dtype() == np.uint8
    assert "full resolution" in text
    # the page opens its crosshair on the lesion (x, y, z voxel of the cropped grid)
    focus = re.search(r'"focus": \[(\d+), (\d+), (\d+)\]', text).groups()
    assert ref_back[int(focus[2]), int(focus[1]), int(focus[0])] == 1
    # ... placed by world millimetres (NiiVue's voxel indices follow its RAS reorientation, not the file's)
    mm = json.loads(re.search(r'"focusMm": (\[[^\]]+\])', text).group(1))
    np.testing.assert_allclose(mm, (img.affine @ [*map(int, focus), 1])[:3], atol=1e-3)
    assert "nv.mm2frac(cfg.focusMm)" in text and "vox2frac(cfg.focus)" not in text


def test_size_limit_downsamples_and_keeps_small_lesions(tmp_path, caplog):
    pet, ct, ref, pred = phantom()
    one = np.zeros_like(ref)
    one[20, 30, 30] = 1  # a one-voxel lesion must survive downsampling (block maximum)
    affine = make_affine(SPACING)
    vols = prepare_volumes(pet, ct, affine, ref=one, pred=pred, max_mb=0.12)
    assert max(vols.factor) > 1
    raw = sum(a.size * (2 if k == "pet" else a.dtype.itemsize) for k, a in vols.arrays().items())  # PET as uint16
    assert raw * 4 / 3 <= 0.12e6
    assert vols.ref.sum() == 1
    # the remaining voxel's centre lies within half a (new) voxel of the original lesion voxel
    z, y, x = np.argwhere(vols.ref)[0]
    world_new = vols.affine @ [x, y, z, 1]
    world_old = affine @ [30, 30, 20, 1]
    assert np.all(np.abs(world_new - world_old)[:3] <= np.asarray(vols.spacing[::-1]) / 2 + 1e-6)
    # the page as written respects the limit and says how it was reduced
    import logging

    with caplog.at_level(logging.WARNING, logger="unipet"):
        out = write_viewer(tmp_path / "small.html", pet, ct, affine, ref=one, max_mb=0.15, inline_script=False)
    assert out.stat().st_size <= 0.15e6 and "downsampled" in out.read_text()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "downsampled" in said[0] and "--max-mb" in said[0]  # said, not only on the page
    assert (tmp_path / NIIVUE_FILE).exists() and (tmp_path / "niivue-LICENSE").exists()
    assert f"src='{NIIVUE_FILE}'" in out.read_text()


@pytest.fixture()
def study_files(tmp_path):
    pet, ct, ref, pred = phantom()
    affine = make_affine(SPACING, origin_xyz=(-70.0, -70.0, -80.0))
    save_volume(pet, affine, tmp_path / "pt-7_SUV.nii.gz")
    save_volume(ct, affine, tmp_path / "pt-7_CT.nii.gz")
    save_volume(ref, affine, tmp_path / "pt-7_SEG.nii.gz")
    (tmp_path / "preds").mkdir()
    save_volume(pred, affine, tmp_path / "preds" / "pt-7.nii.gz")
    Manifest([Case(case_id="pt-7", images={"PET": str(tmp_path / "pt-7_SUV.nii.gz"),
                                           "CT": str(tmp_path / "pt-7_CT.nii.gz")},
                   label=str(tmp_path / "pt-7_SEG.nii.gz"), task="lymphoma")]).save(tmp_path / "m.json")
    return tmp_path


def test_view_command(study_files, capsys):
    out = study_files / "view.html"
    assert main(["view", f"{study_files / 'm.json'}#pt-7", "--pred", str(study_files / "preds"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "pt-7" in text and "lymphoma" in text and set(embedded_volumes(text)) == {"ct", "pet", "ref", "pred"}
    assert str(study_files) not in text  # no folder paths on the page
    assert main(["view", str(study_files / "m.json"), "--case", "pt-7", "--out", str(out)]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    # a PET file with --ct/--ref works the same; a prediction on another grid is refused in one line
    assert main(["view", str(study_files / "pt-7_SUV.nii.gz"), "--ct", str(study_files / "pt-7_CT.nii.gz"),
                 "--ref", str(study_files / "pt-7_SEG.nii.gz"), "--out", str(study_files / "b.html")]) == 0
    save_volume(np.zeros((8, 8, 8), np.uint8), make_affine(SPACING), study_files / "bad.nii.gz")
    assert main(["view", f"{study_files / 'm.json'}#pt-7", "--pred", str(study_files / "bad.nii.gz"),
                 "--out", str(study_files / "c.html")]) == 2
    err = capsys.readouterr().err
    assert "not on the PET grid" in err and "Traceback" not in err


def test_page_renders_in_chromium_and_overlays_toggle(tmp_path):
    pet, ct, ref, pred = phantom()
    affine = make_affine(SPACING, origin_xyz=(-70.0, -70.0, -80.0))
    page = write_viewer(tmp_path / "v.html", pet, ct, affine, ref=ref, pred=pred, title="pt-001")
    url = page.as_uri()
    dom, console = dump_dom(url + "?layout=multi", wait_ms=6000)
    assert '<span id="status">ready</span>' in dom, (re.findall(r'<span id="status">[^<]*', dom), console)
    assert not [line for line in console if "Uncaught" in line or "error" in line.lower()], console
    size = (1000, 700)
    shown, _ = screenshot(url + "?layout=coronal", tmp_path / "shown.png", size=size, wait_ms=6000)
    hidden, _ = screenshot(url + "?layout=coronal&hide=ref,pred", tmp_path / "hidden.png", size=size, wait_ms=6000)
    canvas = (slice(90, 640), slice(10, 700))  # the NiiVue canvas (left of the MIP panel, under the header)
    assert non_blank_fraction(shown[canvas], background=(0, 0, 0)) > 0.05  # the body is drawn
    changed = np.abs(shown[canvas].astype(int) - hidden[canvas].astype(int)).max(axis=-1) > 30
    assert changed.sum() > 30, changed.sum()  # switching the masks off changes the pixels of the lesion
    # the masks' colours are there only when shown: reference blue (0, 114, 178) blended over the image
    blue = (shown[canvas][..., 2].astype(int) - shown[canvas][..., 0].astype(int)) > 60
    blue_hidden = (hidden[canvas][..., 2].astype(int) - hidden[canvas][..., 0].astype(int)) > 60
    assert blue.sum() > 10 and blue_hidden.sum() < blue.sum() / 5


def test_pet_only_page_and_bad_input(tmp_path):
    pet, _, ref, _ = phantom()
    text = write_viewer(tmp_path / "p.html", pet, None, make_affine(SPACING), ref=ref).read_text()
    assert set(embedded_volumes(text)) == {"pet", "ref"} and "id='show-ct'" not in text
    from unipet.errors import ImageGeometryError

    with pytest.raises(ImageGeometryError, match="one grid"):
        write_viewer(tmp_path / "q.html", pet, None, make_affine(SPACING), ref=ref[:, :10])
