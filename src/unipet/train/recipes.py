"""Training recipes as data: one dataclass holding every choice of a run, recorded with its checkpoint.

Shipped recipes:

- ``nnunet``: SGD, Nesterov momentum 0.99, lr 1e-2 with poly decay (exponent 0.9), weight decay 3e-5, 1000 epochs
  x 250 iterations, batch 2, patch 112x160x128, 1/3 foreground oversampling, deep supervision, gradient
  clipping at 12 (nnU-Net v2).
- ``dpdnet``: DpDNet as published. Source: the paper (§3.2) trains with SGD; the values the paper leaves to its
  code are those of the release's trainer (``STUNetTrainer`` on the authors' ``nnUNetTrainer``): SGD with Nesterov
  momentum 0.99, lr 1e-4 with poly decay (exponent 0.9), weight decay 1e-3, 1000 epochs x 250 iterations, batch 2
  (the nnU-Net plan), patch 112x160x128 (the release hard-codes the prompt to this patch's bottleneck), 1/3
  foreground oversampling, gradient clipping at 12, nnU-Net's augmentation and Dice + CE loss, **no deep
  supervision** (the release sets ``enable_deep_supervision = False``) and **no task-classifier term** (use the
  model with ``task_classifier=False``, DpDNet's default).
- ``dpdnet-release``: the release's trainer values verbatim, kept as a name so a run records which source it
  follows; they coincide with ``dpdnet`` (the release, too, uses SGD: the earlier claim that it or the paper used
  AdamW was wrong).
- ``dpdnet-prompt-free``: ``dpdnet`` plus unipet's prompt-free task classifier, trained with a 0.1-weighted
  cross-entropy (unipet's addition, not in the paper; build the model with ``task_classifier=True``).
- ``dpdnet-adamw``: unipet's earlier DpDNet recipe (AdamW lr 1e-4, wd 1e-3, deep supervision, task CE 0.1);
  unipet's choice, kept so that runs made with it can be repeated.
- ``transformer``: AdamW (lr 1e-4, wd 1e-5), linear warm-up over 5 % of the iterations then cosine decay to 0,
  gradient clipping at 1 — the usual recipe of UNETR/SwinUNETR/CLIP-driven models.
- ``mastpro``: MAST-Pro as its paper states: AdamW, lr 5e-5, batch 4, with quarter-turn rotation and
  intensity-shift augmentation added to nnU-Net's (source: the paper; the probabilities, 0.1 for a quarter turn
  in the axial plane and 0.2 for a shift of up to ±0.1, are those of the CLIP-driven Universal Model's release
  that MAST-Pro builds on). Patch 96^3 (Swin UNETR needs multiples of 32; the CLIP-driven lineage trains on
  96^3). Not stated by the paper, so unipet's choice: weight decay 1e-5, linear warm-up then cosine decay,
  clipping at 1, no deep supervision. Task-less training cases (mixed-tumour data) go to the general router
  (``taskless="general"``, as the paper trains it). ``mastpro-peft``: the same, training only the experts, routers and heads
  (``trainable="peft"``, start it from a pre-trained backbone with ``--init``).

- ``gcis``: joint training of gCIS on all tasks as its paper states: AdamW lr 2e-4, cosine annealing with warm
  restarts, multi-spacing patch sampling at 0.6, 1.0 and 1.5 mm (isotropic) with a random spacing for 10 % of the
  patches (source: the paper). Not stated there, so unipet's choice: restart cycles of 50,000 iterations (5 over
  the 250,000), weight decay 1e-5, clipping at 1, deep supervision, patch 128x160x128 (gCIS needs multiples of
  32). ``gcis-paths``: its second stage, fine-tuning the sub-pathways
  with the routes fixed and everything else frozen (``trainable="paths"``; each sub-pathway then learns from the
  tasks routed to it only; ``unipet.train.gcis.second_stage`` runs the strict per-sub-pathway version);
  ``gcis-adapt``: few-shot adaptation of a pruned single-path model (``trainable="decoder"``: encoder frozen).
- ``h2aseg``: H2ASeg's (seed and released code): Adam (L2 weight decay 1e-5), lr 1e-4, patch 128x128x64 in
  (x, y, z), i.e. ``(64, 128, 128)`` in unipet's (z, y, x); 4 patches per step (the release draws 2 crops from each
  of 2 studies), half centred on a lesion (its positive/negative crop ratio 1:1), deep supervision at 5 levels
  weighted ``6 - k`` (the model's ``deep_supervision_weights``), no gradient clipping; 60,000 steps (its 200 epochs
  on autoPET's 60 % training split at 2 studies per step). Poly decay replaces the release's per-epoch x0.99 steps.
- ``anatomy``: the anatomy-guided model (CNN encoders, often initialised by ``unipet anatomy pretrain``, plus Mamba and
  hypernet-attention prompt layers): AdamW (lr 2e-4, wd 1e-5), warm-up over 2,500 steps then cosine decay,
  gradient clipping at 1, deep supervision, nnU-Net's patch and sampling; 50,000 steps.
- ``organs``: the organ segmenters of the teacher–student organ maps (``unipet anatomy organs``): nnU-Net's recipe with
  uniformly random patches (organs are everywhere, there is no lesion to oversample).

A recipe can also be a JSON or YAML file with any of the fields (unknown fields are refused); ``load_recipe``
accepts ``base: NAME`` in a file to start from a shipped recipe.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from unipet.data.augment import AugmentConfig
from unipet.errors import ConfigError, check_known_fields


@dataclass
class Recipe:
    """Every setting of a training run.

    Attributes:
        name: recipe name.
        optimizer: ``"sgd"`` (Nesterov), ``"adamw"`` (decoupled weight decay) or ``"adam"`` (L2 weight decay added
            to the gradient, as ``torch.optim.Adam``).
        lr, weight_decay, momentum, betas: optimizer settings.
        schedule: ``"poly"`` (``lr * (1 - it/iterations)^poly_exponent``), ``"cosine"`` (after warm-up) or
            ``"cosine-restarts"`` (SGDR: cosine from ``lr`` to 0 over ``restart_period`` iterations, then again,
            each cycle ``restart_mult`` times longer than the one before; as ``CosineAnnealingWarmRestarts``).
        restart_period, restart_mult: the first cycle's length (iterations) and the growth factor of the cycles.
        warmup_iterations: linear warm-up from 0 (0 = none).
        iterations: optimizer steps.
        patch_size: ``(D, H, W)`` voxels; batch_size: samples per step (per process under DDP).
        sampling: patch mix ``{"lesion", "random", "negative"}`` (``unipet.data.sampling``).
        batch_mode: ``"mixed"`` (per-sample task) or ``"single-task"`` (one task per batch, UniSeg).
        taskless: what a training case without a task carries (``unipet.data.sampling``): ``"random"`` (a random
            task per draw) or ``"general"`` (``NO_TASK``; only for models with a general route, e.g. MAST-Pro).
        lesion_balance: how a lesion patch picks its lesion (``unipet.data.sampling``): ``"lesion"`` (uniformly
            over all lesions; nnU-Net-style recipes) or ``"task"`` (over tasks first: every prompt-aware head gets
            the same share of lesion patches; unipet's choice, used by ``benchmarks/recipes/default_v3.json``).
        prior_init: start every classifier at this foreground probability (``unipet.models.base.init_output_prior``,
            Lin et al. 2017; 0 = off, the papers' initialisation). Applied to a new model only, not on resume or
            ``init_from``.
        task_weights: with ``lesion_balance="task"``, ``{task: weight}`` of the tasks' shares of lesion patches
            (``unipet.data.sampling.PatchSampler``; unipet's choice), e.g. to emphasise a newly added type.
        as_task: ``{"task": name, "share": p, "labels": "keep" | "background"}``: a share of the draws of other
            tasks' cases is presented under this task's prompt, with their lesions or an empty mask
            (``unipet.data.sampling``; unipet's choice), e.g. to teach a type learnt from crops what whole bodies
            look like; None = off.
        task_donors: ``{new task: checkpoint task}`` for ``init_from`` a checkpoint with fewer tasks: the cache's
            task set appends new types to the checkpoint's, and each new type starts from its donor's prompt and
            head (``unipet.models.task_growth``; unipet's choice); a new type without a donor starts from the mean.
        augmentation: ``AugmentConfig`` fields.
        deep_supervision: train on every decoder resolution.
        amp: ``"auto"`` (bf16 on CUDA, off on CPU), ``"bf16"``, ``"fp16"`` (with a gradient scaler) or ``"none"``.
        grad_clip: gradient-norm clipping (0 = off).
        dice_smooth: Dice smoothing (0 = without smoothing); batch_dice: nnU-Net's batch Dice.
        dice_per_task, dice_skip_empty: Dice pooled per task / without lesion-free samples (``train.losses``;
            both False = nnU-Net's loss).
        task_loss_weight: weight of the auxiliary task-classifier CE.
        checkpoint_every: iterations between checkpoints; validate_every / validate_cases: periodic
            full-volume validation (0 = off).
        workers: DataLoader worker processes.
        seed: base seed of initialisation, sampling and augmentation.
        compile: ``torch.compile`` the model; channels_last: use ``channels_last_3d`` memory format.
        trainable: the parameters trained (``"all"``, or a scope the model defines, e.g. MAST-Pro's ``"peft"``:
            see ``UnipetModel.scope_parameters``); the others are frozen and not given to the optimizer.
        cases: train on these case ids only (None = the cache's ``train`` split, or every case without splits);
            e.g. the N shots of few-shot adaptation or the tasks routed to one gCIS sub-pathway.
        multi_spacing: ``{"spacings": [[z, y, x], ...], "random_p": 0.1}`` draws patches at several spacings
            (``unipet.data.sampling``; gCIS), or None.
    """

    name: str = "nnunet"
    optimizer: str = "sgd"
    lr: float = 1e-2
    weight_decay: float = 3e-5
    momentum: float = 0.99
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "poly"
    poly_exponent: float = 0.9
    restart_period: int = 0
    restart_mult: int = 1
    warmup_iterations: int = 0
    iterations: int = 250_000
    patch_size: tuple[int, int, int] = (112, 160, 128)
    batch_size: int = 2
    sampling: dict[str, float] = field(default_factory=lambda: {"lesion": 0.33, "random": 0.67, "negative": 0.0})
    batch_mode: str = "mixed"
    taskless: str = "random"
    lesion_balance: str = "lesion"
    prior_init: float = 0.0
    task_donors: dict[str, str] | None = None
    task_weights: dict[str, float] | None = None
    as_task: dict[str, Any] | None = None
    augmentation: dict[str, Any] = field(default_factory=lambda: AugmentConfig().to_dict())
    deep_supervision: bool = True
    amp: str = "auto"
    grad_clip: float = 12.0
    dice_smooth: float = 1e-5
    batch_dice: bool = True
    dice_per_task: bool = False
    dice_skip_empty: bool = False
    task_loss_weight: float = 0.1
    checkpoint_every: int = 1000
    validate_every: int = 0
    validate_cases: int = 4
    workers: int = 4
    seed: int = 0
    compile: bool = False
    channels_last: bool = False
    trainable: str = "all"
    cases: list[str] | None = None
    multi_spacing: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"], d["patch_size"] = list(self.betas), list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        check_known_fields(cls, d, "recipe fields")
        d = dict(d)
        for key in ("betas", "patch_size"):
            if key in d:
                d[key] = tuple(d[key])
        recipe = cls(**d)
        recipe.validate()
        return recipe

    def validate(self) -> None:
        """Raise ConfigError for settings that cannot work."""
        if self.optimizer not in ("sgd", "adamw", "adam"):
            raise ConfigError(f"recipe optimizer {self.optimizer!r} is not known; use 'sgd', 'adamw' or 'adam'")
        if self.schedule not in ("poly", "cosine", "cosine-restarts"):
            raise ConfigError(f"recipe schedule {self.schedule!r} is not known; use 'poly', 'cosine' or "
                              "'cosine-restarts'")
        if self.schedule == "cosine-restarts" and (self.restart_period < 1 or self.restart_mult < 1):
            raise ConfigError("the cosine-restarts schedule needs restart_period >= 1 iteration and restart_mult >= 1")
        if self.amp not in ("auto", "bf16", "fp16", "none"):
            raise ConfigError(f"recipe amp {self.amp!r} is not known; use auto, bf16, fp16 or none")
        if self.iterations < 1 or self.batch_size < 1 or len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ConfigError("recipe needs iterations >= 1, batch_size >= 1 and a 3-D patch_size of positive sizes")
        AugmentConfig.from_dict(self.augmentation)
        if self.cases is not None and (isinstance(self.cases, str) or not self.cases):
            raise ConfigError("recipe cases must be a non-empty list of case ids (or null for the train split)")
        from unipet.data.sampling import LESION_BALANCE, TASKLESS, parse_multi_spacing

        parse_multi_spacing(self.multi_spacing)
        if self.taskless not in TASKLESS:
            raise ConfigError(f"recipe taskless {self.taskless!r} is not known; use one of {', '.join(TASKLESS)}")
        if not 0.0 <= self.prior_init < 1.0:
            raise ConfigError(f"recipe prior_init {self.prior_init} is not a probability; give 0 (off) or a value in (0, 1)")
        if self.task_donors is not None and (not isinstance(self.task_donors, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.task_donors.items())):
            raise ConfigError("recipe task_donors must map new task names to checkpoint task names, e.g. "
                              '{"soft_tissue_sarcoma": "lymphoma"}')
        if self.lesion_balance not in LESION_BALANCE:
            raise ConfigError(f"recipe lesion_balance {self.lesion_balance!r} is not known; use one of "
                              f"{', '.join(LESION_BALANCE)}")

    def with_overrides(self, **overrides: Any) -> "Recipe":
        """A copy with the non-None ``overrides`` applied (and validated)."""
        return Recipe.from_dict({**self.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})

    # ------------------------------------------------------------------ optimisation
    def lr_at(self, iteration: int) -> float:
        """Learning rate at step ``iteration`` (0-based); a pure function of the iteration, so resuming needs
        no scheduler state."""
        it, total = int(iteration), max(1, self.iterations)
        if self.warmup_iterations and it < self.warmup_iterations:
            return self.lr * (it + 1) / self.warmup_iterations
        if self.schedule == "poly":
            return self.lr * (1 - min(it, total - 1) / total) ** self.poly_exponent
        if self.schedule == "cosine-restarts":
            pos, span = it - self.warmup_iterations, self.restart_period
            while pos >= span:
                pos, span = pos - span, span * self.restart_mult
            return self.lr * 0.5 * (1 + math.cos(math.pi * pos / span))
        span = max(1, total - self.warmup_iterations)
        progress = min(1.0, (it - self.warmup_iterations) / span)
        return self.lr * 0.5 * (1 + math.cos(math.pi * progress))

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        """The recipe's optimizer over ``params``."""
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=True,
                                   weight_decay=self.weight_decay)
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, betas=tuple(self.betas), weight_decay=self.weight_decay)
        return torch.optim.AdamW(params, lr=self.lr, betas=tuple(self.betas), weight_decay=self.weight_decay)

    def amp_dtype(self, device: torch.device) -> torch.dtype | None:
        """Autocast dtype on ``device`` (None = full precision)."""
        mode = self.amp
        if mode == "auto":
            mode = "bf16" if device.type == "cuda" else "none"
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[mode]


#: nnU-Net's augmentation plus MAST-Pro's quarter turns (axial plane, p 0.1) and intensity shift (±0.1, p 0.2)
MASTPRO_AUGMENTATION = AugmentConfig(p_rot90=0.1, rot90_plane=(1, 2), p_shift=0.2, shift=0.1).to_dict()

RECIPES: dict[str, Recipe] = {
    "nnunet": Recipe(),
    "dpdnet": Recipe(name="dpdnet", optimizer="sgd", lr=1e-4, weight_decay=1e-3, momentum=0.99,
                     deep_supervision=False, task_loss_weight=0.0),
    "dpdnet-release": Recipe(name="dpdnet-release", optimizer="sgd", lr=1e-4, weight_decay=1e-3, momentum=0.99,
                             deep_supervision=False, task_loss_weight=0.0),
    "dpdnet-prompt-free": Recipe(name="dpdnet-prompt-free", optimizer="sgd", lr=1e-4, weight_decay=1e-3,
                                 momentum=0.99, deep_supervision=False, task_loss_weight=0.1),
    "dpdnet-adamw": Recipe(name="dpdnet-adamw", optimizer="adamw", lr=1e-4, weight_decay=1e-3),
    "transformer": Recipe(name="transformer", optimizer="adamw", lr=1e-4, weight_decay=1e-5, schedule="cosine",
                          warmup_iterations=12_500, grad_clip=1.0, deep_supervision=False),
    "mastpro": Recipe(name="mastpro", optimizer="adamw", lr=5e-5, weight_decay=1e-5, schedule="cosine",
                      warmup_iterations=12_500, grad_clip=1.0, deep_supervision=False, patch_size=(96, 96, 96),
                      batch_size=4, augmentation=MASTPRO_AUGMENTATION, taskless="general"),
    "mastpro-peft": Recipe(name="mastpro-peft", optimizer="adamw", lr=5e-5, weight_decay=1e-5, schedule="cosine",
                           warmup_iterations=12_500, grad_clip=1.0, deep_supervision=False, patch_size=(96, 96, 96),
                           batch_size=4, augmentation=MASTPRO_AUGMENTATION, trainable="peft", taskless="general"),
    "gcis": Recipe(name="gcis", optimizer="adamw", lr=2e-4, weight_decay=1e-5, schedule="cosine-restarts",
                   restart_period=50_000, grad_clip=1.0, patch_size=(128, 160, 128),
                   multi_spacing={"spacings": [[0.6] * 3, [1.0] * 3, [1.5] * 3], "random_p": 0.1}),
    "gcis-paths": Recipe(name="gcis-paths", optimizer="adamw", lr=5e-5, weight_decay=1e-5, schedule="cosine",
                         iterations=50_000, grad_clip=1.0, patch_size=(128, 160, 128), trainable="paths"),
    "gcis-adapt": Recipe(name="gcis-adapt", optimizer="adamw", lr=1e-4, weight_decay=1e-5, schedule="cosine",
                         iterations=2_000, grad_clip=1.0, patch_size=(128, 160, 128), trainable="decoder",
                         checkpoint_every=500),
    "h2aseg": Recipe(name="h2aseg", optimizer="adam", lr=1e-4, weight_decay=1e-5, patch_size=(64, 128, 128),
                     batch_size=4, sampling={"lesion": 0.5, "random": 0.5, "negative": 0.0}, grad_clip=0.0,
                     iterations=60_000),
    "anatomy": Recipe(name="anatomy", optimizer="adamw", lr=2e-4, weight_decay=1e-5, schedule="cosine",
                      warmup_iterations=2_500, grad_clip=1.0, iterations=50_000),
    "organs": Recipe(name="organs", sampling={"lesion": 0.0, "random": 1.0, "negative": 0.0}),
    # cross-modal pre-training (unipet.pretrain): AdamW with linear warm-up then cosine decay (MAE's schedule),
    # random patches only, no PET/CT misalignment (it would teach that corresponding locations do not correspond)
    "pretrain": Recipe(name="pretrain", optimizer="adamw", lr=1e-4, weight_decay=0.05, schedule="cosine",
                       warmup_iterations=5_000, iterations=100_000, patch_size=(112, 160, 128), batch_size=2,
                       sampling={"random": 1.0}, augmentation=AugmentConfig(p_misalign=0.0).to_dict(),
                       deep_supervision=False, grad_clip=1.0),
    # MAST-Pro's anatomical encoder as an organ-map autoencoder (unipet.pretrain.organs; unipet's choice): AdamW,
    # cosine decay to 0 without warm-up, full precision, no clipping, random patches, no augmentation
    "anatomy-ae": Recipe(name="anatomy-ae", optimizer="adamw", lr=1e-3, weight_decay=1e-5, schedule="cosine",
                         iterations=5000, patch_size=(96, 96, 96), batch_size=2, sampling={"random": 1.0},
                         augmentation=AugmentConfig(enabled=False).to_dict(), deep_supervision=False, amp="none",
                         grad_clip=0.0, workers=0),
}


def load_recipe(source: str | Path | Recipe | None = None, **overrides: Any) -> Recipe:
    """A recipe from a shipped name, a JSON/YAML file, or a Recipe; non-None ``overrides`` are applied.

    A file may name ``base: <shipped recipe>`` and give only the fields it changes.
    """
    if isinstance(source, Recipe):
        recipe = source
    elif source is None or str(source) in RECIPES:
        recipe = RECIPES[str(source or "nnunet")]
    else:
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"recipe {source!r} is neither a shipped recipe ({', '.join(RECIPES)}) nor a file")
        text = path.read_text()
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
            raise ConfigError(f"recipe file {path} cannot be parsed ({exc}); write JSON or YAML") from None
        if not isinstance(data, dict):
            raise ConfigError(f"recipe file {path} must hold a mapping of recipe fields")
        base = data.pop("base", None)
        if base is not None and base not in RECIPES:
            raise ConfigError(f"recipe file {path}: unknown base {base!r}; use one of {', '.join(RECIPES)}")
        data.setdefault("name", path.stem)
        recipe = RECIPES[base or "nnunet"].with_overrides(**data)
    if overrides:
        recipe = recipe.with_overrides(**overrides)
    recipe = replace(recipe)
    recipe.validate()
    return recipe


class RecipeSettings:
    """Settings of a trainable module plus the ``Recipe`` that trains it (pre-training configurations).

    Subclasses list their module's fields in ``MODULE_FIELDS`` and name their shipped recipe in ``RECIPE``; their
    ``__init__`` takes the module fields, ``recipe`` and recipe fields as keywords (``iterations=4, lr=3e-3``)
    and calls ``_set_recipe``. ``to_dict`` nests the recipe under ``"recipe"``; ``from_dict`` also reads the flat
    layout of runs written before (module and recipe fields side by side).
    """

    MODULE_FIELDS: tuple[str, ...] = ()
    RECIPE = "nnunet"
    recipe: Recipe

    def _set_recipe(self, recipe: Recipe | str | None, fields: dict[str, Any]) -> None:
        self.recipe = load_recipe(recipe or self.RECIPE, **fields)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: json.loads(json.dumps(getattr(self, k))) for k in self.MODULE_FIELDS},
                "recipe": self.recipe.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        d = dict(d)
        module = {k: d.pop(k) for k in cls.MODULE_FIELDS if k in d}
        recipe = d.pop("recipe", None)
        return cls(**module, recipe=Recipe.from_dict(recipe) if isinstance(recipe, dict) else recipe, **d)

    def with_overrides(self, **overrides: Any):
        """A copy with the non-None ``overrides`` (module or recipe fields) applied."""
        given = {k: v for k, v in overrides.items() if v is not None}
        module = {k: given.pop(k, getattr(self, k)) for k in self.MODULE_FIELDS}
        return type(self)(**module, recipe=self.recipe, **given)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"
