"""A tiny PET/CT cohort with organ maps (a tube = aorta, a ball = liver) and lesions, for the gCIS tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from unipet.io.nifti import save_volume
from unipet.study import make_affine

#: a small gcis configuration (patch 32^3) that runs in well under a second per step on a CPU (the default
#: release layout: 7 routed modules)
TINY_GCIS = {"feature_size": 6, "num_heads": [1, 2, 2, 4], "window_size": 4, "decoder_widths": [4, 4, 8, 8, 16],
             "bottleneck_width": 8, "num_paths": 3, "text_encoder": "hash", "router_hidden": 16}


def write_cohort(root: Path, n: int = 4, shape=(32, 32, 32), spacing=(3.0, 3.0, 3.0)) -> Path:
    """``n`` studies in the phantom (autoPET + clinical.csv + ORGANS) layout; returns ``root``."""
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    rows = ["study_id,patient_id,task"]
    for i in range(n):
        ct = np.full(shape, -1000.0, np.float32)
        ct[2:-2, 4:-4, 4:-4] = 40 + rng.normal(0, 10, (shape[0] - 4, shape[1] - 8, shape[2] - 8))
        pet = np.where(ct > -500, 1.0, 0.0).astype(np.float32)
        organs = np.where(ct > -500, 2, 0).astype(np.uint8)  # muscle
        organs[(yy - 16) ** 2 + (xx - 12) ** 2 <= 4] = 11  # aorta: a tube along z
        organs[(zz - 20) ** 2 + (yy - 18) ** 2 + (xx - 22) ** 2 <= 25] = 13  # liver: a ball
        ct[organs == 11], ct[organs == 13] = 200.0, 60.0
        label = np.zeros(shape, np.uint8)
        c = rng.integers(8, 24, 3)
        label[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 6] = 1
        pet[label == 1] = 8.0
        sid, pid = f"s{i}", f"p{i}"
        affine = make_affine(spacing)
        for name, vol in (("SUV", pet), ("CTres", ct), ("SEG", label), ("ORGANS", organs)):
            save_volume(vol, affine, root / pid / sid / f"{name}.nii.gz")
        rows.append(f"{sid},{pid},{('lymphoma', 'lung_cancer')[i % 2]}")
    (root / "clinical.csv").write_text("\n".join(rows) + "\n")
    return root


def build_structures_cache(tmp: Path, n: int = 4):
    """Cache (ct-window) of ``write_cohort`` plus its aorta and liver organ-task cases; every case in ``train``."""
    from unipet.data.cache import build_cache
    from unipet.data.organ_tasks import add_organ_tasks
    from unipet.io.layouts import import_phantom
    from unipet.tasks import TaskSet

    manifest = import_phantom(write_cohort(tmp / "cohort", n), task_set=TaskSet.load("phantom_structures"))
    manifest = add_organ_tasks(manifest, tmp / "masks", tasks=["aorta", "liver"])
    for case in manifest:
        case.split = "train"
    return build_cache(manifest, tmp / "cache", ct_norm="ct-window")
