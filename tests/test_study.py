import numpy as np
import pytest

from unipet.errors import ImageGeometryError, IntensityError, LabelError
from unipet.study import (Study, grids_overlap, index_to_world_zyx, make_affine, resample_to_grid, same_grid,
                          spacing_from_affine)


def test_affine_conventions_zyx():
    aff = make_affine((3.0, 2.0, 1.5), origin_xyz=(10, 20, 30))
    assert spacing_from_affine(aff) == (3.0, 2.0, 1.5)
    # voxel (z=1, y=2, x=3) sits at x = 10 + 3*1.5, y = 20 + 2*2, z = 30 + 1*3
    world = index_to_world_zyx(aff) @ np.array([1, 2, 3, 1.0])
    np.testing.assert_allclose(world[:3], [14.5, 24.0, 33.0])


def test_resample_identity_and_physical_shift():
    vol = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    aff = make_affine((2, 2, 2))
    np.testing.assert_allclose(resample_to_grid(vol, aff, vol.shape, aff), vol)
    # destination grid shifted by one voxel along x in world space -> values shift by one index
    shifted = make_affine((2, 2, 2), origin_xyz=(2, 0, 0))
    out = resample_to_grid(vol, aff, (4, 5, 5), shifted, order=0)
    np.testing.assert_array_equal(out, vol[:, :, 1:])


def test_resample_labels_keep_dtype():
    lab = np.zeros((6, 6, 6), np.uint8)
    lab[2:4, 2:4, 2:4] = 1
    out = resample_to_grid(lab, make_affine((1, 1, 1)), (3, 3, 3), make_affine((2, 2, 2), (0.5, 0.5, 0.5)), order=0)
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1}


def test_grid_overlap():
    a = make_affine((2, 2, 2))
    b = make_affine((2, 2, 2), origin_xyz=(1000, 0, 0))
    assert grids_overlap((10, 10, 10), a, (10, 10, 10), a)
    assert not grids_overlap((10, 10, 10), a, (10, 10, 10), b)
    assert same_grid((10, 10, 10), a, (10, 10, 10), a) and not same_grid((10, 10, 10), a, (10, 10, 10), b)


def test_study_validation_errors():
    aff = make_affine((1, 1, 1))
    pet = np.ones((4, 4, 4), np.float32)
    with pytest.raises(ImageGeometryError, match="3-D"):
        Study("s", pet=np.ones((4, 4)), ct=None, affine=aff)
    with pytest.raises(ImageGeometryError, match="grid"):
        Study("s", pet=pet, ct=np.ones((4, 4, 5)), affine=aff)
    bad = pet.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(IntensityError, match="NaN"):
        Study("s", pet=bad, ct=None, affine=aff)
    with pytest.raises(LabelError, match="binary"):
        Study("s", pet=pet, ct=None, affine=aff, label=np.full((4, 4, 4), 2, np.uint8))


def test_study_image_channels_and_volume():
    aff = make_affine((2, 2, 2.5))
    s = Study("s", pet=np.ones((2, 3, 4)), ct=np.zeros((2, 3, 4)), affine=aff)
    img = s.image(("PET", "CT"))
    assert img.shape == (2, 2, 3, 4) and img[0].max() == 1 and img[1].max() == 0
    assert s.voxel_volume_ml == pytest.approx(0.01)
    assert s.patient_id == "s"
