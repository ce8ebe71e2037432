"""Task sets: the names, descriptions, prompts and label meaning of the targets a model can be told.

A task is a cancer type (or, for CT models, an organ / vessel target). Task sets are data: JSON files
shipped in ``unipet/resources`` (``default`` holds the four phantom cancer types; ``pet_tumours`` adds
common PET/CT tumours) or any JSON file a user writes in the same schema::

    {"name": "...", "tasks": [{"name": "lung_cancer", "kind": "lesion", "description": "...",
      "prompt": "This is a ...", "template": {"tumour": ..., "organ": ..., "shape": ..., "edge": ...,
      "modality": ...}, "aliases": ["LUNG_CANCER"], "tracer": "FDG", "label": {"values": [1]}}]}

Nothing in unipet parses task names from file names; importers map a diagnosis string to a task
through ``TaskSet.resolve`` (name or alias, case-insensitive).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Sequence

from unipet.errors import ConfigError, UnknownTaskError

#: task index of a sample whose task is not known (mixed-tumour data): models with a general route take it
NO_TASK = -1
PROMPT_TEMPLATE = "This is a {tumour} in the {organ}, appearing as a {shape} mass with {edge} borders on {modality}."


@dataclass(frozen=True)
class Task:
    """One target a universal model can be prompted with.

    Attributes:
        name: identifier (``lung_cancer``); the key used everywhere.
        kind: ``lesion`` (a cancer type), ``organ`` or ``vessel``.
        description: short human text ("lung cancer"); the gCIS-style text prompt.
        prompt: the knowledge sentence (MAST-Pro template) — editable data.
        template: the fields the prompt was filled from.
        aliases: other spellings mapped to this task (e.g. autoPET's ``LUNG_CANCER``).
        tracer: radiotracer the task is imaged with (``FDG``, ``PSMA``), if any.
        label: label meaning, e.g. ``{"values": [1]}`` for lesion masks or ``{"organ": "aorta"}``.
    """

    name: str
    kind: str = "lesion"
    description: str = ""
    prompt: str = ""
    template: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    tracer: str | None = None
    label: dict[str, Any] = field(default_factory=lambda: {"values": [1]})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["aliases"] = list(self.aliases)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Task":
        if "name" not in data:
            raise ConfigError(f"task entry {data!r} has no 'name'; every task needs one")
        data = dict(data)
        template = dict(data.get("template") or {})
        if not data.get("prompt") and template:
            try:
                data["prompt"] = PROMPT_TEMPLATE.format(**template)
            except KeyError as exc:
                raise ConfigError(f"task {data['name']}: template lacks field {exc}; give all of "
                                  "tumour, organ, shape, edge, modality or write 'prompt' directly") from None
        data["template"] = template
        data["aliases"] = tuple(data.get("aliases") or ())
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class TaskSet:
    """An ordered set of tasks; a task's index is its position (the integer a model receives)."""

    def __init__(self, tasks: Sequence[Task], name: str = "custom") -> None:
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"task set {name!r} repeats a task name: {names}")
        if not tasks:
            raise ConfigError(f"task set {name!r} is empty; give at least one task")
        self.name = name
        self.tasks: tuple[Task, ...] = tuple(tasks)
        self._lookup: dict[str, int] = {}
        for i, t in enumerate(self.tasks):
            for key in (t.name, *t.aliases):
                self._lookup[key.lower()] = i
        # spellings with spaces or hyphens for underscores ("lung cancer", "lung-cancer"), where unambiguous
        loose: dict[str, set[int]] = {}
        for key, i in self._lookup.items():
            loose.setdefault(_loose(key), set()).add(i)
        self._loose = {k: next(iter(v)) for k, v in loose.items() if len(v) == 1}

    # ---------------------------------------------------------------- construction
    @classmethod
    def load(cls, source: str | Path | "TaskSet" | Sequence[str] | int | None = None) -> "TaskSet":
        """Load a task set.

        ``source`` may be a TaskSet (returned as is), a shipped name (``"default"``, ``"pet_tumours"``),
        a path to a JSON file, a list of task names (bare tasks), an int N (tasks ``task0..task{N-1}``),
        or None (the default set).
        """
        if isinstance(source, TaskSet):
            return source
        if source is None:
            source = "default"
        if isinstance(source, int):
            return cls([Task(name=f"task{i}") for i in range(source)], name=f"{source}-tasks")
        if isinstance(source, (list, tuple)):
            return cls([Task(name=str(n), description=str(n).replace("_", " ")) for n in source], name="custom")
        source_str = str(source)
        path = Path(source_str)
        if path.suffix == ".json" or path.exists():
            if not path.exists():
                raise ConfigError(f"task set file {path} does not exist; give a JSON task set or a shipped name "
                                  f"({', '.join(shipped_task_sets())})")
            return cls.from_dict(json.loads(path.read_text()))
        if source_str not in shipped_task_sets():
            raise ConfigError(f"unknown task set {source_str!r}; shipped ones: {', '.join(shipped_task_sets())}, "
                              "or give a path to a JSON file")
        text = resources.files("unipet.resources").joinpath(f"tasks_{source_str}.json").read_text()
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaskSet":
        if "tasks" not in data:
            raise ConfigError("task set JSON needs a 'tasks' list")
        return cls([Task.from_dict(t) for t in data["tasks"]], name=data.get("name", "custom"))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tasks": [t.to_dict() for t in self.tasks]}

    # ---------------------------------------------------------------- lookup
    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __getitem__(self, key: int | str) -> Task:
        return self.tasks[key] if isinstance(key, int) else self.tasks[self.index(key)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name) is not None

    def _find(self, name: str) -> int | None:
        """Index for a name or alias, case-insensitive; spaces and hyphens count as underscores where that
        names one task only. None when nothing matches."""
        key = str(name).strip().lower()
        if key in self._lookup:
            return self._lookup[key]
        return self._loose.get(_loose(key))

    def suggest(self, name: str) -> list[str]:
        """Task names close to a misspelt ``name`` (``difflib`` ratio >= 0.75 on names and aliases), best first."""
        import difflib

        keys = {_loose(k): self.tasks[i].name for k, i in self._lookup.items()}
        close = difflib.get_close_matches(_loose(str(name)), list(keys), n=3, cutoff=0.75)
        return list(dict.fromkeys(keys[k] for k in close))

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def index(self, name: str) -> int:
        """Index of a task by name or alias (case-insensitive; ``"lung cancer"`` finds ``lung_cancer``).

        Raises:
            UnknownTaskError: naming the closest task ("did you mean ...?") and every task of the set; the
                advice is only to pick one of them (a model knows the task set it was trained with, no other).
        """
        index = self._find(name)
        if index is not None:
            return index
        close = self.suggest(str(name))
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise UnknownTaskError(f"unknown task {name!r}; {hint}the task set {self.name!r} has: "
                               f"{', '.join(self.names)} (or 'auto' where the model infers the task)")

    def resolve(self, name: str) -> str:
        """Canonical task name for a name or alias."""
        return self.tasks[self.index(name)].name

    def prompts(self) -> list[str]:
        """Knowledge sentence per task (falls back to the description, then the name)."""
        return [t.prompt or t.description or t.name.replace("_", " ") for t in self.tasks]

    def descriptions(self) -> list[str]:
        """Short text prompt per task."""
        return [t.description or t.name.replace("_", " ") for t in self.tasks]


def _loose(name: str) -> str:
    """A task spelling with case, spaces and hyphens folded (``"Lung cancer"`` -> ``"lung_cancer"``)."""
    return "_".join(str(name).strip().lower().replace("-", " ").replace("_", " ").split())


def shipped_task_sets() -> list[str]:
    """Names of the task sets shipped in ``unipet/resources``."""
    files = resources.files("unipet.resources").iterdir()
    return sorted(f.name[len("tasks_"):-len(".json")] for f in files if f.name.startswith("tasks_") and f.name.endswith(".json"))
