"""``unipet survival`` and ``unipet survival-compare``: biomarker cut-offs, hazard ratios, C-index, KM curves."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import app
from unipet.errors import ConfigError


def _read_table(path: Path, what: str):
    from unipet.fileio import read_csv_table

    return read_csv_table(path, what, "give the CSV file with one row per patient")


def _join_clinical(table, clinical_path: Path | None, id_col: str | None, clinical_id: str | None):
    """Add the outcome columns of a clinical CSV to a biomarker table, joined on the patient id."""
    if clinical_path is None:
        return table
    if id_col is None:
        raise ConfigError("--clinical needs --id-col naming the patient id column of TABLE to join on")
    clinical = _read_table(clinical_path, "clinical table")
    clinical_id = clinical_id or id_col
    for name, frame, col in (("TABLE", table, id_col), ("clinical table", clinical, clinical_id)):
        if col not in frame.columns:
            raise ConfigError(f"the {name} has no column {col!r} to join on; pass --id-col / --clinical-id")
    clinical = clinical.rename(columns={clinical_id: id_col})
    clinical = clinical[[id_col, *[c for c in clinical.columns if c not in table.columns]]]
    return table.assign(**{id_col: table[id_col].astype(str)}).merge(
        clinical.assign(**{id_col: clinical[id_col].astype(str)}), on=id_col, how="inner")


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
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples of the C-index interval."),
    time_unit: str = typer.Option("days", "--time-unit", help="Unit of --time, for the plot axis."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs in --out."),
) -> None:
    """Derive median cut-offs on a derivation cohort and test every marker on the validation cohort.

    Writes OUT/summary.json (per marker: cut-off, Cox HR with 95 % CI and p dichotomised and continuous, log-rank p, C-index with bootstrap CI; the split and seed) and OUT/km_<marker>.png.

    Examples:

        unipet survival patients.csv --time os_days --event death --markers total_mtv_ml,total_tlg,suv_max --out surv

        unipet survival quant/patients.csv --clinical cohort/clinical.csv --id-col case --clinical-id study_id --time time --event event --markers total_mtv_ml --log --out surv
    """
    from rich.table import Table

    from unipet.quantify.survival import run_survival

    df = _join_clinical(_read_table(table, "survival table"), clinical, id_col, clinical_id)
    summary = run_survival(df, time, event, _markers(markers), derive_fraction=derive_fraction, seed=seed,
                           out_dir=out, log=log, id_col=id_col, stratify=stratify, n_boot=n_boot,
                           time_unit=time_unit, overwrite=overwrite)
    split = summary["split"]
    view = Table(title=f"validation cohort: {split['n_validation']} patients, {split['events_validation']} events "
                       f"(cut-offs from {split['n_derivation']}, seed {split['seed']})")
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
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples of the C-index interval."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing CSV."),
) -> None:
    """Compare the prognostic value of biomarkers from several segmentations on one split (Table-3 layout).

    Examples:

        unipet survival-compare --source reference=q_ref/patients.csv --source model=q_pred/patients.csv --clinical clinical.csv --clinical-id study_id --time time --event event --out surv/comparison.csv
    """
    from unipet.quantify.survival import compare_sources

    tables = {}
    for spec in sources:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--source {spec!r} must look like NAME=path/to/patients.csv")
        tables[name] = _read_table(Path(path), f"source {name!r}")
    outcome = _read_table(clinical, "clinical table")
    if (clinical_id or id_col) not in outcome.columns:
        raise ConfigError(f"the clinical table has no column {(clinical_id or id_col)!r}; pass --clinical-id")
    outcome = outcome.rename(columns={clinical_id or id_col: id_col}).assign(
        **{id_col: lambda d: d[id_col].astype(str)})
    tables = {k: v.assign(**{id_col: v[id_col].astype(str)}) if id_col in v.columns else v for k, v in tables.items()}
    result = compare_sources(tables, time, event, _markers(markers), outcome=outcome, id_col=id_col,
                             derive_fraction=derive_fraction, seed=seed, log=log, n_boot=n_boot, out_csv=out,
                             overwrite=overwrite)
    console.print(result[["marker", "source", "HR (95% CI)", "p", "C-index (95% CI)"]].to_string(index=False))
    console.print(f"wrote {out}")
