"""``unipet mastpro pretrain-anatomy``: pre-train MAST-Pro's anatomical encoder as an organ-map autoencoder."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import family_command
from unipet.cli.mastpro import mastpro


@family_command(mastpro, "pretrain-anatomy", alias="pretrain-anatomy")
def pretrain_anatomy_command(
    cache: Path = typer.Argument(..., help="Cache folder (`unipet preprocess`) whose cases have organ maps."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to write (checkpoint/, log.jsonl)."),
    organ_classes: int = typer.Option(38, "--organ-classes", min=2, help="Organ label values 0..N-1 (MAST-Pro's "
                                      "organ_classes; 38 for the phantom's map)."),
    feature_size: int = typer.Option(48, "--feature-size", min=1, help="MAST-Pro's Swin feature size (tokens: 16x)."),
    widths: tuple[int, int, int] = typer.Option((32, 64, 128), "--widths", help="The encoder's conv widths "
                                                "(MAST-Pro's anatomy_widths)."),
    patch: tuple[int, int, int] = typer.Option((96, 96, 96), "--patch", help="Patch D H W (multiples of 32)."),
    iterations: int = typer.Option(5000, "--iterations", min=1, help="Optimizer steps."),
    batch_size: int = typer.Option(2, "--batch-size", min=1, help="Patches per step."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate (cosine decay to 0)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initialisation and of the patches."),
    device: str = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a checkpoint already in --out."),
) -> None:
    """Pre-train MAST-Pro's anatomical encoder by reconstructing organ maps (an organ autoencoder), then start
    MAST-Pro from it with `unipet train --model mastpro --init OUT`.

    Examples:

        unipet mastpro pretrain-anatomy cache/ --out runs/anatomy-ae

        unipet train cache/ --model mastpro --recipe mastpro --out runs/mastpro --init runs/anatomy-ae
    """
    from unipet.pretrain.organs import AnatomyPretrainConfig, pretrain_anatomy_encoder

    config = AnatomyPretrainConfig(organ_classes=organ_classes, feature_size=feature_size, widths=list(widths),
                                   patch_size=list(patch), iterations=iterations, batch_size=batch_size, lr=lr,
                                   seed=seed)
    result = pretrain_anatomy_encoder(cache, out, config, device=device, overwrite=overwrite)
    losses = result["losses"]
    console.print(f"{result['iteration']} steps: reconstruction loss {losses[0]:.4f} -> {losses[-1]:.4f}, dominant-organ "
                  f"accuracy {result['accuracy_start']:.3f} -> {result['accuracy_end']:.3f}; encoder in {out}",
                  markup=False)
