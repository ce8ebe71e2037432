"""Segmentation quality on held-out phantoms: trained checkpoints beside SUV thresholds and the per-lesion oracle.

A held-out phantom cohort (``--seed``, a seed no training cohort uses; every study of it is a test study, so the
split is by patient by construction) is written once into ``--work``. Each checkpoint given (``--checkpoint``,
repeatable; default: the shipped ``dpdnet-small``) predicts it with each study's own task prompt; the baselines of
``unipet.evaluate.baselines`` (SUV >= 2.5, SUV >= 4, PERCIST's liver threshold, the organ-aware threshold, the
41 % / 50 % per-lesion oracle and the best of 30/41/50 % per lesion) are written for the same studies; ``unipet.evaluate`` scores all of them.
Printed (JSON) per cancer type and overall: Dice, IoU, lesion sensitivity for lesions >= 1 mL and < 1 mL, FPV and
FNV (mL per study), and the default-model targets of the quality issue (Dice >= 0.85 x the better oracle and above
the organ-aware threshold on every type, sensitivity >= 0.9 for lesions >= 1 mL, mean FPV <= 3 mL).

``--train MODELS`` first trains the named models on a training cohort (``--train-seed``) under one recipe and
budget (DpDNet's Table-1 comparison at phantom scale) and adds them to the checkpoints.

CPU run of the shipped default (about 10 minutes on 2 cores)::

    python benchmarks/bench_quality.py --work /tmp/q --n 40 --seed 7 --out quality.json

The baselines alone on the default and on the wide phantom spectrum (issue 24: the benchmark must not get
easier)::

    python benchmarks/bench_quality.py --work /tmp/qd --n 40 --seed 7 --no-models --out q_default.json
    python benchmarks/bench_quality.py --work /tmp/qw --n 40 --seed 7 --no-models --spectrum wide --out q_wide.json
    python benchmarks/bench_quality.py --work /tmp/qb --n 40 --seed 7 --no-models --spectrum wide-body --out q_wb.json

CPU smoke check::

    python benchmarks/bench_quality.py --tiny
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

from bench_train import phantom_cache

BASELINE_ORDER = ("suv2.5", "suv4", "percist", "organ-aware", "oracle41", "oracle50", "oracle-best")


def held_out(work: Path, n: int, seed: int, size: str, tiny: bool, spectrum: str = "default",
             tiny_tasks: tuple[str, ...] = ("lymphoma", "lung_cancer")) -> Path:
    """Manifest of a held-out cohort (every study a test study) of the phantom ``spectrum``, written once
    (``tiny``: unipet's smallest synthetic studies of ``tiny_tasks`` in turn)."""
    from unipet.io.layouts import import_phantom
    from unipet.io.manifest import Manifest

    path = work / "heldout.json"
    if path.exists():
        return path
    cohort = work / "heldout"
    if tiny:
        from bench_train import _tiny_cohort

        _tiny_cohort(cohort, n, seed, tiny_tasks)
    else:
        from unipet.data.phantom import write_phantom_cohort

        write_phantom_cohort(cohort, n=n, seed=seed, size=size, workers=2, overwrite=cohort.exists(),
                             spectrum=spectrum)
    manifest = import_phantom(cohort, split_seed=seed)
    for case in manifest:
        case.split = "test"
    Manifest(list(manifest), manifest.task_set, source=manifest.source).save(path, overwrite=True)
    return path


def targets(rows: list[dict]) -> dict:
    """The quality issue's targets for each non-baseline method, from ``comparison_rows`` output."""
    by = {(r["task"], r["method"]): r for r in rows}
    tasks = sorted({r["task"] for r in rows if r["task"] != "overall"})
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m not in BASELINE_ORDER]
    out = {}
    for m in methods:
        per_task = {}
        for t in tasks:
            oracle = max((by.get((t, o), {}).get("dice", math.nan) for o in ("oracle41", "oracle50")),
                         key=lambda v: -1 if math.isnan(v) else v)
            aware = by.get((t, "organ-aware"), {}).get("dice", math.nan)
            dice = by.get((t, m), {}).get("dice", math.nan)
            per_task[t] = {"dice": dice, "oracle": oracle, "ratio_to_oracle": dice / oracle if oracle else math.nan,
                           "meets_0.85_oracle": bool(dice >= 0.85 * oracle), "organ_aware": aware,
                           "beats_organ_aware": bool(dice > aware)}
        overall = by.get(("overall", m), {})
        out[m] = {"tasks": per_task, "sens_ge1": overall.get("sens_ge1"), "meets_sens_0.9": bool(
            overall.get("sens_ge1", 0) >= 0.9), "fpv_ml": overall.get("fpv_ml"),
                  "meets_fpv_3ml": bool(overall.get("fpv_ml", math.inf) <= 3.0)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", type=Path, default=None,
                   help="checkpoint / run folder to score (repeatable; default: the shipped default)")
    p.add_argument("--n", type=int, default=40, help="held-out studies")
    p.add_argument("--seed", type=int, default=7, help="seed of the held-out cohort (not a training seed)")
    p.add_argument("--size", default="small", help="phantom size")
    p.add_argument("--spectrum", default="default", help="phantom spectrum of the held-out cohort: default, "
                   "wide or wide-body (unipet.data.phantom.spectrum)")
    p.add_argument("--no-models", action="store_true", help="score the baselines only (no checkpoint)")
    p.add_argument("--baselines", default=",".join(BASELINE_ORDER))
    p.add_argument("--tta", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--train", default="", help="models to train first, e.g. dpdnet,stunet-s,uniseg,dodnet")
    p.add_argument("--train-cases", type=int, default=160)
    p.add_argument("--train-seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--patch", type=int, nargs=3, default=(48, 64, 64))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--recipe", default="recipes/default_v2.json", help="recipe of --train (name or file)")
    p.add_argument("--model-kw", default="{}", help="JSON builder options of every --train model, e.g. "
                   "'{\"base_width\": 8}'")
    p.add_argument("--train-cache", type=Path, help="an existing training cache (default: a new phantom cohort)")
    p.add_argument("--work", type=Path)
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--tiny", action="store_true", help="CPU smoke check: tiny cohort, models and budget")
    args = p.parse_args()

    from unipet.checkpoint import default_checkpoint
    from unipet.evaluate import EvaluationConfig, evaluate
    from unipet.evaluate.baselines import comparison_rows, evaluate_baselines, parse_methods
    from unipet.infer import Predictor, predict_batch
    from unipet.train import train

    model_kw: dict = json.loads(args.model_kw)
    if args.tiny:
        args.n, args.train_cases, args.iterations, args.patch, args.batch = 6, 8, 4, (16, 32, 32), 2
        args.train = args.train or "dpdnet"
        args.baselines = "suv2.5,suv4,oracle41,oracle50"
        model_kw = {"base_width": 4, "min_feature": 2}
    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-bench-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    manifest = held_out(work, args.n, args.seed, args.size, args.tiny, args.spectrum)
    checkpoints = {c.name: c for c in (args.checkpoint or ([] if args.tiny or args.no_models else
                                                          [default_checkpoint()]))}
    results: dict = {"benchmark": "quality", "heldout": {"n": args.n, "seed": args.seed, "size": args.size,
                                                         "spectrum": args.spectrum},
                     "tta": args.tta, "models": {}, "train": {}}
    if args.train:
        from unipet.data.cache import Cache

        cache = (Cache(args.train_cache) if args.train_cache else
                 phantom_cache(work / "train", args.train_cases, args.size, seed=args.train_seed, tiny=args.tiny))
        for name in args.train.split(","):
            run = work / f"run-{name}"
            t0 = time.perf_counter()
            trained = train(cache, name, run, recipe=args.recipe, model_kw=model_kw, device=args.device,
                            iterations=args.iterations, patch_size=args.patch, batch_size=args.batch, workers=0,
                            resume=(run / "checkpoint").exists(), progress=False)
            results["train"][name] = {"seconds": round(time.perf_counter() - t0, 1), "iterations": args.iterations,
                                      "final_loss": trained.losses[-1] if trained.losses else None}
            checkpoints[name] = run
    summaries = {}
    config = EvaluationConfig(n_boot=1000)
    for name, ckpt in checkpoints.items():
        predictor = Predictor.from_checkpoint(ckpt, device=args.device, tta=args.tta)
        preds = work / f"pred-{name}"
        t0 = time.perf_counter()
        report = predict_batch(predictor, manifest, preds)
        seconds = time.perf_counter() - t0
        summaries[name] = evaluate(preds, manifest, work / f"eval-{name}", config, overwrite=True).summary
        results["models"][name] = {"checkpoint": str(ckpt), "predict_s": round(seconds, 1),
                                   "failed": report.failed}
    methods = parse_methods(args.baselines)
    found = evaluate_baselines(manifest, work / "baselines", methods, config=config, overwrite=True)
    results["baselines_skipped"] = found["skipped"]
    summaries.update({m: found[m] for m in BASELINE_ORDER if m in found})
    rows = comparison_rows(summaries)
    results["rows"] = rows
    results["targets"] = targets(rows)
    text = json.dumps(results, indent=2, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
