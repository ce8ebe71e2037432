"""Cross-modal pre-training as a job of unipet's one training loop (``unipet.train.engine``).

``pretrain(cache, run_dir)`` trains the pre-training module (``unipet.pretrain.masked.CrossModalPretrainer``,
whose forward returns its loss dict: ``loss``, ``mse_ct``, ``mse_pet``, ``align``, ``align_top1``) with the
``pretrain`` recipe (``unipet.train.recipes``) and writes ``RUN_DIR/checkpoint/`` with unipet's checkpoint writer
(safetensors + JSON, atomic): ``model.safetensors`` holds the whole pre-training module, whose ``ct_encoder.*`` /
``pet_encoder.*`` tensors carry the names of the ``anatomy`` model's encoders, so ``unipet train --model anatomy
--init RUN_DIR`` starts from them (the decoders, mask tokens and projection heads are reported as unused).
``meta.json`` has ``"kind": "pretrain"``, the encoder configuration (give the same ``widths`` / ``depths`` to the
``anatomy`` model), the channels and preprocessing, the data fingerprint and the iteration; it has no ``model``
entry, so it is never mistaken for a segmentation checkpoint. The optimizer, iteration and RNG states are saved
too: ``resume=True`` continues a run.

Patches are drawn uniformly from the cache's training cases (``unipet.data.sampling.PatchSampler`` with the mix
``{"random": 1}``; lesion labels are not used) and augmented with unipet's augmentation, without the PET/CT
misalignment (it would teach the alignment that corresponding locations do not correspond). Masks come from a
generator seeded by ``(seed, iteration)``, so a resumed run draws the same masks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from unipet.errors import ConfigError, OutputExistsError
from unipet.models.anatomy import DEFAULT_DEPTHS, DEFAULT_WIDTHS, ENCODER_PREFIXES
from unipet.train.engine import Callback, TrainResult
from unipet.train.recipes import Recipe, RecipeSettings

KIND = "pretrain"


class PretrainConfig(RecipeSettings):
    """Every setting of a pre-training run (recorded in its ``meta.json``): the module's, and a ``Recipe``.

    Attributes:
        widths, depths: encoder stages (must equal the ``anatomy`` model's to initialise it).
        strides: per-stage strides, or None for nnU-Net's plan of the recipe's ``patch_size`` (``plan_strides``).
        mask_ratio: fraction of encoder-stride cells masked per modality; decoder_width: reconstruction decoders.
        proj_dim, temperature, align_weight: shared latent width, InfoNCE temperature, weight of the alignment.
        recipe: the optimisation, patches and augmentation (``unipet.train.recipes.RECIPES["pretrain"]`` by
            default); ``PretrainConfig(..., iterations=4, lr=3e-3)`` overrides its fields by keyword.
    """

    MODULE_FIELDS = ("widths", "depths", "strides", "mask_ratio", "decoder_width", "proj_dim", "temperature",
                     "align_weight")
    RECIPE = "pretrain"

    def __init__(self, widths: Sequence[int] = DEFAULT_WIDTHS, depths: Sequence[int] = DEFAULT_DEPTHS,
                 strides: Sequence[Sequence[int]] | None = None, mask_ratio: float = 0.6, decoder_width: int = 32,
                 proj_dim: int = 128, temperature: float = 0.1, align_weight: float = 1.0,
                 recipe: Recipe | str | None = None, **recipe_fields: Any) -> None:
        self.widths, self.depths = [int(w) for w in widths], [int(d) for d in depths]
        self.strides = None if strides is None else [[int(v) for v in s] for s in strides]
        self.mask_ratio, self.decoder_width, self.proj_dim = float(mask_ratio), int(decoder_width), int(proj_dim)
        self.temperature, self.align_weight = float(temperature), float(align_weight)
        self._set_recipe(recipe, recipe_fields)

    def resolved_strides(self) -> list[tuple[int, int, int]]:
        """The strides given, or nnU-Net's plan for the recipe's patch."""
        from unipet.models.base import as_tuple3
        from unipet.models.stunet import plan_strides

        if self.strides is not None:
            return [as_tuple3(s) for s in self.strides]
        return plan_strides(self.recipe.patch_size, max_stages=len(self.widths))


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
             callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Pre-train the PET and CT encoders on a cache (see the module docstring) with the engine's loop.

    Args:
        data: cache folder, ``Cache`` or manifest JSON (cached into ``RUN_DIR/cache`` first).
        run_dir: output folder (``checkpoint/``, ``log.jsonl``, ``metrics.csv``).
        config: settings (default ``PretrainConfig()``); ignored on ``resume`` (the run's own are used).
        resume: continue ``run_dir``'s checkpoint; without it an existing checkpoint is refused.
        device: ``cpu``, ``cuda`` or None (CUDA when available).
        iterations: override the recipe's ``iterations`` (also to extend a resumed run).
        callbacks: ``callback(iteration, logs)`` after every step.

    Returns:
        ``unipet.train.engine.TrainResult`` (``logs``: this invocation's per-step losses; ``model``: the module).
    """
    from safetensors.torch import load_file

    from unipet import checkpoint as ckpt
    from unipet.data.augment import AugmentConfig, augment_batch
    from unipet.data.sampling import PatchSampler, channel_pad_values, make_loader
    from unipet.device import resolve_device
    from unipet.train import engine
    from unipet.train import state as run_state
    from unipet.train.distributed import DistInfo
    from unipet.train.trainer import open_data

    run_dir = Path(run_dir)
    dev = resolve_device(device)
    info = DistInfo(device=dev)
    cache = open_data(data, run_dir, info)
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
    recipe = config.recipe
    torch.manual_seed(recipe.seed)
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
    sampler = PatchSampler(cache, case_ids=recipe.cases, patch_size=recipe.patch_size, mix=recipe.sampling,
                           seed=recipe.seed)
    pad = torch.as_tensor(channel_pad_values(cache.config), device=dev)
    aug = AugmentConfig.from_dict(recipe.augmentation)
    last: dict[str, Any] = {}

    def prepare(batch: dict[str, Any], it: int) -> dict[str, Any]:
        x = batch["image"].to(dev, non_blocking=True)
        gen = torch.Generator(device=dev)
        gen.manual_seed(engine.step_seed(recipe.seed, 0, it))
        no_label = torch.zeros((x.shape[0], *x.shape[2:]), dtype=torch.long, device=dev)
        x, _ = augment_batch(x, no_label, aug, gen, pad, None)
        return {"x": x, "generator": torch.Generator().manual_seed(engine.step_seed(recipe.seed, 1, it)), "pad": pad}

    def save(iteration: int, complete: bool) -> None:
        meta = ckpt.CheckpointMeta(
            kind=KIND, encoder=encoder_meta(config), pretrain=config.to_dict(), channels=channels,
            preprocess=cache.config.to_dict(), patch_size=list(recipe.patch_size),
            data={"fingerprint": ckpt.data_fingerprint(cache), "cases": len(sampler.case_ids),
                  "source": cache.meta.get("source")},
            iteration=int(iteration), complete=complete, last=dict(last) or None)
        train_state = {"iteration": iteration, "scaler": scaler.state_dict() if scaler.is_enabled() else None}
        run_state.save_training_checkpoint(run_dir, model, meta, optimizer, train_state)

    def keep_last(it: int, logs: dict[str, Any]) -> None:  # noqa: ARG001 - callback API
        last.clear()
        last.update(logs)

    loader = iter(make_loader(sampler, recipe.batch_size, start=start, workers=recipe.workers,
                              pin_memory=dev.type == "cuda")) if start < recipe.iterations else None
    job = engine.Job(net=model, model=model, optimizer=optimizer, scaler=scaler, recipe=recipe, amp_dtype=amp_dtype,
                     loader=loader, prepare=prepare, save=save, start=start, run_dir=run_dir, info=info,
                     resumed=resume, diverged="pre-training diverged (the loss became {loss}); lower lr or use amp "
                     "'none'")
    return engine.run(job, progress=progress, tensorboard=False, callbacks=[keep_last, *callbacks])


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
