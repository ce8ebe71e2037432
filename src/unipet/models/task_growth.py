"""Grow a prompted model's task set: the weights of an N-task model in an (N + k)-task model.

A new cancer type for a pre-trained universal model (e.g. soft-tissue sarcoma added to the shipped 4-type
default) needs its own prompt and head; everything the old types learnt is kept. Which tensors depend on the
number of tasks is read off the two state dicts, so the rule serves every prompted family (DpDNet, UniSeg,
prompt-free classifiers), not one:

- **same shape**: copied. Per-task module lists (``pa_heads.<i>``, ``common_prompt.gates.<i>``) keep the old
  tasks' modules; a new task's module is a copy of its *donor* task's module when one is named and the shapes
  agree, else it keeps the new model's initialisation.
- **a task axis that grew** (an axis whose length went from N to N + k: the universal prompt's task channels,
  the FUSE block's output channels and their norm parameters; a task classifier's rows unless the model grows
  them itself, as DpDNet does — see below): the old slices are
  copied and the new task's slice is its donor's (the mean of the old slices without a donor). The new task
  therefore starts as its donor exactly: its specific prompt and head are the donor's.
- **an input axis that grew** (dimension 1 of a convolution or linear weight: the FUSE block's input, which
  is ``[bottleneck, prompts]``): the new input channels start at zero, so the old tasks' outputs are unchanged
  until training moves them.
- tensors a model grows itself (a ``grow_task_state(old_state, n_old, donor_indices)`` method returning
  ``{name: tensor}``): DpDNet's common-prompt gates, grown exactly (``dpdnet.CommonPrompt.grown_gates``);
- any other grown axis: old slices copied, output rows of a new entry set to the mean of the old ones, input
  columns to zero.

With a donor for every new task, DpDNet grows *exactly*: the old tasks' outputs are unchanged and each new task
answers as its donor (tested), so fine-tuning starts from the pre-trained model's behaviour.

The old tasks must come first in the new task set, in the same order (tasks are appended, never reordered);
anything else is refused. unipet's choice throughout (DpDNet's paper trains every type jointly from the start
and describes no way of adding one).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from unipet.errors import ConfigError

_INDEXED = re.compile(r"^(.*?\.)(\d+)(\..*)$")


@dataclass
class GrowthReport:
    """What ``grow_tasks`` did: tensor names copied, grown along a task axis, donor-copied, or left initialised."""

    copied: list[str] = field(default_factory=list)
    grown: list[str] = field(default_factory=list)
    from_donor: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {"copied": len(self.copied), "grown": len(self.grown), "from_donor": len(self.from_donor),
                "initialised": len(self.initialised)}


def is_appended(old_names: Sequence[str], new_names: Sequence[str]) -> bool:
    """True when ``new_names`` is ``old_names`` (same order) followed by at least one more task."""
    old, new = list(old_names), list(new_names)
    return len(new) > len(old) and new[: len(old)] == old


def check_appended(old_names: Sequence[str], new_names: Sequence[str]) -> list[str]:
    """The tasks ``new_names`` adds to ``old_names``; ConfigError unless the old ones come first, in order."""
    old, new = list(old_names), list(new_names)
    if not is_appended(old, new):
        raise ConfigError(f"the new task set {new} must start with the checkpoint's tasks {old} in the same order "
                          "and add at least one; append new tasks at the end of the task set")
    return new[len(old):]


def _weight_modules(model: nn.Module) -> dict[str, nn.Module]:
    """``{parameter name: owning module}`` for the weights of convolutions and linear layers."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            out[f"{name}.weight" if name else "weight"] = module
    return out


def _at_patch_size(old: torch.Tensor, want: torch.Tensor, name: str) -> torch.Tensor:
    """A learnable universal prompt (``universal_prompt.prompt``, ``(1, tasks, d, h, w)`` at the bottleneck of
    the training patch) resized trilinearly to the new model's bottleneck, as ``UniversalPrompt.forward`` resizes
    it for an input of another size (so a model fine-tuned at another patch starts from what the old one
    computes there); every other tensor is returned unchanged."""
    if not name.endswith("universal_prompt.prompt") or old.ndim != 5 or old.shape[2:] == want.shape[2:]:
        return old
    import torch.nn.functional as F

    return F.interpolate(old, size=tuple(want.shape[2:]), mode="trilinear", align_corners=False)


def _grow(old: torch.Tensor, new: torch.Tensor, n_old: int, donors: Sequence[int | None], input_axis: int | None
          ) -> torch.Tensor:
    """``old`` placed in a tensor of ``new``'s shape; grown slices filled by the rules of the module docstring."""
    out = new.detach().clone()
    out[tuple(slice(0, s) for s in old.shape)] = old
    for axis, (a, b) in enumerate(zip(old.shape, new.shape)):
        if b == a:
            continue
        if b < a:
            raise ConfigError(f"a tensor shrank along axis {axis} ({a} -> {b}); the task set may only grow")
        view = out.movedim(axis, 0)  # a view: writes land in ``out``
        kept = view[:a]
        for j in range(b - a):
            if axis == input_axis:
                view[a + j] = 0
            elif a == n_old and j < len(donors) and donors[j] is not None:
                view[a + j] = kept[donors[j]]
            else:
                view[a + j] = kept.mean(0)
    return out


def grow_tasks(model: nn.Module, old_state: Mapping[str, torch.Tensor], old_names: Sequence[str],
               new_names: Sequence[str], donors: Mapping[str, str] | None = None) -> GrowthReport:
    """Load the weights of an ``old_names`` model into ``model`` (built for ``new_names``), growing its task axes.

    Args:
        model: the (N + k)-task model, freshly built (its tensors are overwritten in place).
        old_state: the N-task model's state dict.
        old_names: the N tasks of ``old_state``, in order.
        new_names: ``model``'s tasks: ``old_names`` followed by the k new ones.
        donors: ``{new task: old task}`` whose prompt and head a new task starts from (see the module docstring);
            a new task without a donor starts from the mean of the old tasks' task-axis slices and its own
            freshly initialised per-task modules.

    Returns:
        A ``GrowthReport``.

    Raises:
        ConfigError: tasks reordered, an unknown donor, or a tensor that fits by neither rule.
    """
    added = check_appended(old_names, new_names)
    donors = dict(donors or {})
    unknown = sorted((set(donors) - set(added)) | (set(donors.values()) - set(old_names)))
    if unknown:
        raise ConfigError(f"task donors {donors} name unknown tasks {unknown}: keys must be new tasks {added}, "
                          f"values tasks of the checkpoint {list(old_names)}")
    n_old = len(old_names)
    donor_index = [list(old_names).index(donors[t]) if t in donors else None for t in added]
    weights = _weight_modules(model)
    target = model.state_dict()
    report = GrowthReport()
    hook = getattr(model, "grow_task_state", None)
    special = hook(dict(old_state), n_old, donor_index) if hook is not None else {}
    loaded: dict[str, torch.Tensor] = {}
    for name, want in target.items():
        if name in special:
            loaded[name] = special[name].to(want.dtype)
            report.grown.append(name)
            continue
        if name in old_state and old_state[name].shape == want.shape:
            loaded[name] = old_state[name]
            report.copied.append(name)
            continue
        if name in old_state:
            old = _at_patch_size(old_state[name].to(want.dtype), want, name)
            input_axis = 1 if name in weights and want.ndim >= 2 else None
            loaded[name] = _grow(old, want, n_old, donor_index, input_axis)
            report.grown.append(name)
            continue
        match = _INDEXED.match(name)
        index = int(match.group(2)) if match else -1
        donor = donor_index[index - n_old] if n_old <= index < len(new_names) else None
        source = f"{match.group(1)}{donor}{match.group(3)}" if match and donor is not None else None
        if source in old_state and old_state[source].shape == want.shape:
            loaded[name] = old_state[source]
            report.from_donor.append(name)
        else:
            report.initialised.append(name)
    unused = [n for n in old_state if n not in target]
    if unused:
        raise ConfigError(f"{len(unused)} tensors of the checkpoint have no place in the grown model (first: "
                          f"{unused[0]}); grow a checkpoint of the same architecture")
    model.load_state_dict(loaded, strict=False)
    return report
