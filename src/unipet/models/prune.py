"""Pruning a gCIS model to one task: keep only the sub-pathway each routed module routes that task to.

The route of a task depends on its text prompt only (``unipet.models.routing``), so at inference a task always
takes the same path at every routed module (7 in the release layout: bottleneck, five decoder levels, output
convolution; 5 decoder levels in ``levels5``). ``prune(model, task)`` builds the single-path model of that task
(registered as ``gcis`` with ``route`` and ``task``, the full model's ``layout`` kept): same encoder, shared heads
and the kept sub-pathways, no routers, no other paths, no text embeddings. Its outputs for that task equal the
full model's (same weights, same operations); ``max_output_difference`` checks it. ``unipet.analysis.gcis.export``
writes it as a self-describing unipet checkpoint that ``unipet predict`` runs like any other; ``route_for_text``
routes a *new* prompt (few-shot adaptation).
"""
from __future__ import annotations

from typing import Any

import torch

from unipet.errors import ConfigError
from unipet.models.gcis import GCIS, PAPER_PARAMS
from unipet.models.routing import route_table


def check_full(model: torch.nn.Module) -> GCIS:
    if not isinstance(model, GCIS):
        raise ConfigError(f"only gcis models can be pruned to one task, got {type(model).__name__}")
    if model.pruned:
        raise ConfigError("this gcis model is already pruned to one task; prune the full model it came from")
    return model


def task_route(model: GCIS, task: str | int) -> list[int]:
    """The arg-max path of ``task`` (name, alias or index) at each routed module (``model.module_labels``)."""
    model = check_full(model)
    index = model.task_set.index(task) if isinstance(task, str) else int(task)
    if not 0 <= index < model.num_tasks:
        raise ConfigError(f"task index {index} is outside the model's {model.num_tasks} tasks")
    return [int(k) for k in model.routes()[index].tolist()]


def route_for_text(model: GCIS, text: str) -> list[int]:
    """The arg-max path of a new prompt ``text`` at each routed module, embedded with the model's own text
    encoder."""
    from unipet.models.text import encode_texts

    model = check_full(model)
    kw = model.config.get("kwargs", {})
    encoder = kw.get("text_encoder", "minilm")
    if encoder is None:
        raise ConfigError("this model was built without a text encoder name (text_encoder=None); its routers cannot "
                          "embed a new prompt — rebuild it with text_encoder='minilm' (or the encoder it was trained with)")
    emb = encode_texts([text], encoder, int(kw.get("text_dim", model.text_dim))).to(model.text_embedding.device)
    return [int(k) for k in route_table(list(model.pathways), emb)[0].tolist()]


def pruned_state_dict(model: GCIS, route: list[int]) -> dict[str, torch.Tensor]:
    """The full model's state dict restricted to the kept paths (``pathways.L.paths.K.*`` -> ``pathways.L.paths.0.*``);
    routers and text embeddings dropped."""
    state = {}
    for name, value in check_full(model).state_dict().items():
        if name.startswith("text_embedding"):
            continue
        if name.startswith("pathways."):
            parts = name.split(".")
            level = int(parts[1])
            if parts[2] == "router":
                continue
            if parts[2] == "paths":
                if int(parts[3]) != route[level]:
                    continue
                name = ".".join(parts[:3] + ["0"] + parts[4:])
        state[name] = value
    return state


def prune(model: GCIS, task: str, route: list[int] | None = None, task_set: Any = None) -> GCIS:
    """The single-path model of ``task``, in eval mode on the full model's device.

    Args:
        model: a full gcis model built by ``unipet.models.create`` (its ``config`` is reused).
        task: the task name the pruned model is for (recorded; other tasks are refused by it).
        route: the kept path per routed module (default: ``task``'s own route in ``model``; give it for a new prompt,
            see ``route_for_text``).
        task_set: the pruned model's task set (default: the full model's); must contain ``task``.
    """
    from unipet.models import create
    from unipet.tasks import TaskSet

    model = check_full(model)
    tasks = model.task_set if task_set is None else TaskSet.load(task_set)
    name = tasks.resolve(task)
    if route is None:
        route = task_route(model, name)
    cfg = model.config
    kwargs = {**cfg.get("kwargs", {}), "route": [int(k) for k in route], "task": name, "text_encoder": None}
    device = next(model.parameters()).device
    with torch.device("cpu"):
        pruned = create(cfg["name"], in_channels=cfg["in_channels"], num_classes=cfg["num_classes"], tasks=tasks,
                        patch_size=cfg["patch_size"], **kwargs)
    pruned.load_state_dict(pruned_state_dict(model, kwargs["route"]), strict=True)
    return pruned.to(device).eval()


def parameter_report(model: GCIS, task: str | int = 0) -> dict[str, Any]:
    """Parameters of the full model and of one task's single-path model (counted on a built pruned model).

    Returns ``{"full", "pruned", "removed", "removed_fraction", "route", "paper_full_M", "paper_pruned_M"}``.
    """
    model = check_full(model)
    name = model.task_set[task].name if isinstance(task, int) else model.task_set.resolve(task)
    pruned = prune(model, name)
    full_n = sum(p.numel() for p in model.parameters())
    pruned_n = sum(p.numel() for p in pruned.parameters())
    return {"full": full_n, "pruned": pruned_n, "removed": full_n - pruned_n,
            "removed_fraction": (full_n - pruned_n) / full_n, "route": pruned.route,
            "paper_full_M": PAPER_PARAMS["full"], "paper_pruned_M": PAPER_PARAMS["pruned"]}


@torch.no_grad()
def max_output_difference(full: GCIS, pruned: GCIS, x: torch.Tensor) -> float:
    """Largest absolute difference of the logits of ``full`` (prompted with the pruned model's task) and
    ``pruned`` on ``x [B, C, D, H, W]`` (both in eval mode)."""
    full.eval()
    pruned.eval()
    task = torch.full((x.shape[0],), int(pruned.task_index), dtype=torch.long, device=x.device)
    return float((full(x, task=task) - pruned(x, task=task)).abs().max())
