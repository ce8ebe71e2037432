"""``unipet view``: one self-contained interactive PET/CT page (NiiVue) of a study with its masks."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import app
from unipet.errors import ConfigError, InputFileError


def resolve_case(study: str, case_id: str | None, ct: Path | None, ref: Path | None):
    """A manifest ``Case`` (and its task set) from the command's STUDY argument.

    STUDY is a manifest JSON with ``--case ID`` (or written ``manifest.json#ID``), an autoPET-style study folder
    (``SUV.nii.gz``, optional ``CTres.nii.gz`` / ``CT.nii.gz`` and ``SEG.nii.gz``) or a PET SUV NIfTI (with
    optional ``--ct`` and ``--ref``).
    """
    from unipet.io.manifest import Case, Manifest

    path_text, _, fragment = study.partition("#")
    path = Path(path_text)
    case_id = case_id or (fragment or None)
    if not path.exists():
        raise InputFileError(f"{path} does not exist; give a manifest JSON (with --case), a study folder or a PET "
                             "NIfTI")
    if path.is_file() and path.suffix == ".json":
        manifest = Manifest.load(path)
        if case_id is None:
            if len(manifest) != 1:
                raise ConfigError(f"{path} holds {len(manifest)} studies; name one with --case ID (or {path}#ID)")
            return next(iter(manifest)), manifest.task_set
        return manifest.by_id(case_id), manifest.task_set
    if path.is_dir():
        pet = path / "SUV.nii.gz"
        if not pet.exists():
            raise InputFileError(f"the folder {path} has no SUV.nii.gz; give a study folder of the autoPET layout, a "
                                 "manifest JSON with --case, or the PET NIfTI itself")
        ct_found = next((p for p in (path / "CTres.nii.gz", path / "CT.nii.gz") if p.exists()), None)
        seg = path / "SEG.nii.gz"
        return Case(case_id=case_id or path.name, images={"PET": str(pet), **({"CT": str(ct or ct_found)} if
                    (ct or ct_found) else {})}, label=str(ref or seg) if (ref or seg.exists()) else None), None
    if not path.name.endswith((".nii.gz", ".nii")):
        raise InputFileError(f"{path} is neither a manifest JSON, a study folder nor a NIfTI (.nii/.nii.gz) PET")
    name = case_id or path.name.removesuffix(".gz").removesuffix(".nii")
    return Case(case_id=name, images={"PET": str(path), **({"CT": str(ct)} if ct else {})},
                label=str(ref) if ref else None), None


@app.command("view")
def view_command(
    study: str = typer.Argument(..., help="Manifest JSON (with --case, or manifest.json#ID), autoPET study folder, or PET SUV NIfTI."),
    case: str = typer.Option(None, "--case", help="Case id in the manifest."),
    pred: Path = typer.Option(None, "--pred", help="Predicted mask NIfTI on the PET grid, or a folder of <case_id>.nii.gz."),
    ct: Path = typer.Option(None, "--ct", help="CT NIfTI (when STUDY is a PET file); resampled onto the PET grid."),
    ref: Path = typer.Option(None, "--ref", help="Reference mask NIfTI on the PET grid (when STUDY is a PET file)."),
    out: Path = typer.Option(None, "--out", "-o", help="HTML page to write (default <case_id>_view.html)."),
    max_mb: float = typer.Option(30.0, "--max-mb", help="Size limit of the page; volumes are cropped/downsampled to fit."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing page."),
) -> None:
    """Write one self-contained HTML page to look at a study: CT with the PET fused (SUV colour map, window and
    opacity adjustable), the reference and predicted masks as toggleable overlays, three planes and a 3-D render
    (NiiVue, embedded), and PET MIPs with outlines. Opens from disk in any browser with WebGL2; no server.

    Examples:

        unipet view cohort.json --case PH00_0003_0 --pred predictions/

        unipet view cohort.json#PH00_0003_0 --pred predictions/PH00_0003_0.nii.gz --out study.html

        unipet view autopet/PETCT_0001/study-1 --pred preds/PETCT_0001-study-1.nii.gz

        unipet view suv.nii.gz --ct ct.nii.gz --ref seg.nii.gz --out view.html
    """
    from unipet.io.manifest import load_study
    from unipet.report.viewer import load_prediction, write_study_viewer

    if max_mb <= 3:
        raise ConfigError(f"--max-mb {max_mb:g} leaves no room for the images (the viewer script alone is 2.3 MB); "
                          "give at least 4")
    the_case, task_set = resolve_case(study, case, ct, ref)
    loaded = load_study(the_case, task_set, with_label=True)
    mask = None
    if pred is not None:
        pred_path = pred / f"{the_case.case_id}.nii.gz" if pred.is_dir() else pred
        if not pred_path.exists():
            raise InputFileError(f"no prediction {pred_path}; give the mask file or the `unipet predict` folder")
        mask = load_prediction(pred_path, loaded)
    out = out or Path(f"{the_case.case_id}_view.html")
    path = write_study_viewer(out, loaded, mask, max_mb=max_mb, overwrite=overwrite)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a browser")
