"""The organ label table of phantom organ maps (``ORGANS.nii.gz``): name → uint8 value, 0 = background (air).

The same table is written beside every phantom cohort as ``organs.json``. Tissues that are not organs
(subcutaneous and visceral fat, muscle) are labelled too, so that every body voxel has a label. Lymph-node
labels mark the (normal or enlarged) nodes of each station; ``ribs`` excludes the sternum; ``shoulder_girdle``
is the clavicles and scapulae; ``long_bones`` the humeri (and forearm bones) and femora; ``pelvis`` the hip
bones and sacrum; ``iliac_arteries`` the common and external iliac arteries below the aortic bifurcation.
"""
from __future__ import annotations

ORGAN_LABELS: dict[str, int] = {
    "subcutaneous_fat": 1,
    "muscle": 2,
    "visceral_fat": 3,
    "brain": 4,
    "skull": 5,
    "lung_left": 6,
    "lung_right": 7,
    "airway": 8,
    "heart_myocardium": 9,
    "heart_blood_pool": 10,
    "aorta": 11,
    "iliac_arteries": 12,
    "liver": 13,
    "spleen": 14,
    "stomach": 15,
    "bowel": 16,
    "kidney_left": 17,
    "kidney_right": 18,
    "adrenal_left": 19,
    "adrenal_right": 20,
    "ureter_left": 21,
    "ureter_right": 22,
    "bladder": 23,
    "spine": 24,
    "spinal_cord": 25,
    "ribs": 26,
    "sternum": 27,
    "shoulder_girdle": 28,
    "pelvis": 29,
    "long_bones": 30,
    "breast": 31,
    "nodes_cervical": 32,
    "nodes_axillary": 33,
    "nodes_mediastinal": 34,
    "nodes_paraaortic": 35,
    "nodes_iliac": 36,
    "nodes_inguinal": 37,
}

# Named groups of labels (e.g. "bone" = every skeletal label); values are label names.
ORGAN_GROUPS: dict[str, tuple[str, ...]] = {
    "lung": ("lung_left", "lung_right"),
    "kidney": ("kidney_left", "kidney_right"),
    "adrenal": ("adrenal_left", "adrenal_right"),
    "ureter": ("ureter_left", "ureter_right"),
    "heart": ("heart_myocardium", "heart_blood_pool"),
    "bone": ("skull", "spine", "ribs", "sternum", "shoulder_girdle", "pelvis", "long_bones"),
    "fat": ("subcutaneous_fat", "visceral_fat"),
    "nodes": ("nodes_cervical", "nodes_axillary", "nodes_mediastinal", "nodes_paraaortic", "nodes_iliac",
              "nodes_inguinal"),
}


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
