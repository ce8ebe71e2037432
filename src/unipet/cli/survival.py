"""``unipet survival`` and ``unipet survival-compare``: biomarker cut-offs, hazard ratios, C-index, KM curves."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console, require_inputs
from unipet.cli.app import app
from unipet.errors import ConfigError


def _read_table(path: Path, what: str):
    from unipet.fileio import read_csv_table

    return read_csv_table(path, what, "give the CSV file with one row per patient")


def _join_clinical(table, clinical_path: Path | None, id_col: str | None, clinical_id: str | None):
    """Add the outcome columns of a clinical CSV to a biomarker table, joined on the patient id."""
    from unipet.quantify.survival import join_clinical

    if clinical_path is None:
        return table
    if id_col is None:
        raise ConfigError("--clinical needs --id-col naming the patient id column of TABLE to join on")
    return join_clinical(table, _read_table(clinical_path, "clinical table"), id_col, clinical_id)


def _read_ids(path: Path | None) -> list[str] | None:
    """Patient ids, one per line (blank lines and lines starting with # skipped), or None."""
    if path is None:
        return None
    from unipet.errors import InputFileError

    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InputFileError(f"cannot read the derivation id list {path} ({exc.strerror}); give a text file with "
                             "one patient id per line") from None
    ids = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        raise ConfigError(f"the derivation id list {path} holds no id; write one patient id per line")
    return ids


def _design(design: str, derivation_col: str | None, derivation_ids: Path | None) -> str:
    """The design, checked against the options that go with it."""
    if design not in ("split", "fixed", "whole"):
        raise ConfigError(f"--design {design!r} is not known; use split, fixed or whole")
    if design != "fixed" and (derivation_col is not None or derivation_ids is not None):
        raise ConfigError("--derivation-col / --derivation-ids give the fixed design's derivation cohort; add "
                          "--design fixed")
    return design


def _markers(text: str) -> list[str]:
    markers = [m.strip() for m in text.split(",") if m.strip()]
    if not markers:
        raise ConfigError("--markers is empty; give comma-separated column names, e.g. total_mtv_ml,suv_max")
    return markers


@app.command("survival")
def survival_command(
    table: Path = typer.Argument(..., help="CSV with one row per patient (biomarkers, and time/event unless --clinical)."),
    time: str = typer.Option(..., "--time", help="Column of follow-up time."),
    event: str = typer.Option(..., "--event", help="Column of the event indicator (1 = event, 0 = censored)."),
    markers: str = typer.Option(..., "--markers", help="Comma-separated biomarker columns."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (summary.json, km_<marker>.png)."),
    derive_fraction: float = typer.Option(0.4, "--derive-fraction", help="Share of patients deriving the cut-offs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and of the bootstrap."),
    log: bool = typer.Option(False, "--log", help="Continuous Cox model on log1p(marker) (volumes, TLG)."),
    id_col: str = typer.Option(None, "--id-col", help="Pseudonymous patient id column, recorded with the split."),
    clinical: Path = typer.Option(None, "--clinical", help="CSV with time/event joined to TABLE on --id-col."),
    clinical_id: str = typer.Option(None, "--clinical-id", help="Id column of --clinical (default: --id-col)."),
    stratify: bool = typer.Option(True, "--stratify/--no-stratify", help="Stratify the split by the event."),
    design: str = typer.Option("split", "--design", help="split (random derivation cohort), fixed (given by "
                               "--derivation-col or --derivation-ids) or whole (no split: all patients)."),
    derivation_col: str = typer.Option(None, "--derivation-col", help="--design fixed: column marking the "
                                       "derivation cohort (1/true/derivation vs 0/false/validation)."),
    derivation_ids: Path = typer.Option(None, "--derivation-ids", help="--design fixed: text file of derivation "
                                        "patient ids (--id-col values), one per line."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples of the C-index interval."),
    time_unit: str = typer.Option("days", "--time-unit", help="Unit of --time, for the plot axis."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs in --out."),
) -> None:
    """Derive median cut-offs on a derivation cohort and test every marker on the validation cohort (or, with
    --design whole, on all patients).

    Writes OUT/summary.json (per marker: cut-off, Cox HR with 95 % CI and p dichotomised and continuous, log-rank p, C-index with bootstrap CI; the design and cohorts) and OUT/km_<marker>.png.

    Examples:

        unipet survival patients.csv --time os_days --event death --markers total_mtv_ml,total_tlg,suv_max --out surv

        unipet survival patients.csv --time os --event death --markers total_mtv_ml --design whole --out surv_all

        unipet survival patients.csv --id-col case --derivation-ids derivation.txt --design fixed --time os --event death --markers total_mtv_ml --out surv_fixed

        unipet survival quant/patients.csv --clinical cohort/clinical.csv --id-col case --clinical-id study_id --time time --event event --markers total_mtv_ml --log --out surv
    """
    require_inputs(survival_table=table, clinical_table=clinical)
    from rich.table import Table

    from unipet.report.survival import run_survival

    df = _join_clinical(_read_table(table, "survival table"), clinical, id_col, clinical_id)
    summary = run_survival(df, time, event, _markers(markers), derive_fraction=derive_fraction, seed=seed,
                           out_dir=out, log=log, id_col=id_col, stratify=stratify, n_boot=n_boot,
                           time_unit=time_unit, overwrite=overwrite,
                           design=_design(design, derivation_col, derivation_ids), derivation_col=derivation_col,
                           derivation_ids=_read_ids(derivation_ids))
    split = summary["split"]
    if design == "whole":
        title = f"all {split['n_validation']} patients, {split['events_validation']} events (no split)"
    else:
        source = f"seed {split['seed']}" if design == "split" else "given derivation cohort"
        title = (f"validation cohort: {split['n_validation']} patients, {split['events_validation']} events "
                 f"(cut-offs from {split['n_derivation']}, {source})")
    view = Table(title=title)
    for col in ("marker", "cut-off", "HR high/low (95% CI)", "p", "log-rank p", "C-index (95% CI)"):
        view.add_column(col)
    for marker, r in summary["results"].items():
        h, c = r["hr_dichotomised"], r["c_index"]
        view.add_row(marker, f"{r['cutoff']:.4g}", f"{h['hr']:.2f} ({h['lo']:.2f}-{h['hi']:.2f})", f"{h['p']:.3g}",
                     f"{r['logrank_p']:.3g}", f"{c['value']:.3f} ({c['lo']:.3f}-{c['hi']:.3f})")
    console.print(view)
    console.print(f"wrote {out / 'summary.json'}")


@app.command("survival-compare")
def survival_compare_command(
    sources: list[str] = typer.Option(..., "--source", help="NAME=patients.csv, once per segmentation source."),
    clinical: Path = typer.Option(..., "--clinical", help="CSV with the id, time and event columns."),
    time: str = typer.Option(..., "--time", help="Column of follow-up time."),
    event: str = typer.Option(..., "--event", help="Column of the event indicator (1 = event, 0 = censored)."),
    markers: str = typer.Option("total_mtv_ml,total_tlg,suv_max", "--markers", help="Comma-separated biomarkers."),
    out: Path = typer.Option(..., "--out", "-o",
                             help="CSV to write; name it SURV/comparison.csv for `unipet report --survival SURV`."),
    id_col: str = typer.Option("case", "--id-col", help="Patient id column of the source tables."),
    clinical_id: str = typer.Option(None, "--clinical-id", help="Id column of --clinical (default: --id-col)."),
    derive_fraction: float = typer.Option(0.4, "--derive-fraction", help="Share of patients deriving the cut-offs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and of the bootstrap."),
    log: bool = typer.Option(False, "--log", help="Continuous Cox model on log1p(marker)."),
    design: str = typer.Option("split", "--design", help="split, fixed (--derivation-col of --clinical or "
                               "--derivation-ids) or whole, as in `unipet survival`."),
    derivation_col: str = typer.Option(None, "--derivation-col", help="--design fixed: column of --clinical "
                                       "marking the derivation cohort."),
    derivation_ids: Path = typer.Option(None, "--derivation-ids", help="--design fixed: text file of derivation "
                                        "patient ids, one per line."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples of the C-index interval."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing CSV."),
) -> None:
    """Compare the prognostic value of biomarkers from several segmentations on one split (Table-3 layout).

    Examples:

        unipet survival-compare --source reference=q_ref/patients.csv --source model=q_pred/patients.csv --clinical clinical.csv --clinical-id study_id --time time --event event --out surv/comparison.csv
    """
    from unipet.quantify.survival import with_id_column
    from unipet.report.survival import compare_sources

    tables = {}
    for spec in sources:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--source {spec!r} must look like NAME=path/to/patients.csv")
        tables[name] = _read_table(Path(path), f"source {name!r}")
    outcome = with_id_column(_read_table(clinical, "clinical table"), clinical_id or id_col, id_col, "clinical table")
    tables = {k: v.assign(**{id_col: v[id_col].astype(str)}) if id_col in v.columns else v for k, v in tables.items()}
    result = compare_sources(tables, time, event, _markers(markers), outcome=outcome, id_col=id_col,
                             derive_fraction=derive_fraction, seed=seed, log=log, n_boot=n_boot, out_csv=out,
                             overwrite=overwrite, design=_design(design, derivation_col, derivation_ids),
                             derivation_col=derivation_col, derivation_ids=_read_ids(derivation_ids))
    console.print(result[["marker", "source", "HR (95% CI)", "p", "C-index (95% CI)"]].to_string(index=False))
    console.print(f"wrote {out}")
