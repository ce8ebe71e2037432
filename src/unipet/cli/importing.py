"""``unipet import`` (any layout → manifest) and ``unipet to-nnunet`` (manifest → nnU-Net raw)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from unipet.cli._common import console, require_inputs
from unipet.cli.app import app


class ImportKind(str, Enum):
    autopet = "autopet"
    nnunet = "nnunet"
    dicom = "dicom"
    phantom = "phantom"


@app.command("import")
def import_command(
    kind: ImportKind = typer.Argument(..., help="Layout of SOURCE: autopet, nnunet, dicom or phantom."),
    source: Path = typer.Argument(..., help="Dataset folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest JSON to write."),
    task_set: str = typer.Option("default", "--task-set", help="Shipped task-set name or JSON path."),
    task: str = typer.Option(None, "--task", help="Task of every case (nnunet, dicom), or of uncovered cases (autopet)."),
    metadata: Path = typer.Option(None, "--metadata", help="autopet: CSV with diagnosis per study (found automatically)."),
    negative_task: str = typer.Option(None, "--negative-task", help="autopet: task for NEGATIVE (lesion-free) studies."),
    dose_bq: float = typer.Option(None, "--dose-bq", help="autopet PET.nii.gz in Bq/mL: injected activity (Bq)."),
    weight_kg: float = typer.Option(None, "--weight-kg", help="autopet PET.nii.gz in Bq/mL: patient weight (kg)."),
    delay_s: float = typer.Option(None, "--delay-s", help="autopet PET.nii.gz in Bq/mL: injection-to-scan delay (s)."),
    suv_kind: str = typer.Option("bw", "--suv", help="dicom: SUV normalisation (bw, lbm-james, lbm-janma, bsa, ibw)."),
    series: list[str] = typer.Option(None, "--series", help="dicom: PET SeriesInstanceUID to read where a study has several (repeatable, one per study)."),
    roi: list[str] = typer.Option(None, "--roi", help="dicom: RTSTRUCT ROI name or regex for the reference label (repeatable: the i-th is label i); default ROIs named like GTV/tumour/lesion/mass."),
    seed: int = typer.Option(0, "--seed", help="Seed of the patient-level train/val/test split."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing manifest / converted files."),
) -> None:
    """Index a dataset into a manifest (case, patient, task, image paths, patient-level split).

    Examples:

        unipet import phantom cohort/ --out cohort.json

        unipet import autopet FDG-PET-CT-Lesions/ --out autopet.json --negative-task lymphoma

        unipet import nnunet Dataset221_AutoPETII/ --out nn.json --task lung_cancer

        unipet import dicom studies/ --out dicom.json --task breast_cancer

        unipet import dicom real_sts_dicom/ --out sts.json --roi GTV_Mass_CT
    """
    require_inputs(source=source)
    from unipet.fileio import check_writable
    from unipet.io import layouts
    from unipet.tasks import TaskSet

    check_writable(out, overwrite)
    ts = TaskSet.load(task_set)
    side = out.parent / f"{out.name.removesuffix('.json')}_files"
    if kind is ImportKind.autopet:
        manifest = layouts.import_autopet(source, ts, metadata_csv=metadata, negative_task=negative_task,
                                          default_task=task, converted_dir=side, dose_bq=dose_bq,
                                          weight_kg=weight_kg, delay_s=delay_s, split_seed=seed)
    elif kind is ImportKind.nnunet:
        manifest = layouts.import_nnunet(source, ts, task=task, split_seed=seed)
    elif kind is ImportKind.dicom:
        manifest = layouts.import_dicom(source, side, ts, task=task, kind=suv_kind, split_seed=seed, overwrite=overwrite,
                                         series_uid=series or None, rois=roi or None)
    else:
        manifest = layouts.import_phantom(source, ts, split_seed=seed)
    manifest.save(out, overwrite=overwrite)
    splits = {s: len(manifest.split(s)) for s in ("train", "val", "test")}
    console.print(f"wrote {out}: {len(manifest)} cases from {manifest.source} ({splits})")


@app.command("to-nnunet")
def to_nnunet_command(
    manifest_path: Path = typer.Argument(..., help="Manifest JSON."),
    out_dir: Path = typer.Argument(..., help="nnU-Net raw dataset folder to write (DatasetXXX_Name)."),
    channels: str = typer.Option("CT,PET", "--channels", help="Channel order, comma separated."),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Write a manifest as an nnU-Net raw dataset (dataset.json records the channel order).

    Examples:

        unipet to-nnunet cohort.json nnUNet_raw/Dataset900_Phantom
    """
    from unipet.io.layouts import export_nnunet
    from unipet.io.manifest import Manifest

    manifest = Manifest.load(manifest_path)
    out = export_nnunet(manifest, out_dir, channels=[c.strip().upper() for c in channels.split(",")], overwrite=overwrite)
    console.print(f"wrote nnU-Net raw dataset {out} ({len(manifest)} cases)")
