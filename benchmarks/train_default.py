"""Train the small default DpDNet checkpoint shipped with unipet (<= 25 MB) on a phantom cohort. Prints JSON.

The model is DpDNet on STU-Net with base width 8 (3.9 M parameters, 15 MB in
float32), trained with the ``dpdnet`` recipe (AdamW, lr 1e-4, wd 1e-3) unless ``--recipe`` says otherwise;
the recipe, data fingerprint and versions are recorded in ``meta.json``. ``--export DIR`` copies the weights
and metadata (no training state) into ``DIR`` and checks the size limit. Re-running resumes the run.

GPU run::

    python benchmarks/train_default.py --device cuda --export src/unipet/resources/checkpoints/dpdnet-small

The shipped checkpoint was trained on the CPU (no GPU was lent) in two stages, ``recipes/default.json`` then
``--init`` + ``recipes/default_stage2.json``: the commands, losses and demo Dice are in ``benchmarks/RESULTS.md``.

CPU smoke check::

    python benchmarks/train_default.py --tiny
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bench_train import phantom_cache

MAX_BYTES = 25 * 2 ** 20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, help="cohort, cache and run folder (default: a temp folder)")
    p.add_argument("--cases", type=int, default=80)
    p.add_argument("--size", default="small", help="phantom size")
    p.add_argument("--iterations", type=int, default=12000)
    p.add_argument("--patch", type=int, nargs=3, default=(64, 96, 96))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--base-width", type=int, default=8)
    p.add_argument("--recipe", default="dpdnet")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--device", default=None)
    p.add_argument("--init", type=Path, help="start from these weights (a run folder), e.g. a first stage")
    p.add_argument("--run", default="run", help="name of the run folder inside --work")
    p.add_argument("--export", type=Path, help="copy model.safetensors + meta.json here")
    p.add_argument("--tiny", action="store_true", help="CPU smoke check")
    args = p.parse_args()

    from unipet.train import train
    from unipet.train.checkpoint import find_checkpoint, read_meta

    model_kw = {"base_width": args.base_width}
    if args.tiny:
        args.cases, args.iterations, args.patch, args.batch, args.workers = 6, 4, (16, 32, 32), 2, 0
        args.device, model_kw = args.device or "cpu", {"base_width": 4, "min_feature": 2}
    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-default-"))
    cache = phantom_cache(work, args.cases, args.size, tiny=args.tiny)
    run = work / args.run
    resume = (run / "checkpoint").exists()
    result = train(cache, "dpdnet", run, recipe=args.recipe, model_kw=model_kw, device=args.device,
                   iterations=args.iterations, patch_size=args.patch, batch_size=args.batch, workers=args.workers,
                   resume=resume, progress=True, init_from=None if resume else args.init)
    folder = find_checkpoint(run)
    size = (folder / "model.safetensors").stat().st_size
    out = {"run": str(run), "iteration": result.iteration, "final_loss": result.losses[-1] if result.losses else None,
           "validation": result.validation, "model_bytes": size, "within_limit": size <= MAX_BYTES,
           "recipe": read_meta(folder)["recipe"], "model_kw": model_kw}
    if args.export:
        if size > MAX_BYTES:
            raise SystemExit(f"model.safetensors is {size / 2 ** 20:.1f} MB > 25 MB; use a smaller --base-width")
        args.export.mkdir(parents=True, exist_ok=True)
        for name in ("model.safetensors", "meta.json"):
            shutil.copy2(folder / name, args.export / name)
        out["exported"] = str(args.export)
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
