"""``unipet preprocess``: manifest → cache of normalised, memory-mappable arrays."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console, require_inputs
from unipet.cli.app import app


@app.command("preprocess")
def preprocess_command(
    manifest_path: Path = typer.Argument(..., help="Manifest JSON written by `unipet import`."),
    out: Path = typer.Option(..., "--out", "-o", help="Cache folder (resumable: finished cases are skipped)."),
    spacing: tuple[float, float, float] = typer.Option(
        None, "--spacing", help="Target spacing z y x (mm); default: planned from the training cases (median "
        "spacing, nnU-Net's anisotropy rule; see unipet.data.plan)."),
    native: bool = typer.Option(False, "--native", help="Keep each study's own grid (no resampling)."),
    channels: str = typer.Option("CT,PET", "--channels", help="Network channel order."),
    ct_norm: str = typer.Option("ct-zscore", "--ct-norm", help="ct-zscore (nnU-Net) or ct-window (level 0, width 1800)."),
    pet_norm: str = typer.Option("suv-zscore", "--pet-norm", help="suv-zscore, suv-log or suv-clip."),
    no_crop: bool = typer.Option(False, "--no-crop", help="Keep the full field of view instead of cropping to the body."),
    workers: int = typer.Option(1, "--workers", "-j", help="Parallel processes."),
    like: Path = typer.Option(None, "--like", help="Preprocess exactly as this checkpoint / run folder was trained "
                              "(its channels, normalisation, spacing, crop), e.g. to fine-tune it on new data; "
                              "--spacing, --native, --channels, --ct-norm, --pet-norm and --no-crop are then ignored."),
) -> None:
    """Reorient, crop, resample and normalise every case into a cache with a lesion-instance index.

    Every case not cached yet is read once before anything is written, and all bad cases are reported together.

    Examples:

        unipet preprocess cohort.json --out cache/

        unipet preprocess autopet.json --out cache/ --spacing 3 2 2 -j 8

        unipet preprocess real.json --out cache/ --like runs/default   # to fine-tune runs/default on it
    """
    require_inputs(manifest=manifest_path)
    from rich.progress import Progress

    from unipet.data.cache import build_cache
    from unipet.errors import BatchError, ConfigError
    from unipet.io.manifest import Manifest, check_cases

    if spacing is not None and not all(float(v) > 0 for v in spacing):
        raise ConfigError(f"--spacing must be three positive sizes in mm (z y x), got {tuple(spacing)}")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    names = [c.strip().upper() for c in channels.split(",") if c.strip()]
    if not names or any(c not in ("CT", "PET") for c in names) or len(set(names)) != len(names):
        raise ConfigError(f"--channels must list CT and/or PET once each (e.g. CT,PET), got {channels!r}")
    reference = None
    if like is not None:
        from unipet.checkpoint import find_checkpoint, read_meta

        from unipet.data.preprocess import PreprocessConfig

        reference = PreprocessConfig.from_dict(read_meta(find_checkpoint(like)).preprocess)
    manifest = Manifest.load(manifest_path)
    # every case not cached yet is read once first, so that all bad cases are reported together
    todo = [c for c in manifest if not (out / c.case_id / "case.json").exists()]
    bad = check_cases(manifest, todo)
    if bad:
        listed = "; ".join(f"{cid}: {msg}" for cid, msg in bad.items())
        raise BatchError(f"{len(bad)} of {len(manifest)} cases cannot be preprocessed — {listed} — fix or remove them "
                         "from the manifest, then run again (nothing was written)")
    with Progress(console=console, transient=True) as bar:
        job = bar.add_task("preprocessing", total=len(manifest))
        cache = build_cache(manifest, out, channels=[c.strip() for c in channels.split(",")], ct_norm=ct_norm,
                            pet_norm=pet_norm,
                            target_spacing=None if native else (spacing or "plan"), crop_to_body=not no_crop, workers=workers,
                            preprocess=reference,
                            progress=lambda done, total: bar.update(job, completed=done, total=total))
    grid = cache.config.target_spacing
    console.print(f"cache {out}: {len(cache)} cases, channels {list(cache.config.channels)}, spacing "
                  + ("native" if grid is None else " x ".join(f"{s:g}" for s in grid) + " mm (z y x)"))
