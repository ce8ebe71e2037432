"""MAST-Pro evidence (issues 6 and 19). Prints (and with ``--out`` writes, after every part) one JSON document with:

- ``parameters``: total and trainable parameters for full and PEFT training at the paper configuration
  (Swin UNETR-48 backbone, 8 generic + 4 per-task rank-16 experts in every Swin block, top-4 routing), for the
  4 phantom types and for the 10 shipped PET/CT tumour types, next to Swin UNETR and the paper's figures, and for
  the configuration this run trains (``run_config``);
- ``memory``: peak training memory of full fine-tuning and of PEFT (each in a fresh process, same patch and batch):
  ``torch.cuda.max_memory_allocated`` on a GPU; on the CPU the peak resident set size during training
  (``VmHWM`` of ``/proc/self/status``, reset through ``/proc/self/clear_refs`` just before training; it
  includes the interpreter and libraries, so ``rss_before_train_gib`` is given too. ``ru_maxrss`` is not
  used: Linux carries it over from the parent process into a child);
- ``dice``: the paper's transfer setting. A MAST-Pro is pre-trained (all parameters, ``--pretrain-iterations``) on
  the phantom types other than ``--targets`` only; from that checkpoint, full fine-tuning (every parameter) and
  PEFT (experts, routers and heads only) are each trained for ``--iterations`` on every type; per-type Dice over
  the lesion-positive evaluation studies, trainable parameters and training seconds of each;
- ``usage``: expert usage per route (each task, on its own studies) of both fine-tuned models and, as a reference,
  of the pre-trained model (its target types' routers are still at their initialisation), measured during the
  evaluation passes (``unipet.models.mastpro.usage_report``): share of the generic experts, of the task's own
  experts, the number of active experts, and ``generic_overlap`` between every pair of tasks (mean over D-MoE
  layers of ``sum_i min(p_a(i), p_b(i))`` over the generic experts' normalised shares: 1 = the two tasks use the
  generic experts identically, 0 = disjointly) — do tasks specialise?;
- ``rare``: the rare type ``--rare`` keeps at most ``--rare-train`` training studies; MAST-Pro (full fine-tuning)
  and Swin UNETR without prompts (its backbone copied by name from the same pre-trained checkpoint), same budget;
- ``ablation``: no prompts / anatomy only / text only / D-MoE only, each built without the other components,
  started from the same pre-trained checkpoint (tensors copied by name where they exist) and fine-tuned like the
  full model; ``all`` is the full fine-tuning row of ``dice``.

The parts run in that order (``--parts``), so a shorter budget still yields the most important tables.

Settings and their sources: recipe ``mastpro`` (AdamW, cosine, weight decay 1e-5, grad clip 1, the paper's
augmentation; paper / unipet's reading of it); ``--lr`` (default the recipe's 5e-5, the paper's) and the
warm-up (5 % of the iterations instead of the recipe's 12,500) are unipet's choices for short budgets. The text
prompts use ``--text-encoder`` (``hash`` in ``--cpu`` and ``--tiny``: deterministic 384-d codes of the knowledge
sentences without MiniLM's semantics — no download on a machine without the weights).

GPU run (about 10 trainings of ``--iterations`` steps at 96^3, batch 2, bf16; a phantom cohort of ``--cases``)::

    python benchmarks/bench_mastpro.py --device cuda --out mastpro.json --work /data/bench-mastpro

CPU run (issue 19; about 20-25 minutes on 2 shared cores)::

    python benchmarks/bench_mastpro.py --cpu --threads 2 --work /tmp/i19/mp --out mastpro-cpu.json

``--cpu`` is 48 small phantom studies (5 mm, seed 0: 33 train / 6 val / 9 test by patient), patch 32 x 64 x 64,
batch 2, float32, Swin UNETR-12 (depths 2-2-2-2, window 4; the paper: 48, window 7), 8 generic + 4 per-task
rank-4 experts, top-4 (unipet's defaults: rank 16), prompt-attention 4 heads, anatomy widths 8-16-32, proposal
MLP 64; pre-training 300 iterations, every fine-tuning 150, lr 5e-4, 3 melanoma training studies for the rare
type, evaluation on at most 3 lesion-positive val + test studies per type (sliding window, overlap 0.25).

CPU smoke check (tiny phantom cohort, model, patch and budget; about a minute on one core)::

    python benchmarks/bench_mastpro.py --tiny --out mastpro-tiny.json

Runs are kept in ``--work``/runs (with their scores) and reused or resumed when the script is run again.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from itertools import combinations
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
CPU_KW = {"feature_size": 12, "depths": [2, 2, 2, 2], "window_size": 4, "attention_heads": 4,
          "anatomy_widths": [8, 16, 32], "expert_rank": 4, "generic_experts": 8, "task_experts": 4,
          "top_k_general": 4, "top_k_task": 4, "proposal_hidden": 64, "text_encoder": "hash"}
CPU_SWIN = {"feature_size": 12, "depths": [2, 2, 2, 2], "window_size": 4}
SWIN_KEYS = ("feature_size", "depths", "num_heads", "window_size")
PRESETS = {
    "tiny": dict(cases=8, spacing=(20.0, 20.0, 20.0), patch=(32, 32, 64), batch=1, amp="none", iterations=1,
                 pretrain_iterations=1, mem_iterations=1, workers=0, overlap=0.0, eval_split="all", eval_cases=1,
                 rare_train=1, lr=None),
    "cpu": dict(cases=48, size="small", spacing=None, patch=(32, 64, 64), batch=2, amp="none", iterations=150,
                pretrain_iterations=300, mem_iterations=3, workers=0, overlap=0.25, eval_split="val,test",
                eval_cases=3, rare_train=3, lr=5e-4),
}


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


def count_parameters(tasks, patch, **kw) -> dict:
    """``parameter_report`` of a MAST-Pro built on the CPU (MONAI's Swin UNETR cannot be built on the meta device)."""
    from unipet.models import create
    from unipet.analysis.mastpro import parameter_report

    model = create("mastpro", tasks=tasks, patch_size=patch, **kw)
    return {"tasks": len(model.task_set), **parameter_report(model)}


def parameter_table(run_kw: dict, run_patch) -> dict:
    """Parameters at the paper configuration (text embeddings 384-d: the hash encoder has MiniLM's size) and at
    the configuration this run trains."""
    from unipet.models import create

    rows = {f"mastpro/{tasks}": count_parameters(tasks, (96, 96, 96), text_encoder="hash")
            for tasks in ("default", "pet_tumours")}
    swin = create("swinunetr", patch_size=(96, 96, 96))
    rows["swinunetr"] = {"total": sum(p.numel() for p in swin.parameters())}
    rows["run_config"] = count_parameters("default", tuple(run_patch), **run_kw)
    rows["paper"] = PAPER
    return rows


def memory_probe(args, trainable: str) -> dict:
    """Peak training memory of ``trainable`` ("all" or "peft"), measured in a fresh process."""
    spec = {"cache": str(args.work / "cache"), "trainable": trainable, "iterations": args.mem_iterations,
            "patch": list(args.patch), "batch": args.batch, "device": args.device, "amp": args.amp,
            "model_kw": args.model_kw, "threads": args.threads,
            "run": str(args.work / "memory" / f"{trainable}-{time.time_ns()}")}
    out = subprocess.run([sys.executable, __file__, "--probe", json.dumps(spec)], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe ({trainable}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _probe(spec: dict) -> None:
    """Child process of ``memory_probe``: train a few steps, print the peak memory as one JSON line."""
    import torch

    from unipet.data.cache import Cache
    from unipet.train import load_recipe, train

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
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
        row.update(measure="torch.cuda.max_memory_allocated",
                   peak_gib=round(torch.cuda.max_memory_allocated() / 2 ** 30, 3))
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


def usage_summary(report: dict) -> dict:
    """Per-route summary of ``usage_report`` plus ``generic_overlap`` of every pair of task routes (see the module
    docstring)."""
    tasks = [r for r in report["routes"] if r != "general"]
    g = report["generic_experts"]
    overlap = {}
    for a, b in combinations(tasks, 2):
        values = []
        for layer in report["layers"]:
            ra, rb = layer["routes"].get(a), layer["routes"].get(b)
            if ra is None or rb is None:
                continue
            pa, pb = ra["share"][:g], rb["share"][:g]
            sa, sb = sum(pa), sum(pb)
            if sa > 0 and sb > 0:
                values.append(sum(min(x / sa, y / sb) for x, y in zip(pa, pb)))
        if values:
            overlap[f"{a}|{b}"] = round(sum(values) / len(values), 4)
    routes = {name: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
              for name, row in report["routes"].items()}
    return {"generic_experts": g, "task_experts": report["task_experts"], "routes": routes,
            "generic_overlap": overlap}


def evaluate(run: Path, cache, ids: list[str], device: str, overlap: float, usage: bool = False) -> dict:
    """Mean Dice per task over the studies with lesions among ``ids`` (sliding window, no TTA); with ``usage``
    also the expert usage of those passes (each study routed by its own task)."""
    import numpy as np

    from unipet.infer import Predictor
    from unipet.analysis.mastpro import start_usage, usage_report

    predictor = Predictor.from_checkpoint(run, device=device, overlap=overlap, tile_batch=2)
    if usage:
        start_usage(predictor.model)
    scores: dict[str, list[float]] = {}
    for cid in ids:
        case = cache.load(cid, mmap=True)
        if case.label is None:
            continue
        ref = np.asarray(case.label) > 0
        if not ref.any():
            continue
        organs = None if case.organs is None else np.asarray(case.organs)
        pred = predictor.segment(np.asarray(case.image), predictor.task_index(case.task), organs) > 0
        scores.setdefault(case.task, []).append(float(2.0 * (pred & ref).sum() / (pred.sum() + ref.sum())))
    per_task = {k: round(float(np.mean(v)), 4) for k, v in sorted(scores.items())}
    out = {"per_task": per_task, "studies": {k: len(v) for k, v in sorted(scores.items())},
           "mean": round(float(np.mean(list(per_task.values()))), 4) if per_task else None}
    if usage:
        out["usage"] = usage_summary(usage_report(predictor.model, predictor.task_set.names))
    return out


def apply_preset(args, name: str) -> None:
    """Set the options of preset ``name`` (``PRESETS``) that the user left at their defaults."""
    for key, value in PRESETS[name].items():
        if getattr(args, key) == DEFAULTS[key]:
            setattr(args, key, value)


DEFAULTS = {"cases": 80, "size": "small", "spacing": None, "patch": (96, 96, 96), "batch": 2, "amp": "bf16",
            "iterations": 2000, "pretrain_iterations": None, "mem_iterations": 10, "workers": 8, "overlap": 0.5,
            "eval_split": "test", "eval_cases": None, "rare_train": 10, "lr": None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, help="folder for cohort, cache and runs (default: a temp folder)")
    p.add_argument("--out", type=Path, help="write the JSON here as well (rewritten after every part)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--tiny", action="store_true", help="CPU smoke check: tiny cohort, model, patch and budget")
    preset.add_argument("--cpu", action="store_true", help="the issue-19 CPU run (see the module docstring)")
    p.add_argument("--cases", type=int, default=DEFAULTS["cases"], help="phantom studies")
    p.add_argument("--size", default=DEFAULTS["size"], help="phantom size (small, full, autopet)")
    p.add_argument("--spacing", type=float, nargs=3, default=None, help="cache target spacing z y x (mm)")
    p.add_argument("--patch", type=int, nargs=3, default=DEFAULTS["patch"])
    p.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    p.add_argument("--amp", default=DEFAULTS["amp"], choices=("bf16", "fp16", "none"))
    p.add_argument("--iterations", type=int, default=DEFAULTS["iterations"], help="budget of every fine-tuning")
    p.add_argument("--pretrain-iterations", type=int, default=None, help="budget of the pre-training "
                   "(default: --iterations)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's 5e-5)")
    p.add_argument("--mem-iterations", type=int, default=DEFAULTS["mem_iterations"], help="steps of each memory probe")
    p.add_argument("--targets", default="melanoma,breast_cancer", help="types left out of the pre-training")
    p.add_argument("--rare", default="melanoma", help="the rare type")
    p.add_argument("--rare-train", type=int, default=DEFAULTS["rare_train"],
                   help="training studies kept for the rare type")
    p.add_argument("--eval-split", default=DEFAULTS["eval_split"], help="comma-separated splits, or 'all'")
    p.add_argument("--eval-cases", type=int, default=None, help="at most this many evaluation studies per type")
    p.add_argument("--overlap", type=float, default=DEFAULTS["overlap"])
    p.add_argument("--workers", type=int, default=DEFAULTS["workers"], help="data-loader processes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--text-encoder", default=None, help="minilm or hash (default: minilm; hash with --cpu/--tiny)")
    p.add_argument("--parts", default="parameters,memory,dice,usage,rare,ablation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.probe:
        _probe(json.loads(args.probe))
        return

    import torch

    from unipet.train import load_recipe, train
    from unipet.checkpoint import read_meta

    if args.threads:
        torch.set_num_threads(args.threads)
    args.model_kw, swin_kw = {}, {}
    if args.tiny or args.cpu:
        apply_preset(args, "tiny" if args.tiny else "cpu")
        args.device = args.device or "cpu"
        args.model_kw, swin_kw = (dict(TINY_KW), dict(TINY_SWIN)) if args.tiny else (dict(CPU_KW), dict(CPU_SWIN))
    if args.text_encoder:
        args.model_kw["text_encoder"] = args.text_encoder
    args.pretrain_iterations = args.pretrain_iterations or args.iterations
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.work = args.work or Path(tempfile.mkdtemp(prefix="unipet-bench-mastpro-"))
    parts = set(args.parts.split(","))
    t_start = time.perf_counter()
    cache = phantom_cache(args.work, args.cases, args.size, args.spacing, args.seed, max(1, min(args.workers, 8)))
    train_ids = cache.split("train")
    task_of = {cid: cache.info(cid)["task"] for cid in cache.case_ids}
    splits = None if args.eval_split == "all" else set(args.eval_split.split(","))
    eval_ids: list[str] = []
    for task in sorted(set(task_of.values())):
        ids = [c for c in cache.case_ids if task_of[c] == task and cache.info(c).get("lesions")
               and (splits is None or cache.info(c).get("split") in splits)]
        eval_ids += ids[: args.eval_cases] if args.eval_cases else ids
    targets = set(args.targets.split(","))
    source = [c for c in train_ids if task_of[c] not in targets]
    recipe = load_recipe("mastpro", iterations=args.iterations, patch_size=tuple(args.patch), batch_size=args.batch,
                         workers=args.workers, checkpoint_every=max(1, args.iterations), amp=args.amp, lr=args.lr,
                         warmup_iterations=max(0, args.iterations // 20))

    def run(name: str, model: str, train_subset: list[str], kw: dict, trainable: str = "all", init=None,
            iterations: int | None = None) -> Path:
        """Train (or reuse / resume) run ``name``; returns its folder."""
        folder = args.work / "runs" / name
        its = iterations or args.iterations
        if (folder / "checkpoint").exists() and read_meta(folder).complete:
            return folder
        resume = (folder / "checkpoint").exists()
        t0 = time.perf_counter()
        result = train(subset_cache(cache.root, train_subset), model, folder,
                       recipe=recipe.with_overrides(trainable=trainable, iterations=its, checkpoint_every=max(1, its),
                                                    warmup_iterations=max(0, its // 20),
                                                    # task-less cases: MAST-Pro's general router; a random task for
                                                    # Swin UNETR, which has no general route
                                                    taskless="general" if model == "mastpro" else "random"),
                       model_kw=kw, device=args.device, progress=False, tensorboard=False,
                       init_from=None if resume else init, resume=resume)
        seconds = round(time.perf_counter() - t0, 1)
        timings["training"] = round(timings.get("training", 0.0) + seconds, 1)
        record = {"seconds": seconds, "iterations": its, "iterations_per_s": round(result.iterations_per_s, 3),
                  "trainable_params": sum(p.numel() for p in result.model.parameters() if p.requires_grad),
                  "train_studies": len(train_subset), "first_loss": round(result.losses[0], 4),
                  "final_loss": round(result.losses[-1], 4), "init_from": None if init is None else Path(init).name}
        (folder / "bench_training.json").write_text(json.dumps(record))
        return folder

    def score(folder: Path, usage: bool = False) -> dict:
        """Evaluation of ``folder`` (kept in ``bench_score.json`` for the same studies) with its training record."""
        stored = folder / "bench_score.json"
        key = {"eval_ids": eval_ids, "overlap": args.overlap, "usage": usage}
        if stored.exists():
            saved = json.loads(stored.read_text())
            if saved.get("key") == key:
                return saved["result"]
        t0 = time.perf_counter()
        result = evaluate(folder, cache, eval_ids, args.device, args.overlap, usage=usage)
        timings["evaluation"] = round(timings.get("evaluation", 0.0) + time.perf_counter() - t0, 1)
        training = folder / "bench_training.json"
        if training.exists():
            result["training"] = json.loads(training.read_text())
        stored.write_text(json.dumps({"key": key, "result": result}))
        return result

    out: dict = {"benchmark": "mastpro", "tiny": args.tiny,
                 "preset": "tiny" if args.tiny else "cpu" if args.cpu else None,
                 "device": args.device,
                 "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda")
                 else platform.processor() or "cpu",
                 "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "config": {"cases": len(cache), "size": args.size, "spacing": args.spacing, "train": len(train_ids),
                            "eval_studies": len(eval_ids), "eval_split": args.eval_split, "patch": list(args.patch),
                            "batch": args.batch, "amp": args.amp, "lr": recipe.lr, "iterations": args.iterations,
                            "pretrain_iterations": args.pretrain_iterations, "model_kw": args.model_kw,
                            "swin_kw": swin_kw, "targets": sorted(targets), "rare": args.rare,
                            "rare_train": args.rare_train, "overlap": args.overlap, "work": str(args.work)}}
    timings = out["timings_s"] = {"data": round(time.perf_counter() - t_start, 1)}

    def save() -> None:
        out["seconds"] = round(time.perf_counter() - t_start, 1)
        if args.out:
            args.out.write_text(json.dumps(out, indent=2) + "\n")

    if "parameters" in parts:
        t0 = time.perf_counter()
        out["parameters"] = parameter_table(args.model_kw, args.patch)
        timings["parameters"] = round(time.perf_counter() - t0, 1)
        save()
    if "memory" in parts:
        t0 = time.perf_counter()
        out["memory"] = {"full": memory_probe(args, "all"), "peft": memory_probe(args, "peft")}
        timings["memory"] = round(time.perf_counter() - t0, 1)
        save()
    pretrain = full = None
    if parts & {"dice", "usage", "rare", "ablation"}:
        pretrain = run("pretrain-source", "mastpro", source, args.model_kw, iterations=args.pretrain_iterations)
    if parts & {"dice", "usage", "ablation"}:
        full = run("finetune-full", "mastpro", train_ids, args.model_kw, "all", pretrain)
        peft = run("finetune-peft", "mastpro", train_ids, args.model_kw, "peft", pretrain)
        with_usage = "usage" in parts
        rows = {"mastpro_full_finetune": score(full, with_usage), "mastpro_peft": score(peft, with_usage)}
        if with_usage:
            out["usage"] = {name: row.pop("usage") for name, row in rows.items()}
            # reference: the pre-trained model, whose target-type routers never received a gradient
            out["usage"]["pretrained_source"] = score(pretrain, True)["usage"]
        out["dice"] = {**rows, "pretrained_on": sorted({task_of[c] for c in source}),
                       "pretrain": json.loads((pretrain / "bench_training.json").read_text())
                       if (pretrain / "bench_training.json").exists() else None}
        save()
    if "rare" in parts:
        rare_ids = [c for c in train_ids if task_of[c] == args.rare][: args.rare_train]
        subset = [c for c in train_ids if task_of[c] != args.rare] + rare_ids
        swin = {k: v for k, v in swin_kw.items() if k in SWIN_KEYS}
        out["rare"] = {"type": args.rare, "train_studies": len(rare_ids),
                       "train_studies_with_lesions": sum(bool(cache.info(c).get("lesions")) for c in rare_ids),
                       "full_cohort_train_studies": sum(task_of[c] == args.rare for c in train_ids),
                       "mastpro": score(run("rare-mastpro", "mastpro", subset, args.model_kw, "all", pretrain)),
                       "swinunetr": score(run("rare-swinunetr", "swinunetr", subset, swin, "all", pretrain))}
        save()
    if "ablation" in parts:
        rows = {}
        for name, kw in ABLATIONS.items():
            rows[name] = score(run(f"ablation-{name}", "mastpro", train_ids, {**args.model_kw, **kw}, "all", pretrain))
            out["ablation"] = rows
            save()
        rows["all"] = score(full, "usage" in parts) if full is not None else None
        if rows["all"] is not None:
            rows["all"].pop("usage", None)
        out["ablation"] = rows
    save()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
