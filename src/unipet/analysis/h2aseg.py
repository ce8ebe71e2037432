"""H2ASeg analyses: the mean TAMW channel weights of PET, CT and decoder channels per decoder level (the
paper's Table 3), recorded from a model's forward passes, on given batches or on patches of a cache.

Layer 5: it takes a trained model and a cache; the network itself is ``unipet.models.h2aseg``.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterable, Iterator, Sequence

import torch

from unipet.data.sampling import PatchSampler
from unipet.errors import ConfigError
from unipet.models.base import as_tuple3
from unipet.models.h2aseg import PAPER_PATCH, H2ASeg


@contextlib.contextmanager
def recording_tamw(model: H2ASeg) -> Iterator[list[list[tuple[torch.Tensor, torch.Tensor]]]]:
    """Context in which every TAMW of ``model`` records its weights; yields one list per decoder level (finest
    first) of ``(W_fore, W_back)`` pairs ``[B, C]``, filled by the forward passes run inside."""
    if not isinstance(model, H2ASeg) or model.fusions is None:
        raise ConfigError("TAMW weights exist only for an h2aseg model built with tamw=True")
    lists: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in model.fusions]
    for fusion, store in zip(model.fusions, lists):
        fusion.recorded = store
    try:
        yield lists
    finally:
        for fusion in model.fusions:
            fusion.recorded = None


@torch.no_grad()
def tamw_weight_report(model: H2ASeg, batches: Iterable[torch.Tensor]) -> list[dict[str, Any]]:
    """Mean TAMW channel weights per decoder level (the paper's Table 3), over the samples of ``batches``.

    Args:
        model: an ``h2aseg`` model with ``tamw=True``; run in eval mode (restored afterwards).
        batches: input tensors ``[B, 2, D, H, W]`` (on the model's device), e.g. lesion-centred patches.

    Returns:
        One row per level, finest first: ``{"level": 1..4, "scale": "1/1".., "samples": n, "pet_fore",
        "ct_fore", "decoder_fore", "pet_back", "ct_back", "decoder_back"}`` — the weights (in (-1, 1),
        dimensionless) averaged over the channels of each group and the samples.
    """
    was_training = model.training
    model.eval()
    try:
        with recording_tamw(model) as lists:
            for x in batches:
                model(x)
    finally:
        model.train(was_training)
    rows = []
    for level, (records, fusion) in enumerate(zip(lists, model.fusions)):
        if not records:
            raise ConfigError("tamw_weight_report needs at least one input batch")
        fore = torch.cat([f for f, _ in records])
        back = torch.cat([b for _, b in records])
        c = fusion.skip_channels
        groups = {"pet": slice(0, c), "ct": slice(c, 2 * c), "decoder": slice(2 * c, None)}
        row: dict[str, Any] = {"level": level + 1, "scale": f"1/{2 ** level}", "samples": int(fore.shape[0])}
        for kind, weights in (("fore", fore), ("back", back)):
            for name, sl in groups.items():
                row[f"{name}_{kind}"] = float(weights[:, sl].mean())
        rows.append(row)
    return rows


def tamw_report_on_cache(model: H2ASeg, cache: Any, case_ids: Sequence[str] | None = None, patches: int = 32,
                         batch_size: int = 4, mix: dict[str, float] | None = None, seed: int = 0,
                         patch_size: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """``tamw_weight_report`` on patches drawn from a unipet cache (``unipet.data.sampling.PatchSampler``).

    Args:
        model: a trained ``h2aseg`` model (tamw=True) on its device.
        cache: ``unipet.data.cache.Cache`` preprocessed as the model's training data (same channels).
        case_ids: cases to draw from (default: the ``val`` then ``test`` split, else every case).
        patches: number of patches (rounded up to whole batches); batch_size: patches per forward pass.
        mix: patch kinds (default ``{"lesion": 1.0}``: lesion-centred, where foreground weights mean most).
        seed: sampler seed; patch_size: ``(z, y, x)`` voxels (default: the model's ``patch_size``).

    Returns:
        ``tamw_weight_report``'s rows.

    Raises:
        ConfigError: the cache's PET channel is not the model's ``pet_channel``.
    """
    channels = [c.upper() for c in cache.config.channels]
    if len(channels) != 2 or channels[model.pet_channel] != "PET":
        raise ConfigError(f"the cache's channels are {channels} but the model reads PET from channel "
                          f"{model.pet_channel}; use the cache the model was trained on")
    if case_ids is None:
        case_ids = (cache.split("val") + cache.split("test")) or list(cache.case_ids)
    patch = as_tuple3(patch_size or model.config.get("patch_size") or PAPER_PATCH)
    sampler = PatchSampler(cache, case_ids=list(case_ids), patch_size=patch, mix=mix or {"lesion": 1.0}, seed=seed)
    device = next(model.parameters()).device
    batches = (torch.from_numpy(sampler.batch(i, batch_size)["image"]).to(device)
               for i in range(max(1, math.ceil(patches / batch_size))))
    return tamw_weight_report(model, batches)
