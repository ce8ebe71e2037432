"""``unipet anatomy pretrain`` (cross-modal self-aligned pre-training of the PET/CT encoders) and ``unipet anatomy organs``
(teacher–student organ maps for studies without one): the two preparation steps of the ``anatomy`` model."""
from __future__ import annotations

from pathlib import Path

import typer

from unipet.cli._common import console
from unipet.cli.app import family, family_command

anatomy = family("anatomy", "The anatomy model's preparation: cross-modal encoder pre-training, teacher–student "
                 "organ maps.", ["unipet anatomy pretrain cache/ --out runs/pretrain",
                                 "unipet anatomy organs cohort.json --out organs/"])
from unipet.errors import ConfigError


def _int_list(text: str | None, option: str) -> list[int] | None:
    """``"32,64,128"`` -> ``[32, 64, 128]`` (None stays None)."""
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a comma-separated list of integers; write e.g. 32,64,128,256,320") from None


@family_command(anatomy, "pretrain", alias="pretrain")
def pretrain_command(
    data: Path = typer.Argument(..., help="Cache folder (`unipet preprocess`, channels CT and PET) or manifest JSON."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoint/ (the encoder checkpoint), log.jsonl."),
    config: Path = typer.Option(None, "--config", help="JSON file of pre-training settings (PretrainConfig fields)."),
    iterations: int = typer.Option(None, "--iterations", help="Optimizer steps (default 100000)."),
    patch: tuple[int, int, int] = typer.Option(None, "--patch", help="Patch size D H W in voxels (default 112 160 128)."),
    batch: int = typer.Option(None, "--batch", help="Patches per step (default 2)."),
    widths: str = typer.Option(None, "--widths", help="Encoder stage widths, comma-separated (default 32,64,128,256,320); "
                                                      "train the anatomy model with the same."),
    depths: str = typer.Option(None, "--depths", help="Residual blocks per encoder stage (default 1,2,2,2,2)."),
    mask_ratio: float = typer.Option(None, "--mask-ratio", help="Share of cells masked per modality (default 0.6)."),
    align_weight: float = typer.Option(None, "--align-weight", help="Weight of the PET/CT alignment loss (default 1)."),
    lr: float = typer.Option(None, "--lr", help="Peak AdamW learning rate (default 1e-4)."),
    workers: int = typer.Option(None, "--workers", "-j", help="Data-loader processes (default 4)."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", help="Steps between checkpoints (default 1000)."),
    device: str = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (log.jsonl is still written)."),
) -> None:
    """Self-aligning cross-modal pre-training: masked 3-D patch reconstruction of PET and CT with modality-specific
    encoders aligned in a shared latent space, on studies without lesion labels.

    Writes OUT/checkpoint/ (safetensors + meta.json); start segmentation training from it with
    `unipet train --model anatomy --init OUT` (same --widths / --depths as model options).

    Examples:

        unipet anatomy pretrain cache/ --out runs/pretrain

        unipet anatomy pretrain cache/ --out runs/pretrain --iterations 20000 --patch 96 96 96 --mask-ratio 0.75

        unipet anatomy pretrain cache/ --out runs/pretrain --resume

        unipet train cache/ --model anatomy --out runs/anatomy --recipe anatomy --init runs/pretrain
    """
    from unipet.fileio import read_json_object
    from unipet.pretrain import PretrainConfig, pretrain

    base = PretrainConfig.from_dict(read_json_object(config, "pre-training config", "write a JSON object of settings")
                                    if config is not None else {})
    cfg = base.with_overrides(patch_size=list(patch) if patch else None, batch_size=batch,
                              widths=_int_list(widths, "--widths"), depths=_int_list(depths, "--depths"),
                              mask_ratio=mask_ratio, align_weight=align_weight, lr=lr, workers=workers,
                              checkpoint_every=checkpoint_every)
    result = pretrain(data, out, cfg, resume=resume, device=device, iterations=iterations, progress=not no_progress)
    last = result.logs[-1] if result.logs else None
    tail = (f"; last loss {last['loss']:.4f} (CT {last['mse_ct']:.4f}, PET {last['mse_pet']:.4f}, alignment "
            f"{last['align']:.4f})") if last else ""
    console.print(f"pre-training at iteration {result.iteration}{tail}; encoder checkpoint in {out / 'checkpoint'}")


@family_command(anatomy, "organs", alias="organs")
def organs_command(
    manifest: Path = typer.Argument(..., help="Manifest JSON: studies with organ maps teach, those without get one."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: teacher/, student/, maps/, manifest.json."),
    model: str = typer.Option("stunet-b", "--model", "-m", help="Organ segmenter (registered model name)."),
    recipe: str = typer.Option("organs", "--recipe", help="Training recipe of teacher and student (name or file)."),
    model_kw: list[str] = typer.Option(None, "--model-kw", help="Builder option key=value (repeatable)."),
    labels: Path = typer.Option(None, "--labels", help="Organ label table JSON {name: value} (default: the phantom's)."),
    teacher: Path = typer.Option(None, "--teacher", help="Use this trained organ model as the teacher."),
    no_student: bool = typer.Option(False, "--no-student", help="Stop after the teacher: its predictions are the maps."),
    iterations: int = typer.Option(None, "--iterations", help="Optimizer steps of each model (overrides the recipe)."),
    patch: tuple[int, int, int] = typer.Option(None, "--patch", help="Patch size D H W in voxels."),
    batch: int = typer.Option(None, "--batch", help="Samples per step."),
    workers: int = typer.Option(None, "--workers", "-j", help="Data-loader processes."),
    device: str = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT/manifest.json and existing maps."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
) -> None:
    """Organ maps by teacher–student training: a teacher organ segmenter learns from the studies with organ
    maps, predicts pseudo-labels for the others, a student learns from both and predicts the final maps.

    Writes OUT/maps/<case>/ORGANS.nii.gz on each study's grid and OUT/manifest.json (the input manifest with the
    maps filled in): preprocess it to give the anatomy model its organ prompts. Finished stages are reused
    when the command is run again.

    Examples:

        unipet anatomy organs cohort.json --out organs/

        unipet anatomy organs cohort.json --out organs/ --model stunet-s --iterations 20000 --patch 96 96 96

        unipet anatomy organs cohort.json --out organs/ --teacher runs/totalseg-organs --no-student

        unipet preprocess organs/manifest.json --out cache/
    """
    from unipet.cli.train import parse_model_kw
    from unipet.fileio import read_json_object
    from unipet.io.manifest import Manifest
    from unipet.train.organs_teacher import teacher_student

    table = None
    if labels is not None:
        raw = read_json_object(labels, "organ label table", "write {\"liver\": 13, ...}")
        try:
            table = {str(k): int(v) for k, v in raw.items()}
        except (TypeError, ValueError):
            raise ConfigError(f"{labels} must map organ names to integer label values") from None
    result = teacher_student(Manifest.load(manifest), out, model=model, recipe=recipe, labels=table,
                             model_kw=parse_model_kw(model_kw), student=not no_student, teacher_dir=teacher,
                             overwrite=overwrite, device=device, iterations=iterations, patch_size=patch,
                             batch_size=batch, workers=workers, progress=not no_progress)
    console.print(f"organ maps of {len(result.maps)} studies in {out / 'maps'}; manifest with organ maps: "
                  f"{result.manifest_path}")
