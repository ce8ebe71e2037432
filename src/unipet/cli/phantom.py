"""``unipet phantom``: write a synthetic whole-body PET/CT cohort (autoPET layout + clinical table)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import app


class PhantomSize(str, Enum):
    small = "small"
    full = "full"
    autopet = "autopet"


@app.command("phantom")
def phantom_command(
    out_dir: Path = typer.Argument(..., help="Output folder (must be empty unless --overwrite)."),
    n: int = typer.Option(12, "--n", help="Number of studies."),
    seed: int = typer.Option(0, "--seed", help="Cohort seed (same seed, same cohort)."),
    size: PhantomSize = typer.Option(PhantomSize.small, "--size",
                                     help="small: 96x96x192 at 5 mm; full: 224x224x330 at 2x2x3 mm; autopet: 400x400x326."),
    dicom: bool = typer.Option(False, "--dicom", help="Also write DICOM PT and CT series per study."),
    workers: int = typer.Option(1, "--workers", "-j", help="Parallel processes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier phantom cohort in OUT_DIR."),
    spectrum: str = typer.Option("default", "--spectrum",
                                 help="default (the phantom every earlier cohort had) or wide: bulky necrotic masses "
                                 "of modest SUV, muscle/limb lesions, head-and-neck uptake, a wider scanner range, "
                                 "partial fields of view; wide-body: wide without partial views (see unipet.data.phantom.spectrum)."),
    tasks: str = typer.Option(None, "--tasks", help="Cancer types dealt in turn, comma-separated (default: the "
                              "four phantom types; soft_tissue_sarcoma needs --spectrum wide)."),
) -> None:
    """Generate synthetic whole-body FDG PET/CT studies with lesion, organ and survival truth.

    Writes OUT_DIR/<patient>/<study>/{SUV,CTres,SEG,ORGANS}.nii.gz, OUT_DIR/clinical.csv and OUT_DIR/organs.json.

    Examples:

        unipet phantom cohort/ --n 24 --seed 1

        unipet phantom big/ --n 100 --size full -j 8

        unipet phantom wide/ --n 40 --seed 7 --spectrum wide

        unipet phantom sts/ --n 20 --spectrum wide --tasks soft_tissue_sarcoma
    """
    from unipet.data.phantom import write_phantom_cohort

    out = write_phantom_cohort(out_dir, n=n, seed=seed, size=size.value, dicom=dicom, overwrite=overwrite,
                               workers=workers, spectrum=spectrum,
                               tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()) if tasks else None)
    console.print(f"wrote {n} phantom studies ({size.value}, {spectrum} spectrum) to {out}; clinical table {out / 'clinical.csv'}", soft_wrap=True)
