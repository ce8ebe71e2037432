"""The pre-training loop: random patches of a cache -> masked reconstruction + alignment -> an encoder checkpoint.

``pretrain(cache, run_dir)`` writes ``RUN_DIR/checkpoint/`` with unipet's checkpoint writer
(``unipet.checkpoint.save_checkpoint``: safetensors + JSON, atomic): ``model.safetensors`` holds the whole
pre-training module, whose ``ct_encoder.*`` / ``pet_encoder.*`` tensors carry the names of the ``anatomy``
model's encoders, so ``unipet train --model anatomy --init RUN_DIR`` starts from them (the decoders, mask tokens
and projection heads are reported as unused). ``meta.json`` has ``"kind": "pretrain"``, the encoder
configuration (give the same ``widths`` / ``depths`` to the ``anatomy`` model), the channels and preprocessing,
the data fingerprint and the iteration; it has no ``model`` entry, so it is never mistaken for a segmentation
checkpoint. The optimizer, iteration and RNG states are saved too: ``resume=True`` continues a run.

Patches are drawn uniformly from the cache's training cases (``unipet.data.sampling.PatchSampler`` with the mix
``{"random": 1}``; lesion labels are not used) and augmented with unipet's augmentation, without the PET/CT
misalignment (it would teach the alignment that corresponding locations do not correspond). Masks come from a
generator seeded by ``(seed, iteration)``, so a resumed run draws the same masks.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from unipet.data.augment import AugmentConfig
from unipet.errors import ConfigError, OutputExistsError, check_known_fields
from unipet.models.anatomy import DEFAULT_DEPTHS, DEFAULT_WIDTHS, ENCODER_PREFIXES

Callback = Callable[[int, dict[str, float]], None]
KIND = "pretrain"


def _pretrain_augmentation() -> dict[str, Any]:
    return AugmentConfig(p_misalign=0.0).to_dict()


@dataclass
class PretrainConfig:
    """Every setting of a pre-training run (recorded in its ``meta.json``).

    Attributes:
        widths, depths: encoder stages (must equal the ``anatomy`` model's to initialise it).
        strides: per-stage strides, or None for nnU-Net's plan of ``patch_size`` (``plan_strides``).
        mask_ratio: fraction of encoder-stride cells masked per modality; decoder_width: reconstruction decoders.
        proj_dim, temperature, align_weight: shared latent width, InfoNCE temperature, weight of the alignment.
        iterations, batch_size, patch_size: optimizer steps, patches per step, patch ``(D, H, W)`` voxels.
        lr, weight_decay, warmup_iterations: AdamW with linear warm-up then cosine decay (MAE's schedule).
        grad_clip: gradient-norm clipping (0 = off); amp: ``auto``/``bf16``/``fp16``/``none``.
        augmentation: ``AugmentConfig`` fields (no PET/CT misalignment by default).
        cases: case ids to pre-train on (None = the cache's train split, or every case without splits).
        workers, seed, checkpoint_every: data-loader processes, base seed, steps between checkpoints.
    """

    widths: list[int] = field(default_factory=lambda: list(DEFAULT_WIDTHS))
    depths: list[int] = field(default_factory=lambda: list(DEFAULT_DEPTHS))
    strides: list[list[int]] | None = None
    mask_ratio: float = 0.6
    decoder_width: int = 32
    proj_dim: int = 128
    temperature: float = 0.1
    align_weight: float = 1.0
    iterations: int = 100_000
    batch_size: int = 2
    patch_size: list[int] = field(default_factory=lambda: [112, 160, 128])
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_iterations: int = 5_000
    grad_clip: float = 1.0
    amp: str = "auto"
    augmentation: dict[str, Any] = field(default_factory=_pretrain_augmentation)
    cases: list[str] | None = None
    workers: int = 4
    seed: int = 0
    checkpoint_every: int = 1000

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PretrainConfig":
        check_known_fields(cls, d, "pre-training settings")
        return cls(**d)

    def with_overrides(self, **overrides: Any) -> "PretrainConfig":
        """A copy with the non-None ``overrides`` applied."""
        return PretrainConfig.from_dict({**self.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})

    def resolved_strides(self) -> list[tuple[int, int, int]]:
        """The strides given, or nnU-Net's plan for the patch."""
        from unipet.models.base import as_tuple3
        from unipet.models.stunet import plan_strides

        if self.strides is not None:
            return [as_tuple3(s) for s in self.strides]
        return plan_strides(self.patch_size, max_stages=len(self.widths))

    def recipe(self):
        """The optimisation part as a ``unipet.train.Recipe`` (optimizer, schedule, AMP, sampling, augmentation)."""
        from unipet.train.recipes import Recipe

        return Recipe(name="pretrain", optimizer="adamw", lr=self.lr, weight_decay=self.weight_decay,
                      schedule="cosine", warmup_iterations=self.warmup_iterations, iterations=self.iterations,
                      patch_size=tuple(int(p) for p in self.patch_size), batch_size=self.batch_size,
                      sampling={"random": 1.0}, augmentation=dict(self.augmentation), deep_supervision=False,
                      amp=self.amp, grad_clip=self.grad_clip, workers=self.workers, seed=self.seed,
                      checkpoint_every=self.checkpoint_every, cases=self.cases)


@dataclass
class PretrainResult:
    """Outcome of ``pretrain``: the run folder, last iteration, this invocation's per-step logs and the module."""

    run_dir: Path
    iteration: int
    logs: list[dict[str, float]] = field(default_factory=list)
    model: torch.nn.Module | None = None


def build_pretrainer(config: PretrainConfig, channels: Sequence[str] = ("CT", "PET")):
    """The ``CrossModalPretrainer`` of a configuration."""
    from unipet.pretrain.masked import CrossModalPretrainer

    return CrossModalPretrainer(config.widths, config.depths, config.resolved_strides(), modalities=channels,
                                mask_ratio=config.mask_ratio, decoder_width=config.decoder_width,
                                proj_dim=config.proj_dim, temperature=config.temperature,
                                align_weight=config.align_weight)


def encoder_meta(config: PretrainConfig) -> dict[str, Any]:
    """What a segmentation model needs to match to load the encoders (``CheckpointMeta.encoder``)."""
    return {"widths": list(config.widths), "depths": list(config.depths),
            "strides": [list(s) for s in config.resolved_strides()], "prefixes": list(ENCODER_PREFIXES),
            "model": "anatomy"}


def pretrain(data, run_dir: str | Path, config: PretrainConfig | None = None, resume: bool = False,
             device: str | None = None, iterations: int | None = None, progress: bool = True,
             callbacks: Sequence[Callback] = ()) -> PretrainResult:
    """Pre-train the PET and CT encoders on a cache (see the module docstring).

    Args:
        data: cache folder, ``Cache`` or manifest JSON (cached into ``RUN_DIR/cache`` first).
        run_dir: output folder (``checkpoint/``, ``log.jsonl``).
        config: settings (default ``PretrainConfig()``); ignored on ``resume`` (the run's own are used).
        resume: continue ``run_dir``'s checkpoint; without it an existing checkpoint is refused.
        device: ``cpu``, ``cuda`` or None (CUDA when available).
        iterations: override ``config.iterations`` (also to extend a resumed run).
        callbacks: ``callback(iteration, logs)`` after every step.

    Returns:
        ``PretrainResult``.
    """
    from safetensors.torch import load_file

    from unipet.data.augment import augment_batch
    from unipet.data.sampling import PatchSampler, channel_pad_values, make_loader
    from unipet import checkpoint as ckpt
    from unipet.train import state as run_state
    from unipet.device import resolve_device
    from unipet.train.distributed import DistInfo
    from unipet.train.trainer import open_data, step_seed

    run_dir = Path(run_dir)
    dev = resolve_device(device)
    cache = open_data(data, run_dir, DistInfo(device=dev))
    channels = [c.upper() for c in cache.config.channels]
    state: dict[str, Any] = {}
    if resume:
        meta_old = ckpt.read_meta(run_dir)
        if meta_old.kind != KIND:
            raise ConfigError(f"{run_dir} is not a pre-training run; resume it with `unipet train --resume`")
        if meta_old.data_fingerprint != ckpt.data_fingerprint(cache):
            raise ConfigError(f"{run_dir} was pre-trained on other data (data fingerprint differs); resume with the "
                              "same cache or start a new run")
        config = PretrainConfig.from_dict(meta_old.pretrain)
        tensors, state = ckpt.load_train_state(run_dir)
    else:
        if (run_dir / ckpt.CHECKPOINT).exists() or (run_dir / ckpt.OLD).exists():
            raise OutputExistsError(f"{run_dir} already holds a checkpoint; pass --resume to continue it or choose "
                                    "another --out")
        config = config or PretrainConfig()
    config = config.with_overrides(iterations=iterations)
    recipe = config.recipe()
    recipe.validate()
    torch.manual_seed(config.seed)
    model = build_pretrainer(config, channels)
    if resume:
        model.load_state_dict(load_file(str(ckpt.find_checkpoint(run_dir) / "model.safetensors")))
    model.to(dev).train()
    optimizer = recipe.make_optimizer(model.parameters())
    amp_dtype = recipe.amp_dtype(dev)
    scaler = run_state.grad_scaler(amp_dtype, dev)
    start = 0
    if resume:
        start = run_state.restore_training(optimizer, scaler, tensors, state)
        run_state.set_rng_state(tensors, state["rng"])
    sampler = PatchSampler(cache, case_ids=config.cases, patch_size=recipe.patch_size, mix=recipe.sampling,
                           seed=config.seed)
    pad = torch.as_tensor(channel_pad_values(cache.config), device=dev)
    aug = AugmentConfig.from_dict(recipe.augmentation)
    result = PretrainResult(run_dir=run_dir, iteration=start, model=model)

    def save(iteration: int) -> None:
        meta = ckpt.CheckpointMeta(
            kind=KIND, encoder=encoder_meta(config), pretrain=config.to_dict(), channels=channels,
            preprocess=cache.config.to_dict(), patch_size=list(recipe.patch_size),
            data={"fingerprint": ckpt.data_fingerprint(cache), "cases": len(sampler.case_ids),
                  "source": cache.meta.get("source")},
            iteration=int(iteration), complete=iteration >= config.iterations,
            last=result.logs[-1] if result.logs else None)
        train_state = {"iteration": iteration, "scaler": scaler.state_dict() if scaler.is_enabled() else None}
        run_state.save_training_checkpoint(run_dir, model, meta, optimizer, train_state)

    if start >= config.iterations:
        return result
    run_dir.mkdir(parents=True, exist_ok=True)
    loader = iter(make_loader(sampler, recipe.batch_size, start=start, workers=recipe.workers,
                              pin_memory=dev.type == "cuda"))
    bar = _progress(progress, config.iterations, start)
    it = start
    try:
        while it < config.iterations:
            t0 = time.perf_counter()
            x = next(loader)["image"].to(dev, non_blocking=True)
            gen = torch.Generator(device=dev)
            gen.manual_seed(step_seed(config.seed, 0, it))
            x, _ = augment_batch(x, torch.zeros((x.shape[0], *x.shape[2:]), dtype=torch.long, device=dev), aug, gen,
                                 pad, None)
            mask_gen = torch.Generator().manual_seed(step_seed(config.seed, 1, it))
            lr = recipe.lr_at(it)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out = model(x, mask_gen, pad)
            loss = out["loss"].float()
            if not torch.isfinite(loss):
                raise ConfigError(f"pre-training diverged (the loss became {float(loss)}); lower lr or use amp 'none'")
            scaler.scale(loss).backward()
            if recipe.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            it += 1
            logs = {"loss": float(loss.detach()), "mse_ct": float(out["mse_ct"].detach()), "mse_pet": float(out["mse_pet"].detach()),
                    "align": float(out["align"].detach()), "align_top1": float(out["align_top1"]), "lr": lr,
                    "step_s": time.perf_counter() - t0}
            result.logs.append(logs)
            for cb in callbacks:
                cb(it, logs)
            if bar is not None:
                bar[0].update(bar[1], completed=it, loss=logs["loss"])
            saving = it % config.checkpoint_every == 0 or it == config.iterations
            if saving or it % 10 == 0:
                with open(run_dir / "log.jsonl", "a") as fh:
                    fh.write(json.dumps({"iteration": it, **{k: round(v, 6) for k, v in logs.items()}}) + "\n")
            if saving:
                save(it)
    finally:
        if bar is not None:
            bar[0].stop()
    result.iteration = it
    return result


@torch.no_grad()
def evaluate_pretrainer(model, cache, case_ids: Sequence[str] | None = None, patches: int = 8, seed: int = 1234,
                        patch_size: Sequence[int] | None = None, device: str | torch.device = "cpu") -> dict[str, float]:
    """Alignment and masked reconstruction of a pre-training module on fixed patches (same patches and masks
    for any model: drawn from ``seed``), without augmentation. ``patch_size`` defaults to 4 encoder cells per axis.

    Returns:
        ``mse_ct``, ``mse_pet`` (masked-voxel MSE), ``align`` (InfoNCE) and the alignment metrics
        (``unipet.pretrain.align.alignment_metrics``) of the *unmasked* embeddings over the body locations of all
        patches together: ``positive_cosine``, ``negative_cosine``, ``gap``, ``top1``.
    """
    from unipet.data.sampling import PatchSampler, channel_pad_values
    from unipet.pretrain.align import alignment_loss, alignment_metrics, body_locations

    was_training = model.training
    model.eval()
    dev = torch.device(device)
    model.to(dev)
    patch = tuple(int(p) for p in (patch_size or [4 * c for c in model.cell]))
    sampler = PatchSampler(cache, case_ids=case_ids, patch_size=patch, mix={"random": 1.0}, seed=seed)
    pad = torch.as_tensor(channel_pad_values(cache.config), device=dev)
    za, zb, sums = [], [], {"mse_ct": 0.0, "mse_pet": 0.0}
    for i in range(patches):
        x = torch.from_numpy(sampler.batch(i, 1)["image"]).to(dev)
        out = model(x, torch.Generator().manual_seed(seed + i), pad)
        sums["mse_ct"] += float(out["mse_ct"]) / patches
        sums["mse_pet"] += float(out["mse_pet"]) / patches
        emb = model.embed(x)
        body = body_locations(x, model.cell, pad)
        za.append(emb["pet"].flatten(2).transpose(1, 2)[body])
        zb.append(emb["ct"].flatten(2).transpose(1, 2)[body])
    a, b = torch.cat(za), torch.cat(zb)
    model.train(was_training)
    return {**sums, "align": float(alignment_loss(a, b, model.temperature)), **alignment_metrics(a, b),
            "locations": int(a.shape[0])}


def _progress(enabled: bool, total: int, start: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("pre-training"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn())
    bar.start()
    return bar, bar.add_task("pretrain", total=total, completed=start, loss=float("nan"))
