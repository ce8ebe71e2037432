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

GPU run (the evidence; ~1 h on one H100)::

    python benchmarks/bench_anatomy.py --device cuda --out anatomy.json

CPU smoke check (< 2 min; the numbers mean nothing)::

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, help="working folder (cohort, caches, runs); default a temp folder")
    p.add_argument("--out", type=Path, help="write the JSON here too")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--cases", type=int, default=60, help="phantom studies")
    p.add_argument("--size", default="small", help="phantom size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patch", type=int, nargs=3, default=(96, 96, 96), help="patch D H W (z, y, x)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--fractions", type=float, nargs="+", default=(0.1, 0.3, 1.0), help="shares of the labelled training studies")
    p.add_argument("--pretrain-iterations", type=int, default=10_000)
    p.add_argument("--finetune-iterations", type=int, default=4_000)
    p.add_argument("--organ-iterations", type=int, default=4_000)
    p.add_argument("--organ-model", default="stunet-s")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap")
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--model-kw", default="{}", help="JSON options of the anatomy model (widths, depths, ...)")
    p.add_argument("--tiny", action="store_true", help="CPU smoke check: 6 studies at 10 mm, tiny models, a few steps")
    args = p.parse_args()

    import torch

    from unipet.data.cache import build_cache
    from unipet.io.manifest import Manifest
    from unipet.models.profile import profile_model
    from unipet.pretrain import PretrainConfig, evaluate_pretrainer, pretrain
    from unipet.pretrain.loop import build_pretrainer
    from unipet.train import load_recipe, train
    from unipet.checkpoint import read_meta
    from unipet.train.organs_teacher import organ_classes, teacher_student

    model_kw = json.loads(args.model_kw)
    organ_kw: dict = {}
    spacing = None
    if args.tiny:
        args.cases, args.patch, args.batch, args.workers = 6, (32, 32, 32), 2, 0
        args.pretrain_iterations, args.finetune_iterations, args.organ_iterations = 60, 20, 10
        args.device, args.overlap = args.device or "cpu", 0.25
        spacing = (10.0, 10.0, 10.0)
        model_kw = {"widths": [4, 8, 8, 16], "depths": [1, 1, 1, 1], "prompt_dim": 16, "heads": 2,
                    "hyper_hidden": 16, "mamba_layers": 1, "mamba_state": 4, **model_kw}
        organ_kw = {"base_width": 2}
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-bench-anatomy-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    manifest = cohort_manifest(work, args.cases, args.size, args.seed, max(1, args.workers))
    breast, metastatic = breast_groups(manifest)
    train_ids = [c.case_id for c in manifest if c.split == "train"]
    heldout_ids = [c.case_id for c in manifest if c.split in ("test", "val")]

    sizes = {}
    for anatomy in (True, False):
        prof = profile_model("anatomy", patch=(112, 160, 128), anatomy=anatomy)
        sizes["with_prompt" if anatomy else "without_prompt"] = {
            "params_M": round(prof["params"] / 1e6, 3), "macs_G": round(prof["macs"] / 1e9, 1)}

    # ---- organs: teacher-student maps for the val/test studies, whose organ maps are hidden
    hidden = [replace(c, organs=None) if c.case_id in heldout_ids else c for c in manifest]
    organ_result = teacher_student(
        Manifest(hidden, task_set=manifest.task_set, source=manifest.source, root=manifest.root), work / "organs",
        model=args.organ_model, model_kw=organ_kw, overwrite=True, device=device, iterations=args.organ_iterations,
        patch_size=tuple(args.patch), batch_size=args.batch, workers=args.workers, progress=False, tensorboard=False)
    organs = organ_table(organ_result, [c for c in manifest if c.case_id in heldout_ids], organ_classes())

    # ---- segmentation cache (true organ maps) and the test studies with the student's maps
    cache = build_cache(manifest, work / "cache", target_spacing=spacing, workers=max(1, args.workers))
    student_cache = build_cache(Manifest.load(organ_result.manifest_path), work / "cache-student-organs",
                                target_spacing=spacing, splits=["val", "test"])

    # ---- pre-training
    widths = model_kw.get("widths")
    cfg = PretrainConfig(patch_size=list(args.patch), batch_size=args.batch, iterations=args.pretrain_iterations,
                         warmup_iterations=max(1, args.pretrain_iterations // 20), workers=args.workers,
                         checkpoint_every=max(1, args.pretrain_iterations // 4), seed=args.seed, cases=train_ids,
                         **({"widths": widths, "depths": model_kw.get("depths")} if widths else {}))
    pre_dir = work / "pretrain"
    torch.manual_seed(args.seed)
    eval_kw = dict(case_ids=heldout_ids or None, patches=4 if args.tiny else 32, patch_size=args.patch, device=device)
    before = evaluate_pretrainer(build_pretrainer(cfg), cache, **eval_kw)
    if not ((pre_dir / "checkpoint").exists() and read_meta(pre_dir).complete):
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
    pretrain_table = {"iterations": args.pretrain_iterations, **{k: round(v, 4) for k, v in losses.items()},
                      "before": {k: round(v, 4) for k, v in before.items()},
                      "after": {k: round(v, 4) for k, v in after.items()}}

    # ---- fine-tuning grid
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
                t0 = time.perf_counter()
                if not ((run_dir / "checkpoint").exists() and read_meta(run_dir).complete):
                    recipe = load_recipe("anatomy", iterations=args.finetune_iterations, cases=cases,
                                         warmup_iterations=max(1, args.finetune_iterations // 20),
                                         checkpoint_every=args.finetune_iterations)
                    train(cache, "anatomy", run_dir, recipe=recipe, model_kw={**model_kw, "anatomy": anatomy},
                          device=device, patch_size=tuple(args.patch), batch_size=args.batch, workers=args.workers,
                          progress=False, tensorboard=False, init_from=pre_dir if pretrained else None,
                          resume=(run_dir / "checkpoint").exists())
                scores = lesion_dice(run_dir, cache, heldout_ids, device, args.overlap)
                row = {"fraction": fraction, "train_studies": len(cases), "pretrained": pretrained,
                       "anatomy_prompt": anatomy, **summarise(scores, breast, metastatic),
                       "seconds": round(time.perf_counter() - t0, 1)}
                rows.append(row)
                if anatomy and (best is None or (row["dice"] or 0) > (best[1]["dice"] or 0)):
                    best = (run_dir, row)
    prompt_from_student = None
    if best is not None:
        scores = lesion_dice(best[0], student_cache, [c for c in heldout_ids if c in student_cache.case_ids], device,
                             args.overlap)
        prompt_from_student = {"run": best[0].name, "true_organ_maps": best[1]["dice"],
                               **summarise(scores, breast, metastatic)}

    out = {
        "benchmark": "anatomy", "tiny": args.tiny,
        "device": torch.cuda.get_device_name(device) if str(device).startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__, "studies": len(manifest), "train_studies": len(train_ids),
        "heldout_studies": len(heldout_ids), "breast_heldout_studies": len(breast & set(heldout_ids)),
        "phantom_size": args.size, "spacing": spacing, "patch": list(args.patch), "batch": args.batch,
        "model_kw": model_kw, "sizes_at_112x160x128": sizes, "organs": organs, "pretrain": pretrain_table,
        "finetune": rows, "prompt_from_student": prompt_from_student,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
