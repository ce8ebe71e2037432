"""H2ASeg evidence on phantom data: its Table 2 (ablation) and Table 3 (TAMW weights). Prints (and with ``--out``,
writes) JSON.

1. Sizes: parameters and MACs of the four variants at the paper's patch (64 x 128 x 128 in z, y, x; meta device).
2. Table 2: the same dual-branch ResUNet with channel concatenation (``baseline``), + MCSA only (``mcsa``), + TAMW
   only (``tamw``) and H2ASeg (``full``), each trained with the ``h2aseg`` recipe (Adam 1e-4, wd 1e-5, deep
   supervision 5..1, lesion / random patches 1:1) on the phantom cohort's training split, then run with the
   sliding-window predictor on the val + test studies (``--eval-cases`` per type at most, lesion-positive ones
   first): Dice and HD95 (mm) over lesion-positive studies, overall and per cancer type (``per_type``), precision
   and recall over all studies where defined (the seed's convention), plus training and inference time.
3. Table 3: mean TAMW foreground / background weights of the PET, CT and decoder channels per decoder level for the
   variants with TAMW, on lesion-centred and on random patches of the evaluation studies.

Variants are trained in ``WORK/<variant>`` and reused when their checkpoint is complete, so the variants can be run
in separate calls (``--variants full``) with the same ``--work`` and merged by a last call naming all of them; the
JSON (``--out``) is rewritten after every variant.

GPU run (about 25 minutes on one H100 for the four variants)::

    python benchmarks/bench_h2aseg.py --device cuda --work /tmp/h2a --out h2aseg.json

CPU run (issue 19; about 15 minutes on 2 busy cores with ``--threads 2``)::

    python benchmarks/bench_h2aseg.py --cpu --threads 2 --work /tmp/i19/h2 --out h2aseg-cpu.json

``--cpu``: 48 small phantom studies (seed 0: 33 train / 6 val / 9 test by patient; the cohort of
``bench_mastpro.py --cpu``) resampled to 10 mm isotropic (paper: the autoPET grid, about 2 x 2 x 3 mm), patch
32 x 32 x 32 (32 cm; paper: 64 x 128 x 128), batch 2, widths 4-8-16-32-64 (paper: 8-16-32-64-128), the released
code's MCSA layout (``layout="release"``: MCSA after encoder levels 2 and 3, global BDSA at 4 and 5, window
4 x 8 x 8 — the paper's layout needs multiples of 64 x 128 x 128), 300 iterations per variant at lr 1e-3 (paper:
1e-4; unipet's choice for a short budget), at most 4 evaluation studies per type (val + test, overlap 0.25),
32 patches per Table-3 row.

CPU smoke check (about 40 s on one core, numbers meaningless)::

    python benchmarks/bench_h2aseg.py --tiny --out /tmp/h2aseg-tiny.json
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

VARIANT_NAMES = ("baseline", "mcsa", "tamw", "full")
CPU_KW = {"widths": [4, 8, 16, 32, 64], "layout": "release"}


def phantom_cache(work: Path, n: int, size: str, spacing, workers: int, seed: int = 0):
    """Cache (CT and SUV z-scores, channels CT, PET) of an ``n``-study phantom cohort in ``work`` (reused)."""
    from unipet.data.cache import Cache, build_cache
    from unipet.data.phantom import write_phantom_cohort
    from unipet.io.layouts import import_phantom

    if (work / "cache" / "cache.json").exists():
        return Cache(work / "cache")
    cohort = work / "cohort"
    if not (cohort / "clinical.csv").exists():
        write_phantom_cohort(cohort, n=n, seed=seed, size=size, workers=workers, overwrite=cohort.exists())
    manifest = import_phantom(cohort, split_seed=seed)
    return build_cache(manifest, work / "cache", target_spacing=spacing, workers=workers)


def rounded(rows: list[dict]) -> list[dict]:
    """Rows with their floats rounded to 4 decimals."""
    return [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def mean(values) -> float | None:
    """Mean of the finite values (None when there are none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return round(sum(finite) / len(finite), 4) if finite else None


def summarise(rows: list[dict]) -> dict:
    """The module docstring's metrics over per-study rows of ``evaluate_case``."""
    positive = [r for r in rows if r["positive"]]
    return {"studies": len(rows), "positive_studies": len(positive),
            "dice_positive": mean(r["dice"] for r in positive),
            "hd95_mm_positive": mean(r["hd95_mm"] for r in positive),
            "precision": mean(r["precision"] for r in rows), "recall": mean(r["recall"] for r in rows),
            "fpv_ml": mean(r["fpv_ml"] for r in rows), "fnv_ml": mean(r["fnv_ml"] for r in rows)}


def pick_evaluation(infos: dict, per_type: int | None) -> list[str]:
    """Labelled val + test studies; with ``per_type``, at most that many per cancer type, lesion-positive first."""
    evaluation = [c for c, i in infos.items() if i.get("split") in ("val", "test") and i.get("has_label")]
    if not per_type:
        return evaluation
    chosen = []
    for task in sorted({infos[c]["task"] for c in evaluation}):
        ids = sorted((c for c in evaluation if infos[c]["task"] == task), key=lambda c: not infos[c].get("lesions"))
        chosen += ids[:per_type]
    return chosen


def evaluate_variant(run: Path, cache, case_ids, device, overlap: float) -> dict:
    """Sliding-window prediction of ``case_ids`` and the seed's metrics (see the module docstring)."""
    import numpy as np
    import torch

    from unipet.evaluate.runner import evaluate_case
    from unipet.infer.predictor import Predictor
    from unipet.checkpoint import load_checkpoint

    model, meta = load_checkpoint(run)
    predictor = Predictor(model, meta, device=device or "auto", overlap=overlap)
    rows, seconds = [], []
    for i, cid in enumerate(case_ids):
        case = cache.load(cid)
        image = np.asarray(case.image)
        if i == 0:
            predictor.segment(image)  # warm-up (kernel selection, allocations)
        if predictor.device.type == "cuda":
            torch.cuda.synchronize(predictor.device)
        t0 = time.perf_counter()
        pred = predictor.segment(image) > 0
        if predictor.device.type == "cuda":
            torch.cuda.synchronize(predictor.device)
        seconds.append(time.perf_counter() - t0)
        row, _ = evaluate_case(pred, np.asarray(case.label) > 0, case.info["spacing"])
        rows.append({**row, "task": case.task})
    per_type = {task: summarise([r for r in rows if r["task"] == task]) for task in sorted({r["task"] for r in rows})}
    return {**summarise(rows), "seconds_per_study": mean(seconds), "per_type": per_type}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, help="working folder (cohort, cache, runs); default a temp folder")
    p.add_argument("--out", type=Path, help="write the JSON here too")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--cases", type=int, default=48, help="phantom studies")
    p.add_argument("--size", default="full", help="phantom size (full: 3 x 2 x 2 mm)")
    p.add_argument("--patch", type=int, nargs=3, default=(64, 128, 128), help="patch D H W (z, y, x)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--iterations", type=int, default=3000, help="training steps per variant")
    p.add_argument("--variants", nargs="+", default=list(VARIANT_NAMES), choices=VARIANT_NAMES)
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap")
    p.add_argument("--tamw-patches", type=int, default=64, help="patches averaged for Table 3")
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--model-kw", default="{}", help="JSON builder options shared by the variants")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's 1e-4, the paper's)")
    p.add_argument("--eval-cases", type=int, default=None, help="at most this many evaluation studies per type")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--tiny", action="store_true",
                        help="CPU smoke check: 5 studies at 20 x 10 x 10 mm, tiny model, 2 steps")
    preset.add_argument("--cpu", action="store_true", help="the issue-19 CPU run (see the module docstring)")
    args = p.parse_args()

    import torch

    from unipet.analysis.h2aseg import tamw_report_on_cache
    from unipet.models.h2aseg import PAPER_PATCH, VARIANTS
    from unipet.models.profile import profile_model
    from unipet.train import load_recipe, train
    from unipet.checkpoint import load_checkpoint, read_meta

    if args.threads:
        torch.set_num_threads(args.threads)
    model_kw = json.loads(args.model_kw)
    spacing = None
    if args.tiny:
        args.cases, args.size, args.patch, args.batch, args.iterations = 5, "small", (32, 32, 32), 2, 2
        args.workers, args.device, args.overlap, args.tamw_patches = 0, args.device or "cpu", 0.0, 2
        spacing = (20.0, 10.0, 10.0)
        model_kw = {"widths": [2, 4, 4, 8, 8], "window": [2, 2, 2], "layout": "release", **model_kw}
    elif args.cpu:
        args.cases, args.size, args.patch, args.batch = 48, "small", (32, 32, 32), 2
        args.iterations = 300 if args.iterations == 3000 else args.iterations  # --iterations still applies
        args.workers, args.device, args.overlap, args.tamw_patches = 0, args.device or "cpu", 0.25, 32
        args.lr, args.eval_cases = args.lr or 1e-3, args.eval_cases or 4
        spacing = (10.0, 10.0, 10.0)
        model_kw = {**CPU_KW, **model_kw}
    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-bench-h2aseg-"))
    t_start = time.perf_counter()
    cache = phantom_cache(work, args.cases, args.size, spacing, max(1, args.workers))
    infos = {c: cache.info(c) for c in cache.case_ids}
    evaluation = pick_evaluation(infos, args.eval_cases)
    if args.tiny:  # one lesion-positive study (from the training split if val/test have none)
        order = evaluation + [c for c in infos if c not in evaluation and infos[c].get("has_label")]
        evaluation = sorted(order, key=lambda c: not infos[c].get("lesions"))[:1]
    with_lesions = [c for c in evaluation if infos[c].get("lesions")]

    sizes = {}
    for name in args.variants:
        prof = profile_model("h2aseg", patch=PAPER_PATCH, **VARIANTS[name])
        sizes[name] = {"params_M": round(prof["params"] / 1e6, 3), "macs_G": round(prof["macs"] / 1e9, 1)}
    sizes_run = {"patch": list(args.patch)}
    for name in args.variants:
        prof = profile_model("h2aseg", patch=tuple(args.patch), **{**model_kw, **VARIANTS[name]})
        sizes_run[name] = {"params_M": round(prof["params"] / 1e6, 3), "macs_G": round(prof["macs"] / 1e9, 2)}

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    table2, table3, training = {}, {}, {}
    out = {
        "benchmark": "h2aseg", "tiny": args.tiny, "preset": "tiny" if args.tiny else "cpu" if args.cpu else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cases": len(cache),
        "evaluation_studies": len(evaluation), "phantom_size": args.size, "spacing": spacing,
        "patch": list(args.patch), "batch": args.batch, "iterations": args.iterations, "lr": args.lr or
        load_recipe("h2aseg").lr, "overlap": args.overlap, "model_kw": model_kw,
        "sizes_at_paper_patch": {"patch": list(PAPER_PATCH), **sizes}, "sizes_run_config": sizes_run,
        "training": training, "table2": table2, "table3_tamw_weights": table3,
        "metric_convention": "Dice and HD95 over lesion-positive studies; precision, recall, FPV, FNV over all "
                             "studies where defined",
    }

    def save() -> None:
        out["total_seconds"] = round(time.perf_counter() - t_start, 1)
        if args.out:
            args.out.write_text(json.dumps(out, indent=2) + "\n")

    for name in args.variants:
        run = work / name
        kw = {**model_kw, **VARIANTS[name]}
        done = (run / "checkpoint").exists() and read_meta(run).complete
        if not done:
            recipe = load_recipe("h2aseg", iterations=args.iterations, checkpoint_every=args.iterations, lr=args.lr)
            t0 = time.perf_counter()
            result = train(cache, "h2aseg", run, recipe=recipe, model_kw=kw, device=args.device, progress=False,
                           tensorboard=False, patch_size=tuple(args.patch), batch_size=args.batch,
                           workers=args.workers)
            training[name] = {"seconds": round(time.perf_counter() - t0, 1),
                              "iterations_per_s": round(result.iterations_per_s, 3),
                              "first_loss": round(result.losses[0], 4), "final_loss": round(result.losses[-1], 4),
                              "data_wait_share": round(result.data_wait_share, 3)}
            (run / "bench_training.json").write_text(json.dumps(training[name]))
        elif (run / "bench_training.json").exists():
            training[name] = json.loads((run / "bench_training.json").read_text())
        stored, key = run / "bench_score.json", {"evaluation": evaluation, "overlap": args.overlap,
                                                  "tamw_patches": args.tamw_patches}
        saved = json.loads(stored.read_text()) if stored.exists() else {}
        if saved.get("key") == key:
            table2[name] = saved["table2"]
            if saved.get("table3"):
                table3[name] = saved["table3"]
        else:
            table2[name] = evaluate_variant(run, cache, evaluation, args.device, args.overlap)
            if VARIANTS[name]["tamw"]:
                model, _ = load_checkpoint(run, device=device)
                table3[name] = {kind: rounded(tamw_report_on_cache(model, cache, ids, patches=args.tamw_patches,
                                                                   batch_size=args.batch, mix=mix,
                                                                   patch_size=args.patch))
                                for kind, ids, mix in (("lesion_patches", with_lesions, {"lesion": 1.0}),
                                                       ("random_patches", evaluation, {"random": 1.0})) if ids}
            stored.write_text(json.dumps({"key": key, "table2": table2[name], "table3": table3.get(name)}))
        save()
    save()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
