"""``unipet preprocess``: manifest → cache of normalised, memory-mappable arrays."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import app


@app.command("preprocess")
def preprocess_command(
    manifest_path: Path = typer.Argument(..., help="Manifest JSON written by `unipet import`."),
    out: Path = typer.Option(..., "--out", "-o", help="Cache folder (resumable: finished cases are skipped)."),
    spacing: tuple[float, float, float] = typer.Option(None, "--spacing", help="Target spacing z y x (mm); default native."),
    channels: str = typer.Option("CT,PET", "--channels", help="Network channel order."),
    ct_norm: str = typer.Option("ct-zscore", "--ct-norm", help="ct-zscore (nnU-Net) or ct-window (level 0, width 1800)."),
    pet_norm: str = typer.Option("suv-zscore", "--pet-norm", help="suv-zscore, suv-log or suv-clip."),
    no_crop: bool = typer.Option(False, "--no-crop", help="Keep the full field of view instead of cropping to the body."),
    workers: int = typer.Option(1, "--workers", "-j", help="Parallel processes."),
) -> None:
    """Crop, resample and normalise every case into a cache with a lesion-instance index.

    Examples:

        unipet preprocess cohort.json --out cache/

        unipet preprocess autopet.json --out cache/ --spacing 3 2 2 -j 8
    """
    from rich.progress import Progress

    from unipet.data.cache import build_cache
    from unipet.io.manifest import Manifest

    manifest = Manifest.load(manifest_path)
    with Progress(console=console, transient=True) as bar:
        job = bar.add_task("preprocessing", total=len(manifest))
        cache = build_cache(manifest, out, channels=[c.strip() for c in channels.split(",")], ct_norm=ct_norm,
                            pet_norm=pet_norm, target_spacing=spacing, crop_to_body=not no_crop, workers=workers,
                            progress=lambda done, total: bar.update(job, completed=done, total=total))
    console.print(f"cache {out}: {len(cache)} cases, channels {list(cache.config.channels)}")
