"""Survival analysis of PET biomarkers: cut-offs, Kaplan–Meier, log-rank, Cox hazard ratios, C-index.

All statistics come from lifelines (``KaplanMeierFitter``, ``logrank_test``, ``CoxPHFitter``,
``concordance_index``); this module only organises them into the protocols of PET outcome papers. Three
study designs (``design=``):

* ``"split"`` (default): a **random** derivation cohort (``derive_fraction`` of the patients, stratified by the
  event); median cut-offs are derived on it and every statistic is computed on the remaining validation cohort.
* ``"fixed"``: the derivation cohort is **given**, by a column (1 / true = derivation) or by a list of patient
  ids; cut-offs from it, statistics on the other patients. DpDNet's survival analysis is of this kind: its
  text derives the median cut-offs on 480 breast-cancer patients and applies them to the other 780, yet it
  reports a cohort of 1,210 patients: **480 + 780 = 1,260, not 1,210**, so the paper's own counts do not say
  which 50 patients are counted twice or left out; give the cohorts explicitly to reproduce it.
* ``"whole"``: no split. Cut-offs, hazard ratios, log-rank, C-index and Kaplan–Meier curves on all patients
  (the usual whole-cohort analysis; its cut-offs are not validated on unseen patients).

Conventions, used everywhere in unipet:

* Input is a patient table (one row per patient) with a time column (any unit; days by default in
  labels), an event column (1 = event observed, e.g. death or progression; 0 = censored) and
  biomarker columns (MTV in mL, TLG in mL·SUV, SUVmax, ...).
* **Dichotomisation**: a patient is *high* when ``marker > cut-off`` (strictly), else *low*. With a
  median cut-off and many patients at 0 (no lesion), "high" is "any disease above the median".
* **Risk-score sign**: *a higher risk score means shorter survival*. A biomarker is used as its own
  risk score (larger tumour burden = higher risk), so a C-index above 0.5 means the marker is
  prognostic in the expected direction. lifelines' ``concordance_index`` expects the opposite sign
  (higher = longer survival), so it is called with ``-risk``; scikit-survival's
  ``concordance_index_censored`` expects ours.
* Hazard ratios are per unit of the covariate: high vs low for a dichotomised marker, per unit of the
  marker (or of ``log1p(marker)`` when ``log=True``) for a continuous one. Intervals are 95 %
  (Wald, as lifelines reports them); p values are two-sided.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from unipet.errors import ConfigError

log = logging.getLogger("unipet")

# The smallest cohort (derivation or validation) on which unipet fits a survival model.
MIN_PATIENTS = 10
#: a Cox coefficient whose standard error exceeds this (a 95 % CI wider than exp(+-10)) is a monotone likelihood:
#: separated groups, not an estimate (unipet's choice)
MAX_COX_SE = 5.0
HIGH_RULE = "high if marker > cut-off, else low"
RISK_CONVENTION = "higher risk score (marker value) = shorter survival; C-index > 0.5 = prognostic in that direction"


# ---------------------------------------------------------------------------------------------- checks
def check_survival_table(df: pd.DataFrame, time: str, event: str, markers: Sequence[str] = (),
                         min_patients: int = MIN_PATIENTS) -> pd.DataFrame:
    """Validate a patient table and return a clean copy (complete cases, ``event`` as int 0/1).

    Rows with a missing time, event or marker value are dropped (complete-case analysis); the number
    dropped is stored in ``result.attrs["n_excluded_missing"]``.

    Raises:
        ConfigError: a column is missing or not numeric, times are negative, the event column is not
            0/1, there are fewer than ``min_patients`` complete rows, or no event at all.
    """
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(f"the survival table must be a pandas DataFrame, got {type(df).__name__}; "
                          "read the CSV with pandas.read_csv first")
    columns = [time, event, *markers]
    for col in columns:
        if col not in df.columns:
            shown = ", ".join(map(str, list(df.columns)[:20]))
            raise ConfigError(f"column {col!r} is not in the survival table (it has: {shown}); "
                              "pass the right --time / --event / --markers names")
    if len(set(columns)) != len(columns):
        raise ConfigError(f"time, event and marker columns must be distinct, got {columns}; name each column once")
    out = df.copy()
    for col in columns:
        if not pd.api.types.is_numeric_dtype(out[col]) and not pd.api.types.is_bool_dtype(out[col]):
            converted = pd.to_numeric(out[col], errors="coerce")
            bad = out[col][converted.isna() & out[col].notna()]
            if len(bad):
                raise ConfigError(f"column {col!r} holds non-numeric values such as {bad.iloc[0]!r}; "
                                  "survival columns must be numbers (fix or remove those rows)")
            out[col] = converted
        out[col] = out[col].astype(float)
    present = out[columns].notna().all(axis=1)
    complete = present & np.isfinite(out[columns]).all(axis=1)
    n_missing = int((~complete).sum())
    n_infinite = int((present & ~complete).sum())
    if n_missing:
        what = [f"{n_missing - n_infinite} with a missing value" if n_missing > n_infinite else "",
                f"{n_infinite} with an infinite value" if n_infinite else ""]
        log.warning("survival: %d of %d patients dropped (%s in %s); the analysis uses the other %d", n_missing,
                    len(out), " and ".join(w for w in what if w), ", ".join(columns), len(out) - n_missing)
    out = out.loc[complete].copy()
    if (out[time] < 0).any():
        raise ConfigError(f"time column {time!r} holds negative values; follow-up times must be >= 0")
    values = set(np.unique(out[event]).tolist())
    if not values <= {0.0, 1.0}:
        shown = sorted(values - {0.0, 1.0})[:5]
        raise ConfigError(f"event column {event!r} holds values {shown}; it must be 1 (event observed) or "
                          "0 (censored)")
    out[event] = out[event].astype(int)
    if len(out) < min_patients:
        raise ConfigError(f"only {len(out)} patients have complete {columns} values ({n_missing} dropped for "
                          f"missing values); survival analysis needs at least {min_patients}")
    if out[event].sum() == 0:
        raise ConfigError(f"event column {event!r} has no events (all 0 = censored); a survival analysis needs "
                          "at least one observed event — check the column or its coding")
    check_follow_up(out, time, event)
    out.attrs["n_excluded_missing"] = n_missing
    out.attrs["n_excluded_infinite"] = n_infinite
    return out


# ---------------------------------------------------------------------------------------------- split / cut-offs
def check_follow_up(df: pd.DataFrame, time: str, event: str) -> None:
    """Refuse follow-up times that carry no survival information: all equal (e.g. every time 0) or every event
    at time 0 — a log-rank test, C-index and hazard ratio on them are numbers without meaning (all times 0 gave
    p = 0.011, C-index 0.87 and HR 4e7). Times of 0 among others are kept, with a one-line warning.

    Raises:
        ConfigError: naming the column and the fix.
    """
    times = df[time].to_numpy(dtype=float)
    if np.unique(times).size < 2:
        raise ConfigError(f"every follow-up time in {time!r} is {times[0]:g}; survival needs times that differ "
                          "(time from baseline to event or last contact) — check the column and its unit")
    events = df[event].to_numpy(dtype=int) == 1
    if np.all(times[events] == 0):
        raise ConfigError(f"every event in {event!r} happens at time 0 of {time!r}; the events cannot be ordered "
                          "— check the time column (time from baseline to event)")
    zero = int((times == 0).sum())
    if zero:
        log.warning("survival: %d of %d patients have follow-up time 0 in %r (an event at the baseline scan, or a "
                    "missing time coded as 0?)", zero, len(times), time)


def with_id_column(frame: pd.DataFrame, column: str, id_col: str, what: str) -> pd.DataFrame:
    """``frame`` with its patient id ``column`` named ``id_col`` and held as strings (ids join as text).

    Raises:
        ConfigError: ``frame`` has no ``column``.
    """
    if column not in frame.columns:
        raise ConfigError(f"the {what} has no column {column!r} to join on; name the patient id columns "
                          "(--id-col / --clinical-id)")
    return frame.rename(columns={column: id_col}).assign(**{id_col: lambda d: d[id_col].astype(str)})


def join_clinical(table: pd.DataFrame, clinical: pd.DataFrame, id_col: str,
                  clinical_id: str | None = None) -> pd.DataFrame:
    """The rows of a biomarker ``table`` with the outcome columns of a ``clinical`` table, joined (inner) on the
    patient id: ``id_col`` in ``table``, ``clinical_id`` (default ``id_col``) in ``clinical``; clinical columns
    the table already has are not taken twice."""
    table = with_id_column(table, id_col, id_col, "biomarker table")
    clinical = with_id_column(clinical, clinical_id or id_col, id_col, "clinical table")
    clinical = clinical[[id_col, *[c for c in clinical.columns if c not in table.columns]]]
    return table.merge(clinical, on=id_col, how="inner")


def split_derivation_validation(df: pd.DataFrame, fraction: float, seed: int,
                                stratify: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a patient table at random into a derivation and a validation cohort.

    Args:
        df: one row per patient.
        fraction: share of patients in the derivation cohort, 0 < fraction < 1 (rounded per stratum).
        seed: seed of ``numpy.random.default_rng``; the split is reproducible from it and the row order.
        stratify: column whose values are kept in the same proportion in both cohorts (typically the
            event column), or None for a plain random split.

    Returns:
        ``(derivation, validation)``, each keeping the original row order and index.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ConfigError(f"derive fraction must be strictly between 0 and 1, got {fraction}")
    if stratify is not None and stratify not in df.columns:
        raise ConfigError(f"stratification column {stratify!r} is not in the table; pass an existing column or None")
    rng = np.random.default_rng(seed)
    positions = np.arange(len(df))
    strata = [positions] if stratify is None else [
        positions[(df[stratify] == value).to_numpy()] for value in sorted(df[stratify].unique())]
    chosen: list[np.ndarray] = []
    for members in strata:
        n_take = int(round(float(fraction) * len(members)))
        chosen.append(rng.permutation(members)[:n_take])
    is_derivation = np.zeros(len(df), dtype=bool)
    is_derivation[np.concatenate(chosen)] = True
    if is_derivation.all() or not is_derivation.any():
        raise ConfigError(f"derive fraction {fraction} leaves one cohort empty with {len(df)} patients; "
                          "use a fraction nearer 0.5 or more patients")
    return df.iloc[is_derivation], df.iloc[~is_derivation]


DESIGNS = ("split", "fixed", "whole")
_TRUE = {"1", "1.0", "true", "yes", "derivation", "train", "training"}
_FALSE = {"0", "0.0", "false", "no", "validation", "test", "val"}


def fixed_derivation_mask(df: pd.DataFrame, derivation_col: str | None = None,
                          derivation_ids: Sequence[str] | None = None,
                          ids: pd.Series | None = None) -> np.ndarray:
    """Boolean mask of the given derivation cohort: from a column (1 / true / "derivation" vs 0 / false /
    "validation") or from ``derivation_ids`` matched against ``ids`` (the id column, as strings)."""
    if (derivation_col is None) == (derivation_ids is None):
        raise ConfigError("the fixed design needs exactly one of a derivation column (--derivation-col) or a list "
                          "of derivation ids (--derivation-ids)")
    if derivation_col is not None:
        if derivation_col not in df.columns:
            raise ConfigError(f"derivation column {derivation_col!r} is not in the survival table; pass an existing "
                              "column (1 = derivation, 0 = validation)")
        text = df[derivation_col].astype(str).str.strip().str.lower()
        bad = sorted(set(text) - _TRUE - _FALSE)
        if bad:
            raise ConfigError(f"derivation column {derivation_col!r} holds {bad[:3]}; use 1/0, true/false or "
                              "derivation/validation")
        return text.isin(_TRUE).to_numpy()
    if ids is None:
        raise ConfigError("derivation ids need --id-col naming the patient id column they refer to")
    wanted = {str(i) for i in derivation_ids}
    unknown = sorted(wanted - set(ids.tolist()))
    if unknown:
        raise ConfigError(f"{len(unknown)} derivation ids are not patients of the table (e.g. {unknown[:3]}); "
                          "check the id list and --id-col")
    return ids.isin(wanted).to_numpy()


def choose_cohorts(clean: pd.DataFrame, event: str, design: str = "split", derive_fraction: float = 0.4,
                   seed: int = 0, stratify: bool = True, derivation_col: str | None = None,
                   derivation_ids: Sequence[str] | None = None,
                   ids: pd.Series | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """``(derivation, statistics cohort, record)`` of a design (module docstring); for ``"whole"`` both cohorts
    are all patients. ``record`` is what ``summary.json`` stores under ``split``.

    Raises:
        ConfigError: an unknown design, or a cohort with fewer than ``MIN_PATIENTS`` patients or no event.
    """
    if design not in DESIGNS:
        raise ConfigError(f"unknown survival design {design!r}; use one of {', '.join(DESIGNS)}")
    record: dict[str, Any] = {"design": design}
    if design == "whole":
        derivation = validation = clean
        record.update(n_derivation=int(len(clean)), n_validation=int(len(clean)),
                      events_derivation=int(clean[event].sum()), events_validation=int(clean[event].sum()),
                      method="no split: cut-offs and statistics on all patients")
        return derivation, validation, record
    if design == "split":
        derivation, validation = split_derivation_validation(clean, derive_fraction, seed,
                                                             stratify=event if stratify else None)
        record.update(derive_fraction=float(derive_fraction), seed=int(seed), stratified_by=event if stratify else None,
                      method="numpy.random.default_rng(seed) permutation per stratum")
        hint = "use more patients or another --derive-fraction"
    else:
        mask = fixed_derivation_mask(clean, derivation_col, derivation_ids, ids)
        derivation, validation = clean.iloc[mask], clean.iloc[~mask]
        record.update(derivation_col=derivation_col, derivation_ids_given=derivation_ids is not None,
                      method="derivation cohort given by the user")
        hint = "check the derivation column or id list"
    for name, part in (("derivation", derivation), ("validation", validation)):
        if len(part) < MIN_PATIENTS or part[event].sum() == 0:
            raise ConfigError(f"the {name} cohort has {len(part)} patients and {int(part[event].sum())} events; it "
                              f"needs at least {MIN_PATIENTS} patients and one event — {hint}")
    record.update(n_derivation=int(len(derivation)), n_validation=int(len(validation)),
                  events_derivation=int(derivation[event].sum()), events_validation=int(validation[event].sum()))
    if ids is not None:
        record["derivation_ids"] = ids.loc[derivation.index].tolist()
        record["validation_ids"] = ids.loc[validation.index].tolist()
    return derivation, validation, record


def derive_cutoffs(df: pd.DataFrame, markers: Iterable[str], method: str | float = "median") -> dict[str, float]:
    """Cut-off of each marker on ``df`` (pass the *derivation* cohort only).

    Args:
        method: ``"median"``, ``"mean"``, or a quantile in (0, 1) such as 0.75. NaNs are ignored.

    Returns:
        ``{marker: cut-off}`` in the marker's own units.
    """
    cutoffs = {}
    for marker in markers:
        if marker not in df.columns:
            raise ConfigError(f"marker column {marker!r} is not in the table; check the --markers names")
        values = pd.to_numeric(df[marker], errors="coerce").dropna().to_numpy(dtype=float)
        if values.size == 0:
            raise ConfigError(f"marker {marker!r} has no numeric values in the derivation cohort")
        if method == "median":
            cutoffs[marker] = float(np.median(values))
        elif method == "mean":
            cutoffs[marker] = float(np.mean(values))
        elif isinstance(method, (int, float)) and 0.0 < float(method) < 1.0:
            cutoffs[marker] = float(np.quantile(values, float(method)))
        else:
            raise ConfigError(f"unknown cut-off method {method!r}; use 'median', 'mean' or a quantile in (0, 1)")
    return cutoffs


def dichotomise(values: pd.Series | np.ndarray, cutoff: float) -> np.ndarray:
    """1 where ``value > cutoff`` (high), else 0 (low) — unipet's one dichotomisation rule."""
    return (np.asarray(values, dtype=float) > float(cutoff)).astype(int)


# ---------------------------------------------------------------------------------------------- statistics
class DegenerateCoxModel(ConfigError):
    """A Cox model whose hazard ratio cannot be estimated (separated groups, no convergence); ``coef`` is the
    diverging log hazard ratio's estimate where one was fitted (its sign is still the direction), else None."""

    def __init__(self, message: str, coef: float | None = None) -> None:
        super().__init__(message)
        self.coef = coef


def cox_or_nan(df: pd.DataFrame, marker: str, time: str, event: str, **kwargs: Any) -> dict[str, Any]:
    """``cox_hazard_ratio``, or — for a degenerate model inside a table of several statistics (the demo, the
    report, ``survival_statistics``) — an unbounded hazard ratio on its side of 1 (``inf`` or 0; NaN where the fit
    did not converge), NaN interval and p, the reason in ``note`` and one warning line: the other statistics of the
    marker (log-rank, C-index, the curves) stay meaningful, so the table is written with the hazard ratio marked
    unbounded instead of refusing the whole analysis. ``cox_hazard_ratio`` alone refuses."""
    try:
        return cox_hazard_ratio(df, marker, time, event, **kwargs)
    except DegenerateCoxModel as exc:
        nan = float("nan")
        # separated groups: the HR is unbounded, but its side of 1 is known (the coefficient's sign)
        hr = nan if exc.coef is None or not np.isfinite(exc.coef) else (float("inf") if exc.coef > 0 else 0.0)
        log.warning("%s; the hazard ratio is reported as unbounded (%s), without an interval", exc, hr)
        return {"hr": hr, "lo": nan, "hi": nan, "p": nan, "coef": nan, "se": nan, "n": int(len(df)),
                "events": int(pd.to_numeric(df[event], errors="coerce").sum()), "covariate": marker,
                "note": str(exc)}


def cox_hazard_ratio(df: pd.DataFrame, marker: str, time: str, event: str, dichotomise_at: float | None = None,
                     log: bool = False) -> dict[str, Any]:
    """Univariable Cox proportional-hazards model of one marker (lifelines ``CoxPHFitter``, Efron ties).

    Args:
        dichotomise_at: cut-off; the covariate is then high (> cut-off) vs low. None: continuous marker.
        log: for a continuous marker, use ``log1p(marker)`` (volumes, TLG); ignored when dichotomised.

    Returns:
        dict with ``hr``, ``lo``, ``hi`` (95 % CI of the HR), ``p``, ``coef``, ``se``, ``n``, ``events``,
        ``covariate`` (a description of what one unit of the covariate is).
    """
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError, ConvergenceWarning

    x = pd.to_numeric(df[marker], errors="coerce").to_numpy(dtype=float)
    if dichotomise_at is not None:
        covariate = f"{marker} > {dichotomise_at:.6g} (high vs low)"
        x = dichotomise(x, dichotomise_at).astype(float)
        if x.min() == x.max():
            side = "above" if x[0] else "at or below"
            raise ConfigError(f"every patient has {marker} {side} the cut-off {dichotomise_at:.6g}; the hazard ratio "
                              "of high vs low is undefined — use another cut-off or more patients")
    elif log:
        if np.nanmin(x) < 0:
            raise ConfigError(f"marker {marker!r} has negative values, so log1p is undefined; drop --log for it")
        covariate = f"log1p({marker})"
        x = np.log1p(x)
    else:
        covariate = marker
    if np.nanstd(x) == 0:
        raise ConfigError(f"marker {marker!r} is constant in this cohort; a hazard ratio needs varying values")
    data = pd.DataFrame({"x": x, "t": df[time].to_numpy(dtype=float), "e": df[event].to_numpy(dtype=int)})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fitter = CoxPHFitter().fit(data, duration_col="t", event_col="e")
    except ConvergenceError as exc:
        raise DegenerateCoxModel(f"the Cox model of {marker!r} did not converge ({str(exc).splitlines()[0]}); the groups "
                          "are probably perfectly separated by the events — use more patients") from None
    row = fitter.summary.loc["x"]
    se, hr = float(row["se(coef)"]), float(row["exp(coef)"])
    if not np.isfinite(se) or se > MAX_COX_SE or (dichotomise_at is not None and not 1e-3 < hr < 1e3):
        raise DegenerateCoxModel(f"the Cox model of {marker!r} is degenerate (HR {hr:.3g}, standard error of its log "
                                 f"{se:.3g}): the events are (almost) perfectly separated by the marker, so no hazard "
                                 "ratio can be estimated — use more patients or check the time and event columns",
                                 coef=float(row["coef"]))
    return {"hr": float(row["exp(coef)"]), "lo": float(row["exp(coef) lower 95%"]),
            "hi": float(row["exp(coef) upper 95%"]), "p": float(row["p"]), "coef": float(row["coef"]),
            "se": float(row["se(coef)"]), "n": int(len(data)), "events": int(data["e"].sum()),
            "covariate": covariate}


def logrank(df: pd.DataFrame, marker: str, time: str, event: str, cutoff: float) -> dict[str, float]:
    """Log-rank test of high (> cut-off) vs low (lifelines ``logrank_test``). Returns ``{statistic, p}``."""
    from lifelines.statistics import logrank_test

    high = dichotomise(df[marker], cutoff).astype(bool)
    t, e = df[time].to_numpy(dtype=float), df[event].to_numpy(dtype=int)
    if high.all() or not high.any():
        raise ConfigError(f"every patient falls on one side of the {marker} cut-off {cutoff:.6g}; the log-rank test "
                          "needs two groups")
    result = logrank_test(t[high], t[~high], event_observed_A=e[high], event_observed_B=e[~high])
    return {"statistic": float(result.test_statistic), "p": float(result.p_value)}


def c_index(df: pd.DataFrame, risk_col: str, time: str, event: str, n_boot: int = 1000, seed: int = 0,
            alpha: float = 0.05) -> dict[str, Any]:
    """Harrell's C-index of a risk score with a percentile-bootstrap interval.

    Sign convention: a *higher* ``risk_col`` value means *shorter* survival (so lifelines'
    ``concordance_index`` is given ``-risk``). Bootstrap: ``n_boot`` resamples of patients with
    replacement from ``numpy.random.default_rng(seed)``; resamples without any comparable pair are
    skipped (their count is ``n_boot - n_boot_used``).

    Returns:
        ``{"value", "lo", "hi", "n_boot", "n_boot_used", "level"}``; lo/hi are NaN when ``n_boot`` is 0.
    """
    from lifelines.utils import concordance_index

    t = df[time].to_numpy(dtype=float)
    e = df[event].to_numpy(dtype=int)
    risk = pd.to_numeric(df[risk_col], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(risk).all():
        raise ConfigError(f"risk column {risk_col!r} has missing or non-finite values; drop those patients first")
    try:
        value = float(concordance_index(t, -risk, e))
    except ZeroDivisionError:
        raise ConfigError("no pair of patients is comparable (no event before another patient's time); the C-index "
                          "is undefined for this cohort") from None
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(int(n_boot)):
        idx = rng.integers(0, len(t), len(t))
        try:
            samples.append(concordance_index(t[idx], -risk[idx], e[idx]))
        except ZeroDivisionError:  # no admissible pair in this resample
            continue
    lo = hi = float("nan")
    if samples:
        lo, hi = (float(v) for v in np.percentile(samples, [100 * alpha / 2, 100 * (1 - alpha / 2)]))
    return {"value": value, "lo": lo, "hi": hi, "n_boot": int(n_boot), "n_boot_used": len(samples),
            "level": 1 - alpha}


# ---------------------------------------------------------------------------------------------- curves
@dataclass(frozen=True)
class KMCurves:
    """Kaplan–Meier curves of one marker's low (≤ cut-off) and high (> cut-off) patients, ready to draw.

    Attributes:
        fitters: the fitted lifelines ``KaplanMeierFitter`` of the low group, then of the high group.
        title: what the curves show (marker and cohort).
        subtitle: the statistics beside them (HR with 95 % CI, log-rank p).
        time_unit: unit of the time axis.
    """

    fitters: tuple
    title: str
    subtitle: str
    time_unit: str = "days"


def km_curves(df: pd.DataFrame, marker: str, time: str, event: str, cutoff: float, *,
              hr: Mapping[str, float] | None = None, logrank_p: float | None = None,
              time_unit: str = "days", title: str | None = None) -> KMCurves:
    """Kaplan–Meier curves of low (≤ cut-off) and high (> cut-off) patients (``unipet.report.survival`` draws them).

    ``hr`` (``{"hr", "lo", "hi"}`` of high vs low) and ``logrank_p`` are computed when not given.
    """
    from lifelines import KaplanMeierFitter

    high = dichotomise(df[marker], cutoff).astype(bool)
    if high.all() or not high.any():
        raise ConfigError(f"every patient falls on one side of the {marker} cut-off {cutoff:.6g}; a Kaplan–Meier "
                          "comparison needs two groups")
    hr = hr if hr is not None else cox_or_nan(df, marker, time, event, dichotomise_at=cutoff)
    logrank_p = logrank_p if logrank_p is not None else logrank(df, marker, time, event, cutoff)["p"]
    t, e = df[time].to_numpy(dtype=float), df[event].to_numpy(dtype=int)
    fitters = []
    for name, sel in (("low", ~high), ("high", high)):
        sign = "≤" if name == "low" else ">"
        label = f"{name}: {marker} {sign} {cutoff:.3g} (n={int(sel.sum())})"
        fitters.append(KaplanMeierFitter(label=label).fit(t[sel], e[sel]))
    stats = f"HR {hr['hr']:.2f} (95% CI {hr['lo']:.2f}–{hr['hi']:.2f}), log-rank {_format_p(logrank_p)}"
    return KMCurves(tuple(fitters), title or f"Kaplan–Meier by {marker}", stats, time_unit)


def _format_p(p: float) -> str:
    """``"p < 0.001"`` or ``"p = 0.012"``."""
    return "p < 0.001" if p < 1e-3 else f"p = {p:.3f}"


# ---------------------------------------------------------------------------------------------- protocol
def survival_statistics(df: pd.DataFrame, time: str, event: str, markers: Sequence[str], derive_fraction: float = 0.4,
                        seed: int = 0, *, log: bool = False, id_col: str | None = None, stratify: bool = True,
                        n_boot: int = 1000, cutoff_method: str | float = "median", time_unit: str = "days",
                        design: str = "split", derivation_col: str | None = None,
                        derivation_ids: Sequence[str] | None = None) -> tuple[dict[str, Any], dict[str, KMCurves]]:
    """Derive cut-offs on a derivation cohort and evaluate every marker on the validation cohort (or, with
    ``design="whole"``, derive and evaluate on all patients).

    Per marker (all statistics on the **validation** cohort, or on all patients for ``"whole"``): the cut-off
    (from the derivation cohort), group sizes, Cox HR of high vs low and of the continuous marker (``log1p``
    when ``log``) with 95 % CI and p, log-rank p, and the C-index of the continuous marker with a bootstrap
    95 % interval.

    Args:
        df: one row per patient; ``id_col`` (optional) names a pseudonymous id recorded with the split.
        design: ``"split"``, ``"fixed"`` or ``"whole"`` (module docstring).
        derive_fraction: ``"split"``: share of patients in the derivation cohort (DpDNet's 480 of its stated
            1,210 ≈ 0.4; see the module docstring for why its counts do not add up).
        derivation_col: ``"fixed"``: column marking the derivation cohort (1 / true / "derivation"); the other
            patients (0 / false / "validation") are the validation cohort.
        derivation_ids: ``"fixed"``: ids (``id_col`` values) of the derivation cohort, instead of a column.
        stratify: ``"split"``: keep the event rate equal in both cohorts (stratified by ``event``).

    Returns:
        ``(summary, curves)``: the summary dict (``unipet.report.survival.run_survival`` writes it as
        ``summary.json``) and each marker's Kaplan–Meier curves on the cohort of the statistics. Writes nothing.
    """
    markers = list(markers)
    if not markers:
        raise ConfigError("no marker columns given; pass --markers with at least one column name")
    if design not in DESIGNS:
        raise ConfigError(f"unknown survival design {design!r}; use one of {', '.join(DESIGNS)}")
    clean = check_survival_table(df, time, event, markers)
    ids = None
    if id_col is not None:
        if id_col not in df.columns:
            raise ConfigError(f"id column {id_col!r} is not in the survival table; pass an existing --id-col")
        ids = clean[id_col].astype(str)
        if ids.duplicated().any():
            raise ConfigError(f"id column {id_col!r} repeats {ids[ids.duplicated()].iloc[0]!r}; the survival table "
                              "needs one row per patient")
    derivation, validation, split = choose_cohorts(clean, event, design, derive_fraction, seed, stratify,
                                                   derivation_col, derivation_ids, ids)
    cutoffs = derive_cutoffs(derivation, markers, cutoff_method)
    results: dict[str, Any] = {}
    curves: dict[str, KMCurves] = {}
    cohort_name = "all patients" if design == "whole" else "validation cohort"
    for marker in markers:
        results[marker] = _evaluate_marker(validation, marker, time, event, cutoffs[marker], log, n_boot, seed)
        curves[marker] = km_curves(validation, marker, time, event, cutoffs[marker],
                                   hr=results[marker]["hr_dichotomised"], logrank_p=results[marker]["logrank_p"],
                                   time_unit=time_unit, title=f"{marker}: {cohort_name}")

    summary = {
        "time": time, "event": event, "time_unit": time_unit, "markers": markers,
        "n_patients": int(len(clean)), "n_excluded_missing": int(clean.attrs.get("n_excluded_missing", 0)),
        "cutoff_method": cutoff_method, "dichotomisation": HIGH_RULE, "risk_convention": RISK_CONVENTION,
        "design": design, "cohort_for_statistics": "all" if design == "whole" else "validation",
        "log_continuous": bool(log), "ci_level": 0.95, "split": split, "results": results,
    }
    return summary, curves


def _evaluate_marker(cohort: pd.DataFrame, marker: str, time: str, event: str, cutoff: float, log: bool,
                     n_boot: int, seed: int) -> dict[str, Any]:
    """Every statistic of one marker on one cohort at a fixed cut-off."""
    high = dichotomise(cohort[marker], cutoff)
    return {
        "cutoff": float(cutoff),
        "n": int(len(cohort)), "events": int(cohort[event].sum()),
        "n_high": int(high.sum()), "n_low": int(len(high) - high.sum()),
        "events_high": int(cohort[event].to_numpy()[high == 1].sum()),
        "events_low": int(cohort[event].to_numpy()[high == 0].sum()),
        "hr_dichotomised": _hr_only(cox_or_nan(cohort, marker, time, event, dichotomise_at=cutoff)),
        "hr_continuous": _hr_only(cox_or_nan(cohort, marker, time, event, log=log)),
        "logrank_p": logrank(cohort, marker, time, event, cutoff)["p"],
        "c_index": c_index(cohort, marker, time, event, n_boot=n_boot, seed=seed),
    }


def marker_row(stats: Mapping[str, Any]) -> dict[str, Any]:
    """One marker's statistics (``survival_statistics``' ``results[marker]``) as a flat table row: ``n, events,
    cutoff, hr, hr_lo, hr_hi, p, hr_cont, hr_cont_lo, hr_cont_hi, p_cont, logrank_p, c_index, c_lo, c_hi`` and the
    formatted ``"HR (95% CI)"`` (high vs low) and ``"C-index (95% CI)"``."""
    hd, hc, ci = stats["hr_dichotomised"], stats["hr_continuous"], stats["c_index"]
    return {
        "n": stats["n"], "events": stats["events"], "cutoff": stats["cutoff"],
        "hr": hd["hr"], "hr_lo": hd["lo"], "hr_hi": hd["hi"], "p": hd["p"],
        "hr_cont": hc["hr"], "hr_cont_lo": hc["lo"], "hr_cont_hi": hc["hi"], "p_cont": hc["p"],
        "logrank_p": stats["logrank_p"], "c_index": ci["value"], "c_lo": ci["lo"], "c_hi": ci["hi"],
        "HR (95% CI)": f"{hd['hr']:.2f} ({hd['lo']:.2f}–{hd['hi']:.2f})",
        "C-index (95% CI)": f"{ci['value']:.3f} ({ci['lo']:.3f}–{ci['hi']:.3f})",
    }


def results_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """``survival_statistics``' summary as a DataFrame: one row per marker (``marker_row``'s columns), the
    layout of ``compare_sources`` without its ``source`` column."""
    return pd.DataFrame([{"marker": m, **marker_row(r)} for m, r in summary["results"].items()])


def _hr_only(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("hr", "lo", "hi", "p", "covariate")}


# ---------------------------------------------------------------------------------------------- comparison
def compare_sources(tables: Mapping[str, pd.DataFrame], time: str, event: str, markers: Sequence[str], *,
                    outcome: pd.DataFrame | None = None, id_col: str = "case", derive_fraction: float = 0.4,
                    seed: int = 0, stratify: bool = True, log: bool = False, n_boot: int = 1000,
                    cutoff_method: str | float = "median", design: str = "split", derivation_col: str | None = None,
                    derivation_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Prognostic value of the same biomarkers measured from several segmentation sources (Table-3 layout).

    Every source is analysed on the **same patients and the same cohorts**: the patients present in all
    sources (joined on ``id_col``, in the first table's row order) are divided once by ``design`` exactly as
    ``survival_statistics`` divides them (``"split"``, ``"fixed"`` with ``derivation_ids`` or a ``derivation_col`` of
    the outcome / first table, or ``"whole"``); each source's cut-off is derived on its own derivation values
    and applied to its validation values.

    Args:
        tables: ``{source name: patient table}`` e.g. ``{"reference": ..., "model A": ...}``, each with
            ``id_col`` and the marker columns (e.g. ``patients.csv`` of ``unipet quantify``).
        outcome: table with ``id_col``, ``time`` and ``event``; None when every source table holds them.

    Returns:
        One row per (marker, source): ``marker, source, n, events, cutoff, hr, hr_lo, hr_hi, p,
        hr_cont, hr_cont_lo, hr_cont_hi, p_cont, c_index, c_lo, c_hi`` plus the formatted columns
        ``"HR (95% CI)"`` (high vs low) and ``"C-index (95% CI)"``.
    """
    if not tables:
        raise ConfigError("no segmentation sources given; pass at least one patient table")
    merged: dict[str, pd.DataFrame] = {}
    for name, table in tables.items():
        if id_col not in table.columns:
            raise ConfigError(f"source {name!r} has no id column {id_col!r}; every table must name its patients")
        if outcome is not None:
            for col in (id_col, time, event):
                if col not in outcome.columns:
                    raise ConfigError(f"the outcome table has no column {col!r}; it needs {id_col}, {time}, {event}")
            keep = [id_col, *[m for m in markers if m in table.columns]]
            extra = [derivation_col] if derivation_col is not None and derivation_col in outcome.columns else []
            table = table[keep].merge(outcome[[id_col, time, event, *extra]], on=id_col, how="inner")
        clean = check_survival_table(table, time, event, markers)
        clean[id_col] = clean[id_col].astype(str)
        if clean[id_col].duplicated().any():
            raise ConfigError(f"source {name!r} repeats patient {clean[id_col][clean[id_col].duplicated()].iloc[0]!r}; "
                              "give one row per patient")
        merged[name] = clean.set_index(id_col)
    # Patients of every source, in the first source's row order: with one source this is exactly the split of
    # survival_statistics.
    shared = set.intersection(*(set(t.index) for t in merged.values()))
    first = next(iter(merged.values()))
    common = [i for i in first.index if i in shared]
    first = first.loc[common]
    if len(common) < 2 * MIN_PATIENTS:
        raise ConfigError(f"only {len(common)} patients are in every source; a comparison needs at least "
                          f"{2 * MIN_PATIENTS}")
    derivation, validation, record = choose_cohorts(first, event, design, derive_fraction, seed, stratify,
                                                    derivation_col, derivation_ids,
                                                    pd.Series(first.index, index=first.index))
    rows = []
    for marker in markers:
        for name, table in merged.items():
            cohort_d, cohort_v = table.loc[derivation.index], table.loc[validation.index]
            # Outcomes must agree between sources for the same patient; otherwise the comparison is meaningless.
            if not np.array_equal(cohort_v[[time, event]].to_numpy(), validation[[time, event]].to_numpy()):
                raise ConfigError(f"source {name!r} gives other survival times/events than the first source for the "
                                  "same patients; pass one outcome table with outcome=")
            cut = derive_cutoffs(cohort_d, [marker], cutoff_method)[marker]
            stats = _evaluate_marker(cohort_v, marker, time, event, cut, log, n_boot, seed)
            rows.append({"marker": marker, "source": name, **marker_row(stats)})
    result = pd.DataFrame(rows)
    result.attrs["split"] = {k: v for k, v in record.items() if not k.endswith("_ids")}
    return result
