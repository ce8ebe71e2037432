"""Evidence for anatomy-guided prompting with cross-modal self-aligned pre-training (issue 8, seed 004). Prints JSON.

Tables:

- ``sizes``: parameters and MACs of the ``anatomy`` model at its default configuration (patch 112x160x128), with
  and without the anatomical prompt.
- ``organs``: teacher–student organ maps. The organ maps of the test-split studies are hidden; a teacher learns
  from the other studies' maps, pseudo-labels the hidden ones, a student learns from both. Mean organ Dice (over
  the labels present, then over studies) of the teacher's and the student's maps against the hidden truth.
- ``pretrain``: the pre-training loss (first vs last 10 % of steps) and, on fixed patches of the val/test
  studies, masked-reconstruction MSE and PET/CT alignment (InfoNCE, matched-pair cosine gap, top-1 location
  retrieval) before and after pre-training.
- ``finetune``: with 10 %, 30 % and 100 % of the labelled training studies, lesion Dice on the lesion-positive
  test studies (whole volumes, sliding window) of the four variants: with / without pre-training x with / without
  the anatomical prompt (the prompts are the phantom's true organ maps), for all test studies, the breast-cancer
  phantoms, and the breast-cancer phantoms with distant metastases (a lesion outside breast and axilla, from the
  phantom's ``truth.json``). ``prompt_from_student``: the best prompted model re-evaluated with the student's
  organ maps as prompts (the deployment setting: test studies have no organ maps).

Held-out (val/test) studies are never trained on: pre-training and fine-tuning draw only training-split studies;
the organ teacher learns from the training studies' maps; the student learns from those plus the teacher's
pseudo-labels of the held-out images (the teacher–student design: their true maps stay hidden).

Presets (source of each setting: the abstract gives none, so all are unipet's choices; the model's own defaults
are documented in ``unipet.models.anatomy`` and ``unipet.pretrain``):

- GPU (default; the evidence at full scale, ~1 h on one H100): 60 small phantom studies at 5 mm, patch 96³,
  batch 2, 10 000 pre-training, 4 000 fine-tuning and 4 000 organ-model steps, the model's default widths::

      python benchmarks/bench_anatomy.py --device cuda --out anatomy.json

- ``--cpu`` (phantom scale on 2 CPU cores, ~20 minutes with ``--fractions 0.1 1.0``): 40 small studies
  resampled to 8 mm (120x43x60 voxels after cropping to the body), patch 32x64x64, batch 2; a narrow model
  (widths 8/16/32/64, one block per stage, prompt width 32, 2 heads, hypernetwork hidden 32, one bidirectional
  Mamba layer with state 8); 200 pre-training steps, 120 fine-tuning steps per run and 100 steps for each of
  teacher and student (STU-Net-S at base width 8, at the studies' own 5 mm grid); learning rate 1e-3 for
  pre-training and fine-tuning (the recipes plan 1e-4 / 2e-4 over 100x more steps); 16 held-out patches for the
  pre-training evaluation; fractions run in the order 0.1, 1.0, 0.3 (the scarce and the full regime first).
  Every run is kept in ``--work`` and reused; an interrupted one resumes::

      OMP_NUM_THREADS=2 python benchmarks/bench_anatomy.py --cpu --work /tmp/anatomy-cpu --out anatomy-cpu.json

- ``--tiny`` (CI smoke check, well under a minute on one core; the numbers mean nothing)::

      python benchmarks/bench_anatomy.py --tiny --out anatomy_tiny.json
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

BREAST_REGIONAL = ("breast", "node_axillary")
CPU_MODEL = {"widths": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "prompt_dim": 32, "heads": 2, "hyper_hidden": 32,
             "mamba_layers": 1, "mamba_state": 8}
TINY_MODEL = {"widths": [4, 8, 8, 16], "depths": [1, 1, 1, 1], "prompt_dim": 16, "heads": 2, "hyper_hidden": 16,
              "mamba_layers": 1, "mamba_state": 4}
#: ``--cpu`` / ``--tiny``: defaults replaced by the preset (options given on the command line still win)
CPU_PRESET = {"cases": 40, "spacing": (8.0, 8.0, 8.0), "patch": (32, 64, 64), "batch": 2, "workers": 0, "threads": 2,
              "fractions": (0.1, 1.0, 0.3), "pretrain_iterations": 200, "finetune_iterations": 120,
              "organ_iterations": 100, "lr": 1e-3, "pretrain_lr": 1e-3, "organ_width": 8, "eval_patches": 16}
TINY_PRESET = {"cases": 6, "spacing": (10.0, 10.0, 10.0), "patch": (32, 32, 32), "batch": 2, "workers": 0,
               "fractions": (0.5, 1.0), "pretrain_iterations": 12, "finetune_iterations": 8, "organ_iterations": 4,
               "overlap": 0.25, "organ_width": 2, "eval_patches": 2, "profile_sizes": False}


def cohort_manifest(work: Path, n: int, size: str, seed: int, workers: int):
    """The phantom cohort's manifest (written once into ``work/cohort``)."""
    from unipet.data.phantom import write_phantom_cohort
    from unipet.io.layouts import import_phantom

    cohort = work / "cohort"
    if not (cohort / "clinical.csv").exists():
        write_phantom_cohort(cohort, n=n, seed=seed, size=size, workers=workers, overwrite=cohort.exists())
    return import_phantom(cohort, split_seed=seed)


def breast_groups(manifest) -> tuple[set[str], set[str]]:
    """Case ids of breast-cancer studies and of those with distant metastases (any lesion outside breast/axilla)."""
    breast, metastatic = set(), set()
    for case in manifest:
        if case.task != "breast_cancer":
            continue
        breast.add(case.case_id)
        truth = Path(case.images["PET"]).parent / "truth.json"
        lesions = json.loads(truth.read_text()).get("lesions", []) if truth.exists() else []
        if any(les.get("site") not in BREAST_REGIONAL for les in lesions):
            metastatic.add(case.case_id)
    return breast, metastatic


def lesion_dice(run_dir: Path, cache, case_ids, device: str, overlap: float) -> dict[str, float]:
    """Dice per lesion-positive study of ``case_ids`` (whole cached volumes, sliding window, no TTA)."""
    import numpy as np

    from unipet.evaluate.metrics import dice
    from unipet.infer.predictor import Predictor
    from unipet.checkpoint import load_checkpoint

    model, meta = load_checkpoint(run_dir, device=device)
    predictor = Predictor(model, meta, device=device, overlap=overlap, tile_batch=4)
    out = {}
    for cid in case_ids:
        case = cache.load(cid, mmap=False)
        if case.label is None or not case.label.any():
            continue
        pred = predictor.segment(case.image, None, case.organs) > 0
        out[cid] = float(dice(pred, np.asarray(case.label) > 0))
    return out


def summarise(scores: dict[str, float], breast: set[str], metastatic: set[str]) -> dict:
    """Mean Dice over all / breast / metastatic-breast studies (None where a group is empty) and the counts."""
    def mean(ids):
        vals = [scores[c] for c in ids if c in scores]
        return (round(sum(vals) / len(vals), 4) if vals else None), len(vals)

    (all_d, n_all), (br_d, n_br), (met_d, n_met) = mean(scores), mean(breast), mean(metastatic)
    return {"dice": all_d, "n": n_all, "dice_breast": br_d, "n_breast": n_br, "dice_breast_metastatic": met_d,
            "n_breast_metastatic": n_met}


def organ_table(result, truth_cases, classes: int) -> dict:
    """Mean organ Dice of the teacher's and student's maps against the hidden true maps."""
    import numpy as np

    from unipet.data.organs import label_name
    from unipet.io.nifti import load_volume
    from unipet.evaluate.metrics import label_dice as organ_dice

    table = {}
    for name, maps in (("teacher", result.pseudo_labels), ("student", result.maps if result.student_dir else None)):
        if maps is None:
            continue
        per_study, per_organ = [], {}
        for case in truth_cases:
            ref, _ = load_volume(case.organs, dtype=np.int32)
            pred, _ = load_volume(maps[case.case_id], dtype=np.int32)
            scores = organ_dice(pred, ref, classes)
            per_study.append(float(np.mean(list(scores.values()))))
            for k, v in scores.items():
                per_organ.setdefault(label_name(k), []).append(v)
        table[name] = {"mean_dice": round(float(np.mean(per_study)), 4),
                       "per_organ": {k: round(float(np.mean(v)), 4) for k, v in sorted(per_organ.items())}}
    return table


def run_complete(run_dir: Path) -> bool:
    """True when ``run_dir`` holds the checkpoint of a finished run."""
    from unipet.checkpoint import read_meta

    return (run_dir / "checkpoint").exists() and bool(read_meta(run_dir).complete)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, help="working folder (cohort, caches, runs; reused); default a temp folder")
    p.add_argument("--out", type=Path, help="write the JSON here too")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--cases", type=int, default=60, help="phantom studies")
    p.add_argument("--size", default="small", help="phantom size")
    p.add_argument("--spacing", type=float, nargs=3, default=None, help="cache spacing z y x in mm (default: native)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patch", type=int, nargs=3, default=(96, 96, 96), help="patch D H W (z, y, x)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--fractions", type=float, nargs="+", default=(0.1, 0.3, 1.0), help="shares of the labelled training studies")
    p.add_argument("--pretrain-iterations", type=int, default=10_000)
    p.add_argument("--finetune-iterations", type=int, default=4_000)
    p.add_argument("--organ-iterations", type=int, default=4_000)
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: the anatomy recipe's)")
    p.add_argument("--pretrain-lr", type=float, default=None, help="pre-training learning rate (default: PretrainConfig's)")
    p.add_argument("--organ-model", default="stunet-s")
    p.add_argument("--organ-width", type=int, default=None, help="organ model base width (default: the model's)")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap")
    p.add_argument("--eval-patches", type=int, default=32, help="held-out patches of the pre-training evaluation")
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--model-kw", default="{}", help="JSON options of the anatomy model (widths, depths, ...)")
    p.add_argument("--cpu", action="store_true", help="phantom-scale preset for a 2-core CPU (module docstring)")
    p.add_argument("--tiny", action="store_true", help="CI smoke check: 6 studies at 10 mm, tiny models, a few steps")
    p.set_defaults(profile_sizes=True)
    mode = p.parse_known_args()[0]
    if mode.cpu or mode.tiny:
        p.set_defaults(**(TINY_PRESET if mode.tiny else CPU_PRESET), device=mode.device or "cpu")
    args = p.parse_args()

    import torch

    from unipet.data.cache import Cache, build_cache
    from unipet.io.manifest import Manifest
    from unipet.models import create
    from unipet.models.profile import profile_model
    from unipet.pretrain import PretrainConfig, evaluate_pretrainer, pretrain
    from unipet.pretrain.loop import build_pretrainer
    from unipet.train import load_recipe, train
    from unipet.train.organs_teacher import organ_classes, teacher_student

    model_kw = json.loads(args.model_kw)
    if args.cpu or args.tiny:
        model_kw = {**(TINY_MODEL if args.tiny else CPU_MODEL), **model_kw}
    organ_kw = {"base_width": args.organ_width} if args.organ_width else {}
    spacing = tuple(args.spacing) if args.spacing else None
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-bench-anatomy-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    phases = {}
    manifest = cohort_manifest(work, args.cases, args.size, args.seed, max(1, args.workers))
    breast, metastatic = breast_groups(manifest)
    train_ids = [c.case_id for c in manifest if c.split == "train"]
    heldout_ids = [c.case_id for c in manifest if c.split in ("test", "val")]

    sizes = {}
    if args.profile_sizes:
        for anatomy in (True, False):
            prof = profile_model("anatomy", patch=(112, 160, 128), anatomy=anatomy)
            sizes["with_prompt" if anatomy else "without_prompt"] = {
                "params_M": round(prof["params"] / 1e6, 3), "macs_G": round(prof["macs"] / 1e9, 1)}
    with torch.device("meta"):
        run_model = create("anatomy", in_channels=2, num_classes=2, tasks=manifest.task_set,
                           patch_size=tuple(args.patch), **model_kw)
    run_params_M = round(sum(q.numel() for q in run_model.parameters()) / 1e6, 3)
    phases["data_s"] = round(time.perf_counter() - t_start, 1)

    # ---- organs: teacher-student maps for the val/test studies, whose organ maps are hidden
    t0 = time.perf_counter()
    organ_record = work / "organs" / "bench_organs.json"
    if not (organ_record.exists() and (work / "organs" / "manifest.json").exists()):
        hidden = [replace(c, organs=None) if c.case_id in heldout_ids else c for c in manifest]
        organ_result = teacher_student(
            Manifest(hidden, task_set=manifest.task_set, source=manifest.source, root=manifest.root), work / "organs",
            model=args.organ_model, model_kw=organ_kw, overwrite=True, device=device, iterations=args.organ_iterations,
            patch_size=tuple(args.patch), batch_size=args.batch, workers=args.workers, progress=False,
            tensorboard=False)
        organ_record.write_text(json.dumps(
            organ_table(organ_result, [c for c in manifest if c.case_id in heldout_ids], organ_classes())))
    organs = json.loads(organ_record.read_text())
    phases["organs_s"] = round(time.perf_counter() - t0, 1)

    # ---- segmentation cache (true organ maps) and the test studies with the student's maps
    t0 = time.perf_counter()

    def cached(folder: Path, source, **kw):
        return Cache(folder) if (folder / "cache.json").exists() else build_cache(source, folder, **kw)

    cache = cached(work / "cache", manifest, target_spacing=spacing, workers=max(1, args.workers))
    student_cache = cached(work / "cache-student-organs", Manifest.load(work / "organs" / "manifest.json"),
                           target_spacing=spacing, splits=["val", "test"])
    phases["cache_s"] = round(time.perf_counter() - t0, 1)

    # ---- pre-training (only training-split studies; resumed when interrupted)
    t0 = time.perf_counter()
    widths = model_kw.get("widths")
    cfg = PretrainConfig(patch_size=list(args.patch), batch_size=args.batch, iterations=args.pretrain_iterations,
                         warmup_iterations=max(1, args.pretrain_iterations // 20), workers=args.workers,
                         checkpoint_every=max(1, args.pretrain_iterations // 4), seed=args.seed, cases=train_ids,
                         **({"lr": args.pretrain_lr} if args.pretrain_lr else {}),
                         **({"widths": widths, "depths": model_kw.get("depths")} if widths else {}))
    pre_dir = work / "pretrain"
    torch.manual_seed(args.seed)
    eval_kw = dict(case_ids=heldout_ids or None, patches=args.eval_patches, patch_size=args.patch, device=device)
    before = evaluate_pretrainer(build_pretrainer(cfg), cache, **eval_kw)
    if not (run_complete(pre_dir) and (pre_dir / "bench_losses.json").exists()):
        resume = (pre_dir / "checkpoint").exists()
        run = pretrain(cache, pre_dir, None if resume else cfg, resume=resume, device=device, progress=False)
        k = max(1, len(run.logs) // 10)
        losses = {"first_loss": sum(l["loss"] for l in run.logs[:k]) / k, "last_loss": sum(l["loss"] for l in run.logs[-k:]) / k,
                  "first_align": sum(l["align"] for l in run.logs[:k]) / k, "last_align": sum(l["align"] for l in run.logs[-k:]) / k}
        (pre_dir / "bench_losses.json").write_text(json.dumps(losses))
    losses = json.loads((pre_dir / "bench_losses.json").read_text())
    from safetensors.torch import load_file

    trained = build_pretrainer(cfg)
    trained.load_state_dict(load_file(str(pre_dir / "checkpoint" / "model.safetensors")))
    after = evaluate_pretrainer(trained, cache, **eval_kw)
    pretrain_table = {"iterations": args.pretrain_iterations, "lr": cfg.recipe.lr, **{k: round(v, 4) for k, v in losses.items()},
                      "before": {k: round(v, 4) for k, v in before.items()},
                      "after": {k: round(v, 4) for k, v in after.items()}}
    phases["pretrain_s"] = round(time.perf_counter() - t0, 1)

    # ---- fine-tuning grid (runs reused when complete, resumed when interrupted)
    t0 = time.perf_counter()
    rng = random.Random(args.seed)
    order = sorted(train_ids)
    rng.shuffle(order)
    rows, best = [], None
    for fraction in args.fractions:
        cases = order[: max(1, round(fraction * len(order)))]
        for pretrained in (False, True):
            for anatomy in (False, True):
                name = f"f{fraction:g}_{'pre' if pretrained else 'scratch'}_{'prompt' if anatomy else 'plain'}"
                run_dir = work / "runs" / name
                t1 = time.perf_counter()
                if not run_complete(run_dir):
                    recipe = load_recipe("anatomy", iterations=args.finetune_iterations, cases=cases, lr=args.lr,
                                         warmup_iterations=max(1, args.finetune_iterations // 20),
                                         checkpoint_every=max(1, min(args.finetune_iterations, 50)))
                    resume = (run_dir / "checkpoint").exists()
                    train(cache, "anatomy", run_dir, recipe=None if resume else recipe,
                          model_kw={**model_kw, "anatomy": anatomy}, device=device, patch_size=tuple(args.patch),
                          batch_size=args.batch, workers=args.workers, progress=False, tensorboard=False,
                          init_from=pre_dir if pretrained else None, resume=resume)
                scores = lesion_dice(run_dir, cache, heldout_ids, device, args.overlap)
                row = {"fraction": fraction, "train_studies": len(cases), "pretrained": pretrained,
                       "anatomy_prompt": anatomy, **summarise(scores, breast, metastatic),
                       "seconds": round(time.perf_counter() - t1, 1)}
                rows.append(row)
                if anatomy and (best is None or (row["dice"] or 0) > (best[1]["dice"] or 0)):
                    best = (run_dir, row)
    rows.sort(key=lambda r: (r["fraction"], r["pretrained"], r["anatomy_prompt"]))
    phases["finetune_s"] = round(time.perf_counter() - t0, 1)
    prompt_from_student = None
    if best is not None:
        scores = lesion_dice(best[0], student_cache, [c for c in heldout_ids if c in student_cache.case_ids], device,
                             args.overlap)
        prompt_from_student = {"run": best[0].name, "true_organ_maps": best[1]["dice"],
                               **summarise(scores, breast, metastatic)}

    out = {
        "benchmark": "anatomy", "preset": "tiny" if args.tiny else "cpu" if args.cpu else "default", "tiny": args.tiny,
        "device": torch.cuda.get_device_name(device) if str(device).startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "studies": len(manifest),
        "train_studies": len(train_ids), "heldout_studies": len(heldout_ids),
        "breast_heldout_studies": len(breast & set(heldout_ids)),
        "breast_metastatic_heldout_studies": len(metastatic & set(heldout_ids)),
        "phantom_size": args.size, "spacing": list(spacing) if spacing else None, "patch": list(args.patch),
        "batch": args.batch, "finetune_iterations": args.finetune_iterations, "finetune_lr": args.lr,
        "organ_iterations": args.organ_iterations, "organ_model": args.organ_model, "organ_kw": organ_kw,
        "model_kw": model_kw, "run_model_params_M": run_params_M, "sizes_at_112x160x128": sizes, "organs": organs,
        "pretrain": pretrain_table, "finetune": rows, "prompt_from_student": prompt_from_student, "phases": phases,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
