"""Survival analysis: equivalence with lifelines on GBSG2, C-index sign, derivation/validation cut-offs, CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.datasets import load_gbsg2
from lifelines.statistics import logrank_test
from lifelines.utils import concordance_index

from unipet.cli import main
from unipet.errors import ConfigError
from unipet.quantify.survival import (
    c_index,
    check_survival_table,
    cox_hazard_ratio,
    derive_cutoffs,
    logrank,
    split_derivation_validation,
)
from unipet.report.survival import compare_sources, kaplan_meier_plot, run_survival


@pytest.fixture(scope="module")
def gbsg2() -> pd.DataFrame:
    return load_gbsg2()


def synthetic_cohort(n: int = 160, seed: int = 0, beta: float = 0.8) -> pd.DataFrame:
    """Exponential survival with hazard 0.002·exp(beta·log(mtv)), uniform censoring; mtv log-normal."""
    rng = np.random.default_rng(seed)
    mtv = np.exp(rng.normal(2.0, 1.0, n))
    suv = rng.gamma(4.0, 2.0, n)  # unrelated to the outcome
    t_event = rng.exponential(1.0 / (0.002 * np.exp(beta * np.log(mtv))))
    t_cens = rng.uniform(50, 1500, n)
    return pd.DataFrame({"case": [f"c{i:03d}" for i in range(n)], "mtv": mtv, "suvmax": suv,
                         "os": np.minimum(t_event, t_cens).round(1), "dead": (t_event <= t_cens).astype(int)})


def direct_cox(x: np.ndarray, df: pd.DataFrame) -> pd.Series:
    data = pd.DataFrame({"x": x, "time": df["time"], "cens": df["cens"]})
    return CoxPHFitter().fit(data, "time", "cens").summary.loc["x"]


# ---------------------------------------------------------------------------------------------- GBSG2
def test_gbsg2_matches_direct_lifelines(gbsg2):
    assert len(gbsg2) == 686 and gbsg2["cens"].sum() == 299
    # continuous, raw and log1p
    for log, x in ((False, gbsg2["pnodes"].to_numpy(float)), (True, np.log1p(gbsg2["pnodes"].to_numpy(float)))):
        ours = cox_hazard_ratio(gbsg2, "pnodes", "time", "cens", log=log)
        ref = direct_cox(x, gbsg2)
        assert ours["hr"] == pytest.approx(ref["exp(coef)"], rel=1e-10)
        assert ours["lo"] == pytest.approx(ref["exp(coef) lower 95%"], rel=1e-10)
        assert ours["hi"] == pytest.approx(ref["exp(coef) upper 95%"], rel=1e-10)
        assert ours["p"] == pytest.approx(ref["p"], rel=1e-8)
        assert ours["n"] == 686 and ours["events"] == 299
    # more positive nodes = worse prognosis (known for this trial)
    assert cox_hazard_ratio(gbsg2, "pnodes", "time", "cens")["hr"] > 1.03
    # dichotomised at the median tumour size
    cut = float(np.median(gbsg2["tsize"]))
    assert derive_cutoffs(gbsg2, ["tsize"]) == {"tsize": cut}
    high = (gbsg2["tsize"] > cut).astype(int).to_numpy()
    ours = cox_hazard_ratio(gbsg2, "tsize", "time", "cens", dichotomise_at=cut)
    ref = direct_cox(high, gbsg2)
    assert (ours["hr"], ours["lo"], ours["hi"]) == pytest.approx(
        (ref["exp(coef)"], ref["exp(coef) lower 95%"], ref["exp(coef) upper 95%"]), rel=1e-10)
    assert ours["p"] == pytest.approx(ref["p"], rel=1e-8)
    # log-rank
    h = high.astype(bool)
    lr = logrank_test(gbsg2["time"][h], gbsg2["time"][~h], gbsg2["cens"][h], gbsg2["cens"][~h])
    assert logrank(gbsg2, "tsize", "time", "cens", cut)["p"] == pytest.approx(lr.p_value, rel=1e-10)
    assert lr.p_value < 0.05
    # C-index
    ci = c_index(gbsg2, "pnodes", "time", "cens", n_boot=100, seed=0)
    assert ci["value"] == pytest.approx(concordance_index(gbsg2["time"], -gbsg2["pnodes"], gbsg2["cens"]), rel=1e-12)
    assert 0.6 < ci["value"] < 0.7


# ---------------------------------------------------------------------------------------------- C-index sign
def test_c_index_sign_convention_against_lifelines_and_sksurv():
    sksurv_metrics = pytest.importorskip("sksurv.metrics")
    rng = np.random.default_rng(3)
    n = 120
    risk = rng.normal(size=n)
    time = rng.exponential(np.exp(-1.5 * risk)) * 100  # higher risk -> shorter survival
    event = rng.random(n) < 0.7
    df = pd.DataFrame({"risk": risk, "t": time, "e": event.astype(int)})
    ours = c_index(df, "risk", "t", "e", n_boot=0)["value"]
    sk = sksurv_metrics.concordance_index_censored(event, time, risk)[0]  # expects higher = higher risk
    ll_wrong_sign = concordance_index(time, risk, event)  # lifelines expects higher = longer survival
    assert ours == pytest.approx(sk, abs=1e-12)
    assert ours == pytest.approx(concordance_index(time, -risk, event), abs=1e-12)
    assert ours == pytest.approx(1.0 - ll_wrong_sign, abs=1e-12)  # no ties in risk
    assert ours > 0.7
    # perfectly ordered risk: C = 1 in our convention
    perfect = pd.DataFrame({"risk": -np.arange(20.0), "t": np.arange(1.0, 21.0), "e": np.ones(20, int)})
    assert c_index(perfect, "risk", "t", "e", n_boot=0)["value"] == 1.0


def test_c_index_bootstrap_interval_is_seeded():
    df = synthetic_cohort(120, seed=1)
    a = c_index(df, "mtv", "os", "dead", n_boot=200, seed=7)
    b = c_index(df, "mtv", "os", "dead", n_boot=200, seed=7)
    c = c_index(df, "mtv", "os", "dead", n_boot=200, seed=8)
    assert a == b and (a["lo"], a["hi"]) != (c["lo"], c["hi"])
    assert a["lo"] < a["value"] < a["hi"] and a["hi"] - a["lo"] < 0.3
    assert a["n_boot_used"] == 200


# ---------------------------------------------------------------------------------------------- split / cut-offs
def test_split_is_reproducible_disjoint_and_stratified():
    df = synthetic_cohort(200, seed=2)
    d1, v1 = split_derivation_validation(df, 0.4, seed=5, stratify="dead")
    d2, v2 = split_derivation_validation(df, 0.4, seed=5, stratify="dead")
    d3, _ = split_derivation_validation(df, 0.4, seed=6, stratify="dead")
    assert d1.index.equals(d2.index) and v1.index.equals(v2.index) and not d1.index.equals(d3.index)
    assert set(d1.index).isdisjoint(v1.index) and len(d1) + len(v1) == len(df)
    for value in (0, 1):  # each stratum is split at the fraction, to rounding
        n_stratum = int((df["dead"] == value).sum())
        assert int((d1["dead"] == value).sum()) == round(0.4 * n_stratum)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        split_derivation_validation(df, 1.0, seed=0)


def test_cutoff_is_derived_on_derivation_cohort_only(tmp_path):
    df = synthetic_cohort(200, seed=4)
    deriv, valid = split_derivation_validation(df, 0.4, seed=11, stratify="dead")
    df.loc[valid.index, "mtv"] *= 3.0  # the two cohorts now have clearly different medians
    med_deriv = float(np.median(df.loc[deriv.index, "mtv"]))
    med_valid = float(np.median(df.loc[valid.index, "mtv"]))
    assert med_valid > 2 * med_deriv
    summary = run_survival(df, "os", "dead", ["mtv"], derive_fraction=0.4, seed=11, n_boot=50, id_col="case")
    r = summary["results"]["mtv"]
    assert r["cutoff"] == med_deriv
    assert r["cutoff"] != float(np.median(df["mtv"]))
    assert r["n"] == len(valid) and r["n_high"] == int((df.loc[valid.index, "mtv"] > med_deriv).sum())
    assert r["n_high"] > r["n_low"]  # applied unchanged to the (shifted) validation cohort
    assert summary["split"]["derivation_ids"] == df.loc[deriv.index, "case"].tolist()
    assert summary["split"]["stratified_by"] == "dead" and summary["split"]["seed"] == 11
    # the statistics are those of the validation cohort at that cut-off
    direct = cox_hazard_ratio(df.loc[valid.index], "mtv", "os", "dead", dichotomise_at=med_deriv)
    assert r["hr_dichotomised"]["hr"] == pytest.approx(direct["hr"], rel=1e-12)
    assert r["hr_dichotomised"]["hr"] > 1.0 and r["c_index"]["value"] > 0.6  # mtv is prognostic by construction


def test_table_checks_raise_config_errors():
    df = synthetic_cohort(40, seed=5)
    with pytest.raises(ConfigError, match="'nope'"):
        check_survival_table(df, "os", "dead", ["nope"])
    with pytest.raises(ConfigError, match="no events"):
        check_survival_table(df.assign(dead=0), "os", "dead", ["mtv"])
    with pytest.raises(ConfigError, match="at least 10"):
        check_survival_table(df.head(6), "os", "dead", ["mtv"])
    with pytest.raises(ConfigError, match="1 \\(event observed\\) or 0"):
        check_survival_table(df.assign(dead=df["dead"] * 2), "os", "dead", ["mtv"])
    with pytest.raises(ConfigError, match="negative"):
        check_survival_table(df.assign(os=-df["os"]), "os", "dead", ["mtv"])
    with pytest.raises(ConfigError, match="one side of the cut-off|above the cut-off"):
        cox_hazard_ratio(df, "mtv", "os", "dead", dichotomise_at=-1.0)
    clean = check_survival_table(df.assign(mtv=df["mtv"].where(df.index % 10 != 0)), "os", "dead", ["mtv"])
    assert len(clean) == 36 and clean.attrs["n_excluded_missing"] == 4


# ---------------------------------------------------------------------------------------------- figure
def test_kaplan_meier_png_is_written_and_shows_both_curves(tmp_path):
    import matplotlib.image as mpimg

    df = synthetic_cohort(120, seed=6)
    cut = float(np.median(df["mtv"]))
    png = kaplan_meier_plot(df, "mtv", "os", "dead", cut, tmp_path / "km.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    img = mpimg.imread(png)[..., :3]
    assert img.shape[0] > 500 and img.shape[1] > 700
    # both group colours (Okabe–Ito blue #0072B2 and vermillion #D55E00) are drawn
    for rgb in ((0x00, 0x72, 0xB2), (0xD5, 0x5E, 0x00)):
        close = np.all(np.abs(img - np.array(rgb) / 255.0) < 0.05, axis=-1)
        assert close.sum() > 200
    with pytest.raises(Exception, match="already exists"):
        kaplan_meier_plot(df, "mtv", "os", "dead", cut, png)


# ---------------------------------------------------------------------------------------------- comparison
def test_compare_sources_uses_one_split_and_ranks_sources(tmp_path):
    df = synthetic_cohort(200, seed=8, beta=1.0)
    rng = np.random.default_rng(0)
    outcome = df[["case", "os", "dead"]]
    reference = df[["case", "mtv"]]
    noisy = df[["case"]].assign(mtv=df["mtv"] * np.exp(rng.normal(0, 2.0, len(df))))
    table = compare_sources({"reference": reference, "noisy": noisy}, "os", "dead", ["mtv"], outcome=outcome,
                            id_col="case", n_boot=50, out_csv=tmp_path / "cmp.csv")
    assert list(table["source"]) == ["reference", "noisy"]
    assert table["n"].nunique() == 1
    ref_row, noisy_row = table.iloc[0], table.iloc[1]
    assert ref_row["c_index"] > noisy_row["c_index"] and ref_row["c_index"] > 0.65
    assert ref_row["c_lo"] < ref_row["c_index"] < ref_row["c_hi"]
    # the reference row equals a direct analysis on the same split
    # the reference row equals run_survival on the reference table alone (same split, same statistics)
    single = run_survival(reference.merge(outcome, on="case"), "os", "dead", ["mtv"], n_boot=50)["results"]["mtv"]
    assert ref_row["cutoff"] == single["cutoff"] and ref_row["n"] == single["n"]
    assert ref_row["hr"] == pytest.approx(single["hr_dichotomised"]["hr"], rel=1e-12)
    assert ref_row["p_cont"] == pytest.approx(single["hr_continuous"]["p"], rel=1e-12)
    assert (ref_row["c_index"], ref_row["c_lo"]) == (single["c_index"]["value"], single["c_index"]["lo"])
    assert ref_row["HR (95% CI)"].startswith(f"{ref_row['hr']:.2f} (")
    saved = pd.read_csv(tmp_path / "cmp.csv")
    assert list(saved["source"]) == ["reference", "noisy"] and "C-index (95% CI)" in saved.columns


def test_statistics_come_as_data_without_files():
    """survival_statistics writes nothing: a summary, its per-marker DataFrame (compare_sources' columns without
    ``source``) and Kaplan–Meier curves to draw (fitted lifelines fitters of the low and high groups)."""
    from unipet.quantify.survival import KMCurves, results_table, survival_statistics

    df = synthetic_cohort(200, seed=8, beta=1.0)
    summary, curves = survival_statistics(df, "os", "dead", ["mtv", "suvmax"], n_boot=20)
    table = results_table(summary)
    assert list(table["marker"]) == ["mtv", "suvmax"]
    row, mtv = table.iloc[0], summary["results"]["mtv"]
    assert row["cutoff"] == mtv["cutoff"] and row["hr"] == mtv["hr_dichotomised"]["hr"]
    assert row["c_index"] == mtv["c_index"]["value"] and row["logrank_p"] == mtv["logrank_p"]
    assert set(curves) == {"mtv", "suvmax"} and isinstance(curves["mtv"], KMCurves)
    low, high = curves["mtv"].fitters
    assert len(low.durations) == mtv["n_low"] and len(high.durations) == mtv["n_high"]
    assert "validation cohort" in curves["mtv"].title and curves["mtv"].subtitle.startswith("HR ")


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_survival_contract(tmp_path, capsys):
    csv = tmp_path / "patients.csv"
    synthetic_cohort(150, seed=9).to_csv(csv, index=False)
    out = tmp_path / "surv"
    args = ["survival", str(csv), "--time", "os", "--event", "dead", "--markers", "mtv,suvmax", "--out", str(out),
            "--seed", "3", "--n-boot", "50", "--log", "--id-col", "case"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"]["seed"] == 3 and summary["split"]["derive_fraction"] == 0.4
    assert summary["split"]["n_derivation"] + summary["split"]["n_validation"] == 150
    for marker in ("mtv", "suvmax"):
        r = summary["results"][marker]
        for key in ("cutoff", "hr_dichotomised", "hr_continuous", "logrank_p", "c_index"):
            assert key in r
        assert set(r["hr_dichotomised"]) >= {"hr", "lo", "hi", "p"} and set(r["c_index"]) >= {"value", "lo", "hi"}
        assert (out / f"km_{marker}.png").stat().st_size > 10_000
    assert summary["results"]["mtv"]["hr_continuous"]["covariate"] == "log1p(mtv)"
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    assert main(args[:6] + ["--markers", "mtv,tlg", "--out", str(tmp_path / "x")]) == 2
    assert "'tlg'" in capsys.readouterr().err
    no_events = tmp_path / "none.csv"
    synthetic_cohort(50, seed=1).assign(dead=0).to_csv(no_events, index=False)
    assert main(["survival", str(no_events), "--time", "os", "--event", "dead", "--markers", "mtv",
                 "--out", str(tmp_path / "y")]) == 2
    assert "no events" in capsys.readouterr().err
    few = tmp_path / "few.csv"
    synthetic_cohort(15, seed=1).to_csv(few, index=False)
    assert main(["survival", str(few), "--time", "os", "--event", "dead", "--markers", "mtv",
                 "--out", str(tmp_path / "z")]) == 2
    assert "cohort has" in capsys.readouterr().err


def test_cli_survival_with_clinical_join_and_compare(tmp_path):
    df = synthetic_cohort(120, seed=10)
    df[["case", "mtv", "suvmax"]].to_csv(tmp_path / "q.csv", index=False)
    df[["case", "os", "dead"]].rename(columns={"case": "study_id"}).to_csv(tmp_path / "clin.csv", index=False)
    assert main(["survival", str(tmp_path / "q.csv"), "--clinical", str(tmp_path / "clin.csv"), "--id-col", "case",
                 "--clinical-id", "study_id", "--time", "os", "--event", "dead", "--markers", "mtv",
                 "--n-boot", "20", "--out", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["n_patients"] == 120
    assert main(["survival-compare", "--source", f"a={tmp_path / 'q.csv'}", "--source", f"b={tmp_path / 'q.csv'}",
                 "--clinical", str(tmp_path / "clin.csv"), "--clinical-id", "study_id", "--time", "os", "--event",
                 "dead", "--markers", "mtv,suvmax", "--n-boot", "20", "--out", str(tmp_path / "cmp.csv")]) == 0
    cmp = pd.read_csv(tmp_path / "cmp.csv")
    assert len(cmp) == 4
    # identical sources give identical statistics
    a, b = cmp[cmp["source"] == "a"].reset_index(), cmp[cmp["source"] == "b"].reset_index()
    assert np.allclose(a["hr"], b["hr"]) and np.allclose(a["c_index"], b["c_index"])


# ---------------------------------------------------------------------------------------------- designs
def test_whole_cohort_design_equals_direct_lifelines_on_gbsg2(gbsg2, tmp_path):
    summary = run_survival(gbsg2, "time", "cens", ["pnodes"], design="whole", n_boot=20, out_dir=tmp_path / "w")
    assert summary["design"] == "whole" and summary["cohort_for_statistics"] == "all"
    assert summary["split"]["n_derivation"] == summary["split"]["n_validation"] == 686
    r = summary["results"]["pnodes"]
    assert r["n"] == 686 and r["events"] == 299
    ref = direct_cox(gbsg2["pnodes"].to_numpy(float), gbsg2)
    assert r["hr_continuous"]["hr"] == pytest.approx(ref["exp(coef)"], rel=1e-10)
    assert r["hr_continuous"]["p"] == pytest.approx(ref["p"], rel=1e-8)
    harrell = concordance_index(gbsg2["time"], -gbsg2["pnodes"], gbsg2["cens"])
    assert r["c_index"]["value"] == pytest.approx(harrell, rel=1e-12)
    assert r["cutoff"] == pytest.approx(float(np.median(gbsg2["pnodes"])))
    high = gbsg2["pnodes"] > r["cutoff"]
    direct_lr = logrank_test(gbsg2["time"][high], gbsg2["time"][~high], gbsg2["cens"][high], gbsg2["cens"][~high])
    assert r["logrank_p"] == pytest.approx(direct_lr.p_value, rel=1e-10)
    assert (tmp_path / "w" / "km_pnodes.png").exists()


def test_fixed_derivation_cohort_by_column_or_ids(tmp_path):
    df = synthetic_cohort(140, seed=4)
    df["cohort"] = np.where(np.arange(140) < 60, "derivation", "validation")
    by_col = run_survival(df, "os", "dead", ["mtv"], design="fixed", derivation_col="cohort", n_boot=10,
                          id_col="case")
    ids = df["case"][:60].tolist()
    by_ids = run_survival(df, "os", "dead", ["mtv"], design="fixed", derivation_ids=ids, id_col="case", n_boot=10)
    assert by_col["results"] == by_ids["results"]
    split = by_col["split"]
    assert (split["design"], split["n_derivation"], split["n_validation"]) == ("fixed", 60, 80)
    assert split["derivation_ids"] == ids and split["validation_ids"] == df["case"][60:].tolist()
    r = by_col["results"]["mtv"]
    assert r["cutoff"] == pytest.approx(float(np.median(df["mtv"][:60])))  # derived on the given 60 only
    assert r["n"] == 80  # statistics on the other 80
    validation = df.iloc[60:]
    ref = cox_hazard_ratio(validation, "mtv", "os", "dead", dichotomise_at=r["cutoff"])
    assert r["hr_dichotomised"]["hr"] == pytest.approx(ref["hr"])
    with pytest.raises(ConfigError, match="exactly one"):
        run_survival(df, "os", "dead", ["mtv"], design="fixed")
    with pytest.raises(ConfigError, match="not patients"):
        run_survival(df, "os", "dead", ["mtv"], design="fixed", derivation_ids=["nobody"], id_col="case")
    with pytest.raises(ConfigError, match="holds"):
        run_survival(df.assign(cohort="maybe"), "os", "dead", ["mtv"], design="fixed", derivation_col="cohort")
    with pytest.raises(ConfigError, match="design"):
        run_survival(df, "os", "dead", ["mtv"], design="bootstrap")
    # the comparison of sources uses the same fixed cohorts
    cmp = compare_sources({"a": df, "b": df}, "os", "dead", ["mtv"], id_col="case", design="fixed",
                          derivation_ids=ids, n_boot=10)
    assert cmp["n"].tolist() == [80, 80] and cmp["hr"].iloc[0] == pytest.approx(r["hr_dichotomised"]["hr"])


def test_cli_survival_designs(tmp_path):
    df = synthetic_cohort(120, seed=12)
    df.to_csv(tmp_path / "p.csv", index=False)
    (tmp_path / "ids.txt").write_text("# derivation\n" + "\n".join(df["case"][:50]) + "\n")
    base = ["survival", str(tmp_path / "p.csv"), "--time", "os", "--event", "dead", "--markers", "mtv",
            "--n-boot", "10"]
    assert main([*base, "--design", "whole", "--out", str(tmp_path / "w")]) == 0
    assert json.loads((tmp_path / "w" / "summary.json").read_text())["results"]["mtv"]["n"] == 120
    assert main([*base, "--design", "fixed", "--id-col", "case", "--derivation-ids", str(tmp_path / "ids.txt"),
                 "--out", str(tmp_path / "f")]) == 0
    fixed = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert fixed["split"]["n_derivation"] == 50 and fixed["results"]["mtv"]["n"] == 70
    assert main([*base, "--derivation-ids", str(tmp_path / "ids.txt"), "--out", str(tmp_path / "x")]) == 2


# ---------------------------------------------------------------------------------------------- degenerate inputs
@pytest.mark.parametrize("edit, phrase", [
    (lambda d: d.assign(os=0.0), "every follow-up time .* is 0"),
    (lambda d: d.assign(os=30.0), "every follow-up time .* is 30"),
    (lambda d: d.assign(os=np.where(d["dead"] == 1, 0.0, d["os"])), "every event .* at time 0")])
def test_follow_up_times_without_information_are_refused(edit, phrase):
    """All times 0 gave exit 0 with log-rank p = 0.011, C-index 0.87 and HR 4e7; now one line that says why."""
    with pytest.raises(ConfigError, match=phrase):
        check_survival_table(edit(synthetic_cohort(60, seed=2)), "os", "dead", ["mtv"])


def test_dropped_rows_are_said_on_the_console_not_only_in_summary_json(caplog):
    import logging

    df = synthetic_cohort(60, seed=2)
    df.loc[:2, "os"] = np.nan
    df.loc[3:4, "mtv"] = np.inf
    df.loc[5, "os"] = 0.0
    with caplog.at_level(logging.WARNING, logger="unipet"):
        clean = check_survival_table(df, "os", "dead", ["mtv"])
    assert clean.attrs["n_excluded_missing"] == 5 and clean.attrs["n_excluded_infinite"] == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("5 of 60 patients dropped (3 with a missing value and 2 with an infinite value" in m for m in messages)
    assert any("1 of 55 patients have follow-up time 0" in m for m in messages)


def test_a_separated_cox_model_is_refused_not_reported_as_a_huge_hazard_ratio():
    df = synthetic_cohort(60, seed=2)
    high = df["mtv"] > df["mtv"].median()
    df["dead"] = high.astype(int)  # every high-marker patient dies, no low one: monotone likelihood
    df["os"] = np.where(high, 10.0, 500.0) + np.arange(len(df)) * 0.01
    with pytest.raises(ConfigError, match="degenerate.*separated"):
        cox_hazard_ratio(df, "mtv", "os", "dead", dichotomise_at=float(df["mtv"].median()))


def test_cli_survival_all_times_zero_exits_2(tmp_path, capsys):
    csv = tmp_path / "zero.csv"
    synthetic_cohort(60, seed=2).assign(os=0.0).to_csv(csv, index=False)
    assert main(["survival", str(csv), "--time", "os", "--event", "dead", "--markers", "mtv",
                 "--out", str(tmp_path / "s")]) == 2
    assert "every follow-up time" in capsys.readouterr().err and not (tmp_path / "s").exists()
