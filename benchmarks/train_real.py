"""Teach the default a fifth cancer type from real PET/CT: soft-tissue sarcoma, cross-validated by patient. JSON out.

The 35 real FDG PET/CT sarcomas of ``../shared/real_sts_fdg`` (CC BY 3.0: Vallières et al. 2015, TCIA
Soft-tissue-Sarcoma, DOI 10.7937/K9/TCIA.2015.7GO2GSKS; IBSI validation data) are split into 5 patient-level folds
(``unipet.data.folds``, written to ``WORK/folds.json`` and reused). For each fold, the pre-trained default (``--init``,
4 phantom types) is grown to the ``default_sarcoma`` task set (``unipet.models.task_growth``: the sarcoma prompt
and head start as ``--donor``'s) and fine-tuned on the phantom training studies plus the fold's 28 training
sarcomas, preprocessed exactly as the checkpoint was (``build_cache(preprocess=...)``). The fold's 7 held-out
sarcomas are then segmented with the sarcoma prompt and with ``--task auto`` and scored by ``unipet evaluate`` beside
SUV >= 2.5. ``--fold final`` trains on all 35 (the model to ship; its real numbers are the folds').

``--shots K`` trains on only K of a fold's training sarcomas (a few-shot curve) and ``--scratch`` from a freshly
initialised network instead of ``--init`` (with ``prior_init``), for the comparison of part 4.

Every run resumes (``--resume`` is implied by an existing run folder); commands used for the shipped default are
in ``benchmarks/RESULTS.md``.

    python benchmarks/train_real.py --work /tmp/d24 --fold 0 --iterations 800
    python benchmarks/train_real.py --work /tmp/d24 --fold final --iterations 1500 --export src/unipet/resources/checkpoints/dpdnet-small
    python benchmarks/train_real.py --tiny        # CPU smoke check (synthetic crops, tiny network)
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHIPPED = REPO / "src" / "unipet" / "resources" / "checkpoints" / "dpdnet-small"
REAL = REPO.parent / "shared" / "real_sts_fdg"
TASK = "soft_tissue_sarcoma"
RECIPE = {"base": "nnunet", "name": "default-sarcoma", "lr": 0.003, "batch_size": 2, "patch_size": [48, 64, 64],
          "sampling": {"lesion": 0.5, "hot": 0.3, "random": 0.2, "negative": 0.0}, "lesion_balance": "task",
          "task_weights": {TASK: 4.0},
          "dice_skip_empty": True, "dice_per_task": True, "task_donors": {TASK: "lymphoma"},
          "augmentation": {"flip_axes": [2], "rotate_deg": 15.0}, "checkpoint_every": 200, "workers": 0}


def merged_manifest(work: Path, phantom_cohort: Path, real_root: Path, tiny: bool):
    """Phantom studies (their own splits) + real sarcomas (task soft_tissue_sarcoma, split 'real')."""
    from unipet.io.layouts import import_autopet, import_phantom
    from unipet.io.manifest import Manifest
    from unipet.tasks import TaskSet

    tasks = TaskSet.load("default_sarcoma")
    if tiny:
        tasks = TaskSet.from_dict({"name": "tiny", "tasks": [t.to_dict() for t in TaskSet.load("default_sarcoma")
                                                             if t.name in ("lung_cancer", "lymphoma", TASK)]})
        phantom = import_autopet(phantom_cohort, task_set=tasks, metadata_csv=phantom_cohort / "clinical.csv")
    else:
        phantom = import_phantom(phantom_cohort, task_set=tasks)
    real = import_autopet(real_root, task_set=tasks, default_task=TASK)
    for case in real:
        case.split = "real"
        if tiny:  # the tiny cohorts share folder names
            case.case_id, case.patient_id = f"real_{case.case_id}", f"real_{case.patient_id}"
    return Manifest(list(phantom) + list(real), task_set=tasks, source="phantom+real"), tasks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, help="cache, folds and run folders (default: a temp folder)")
    p.add_argument("--phantoms", type=Path, help="phantom cohort (default: WORK/cohort, 160 studies of seed 0 made "
                   "there, the cohort the shipped default was trained on)")
    p.add_argument("--real", type=Path, default=REAL)
    p.add_argument("--init", type=Path, default=SHIPPED, help="pre-trained checkpoint: 4 phantom types (default v2, "
                   "grown to 5 here) or one that already has the sarcoma task (the shipped v4: trained on from there)")
    p.add_argument("--fold", default="0", help="0-4, or 'final' (all real cases)")
    p.add_argument("--shots", type=int, help="train on only this many of the fold's training sarcomas")
    p.add_argument("--scratch", action="store_true", help="from a freshly initialised network (prior_init 0.01)")
    p.add_argument("--iterations", type=int, default=800)
    p.add_argument("--recipe", type=Path, help="recipe JSON (default: the fine-tuning recipe in this file)")
    p.add_argument("--run", help="run folder name (default from fold / shots / scratch)")
    p.add_argument("--export", type=Path, help="with --fold final: copy model.safetensors + meta.json here")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: a 2-core machine shared with other "
                   "work trains several times faster on one thread than on two)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--tiny", action="store_true", help="CPU smoke check")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from unipet.checkpoint import find_checkpoint, read_meta
    from unipet.data.cache import build_cache
    from unipet.data.folds import fold_split, patient_folds, read_folds, write_folds
    from unipet.data.preprocess import PreprocessConfig
    from unipet.train import train

    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-real-"))
    work.mkdir(parents=True, exist_ok=True)
    recipe = json.loads(args.recipe.read_text()) if args.recipe else dict(RECIPE)
    recipe["iterations"] = args.iterations
    init, model_kw = args.init, None
    if args.tiny:
        init = _tiny_setup(work)
        args.real = work / "real"
        recipe.update(patch_size=[16, 32, 32], iterations=min(args.iterations, 4), checkpoint_every=2)
    phantoms = args.phantoms or work / "cohort"
    if not args.tiny and not (phantoms / "clinical.csv").exists():
        from unipet.data.phantom import write_phantom_cohort

        write_phantom_cohort(phantoms, n=160, seed=0, size="small", workers=args.threads)
    manifest, tasks = merged_manifest(work, phantoms, args.real, args.tiny)
    init_meta = read_meta(find_checkpoint(init))
    if TASK in init_meta.task_set.names:  # e.g. the shipped default v4: already grown, its sarcoma head goes on
        recipe.pop("task_donors", None)
    cache = build_cache(manifest, work / "cache", preprocess=PreprocessConfig.from_dict(init_meta.preprocess),
                        workers=1)
    real_cases = [(c.case_id, c.patient_id) for c in manifest if c.split == "real"]
    folds_path = work / "folds.json"
    if not folds_path.exists():
        write_folds(folds_path, patient_folds(real_cases, k=5 if not args.tiny else 2, seed=0), k=5, seed=0)
    folds = read_folds(folds_path)
    if args.fold == "final":
        train_real, test_real = sorted(folds), []
    else:
        train_real, test_real = fold_split(folds, int(args.fold))
    if args.shots is not None:
        train_real = sorted(random.Random(int(args.fold) if args.fold != "final" else 0).sample(train_real, args.shots))
    phantom_train = [c.case_id for c in manifest if c.split == "train"]
    recipe["cases"] = phantom_train + train_real
    if args.scratch:
        recipe.pop("task_donors", None)
        recipe.update(prior_init=0.01, lr=0.01)
    name = args.run or (f"fold{args.fold}" + (f"_k{args.shots}" if args.shots is not None else "")
                        + ("_scratch" if args.scratch else ""))
    run = work / name
    resume = (run / "checkpoint").exists()
    model_kw = dict(init_meta.model_kwargs)
    result = train(cache, "dpdnet", run, recipe=_recipe_file(work, name, recipe) if not resume else None,
                   model_kw=model_kw, device="cpu", resume=resume, progress=False, tensorboard=False,
                   init_from=None if resume or args.scratch else init)
    if result.stopped:
        raise SystemExit(f"training stopped at iteration {result.iteration}; run the same command again to resume")
    out = {"run": str(run), "fold": args.fold, "shots": args.shots, "scratch": args.scratch,
           "iteration": result.iteration, "train_real": len(train_real), "train_phantoms": len(phantom_train),
           "held_out": test_real, "init": read_meta(find_checkpoint(run)).init_from}
    if test_real:
        out["scores"] = score_fold(work, manifest, test_real, run, name)
    if args.export:
        out["exported"] = export(run, args.export, provenance(args, len(train_real), len(phantom_train)))
    text = json.dumps(out, indent=2, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


def _recipe_file(work: Path, name: str, recipe: dict) -> Path:
    path = work / f"{name}.recipe.json"
    path.write_text(json.dumps(recipe, indent=1))
    return path


def score_fold(work: Path, manifest, test_ids: list[str], run: Path, name: str) -> dict:
    """Held-out cases segmented with the sarcoma prompt and with auto; ``unipet evaluate`` beside SUV >= 2.5."""
    from unipet.io.manifest import Manifest

    held = Manifest([manifest.by_id(c) for c in test_ids], task_set=manifest.task_set, source="real")
    mpath = work / f"{name}.heldout.json"
    held.save(mpath, overwrite=True)
    scores = {}
    for task in (TASK, "auto"):
        pred = work / f"{name}.pred_{task}"
        ev = work / f"{name}.eval_{task}"
        for cmd in (["predict", str(mpath), str(pred), "--checkpoint", str(run), "--task", task, "--overwrite"],
                    ["evaluate", str(pred), str(mpath), "--out", str(ev), "--overwrite"]
                    + (["--baselines", "suv2.5"] if task == TASK else [])):
            subprocess.run([sys.executable, "-m", "unipet", *cmd], check=True, capture_output=True, text=True)
        scores[task] = per_case_dice(ev)
    return scores


def per_case_dice(eval_dir: Path) -> dict:
    """``{"mean": Dice, "cases": {case: Dice}}`` of the prediction (and each baseline) from an evaluate folder."""
    import pandas as pd

    table = pd.read_csv(eval_dir / "per_case.csv")
    out = {"prediction": {"mean": float(table["dice"].mean()),
                          "cases": dict(zip(table["case"], table["dice"].round(4)))}}
    for path in sorted((eval_dir / "baselines").glob("*/per_case.csv")) if (eval_dir / "baselines").exists() else []:
        t = pd.read_csv(path)
        out[path.parent.name] = {"mean": float(t["dice"].mean()), "cases": dict(zip(t["case"], t["dice"].round(4)))}
    return out


def provenance(args, n_real: int, n_phantoms: int) -> dict:
    """What the shipped checkpoint was trained on, how, and the credit its real data's licence asks for."""
    return {
        "trained_on": f"{n_phantoms} small phantom studies (seed 0, training split) and {n_real} real FDG PET/CT "
                      "soft-tissue sarcomas (../shared/real_sts_fdg), 2 CPU cores, no GPU",
        "commands": ["python benchmarks/train_real.py --work WORK --init V2 --fold final --iterations "
                     f"{args.iterations}" + (f" --recipe recipes/{args.recipe.name}" if args.recipe else "")
                     + (f" --run {args.run}" if args.run else "") + f" --threads {args.threads} "
                     "--export src/unipet/resources/checkpoints/dpdnet-small",
                     "(V2: default v2's model.safetensors + meta.json, git show 3a32e17:src/unipet/resources/"
                     "checkpoints/dpdnet-small/...)"],
        "initialised_from": "default v2 (the phantom-only dpdnet-small of 4 types), grown to 5 tasks "
                            "(unipet.models.task_growth; soft_tissue_sarcoma starts as lymphoma)",
        "real_data": {
            "licence": "CC BY 3.0 (Creative Commons Attribution 3.0 Unported)",
            "source": "IBSI validation data (theibsi/data_sets, ibsi_validation/), from the TCIA collection "
                      "Soft-tissue-Sarcoma",
            "cite": ["Vallieres M, Freeman CR, Skamene SR, El Naqa I. Phys Med Biol 60:5471 (2015)",
                     "Vallieres M et al. Data from Soft-tissue-Sarcoma. TCIA (2015), DOI 10.7937/K9/TCIA.2015.7GO2GSKS",
                     "Clark K et al. The Cancer Imaging Archive (TCIA). J Digit Imaging 26:1045 (2013)",
                     "Zwanenburg A et al. The Image Biomarker Standardization Initiative. Radiology 295:328 (2020)"]},
        "results": "benchmarks/RESULTS.md, the section 'Default checkpoint' of the shipped version (README says which)",
    }


def export(run: Path, dest: Path, record: dict) -> dict:
    """Weights + meta of ``run`` (with ``record`` as its ``provenance``) into ``dest``, within the 25 MB limit."""
    from unipet.checkpoint import find_checkpoint

    folder = find_checkpoint(run)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(folder / "model.safetensors", dest / "model.safetensors")
    meta = json.loads((folder / "meta.json").read_text())
    meta["provenance"] = record
    (dest / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    size = (dest / "model.safetensors").stat().st_size
    if size > 25 * 2 ** 20:
        raise SystemExit(f"model.safetensors is {size / 2 ** 20:.1f} MB > 25 MB")
    return {"dest": str(dest), "bytes": size}


def _tiny_setup(work: Path) -> Path:
    """A tiny phantom-like cohort, tiny 'real' crops and a tiny 2-task pre-trained DpDNet; returns its run folder."""
    from bench_train import _tiny_cohort

    from unipet.data.cache import build_cache
    from unipet.io.layouts import import_autopet
    from unipet.tasks import TaskSet
    from unipet.train import train

    cohort, real = work / "cohort", work / "real"
    if not (cohort / "clinical.csv").exists():
        _tiny_cohort(cohort, 6, 0)
        _tiny_cohort(real, 4, 1)
        (real / "clinical.csv").unlink()
    pre = work / "pre"
    if not (pre / "checkpoint").exists():
        two = TaskSet.from_dict({"name": "two", "tasks": [t.to_dict() for t in TaskSet.load("default_sarcoma")
                                                          if t.name in ("lung_cancer", "lymphoma")]})
        cache = build_cache(import_autopet(cohort, task_set=two, metadata_csv=cohort / "clinical.csv"),
                            work / "pre_cache")
        recipe = _recipe_file(work, "pre", {**RECIPE, "task_donors": None, "task_weights": None, "patch_size": [16, 32, 32],
                                            "iterations": 2, "checkpoint_every": 2})
        train(cache, "dpdnet", pre, recipe=recipe,
              model_kw={"base_width": 4, "min_feature": 2, "task_classifier": True}, device="cpu", progress=False,
              tensorboard=False)
    return pre


if __name__ == "__main__":
    main()
