"""gCIS export: the single-path model of one task written as a checkpoint that ``unipet predict`` runs.

The pruning itself is ``unipet.models.prune`` (a network transformation); this module reads a full run and
writes the pruned one (layer 5: it takes and writes run folders, which model files never do).
"""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

from unipet import checkpoint as ckpt
from unipet.errors import ConfigError, OutputExistsError
from unipet.models.prune import check_full, prune


def export(source: str | Path, task: str, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Write the single-path model of ``task`` from the full gcis run ``source`` as a checkpoint in ``out``.

    ``out/checkpoint/`` holds ``model.safetensors`` and ``meta.json`` (the full run's metadata with the pruned
    model's config and a ``pruned`` record: task, route, parameters before and after), loadable by
    ``unipet.checkpoint.load_checkpoint`` and ``unipet predict``.

    Returns:
        The ``pruned`` record.

    Raises:
        OutputExistsError: ``out`` already holds a checkpoint and ``overwrite`` is False.
    """
    out = Path(out)
    if (out / ckpt.CHECKPOINT).exists() and not overwrite:
        raise OutputExistsError(f"{out} already holds a checkpoint; choose another --out or pass --overwrite")
    full, meta = ckpt.load_checkpoint(source)
    if meta.model_name != "gcis":
        raise ConfigError(f"{source} holds a {meta.model_name} model; only gcis models can be "
                          "pruned to one task")
    check_full(full)
    name = full.task_set.resolve(task)
    pruned = prune(full, name)
    record = {"task": name, "route": pruned.route, "params_full": sum(p.numel() for p in full.parameters()),
              "params_pruned": sum(p.numel() for p in pruned.parameters()),
              "source_iteration": meta.iteration}
    new_meta = replace(copy.deepcopy(meta), model=pruned.config, pruned=record)
    ckpt.save_checkpoint(out, pruned, new_meta)
    return record
