"""Train the small default DpDNet checkpoint shipped with unipet (<= 25 MB) on a phantom cohort. Prints JSON.

The model is DpDNet on STU-Net with base width 8 (3.9 M parameters, 15 MB in
float32), trained with the ``dpdnet`` recipe (AdamW, lr 1e-4, wd 1e-3) unless ``--recipe`` says otherwise;
the recipe, data fingerprint and versions are recorded in ``meta.json``. ``--export DIR`` copies the weights
and metadata (no training state) into ``DIR`` and checks the size limit. Re-running resumes the run.

GPU run::

    python benchmarks/train_default.py --device cuda --export src/unipet/resources/checkpoints/dpdnet-small

The shipped checkpoint was trained on the CPU (no GPU was lent) in three stages, ``recipes/default.json`` then
``--init`` + ``recipes/default_stage2.json``, then a third stage (``--init`` the second, ``--heads-from lung_cancer
--reset-heads melanoma,breast_cancer``, ``recipes/default_stage3.json``) that revives the two heads which had
collapsed to background: the commands, losses and demo Dice are in ``benchmarks/RESULTS.md``.

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
    p.add_argument("--workers", type=int, default=0,
                   help="data-loader processes (0 is fastest on a 2-core CPU: RESULTS.md)")
    p.add_argument("--device", default=None)
    p.add_argument("--init", type=Path, help="start from these weights (a run folder), e.g. a first stage")
    p.add_argument("--run", default="run", help="name of the run folder inside --work")
    p.add_argument("--heads-from", metavar="TASK", help="with --init: copy this task's prompt-aware head ...")
    p.add_argument("--reset-heads", metavar="TASK,...", default="", help="... into these tasks' heads first")
    p.add_argument("--export", type=Path, help="copy model.safetensors + meta.json here")
    p.add_argument("--tiny", action="store_true", help="CPU smoke check")
    args = p.parse_args()

    from unipet.train import train
    from unipet.checkpoint import find_checkpoint, read_meta

    # every architecture kwarg explicit: the checkpoint must not follow a later change of the model's defaults
    model_kw = {"base_width": args.base_width, "pa_head": "paper", "task_classifier": True, "specific_prompt": True,
                "common_prompt": True, "pa_heads": True}
    if args.tiny:
        args.cases, args.iterations, args.patch, args.batch, args.workers = 6, 4, (16, 32, 32), 2, 0
        args.device, model_kw = args.device or "cpu", {"base_width": 4, "min_feature": 2}
    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-default-"))
    cache = phantom_cache(work, args.cases, args.size, tiny=args.tiny)
    run = work / args.run
    resume = (run / "checkpoint").exists()
    init = args.init
    if args.heads_from and not resume:
        init = copy_heads(args.init, args.heads_from, [t for t in args.reset_heads.split(",") if t], run)
    result = train(cache, "dpdnet", run, recipe=args.recipe, model_kw=model_kw, device=args.device,
                   iterations=args.iterations, patch_size=args.patch, batch_size=args.batch, workers=args.workers,
                   resume=resume, progress=True, init_from=None if resume else init)
    folder = find_checkpoint(run)
    size = (folder / "model.safetensors").stat().st_size
    out = {"run": str(run), "iteration": result.iteration, "final_loss": result.losses[-1] if result.losses else None,
           "validation": result.validation, "model_bytes": size, "within_limit": size <= MAX_BYTES,
           "recipe": read_meta(folder).recipe, "model_kw": model_kw}
    if args.export:
        if size > MAX_BYTES:
            raise SystemExit(f"model.safetensors is {size / 2 ** 20:.1f} MB > 25 MB; use a smaller --base-width")
        args.export.mkdir(parents=True, exist_ok=True)
        for name in ("model.safetensors", "meta.json"):
            shutil.copy2(folder / name, args.export / name)
        out["exported"] = str(args.export)
    print(json.dumps(out, indent=2, default=str))


def copy_heads(init: Path | None, source: str, targets: list[str], run: Path) -> Path:
    """Weights of the run ``init`` with the prompt-aware heads of ``targets`` replaced by ``source``'s head.

    Revives heads that collapsed to background (benchmarks/RESULTS.md); written beside the run folder.
    """
    from safetensors.torch import load_file, save_file

    from unipet.checkpoint import find_checkpoint, read_meta

    if init is None or not targets:
        raise SystemExit("--heads-from needs --init RUN and --reset-heads TASK,...")
    folder = find_checkpoint(init)
    names = read_meta(folder).task_set.names
    unknown = sorted({source, *targets} - set(names))
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; the run's tasks are {names}")
    weights = load_file(str(folder / "model.safetensors"))
    prefix = f"pa_heads.{names.index(source)}."
    for target in targets:
        dest = f"pa_heads.{names.index(target)}."
        for key in [k for k in weights if k.startswith(prefix)]:
            weights[dest + key[len(prefix):]] = weights[key].clone()
    out = run.parent / f"{run.name}.init.safetensors"
    save_file(weights, str(out))
    return out


if __name__ == "__main__":
    main()
