"""Pre-training of MAST-Pro's anatomical encoder as an organ-map autoencoder (``unipet pretrain-anatomy``).

MAST-Pro's paper uses a *pre-trained* anatomical encoder for its organ prompts but does not say how it was
pre-trained. unipet's choice, documented: an **organ autoencoder**. The encoder is exactly MAST-Pro's
``AnatomyEncoder`` (organ-label map -> per-organ area fractions on a 1/4 grid -> three stride-2 conv-GELU layers
-> one token of width ``16 x feature_size`` per 1/32 cell); a decoder of three stride-2 transposed convolutions
and a 1x1x1 convolution reconstructs the 1/4-grid organ fractions from the tokens; the loss is the soft
cross-entropy ``-sum_k f_k log softmax(logits)_k`` per cell (minimal, 0 bits of surprise, when the
reconstruction is exact; the fractions' own entropy is the floor), averaged over the cells of samples that have
an organ map. The tokens must therefore encode which organs lie in and around every cell — what the prompt
attention reads.

The organ maps come from a cache's ``organs.npy`` (imported, phantom or teacher–student maps: ``unipet
organs``), as random patches (``unipet.data.sampling.PatchSampler`` with ``with_organs``). The run folder holds
a unipet checkpoint (safetensors + JSON, ``CheckpointMeta.kind == "pretrain-anatomy"``) whose ``anatomy.*`` tensors have
the names of MAST-Pro's encoder, so ``unipet train --model mastpro --init RUN`` (or ``load_anatomy_encoder``)
starts MAST-Pro from them; the decoder's tensors are reported as unused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unipet.data.organs import ORGAN_CLASSES
from unipet.errors import ConfigError, OutputExistsError
from unipet.models.blocks import organ_fractions
from unipet.models.mastpro import ANATOMY_FACTOR, AnatomyEncoder
from unipet.train.recipes import Recipe, RecipeSettings

KIND = "pretrain-anatomy"


class AnatomyPretrainConfig(RecipeSettings):
    """Settings of an organ-autoencoder pre-training run (recorded in ``meta.json``): the module's and a recipe.

    Attributes:
        organ_classes: organ label values ``0 .. organ_classes - 1`` (MAST-Pro's ``organ_classes``).
        feature_size: MAST-Pro's Swin feature size F; the tokens have ``16 F`` channels.
        widths: the encoder's three conv widths (MAST-Pro's ``anatomy_widths``).
        recipe: ``RECIPES["anatomy-ae"]`` (AdamW with cosine decay to 0, 96^3 patches, 5000 steps); recipe fields
            given by keyword override it (``patch_size``, ``iterations``, ``batch_size``, ``lr``, ``weight_decay``,
            ``seed``, ``cases``, ``checkpoint_every``).
    """

    MODULE_FIELDS = ("organ_classes", "feature_size", "widths")
    RECIPE = "anatomy-ae"

    def __init__(self, organ_classes: int = ORGAN_CLASSES, feature_size: int = 48,
                 widths: Sequence[int] = (32, 64, 128), recipe: Recipe | str | None = None, **recipe_fields: Any) -> None:
        self.organ_classes, self.feature_size, self.widths = int(organ_classes), int(feature_size), [int(w) for w in widths]
        self._set_recipe(recipe, recipe_fields)

    def validate(self) -> None:
        if any(int(p) % 32 for p in self.recipe.patch_size):
            raise ConfigError(f"the anatomical encoder reaches 1/32; give a patch of multiples of 32, got "
                              f"{list(self.recipe.patch_size)}")
        if len(self.widths) != 3 or self.organ_classes < 2 or self.feature_size < 1:
            raise ConfigError("give 3 encoder widths, at least 2 organ classes and a positive feature size")
        if self.recipe.iterations < 1 or self.recipe.batch_size < 1 or self.recipe.lr <= 0:
            raise ConfigError("iterations, batch_size and lr must be positive")


class OrganAutoencoder(nn.Module):
    """``organs [B, D, H, W]`` (labels) -> ``(logits [B, K, D/4, H/4, W/4], fractions [B, K, ...], present [B])``.

    ``anatomy`` is MAST-Pro's ``AnatomyEncoder`` (same attribute name, so its tensors load into MAST-Pro by name);
    ``decoder`` brings the 1/32 tokens back to the 1/4 grid.
    """

    def __init__(self, organ_classes: int, dim: int, widths: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        w = [int(v) for v in widths]
        self.anatomy = AnatomyEncoder(organ_classes, dim, w)
        self.decoder = nn.Sequential(
            nn.ConvTranspose3d(dim, w[2], 2, stride=2), nn.GELU(),
            nn.ConvTranspose3d(w[2], w[1], 2, stride=2), nn.GELU(),
            nn.ConvTranspose3d(w[1], w[0], 2, stride=2), nn.GELU(),
            nn.Conv3d(w[0], organ_classes, 1))

    def forward(self, organs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, d, h, w = organs.shape
        tokens, present = self.anatomy(organs)
        grid = tokens.transpose(1, 2).reshape(b, tokens.shape[2], d // 32, h // 32, w // 32)
        fractions = organ_fractions(organs, self.anatomy.organ_classes, ANATOMY_FACTOR)
        return self.decoder(grid), fractions, present


def reconstruction_loss(logits: torch.Tensor, fractions: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy of the reconstructed fractions, averaged over the cells of samples with an organ map
    (0, still differentiable, when no sample has one)."""
    per_cell = -(fractions * F.log_softmax(logits.float(), dim=1)).sum(1)  # [B, d, h, w]
    if not bool(present.any()):
        return logits.sum() * 0.0
    return per_cell[present].mean()


@torch.no_grad()
def reconstruction_accuracy(model: OrganAutoencoder, organs: torch.Tensor) -> float:
    """Share of labelled 1/4-grid cells whose dominant organ the autoencoder reconstructs (arg-max agreement)."""
    logits, fractions, present = model(organs)
    labelled = fractions[:, 1:].sum(1) > 0
    keep = labelled & present[:, None, None, None]
    if not bool(keep.any()):
        return float("nan")
    return float((logits.argmax(1) == fractions.argmax(1))[keep].float().mean())


def pretrain_anatomy_encoder(data, run_dir: str | Path, config: AnatomyPretrainConfig | None = None,
                             device: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train the organ autoencoder on a cache's organ maps and write ``RUN_DIR/checkpoint/``.

    Args:
        data: a ``unipet.data.cache.Cache`` or its folder; it must hold organ maps.
        run_dir: output folder (refused when it holds a checkpoint, unless ``overwrite``).
        config: settings (defaults: MAST-Pro's encoder for the phantom's 38 organ labels, 96^3 patches).
        device: ``cpu``, ``cuda`` or None (CUDA when available).

    Returns:
        ``{"run_dir", "iteration", "losses": [...], "accuracy_start", "accuracy_end"}`` (accuracies on a fixed
        batch of patches: ``reconstruction_accuracy``).
    """
    from unipet import checkpoint as ckpt
    from unipet.data.cache import Cache
    from unipet.data.sampling import PatchSampler, make_loader
    from unipet.device import resolve_device
    from unipet.train import engine
    from unipet.train import state as run_state
    from unipet.train.distributed import DistInfo

    config = config or AnatomyPretrainConfig()
    config.validate()
    cache = data if isinstance(data, Cache) else Cache(data)
    run_dir = Path(run_dir)
    if not overwrite and ((run_dir / ckpt.CHECKPOINT).exists() or (run_dir / ckpt.OLD).exists()):
        raise OutputExistsError(f"{run_dir} already holds a checkpoint; choose another --out or pass --overwrite")
    ids = config.recipe.cases or cache.split("train") or list(cache.case_ids)
    with_maps = [c for c in ids if (cache.root / c / "organs.npy").exists()]
    if not with_maps:
        raise ConfigError(f"no case of {cache.root} has an organ map; build the cache with organ maps (imported or "
                          "from `unipet organs`) to pre-train the anatomical encoder")
    dev = resolve_device(device)
    recipe = config.recipe
    torch.manual_seed(recipe.seed)
    model = OrganAutoencoder(config.organ_classes, 16 * config.feature_size, config.widths).to(dev).train()
    optimizer = recipe.make_optimizer(model.parameters())
    sampler = PatchSampler(cache, case_ids=with_maps, patch_size=recipe.patch_size, mix=recipe.sampling,
                           seed=recipe.seed, with_organs=True)
    probe = torch.from_numpy(sampler.batch(10**9, max(2, recipe.batch_size))["organs"]).to(dev)
    model.eval()
    start_acc = reconstruction_accuracy(model, probe)
    model.train()

    def save(iteration: int, complete: bool) -> None:
        meta = ckpt.CheckpointMeta(
            kind=KIND, anatomy=config.to_dict(), iteration=int(iteration), complete=complete,
            data={"fingerprint": ckpt.data_fingerprint(cache), "cases": len(with_maps),
                  "source": cache.meta.get("source")},
            mastpro_kwargs={"organ_classes": config.organ_classes, "feature_size": config.feature_size,
                            "anatomy_widths": list(config.widths)})
        ckpt.save_checkpoint(run_dir, model, meta)

    job = engine.Job(net=_Reconstruction(model), model=model, optimizer=optimizer,
                     scaler=run_state.grad_scaler(recipe.amp_dtype(dev), dev), recipe=recipe,
                     amp_dtype=recipe.amp_dtype(dev),
                     loader=iter(make_loader(sampler, recipe.batch_size, workers=recipe.workers,
                                             pin_memory=dev.type == "cuda")),
                     prepare=lambda batch, it: {"organs": batch["organs"].to(dev, non_blocking=True)},
                     save=save, start=0, run_dir=run_dir, info=DistInfo(device=dev),
                     diverged="anatomy pre-training diverged (loss {loss}); use a lower --lr")
    result = engine.run(job, progress=False, tensorboard=False)
    model.eval()
    return {"run_dir": run_dir, "iteration": result.iteration, "losses": result.losses, "accuracy_start": start_acc,
            "accuracy_end": reconstruction_accuracy(model, probe), "model": model}


class _Reconstruction(nn.Module):
    """The autoencoder and its loss as one module returning a loss dict (the engine's unit of training)."""

    def __init__(self, model: OrganAutoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, organs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": reconstruction_loss(*self.model(organs))}


def load_anatomy_encoder(model: nn.Module, source: str | Path):
    """Copy a pre-trained anatomical encoder (a ``pretrain-anatomy`` run, or any checkpoint with ``anatomy.*``
    tensors) into a MAST-Pro model; every ``anatomy.*`` tensor of the model must be loaded.

    Returns:
        The ``unipet.models.weights.LoadReport`` of the ``anatomy.*`` tensors.

    Raises:
        ConfigError: the model has no anatomical encoder, or the encoder does not fit (other organ classes,
            feature size or widths: the message names the run's settings).
    """
    from unipet.models.weights import load_pretrained, read_state_dict
    from unipet import checkpoint as ckpt

    if getattr(model, "anatomy", None) is None:
        raise ConfigError("this model has no anatomical encoder (MAST-Pro built with use_anatomy=True has one)")
    path = Path(source)
    if path.is_dir():
        path = ckpt.find_checkpoint(path) / "model.safetensors"
    state = {k: v for k, v in read_state_dict(path).items() if k.startswith("anatomy.")}
    report = load_pretrained(model, state, adapt_input_channels=False)
    wanted = [n for n in model.state_dict() if n.startswith("anatomy.")]
    missing = [n for n in wanted if n not in report.loaded]
    if missing:
        raise ConfigError(f"the pre-trained anatomical encoder of {source} does not fit this model ({len(missing)} of "
                          f"{len(wanted)} tensors, e.g. {missing[0]}); build MAST-Pro with the run's organ_classes, "
                          "feature_size and anatomy_widths (meta.json: mastpro_kwargs)")
    return report
