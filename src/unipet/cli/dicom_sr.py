"""``unipet dicom-sr``: a lesion mask → DICOM-SEG (one segment per lesion) + DICOM SR (TID 1500 measurements)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from unipet.cli._common import console
from unipet.cli.app import app


def lesion_report(mask_path: Path, dicom_dir: Path, out_dir: Path, label: str = "lesion", series: str | None = None,
                  connectivity: int = 18, overwrite: bool = False) -> tuple[Path, Path, Any]:
    """Measure every lesion of a mask on its PET series and write ``OUT/seg.dcm`` and ``OUT/sr.dcm``.

    Lesions are the mask's connected components (``connectivity``, autoPET's 18 by default), numbered in raster
    order like ``unipet quantify``'s lesion table; SUV is body-weight SUV of the series (QIBA rules); SUVpeak is
    PERCIST's (the highest mean SUV in a 1 mL sphere within the lesion).

    Returns:
        ``(seg_path, sr_path, lesion table)``.
    """
    import numpy as np

    from unipet.fileio import check_writable
    from unipet.io.nifti import load_volume
    from unipet.quantify.dicom_results import write_lesion_results

    seg_path, sr_path = out_dir / "seg.dcm", out_dir / "sr.dcm"
    for path in (seg_path, sr_path):
        check_writable(path, overwrite)
    mask, affine = load_volume(mask_path, what="mask", dtype=np.uint8)
    table = write_lesion_results(mask, affine, dicom_dir, seg_path, sr_path, label=label, series=series,
                                 connectivity=connectivity, overwrite=overwrite)
    return seg_path, sr_path, table


@app.command("dicom-sr")
def dicom_sr_command(
    mask: Path = typer.Argument(..., help="Lesion mask NIfTI on the PET grid (e.g. a `unipet predict` output)."),
    dicom_dir: Path = typer.Argument(..., help="Folder holding the PET series the mask was drawn on."),
    out_dir: Path = typer.Argument(..., help="Folder to write seg.dcm and sr.dcm into."),
    label: str = typer.Option("lesion", "--label", help="Segment label prefix (segments are '<label> 1..N')."),
    series: str = typer.Option(None, "--series", help="PET SeriesInstanceUID; default the largest PET series."),
    connectivity: int = typer.Option(18, "--connectivity", help="Voxel connectivity of a lesion: 6, 18 or 26."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing seg.dcm / sr.dcm."),
) -> None:
    """Write the lesions of a mask for PACS: a DICOM-SEG with one segment per lesion and a DICOM Structured Report
    (TID 1500) with each lesion's volume, SUVmax, SUVmean, SUVpeak (PERCIST) and TLG, referencing its segment and
    the PET series (needs highdicom: pip install "unipet\\[dicom-seg]").

    Examples:

        unipet dicom-sr predictions/dcm-1a2b3c.nii.gz study/PET results/

        unipet dicom-sr mask.nii.gz study/ results/ --label "lymphoma lesion" --overwrite
    """
    seg_path, sr_path, table = lesion_report(mask, dicom_dir, out_dir, label=label, series=series,
                                             connectivity=connectivity, overwrite=overwrite)
    console.print(f"wrote {seg_path} ({len(table)} segments) and {sr_path} ({len(table)} lesions: volume, SUVmax, "
                  f"SUVmean, SUVpeak, TLG); total MTV {table['mtv_ml'].sum():.1f} mL")
