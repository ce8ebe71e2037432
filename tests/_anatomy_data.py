"""A tiny PET/CT cohort with organ maps (muscle body, a liver ball, a kidney box) and hot lesions, for the tests of
the anatomy model, the pre-training and the teacher–student organ maps."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from unipet.io.manifest import Case, Manifest
from unipet.io.nifti import save_volume
from unipet.study import make_affine

SHAPE = (16, 32, 32)
SPACING = (3.0, 2.0, 2.0)
#: the small anatomy configuration of the tests (patch 16 x 32 x 32: total stride (4, 8, 8))
TINY = {"widths": [4, 8, 8, 8], "depths": [1, 1, 1, 1], "prompt_dim": 8, "heads": 2, "hyper_hidden": 8,
        "mamba_layers": 1, "mamba_state": 4}


def organ_volumes(seed: int, shape=SHAPE) -> dict[str, np.ndarray]:
    """CT (HU), PET (SUV), lesion label and organ map ``(z, y, x)`` of one tiny study."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    ct = np.full(shape, -1000.0, np.float32)
    body = (slice(1, -1), slice(3, -3), slice(3, -3))
    ct[body] = 40 + rng.normal(0, 10, ct[body].shape)
    organs = np.where(ct > -500, 2, 0).astype(np.uint8)  # muscle
    cz, cy, cx = 8 + int(rng.integers(-2, 3)), 12 + int(rng.integers(-2, 3)), 20 + int(rng.integers(-2, 3))
    organs[((zz - cz) / 2.0) ** 2 + ((yy - cy) / 4.0) ** 2 + ((xx - cx) / 4.0) ** 2 <= 1] = 13  # liver
    organs[4:8, 20:24, 8:12] = 17  # left kidney
    pet = np.where(ct > -500, 1.0, 0.0).astype(np.float32)
    ct[organs == 13], pet[organs == 13] = 60.0, 2.5
    ct[organs == 17], pet[organs == 17] = 30.0, 6.0
    label = np.zeros(shape, np.uint8)
    lz, ly, lx = int(rng.integers(4, 12)), int(rng.integers(8, 24)), int(rng.integers(8, 24))
    label[(zz - lz) ** 2 + ((yy - ly) / 1.5) ** 2 + ((xx - lx) / 1.5) ** 2 <= 2] = 1
    pet[label == 1] = 9.0
    return {"CT": ct, "PET": pet, "label": label, "organs": organs}


def write_cohort(root: Path, n: int = 4, without_organs: tuple[int, ...] = ()) -> Manifest:
    """``n`` studies written as NIfTI under ``root``; the manifest (every case in split ``train``) leaves the
    organ map out for the case indices in ``without_organs`` (their ``ORGANS.nii.gz`` is still written, as the
    reference)."""
    cases = []
    affine = make_affine(SPACING, origin_xyz=(-30.0, -20.0, 50.0))
    for i in range(n):
        vols = organ_volumes(i)
        folder = root / f"s{i}"
        paths = {}
        for name, file in (("PET", "SUV"), ("CT", "CTres"), ("label", "SEG"), ("organs", "ORGANS")):
            paths[name] = str(save_volume(vols[name], affine, folder / f"{file}.nii.gz"))
        cases.append(Case(case_id=f"s{i}", images={"PET": paths["PET"], "CT": paths["CT"]}, patient_id=f"p{i}",
                          task="lymphoma", label=paths["label"],
                          organs=None if i in without_organs else paths["organs"], split="train"))
    return Manifest(cases, source="test", root=root)
