"""``unipet h2aseg tamw``: the PET/CT emphasis per decoder level that a trained H2ASeg's TAMW has learnt."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import family, family_command

h2aseg = family("h2aseg", "H2ASeg: the TAMW channel weights of a trained model (the paper's Table 3).",
                ["unipet h2aseg tamw runs/h2aseg cache/"])


@family_command(h2aseg, "tamw", alias="tamw-weights")
def tamw_weights_command(
    checkpoint: Path = typer.Argument(..., help="H2ASeg run folder or checkpoint folder written by `unipet train`."),
    cache: Path = typer.Argument(..., help="Cache folder (`unipet preprocess`) the model was trained on."),
    split: str = typer.Option(None, "--split", help="Draw patches from this split only (default: val + test, "
                                                    "else every study)."),
    patches: int = typer.Option(64, "--patches", min=1, help="Number of patches averaged."),
    lesion_share: float = typer.Option(1.0, "--lesion-share", min=0.0, max=1.0,
                                       help="Share of lesion-centred patches (the rest are random)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Patches per forward pass."),
    seed: int = typer.Option(0, help="Seed of the patch sampler."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the table (one row per level) as JSON here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
) -> None:
    """Mean TAMW foreground / background channel weights of PET, CT and decoder channels per decoder level
    (H2ASeg's Table 3), on patches of the training cache.

    Weights lie in (-1, 1); a positive foreground weight amplifies that modality's features inside the predicted
    lesion, a positive background weight amplifies them outside it.

    Examples:

        unipet h2aseg tamw runs/h2aseg cache/

        unipet h2aseg tamw runs/h2aseg cache/ --split test --patches 200 --out tamw.json

        unipet h2aseg tamw runs/h2aseg cache/ --lesion-share 0.5 --device cuda
    """
    from unipet.data.cache import Cache
    from unipet.errors import ConfigError
    from unipet.fileio import atomic_write_json, check_writable
    from unipet.analysis.h2aseg import tamw_report_on_cache
    from unipet.models.h2aseg import H2ASeg
    from unipet.checkpoint import load_checkpoint
    from unipet.device import resolve_device

    if out is not None:
        check_writable(out, overwrite)
    data = Cache(cache)
    ids = data.split(split) if split else None
    if split and not ids:
        raise ConfigError(f"the cache {cache} has no studies in split {split!r}; choose another split")
    model, meta = load_checkpoint(checkpoint, device=resolve_device(device))
    if not isinstance(model, H2ASeg):
        raise ConfigError(f"{checkpoint} holds a {meta.model_name} model; tamw-weights reads H2ASeg runs")
    mix = {"lesion": lesion_share, "random": 1.0 - lesion_share}
    rows = tamw_report_on_cache(model, data, ids, patches=patches, batch_size=batch_size, mix=mix, seed=seed,
                                patch_size=meta.patch_size)
    if out is not None:
        atomic_write_json(out, {"checkpoint": str(checkpoint), "patches": patches, "mix": mix, "levels": rows},
                          overwrite=overwrite)
    from rich.table import Table

    table = Table(title="TAMW mean channel weights (foreground / background)")
    for col in ("level", "scale", "PET fore", "CT fore", "PET back", "CT back", "decoder fore", "decoder back"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["level"]), r["scale"], *(f"{r[k]:+.3f}" for k in (
            "pet_fore", "ct_fore", "pet_back", "ct_back", "decoder_fore", "decoder_back")))
    console.print(table)
