"""The organ label table of phantom organ maps (``ORGANS.nii.gz``): name → uint8 value, 0 = background (air).

The table is data (``resources/organs_phantom.json``, like the task sets) and is written beside every phantom
cohort as ``organs.json``. Tissues that are not organs
(subcutaneous and visceral fat, muscle) are labelled too, so that every body voxel has a label. Lymph-node
labels mark the (normal or enlarged) nodes of each station; ``ribs`` excludes the sternum; ``shoulder_girdle``
is the clavicles and scapulae; ``long_bones`` the humeri (and forearm bones) and femora; ``pelvis`` the hip
bones and sacrum; ``iliac_arteries`` the common and external iliac arteries below the aortic bifurcation.
"""
from __future__ import annotations

import json
from importlib import resources

_TABLE = json.loads(resources.files("unipet").joinpath("resources", "organs_phantom.json").read_text())
#: label name -> value (``resources/organs_phantom.json``)
ORGAN_LABELS: dict[str, int] = {str(k): int(v) for k, v in _TABLE["labels"].items()}
#: named groups of labels (e.g. "bone" = every skeletal label); values are label names
ORGAN_GROUPS: dict[str, tuple[str, ...]] = {str(k): tuple(v) for k, v in _TABLE["groups"].items()}
#: label values of the organ map, background included (0 = air, 1..37 organs and tissues): the organ class count
#: that organ-aware models are built with by default
ORGAN_CLASSES = max(ORGAN_LABELS.values()) + 1


def label_values(*names: str) -> tuple[int, ...]:
    """Label values of organ or group names (``label_values("bone", "liver")``); unknown names raise KeyError."""
    out: list[int] = []
    for name in names:
        members = ORGAN_GROUPS.get(name, (name,))
        out.extend(ORGAN_LABELS[m] for m in members)
    return tuple(out)


def label_name(value: int) -> str:
    """Name of a label value (``"background"`` for 0)."""
    for name, v in ORGAN_LABELS.items():
        if v == value:
            return name
    if value == 0:
        return "background"
    raise KeyError(f"no organ label has value {value}")
