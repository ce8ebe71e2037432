"""gCIS evidence on phantom data: router usage after joint training, pruned vs full model, few-shot adaptation.
Prints (and with ``--out``, writes) JSON.

1. Joint training (recipe ``gcis``) on the phantom's lesion tasks (four cancer types) and organ / tubular tasks
   (liver, kidney, aorta, ureter; ``unipet.data.organ_tasks``), CT window normalisation (width 1800, level 0),
   with one structure held out (``--held-out``: iliac arteries by default, the spleen in the ``--cpu`` preset).
   Only training-split studies of the eight trained tasks are sampled.
2. Router usage: the arg-max path of every task (and of the held-out prompt) at every routed module (the release
   layout's 7: bottleneck, five decoder levels, output convolution; ``levels`` names them), the router
   probabilities, and how many levels pairs of tasks share within and between the groups lesion / organ / vessel.
3. Pruned vs full: every trained task exported to its single-path model; masks of both on held-out studies
   (voxels that differ), Dice of both, parameters, and latency per study (sliding window, same device).
4. Few-shot: the held-out task from 1 and 5 training-split studies (``unipet adapt``: route the prompt, prune,
   freeze the encoder) against the same single-path network trained from scratch on the same shots (every
   parameter trainable, same recipe and iterations); Dice on the task's val/test studies, which no run saw.

Presets (each setting's source: paper = Ouyang et al. 2024 as quoted in issue 7 and in ``unipet.models.gcis``;
recipe = the shipped ``gcis`` / ``gcis-adapt`` recipes; unipet = chosen here):

- GPU (default; about 25 minutes on one H100): 40 small phantom studies at their 5 mm grid, patch 96³, batch 2,
  6000 joint steps, 600 few-shot steps, the paper-size model (Swin-48, 6 paths x 7 routed modules, MiniLM
  prompts), the recipes' learning rates (2e-4 joint, 1e-4 adaptation) and multi-spacing sampling::

      python benchmarks/bench_gcis.py --device cuda --out gcis.json

- ``--cpu`` (phantom scale on 2 CPU cores, 15–20 minutes; unipet's choices, stated in RESULTS.md): 24 small
  studies resampled to 8 mm (120x60x60 voxels), patch 32x64x64, batch 2, 500 joint steps, 150 steps per
  few-shot run; a narrow model (Swin feature size 12, heads 1/2/4/8, window 4, decoder widths 8/8/16/32/64,
  bottleneck width 32 — a third of the paper-size widths —, router hidden 64; still 6 paths x 7 routed modules
  and MiniLM prompts as the paper); learning rate 1e-3 for both stages (100x fewer steps than the recipes plan),
  one cosine cycle over the joint run; multi-spacing off (the cache holds one 8 mm grid and the recipe's
  0.6/1.0/1.5 mm spacings are for clinical CT); held-out task the
  spleen (at 8 mm the iliac arteries are 1–2 voxels wide). Runs are kept in ``--work`` and reused, an
  interrupted joint run resumes::

      OMP_NUM_THREADS=2 python benchmarks/bench_gcis.py --cpu --work /tmp/gcis-cpu --out gcis-cpu.json

- ``--tiny`` (CI smoke check, well under a minute on one core; the numbers mean nothing)::

      python benchmarks/bench_gcis.py --tiny --out /tmp/gcis-tiny.json
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

TRAINED = ["lung_cancer", "lymphoma", "melanoma", "breast_cancer", "liver", "kidney", "aorta", "ureter"]
HELD_OUT = "iliac_arteries"
#: ``--cpu``: (attribute, value) pairs applied over the defaults (see the module docstring)
CPU_PRESET = {"cases": 24, "spacing": (8.0, 8.0, 8.0), "patch": (32, 64, 64), "batch": 2, "iterations": 500,
              "adapt_iterations": 150, "workers": 0, "threads": 2, "held_out": "spleen", "lr": 1e-3,
              "adapt_lr": 1e-3, "single_spacing": True, "compare_studies": 2}
CPU_MODEL = {"feature_size": 12, "num_heads": [1, 2, 4, 8], "window_size": 4, "decoder_widths": [8, 8, 16, 32, 64],
             "bottleneck_width": 32, "router_hidden": 64, "text_encoder": "minilm"}
#: ``--tiny``: a CI smoke check (4 of the 5 studies are too few to learn anything; it shows the pipeline runs)
TINY_PRESET = {"cases": 5, "spacing": (10.0, 10.0, 10.0), "patch": (64, 32, 32), "batch": 1, "iterations": 3,
               "adapt_iterations": 1, "shots": (1, 2), "workers": 0, "single_spacing": True, "compare_studies": 1,
               "compare_tasks": 2}
TINY_MODEL = {"feature_size": 6, "num_heads": [1, 2, 2, 4], "window_size": 4, "decoder_widths": [4, 4, 8, 8, 16],
              "bottleneck_width": 8, "text_encoder": "hash", "router_hidden": 16}


def phantom_structures_cache(work: Path, n: int, size: str, spacing, workers: int, structures, seed: int = 0):
    """Cache (CT window + SUV z-score) of an ``n``-study phantom cohort with organ/vessel task cases."""
    from unipet.data.cache import Cache, build_cache
    from unipet.data.organ_tasks import add_organ_tasks
    from unipet.data.phantom import write_phantom_cohort
    from unipet.io.layouts import import_phantom
    from unipet.tasks import TaskSet

    if (work / "cache" / "cache.json").exists():
        return Cache(work / "cache")
    cohort = work / "cohort"
    if not (cohort / "clinical.csv").exists():
        write_phantom_cohort(cohort, n=n, seed=seed, size=size, workers=workers, overwrite=cohort.exists())
    manifest = import_phantom(cohort, task_set=TaskSet.load("phantom_structures"), split_seed=seed)
    manifest = add_organ_tasks(manifest, work / "masks", tasks=list(structures))
    return build_cache(manifest, work / "cache", ct_norm="ct-window", target_spacing=spacing, workers=workers)


def dice(pred, ref) -> float:
    """Dice of two boolean arrays (1 when both are empty)."""
    denom = int(pred.sum()) + int(ref.sum())
    return 1.0 if denom == 0 else 2.0 * int((pred & ref).sum()) / denom


def sync(device) -> None:
    """Wait for the GPU (timings)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dice_scores(predictor, cache, cases, task: str) -> list[float]:
    """Dice per cached case of ``task`` (whole volumes, the predictor's sliding window)."""
    import numpy as np

    index = predictor.task_index(task)
    return [dice(predictor.segment(np.asarray(cache.load(c).image), index) > 0, np.asarray(cache.load(c).label) > 0)
            for c in cases]


def is_complete(run: Path) -> bool:
    """True when ``run`` holds a checkpoint of a finished training."""
    from unipet.checkpoint import read_meta

    return (run / "checkpoint").exists() and bool(read_meta(run).complete)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, help="working folder (cohort, cache, runs; reused); default a temp folder")
    p.add_argument("--out", type=Path, help="write the JSON here too")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--cases", type=int, default=40, help="phantom studies")
    p.add_argument("--size", default="small", help="phantom size (small: 5 mm)")
    p.add_argument("--spacing", type=float, nargs=3, default=None, help="cache spacing z y x in mm (default: native)")
    p.add_argument("--patch", type=int, nargs=3, default=(96, 96, 96), help="patch D H W (multiples of 32)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iterations", type=int, default=6000, help="joint training steps")
    p.add_argument("--adapt-iterations", type=int, default=600, help="few-shot training steps")
    p.add_argument("--lr", type=float, default=None, help="joint learning rate (default: the gcis recipe's 2e-4)")
    p.add_argument("--adapt-lr", type=float, default=None, help="few-shot learning rate (default: gcis-adapt's 1e-4)")
    p.add_argument("--shots", type=int, nargs="+", default=(1, 5))
    p.add_argument("--held-out", default=HELD_OUT, help="structure task kept out of joint training (few-shot target)")
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--model-kw", default="{}", help="JSON builder options (e.g. feature size)")
    p.add_argument("--cpu", action="store_true", help="phantom-scale preset for a 2-core CPU (module docstring)")
    p.add_argument("--tiny", action="store_true", help="CI smoke check: 5 studies at 10 mm, tiny model, few steps")
    p.set_defaults(single_spacing=False, compare_studies=3, compare_tasks=None)
    mode = p.parse_known_args()[0]
    if mode.cpu or mode.tiny:  # the preset replaces the defaults; options given on the command line still win
        p.set_defaults(**(TINY_PRESET if mode.tiny else CPU_PRESET), device=mode.device or "cpu")
    args = p.parse_args()

    import numpy as np
    import torch

    from unipet.infer.predictor import Predictor
    from unipet.analysis.gcis import export
    from unipet.models.routing import path_sharing, route_probabilities, route_table
    from unipet.models.text import encode_texts
    from unipet.train import load_recipe, train
    from unipet.checkpoint import load_checkpoint
    from unipet.train.gcis import adapt

    model_kw = json.loads(args.model_kw)
    if args.cpu or args.tiny:
        model_kw = {**(TINY_MODEL if args.tiny else CPU_MODEL), **model_kw}
    if args.threads:
        torch.set_num_threads(args.threads)
    held_out = args.held_out
    if held_out in TRAINED:
        raise SystemExit(f"--held-out {held_out} is one of the jointly trained tasks; choose another structure")
    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-bench-gcis-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    phases = {}
    cache = phantom_structures_cache(work, args.cases, args.size, args.spacing, max(1, args.workers),
                                     ["liver", "kidney", "aorta", "ureter", held_out])
    infos = {c: cache.info(c) for c in cache.case_ids}
    train_ids = [c for c, i in infos.items() if i.get("split") == "train"]
    joint_cases = [c for c in train_ids if infos[c]["task"] in TRAINED]
    sizes = {"patch_size": tuple(args.patch), "batch_size": args.batch, "workers": args.workers}
    phases["data_s"] = round(time.perf_counter() - t_start, 1)

    # 1. joint training (reused when complete, resumed when interrupted)
    joint = work / "joint"
    t0 = time.perf_counter()
    if not is_complete(joint):
        recipe = load_recipe("gcis", iterations=args.iterations, cases=joint_cases, lr=args.lr,
                             checkpoint_every=max(1, min(args.iterations, 100)),
                             warmup_iterations=max(1, args.iterations // 20),
                             restart_period=args.iterations if args.cpu else None)
        if args.single_spacing:
            recipe = replace(recipe, multi_spacing=None)
        resume = (joint / "checkpoint").exists()
        result = train(cache, "gcis", joint, recipe=None if resume else recipe, model_kw=model_kw,
                       device=args.device, progress=False, tensorboard=False, resume=resume,
                       iterations=args.iterations if resume else None, **sizes)
        (joint / "bench_train.json").write_text(json.dumps(
            {"final_loss": result.losses[-1] if result.losses else None,
             "seconds": time.perf_counter() - t0 + (json.loads((joint / "bench_train.json").read_text())["seconds"]
                                                     if resume and (joint / "bench_train.json").exists() else 0.0)}))
    trained_record = json.loads((joint / "bench_train.json").read_text())
    full, meta = load_checkpoint(joint, device=args.device or "auto")
    first_loss, last_loss = None, None
    metrics = joint / "metrics.csv"  # one row per step: iteration,loss,...
    if metrics.exists():
        losses = [float(line.split(",")[1]) for line in metrics.read_text().splitlines()[1:] if line]
        k = max(1, len(losses) // 10)
        first_loss, last_loss = sum(losses[:k]) / k, sum(losses[-k:]) / k
    phases["joint_training_s"] = round(time.perf_counter() - t0, 1)

    # 2. router usage
    names = full.task_set.names
    rows = [names.index(t) for t in TRAINED]
    text = full.text_embedding[rows]
    kw = meta.model_kwargs
    held_text = encode_texts([full.task_set[held_out].description], kw.get("text_encoder", "minilm"),
                             int(kw.get("text_dim", 384))).to(text.device)
    modules = list(full.pathways)
    table = route_table(modules, torch.cat((text, held_text)))
    probs = route_probabilities(modules, torch.cat((text, held_text)))
    labels = TRAINED + [f"{held_out} (held out)"]
    kinds = [full.task_set[t].kind for t in TRAINED]
    usage = {
        "levels": full.module_labels,
        "routes": {label: table[i].tolist() for i, label in enumerate(labels)},
        "probabilities": {label: [[round(v, 3) for v in lvl] for lvl in probs[i].tolist()]
                          for i, label in enumerate(labels)},
        "sharing": path_sharing(table[: len(TRAINED)], groups=kinds), "groups": dict(zip(TRAINED, kinds)),
    }

    # 3. pruned vs full on held-out studies (each predictor warmed up on one study first, then timed)
    t0 = time.perf_counter()
    evaluation = [c for c, i in infos.items() if i.get("split") in ("val", "test") and i.get("has_label")]
    full_pred = Predictor(full, meta, device=args.device or "auto")
    pruning = {}
    compared = [t for t in TRAINED if any(infos[c]["task"] == t for c in evaluation)][: args.compare_tasks]
    for task in compared:
        cases = [c for c in evaluation if infos[c]["task"] == task][: args.compare_studies]
        record = export(joint, task, work / "pruned" / task, overwrite=True)
        pruned, pmeta = load_checkpoint(work / "pruned" / task, device=full_pred.device)
        pr_pred = Predictor(pruned, pmeta, device=args.device or "auto")
        index = names.index(task)
        stats = {"differing_voxels": 0, "dice_full": [], "dice_pruned": [], "seconds_full": [], "seconds_pruned": []}
        for i, cid in enumerate(cases):
            case = cache.load(cid)
            image, ref = np.asarray(case.image), np.asarray(case.label) > 0
            masks = {}
            for name, predictor in (("full", full_pred), ("pruned", pr_pred)):
                if i == 0:
                    predictor.segment(image, index)  # warm-up (kernel selection, allocations)
                sync(predictor.device)
                t1 = time.perf_counter()
                masks[name] = predictor.segment(image, index)
                sync(predictor.device)
                stats[f"seconds_{name}"].append(time.perf_counter() - t1)
                stats[f"dice_{name}"].append(dice(masks[name] > 0, ref))
            stats["differing_voxels"] += int((masks["full"] != masks["pruned"]).sum())
        pruning[task] = {"route": record["route"], "params_full_M": round(record["params_full"] / 1e6, 3),
                         "params_pruned_M": round(record["params_pruned"] / 1e6, 3), "studies": len(cases),
                         **{k: v if k == "differing_voxels" else round(float(np.mean(v)), 4) for k, v in stats.items()}}
    phases["pruning_s"] = round(time.perf_counter() - t0, 1)

    # 4. few-shot on the held-out task (runs reused when complete; an interrupted one starts again)
    t0 = time.perf_counter()
    held_eval = [c for c in evaluation if infos[c]["task"] == held_out]
    few = {}
    for shots in args.shots:
        entry = {}
        for mode in ("adapted", "scratch"):
            run = work / f"fewshot-{shots}-{mode}"
            record_path = run / "bench_adapt.json"
            if not (is_complete(run) and record_path.exists()):
                if run.exists():
                    shutil.rmtree(run)  # an interrupted few-shot run of this benchmark
                step = load_recipe("gcis-adapt", iterations=args.adapt_iterations, lr=args.adapt_lr)
                res = adapt(joint, cache, run, task=held_out, shots=shots, recipe=step,
                            from_scratch=mode == "scratch", device=args.device, **sizes)
                record_path.write_text(json.dumps(res))
            res = json.loads(record_path.read_text())
            model, rmeta = load_checkpoint(run, device=full_pred.device)
            scores = dice_scores(Predictor(model, rmeta, device=args.device or "auto"), cache, held_eval, held_out)
            entry[mode] = {"dice": round(float(np.mean(scores)), 4), "dice_sd": round(float(np.std(scores)), 4),
                           "route": res["route"], "shot_studies": res["cases"],
                           "trainable_M": round(res["trainable_params"] / 1e6, 3),
                           "frozen_M": round(res["frozen_params"] / 1e6, 3), "final_loss": res["final_loss"]}
        few[f"{shots}-shot"] = entry
    phases["few_shot_s"] = round(time.perf_counter() - t0, 1)

    device = full_pred.device
    out = {
        "benchmark": "gcis", "preset": "tiny" if args.tiny else "cpu" if args.cpu else "default", "tiny": args.tiny,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cases": len(cache),
        "studies": args.cases, "spacing": list(args.spacing) if args.spacing else None,
        "model_kw": model_kw, "patch": list(args.patch), "batch": args.batch, "iterations": args.iterations,
        "adapt_iterations": args.adapt_iterations, "lr": args.lr, "adapt_lr": args.adapt_lr,
        "multi_spacing": not args.single_spacing,
        "joint_train_studies": len({infos[c].get("patient_id", c) for c in joint_cases}),
        "joint_train_cases": len(joint_cases), "train_seconds": round(trained_record["seconds"], 1),
        "final_loss": trained_record["final_loss"],
        "loss_first_last_10pct": [round(first_loss, 4), round(last_loss, 4)] if first_loss is not None else None,
        "trained_tasks": TRAINED, "held_out": held_out, "router_usage": usage, "pruned_vs_full": pruning,
        "few_shot": few, "evaluation_studies": len(held_eval), "phases": phases,
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    text_out = json.dumps(out, indent=2)
    print(text_out)
    if args.out:
        args.out.write_text(text_out + "\n")


if __name__ == "__main__":
    main()
