"""Tiny hand-made PET/CT volumes for tests of I/O and preprocessing (the phantom generator is tested apart)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from unipet.io.nifti import save_volume
from unipet.study import Study, make_affine


def tiny_study(seed: int = 0, shape=(12, 16, 20), spacing=(3.0, 2.0, 2.0), lesion: bool = True, task="lymphoma") -> Study:
    """A body-shaped box of soft tissue with one hot cube lesion (SUV 8) and air around it."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    ct = np.full(shape, -1000.0, np.float32)
    pet = np.zeros(shape, np.float32)
    ct[1:-1, 2:-2, 3:-3] = 40.0 + rng.normal(0, 10, (z - 2, y - 4, x - 6))
    pet[1:-1, 2:-2, 3:-3] = 1.0 + rng.normal(0, 0.05, (z - 2, y - 4, x - 6)).clip(-0.5, 0.5)
    label = np.zeros(shape, np.uint8)
    if lesion:
        label[4:7, 6:9, 8:11] = 1
        pet[label == 1] = 8.0
    return Study(study_id=f"case{seed:03d}", patient_id=f"pat{seed // 2:03d}", pet=pet, ct=ct,
                 affine=make_affine(spacing, origin_xyz=(-20.0, -16.0, 100.0)), task=task, label=label)


def body_pair(shape=(60, 48, 40), spacing=(5.0, 5.0, 5.0), seed=0):
    """A whole-body-like PET/CT ``(pet, ct, spacing)``: an elliptic cylinder of tissue in air (CT 40 / -1000 HU,
    PET 1 / 0 SUV) with a hot spot (SUV 9), the body well inside the field so that its outline shows."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    body = (((y - shape[1] / 2) / (shape[1] * 0.3)) ** 2 + ((x - shape[2] / 2) / (shape[2] * 0.4)) ** 2 < 1) & \
        (z > 3) & (z < shape[0] - 4)
    ct = np.where(body, 40.0 + rng.normal(0, 10, shape), -1000.0).astype(np.float32)
    pet = np.where(body, 1.0 + rng.normal(0, 0.05, shape), 0.0).astype(np.float32)
    pet[20:24, 20:24, 18:22] = 9.0
    return pet, ct, spacing


def write_autopet(root: Path, n: int = 4, tasks=("lymphoma", "lung_cancer")) -> Path:
    """Write ``n`` tiny studies in the autoPET layout with a clinical.csv; returns ``root``."""
    rows = ["study_id,patient_id,task,sex,age,weight_kg,height_m,time,event"]
    for i in range(n):
        s = tiny_study(i, lesion=i % 3 != 2, task=tasks[i % len(tasks)])
        d = root / s.patient_id / s.study_id
        save_volume(s.pet, s.affine, d / "SUV.nii.gz")
        save_volume(s.ct, s.affine, d / "CTres.nii.gz")
        save_volume(s.label, s.affine, d / "SEG.nii.gz")
        rows.append(f"{s.study_id},{s.patient_id},{s.task},F,{50 + i},70,1.7,{10 + i},{i % 2}")
    (root / "clinical.csv").write_text("\n".join(rows) + "\n")
    return root


def tiny_train_cache(tmp_path_factory, n: int, n_val: int):
    """A cache of ``n`` tiny autoPET studies (``write_autopet``), the last ``n_val`` in the validation split."""
    from unipet.data.cache import build_cache
    from unipet.io.layouts import import_autopet

    manifest = import_autopet(write_autopet(tmp_path_factory.mktemp("ap"), n=n))
    for i, c in enumerate(manifest):
        c.split = "val" if i >= n - n_val else "train"
    return build_cache(manifest, tmp_path_factory.mktemp("cache") / "c")
