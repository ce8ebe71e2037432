"""SUVpeak: sphere kernel, IBSI vs PERCIST placement, image edges, and a brute-force oracle."""
from __future__ import annotations

import math

import numpy as np
import pytest

from unipet.errors import ConfigError, ImageGeometryError
from unipet.quantify.suvpeak import sphere_kernel, sphere_radius_mm, suv_peak_ibsi, suv_peak_percist, suv_peaks


def test_one_ml_sphere_radius():
    assert sphere_radius_mm(1.0) == pytest.approx(6.2035, abs=1e-4)
    assert 4 / 3 * math.pi * sphere_radius_mm(2.0) ** 3 == pytest.approx(2000.0)


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (3.0, 2.0, 2.0), (2.0, 0.9765625, 0.9765625), (4.0, 4.0, 4.0)])
def test_kernel_volume_is_one_ml_within_a_percent(spacing):
    k = sphere_kernel(spacing)
    assert k.sum() * np.prod(spacing) / 1000 == pytest.approx(1.0, rel=0.01)
    assert np.allclose(k, k[::-1, ::-1, ::-1])  # point-symmetric
    assert k.max() == 1.0 and k.min() >= 0.0
    assert all(n % 2 == 1 for n in k.shape)


def test_supersample_one_is_the_voxel_centre_rule():
    spacing = (2.0, 2.0, 2.0)
    k = sphere_kernel(spacing, supersample=1)
    assert set(np.unique(k)) <= {0.0, 1.0}
    h = k.shape[0] // 2
    z, y, x = np.mgrid[-h:h + 1, -h:h + 1, -h:h + 1] * 2.0
    assert np.array_equal(k == 1.0, z ** 2 + y ** 2 + x ** 2 <= sphere_radius_mm() ** 2)


def test_invalid_kernel_arguments():
    with pytest.raises(ImageGeometryError):
        sphere_kernel((0.0, 1.0, 1.0))
    with pytest.raises(ConfigError):
        sphere_kernel((1.0, 1.0, 1.0), volume_ml=-1)


def _ball(shape, centre, radius_vox):
    z, y, x = np.ogrid[tuple(slice(0, n) for n in shape)]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius_vox ** 2


def test_hottest_voxel_away_from_the_hottest_sphere():
    spacing = (2.0, 2.0, 2.0)
    shape = (40, 40, 40)
    suv = np.ones(shape, np.float32)
    ball = _ball(shape, (15, 20, 20), 6)  # radius 12 mm: holds the whole 1 mL sphere at its centre
    suv[ball] = 5.0
    hot = (30, 20, 32)  # an isolated hot voxel far from the ball, inside the lesion mask
    suv[hot] = 8.0
    lesion = ball.copy()
    lesion[hot] = True
    peaks = suv_peaks(suv, lesion, spacing)
    k = sphere_kernel(spacing)
    # IBSI: the sphere sits on the 8-SUV voxel in a background of 1
    assert peaks.ibsi_index == hot
    assert peaks.ibsi == pytest.approx(1.0 + 7.0 * k[k.shape[0] // 2, k.shape[1] // 2, k.shape[2] // 2] / k.sum())
    # PERCIST: the sphere moves into the ball, entirely at SUV 5
    assert peaks.percist == pytest.approx(5.0)
    assert ball[peaks.percist_index]
    assert suv_peak_ibsi(suv, lesion, spacing) == peaks.ibsi
    assert suv_peak_percist(suv, lesion, spacing) == peaks.percist


def test_percist_sphere_may_extend_beyond_the_lesion():
    spacing = (2.0, 2.0, 2.0)
    suv = np.full((20, 20, 20), 2.0, np.float32)
    lesion = np.zeros(suv.shape, bool)
    lesion[10, 10, 10] = True  # a one-voxel lesion in uniform uptake: the sphere averages its surroundings
    peaks = suv_peaks(suv, lesion, spacing)
    assert peaks.percist == pytest.approx(2.0) and peaks.ibsi == pytest.approx(2.0)


def test_ibsi_tie_takes_the_higher_peak():
    spacing = (2.0, 2.0, 2.0)
    suv = np.ones((30, 30, 30), np.float32)
    suv[8, 8, 8] = 6.0
    suv[20, 20, 20] = 6.0
    suv[19:22, 19:22, 21] = 3.0  # warmer surroundings of the second maximum
    suv[20, 20, 20] = 6.0
    lesion = np.zeros(suv.shape, bool)
    lesion[8, 8, 8] = lesion[20, 20, 20] = True
    assert suv_peaks(suv, lesion, spacing).ibsi_index == (20, 20, 20)


def test_uniform_uptake_at_the_image_edge_is_renormalised():
    suv = np.full((10, 12, 14), 3.0, np.float32)
    lesion = np.zeros(suv.shape, bool)
    lesion[0, 0, 0] = True  # the sphere is mostly outside the image
    peaks = suv_peaks(suv, lesion, (2.0, 2.0, 2.0))
    assert peaks.ibsi == pytest.approx(3.0) and peaks.percist == pytest.approx(3.0)


def test_matches_a_brute_force_sphere_mean(rng):
    spacing = (3.0, 2.0, 1.5)
    suv = rng.gamma(2.0, 1.0, size=(18, 20, 22))
    lesion = np.zeros(suv.shape, bool)
    lesion[1:6, 3:9, 15:21] = rng.random((5, 6, 6)) > 0.4  # near two image faces
    k = sphere_kernel(spacing)
    h = [n // 2 for n in k.shape]

    def mean_at(c):
        num = den = 0.0
        for dz in range(-h[0], h[0] + 1):
            for dy in range(-h[1], h[1] + 1):
                for dx in range(-h[2], h[2] + 1):
                    p = (c[0] + dz, c[1] + dy, c[2] + dx)
                    if all(0 <= q < n for q, n in zip(p, suv.shape)):
                        w = k[dz + h[0], dy + h[1], dx + h[2]]
                        num += w * suv[p]
                        den += w
        return num / den

    voxels = [tuple(v) for v in np.argwhere(lesion)]
    means = {v: mean_at(v) for v in voxels}
    hottest = max(voxels, key=lambda v: suv[v])
    peaks = suv_peaks(suv, lesion, spacing)
    assert peaks.percist == pytest.approx(max(means.values()), rel=1e-9)
    assert peaks.ibsi == pytest.approx(means[hottest], rel=1e-9)
    assert peaks.percist >= peaks.ibsi


def test_lesion_checks():
    with pytest.raises(ImageGeometryError):
        suv_peaks(np.ones((4, 4, 4)), np.ones((4, 4, 5)), (1, 1, 1))
    with pytest.raises(ValueError):
        suv_peaks(np.ones((4, 4, 4)), np.zeros((4, 4, 4)), (1, 1, 1))
