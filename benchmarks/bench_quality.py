"""Segmentation quality of DpDNet, STU-Net-S, UniSeg and DoDNet trained under one budget on a phantom cohort.

Every model gets the same recipe, iterations, patch, batch and data (the cohort's train split); each then
predicts the test split with its studies' own task prompts, and ``unipet.evaluate`` scores it: per task Dice,
IoU, FPV, FNV (autoPET, mL) and lesion sensitivity (means with 95 % bootstrap intervals). Prints JSON.

GPU run::

    python benchmarks/bench_quality.py --device cuda --cases 60 --iterations 4000

CPU smoke check::

    python benchmarks/bench_quality.py --tiny
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench_train import phantom_cache

MODELS = ("dpdnet", "stunet-s", "uniseg", "dodnet")
METRICS = ("dice", "iou", "fpv_ml", "fnv_ml", "lesion_sensitivity")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--cases", type=int, default=60, help="phantom studies (split 70/10/20 by patient)")
    p.add_argument("--size", default="small", help="phantom size")
    p.add_argument("--iterations", type=int, default=4000)
    p.add_argument("--patch", type=int, nargs=3, default=(64, 96, 96))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--recipe", default="nnunet", help="one recipe for every model (name or file)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--device", default=None)
    p.add_argument("--tta", action="store_true")
    p.add_argument("--work", type=Path)
    p.add_argument("--tiny", action="store_true", help="CPU smoke check: tiny cohort, models and budget")
    args = p.parse_args()

    from unipet.evaluate import EvaluationConfig, evaluate
    from unipet.infer import Predictor, predict_batch
    from unipet.io.layouts import import_phantom
    from unipet.io.manifest import Manifest
    from unipet.train import train

    model_kw: dict = {}
    if args.tiny:
        args.cases, args.iterations, args.patch, args.batch, args.workers = 10, 8, (16, 32, 32), 2, 0
        args.device, model_kw = args.device or "cpu", {"base_width": 4, "min_feature": 2}
    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-bench-quality-"))
    cache = phantom_cache(work, args.cases, args.size, tiny=args.tiny)
    manifest = import_phantom(work / "cohort")
    test = Manifest([c for c in manifest if c.split == "test"] or list(manifest), manifest.task_set,
                    source=manifest.source)
    test.save(work / "test.json", overwrite=True)
    results: dict = {"benchmark": "quality", "cases": len(manifest), "test_cases": len(test), "recipe": args.recipe,
                     "iterations": args.iterations, "patch": list(args.patch), "batch": args.batch,
                     "tta": args.tta, "models": {}}
    for name in args.models.split(","):
        run = work / f"run-{name}"
        t0 = time.perf_counter()
        trained = train(cache, name, run, recipe=args.recipe, model_kw=model_kw, device=args.device,
                        iterations=args.iterations, patch_size=args.patch, batch_size=args.batch,
                        workers=args.workers, resume=(run / "checkpoint").exists(), progress=False)
        train_s = time.perf_counter() - t0
        predictor = Predictor.from_checkpoint(run, device=args.device or "auto", tta=args.tta)
        preds = work / f"pred-{name}"
        report = predict_batch(predictor, work / "test.json", preds)
        ev = evaluate(preds, work / "test.json", work / f"eval-{name}", EvaluationConfig(n_boot=1000),
                      overwrite=True)

        def pick(entry: dict) -> dict:
            return {m: {k: entry[m][k] for k in ("mean", "lo", "hi", "n")} for m in METRICS}

        results["models"][name] = {
            "train_s": round(train_s, 1), "final_loss": round(trained.losses[-1], 4) if trained.losses else None,
            "failed_predictions": report.failed, "overall": pick(ev.summary["overall"]),
            "tasks": {t: pick(v) for t, v in ev.summary["tasks"].items()},
        }
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
