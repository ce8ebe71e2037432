"""``unipet train``: train a registered model on a cache (or a manifest, cached first) into a run folder."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from unipet.cli._common import console, require_inputs
from unipet.cli.app import app
from unipet.errors import ConfigError


def parse_model_kw(pairs: list[str] | None) -> dict:
    """``["base_width=8", "pa_head=released"]`` -> ``{"base_width": 8, "pa_head": "released"}`` (values parsed as
    JSON when they are JSON, else kept as strings)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--model-kw {pair!r} is not key=value; write e.g. --model-kw base_width=8")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


@app.command("train")
def train_command(
    data: Path = typer.Argument(..., help="Cache folder (`unipet preprocess`) or manifest JSON (cached into OUT/cache)."),
    model: str = typer.Option(..., "--model", "-m", help="Registered model name (`unipet models`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoint/, log.jsonl, tb/."),
    recipe: str = typer.Option("nnunet", "--recipe", help="Shipped recipe (nnunet, dpdnet, transformer) or a JSON/YAML file."),
    iterations: int = typer.Option(None, "--iterations", help="Optimizer steps (overrides the recipe)."),
    patch: tuple[int, int, int] = typer.Option(None, "--patch", help="Patch size D H W in voxels."),
    batch: int = typer.Option(None, "--batch", help="Samples per step (per process under torchrun)."),
    device: str = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    model_kw: list[str] = typer.Option(None, "--model-kw", help="Builder option key=value (repeatable)."),
    workers: int = typer.Option(None, "--workers", "-j", help="Data-loader processes (overrides the recipe)."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", help="Iterations between checkpoints."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (log.jsonl is still written)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (as --no-progress; the bar is shown on an interactive terminal only anyway); log.jsonl, metrics.csv and TensorBoard are still written."),
    init: Path = typer.Option(None, "--init", help="Start from these weights (run folder, `unipet anatomy pretrain` output or .safetensors); tensors copied where shapes fit."),
    trainable: str = typer.Option(None, "--trainable", help="Train only this parameter scope of the model (e.g. peft); the rest is frozen."),
    peft: bool = typer.Option(False, "--peft", help="Parameter-efficient fine-tuning: same as --trainable peft (MAST-Pro)."),
) -> None:
    """Train a model; writes OUT/checkpoint/ (model.safetensors + meta.json + training state).

    Checkpoints are written every --checkpoint-every iterations and at the end; SIGTERM saves and exits with
    status 143; --resume continues exactly where the last checkpoint left off. Under torchrun it trains with DDP.
    Any error shuts the data-loader workers down and prints one line (exit 2).

    Examples:

        unipet train cache/ --model dpdnet --out runs/dpdnet --recipe dpdnet

        unipet train cohort.json --model stunet-s --out runs/s --iterations 2000 --patch 64 96 96 --batch 2

        unipet train cache/ --model dpdnet --out runs/dpdnet --resume

        torchrun --nproc_per_node=4 -m unipet train cache/ --model dpdnet --out runs/ddp --device cuda

        unipet train cache/ --model mastpro --out runs/peft --init runs/pretrained --peft
    """
    require_inputs(data=data)
    from unipet.errors import InterruptedRun
    from unipet.infer.predictor import check_device
    from unipet.train import run_guard, train
    from unipet.device import env_world

    if peft and trainable not in (None, "peft"):
        raise ConfigError(f"--peft and --trainable {trainable} contradict each other; give one of them")
    kw = parse_model_kw(model_kw)
    run_guard.check_options(model, kw, iterations=iterations, batch_size=batch, workers=workers,
                            checkpoint_every=checkpoint_every, patch_size=patch)
    if device is not None:
        check_device(device)
    if not resume:  # the recipe (a file may set checkpoint_every 0 too) is checked before any data is read
        from unipet.train.recipes import load_recipe

        r = load_recipe(recipe, iterations=iterations, batch_size=batch, workers=workers,
                        checkpoint_every=checkpoint_every)
        run_guard.check_options(iterations=r.iterations, batch_size=r.batch_size, workers=r.workers,
                                checkpoint_every=r.checkpoint_every, patch_size=r.patch_size)
    if env_world()[0] == 0:
        run_guard.prepare_run(out, resume)
    with run_guard.guarded(out):
        result = train(data, model, out, recipe=recipe, model_kw=kw, device=device, resume=resume,
                       iterations=iterations, patch_size=patch, batch_size=batch, workers=workers,
                       checkpoint_every=checkpoint_every, progress=not (no_progress or quiet), init_from=init,
                       trainable="peft" if peft else trainable)
    if env_world()[0] != 0:  # under torchrun only rank 0 reports
        if result.stopped:
            raise InterruptedRun("stopped by SIGTERM", run_guard.stopped_exit_code())
        return
    last = f", last loss {result.losses[-1]:.4f}" if result.losses else ""
    if result.stopped:
        raise InterruptedRun(f"training stopped by SIGTERM at iteration {result.iteration}{last}; the checkpoint in "
                             f"{out / 'checkpoint'} is complete — continue with --resume",
                             run_guard.stopped_exit_code())
    console.print(f"training finished at iteration {result.iteration}{last}; checkpoint in {out / 'checkpoint'}")
