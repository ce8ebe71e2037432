"""Segmentation training: a cache and a registered model -> the engine's loop (``unipet.train.engine``).

``train`` is setup and resume (``segmentation_job``: cache, recipe, model, optimizer, scaler, sampler, their
restored state) followed by the one training loop of ``unipet.train.engine``, which trains the model and its
loss as one module returning a loss dict (``SegmentationObjective``).

Everything random is reproducible from the recipe's seed: model initialisation (``torch.manual_seed(seed)``),
patches (counter-based, ``unipet.data.sampling``) and augmentation (a generator seeded from
``(seed, rank, iteration)`` every step). The learning rate is a function of the iteration. Resuming therefore
restores weights, optimizer, grad scaler, the iteration and the global RNG states, and continues bit-for-bit
where the checkpoint was written (on the same hardware and settings).

Interruptions: a checkpoint is written every ``checkpoint_every`` iterations and at the end, so a SIGKILL
loses at most one interval; SIGTERM (e.g. a cluster's pre-emption) sets a flag, the loop writes a checkpoint
at the end of the current step and returns. Under DDP rank 0 writes checkpoints and logs; the stop flag is
shared through an all-reduce.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from unipet.data.augment import AugmentConfig, augment_batch
from unipet.data.cache import Cache
from unipet.data.sampling import PatchSampler, channel_pad_values, make_loader
from unipet.errors import ConfigError, InputFileError, OutputExistsError
from unipet.evaluate.metrics import dice
from unipet import checkpoint as ckpt
from unipet.train import state as run_state
from unipet.train import engine, run_guard
from unipet.train.distributed import DistInfo, barrier, init_distributed, shutdown, wrap_model
from unipet.train.engine import TrainResult, step_seed
from unipet.train.losses import SegmentationLoss
from unipet.train.monitor import log_examples
from unipet.train.recipes import Recipe, load_recipe

Callback = engine.Callback


def open_data(data: str | Path | Cache, run_dir: Path, info: DistInfo) -> Cache:
    """A Cache from a cache folder, a Cache, or a manifest JSON (preprocessed into ``RUN_DIR/cache`` first)."""
    if isinstance(data, Cache):
        return data
    path = Path(data)
    if path.is_dir() and (path / "cache.json").exists():
        return Cache(path)
    if path.is_file() and path.suffix == ".json":
        from unipet.data.cache import build_cache
        from unipet.io.manifest import Manifest

        if info.is_main:
            build_cache(Manifest.load(path), run_dir / "cache")
        barrier(info)
        return Cache(run_dir / "cache")
    raise InputFileError(f"{path} is neither a unipet cache folder (cache.json) nor a manifest JSON; run "
                         "`unipet import` / `unipet preprocess` first")


def build_meta(model: torch.nn.Module, cache: Cache, recipe: Recipe, sampler: PatchSampler, iteration: int,
               complete: bool) -> ckpt.CheckpointMeta:
    """Checkpoint metadata: everything prediction needs to repeat training's preprocessing and rebuild the model."""
    cfg = cache.config
    spacing = list(cfg.target_spacing) if cfg.target_spacing else cache.meta.get("fingerprint", {}).get("spacing", {}).get("median")
    return ckpt.CheckpointMeta(
        model=model.config, output_activation=getattr(model, "output_activation", "softmax"),
        channels=list(cfg.channels), preprocess=cfg.to_dict(), spacing=spacing,
        patch_size=list(recipe.patch_size), tasks=cache.task_set.names, recipe=recipe.to_dict(),
        sampler=sampler.describe(),
        data={"fingerprint": ckpt.data_fingerprint(cache), "cases": len(sampler.case_ids), "source": cache.meta.get("source")},
        iteration=int(iteration), complete=bool(complete),
    )


class SegmentationObjective(torch.nn.Module):
    """A segmentation model and its loss as one module returning a loss dict, the engine's unit of training.

    ``forward(x, y, task, organs=None) -> {"loss", "seg", "task"?, auxiliary terms}``: the model's outputs, its
    task classifier's logits (prompt-free models) and auxiliary losses (MAST-Pro's load balancing) all come out of
    this ``forward``, so DDP sees every parameter it reduces; the loss is computed in float32 outside autocast.
    """

    def __init__(self, model: torch.nn.Module, loss_fn: SegmentationLoss) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor, **inputs: Any) -> dict[str, Any]:
        out = self.model(x, task=task, **inputs)
        aux = self.model.auxiliary_losses()
        task_logits = getattr(self.model, "last_task_logits", None)
        with torch.autocast(x.device.type, enabled=False):
            loss, parts = self.loss_fn(out, y, task, task_logits)
            for name, term in aux.items():
                loss = loss + term.float()
                parts[name] = float(term.detach())
        return {"loss": loss, **parts}


def _validate(model: torch.nn.Module, cache: Cache, case_ids: Sequence[str], meta: ckpt.CheckpointMeta,
              device: torch.device, examples: list | None = None, n_examples: int = 2) -> dict[str, float]:
    """Mean Dice per task on whole cached validation volumes (sliding window, no TTA). With ``examples`` (a list),
    ``(case, image [C, z, y, x], pred, ref)`` of the first ``n_examples`` cases are appended to it."""
    from unipet.infer.predictor import Predictor

    was_training = model.training
    predictor = Predictor(model, meta, device=device, overlap=0.5, tile_batch=2)
    scores: dict[str, list[float]] = {}
    for cid in case_ids:
        case = cache.load(cid, mmap=True)
        if case.label is None:
            continue
        task = predictor.task_index(case.task) if case.task else None
        pred = predictor.segment(np.asarray(case.image), task, None if case.organs is None else np.asarray(case.organs)) > 0
        ref = np.asarray(case.label) > 0
        scores.setdefault(case.task or "all", []).append(dice(pred, ref, empty=1.0))
        if examples is not None and len(examples) < n_examples:
            examples.append((cid, np.asarray(case.image), pred, ref))
    model.train(was_training)
    return {f"dice/{k}": float(np.mean(v)) for k, v in scores.items()}


def train(
    data: str | Path | Cache,
    model_name: str,
    run_dir: str | Path,
    recipe: str | Path | Recipe | None = None,
    model_kw: dict[str, Any] | None = None,
    device: str | None = None,
    resume: bool = False,
    iterations: int | None = None,
    patch_size: Sequence[int] | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    checkpoint_every: int | None = None,
    progress: bool = True,
    tensorboard: bool = True,
    callbacks: Sequence[Callback] = (),
    init_from: str | Path | None = None,
    trainable: str | None = None,
) -> TrainResult:
    """Train ``model_name`` on a cache (or a manifest, cached first) into ``run_dir``.

    Args:
        data: cache folder, Cache, or manifest JSON.
        model_name: registry name (``unipet.models.available()``).
        run_dir: output folder; ``checkpoint/`` (safetensors + JSON), ``log.jsonl``, ``metrics.csv`` (one row per
            step) and ``tb/`` go there.
        recipe: shipped recipe name, JSON/YAML file or Recipe; ``iterations``, ``patch_size``,
            ``batch_size``, ``workers``, ``checkpoint_every`` override it.
        model_kw: builder keyword arguments (e.g. ``{"base_width": 8}``); ``num_classes`` may be given here.
        device: ``cpu``, ``cuda`` or None (CUDA when available; ``cuda:LOCAL_RANK`` under torchrun).
        resume: continue from ``run_dir/checkpoint`` (its recipe and data; ``iterations``, ``workers`` and
            ``checkpoint_every`` may change, e.g. to extend a run); without it an existing checkpoint is refused.
        progress: show a rich progress bar with loss, it/s and ETA (rank 0, on an interactive terminal only).
        tensorboard: write TensorBoard scalars (losses, lr, validation Dice, it/s) and validation MIP images
            when ``tensorboard`` is installed (``unipet.train.monitor``).
        init_from: start from these weights (a unipet run/checkpoint folder, an encoder checkpoint of
            ``unipet anatomy pretrain`` or a weights file): tensors are copied by name where the shapes fit
            (``unipet.models.weights.load_pretrained``; input layers adapted), the rest keep their initialisation.
            Ignored on ``resume`` (the checkpoint's weights are used).
        trainable: the recipe's ``trainable`` scope (e.g. ``"peft"``): only those parameters are optimised.
        callbacks: ``callback(iteration, logs)`` after every step (iteration counts completed steps; logs hold
            ``loss``, ``lr``, loss parts, ``data_s`` (seconds waiting for the batch) and ``step_s``).

    Returns:
        ``TrainResult`` (the trained, unwrapped model on its device in ``.model``).
    """
    run_dir = Path(run_dir)
    info = init_distributed(device)
    try:
        job = segmentation_job(data, model_name, run_dir, info, recipe=recipe, model_kw=model_kw, resume=resume,
                               iterations=iterations, patch_size=patch_size, batch_size=batch_size, workers=workers,
                               checkpoint_every=checkpoint_every, init_from=init_from, trainable=trainable)
        return engine.run(job, progress=progress, tensorboard=tensorboard, callbacks=callbacks)
    finally:
        shutdown(info)


def segmentation_job(data: str | Path | Cache, model_name: str, run_dir: Path, info: DistInfo, *,
                     recipe: str | Path | Recipe | None = None, model_kw: dict[str, Any] | None = None,
                     resume: bool = False, iterations: int | None = None, patch_size: Sequence[int] | None = None,
                     batch_size: int | None = None, workers: int | None = None, checkpoint_every: int | None = None,
                     init_from: str | Path | None = None, trainable: str | None = None) -> engine.Job:
    """Setup and resume of a segmentation run (arguments as ``train``): the cache, the recipe (the checkpoint's
    on resume), the model (rebuilt as recorded on resume, else created and initialised), optimizer, scaler and
    their restored state, the sampler, and the engine ``Job`` that trains the model with its loss."""
    from unipet.models import create
    from unipet.models.base import init_output_prior

    cache = open_data(data, run_dir, info)
    state_tensors: dict[str, torch.Tensor] = {}
    state: dict[str, Any] = {}
    if resume:
        meta_old = ckpt.read_meta(run_dir)
        if meta_old.model_name != model_name:
            raise ConfigError(f"{run_dir} holds a {meta_old.model_name} run; resume it with "
                              "the same --model or choose another --out")
        if meta_old.data_fingerprint != ckpt.data_fingerprint(cache):
            raise ConfigError(f"{run_dir} was trained on other data (data fingerprint differs); resume with the "
                              "same cache or start a new run")
        recipe = Recipe.from_dict(meta_old.recipe)
        fixed = {"patch_size": None if patch_size is None else tuple(int(v) for v in patch_size),
                 "batch_size": batch_size}
        for name, value in fixed.items():
            if value is not None and value != getattr(recipe, name):
                raise ConfigError(f"{run_dir} was trained with {name} {getattr(recipe, name)}; a resumed run keeps "
                                  "it (drop the option, or start a new run)")
        # a run may be extended (--iterations) or given other workers / checkpoint interval
        recipe = recipe.with_overrides(iterations=iterations, workers=workers, checkpoint_every=checkpoint_every)
        state_tensors, state = ckpt.load_train_state(run_dir)
    else:
        if (run_dir / ckpt.CHECKPOINT).exists() or (run_dir / ckpt.OLD).exists():
            raise OutputExistsError(f"{run_dir} already holds a checkpoint; pass --resume to continue it or "
                                    "choose another --out")
        recipe = load_recipe(recipe, iterations=iterations, batch_size=batch_size, workers=workers,
                             checkpoint_every=checkpoint_every, trainable=trainable,
                             patch_size=tuple(patch_size) if patch_size is not None else None)
    run_guard.check_options(checkpoint_every=recipe.checkpoint_every)  # 0 would fail (x % 0) mid-run
    dev = info.device
    if resume:  # the model is rebuilt exactly as recorded
        kw = meta_old.model_kwargs
        num_classes = meta_old.num_classes
    else:
        kw = dict(model_kw or {})
        num_classes = int(kw.pop("num_classes", 2))
    torch.manual_seed(recipe.seed)
    model = create(model_name, in_channels=len(cache.config.channels), num_classes=num_classes,
                   tasks=cache.task_set, patch_size=recipe.patch_size, **kw)
    if recipe.taskless == "general" and not model.takes_no_task:
        raise ConfigError(f"recipe {recipe.name!r} sends task-less cases to a general route (taskless='general'), "
                          f"which {model_name} does not have; use taskless 'random' or a model with one (mastpro)")
    if resume:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(ckpt.find_checkpoint(run_dir) / "model.safetensors")))
        init_record = meta_old.init_from
    else:
        init_record = (initialise_from(model, init_from, cache.task_set.names, recipe.task_donors,
                                       model_name=model_name)
                       if init_from is not None else None)
        if recipe.prior_init and init_from is None and not init_output_prior(model, recipe.prior_init):
            raise ConfigError(f"{model_name} has no 1x1x1 classifier whose bias prior_init could set; "
                              "use prior_init 0 for it")
    trained_names = model.scope_parameters(recipe.trainable)
    for name, param in model.named_parameters():
        param.requires_grad_(name in trained_names)
    model.to(dev)
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last_3d)
    model.set_deep_supervision(recipe.deep_supervision)
    model.train()
    optimizer = recipe.make_optimizer([p for p in model.parameters() if p.requires_grad])
    amp_dtype = recipe.amp_dtype(dev)
    scaler = run_state.grad_scaler(amp_dtype, dev)
    start = 0
    if resume:
        start = run_state.restore_training(optimizer, scaler, state_tensors, state)
        if info.is_main:
            run_state.set_rng_state(state_tensors, state["rng"])
        else:
            torch.manual_seed(step_seed(recipe.seed, info.rank, start))
    loss_fn = SegmentationLoss(model.output_activation, recipe.dice_smooth, recipe.batch_dice,
                               recipe.task_loss_weight, ds_weights=model.deep_supervision_weights,
                               dice_per_task=recipe.dice_per_task, dice_skip_empty=recipe.dice_skip_empty)
    net = wrap_model(SegmentationObjective(model, loss_fn), info)
    if recipe.compile:
        net = torch.compile(net)

    uses_organs = "organs" in (tuple(model.requires) + tuple(model.accepts))
    sampler = PatchSampler(cache, case_ids=recipe.cases, patch_size=recipe.patch_size, mix=recipe.sampling,
                           seed=recipe.seed, rank=info.rank, batch_mode=recipe.batch_mode, with_organs=uses_organs,
                           multi_spacing=recipe.multi_spacing, taskless=recipe.taskless,
                           lesion_balance=recipe.lesion_balance, task_weights=recipe.task_weights,
                           as_task=recipe.as_task)
    val_ids = (cache.split("val") or [])[: recipe.validate_cases] if recipe.validate_every else []
    aug = AugmentConfig.from_dict(recipe.augmentation)
    pad = torch.as_tensor(channel_pad_values(cache.config), device=dev)
    channels = [c.upper() for c in cache.config.channels]
    pet_channel = channels.index("PET") if "PET" in channels else None

    def prepare(batch: dict[str, Any], it: int) -> dict[str, Any]:
        x = batch["image"].to(dev, non_blocking=True)
        y = batch["label"].to(dev, non_blocking=True).long()
        task = batch["task"].to(dev, non_blocking=True)
        gen = torch.Generator(device=dev)
        gen.manual_seed(step_seed(recipe.seed, info.rank, it))
        x, y = augment_batch(x, y, aug, gen, pad, pet_channel)
        if recipe.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        inputs = {"x": x, "y": y, "task": task}
        if uses_organs:
            inputs["organs"] = batch["organs"].to(dev, non_blocking=True)
        return inputs

    def save(iteration: int, complete: bool) -> None:
        meta = build_meta(model, cache, recipe, sampler, iteration, complete)
        meta.init_from = init_record
        train_state = {"iteration": iteration, "sampler": {"seed": sampler.seed, "next_batch": iteration},
                       "scaler": scaler.state_dict() if scaler.is_enabled() else None}
        run_state.save_training_checkpoint(run_dir, model, meta, optimizer, train_state)

    def validate(iteration: int, writer) -> dict[str, float]:
        if not val_ids or iteration % recipe.validate_every:
            return {}
        examples: list = []
        scores = _validate(model, cache, val_ids, build_meta(model, cache, recipe, sampler, iteration, False), dev,
                           examples=examples if writer is not None else None)
        log_examples(writer, iteration, examples, pet_channel)
        return scores

    loader = iter(make_loader(sampler, recipe.batch_size, start=start, workers=recipe.workers,
                              pin_memory=dev.type == "cuda")) if start < recipe.iterations else None
    job = engine.Job(net=net, model=model, optimizer=optimizer, scaler=scaler, recipe=recipe, amp_dtype=amp_dtype,
                     loader=loader, prepare=prepare, save=save, start=start, run_dir=run_dir, info=info,
                     validate=validate, resumed=resume)
    return job


def _tasks_and_model(folder: Path) -> tuple[list[str] | None, str | None]:
    """``(task names, model name)`` of a checkpoint folder; ``(None, None)`` for weights without a task set (an
    encoder checkpoint of ``unipet anatomy pretrain`` / ``mastpro pretrain-anatomy``, or no ``meta.json``)."""
    import json

    try:
        raw = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None, None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict) or "tasks" not in raw["model"]:
        return None, None
    meta = ckpt.read_meta(folder)
    return meta.task_set.names, meta.model_name


def initialise_from(model: torch.nn.Module, source: str | Path, task_names: Sequence[str] | None = None,
                    task_donors: dict[str, str] | None = None, model_name: str | None = None) -> dict[str, Any]:
    """Copy the weights of ``source`` (run/checkpoint folder or weights file) into ``model`` where they fit.

    When ``source`` is a unipet checkpoint whose task set is a strict prefix of ``task_names`` (new cancer types
    appended), its task axes are grown (``unipet.models.task_growth.grow_tasks``, new types starting from
    ``task_donors``) instead of leaving every task-shaped tensor at its initialisation. Growth needs the same
    architecture: with ``model_name`` given and another model in the checkpoint (e.g. STU-Net or UniSeg from a
    DpDNet), the tensors are copied by name where they fit and ``task_donors`` is ignored.

    Returns the record kept in the checkpoint metadata: the source's file name and how many tensors were
    loaded, adapted, left out (shape mismatch) or missing (or, for a grown task set, copied / grown / taken
    from a donor / initialised, with the tasks added and their donors).

    Raises:
        ConfigError: not a single tensor fits (wrong architecture), or ``task_donors`` that name unknown tasks.
    """
    from unipet.models.weights import load_pretrained

    path = Path(source)
    if path.is_dir():
        folder = ckpt.find_checkpoint(path)
        path = folder / "model.safetensors"
        old_names, old_model = _tasks_and_model(folder)
        from unipet.models.task_growth import grow_tasks, is_appended

        if model_name is not None and old_model not in (None, model_name):
            task_donors = None
        elif old_names and is_appended(old_names, task_names or []):
            from safetensors.torch import load_file

            added = list(task_names)[len(old_names):]
            growth = grow_tasks(model, load_file(str(path)), old_names, task_names, task_donors)
            return {"file": path.name, **growth.summary(), "tasks_added": added, "donors": dict(task_donors or {})}
    if task_donors:
        raise ConfigError("recipe task_donors applies only when --init is a unipet checkpoint folder whose tasks the "
                          "cache's task set extends (new tasks appended); drop task_donors or fix the task set")
    if not path.exists():
        raise InputFileError(f"--init {source} does not exist; give a unipet run folder or a .safetensors file")
    report = load_pretrained(model, path)
    if not report.loaded:
        raise ConfigError(f"no tensor of {path} fits {type(model).__name__} ({report.summary()}); initialise from "
                          "weights of the same architecture")
    return {"file": path.name, "loaded": len(report.loaded), "adapted": len(report.adapted),
            "mismatched": len(report.mismatched), "missing": len(report.missing)}
