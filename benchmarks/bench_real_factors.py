"""Why a checkpoint fails on real sarcomas: one-factor experiments on the real cohort, inference only.

Each factor changes one thing about every real study (or about the prediction) and re-predicts with the same
checkpoint (default: the shipped ``dpdnet-small``); the mean Dice against the expert masks, scored by
``unipet.evaluate.runner.evaluate_case`` (the evaluator of ``unipet evaluate``) on the original crop's voxels,
is set beside the unchanged ``as-is`` run. Every factor is run under ``--task auto`` and under one fixed prompt
(``--prompt``, default ``lymphoma``: the shipped default's best prompt on these cases in ``bench_real.py``).

Factors (unipet's choice of probes; each a hypothesis of issue 24 part 2):

- ``as-is``: the study as stored.
- ``pad-air``: the crop in a canvas ``--pad-mm`` (100 mm) wider on every side, filled with air (SUV 0, CT
  -1000 HU). Not in the default list: the checkpoint's ``crop_to_body`` cuts such a canvas away again and the
  predictor pads a crop smaller than a patch with each channel's minimum (air) anyway, so ``as-is`` already is
  the crop in air.
- ``pad-tissue``: the crop in a canvas ``--pad-mm`` (100 mm) wider on every side, filled with soft tissue: SUV
  and CT drawn from the crop's own background
  (voxels outside the 2-voxel dilation of the reference with CT > -500 HU; median, with that background's SD as
  white noise) — a crop that continues into a body, as a phantom patch does.
- ``suv-x0.5``, ``suv-x2``: every SUV halved / doubled (the SUV range the phantoms taught).
- ``ct-smooth``: CT Gaussian-smoothed (sigma 1.5 voxels): real CT texture removed, geometry kept.
- ``ct-flat``: CT replaced by 40 HU wherever CT > -500 HU, air elsewhere (a phantom's flat soft tissue).
- ``fill-necrosis``: inside the reference mask, SUV raised to at least 50 % of the lesion's SUVmax (the
  necrotic, low-uptake centre filled; uses the reference, as a probe, not a method).
- ``native-grid``: predicted on the study's own grid instead of the checkpoint's 5 mm (no resampling).
- ``best-prompt``: per case the best of the checkpoint's prompts (an oracle over prompts, from the ``as-is``
  predictions of each prompt; shows what a better ``auto`` could gain).

Besides the table, per-case correlations (Spearman) of the ``as-is`` Dice with SUVmean/SUVmax (heterogeneity),
MTV and SUVmax; and the phantom side (``--phantoms N``): N lesion-positive default phantoms (patient seeds from
``--phantom-seed``) predicted whole-body and as a crop of ``--crop-mm`` (50 mm) around their largest lesion, both
scored on the crop (the field of view without real-data texture), and N limb soft-tissue sarcomas of the wide
phantom spectrum the same way (location and tumour type without real-data texture).

CPU run (about 25 minutes on 2 cores)::

    python benchmarks/bench_real_factors.py --work /tmp/factors --out factors.json

Data: ../shared/real_sts_fdg (CC BY 3.0; Vallieres et al. 2015; TCIA Soft-tissue-Sarcoma,
DOI 10.7937/K9/TCIA.2015.7GO2GSKS).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from bench_real import DEFAULT_DATA, emit, real_manifest

CT_AIR = -1000.0
FACTORS = ("as-is", "pad-tissue", "suv-x0.5", "suv-x2", "ct-smooth", "ct-flat", "fill-necrosis",
           "native-grid")


def embed(study, pad_vox: tuple[int, int, int], pet_fill: Callable, ct_fill: Callable):
    """The study inside a canvas ``pad_vox`` (z, y, x) voxels wider on every side; returns ``(study, box)``, box
    the slices of the original crop in the canvas."""
    from unipet.study import index_to_world_zyx

    shape = tuple(n + 2 * p for n, p in zip(study.pet.shape, pad_vox))
    box = tuple(slice(p, p + n) for p, n in zip(pad_vox, study.pet.shape))
    pet, ct = pet_fill(shape), ct_fill(shape)
    pet[box], ct[box] = study.pet, study.ct
    label = np.zeros(shape, np.uint8)
    label[box] = study.label
    affine = np.array(study.affine, dtype=np.float64)
    affine[:3, 3] = (index_to_world_zyx(study.affine) @ np.array([-p for p in pad_vox] + [1.0]))[:3]
    out = copy.copy(study)
    out.pet, out.ct, out.label, out.affine = pet.astype(np.float32), ct.astype(np.float32), label, affine
    return out, box


def background(study) -> tuple[float, float, float, float]:
    """``(SUV median, SUV SD, CT median, CT SD)`` of the crop's tissue away from the tumour (see the docstring)."""
    near = ndimage.binary_dilation(study.label > 0, iterations=2)
    tissue = ~near & (study.ct > -500)
    if tissue.sum() < 50:
        tissue = ~near
    suv, ct = study.pet[tissue], study.ct[tissue]
    return float(np.median(suv)), float(suv.std()), float(np.median(ct)), float(ct.std())


def transform(factor: str, study, pad_mm: float, rng: np.random.Generator):
    """``(changed study, box of the original voxels)`` for one factor (``native-grid`` changes the predictor)."""
    whole = tuple(slice(0, n) for n in study.pet.shape)
    out = copy.copy(study)
    if factor in ("as-is", "native-grid"):
        return out, whole
    if factor in ("pad-air", "pad-tissue"):
        pad = tuple(int(math.ceil(pad_mm / s)) for s in study.spacing)
        if factor == "pad-air":
            return embed(study, pad, lambda s: np.zeros(s, np.float32), lambda s: np.full(s, CT_AIR, np.float32))
        suv_m, suv_s, ct_m, ct_s = background(study)
        return embed(study, pad, lambda s: np.clip(rng.normal(suv_m, suv_s, s), 0, None),
                     lambda s: rng.normal(ct_m, ct_s, s))
    if factor.startswith("suv-x"):
        out.pet = study.pet * float(factor[5:])
    elif factor == "ct-smooth":
        out.ct = ndimage.gaussian_filter(study.ct, 1.5).astype(np.float32)
    elif factor == "ct-flat":
        out.ct = np.where(study.ct > -500, 40.0, CT_AIR).astype(np.float32)
    elif factor == "fill-necrosis":
        lesion = study.label > 0
        floor = 0.5 * float(study.pet[lesion].max())
        out.pet = np.where(lesion, np.maximum(study.pet, floor), study.pet).astype(np.float32)
    else:
        raise ValueError(f"unknown factor {factor!r}")
    return out, whole


def dice_of(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    """Dice of the evaluator (``unipet.evaluate.runner.evaluate_case``)."""
    from unipet.evaluate.runner import EvaluationConfig, evaluate_case

    row, _ = evaluate_case(pred, ref, spacing, EvaluationConfig())
    return float(row["dice"])


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return round(float(spearmanr(a, b).statistic), 3)


def real_factors(predictor, studies: list, factors: list[str], prompts: list[str], pad_mm: float,
                 seed: int) -> dict[str, dict[str, dict[str, float]]]:
    """``{factor: {prompt: {case: Dice}}}`` on the real studies."""
    target = predictor.config.target_spacing
    out: dict = {}
    for factor in factors:
        out[factor] = {}
        for prompt in prompts:
            rng = np.random.default_rng(seed)
            scores = {}
            for study in studies:
                changed, box = transform(factor, study, pad_mm, rng)
                predictor.config.target_spacing = tuple(study.spacing) if factor == "native-grid" else target
                pred = predictor.predict_study(changed, task=prompt)
                scores[study.study_id] = round(dice_of(pred.mask[box], study.label, study.spacing), 4)
            predictor.config.target_spacing = target
            out[factor][prompt] = scores
            print(f"{factor:<14} {prompt:<14} mean Dice {np.mean(list(scores.values())):.3f}", file=sys.stderr)
    return out


def crop_around_largest(study, crop_mm: float):
    """``(cropped study, box)``: the study cut to ``crop_mm`` around its largest lesion (18-connected)."""
    import cc3d

    from unipet.study import index_to_world_zyx

    labels = cc3d.connected_components(study.label > 0, connectivity=18)
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    idx = np.nonzero(labels == largest)
    margin = [int(math.ceil(crop_mm / s)) for s in study.spacing]
    box = tuple(slice(max(0, int(a.min()) - m), min(n, int(a.max()) + 1 + m))
                for a, m, n in zip(idx, margin, study.label.shape))
    crop = copy.copy(study)
    crop.pet, crop.ct, crop.label, crop.organs = study.pet[box], study.ct[box], study.label[box], None
    crop.affine = np.array(study.affine, dtype=np.float64)
    crop.affine[:3, 3] = (index_to_world_zyx(study.affine) @ np.array([s.start for s in box] + [1.0]))[:3]
    return crop, box


def phantom_fov(predictor, n: int, seed: int, crop_mm: float, prompt: str, task: str | None = None,
                spectrum: str = "default") -> dict:
    """Lesion-positive phantoms (seeds ``seed``, ``seed + 1``, ...; ``task`` or each seed's own type) predicted
    whole-body and as a crop of ``crop_mm`` around their largest lesion, under their own prompt (``prompt`` where
    the checkpoint has none for the type) and ``auto``; every Dice on the crop's voxels."""
    from unipet.data.phantom import generate_study

    rows = {}
    for k in range(n):
        study = generate_study(seed + k, task=task, size="small", negative=False, spectrum=spectrum).study
        if not study.label.any():
            continue
        own = study.task if study.task in predictor.task_set.names else prompt
        crop, box = crop_around_largest(study, crop_mm)
        ref = study.label[box]
        row = {"task": study.task, "prompt": own, "crop_shape": list(ref.shape)}
        for name, image, cut in (("whole_body", study, box), ("crop", crop, None)):
            for p in (own, "auto"):
                pred = predictor.predict_study(image, task=p)
                mask = pred.mask[cut] if cut else pred.mask
                row[f"dice_{name}_{'auto' if p == 'auto' else 'prompt'}"] = round(dice_of(mask, ref, study.spacing), 4)
                if p == "auto":
                    row[f"auto_task_{name}"] = pred.task
        rows[study.study_id] = row
        print(f"phantom {study.study_id} {row}", file=sys.stderr)
    keys = [k for k in next(iter(rows.values())) if k.startswith("dice_")] if rows else []
    mean = {k: round(float(np.mean([r[k] for r in rows.values()])), 4) for k in keys}
    right = {f"auto_right_{w}": sum(r[f"auto_task_{w}"] == r["task"] for r in rows.values())
             for w in ("whole_body", "crop")}
    return {"n": len(rows), "seed": seed, "task": task, "spectrum": spectrum, "crop_mm": crop_mm, "mean": mean,
            **right, "cases": rows}


def summary_rows(scores: dict, prompts: list[str]) -> dict:
    """Mean Dice per factor and prompt, and its change from ``as-is``."""
    rows = {}
    for factor, by_prompt in scores.items():
        rows[factor] = {}
        for prompt in prompts:
            if prompt not in by_prompt:
                continue
            mean = float(np.mean(list(by_prompt[prompt].values())))
            base = float(np.mean(list(scores["as-is"][prompt].values())))
            rows[factor][prompt] = {"dice": round(mean, 4), "delta": round(mean - base, 4)}
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--checkpoint", type=Path, help="checkpoint / run folder (default: the shipped default)")
    p.add_argument("--prompt", default="lymphoma", help="the fixed prompt run beside --task auto")
    p.add_argument("--prompts", default="", help="prompts of every factor, comma-separated (default: auto and "
                   "--prompt)")
    p.add_argument("--no-prompt-oracle", action="store_true", help="skip the best-prompt row (it predicts every "
                   "other prompt as-is)")
    p.add_argument("--factors", default=",".join(FACTORS))
    p.add_argument("--pad-mm", type=float, default=100.0)
    p.add_argument("--phantoms", type=int, default=10, help="lesion-positive phantom studies of the crop test, and "
                   "as many limb-sarcoma phantoms (0: none)")
    p.add_argument("--phantom-seed", type=int, default=7000, help="first seed of the phantom studies (no training "
                   "cohort uses these patient seeds)")
    p.add_argument("--crop-mm", type=float, default=50.0)
    p.add_argument("--cases", type=int, default=0, help="first N real cases only (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--work", type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from unipet.checkpoint import default_checkpoint
    from unipet.infer import Predictor
    from unipet.io.manifest import Manifest, load_study

    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-bench-factors-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint or default_checkpoint()
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    manifest = Manifest.load(real_manifest(work, args.data, None))
    studies = [load_study(c, manifest.task_set) for c in manifest][: args.cases or None]
    t0 = time.perf_counter()
    factors = [f for f in args.factors.split(",") if f]
    prompts = args.prompts.split(",") if args.prompts else ["auto", args.prompt]
    scores = real_factors(predictor, studies, factors, prompts, args.pad_mm, args.seed)
    every = dict(scores["as-is"])
    if not args.no_prompt_oracle:  # the prompt oracle: each prompt as-is, best per case
        every.update(real_factors(predictor, studies, ["as-is"], [t for t in predictor.task_set.names
                                                                  if t not in prompts], args.pad_mm, args.seed)["as-is"])
        best = {c: max(every[t][c] for t in predictor.task_set.names) for c in scores["as-is"][prompts[0]]}
        scores["best-prompt"] = {p: best for p in prompts}
    rows = summary_rows(scores, prompts)
    table = {c["case"] + "_0": c
             for c in json.loads((args.data / "cases.json").read_text())}
    ids = list(scores["as-is"][prompts[0]])
    ratio = [table[c]["suvmean"] / table[c]["suvmax"] for c in ids]
    corr = {}
    for prompt in prompts:
        dice = [scores["as-is"][prompt][c] for c in ids]
        corr[prompt] = {"suvmean_over_suvmax": spearman(dice, ratio),
                        "mtv_ml": spearman(dice, [table[c]["mtv_ml"] for c in ids]),
                        "suvmax": spearman(dice, [table[c]["suvmax"] for c in ids])}
    corr["suv2.5"] = {"suvmean_over_suvmax": spearman([table[c]["dice_suv25"] for c in ids], ratio)}
    results = {"benchmark": "real-factors", "checkpoint": str(checkpoint), "cases": len(ids), "prompts": prompts,
               "pad_mm": args.pad_mm, "rows": rows, "spearman_as_is": corr,
               "as_is_dice_by_prompt": {t: round(float(np.mean(list(v.values()))), 4) for t, v in every.items()},
               "per_case": scores, "real_seconds": round(time.perf_counter() - t0, 1),
               "licence": "CC BY 3.0 (Vallieres et al. 2015; TCIA Soft-tissue-Sarcoma, DOI 10.7937/K9/TCIA.2015.7GO2GSKS)"}
    if args.phantoms:
        results["phantom_fov"] = phantom_fov(predictor, args.phantoms, args.phantom_seed, args.crop_mm, args.prompt)
        # location and type: limb sarcomas of the wide spectrum, whole-body (the limbs carry no default lesion)
        results["phantom_sarcoma"] = phantom_fov(predictor, args.phantoms, args.phantom_seed, args.crop_mm,
                                                 args.prompt, task="soft_tissue_sarcoma", spectrum="wide")
    for factor, by in rows.items():
        print(f"{factor:<14}" + "".join(f"  {pr}: {v['dice']:.3f} ({v['delta']:+.3f})" for pr, v in by.items()),
              file=sys.stderr)
    emit(results, args.out)


if __name__ == "__main__":
    main()
