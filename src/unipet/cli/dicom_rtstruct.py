"""``unipet dicom-rtstruct``: a lesion mask → an RT Structure Set referencing its PET series."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import app


def mask_to_rtstruct(mask_path: Path, dicom_dir: Path, out: Path, task: str | None = None, per_lesion: bool = False,
                     series: str | None = None, connectivity: int = 18, overwrite: bool = False) -> list[str]:
    """Write ``mask_path`` (NIfTI on the PET grid) as an RTSTRUCT at ``out``; returns the ROI names written.

    Raises:
        ImageGeometryError: the mask is not on the grid of the PET series; LabelError: the mask is empty.
    """
    import numpy as np

    from unipet.errors import ImageGeometryError
    from unipet.fileio import check_writable
    from unipet.io.dicom import sort_slices
    from unipet.io.dicom_sr import pet_sources
    from unipet.io.nifti import load_volume
    from unipet.io.rtstruct import lesion_rois, write_rtstruct
    from unipet.study import same_grid

    check_writable(out, overwrite)
    mask, affine = load_volume(mask_path, what="mask", dtype=np.uint8)
    sources = pet_sources(dicom_dir, series)
    _, pet_affine = sort_slices(sources)
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if not same_grid(mask.shape, affine, shape, pet_affine, tol_mm=1e-2):
        raise ImageGeometryError(f"{mask_path} is not on the grid of the PET series in {dicom_dir}; give the mask "
                                 "predicted from this PET (or resample it onto the PET grid)")
    labels, names = lesion_rois(mask, task, per_lesion, connectivity)
    write_rtstruct(labels, sources, out, names, overwrite=overwrite)
    return names


@app.command("dicom-rtstruct")
def dicom_rtstruct_command(
    mask: Path = typer.Argument(..., help="Lesion mask NIfTI on the PET grid (e.g. a `unipet predict` output)."),
    dicom_dir: Path = typer.Argument(..., help="Folder holding the PET series the mask was drawn on."),
    out: Path = typer.Argument(..., help="RT Structure Set file to write (.dcm)."),
    task: str = typer.Option(None, "--task", help="Task named in the ROI names ('<task> lesion N'); default none."),
    per_lesion: bool = typer.Option(False, "--per-lesion/--one-roi", help="One ROI per connected lesion, or one ROI for all (default)."),
    series: str = typer.Option(None, "--series", help="PET SeriesInstanceUID; default the only PET series."),
    connectivity: int = typer.Option(18, "--connectivity", help="Voxel connectivity of a lesion (--per-lesion): 6, 18 or 26."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """Write a mask as an RT Structure Set (closed planar contours per PET slice) referencing its PET series,
    for a radiotherapy planning system or any viewer that reads RTSTRUCT.

    Contours are traced at the voxel-centre boundary (marching squares at 0.5), so `unipet import dicom` reads
    them back to the same voxels.

    Examples:

        unipet dicom-rtstruct predictions/dcm-1a2b3c.nii.gz study/PET rs.dcm --task sarcoma

        unipet dicom-rtstruct mask.nii.gz study/ rs.dcm --per-lesion --overwrite
    """
    names = mask_to_rtstruct(mask, dicom_dir, out, task=task, per_lesion=per_lesion, series=series,
                             connectivity=connectivity, overwrite=overwrite)
    shown = ", ".join(names[:5]) + (f", … ({len(names)} ROIs)" if len(names) > 5 else "")
    console.print(f"wrote {out}: {len(names)} ROI(s): {shown}")
