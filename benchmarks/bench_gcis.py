"""gCIS evidence on phantom data: router usage after joint training, pruned vs full model, few-shot adaptation.
Prints (and with ``--out``, writes) JSON.

1. Joint training (recipe ``gcis``) on the phantom's lesion tasks (four cancer types) and organ / tubular tasks
   (liver, kidney, aorta, ureter; ``unipet.data.organ_tasks``), CT window normalisation (width 1800, level 0),
   with ``iliac_arteries`` held out.
2. Router usage: the arg-max path of every task (and of the held-out prompt) at every decoder level, the router
   probabilities, and how many levels pairs of tasks share within and between the groups lesion / organ / vessel.
3. Pruned vs full: every trained task exported to its single-path model; masks of both on held-out studies
   (voxels that differ), parameters, and latency per study (sliding window, same device).
4. Few-shot: the held-out task from 1 and 5 studies (``unipet adapt``: route the prompt, prune, freeze the encoder)
   against the same single-path network trained from scratch on the same shots; Dice on the task's other studies.

GPU run (about 25 minutes on one H100)::

    python benchmarks/bench_gcis.py --device cuda --out gcis.json

CPU smoke check (< 2 minutes, numbers meaningless)::

    python benchmarks/bench_gcis.py --tiny --out /tmp/gcis-tiny.json
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

TRAINED = ["lung_cancer", "lymphoma", "melanoma", "breast_cancer", "liver", "kidney", "aorta", "ureter"]
HELD_OUT = "iliac_arteries"


def phantom_structures_cache(work: Path, n: int, size: str, spacing, workers: int, seed: int = 0):
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
    manifest = add_organ_tasks(manifest, work / "masks", tasks=["liver", "kidney", "aorta", "ureter", HELD_OUT])
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


def mean_dice(predictor, cache, cases, task: str) -> float:
    """Mean Dice of a predictor on cached cases of ``task``."""
    import numpy as np

    index = predictor.task_index(task)
    scores = [dice(predictor.segment(np.asarray(cache.load(c).image), index) > 0, np.asarray(cache.load(c).label) > 0)
              for c in cases]
    return float(np.mean(scores))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, help="working folder (cohort, cache, runs); default a temp folder")
    p.add_argument("--out", type=Path, help="write the JSON here too")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--cases", type=int, default=40, help="phantom studies")
    p.add_argument("--size", default="small", help="phantom size (small: 5 mm)")
    p.add_argument("--patch", type=int, nargs=3, default=(96, 96, 96), help="patch D H W (multiples of 32)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iterations", type=int, default=6000, help="joint training steps")
    p.add_argument("--adapt-iterations", type=int, default=600, help="few-shot training steps")
    p.add_argument("--shots", type=int, nargs="+", default=(1, 5))
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--model-kw", default="{}", help="JSON builder options (e.g. feature size)")
    p.add_argument("--tiny", action="store_true", help="CPU smoke check: 4 studies at 10 mm, tiny model, few steps")
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
    spacing = None
    if args.tiny:
        args.cases, args.patch, args.batch, args.iterations, args.adapt_iterations = 5, (32, 32, 32), 1, 3, 1
        args.shots, args.workers, args.device, spacing = (1, 2), 0, args.device or "cpu", (10.0, 10.0, 10.0)
        model_kw = {"feature_size": 6, "num_heads": [1, 2, 2, 4], "window_size": 4,
                    "decoder_widths": [4, 4, 8, 8, 16], "text_encoder": "hash", "router_hidden": 16, **model_kw}
    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-bench-gcis-"))
    t_start = time.perf_counter()
    cache = phantom_structures_cache(work, args.cases, args.size, spacing, max(1, args.workers))
    infos = {c: cache.info(c) for c in cache.case_ids}
    train_ids = [c for c, i in infos.items() if i.get("split") == "train"]
    joint_cases = [c for c in train_ids if infos[c]["task"] in TRAINED]
    sizes = {"patch_size": tuple(args.patch), "batch_size": args.batch, "workers": args.workers}

    # 1. joint training
    joint = work / "joint"
    recipe = load_recipe("gcis", iterations=args.iterations, cases=joint_cases, checkpoint_every=args.iterations,
                         warmup_iterations=max(1, args.iterations // 20))
    t0 = time.perf_counter()
    result = train(cache, "gcis", joint, recipe=recipe, model_kw=model_kw, device=args.device, progress=False,
                   tensorboard=False, **sizes)
    train_s = time.perf_counter() - t0
    full, meta = load_checkpoint(joint, device=result.model.text_embedding.device)

    # 2. router usage
    names = full.task_set.names
    rows = [names.index(t) for t in TRAINED]
    text = full.text_embedding[rows]
    kw = meta.model_kwargs
    held_text = encode_texts([full.task_set[HELD_OUT].description], kw.get("text_encoder", "minilm"),
                             int(kw.get("text_dim", 384))).to(text.device)
    modules = list(full.pathways)
    table = route_table(modules, torch.cat((text, held_text)))
    probs = route_probabilities(modules, torch.cat((text, held_text)))
    labels = TRAINED + [f"{HELD_OUT} (held out)"]
    kinds = [full.task_set[t].kind for t in TRAINED]
    usage = {
        "levels": ["1/16", "1/8", "1/4", "1/2", "1/1"],
        "routes": {label: table[i].tolist() for i, label in enumerate(labels)},
        "probabilities": {label: [[round(v, 3) for v in lvl] for lvl in probs[i].tolist()]
                          for i, label in enumerate(labels)},
        "sharing": path_sharing(table[: len(TRAINED)], groups=kinds), "groups": dict(zip(TRAINED, kinds)),
    }

    # 3. pruned vs full on held-out studies (each predictor warmed up on one study first, then timed)
    evaluation = [c for c, i in infos.items() if i.get("split") in ("val", "test") and i.get("has_label")]
    full_pred = Predictor(full, meta, device=args.device or "auto")
    pruning = {}
    compared = [t for t in TRAINED if any(infos[c]["task"] == t for c in evaluation)][: 2 if args.tiny else None]
    for task in compared:
        cases = [c for c in evaluation if infos[c]["task"] == task][: 1 if args.tiny else 3]
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
                t0 = time.perf_counter()
                masks[name] = predictor.segment(image, index)
                sync(predictor.device)
                stats[f"seconds_{name}"].append(time.perf_counter() - t0)
                stats[f"dice_{name}"].append(dice(masks[name] > 0, ref))
            stats["differing_voxels"] += int((masks["full"] != masks["pruned"]).sum())
        pruning[task] = {"route": record["route"], "params_full_M": round(record["params_full"] / 1e6, 3),
                         "params_pruned_M": round(record["params_pruned"] / 1e6, 3), "studies": len(cases),
                         **{k: v if k == "differing_voxels" else round(float(np.mean(v)), 4) for k, v in stats.items()}}

    # 4. few-shot on the held-out task
    held_eval = [c for c in evaluation if infos[c]["task"] == HELD_OUT]
    few = {}
    for shots in args.shots:
        entry = {}
        for mode in ("adapted", "scratch"):
            run = work / f"fewshot-{shots}-{mode}"
            res = adapt(joint, cache, run, task=HELD_OUT, shots=shots, iterations=args.adapt_iterations,
                        from_scratch=mode == "scratch", device=args.device, **sizes)
            model, rmeta = load_checkpoint(run, device=full_pred.device)
            score = mean_dice(Predictor(model, rmeta, device=args.device or "auto"), cache, held_eval, HELD_OUT)
            entry[mode] = {"dice": round(score, 4), "route": res["route"], "trainable_M": round(res["trainable_params"] / 1e6, 3),
                           "frozen_M": round(res["frozen_params"] / 1e6, 3)}
        few[f"{shots}-shot"] = entry

    device = full_pred.device
    out = {
        "benchmark": "gcis", "tiny": args.tiny, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or "cpu", "torch": torch.__version__, "cases": len(cache),
        "model_kw": model_kw, "patch": list(args.patch), "iterations": args.iterations, "train_seconds": round(train_s, 1),
        "final_loss": round(result.losses[-1], 4), "trained_tasks": TRAINED, "held_out": HELD_OUT,
        "router_usage": usage, "pruned_vs_full": pruning, "few_shot": few, "evaluation_studies": len(held_eval),
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    text_out = json.dumps(out, indent=2)
    print(text_out)
    if args.out:
        args.out.write_text(text_out + "\n")


if __name__ == "__main__":
    main()
