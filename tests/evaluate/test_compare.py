"""``unipet compare``: paired per-study tests of two methods (t-test, Wilcoxon, bootstrap CI of the difference)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from unipet.cli import main
from unipet.errors import ConfigError, InputFileError
from unipet.evaluate.compare import compare, compare_tables, paired_test
from unipet.io.nifti import save_volume
from unipet.study import make_affine

SHAPE = (12, 16, 16)
AFFINE = make_affine((2.0, 2.0, 2.0))
N = 8


def _box(z0, z1, y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros(SHAPE, np.uint8)
    m[z0:z1, y0:y1, x0:x1] = 1
    return m


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """N studies; B predicts each lesion exactly, A misses a growing slab of it (A is worse on every study)."""
    root = tmp_path_factory.mktemp("cmp")
    for name in ("gt", "a", "b"):
        (root / name).mkdir()
    for i in range(N):
        ref = _box(2, 10, 3, 11, 3, 11)
        a = ref.copy()
        a[2:3 + i % 4, :, :] = 0  # 1..4 slices missing
        save_volume(ref, AFFINE, root / "gt" / f"case{i}.nii.gz")
        save_volume(ref, AFFINE, root / "b" / f"case{i}.nii.gz")
        save_volume(a, AFFINE, root / "a" / f"case{i}.nii.gz")
    save_volume(_box(2, 10, 3, 11, 3, 11), AFFINE, root / "a" / "extra.nii.gz")  # only A predicted it
    save_volume(_box(2, 10, 3, 11, 3, 11), AFFINE, root / "gt" / "extra.nii.gz")
    return root


def test_paired_test_equals_scipy_and_handles_edges():
    rng = np.random.default_rng(0)
    a = rng.normal(0.6, 0.1, 30)
    b = a + rng.normal(0.05, 0.05, 30)
    b[3] = np.nan  # an undefined value drops its pair
    r = paired_test(a, b, n_boot=500)
    keep = ~np.isnan(b)
    assert r["n"] == 29 and r["diff"] == pytest.approx(np.mean(b[keep] - a[keep]))
    assert r["t_p"] == pytest.approx(stats.ttest_rel(b[keep], a[keep]).pvalue)
    assert r["wilcoxon_p"] == pytest.approx(stats.wilcoxon(b[keep] - a[keep]).pvalue)
    assert r["diff_lo"] < r["diff"] < r["diff_hi"]
    same = paired_test(a, a)
    assert same["diff"] == 0 and same["t_p"] == 1.0 and same["wilcoxon_p"] == 1.0
    one = paired_test([0.5], [0.7])
    assert one["n"] == 1 and math.isnan(one["t_p"]) and math.isnan(one["wilcoxon_p"])
    with pytest.raises(ConfigError):
        paired_test([1, 2], [1])


def test_compare_folders_finds_the_better_method(folders, tmp_path):
    out = tmp_path / "out"
    result = compare(folders / "a", folders / "b", folders / "gt", out, metrics=("dice", "recall"))
    comp = result["comparison"].set_index(["group", "metric"])
    dice = comp.loc[("overall", "dice")]
    paired = result["paired"]
    assert dice["n"] == N and dice["mean_b"] == pytest.approx(1.0) and dice["diff"] > 0.05
    # every study improves: the exact two-sided signed-rank p is 2 / 2^N
    assert dice["wilcoxon_p"] == pytest.approx(2 / 2 ** N)
    assert dice["t_p"] == pytest.approx(stats.ttest_rel(paired["dice_b"], paired["dice_a"]).pvalue)
    assert dice["diff_lo"] > 0  # the 95 % interval of the difference excludes 0
    assert comp.loc[("overall", "recall"), "diff"] > 0  # B misses less of each lesion
    assert result["only_a"] == ["extra"] and result["only_b"] == []
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "paired.csv", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_paired"] == N and summary["results"]["overall"]["dice"]["wilcoxon_p"] == pytest.approx(2 / 2 ** N)


def test_compare_cli_and_errors(folders, tmp_path, capsys):
    args = ["compare", str(folders / "a"), str(folders / "b"), str(folders / "gt"), "--out", str(tmp_path / "c"),
            "--metric", "dice", "--n-boot", "200"]
    assert main(args) == 0
    assert "Wilcoxon" in capsys.readouterr().out
    assert main(args) == 2  # refuses to overwrite
    assert main([*args[:4], "--out", str(tmp_path / "d"), "--metric", "volume"]) == 2
    assert main(["compare", str(folders / "a"), str(folders / "a"), str(folders / "gt"), "--out",
                 str(tmp_path / "e")]) == 2
    with pytest.raises(InputFileError, match="share no"):
        compare_tables(pd.DataFrame({"case": ["x"], "dice": [1.0]}), pd.DataFrame({"case": ["y"], "dice": [1.0]}),
                       metrics=("dice",))
