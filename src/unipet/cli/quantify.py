"""``unipet quantify``: PET biomarkers (SUVmax/mean/peak, MTV, TLG, lesion count, Dmax) per lesion and patient."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unipet.cli._common import console, require_inputs
from unipet.cli.app import app


@app.command("quantify")
def quantify_command(
    suv: Optional[Path] = typer.Argument(None, help="SUV NIfTI (omit with --manifest)."),
    mask: Optional[Path] = typer.Argument(None, help="Lesion mask NIfTI on the SUV grid (omit with --manifest)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (lesions.csv, patients.csv, quantify.json)."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Quantify every case of a manifest."),
    pred: Optional[Path] = typer.Option(None, "--pred", help="With --manifest: folder of masks <case>.nii.gz "
                                                             "(default: the manifest's reference labels)."),
    delineation: str = typer.Option("mask", help="mask, 41pct, suv2.5, suv4.0 or percist (needs the liver)."),
    connectivity: int = typer.Option(18, help="Voxel connectivity of lesions: 6, 18 or 26."),
    liver_mask: Optional[Path] = typer.Option(None, help="Liver mask NIfTI for --delineation percist."),
    organs: Optional[Path] = typer.Option(None, help="Organ map NIfTI (with --liver-label) for --delineation percist."),
    liver_label: Optional[int] = typer.Option(None, help="Liver value in the organ map(s)."),
    weight_kg: Optional[float] = typer.Option(None, help="Patient weight in kg (for SDmax)."),
    height_m: Optional[float] = typer.Option(None, help="Patient height in m (for SDmax)."),
    case: Optional[str] = typer.Option(None, help="Case name in the tables (default: the mask file name)."),
    workers: int = typer.Option(1, help="Processes quantifying cases in parallel (--manifest)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
) -> None:
    """Measure lesions (SUVmax, SUVmean, SUVpeak IBSI/PERCIST, MTV, TLG, centroid) and patients (total MTV/TLG,
    lesion count, Dmax, SDmax) from an SUV volume and a lesion mask.

    Examples:

        unipet quantify SUV.nii.gz MASK.nii.gz --out quant/

        unipet quantify SUV.nii.gz MASK.nii.gz --out quant/ --delineation percist --liver-mask liver.nii.gz

        unipet quantify --manifest manifest.json --pred preds/ --out quant/ --delineation 41pct
    """
    require_inputs(SUV_file=suv, mask_file=mask, manifest=manifest)
    from unipet.errors import ConfigError
    from unipet.quantify.biomarkers import QuantifyConfig
    from unipet.quantify.runner import quantify_files, quantify_manifest

    config = QuantifyConfig(delineation=delineation, connectivity=connectivity)
    if manifest is not None:
        if suv is not None or mask is not None:
            raise ConfigError("give either SUV and MASK files or --manifest, not both")
        lesions, patients, _ = quantify_manifest(manifest, out, pred_dir=pred, liver_label=liver_label, config=config,
                                                 overwrite=overwrite, workers=workers)
    else:
        if suv is None or mask is None:
            raise ConfigError("give an SUV NIfTI and a mask NIfTI, or --manifest M [--pred PRED_DIR]")
        lesions, patients, _ = quantify_files(suv, mask, out, case=case, liver_mask=liver_mask, organs=organs,
                                              liver_label=liver_label, weight_kg=weight_kg, height_m=height_m,
                                              config=config, overwrite=overwrite)
    console.print(f"{len(lesions)} lesions in {len(patients)} studies; total MTV "
                  f"{patients['total_mtv_ml'].sum():.1f} mL; results in {out}")
