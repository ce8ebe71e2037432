"""MAST-Pro evidence (issue 6). Prints (and with ``--out`` writes) one JSON document with:

- ``parameters``: total and trainable parameters for full and PEFT training at the paper configuration
  (Swin UNETR-48 backbone, 8 generic + 4 per-task rank-16 experts in every Swin block, top-4 routing), for the
  4 phantom types and for the 10 shipped PET/CT tumour types, next to Swin UNETR and the paper's figures;
- ``memory``: peak training memory of full fine-tuning and of PEFT (each in a fresh process):
  ``torch.cuda.max_memory_allocated`` on a GPU; on the CPU the peak resident set size during training
  (``VmHWM`` of ``/proc/self/status``, reset through ``/proc/self/clear_refs`` just before training; it
  includes the interpreter and libraries, so ``rss_before_train_gib`` is given too. ``ru_maxrss`` is not
  used: Linux carries it over from the parent process into a child);
- ``dice``: per-task Dice (studies with lesions of the evaluation split), one training budget for every
  model: Swin UNETR without prompts, MAST-Pro full, and MAST-Pro PEFT started from a backbone pre-trained
  (same budget, full) on the phantom types other than ``--targets`` only;
- ``ablation``: no prompts / anatomy only / text only / D-MoE only / all (MAST-Pro full);
- ``rare``: the rare-type case: ``--rare`` keeps at most ``--rare-train`` training studies; MAST-Pro and Swin UNETR.

GPU run (about 10 trainings of ``--iterations`` steps at 96^3, batch 2, bf16; a phantom cohort of ``--cases``)::

    python benchmarks/bench_mastpro.py --device cuda --out mastpro.json --work /data/bench-mastpro

CPU smoke check (tiny phantom cohort, model, patch and budget; < 2 minutes)::

    python benchmarks/bench_mastpro.py --tiny --out mastpro-tiny.json

Runs are kept in ``--work``/runs and reused (resumed) when the script is run again.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAPER = {"trainable_peft": 21_040_000, "reduction_pct": 91.04}
ABLATIONS = {
    "no_prompts": {"use_text": False, "use_anatomy": False, "use_moe": False},
    "anatomy_only": {"use_text": False, "use_anatomy": True, "use_moe": False},
    "text_only": {"use_text": True, "use_anatomy": False, "use_moe": False},
    "dmoe_only": {"use_text": False, "use_anatomy": False, "use_moe": True},
}
TINY_KW = {"feature_size": 12, "depths": [1, 1, 1, 1], "window_size": 4, "attention_heads": 4,
           "anatomy_widths": [4, 8, 8], "expert_rank": 2, "generic_experts": 4, "task_experts": 2,
           "top_k_general": 2, "top_k_task": 2, "proposal_hidden": 16, "text_encoder": "hash"}
TINY_SWIN = {"feature_size": 12, "depths": [1, 1, 1, 1], "window_size": 4}


def subset_cache(root: Path, train_ids: list[str]):
    """The cache at ``root`` whose ``"train"`` split is ``train_ids`` (other splits unchanged)."""
    from unipet.data.cache import Cache

    class TrainSubset(Cache):
        def split(self, name):
            return list(train_ids) if name == "train" else super().split(name)

    return TrainSubset(root)


def phantom_cache(work: Path, n: int, size: str, spacing, seed: int, workers: int):
    """Phantom cohort (``write_phantom_cohort``) -> manifest (``import_phantom``) -> cache, reused when present."""
    from unipet.data.cache import Cache, build_cache
    from unipet.data.phantom import write_phantom_cohort
    from unipet.io.layouts import import_phantom

    if (work / "cache" / "cache.json").exists():
        return Cache(work / "cache")
    cohort = work / "cohort"
    if not (cohort / "clinical.csv").exists():
        write_phantom_cohort(cohort, n=n, seed=seed, size=size, workers=workers, overwrite=cohort.exists())
    return build_cache(import_phantom(cohort, split_seed=seed), work / "cache", target_spacing=spacing,
                       workers=workers)


def parameter_table() -> dict:
    """Parameters at the paper configuration (text embeddings 384-d: the hash encoder has MiniLM's size)."""
    import torch

    from unipet.models import create
    from unipet.analysis.mastpro import parameter_report

    rows = {}
    with torch.device("cpu"):
        for tasks in ("default", "pet_tumours"):
            model = create("mastpro", tasks=tasks, patch_size=(96, 96, 96), text_encoder="hash")
            rows[f"mastpro/{tasks}"] = {"tasks": len(model.task_set), **parameter_report(model)}
            del model
        swin = create("swinunetr", patch_size=(96, 96, 96))
        rows["swinunetr"] = {"total": sum(p.numel() for p in swin.parameters())}
    rows["paper"] = PAPER
    return rows


def memory_probe(args, trainable: str) -> dict:
    """Peak training memory of ``trainable`` ("all" or "peft"), measured in a fresh process."""
    spec = {"cache": str(args.work / "cache"), "trainable": trainable, "iterations": args.mem_iterations,
            "patch": list(args.patch), "batch": args.batch, "device": args.device, "amp": args.amp,
            "model_kw": args.model_kw, "run": str(args.work / "memory" / f"{trainable}-{time.time_ns()}")}
    out = subprocess.run([sys.executable, __file__, "--probe", json.dumps(spec)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe ({trainable}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _probe(spec: dict) -> None:
    """Child process of ``memory_probe``: train a few steps, print the peak memory as one JSON line."""
    import torch

    from unipet.data.cache import Cache
    from unipet.train import load_recipe, train

    before = _reset_peak_rss()
    recipe = load_recipe("mastpro", iterations=spec["iterations"], patch_size=tuple(spec["patch"]),
                         batch_size=spec["batch"], workers=0, checkpoint_every=10 ** 9, amp=spec["amp"],
                         trainable=spec["trainable"], warmup_iterations=0)
    result = train(Cache(spec["cache"]), "mastpro", spec["run"], recipe=recipe, model_kw=spec["model_kw"],
                   device=spec["device"], progress=False, tensorboard=False)
    model = result.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    row = {"trainable": spec["trainable"], "trainable_params": trainable, "iterations": spec["iterations"]}
    if next(model.parameters()).device.type == "cuda":
        row.update(measure="torch.cuda.max_memory_allocated", peak_gib=round(torch.cuda.max_memory_allocated() / 2 ** 30, 3))
    else:
        row.update(measure="peak RSS during training (VmHWM, /proc/self/status)",
                   peak_gib=round(_status_kib("VmHWM") / 2 ** 20, 3), rss_before_train_gib=round(before / 2 ** 20, 3))
    print(json.dumps(row))


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field in KiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}; the CPU memory probe needs Linux")


def _reset_peak_rss() -> int:
    """Reset the process's peak RSS (``VmHWM``) to its current RSS (Linux >= 4.0); returns that RSS in KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def evaluate(run: Path, cache, ids: list[str], device: str, overlap: float) -> dict:
    """Mean Dice per task over the studies with lesions among ``ids`` (sliding window, no TTA)."""
    import numpy as np

    from unipet.infer import Predictor

    predictor = Predictor.from_checkpoint(run, device=device, overlap=overlap, tile_batch=2)
    scores: dict[str, list[float]] = {}
    for cid in ids:
        case = cache.load(cid, mmap=True)
        ref = np.asarray(case.label) > 0
        if case.label is None or not ref.any():
            continue
        organs = None if case.organs is None else np.asarray(case.organs)
        pred = predictor.segment(np.asarray(case.image), predictor.task_index(case.task), organs) > 0
        scores.setdefault(case.task, []).append(float(2.0 * (pred & ref).sum() / (pred.sum() + ref.sum())))
    per_task = {k: round(float(np.mean(v)), 4) for k, v in sorted(scores.items())}
    return {"per_task": per_task, "studies": {k: len(v) for k, v in sorted(scores.items())},
            "mean": round(float(np.mean(list(per_task.values()))), 4) if per_task else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, help="folder for cohort, cache and runs (default: a temp folder)")
    p.add_argument("--out", type=Path, help="write the JSON here as well")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--tiny", action="store_true", help="CPU smoke check: tiny cohort, model, patch and budget")
    p.add_argument("--cases", type=int, default=80, help="phantom studies")
    p.add_argument("--size", default="small", help="phantom size (small, full, autopet)")
    p.add_argument("--spacing", type=float, nargs=3, default=None, help="cache target spacing z y x (mm)")
    p.add_argument("--patch", type=int, nargs=3, default=(96, 96, 96))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--amp", default="bf16", choices=("bf16", "fp16", "none"))
    p.add_argument("--iterations", type=int, default=2000, help="training budget of every model")
    p.add_argument("--mem-iterations", type=int, default=10, help="steps of each memory probe")
    p.add_argument("--targets", default="melanoma,breast_cancer", help="types left out of the PEFT pre-training")
    p.add_argument("--rare", default="melanoma", help="the rare type")
    p.add_argument("--rare-train", type=int, default=10, help="training studies kept for the rare type")
    p.add_argument("--eval-split", default="test")
    p.add_argument("--eval-cases", type=int, default=None, help="at most this many evaluation studies per type")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--workers", type=int, default=8, help="data-loader processes")
    p.add_argument("--parts", default="parameters,memory,dice,ablation,rare")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.probe:
        _probe(json.loads(args.probe))
        return

    import torch

    from unipet.train import load_recipe, train

    args.model_kw, swin_kw = {}, {}
    if args.tiny:
        args.cases, args.spacing, args.patch, args.batch, args.amp = 8, (20.0, 20.0, 20.0), (32, 32, 64), 1, "none"
        args.iterations, args.mem_iterations, args.workers, args.overlap = 1, 1, 0, 0.25
        args.eval_split, args.eval_cases, args.rare_train = None, 1, 1
        args.device = args.device or "cpu"
        args.model_kw, swin_kw = dict(TINY_KW), dict(TINY_SWIN)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.work = args.work or Path(tempfile.mkdtemp(prefix="unipet-bench-mastpro-"))
    parts = set(args.parts.split(","))
    t_start = time.perf_counter()
    cache = phantom_cache(args.work, args.cases, args.size, args.spacing, args.seed, max(1, min(args.workers, 8)))
    train_ids = cache.split("train")
    task_of = {cid: cache.info(cid)["task"] for cid in cache.case_ids}
    eval_ids: list[str] = []
    for task in sorted(set(task_of.values())):
        ids = [c for c in cache.split(args.eval_split) if task_of[c] == task and cache.info(c).get("lesions")]
        eval_ids += ids[: args.eval_cases] if args.eval_cases else ids
    recipe = load_recipe("mastpro", iterations=args.iterations, patch_size=tuple(args.patch), batch_size=args.batch,
                         workers=args.workers, checkpoint_every=max(1, args.iterations), amp=args.amp,
                         warmup_iterations=max(0, args.iterations // 20))

    def run(name: str, model: str, train_subset: list[str], kw: dict, trainable: str = "all", init=None) -> Path:
        folder = args.work / "runs" / name
        resume = (folder / "checkpoint").exists()
        t0 = time.perf_counter()
        train(subset_cache(cache.root, train_subset), model, folder, recipe=recipe.with_overrides(trainable=trainable),
              model_kw=kw, device=args.device, progress=False, tensorboard=False, init_from=None if resume else init,
              resume=resume)
        timings["training"] = round(timings.get("training", 0.0) + time.perf_counter() - t0, 1)
        return folder

    def score(folder: Path) -> dict:
        t0 = time.perf_counter()
        result = evaluate(folder, cache, eval_ids, args.device, args.overlap)
        timings["evaluation"] = round(timings.get("evaluation", 0.0) + time.perf_counter() - t0, 1)
        return result

    out: dict = {"benchmark": "mastpro", "tiny": args.tiny, "device": args.device,
                 "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
                 "torch": torch.__version__,
                 "config": {"cases": len(cache), "train": len(train_ids), "eval_studies": len(eval_ids),
                            "patch": list(args.patch), "batch": args.batch, "amp": args.amp,
                            "iterations": args.iterations, "model_kw": args.model_kw, "targets": args.targets,
                            "rare": args.rare, "rare_train": args.rare_train, "work": str(args.work)}}
    timings = out["timings_s"] = {"data": round(time.perf_counter() - t_start, 1)}
    if "parameters" in parts:
        t0 = time.perf_counter()
        out["parameters"] = parameter_table()
        timings["parameters"] = round(time.perf_counter() - t0, 1)
    if "memory" in parts:
        t0 = time.perf_counter()
        out["memory"] = {"full": memory_probe(args, "all"), "peft": memory_probe(args, "peft")}
        timings["memory"] = round(time.perf_counter() - t0, 1)
    mastpro_full = None
    if "dice" in parts or "ablation" in parts:
        mastpro_full = run("mastpro-full", "mastpro", train_ids, args.model_kw)
    if "dice" in parts:
        targets = set(args.targets.split(","))
        source = [c for c in train_ids if task_of[c] not in targets]
        pretrain = run("mastpro-pretrain-source", "mastpro", source, args.model_kw)
        out["dice"] = {
            "swinunetr": score(run("swinunetr", "swinunetr", train_ids, swin_kw)),
            "mastpro_full": score(mastpro_full),
            "mastpro_peft": score(run("mastpro-peft", "mastpro", train_ids, args.model_kw, "peft", pretrain)),
            "peft_pretrained_on": sorted({task_of[c] for c in source}),
        }
    if "ablation" in parts:
        out["ablation"] = {name: score(run(f"ablation-{name}", "mastpro", train_ids, {**args.model_kw, **kw}))
                           for name, kw in ABLATIONS.items()}
        out["ablation"]["all"] = out.get("dice", {}).get("mastpro_full") or score(mastpro_full)
    if "rare" in parts:
        rare_ids = [c for c in train_ids if task_of[c] == args.rare][: args.rare_train]
        subset = [c for c in train_ids if task_of[c] != args.rare] + rare_ids
        out["rare"] = {"type": args.rare, "train_studies": len(rare_ids),
                       "mastpro": score(run("rare-mastpro", "mastpro", subset, args.model_kw)),
                       "swinunetr": score(run("rare-swinunetr", "swinunetr", subset, swin_kw))}
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    text = json.dumps(out, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
