"""Training throughput: iterations/s, share of time waiting for data, peak GPU memory. Prints JSON.

GPU run (DpDNet, batch 2, 112x160x128, bf16, from the cache of a phantom cohort)::

    python benchmarks/bench_train.py --device cuda

CPU smoke check::

    python benchmarks/bench_train.py --tiny

CPU settings side by side (``--compare``: each configuration in its own process, one after the other, on the same
cache, patch, batch and iterations; it/s and data-wait share for each and the ratio to the first)::

    python benchmarks/bench_train.py --device cpu --compare --cache /tmp/d13/cache --patch 48 64 64 \
        --model-kw '{"base_width": 8, "pa_head": "paper", "task_classifier": true}' --iterations 40 --warmup 5

``--cache DIR`` uses an existing cache instead of generating a phantom cohort.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def phantom_cache(work: Path, n: int, size: str, seed: int = 0, workers: int = 1, tiny: bool = False,
                  tasks: tuple[str, ...] | None = None):
    """A cache of an ``n``-study phantom cohort in ``work`` (reused when present).

    ``tiny`` writes unipet's smallest synthetic studies instead (no phantom generator needed), of ``tasks`` in
    turn (default: lymphoma and lung cancer).
    """
    from unipet.data.cache import Cache, build_cache
    from unipet.io.layouts import import_phantom

    if (work / "cache" / "cache.json").exists():
        return Cache(work / "cache")
    cohort = work / "cohort"
    if not (cohort / "clinical.csv").exists():
        if tiny:
            _tiny_cohort(cohort, n, seed, *([tasks] if tasks else []))
        else:
            from unipet.data.phantom import write_phantom_cohort

            write_phantom_cohort(cohort, n=n, seed=seed, size=size, workers=workers, overwrite=cohort.exists())
    manifest = import_phantom(cohort, split_seed=seed)
    return build_cache(manifest, work / "cache", workers=workers)


def _tiny_cohort(root: Path, n: int, seed: int, tasks: tuple[str, ...] = ("lymphoma", "lung_cancer")) -> None:
    """``n`` 24x32x32 studies (a body box, 1-3 hot spheres; ``tasks`` in turn) in the autoPET layout."""
    import numpy as np

    from unipet.io.nifti import save_volume
    from unipet.study import make_affine

    rng = np.random.default_rng(seed)
    rows = ["study_id,patient_id,task"]
    zz, yy, xx = np.mgrid[:24, :32, :32]
    for i in range(n):
        ct = np.full((24, 32, 32), -1000.0, np.float32)
        ct[2:-2, 4:-4, 4:-4] = 40 + rng.normal(0, 10, (20, 24, 24))
        pet = np.where(ct > -500, 1.0 + rng.normal(0, 0.1, ct.shape), 0.0).astype(np.float32).clip(0)
        label = np.zeros(ct.shape, np.uint8)
        for _ in range(int(rng.integers(0 if i % 4 == 3 else 1, 4))):
            c = rng.integers([5, 8, 8], [19, 24, 24])
            r = rng.uniform(1.5, 4.0)
            sphere = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
            label[sphere], pet[sphere] = 1, rng.uniform(4, 12)
        sid, pid = f"s{i:03d}", f"p{i:03d}"
        affine = make_affine((3.0, 2.0, 2.0))
        for name, vol in (("SUV", pet), ("CTres", ct), ("SEG", label)):
            save_volume(vol, affine, root / pid / sid / f"{name}.nii.gz")
        rows.append(f"{sid},{pid},{tasks[i % len(tasks)]}")
    (root / "clinical.csv").write_text("\n".join(rows) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, help="existing cache folder (default: a generated phantom cohort)")
    p.add_argument("--work", type=Path, help="working folder for the cohort/cache/run (default: a temp folder)")
    p.add_argument("--model", default="dpdnet")
    p.add_argument("--patch", type=int, nargs=3, default=(112, 160, 128))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--amp", default="bf16", choices=("bf16", "fp16", "none"))
    p.add_argument("--iterations", type=int, default=60, help="timed iterations")
    p.add_argument("--warmup", type=int, default=10, help="untimed iterations first")
    p.add_argument("--workers", type=int, default=8, help="data-loader processes")
    p.add_argument("--cases", type=int, default=16, help="phantom studies to generate")
    p.add_argument("--size", default="small", help="phantom size")
    p.add_argument("--device", default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--model-kw", default="{}", help="JSON builder options")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: PyTorch's default)")
    p.add_argument("--channels-last", action="store_true", help="channels_last_3d memory format")
    p.add_argument("--compare", action="store_true", help="run the CPU configurations of CONFIGS side by side")
    p.add_argument("--config-timeout", type=int, default=600, help="seconds a --compare configuration may take")
    p.add_argument("--tiny", action="store_true", help="CPU smoke check: tiny data, model and patch")
    args = p.parse_args()
    if args.compare:
        return compare(args)
    if args.threads:
        import os

        import torch

        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the trainer keeps a user's thread setting
        torch.set_num_threads(args.threads)

    import torch

    from unipet.data.cache import Cache
    from unipet.train import load_recipe, train

    model_kw = json.loads(args.model_kw)
    if args.tiny:
        args.patch, args.batch, args.iterations, args.warmup = (16, 32, 32), 2, 6, 2
        args.workers = min(args.workers, 1)
        args.device, args.amp, args.cases = args.device or "cpu", "none", 6
        model_kw = {"base_width": 4, "min_feature": 2, **model_kw}
    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-bench-train-"))
    cache = Cache(args.cache) if args.cache else phantom_cache(work, args.cases, args.size, tiny=args.tiny)
    total = args.warmup + args.iterations
    timed: list[tuple[float, float]] = []
    marks: dict[str, float] = {}

    def clock(it: int, logs: dict) -> None:
        marks["threads"] = torch.get_num_threads()
        if it == args.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            marks["start"] = time.perf_counter()
        elif it > args.warmup:
            timed.append((logs["data_s"], logs["step_s"]))
        if it == total:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks["end"] = time.perf_counter()

    run = work / f"run-{int(time.time())}"
    recipe = load_recipe("dpdnet" if args.model == "dpdnet" else "nnunet", amp=args.amp, compile=args.compile,
                         iterations=total, patch_size=tuple(args.patch), batch_size=args.batch,
                         workers=args.workers, checkpoint_every=10 ** 9, channels_last=args.channels_last)
    result = train(cache, args.model, run, recipe=recipe, model_kw=model_kw, device=args.device, progress=False,
                   tensorboard=False, callbacks=[clock])
    seconds = marks["end"] - marks["start"]
    data_wait = sum(d for d, _ in timed)
    device = result.model.parameters().__next__().device
    out = {
        "benchmark": "train", "recipe": recipe.name, "model": args.model, "model_kw": model_kw, "patch": list(args.patch),
        "batch": args.batch, "amp": args.amp, "compile": args.compile, "workers": args.workers,
        "threads": int(marks["threads"]), "channels_last": args.channels_last,
        "timed_iterations": args.iterations, "it_per_s": round(args.iterations / seconds, 3),
        "samples_per_s": round(args.iterations * args.batch / seconds, 3),
        "data_wait_share": round(data_wait / seconds, 4),
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 3) if device.type == "cuda" else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "cache": str(cache.root), "cases": len(cache),
        "final_loss": round(result.losses[-1], 4),
    }
    print(json.dumps(out, indent=2))


#: CPU configurations of --compare: the first is the reference (PyTorch's default, one thread per core, beside
#: one data-loader worker: how the earlier default was trained), then one change at a time. ``threads`` is set as
#: OMP_NUM_THREADS (the user's setting, which the trainer keeps); None leaves the trainer's rule
#: (``unipet.train.distributed.cpu_training_threads``: the cores left after the workers).
CONFIGS = (
    {"name": "PyTorch default: 1 thread per core + 1 worker", "threads": "cores", "workers": 1},
    {"name": "1 thread + 1 worker process", "threads": 1, "workers": 1},
    {"name": "1 thread per core, data in the main process", "threads": "cores", "workers": 0},
    {"name": "trainer's rule, data in the main process", "threads": None, "workers": 0},
    {"name": "trainer's rule, data in the main process, channels_last_3d", "threads": None, "workers": 0,
     "channels_last": True},
    {"name": "trainer's rule, data in the main process, torch.compile", "threads": None, "workers": 0,
     "compile": True},
)


def compare(args) -> None:
    """Run every configuration of ``CONFIGS`` in a subprocess (fresh thread pools) and print them side by side."""
    import os
    import subprocess
    import sys

    base = [sys.executable, __file__, "--device", args.device or "cpu", "--patch", *map(str, args.patch),
            "--batch", str(args.batch), "--amp", "none", "--iterations", str(args.iterations), "--warmup",
            str(args.warmup), "--model", args.model, "--model-kw", args.model_kw]
    if args.tiny:
        base += ["--tiny"]
    if args.cache:
        base += ["--cache", str(args.cache)]
    if args.work:
        base += ["--work", str(args.work)]
    rows = []
    for conf in CONFIGS:
        cmd = base + ["--workers", str(conf["workers"])]
        cmd += ["--channels-last"] if conf.get("channels_last") else []
        cmd += ["--compile"] if conf.get("compile") else []
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        if conf["threads"] is not None:
            env["OMP_NUM_THREADS"] = str(os.cpu_count() if conf["threads"] == "cores" else conf["threads"])
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.config_timeout)
        except subprocess.TimeoutExpired:
            rows.append({"name": conf["name"], "error": f"did not finish in {args.config_timeout} s"})
            continue
        if done.returncode != 0:
            rows.append({"name": conf["name"], "error": (done.stderr.strip().splitlines() or ["?"])[-1]})
            continue
        out = json.loads(done.stdout[done.stdout.index("{"):])
        rows.append({"name": conf["name"], "threads": out["threads"], "workers": out["workers"],
                     "it_per_s": out["it_per_s"], "data_wait_share": out["data_wait_share"]})
    ref = next((r["it_per_s"] for r in rows if "it_per_s" in r), None)
    for r in rows:
        if "it_per_s" in r and ref:
            r["speed_vs_first"] = round(r["it_per_s"] / ref, 2)
    print(json.dumps({"benchmark": "train-cpu-compare", "patch": list(args.patch), "batch": args.batch,
                      "model": args.model, "model_kw": json.loads(args.model_kw), "iterations": args.iterations,
                      "configs": rows}, indent=2))


if __name__ == "__main__":
    main()
