"""gCIS's training stages beyond joint training: per-sub-pathway fine-tuning and few-shot adaptation.

- Stage 1 is ordinary training: ``train(cache, "gcis", RUN, recipe="gcis")``.
- Stage 2 (``second_stage``): for every sub-pathway ``(routed module L, path K)`` that at least one task is routed
  to (arg-max routes of the stage-1 model; ``GCIS.module_labels`` names the modules: the release layout's
  bottleneck, five decoder levels and output convolution), fine-tune that sub-pathway alone (scope
  ``path:L:K``, everything else frozen, routes fixed) on the training cases of the tasks routed to it (recipe
  field ``cases``). The runs are chained (each starts from the previous one's weights); the last run holds the
  final model. The cheaper joint variant — all sub-pathways at once with the routes fixed — is the recipe
  ``gcis-paths``.
- Few-shot adaptation (``adapt``): route a new prompt with the trained routers, prune the model to that route
  (``unipet.models.prune``), freeze the encoder and train the rest (the kept sub-pathways and the heads; recipe
  ``gcis-adapt``) on N studies of the new task.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from unipet.errors import ConfigError, OutputExistsError
from unipet.train.recipes import Recipe, load_recipe


def _train_cases(cache, tasks: Sequence[str]) -> list[str]:
    """Training case ids (split ``train``, or every case without splits) whose task is in ``tasks``."""
    ids = cache.split("train") or list(cache.case_ids)
    wanted = set(tasks)
    return [c for c in ids if cache.info(c).get("task") in wanted]


def second_stage_plan(routes: Sequence[Sequence[int]], task_names: Sequence[str]) -> list[tuple[int, int, list[str]]]:
    """``[(level, path, tasks routed there), ...]`` for every used sub-pathway, module-major in ``pathways`` order
    (``level`` is the routed module's index, as in the scope ``path:level:path``).

    Args:
        routes: ``[T][L]`` arg-max path of each task at each routed module (``GCIS.routes()``).
        task_names: the T task names.
    """
    table = np.asarray(routes, dtype=np.int64)
    if table.ndim != 2 or table.shape[0] != len(task_names):
        raise ConfigError(f"routes must be [tasks, levels] with one row per task name, got shape {table.shape}")
    plan = []
    for level in range(table.shape[1]):
        for path in sorted(set(table[:, level].tolist())):
            plan.append((level, int(path), [task_names[t] for t in np.flatnonzero(table[:, level] == path)]))
    return plan


def second_stage(joint_run: str | Path, data, out: str | Path, recipe: str | Path | Recipe = "gcis-paths",
                 iterations: int | None = None, device: str | None = None, progress: bool = False,
                 **train_kw: Any) -> list[dict[str, Any]]:
    """Per-sub-pathway fine-tuning after joint training (see the module docstring).

    Args:
        joint_run: the stage-1 gcis run (or checkpoint) folder.
        data: its cache (folder or Cache).
        out: folder receiving one run per sub-pathway, ``L{level}_P{path}``, in plan order.
        recipe: base recipe (``gcis-paths``); ``trainable`` and ``cases`` are set per run.
        iterations: steps per sub-pathway (overrides the recipe).
        **train_kw: further ``unipet.train.train`` arguments (``patch_size``, ``batch_size``, ``workers``, ...).

    Returns:
        One record per run: ``level``, ``path``, ``tasks``, ``cases``, ``run`` (folder), ``final_loss``.
    """
    from unipet.data.cache import Cache
    from unipet.train import train
    from unipet.checkpoint import load_checkpoint

    model, meta = load_checkpoint(joint_run)
    if meta.model_name != "gcis" or getattr(model, "pruned", True):
        raise ConfigError(f"{joint_run} is not a full gcis run; give the folder of the joint (stage-1) training")
    cache = data if isinstance(data, Cache) else Cache(data)
    plan = second_stage_plan(model.routes().tolist(), model.task_set.names)
    base = load_recipe(recipe, iterations=iterations)
    out = Path(out)
    records, previous = [], Path(joint_run)
    for level, path, tasks in plan:
        cases = _train_cases(cache, tasks)
        if not cases:
            continue
        run = out / f"L{level}_P{path}"
        step = base.with_overrides(trainable=f"path:{level}:{path}", cases=cases, name=f"{base.name}-L{level}P{path}")
        result = train(cache, "gcis", run, recipe=step, model_kw=dict(meta.model_kwargs,
                                                                       num_classes=meta.num_classes),
                       device=device, init_from=previous, progress=progress, tensorboard=False, **train_kw)
        records.append({"level": level, "path": path, "tasks": tasks, "cases": len(cases), "run": str(run),
                        "final_loss": result.losses[-1] if result.losses else None})
        previous = run
    return records


def shot_cases(cache, task: str, shots: int, seed: int = 0) -> list[str]:
    """``shots`` training cases of ``task`` (with a lesion/structure label), drawn reproducibly by ``seed``."""
    if shots < 1:
        raise ConfigError(f"--shots must be >= 1, got {shots}")
    name = cache.task_set.resolve(task)
    pool = [c for c in _train_cases(cache, [name]) if cache.info(c).get("foreground_voxels", 0) > 0]
    if len(pool) < shots:
        raise ConfigError(f"the cache has {len(pool)} labelled training studies of task {name}, fewer than the "
                          f"{shots} shots asked for; give fewer shots or more studies")
    order = np.random.default_rng(seed).permutation(len(pool))
    return sorted(pool[i] for i in order[:shots])


def adapt(full_run: str | Path, data, out: str | Path, task: str, shots: int, prompt: str | None = None,
          recipe: str | Path | Recipe = "gcis-adapt", iterations: int | None = None, seed: int = 0,
          device: str | None = None, progress: bool = False, from_scratch: bool = False,
          **train_kw: Any) -> dict[str, Any]:
    """Few-shot adaptation of a trained gcis model to a new task (see the module docstring).

    Args:
        full_run: a full gcis run (its routers route the new prompt).
        data: a cache holding studies of the new task (its task set must contain ``task``).
        out: the adapted model's run folder (a normal unipet run: ``unipet predict INPUT PRED_DIR --checkpoint OUT``
            uses it).
        task: the cache task whose studies are the shots; the pruned model is for this task.
        shots: number of training studies used (N-shot).
        prompt: the text routed (default: the task's short description in the cache's task set).
        recipe: ``gcis-adapt`` (encoder frozen); ``iterations`` overrides it.
        seed: which studies are the shots (and the recipe's seed).
        from_scratch: baseline of the few-shot comparison: the same single-path network trained from random
            initialisation on the same shots, every parameter trainable.
        **train_kw: further ``unipet.train.train`` arguments.

    Returns:
        ``{"task", "prompt", "route", "cases", "run", "trainable_params", "frozen_params", "final_loss"}``.
    """
    from unipet.data.cache import Cache
    from unipet.models.prune import prune, route_for_text
    from unipet.models.weights import save_weights
    from unipet.train import train
    from unipet.checkpoint import load_checkpoint

    full, meta = load_checkpoint(full_run)
    if meta.model_name != "gcis" or getattr(full, "pruned", True):
        raise ConfigError(f"{full_run} is not a full gcis run; adapt a model trained with --model gcis")
    cache = data if isinstance(data, Cache) else Cache(data)
    if [c.upper() for c in cache.config.channels] != [c.upper() for c in meta.channels]:
        raise ConfigError(f"the cache's channels {list(cache.config.channels)} differ from the model's "
                          f"{meta.channels}; preprocess the new studies with the model's channels")
    name = cache.task_set.resolve(task)
    text = prompt or cache.task_set[name].description or name.replace("_", " ")
    route = route_for_text(full, text)
    cases = shot_cases(cache, name, shots, seed)
    out = Path(out)
    if (out / "checkpoint").exists():
        raise OutputExistsError(f"{out} already holds a checkpoint; choose another --out")
    kw = {**meta.model_kwargs, "route": route, "task": name, "text_encoder": None,
          "num_classes": meta.num_classes}
    init = None
    if not from_scratch:
        out.mkdir(parents=True, exist_ok=True)
        init = save_weights(prune(full, name, route=route, task_set=cache.task_set), out / "pruned_init.safetensors",
                            overwrite=True)
    step = load_recipe(recipe, iterations=iterations).with_overrides(
        cases=cases, seed=seed, trainable="all" if from_scratch else None, validate_every=0)
    result = train(cache, "gcis", out, recipe=step, model_kw=kw, device=device, init_from=init, progress=progress,
                   tensorboard=False, **train_kw)
    model = result.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"task": name, "prompt": text, "route": route, "cases": cases, "run": str(out),
            "trainable_params": trainable, "frozen_params": sum(p.numel() for p in model.parameters()) - trainable,
            "final_loss": result.losses[-1] if result.losses else None}
