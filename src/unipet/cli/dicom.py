"""``unipet suv``: a DICOM PET series → SUV NIfTI (QIBA rules, five normalisations); ``unipet dicom-seg``: mask → DICOM-SEG."""
from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import app


class SuvKind(str, Enum):
    bw = "bw"
    lbm_james = "lbm-james"
    lbm_janma = "lbm-janma"
    bsa = "bsa"
    ibw = "ibw"


@app.command("suv")
def suv_command(
    dicom_dir: Path = typer.Argument(..., help="Folder holding the PET series (searched recursively)."),
    out: Path = typer.Argument(..., help="SUV NIfTI to write (.nii.gz)."),
    kind: SuvKind = typer.Option(SuvKind.bw, "--kind", help="Normalisation: bw, lbm-james, lbm-janma, bsa or ibw."),
    series: str = typer.Option(None, "--series", help="PET SeriesInstanceUID; default the only PET series, else the only attenuation-corrected one; several -> listed, choose one."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """Convert a DICOM PET series to SUV (Bq/mL, Philips CNTS, GML and CM2ML inputs) and save it as NIfTI.

    Examples:

        unipet suv study/PET suv.nii.gz

        unipet suv study/ sul.nii.gz --kind lbm-janma

        unipet suv study/ suv.nii.gz --series 1.2.840.113619.2.55.3 --overwrite
    """
    from unipet.fileio import check_writable
    from unipet.io.dicom import read_pet_suv
    from unipet.io.nifti import save_volume

    check_writable(out, overwrite)
    suv, affine, meta = read_pet_suv(dicom_dir, kind=kind.value, series_uid=series)
    save_volume(suv, affine, out, overwrite=overwrite)
    uptake = f", uptake {meta['uptake_s'] / 60:.1f} min" if meta.get("uptake_s") is not None else ""
    console.print(f"wrote {out}: SUV{kind.value} {suv.shape[::-1]} (x, y, z), units {meta['units']}, "
                  f"decay correction {meta['decay_correction'] or '-'}{uptake}, max {float(suv.max()):.2f}")


@app.command("dicom-seg")
def dicom_seg_command(
    mask: Path = typer.Argument(..., help="Binary mask NIfTI on the PET grid (e.g. a `unipet predict` output)."),
    dicom_dir: Path = typer.Argument(..., help="Folder holding the PET series the mask was drawn on."),
    out: Path = typer.Argument(..., help="DICOM Segmentation file to write (.dcm)."),
    label: str = typer.Option("lesion", "--label", help="Segment label."),
    series: str = typer.Option(None, "--series", help="PET SeriesInstanceUID; default the only PET series, else the only attenuation-corrected one; several -> listed, choose one."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """Write a mask as DICOM-SEG referencing its PET series (needs highdicom: pip install "unipet\\[dicom-seg]").

    The mask must lie on the PET grid: its affine is checked against the series' geometry.

    Examples:

        unipet dicom-seg predictions/dcm-1a2b3c.nii.gz study/PET seg.dcm

        unipet dicom-seg mask.nii.gz study/ seg.dcm --label "lymphoma lesion" --overwrite
    """
    import numpy as np

    from unipet.fileio import check_writable
    from unipet.io.nifti import load_volume
    from unipet.io.seg_export import write_dicom_seg

    check_writable(out, overwrite)
    volume, affine = load_volume(mask, what="mask", dtype=np.uint8)
    write_dicom_seg(volume, dicom_dir, out, label_name=label, overwrite=overwrite, series_uid=series, affine=affine)
    console.print(f"wrote {out}: {int(volume.sum())} voxels labelled {label!r}")
