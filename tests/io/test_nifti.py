import gzip

import nibabel as nib
import numpy as np
import pytest

from unipet.errors import ImageGeometryError, InputFileError, IntensityError, OutputExistsError
from unipet.io.nifti import load_volume, replace_non_finite, save_volume
from unipet.study import index_to_world_zyx, make_affine


def test_round_trip_in_physical_space(tmp_path):
    vol = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    aff = make_affine((3, 2, 1.5), (5, -3, 12))
    p = save_volume(vol, aff, tmp_path / "v.nii.gz")
    back, back_aff = load_volume(p)
    np.testing.assert_array_equal(back, vol)
    np.testing.assert_allclose(back_aff, aff)
    # nibabel's own view: data[x, y, z] and the affine maps (x, y, z) -> world identically
    img = nib.load(str(p))
    assert img.shape == (7, 6, 5)
    np.testing.assert_allclose(img.affine @ [3, 2, 1, 1], index_to_world_zyx(aff) @ [1, 2, 3, 1])


def test_refuses_overwrite(tmp_path):
    p = save_volume(np.zeros((2, 2, 2)), np.eye(4), tmp_path / "v.nii.gz")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        save_volume(np.ones((2, 2, 2)), np.eye(4), p)
    assert load_volume(p)[0].max() == 0  # untouched
    save_volume(np.ones((2, 2, 2)), np.eye(4), p, overwrite=True)
    assert load_volume(p)[0].max() == 1
    assert [f.name for f in tmp_path.iterdir()] == ["v.nii.gz"]  # no temporary left behind


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        load_volume(tmp_path / "nope.nii.gz")
    p = save_volume(np.zeros((8, 8, 8)), np.eye(4), tmp_path / "v.nii.gz")
    raw = p.read_bytes()
    (tmp_path / "trunc.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputFileError, match="corrupt or truncated"):
        load_volume(tmp_path / "trunc.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not a nifti header at all"))
    with pytest.raises(InputFileError):
        load_volume(tmp_path / "junk.nii.gz")


def test_dimensionality(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.float32), np.eye(4)), str(tmp_path / "2d.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), str(tmp_path / "4d.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 1), np.float32), np.eye(4)), str(tmp_path / "4d1.nii.gz"))
    with pytest.raises(ImageGeometryError, match="2-D"):
        load_volume(tmp_path / "2d.nii.gz")
    with pytest.raises(ImageGeometryError, match="4-D"):
        load_volume(tmp_path / "4d.nii.gz")
    assert load_volume(tmp_path / "4d1.nii.gz")[0].shape == (4, 4, 4)


def test_non_finite_rule():
    v = np.ones((2, 2, 2), np.float32)
    v[0, 0, 0], v[1, 1, 1] = np.nan, -np.inf
    clean, n = replace_non_finite(v, "CT")
    assert n == 2 and clean[0, 0, 0] == -1024 and clean[1, 1, 1] == -1024 and np.isnan(v[0, 0, 0])
    v[0, 1, 0] = np.inf
    with pytest.raises(IntensityError, match=r"\+Inf"):
        replace_non_finite(v, "PET")
