"""H2ASeg evidence on phantom data: its Table 2 (ablation) and Table 3 (TAMW weights). Prints (and with ``--out``,
writes) JSON.

1. Sizes: parameters and MACs of the four variants at the paper's patch (64 x 128 x 128 in z, y, x; meta device).
2. Table 2: the same dual-branch ResUNet with channel concatenation (``baseline``), + MCSA only (``mcsa``), + TAMW
   only (``tamw``) and H2ASeg (``full``), each trained with the ``h2aseg`` recipe (Adam 1e-4, wd 1e-5, deep
   supervision 5..1) on the phantom cohort's training split, then run with the sliding-window predictor on the
   val + test studies: Dice and HD95 (mm) over lesion-positive studies, precision and recall over all studies
   where defined (the seed's convention), plus training and inference time.
3. Table 3: mean TAMW foreground / background weights of the PET, CT and decoder channels per decoder level for the
   variants with TAMW, on lesion-centred and on random patches of the evaluation studies.

Variants are trained in ``WORK/<variant>`` and reused when their checkpoint is complete, so the variants can be run
in separate calls (``--variants full``) with the same ``--work`` and merged by a last call naming all of them.

GPU run (about 25 minutes on one H100 for the four variants)::

    python benchmarks/bench_h2aseg.py --device cuda --work /tmp/h2a --out h2aseg.json

CPU smoke check (< 2 minutes, numbers meaningless)::

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
        rows.append(row)
    positive = [r for r in rows if r["positive"]]
    return {
        "studies": len(rows), "positive_studies": len(positive),
        "dice_positive": mean(r["dice"] for r in positive), "hd95_mm_positive": mean(r["hd95_mm"] for r in positive),
        "precision": mean(r["precision"] for r in rows), "recall": mean(r["recall"] for r in rows),
        "fpv_ml": mean(r["fpv_ml"] for r in rows), "fnv_ml": mean(r["fnv_ml"] for r in rows),
        "seconds_per_study": mean(seconds),
    }


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
    p.add_argument("--tiny", action="store_true", help="CPU smoke check: 5 studies at 20 x 10 x 10 mm, tiny model, 3 steps")
    args = p.parse_args()

    import torch

    from unipet.analysis.h2aseg import tamw_report_on_cache
    from unipet.models.h2aseg import PAPER_PATCH, VARIANTS
    from unipet.models.profile import profile_model
    from unipet.train import load_recipe, train
    from unipet.checkpoint import load_checkpoint, read_meta

    model_kw = json.loads(args.model_kw)
    spacing = None
    if args.tiny:
        args.cases, args.size, args.patch, args.batch, args.iterations = 5, "small", (32, 32, 32), 2, 3
        args.workers, args.device, args.overlap, args.tamw_patches = 0, args.device or "cpu", 0.0, 4
        spacing = (20.0, 10.0, 10.0)
        model_kw = {"widths": [2, 4, 4, 8, 8], "window": [2, 2, 2], **model_kw}
    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-bench-h2aseg-"))
    t_start = time.perf_counter()
    cache = phantom_cache(work, args.cases, args.size, spacing, max(1, args.workers))
    infos = {c: cache.info(c) for c in cache.case_ids}
    evaluation = [c for c, i in infos.items() if i.get("split") in ("val", "test") and i.get("has_label")]
    if args.tiny:  # one lesion-positive study (from the training split if val/test have none)
        order = evaluation + [c for c in infos if c not in evaluation and infos[c].get("has_label")]
        evaluation = sorted(order, key=lambda c: not infos[c].get("lesions"))[:1]
    with_lesions = [c for c in evaluation if infos[c].get("lesions")]

    sizes = {}
    for name in args.variants:
        prof = profile_model("h2aseg", patch=PAPER_PATCH, **VARIANTS[name])
        sizes[name] = {"params_M": round(prof["params"] / 1e6, 3), "macs_G": round(prof["macs"] / 1e9, 1)}

    table2, table3, training = {}, {}, {}
    for name in args.variants:
        run = work / name
        kw = {**model_kw, **VARIANTS[name]}
        done = (run / "checkpoint").exists() and read_meta(run).complete
        if not done:
            recipe = load_recipe("h2aseg", iterations=args.iterations, checkpoint_every=args.iterations)
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
        table2[name] = evaluate_variant(run, cache, evaluation, args.device, args.overlap)
        if VARIANTS[name]["tamw"]:
            model, _ = load_checkpoint(run, device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
            table3[name] = {kind: rounded(tamw_report_on_cache(model, cache, ids, patches=args.tamw_patches,
                                                               batch_size=args.batch, mix=mix, patch_size=args.patch))
                            for kind, ids, mix in (("lesion_patches", with_lesions, {"lesion": 1.0}),
                                                   ("random_patches", evaluation, {"random": 1.0})) if ids}

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = {
        "benchmark": "h2aseg", "tiny": args.tiny,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "cases": len(cache), "evaluation_studies": len(evaluation),
        "phantom_size": args.size, "spacing": spacing, "patch": list(args.patch), "batch": args.batch,
        "iterations": args.iterations, "model_kw": model_kw,
        "sizes_at_paper_patch": {"patch": list(PAPER_PATCH), **sizes},
        "training": training, "table2": table2, "table3_tamw_weights": table3,
        "metric_convention": "Dice and HD95 over lesion-positive studies; precision, recall, FPV, FNV over all "
                             "studies where defined",
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
