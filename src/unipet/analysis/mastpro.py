"""MAST-Pro analyses: parameters per part and for PEFT, and expert usage per task over a cohort (the share of
token assignments going to the generic experts and to each task's own experts).

Layer 5: it takes a trained model, a predictor and a cache; the network itself is ``unipet.models.mastpro``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from unipet.errors import ConfigError
from unipet.models.mastpro import MASTPro


def parameter_groups(model: MASTPro) -> dict[str, int]:
    """Parameters per part: ``backbone`` (Swin UNETR), ``experts``, ``routers``, ``text_projection``,
    ``anatomy_encoder``, ``prompt_attention``, ``heads`` (mask proposal, head reduction, learned queries)."""
    groups = {"backbone": 0, "experts": 0, "routers": 0, "text_projection": 0, "anatomy_encoder": 0,
              "prompt_attention": 0, "heads": 0}
    for name, p in model.named_parameters():
        if name.startswith("net."):
            key = "backbone"
        elif name.startswith("moe."):
            key = "experts" if ".experts." in name else "routers"
        elif name.startswith("text_proj."):
            key = "text_projection"
        elif name.startswith("anatomy."):
            key = "anatomy_encoder"
        elif name.startswith(("attention.", "token_type")):
            key = "prompt_attention"
        else:
            key = "heads"
        groups[key] += p.numel()
    return groups


def parameter_report(model: MASTPro) -> dict[str, Any]:
    """Total and trainable parameters for full and PEFT training.

    Returns:
        ``{"total", "trainable_full", "trainable_peft", "peft_share_pct", "reduction_pct", "groups"}``:
        counts, the PEFT share of the total and its reduction against full fine-tuning, in percent.
    """
    total = sum(p.numel() for p in model.parameters())
    peft_names = model.scope_parameters("peft")
    peft = sum(p.numel() for n, p in model.named_parameters() if n in peft_names)
    return {"total": total, "trainable_full": total, "trainable_peft": peft,
            "peft_share_pct": round(100.0 * peft / total, 3), "reduction_pct": round(100.0 * (1 - peft / total), 3),
            "groups": parameter_groups(model)}


def start_usage(model: MASTPro) -> None:
    """Start counting expert assignments in every D-MoE layer (see ``usage_report``)."""
    if not model.moe:
        raise ConfigError("this MAST-Pro was built with use_moe=False and has no experts to report")
    for layer in model.moe:
        layer.start_usage()


def usage_report(model: MASTPro, task_names: Sequence[str]) -> dict[str, Any]:
    """Stop counting and summarise expert usage per route (each task, then ``"general"``).

    Returns:
        ``{"generic_experts", "task_experts", "layers": [{"stage", "block", "routes": {route: {"tokens",
        "share": [E floats]}}}], "routes": {route: {"tokens", "generic_share", "own_share", "other_share",
        "active_experts"}}}``: ``share`` is each expert's fraction of the route's assignments in that layer;
        the route summary averages over layers (``own_share``: the task's own experts; ``other_share`` is 0
        by construction of the routers; ``active_experts``: mean number of experts with >= 1 % of assignments).
    """
    names = [*task_names, "general"]
    first = model.moe[0]
    if len(task_names) != first.num_tasks:
        raise ConfigError(f"{len(task_names)} task names for a model of {first.num_tasks} tasks; give the model's task set")
    g, s = first.generic, first.per_task
    layers, summary = [], {n: {"tokens": 0.0, "generic_share": [], "own_share": [], "other_share": [], "active_experts": []}
                           for n in names}
    for (stage, block), layer in zip(model.moe_sites, model.moe):
        counts = layer.stop_usage()
        routes = {}
        for row, name in enumerate(names):
            total = float(counts[row].sum())
            if total == 0:
                continue
            share = (counts[row] / total).tolist()
            routes[name] = {"tokens": total / max(1, layer.top_k_general if row == first.num_tasks else layer.top_k_task),
                            "share": [round(v, 6) for v in share]}
            own = range(g + row * s, g + (row + 1) * s) if row < first.num_tasks else range(0)
            entry = summary[name]
            entry["tokens"] += routes[name]["tokens"]
            entry["generic_share"].append(sum(share[:g]))
            entry["own_share"].append(sum(share[i] for i in own))
            entry["other_share"].append(1.0 - sum(share[:g]) - sum(share[i] for i in own))
            entry["active_experts"].append(sum(v >= 0.01 for v in share))
        layers.append({"stage": stage, "block": block, "routes": routes})
    out_routes = {}
    for name, entry in summary.items():
        if not entry["generic_share"]:
            continue
        n = len(entry["generic_share"])
        out_routes[name] = {"tokens": entry["tokens"] / n,
                            **{k: round(sum(entry[k]) / n, 6) for k in ("generic_share", "own_share", "other_share",
                                                                         "active_experts")}}
    return {"generic_experts": g, "task_experts": s, "layers": layers, "routes": out_routes}


def cohort_usage(predictor, cache, case_ids: Sequence[str], general: bool = False) -> dict[str, Any]:
    """Expert usage of a trained MAST-Pro over cached studies (sliding-window passes of the whole volumes).

    Args:
        predictor: a ``unipet.infer.Predictor`` holding the model.
        cache: a ``unipet.data.cache.Cache``.
        case_ids: the studies to run; each is routed by its own task (or by the general router when
            ``general``, i.e. prompt-free).
        general: route every study through the general router.

    Returns:
        ``usage_report`` plus ``"cases"`` (the number of studies run).
    """
    model = predictor.model
    if not isinstance(model, MASTPro):
        raise ConfigError(f"expert usage needs a MAST-Pro checkpoint, this one holds {type(model).__name__}")
    start_usage(model)
    for cid in case_ids:
        case = cache.load(cid, mmap=True)
        task = None if general or case.task is None else predictor.task_index(case.task)
        organs = None if case.organs is None else np.asarray(case.organs)
        predictor.probabilities(np.asarray(case.image), task, organs)
    return {**usage_report(model, predictor.task_set.names), "cases": len(case_ids)}
