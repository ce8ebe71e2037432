"""``unipet.io.plausibility``: every class of implausible PET/CT is refused or warned about — and no threshold
fires on the real sarcoma crops, the phantoms or the IBSI DROs."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from unipet.errors import ImageGeometryError, IntensityError
from unipet.io import plausibility as pl
from _synthetic import body_pair

SHARED = Path(__file__).resolve().parents[3] / "shared"


def _shift(ct, vox, axis):
    out = np.full_like(ct, -1000.0)
    src, dst = [slice(None)] * 3, [slice(None)] * 3
    src[axis], dst[axis] = slice(0, ct.shape[axis] - vox), slice(vox, None)
    out[tuple(dst)] = ct[tuple(src)]
    return out


def test_a_consistent_pair_passes_silently(caplog):
    pet, ct, sp = body_pair()
    with caplog.at_level(logging.WARNING, logger="unipet"):
        pl.check_pet_is_pet(pet, "pet")
        pl.check_ct_is_hu(ct, "ct")
        pl.check_pet_ct_pair(pet, ct, sp, "pair")
    assert not caplog.records


def test_a_ct_given_as_pet_is_refused():
    _, ct, _ = body_pair()
    with pytest.raises(IntensityError, match="looks like a CT in HU"):
        pl.check_pet_is_pet(ct, "SUV.nii.gz")


def test_a_pet_far_below_suv_is_refused():
    pet, _, _ = body_pair()
    with pytest.raises(IntensityError, match="far below SUV"):
        pl.check_pet_is_pet(pet / pet.max() * 0.01, "pet")


@pytest.mark.parametrize("transform, phrase", [(lambda ct, pet: ct + 1024, "RescaleIntercept"),
                                               (lambda ct, pet: pet, "look like a PET")])
def test_a_ct_not_in_hu_is_refused(transform, phrase):
    pet, ct, _ = body_pair()
    with pytest.raises(IntensityError, match="not in Hounsfield units.*" + phrase):
        pl.check_ct_is_hu(transform(ct, pet), "ct")


@pytest.mark.parametrize("values", [(40.0, 70.0), (-120.0, -60.0), (-150.0, 1500.0)], ids=["liver", "fat", "bone"])
def test_a_tight_crop_inside_the_body_is_a_ct_in_hu(values):
    """No air in the field is not enough to refuse: soft tissue, fat or bone crops in HU pass."""
    ct = np.random.default_rng(0).uniform(*values, (20, 20, 20)).astype(np.float32)
    if values[1] > 1000:
        ct[:, :, 3:] = np.clip(ct[:, :, 3:], None, 200)  # bone in 15 % of the field at most
    pl.check_ct_is_hu(ct, "crop")


def test_a_ct_covering_half_the_pet_is_warned_about(caplog):
    pet, ct, sp = body_pair()
    half = ct.copy()
    half[: ct.shape[0] // 2] = -1024.0
    with caplog.at_level(logging.WARNING, logger="unipet"):
        pl.check_pet_ct_pair(pet, half, sp, "case x")
    assert len(caplog.records) == 1 and "the CT misses" in caplog.records[0].getMessage()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_ct_shifted_by_50_mm_is_refused(axis):
    pet, ct, sp = body_pair()
    with pytest.raises(ImageGeometryError, match="do not line up"):
        pl.check_pet_ct_pair(pet, _shift(ct, 10, axis), sp, "case x")


def test_sizes_one_slice_and_absurd_memory_are_refused_large_is_warned(caplog):
    with pytest.raises(ImageGeometryError, match="fewer than 3 voxels"):
        pl.check_shape((200, 200, 1), "PET")
    with pytest.raises(ImageGeometryError, match=r"1024x1024x800 = 839 million voxels.*GiB"):
        pl.check_shape((1024, 1024, 800), "PET", memory=16 * 2**30)
    with caplog.at_level(logging.WARNING, logger="unipet"):
        pl.check_shape((512, 512, 400), "PET", memory=1024 * 2**30)
        pl.check_shape((200, 200, 300), "PET", memory=1024 * 2**30)
    assert len(caplog.records) == 1 and "million voxels" in caplog.records[0].getMessage()


def test_check_volume_size_reads_only_the_header(tmp_path):
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((64, 64, 1), np.float32), np.eye(4))
    nib.save(img, tmp_path / "one.nii.gz")
    with pytest.raises(ImageGeometryError, match=r"shape \(64, 64, 1\)"):
        pl.check_volume_size(tmp_path / "one.nii.gz", "PET")


def _real_cases():
    root = SHARED / "real_sts_fdg"
    return sorted(p.parent for p in root.glob("*/*/SUV.nii.gz")) if root.is_dir() else []


def test_nothing_fires_on_the_real_sarcomas(caplog):
    from unipet.io.manifest import Case, load_study

    cases = _real_cases()
    if not cases:
        pytest.skip(f"real FDG PET/CT not found at {SHARED / 'real_sts_fdg'} (../shared beside the checkout)")
    assert len(cases) == 35
    with caplog.at_level(logging.WARNING, logger="unipet"):
        for d in cases:
            load_study(Case(case_id=d.name, images={"PET": str(d / "SUV.nii.gz"), "CT": str(d / "CTres.nii.gz")}),
                       with_label=False)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_real_sarcomas_shifted_by_50_mm_are_mostly_caught():
    """Crops of a limb are filled by the body, so outlines shift less visibly than a whole body: most, not all,
    50 mm shifts of the real crops are refused (or warned about: a z shift uncovers slices)."""
    from unipet.io.nifti import load_volume
    from unipet.study import spacing_from_affine

    cases = _real_cases()
    if not cases:
        pytest.skip("real FDG PET/CT not found (../shared beside the checkout)")
    caught = total = 0
    for d in cases[:12]:
        pet, affine = load_volume(d / "SUV.nii.gz")
        ct, _ = load_volume(d / "CTres.nii.gz")
        sp = spacing_from_affine(affine)
        for axis in (1, 2):
            total += 1
            try:
                pl.check_pet_ct_pair(pet, _shift(ct, int(round(50 / sp[axis])), axis), sp, d.name)
            except ImageGeometryError:
                caught += 1
    assert caught >= total // 2


def test_nothing_fires_on_phantoms(tmp_path, caplog):
    from unipet.data.phantom import write_phantom_cohort
    from unipet.io.layouts import import_autopet
    from unipet.io.manifest import load_study

    write_phantom_cohort(tmp_path / "ph", n=2, seed=5, size="small")
    with caplog.at_level(logging.WARNING, logger="unipet"):
        for case in import_autopet(tmp_path / "ph"):
            load_study(case, with_label=False)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_nothing_fires_on_the_ibsi_dros(ibsi_dir):
    from unipet.io.dicom import read_pet_suv

    folders = sorted(p for p in ibsi_dir.iterdir() if p.is_dir())
    assert folders
    for folder in folders:
        suv, _, _ = read_pet_suv(folder)
        pl.check_pet_is_pet(suv, folder.name)
        pl.check_shape(suv.shape, folder.name)


def test_an_in_memory_study_gets_the_same_checks():
    from _synthetic import tiny_study

    import unipet
    from unipet.study import Study

    good = tiny_study(0)
    pl.check_study(good)
    swapped = Study(study_id="s", pet=good.ct, ct=good.ct, affine=good.affine)
    with pytest.raises(IntensityError, match="looks like a CT"):
        unipet.segment(swapped)  # refused before the model is loaded
