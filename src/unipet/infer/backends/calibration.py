"""Tiles and studies that check an exported network against PyTorch.

- ``phantom_tiles``: tiles of phantom studies (``unipet.data.phantom.generate_study``, ``size="small"``) preprocessed
  as the checkpoint says and cut on the predictor's own tile grid; only tiles with at least 5 % of voxels above the
  padding value (body) are kept, as the task-classifier vote does. They serve the export check (max |Δ| of
  probabilities on the same tiles) and int8 calibration (NNCF), from disjoint seeds (``CHECK_SEEDS``,
  ``CALIBRATION_SEEDS``); the mask acceptance of an int8 or bf16 graph uses further, held-out seeds
  (``HELD_OUT_SEEDS``) and, when given, real studies.
- ``mask_agreement``: an exported network's masks against PyTorch's float32 masks on whole studies (the predictor's
  sliding window, restoration and lesion table): Dice, lesion counts, MTV and SUVmax.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Sequence

import numpy as np

#: phantom seeds of the export check, of int8 calibration, and of the held-out acceptance studies (disjoint)
CHECK_SEEDS = (9101,)
CALIBRATION_SEEDS = (9201, 9202, 9203, 9204)
HELD_OUT_SEEDS = (9301, 9302, 9303)
#: least share of a tile's voxels above the padding value for it to be used
MIN_CONTENT = 0.05


def phantom_studies(seeds: Iterable[int]) -> list:
    """Small phantom ``Study`` objects, one per seed (lesion-positive: a check needs lesions to agree on)."""
    from unipet.data.phantom import generate_study

    return [generate_study(int(s), size="small", negative=False).study for s in seeds]


def study_tiles(predictor, study) -> np.ndarray:
    """``[n, C, *patch]`` float32 tiles of one study on ``predictor``'s sliding-window grid (content tiles only)."""
    import torch

    from unipet.data.preprocess import preprocess_study

    pre = preprocess_study(study, predictor.config, with_label=False)
    x, _ = predictor._padded(pre.image)
    starts = [predictor.tile_starts(n, axis) for axis, n in enumerate(x.shape[2:])]
    pad = predictor.pad.view(1, -1, 1, 1, 1)
    p = predictor.patch
    tiles = [x[:, :, z:z + p[0], y:y + p[1], w:w + p[2]] for z, y, w in itertools.product(*starts)]
    kept = [t for t in tiles if float((t > pad + 1e-3).any(dim=1).float().mean()) >= MIN_CONTENT]
    return torch.cat(kept or tiles).numpy()


def phantom_tiles(predictor, seeds: Sequence[int], limit: int) -> np.ndarray:
    """Up to ``limit`` content tiles of the phantoms of ``seeds``, taken evenly over each study's tiles."""
    per = max(1, -(-limit // len(seeds)))
    out = []
    for study in phantom_studies(seeds):
        tiles = study_tiles(predictor, study)
        pick = np.linspace(0, len(tiles) - 1, min(per, len(tiles))).round().astype(int)
        out.append(tiles[np.unique(pick)])
    return np.concatenate(out)[:limit]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom


def _relative(a: float, b: float) -> float:
    """|a - b| relative to ``a`` (0 when both are 0, inf when only ``a`` is)."""
    if a == b:
        return 0.0
    return abs(a - b) / abs(a) if a else float("inf")


def mask_agreement(reference, candidate, studies: Sequence[Any], task_for=None) -> list[dict[str, Any]]:
    """Per study: the candidate predictor's mask against the reference's (both ``unipet.infer.Predictor``).

    ``task_for(study)`` gives the task (default: the study's own task when the model knows it, else the model's
    first task, so that a study of another cancer type — e.g. the real sarcomas — is still segmented with one
    fixed prompt by both). Returns dicts with ``study``, ``dice``, ``lesions`` (reference, candidate),
    ``mtv_ml`` and ``suv_max`` (reference, candidate) and their relative differences.
    """
    rows = []
    names = reference.task_set.names
    for study in studies:
        task = task_for(study) if task_for else (study.task if study.task in reference.task_set else names[0])
        a = reference.predict_study(study, task=task)
        b = candidate.predict_study(study, task=task)
        ma, mb = a.mask > 0, b.mask > 0
        voxel_ml = float(np.prod(study.spacing)) / 1000.0
        mtv = (float(ma.sum()) * voxel_ml, float(mb.sum()) * voxel_ml)
        pet = np.asarray(study.pet, dtype=np.float32)
        suv = (float(pet[ma].max()) if ma.any() else 0.0, float(pet[mb].max()) if mb.any() else 0.0)
        rows.append({"study": study.study_id, "task": task, "dice": round(_dice(ma, mb), 5),
                     "lesions": [len(a.lesions), len(b.lesions)], "mtv_ml": [round(v, 3) for v in mtv],
                     "suv_max": [round(v, 4) for v in suv], "mtv_rel_diff": round(_relative(*mtv), 5),
                     "suv_max_rel_diff": round(_relative(*suv), 5)})
    return rows


def accepted(rows: Sequence[dict[str, Any]], min_dice: float, max_rel: float) -> bool:
    """True when every study's Dice is at least ``min_dice`` and its MTV and SUVmax differ by at most ``max_rel``."""
    return all(r["dice"] >= min_dice and r["mtv_rel_diff"] <= max_rel and r["suv_max_rel_diff"] <= max_rel
               for r in rows)
