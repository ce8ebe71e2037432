"""Anatomy-guided prompting's claim on real PET (issue 25, claim 5; seed 004): do organ prompts help most when
labels are scarce? JSON out.

The ``anatomy`` model with its organ prompt against the same model without it (``anatomy=False``), trained on 10,
30 and 100 % of a fold's 28 real sarcomas (``real_cv.Arm(fraction=...)``: the same draw for every arm of a fold),
each from scratch and from the cross-modal pre-training (``unipet.pretrain``), scored on the fold's 7 held-out
sarcomas (``real_cv``: patient-level 5-fold cross-validation). Paired tests: prompted vs plain at each fraction,
and the claim itself: the prompt's gain at 10 % minus its gain at 100 % (per patient, mean and 95 % bootstrap
interval; ``holds`` when the interval lies above 0).

Organ maps of a limb crop. The project's teacher (``unipet.train.organs_teacher``) learns whatever label table it
is given; the phantom's table (``unipet.data.organs``) names subcutaneous fat, muscle and long bones but its
teacher would learn them from synthetic trunk CT, and no vessel of a limb can be told from muscle on these
non-contrast CTs by any rule. So here, per fold, the teacher (STU-Net-S, base width 8, recipe ``organs``) learns
**rule-derived tissue labels of the fold's training crops only** (from the CT in HU: fat -190..-30 HU, soft
tissue -30..250 HU — muscle, vessels, tendons and the tumour itself —, bone > 250 HU; the rest, air and outside
the CT, background), and then predicts the tissue map of every crop of the fold. Every crop's prompt is the
teacher's map (training crops too, so training and held-out prompts are of one kind); a held-out crop's own rule
map is never written nor used as a prompt (it is computed in memory only to report how well the teacher
reproduces the rule on unseen crops). Labels: ``TISSUES`` (4 classes with background; ``organ_classes=4``).

Pre-training (self-supervised, per fold): masked reconstruction + PET/CT alignment of the two encoders on random
patches of the fold's 28 training crops (images only, never a held-out crop), the encoders of the same widths as
the fine-tuned model; ``Arm.init`` points at the fold's pre-training.

Scale (unipet's choices for 2 CPU cores; the seed publishes only its abstract): the ``--cpu`` model of
``bench_anatomy.py`` (widths 8/16/32/64, one block per stage, prompt width 32, 2 heads, hypernetwork hidden 32, one
bidirectional Mamba layer of state 8), the crops' 5 mm grid, patch 32^3, batch 2, recipe ``anatomy`` at lr 1e-3
(its 2e-4 is planned for 50,000 steps), ``ITERATIONS`` fine-tuning, ``PRETRAIN_ITERATIONS`` pre-training and
``TEACHER_ITERATIONS`` teacher steps per fold; the protocol's patches (lesion / random 2:1) and augmentation.
Fractions run in the order 10, 100, 30 %; ``--drop-scratch-30`` leaves out the no-pre-training x 30 % pair (the
first to go when the budget is short).

    flock /tmp/unipet-bench.lock python benchmarks/bench_real_anatomy.py --threads 1 --work /tmp/r25 \\
        --drop-scratch-30 --out benchmarks/results/real_anatomy.json
    python benchmarks/bench_real_anatomy.py --tiny
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import real_cv
from bench_anatomy import CPU_MODEL, TINY_MODEL, run_complete
from real_cv import Arm

ITERATIONS = 60  # per fold and arm (~13 s); with teachers and pre-training the 10 arms x 5 folds took 24 min
PRETRAIN_ITERATIONS = 100
TEACHER_ITERATIONS = 300  # 60 left fat and bone unlearnt (Dice 0 against the rule on held-out crops)
LR = 1e-3
FRACTIONS = (0.1, 1.0, 0.3)
#: the teacher's label table (rule-derived tissue classes of a limb crop); 0 = background (air, outside the CT)
TISSUES = {"fat": 1, "soft_tissue": 2, "bone": 3}
#: HU bounds of the rule (fat -190..-30, soft tissue -30..250, bone > 250)
FAT_HU, SOFT_HU, BONE_HU = (-190.0, -30.0), 250.0, 250.0


def tissue_rule(ct_hu):
    """Rule-derived tissue map ``(z, y, x)`` uint8 (``TISSUES``) of a CT in HU: fat -190..-30 HU, soft tissue
    above -30 up to 250 HU, bone above 250 HU, background elsewhere."""
    import numpy as np

    out = np.zeros(ct_hu.shape, np.uint8)
    out[(ct_hu >= FAT_HU[0]) & (ct_hu <= FAT_HU[1])] = TISSUES["fat"]
    out[(ct_hu > FAT_HU[1]) & (ct_hu <= SOFT_HU)] = TISSUES["soft_tissue"]
    out[ct_hu > BONE_HU] = TISSUES["bone"]
    return out


def fold_folder(s: real_cv.Setup, fold: int | str) -> Path:
    """``WORK/anatomy/fold<N>``: the fold's teacher, tissue maps, manifest, cache and pre-training."""
    return s.work / "anatomy" / f"fold{fold}"


def prepare_fold(s: real_cv.Setup, fold: int, patch: list[int], teacher_iterations: int, pretrain_iterations: int,
                 widths: list[int], depths: list[int]) -> dict[str, Any]:
    """Teacher, tissue maps, cache and pre-training of ``fold`` (each reused when done); returns its record
    (``fold.json``: seconds per stage, the teacher's Dice against the rule on the held-out crops)."""
    import numpy as np

    from unipet.data.cache import build_cache
    from unipet.data.folds import fold_split
    from unipet.evaluate.metrics import label_dice
    from unipet.io.manifest import Manifest, load_study
    from unipet.io.nifti import load_volume, save_volume
    from unipet.pretrain import PretrainConfig, pretrain
    from unipet.train.organs_teacher import ORGAN_FILE, predict_organs, train_organ_model

    folder = fold_folder(s, fold)
    record_file = folder / "fold.json"
    if record_file.exists() and run_complete(folder / "pretrain"):
        return json.loads(record_file.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    train, held = fold_split(s.folds, fold)
    real = [c for c in s.manifest if c.split == "real"]
    record: dict[str, Any] = {"train_cases": len(train), "heldout_cases": len(held)}
    # 1. rule maps of the fold's training crops only
    t0 = time.perf_counter()
    rules = {}
    for case in (c for c in real if c.case_id in train):
        path = folder / "rules" / case.case_id / ORGAN_FILE
        if not path.exists():
            study = load_study(case, with_label=False)
            save_volume(tissue_rule(np.asarray(study.ct)), study.affine, path, overwrite=True)
        rules[case.case_id] = path
    # 2. the teacher learns them; 3. it maps every crop of the fold
    teacher = train_organ_model([replace(c, organs=str(rules[c.case_id])) for c in real if c.case_id in rules],
                                folder / "teacher", model="stunet-s", labels=TISSUES,
                                model_kw={"base_width": 2 if s.tiny else 8}, device="cpu",
                                iterations=teacher_iterations, patch_size=tuple(patch), batch_size=2, workers=0,
                                checkpoint_every=teacher_iterations, progress=False, tensorboard=False)
    if not run_complete(teacher):
        sys.exit(f"the fold {fold} teacher stopped before its last step; run the command again to resume")
    maps = predict_organs(teacher, [replace(c, organs=None) for c in real], folder / "maps", device="cpu")
    record["teacher_s"] = round(time.perf_counter() - t0, 1)
    agreement = {}
    for case in (c for c in real if c.case_id in held):  # the rule map in memory only, to score the teacher
        study = load_study(case, with_label=False)
        pred, _ = load_volume(maps[case.case_id], dtype=np.int32)
        agreement[case.case_id] = label_dice(pred, tissue_rule(np.asarray(study.ct)).astype(np.int32),
                                             len(TISSUES) + 1)
    record["teacher_dice_vs_rule_heldout"] = {
        name: round(float(np.mean([a[v] for a in agreement.values() if v in a])), 3)
        for name, v in TISSUES.items() if any(v in a for a in agreement.values())}
    # 4. the fold's manifest and cache: every real crop with the teacher's map as its organ prompt
    t0 = time.perf_counter()
    manifest = Manifest([replace(c, organs=str(maps[c.case_id])) for c in real], task_set=s.manifest.task_set,
                        source="real")
    manifest.save(folder / "manifest.json", overwrite=True)
    if not (folder / "cache" / "cache.json").exists():
        cache = build_cache(manifest, folder / "cache", preprocess=s.cache.config, workers=1)
    else:
        from unipet.data.cache import Cache

        cache = Cache(folder / "cache")
    record["cache_s"] = round(time.perf_counter() - t0, 1)
    # 5. cross-modal pre-training on the training crops' images (no labels, no held-out crop)
    t0 = time.perf_counter()
    pre = folder / "pretrain"
    if not run_complete(pre):
        cfg = PretrainConfig(patch_size=list(patch), batch_size=2, iterations=pretrain_iterations,
                             warmup_iterations=max(1, pretrain_iterations // 20), workers=0,
                             checkpoint_every=pretrain_iterations, seed=fold, cases=sorted(train), lr=LR,
                             widths=widths, depths=depths)
        resume = (pre / "checkpoint").exists()
        result = pretrain(cache, pre, None if resume else cfg, resume=resume, device="cpu", progress=False)
        if result.stopped:
            sys.exit(f"the fold {fold} pre-training stopped at step {result.iteration}; run the command again")
    logs = [json.loads(line) for line in (pre / "log.jsonl").read_text().splitlines() if line.strip()]
    logs = [r for r in logs if "loss" in r]
    record["pretrain_loss_first_last"] = [round(logs[0]["loss"], 4), round(logs[-1]["loss"], 4)] if logs else None
    record["pretrain_s"] = round(time.perf_counter() - t0, 1)
    record["pretrain_cases"] = sorted(train)
    record_file.write_text(json.dumps(record, indent=1))
    return record


def arms(s: real_cv.Setup, iterations: int, fractions=FRACTIONS, drop_scratch_30: bool = False) -> list[Arm]:
    """Prompted / plain x pre-trained / scratch x fractions (10 %, 100 %, 30 % in that order)."""
    kw = dict(TINY_MODEL if s.tiny else CPU_MODEL, organ_classes=len(TISSUES) + 1)
    rec = real_cv.recipe(iterations, s.tiny, base="anatomy", lr=LR, warmup_iterations=max(1, iterations // 20))
    data = str(fold_folder(s, "{fold}"))
    out = []
    for fraction in fractions:
        for pre in (True, False):
            if drop_scratch_30 and not pre and fraction == 0.3:
                continue
            for prompt in (True, False):
                name = f"anatomy-{'pre' if pre else 'scratch'}-{'prompt' if prompt else 'plain'}-{round(100 * fraction)}"
                out.append(Arm(name, "anatomy", dict(kw, anatomy=prompt), rec, fraction=fraction, prompts=(None,),
                               init=str(Path(data) / "pretrain") if pre else None, data=data,
                               notes=f"anatomy model {'with' if prompt else 'without'} the tissue prompt, "
                                     f"{'from the fold pre-training' if pre else 'from scratch'}, {fraction:.0%}"))
    return out


def gain(prompted: dict[str, dict], plain: dict[str, dict]) -> dict[str, dict]:
    """Per-patient gain of the prompt (Dice prompted - plain), in ``real_cv.paired``'s per-case form."""
    return {c: {"dice": prompted[c]["dice"] - plain[c]["dice"]} for c in sorted(set(prompted) & set(plain))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    real_cv.common_args(p)
    p.add_argument("--pretrain-iterations", type=int, default=None)
    p.add_argument("--teacher-iterations", type=int, default=None)
    p.add_argument("--drop-scratch-30", action="store_true", help="leave out the no-pre-training x 30 %% pair")
    args = p.parse_args()
    t_start = time.perf_counter()
    s = real_cv.start(args)
    iterations = args.iterations or (2 if args.tiny else ITERATIONS)
    pre_it = args.pretrain_iterations or (2 if args.tiny else PRETRAIN_ITERATIONS)
    teach_it = args.teacher_iterations or (2 if args.tiny else TEACHER_ITERATIONS)
    patch = real_cv.recipe(iterations, s.tiny)["patch_size"]
    model = TINY_MODEL if s.tiny else CPU_MODEL
    folds = args.folds if args.folds is not None else s.fold_ids()
    prepared = {f: prepare_fold(s, f, patch, teach_it, pre_it, list(model["widths"]), list(model["depths"]))
                for f in folds}
    results = {a.name: real_cv.run_arm(s, a, args.threads, folds) for a in arms(s, iterations,
                                                                                  drop_scratch_30=args.drop_scratch_30)}
    comparisons = []
    for fraction in (10, 30, 100):
        for pre in ("pre", "scratch"):
            a, b = f"anatomy-{pre}-plain-{fraction}", f"anatomy-{pre}-prompt-{fraction}"
            if a in results and b in results:
                comparisons.append((a, b, f"the tissue prompt helps at {fraction} % of the labels ({pre})"))
    doc = real_cv.table(s, results, comparisons)
    scarce = []
    for pre in ("pre", "scratch"):
        rows = doc["per_case"]
        g10 = gain(rows[f"anatomy-{pre}-prompt-10"], rows[f"anatomy-{pre}-plain-10"])
        g100 = gain(rows[f"anatomy-{pre}-prompt-100"], rows[f"anatomy-{pre}-plain-100"])
        test = real_cv.paired(g100, g10)
        scarce.append({"pretraining": pre, "gain_10": real_cv.summary_row({c: {"dice": v["dice"]} for c, v in
                                                                          g10.items()}),
                       "gain_100": real_cv.summary_row({c: {"dice": v["dice"]} for c, v in g100.items()}),
                       "claim": "the prompt's gain at 10 % > its gain at 100 %", **test,
                       "verdict": real_cv.verdict(test)})
    doc["scarce_labels"] = scarce
    doc["teacher"] = {"labels": TISSUES, "rule_hu": {"fat": list(FAT_HU), "soft_tissue": [FAT_HU[1], SOFT_HU],
                                                      "bone_above": BONE_HU},
                      "source": "rule-derived tissue labels of each fold's training crops, learnt by the project's "
                                "organ teacher (STU-Net-S); every prompt is the teacher's map",
                      "folds": {str(f): r for f, r in prepared.items()}}
    doc["claim"] = "anatomy-guided prompting (seed 004): organ prompts help most when labels are scarce"
    doc["settings"] = {"iterations": iterations, "pretrain_iterations": pre_it, "teacher_iterations": teach_it,
                       "lr": LR, "model_kw": model, "patch": patch, "batch": 2, "threads": args.threads,
                       "drop_scratch_30": args.drop_scratch_30, "wall_s": round(time.perf_counter() - t_start, 1)}
    real_cv.print_table(doc)
    for t in scarce:
        print(f"gain@10 - gain@100 ({t['pretraining']}): {t['diff']:+.3f} [{t['diff_lo']:+.3f}, {t['diff_hi']:+.3f}]"
              f" -> {t['verdict']}", file=sys.stderr)
    real_cv.write(doc, args.out)


if __name__ == "__main__":
    main()
