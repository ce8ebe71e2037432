"""``unipet prompts``: the learned cancer-specific prompts of a DpDNet / UniSeg run in 2-D (DpDNet Fig. 2)."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import app
from unipet.errors import ConfigError


@app.command("prompts")
def prompts_command(
    run: Path = typer.Argument(..., help="Run folder or checkpoint folder of a dpdnet or uniseg model."),
    cache: Path = typer.Argument(..., help="Cache folder (`unipet preprocess`) with task-labelled studies, "
                                          "preprocessed like the run's training data."),
    plot: Path = typer.Option(..., "--plot", help="Write the scatter plot here (.png)."),
    csv: Path = typer.Option(None, "--csv", help="Also write the 2-D coordinates per patch (case, task, x, y)."),
    method: str = typer.Option("tsne", "--method", help="tsne (the paper's Fig. 2) or pca."),
    per_task: int = typer.Option(32, "--per-task", min=1, help="Lesion-centred patches drawn per task."),
    split: str = typer.Option(None, "--split", help="Only the studies of this split (train, val, test); default all."),
    seed: int = typer.Option(0, "--seed", help="Seed of the patch draw and of t-SNE."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
) -> None:
    """Plot the cancer-specific prompts a run learned: each lesion-centred patch's own-task prompt (the output
    of FUSE for its cancer type), embedded with t-SNE or PCA and coloured by cancer type; prints the silhouette
    score of the clusters (-1..1, higher = better separated).

    Examples:

        unipet prompts runs/dpdnet cache/ --plot prompts.png

        unipet prompts runs/dpdnet cache/ --split test --per-task 64 --plot fig2.png --csv fig2.csv --device cuda
    """
    from unipet.analysis.prompts import embed_2d, prompt_vectors, prompts_figure, separation
    from unipet.data.cache import Cache
    from unipet.fileio import atomic_write_bytes, atomic_write_text, check_writable
    from unipet.report.plots import figure_png
    from unipet.checkpoint import load_checkpoint

    if plot.suffix.lower() != ".png":
        raise ConfigError(f"--plot {plot}: the plot is written as PNG; give a path ending in .png")
    check_writable(plot, overwrite)
    if csv is not None:
        check_writable(csv, overwrite)
    data = Cache(cache)
    model, meta = load_checkpoint(run)
    channels = meta.preprocess_channels
    if channels and channels != [str(c).upper() for c in data.config.channels]:
        raise ConfigError(f"the cache {cache} holds channels {list(data.config.channels)} but the run was trained "
                          f"on {channels}; give a cache preprocessed like the run's training data")
    ids = [c for c in data.split(split) if data.info(c).get("task")]
    if not ids:
        raise ConfigError(f"the cache {cache} has no task-labelled studies{f' in split {split!r}' if split else ''}")
    table, vectors = prompt_vectors(model, data, ids, per_task=per_task, seed=seed, device=device)
    coords = embed_2d(vectors, method, seed=seed)
    score = separation(table, coords)
    title = f"{meta.model_name} cancer-specific prompts ({method.upper() if method == 'pca' else 't-SNE'})"
    atomic_write_bytes(plot, figure_png(prompts_figure(table, coords, title), dpi=150), overwrite=overwrite)
    if csv is not None:
        out = table.assign(x=coords[:, 0], y=coords[:, 1])
        atomic_write_text(csv, out.to_csv(index=False), overwrite=overwrite)
    console.print(f"{len(table)} prompts of {table['task'].nunique()} tasks -> {plot}; silhouette by task "
                  f"{score:.3f}", markup=False)
