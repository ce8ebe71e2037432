"""Leave one cancer type out on the phantoms (issue 24, part 5): is a type without a prompt still found?

For each phantom type L, DpDNet with the shipped default's architecture (base width 8, the paper's prompt-aware
heads, unipet's task classifier) is trained from scratch on the phantom training studies of the *other* types (a
model whose task set lacks L), and once on every type (the reference), under one recipe and budget
(``--recipe``, default ``recipes/prompts_compare_prior.json``: the default's SGD recipe with ``prior_init``, the
from-scratch setting of RESULTS.md's "Do prompts help?"; ``--iterations`` each). Every model then predicts the
held-out phantoms of type L (``bench_quality.py``'s cohort: ``--n 40 --seed 7``, a seed no training cohort uses)
with:

- ``auto``: the task classifier's choice among the types the model knows (the choices are counted);
- ``any``: the generic path of ``unipet.infer`` (every prompt, the voxel-wise largest lesion probability);
- each prompt it has (the best of them, picked with the reference masks, is an oracle choice shown for scale).

The reference model predicts the same studies with L's own prompt (what a prompt for L is worth at this budget),
``auto`` and ``any`` (what the generic path costs on a type the model knows: its false-positive volume). Baselines on the same studies: SUV >= 2.5, the organ-aware threshold and
the 41 % per-lesion oracle (``unipet.evaluate.baselines``). Scores are ``unipet.evaluate``'s (Dice, lesion
sensitivity >= 1 mL, FPV mL per study). Printed: one table (stderr) and the JSON (stdout).

Training runs go to ``WORK/runs/<without-L | all>`` (a complete run is reused, an interrupted one resumes, so the
command can be stopped and run again). ``--types`` limits the types left out (e.g. to split the work over two
processes, each with ``--threads 1``).

CPU run (two processes side by side, one thread each; the numbers in RESULTS.md)::

    python benchmarks/bench_loto.py --work /tmp/loto --train-cache CACHE --iterations 1200 --threads 1 \
        --types all,lung_cancer,lymphoma --out loto_a.json
    python benchmarks/bench_loto.py --work /tmp/loto --train-cache CACHE --iterations 1200 --threads 1 \
        --types melanoma,breast_cancer --out loto_b.json
    python benchmarks/bench_loto.py --merge loto_a.json loto_b.json --out loto.json

(``CACHE``: the default's phantom training cache, e.g. ``train_real.py``'s ``WORK/cache``; without it the
160-study phantom cohort of seed 0 is generated and cached in ``WORK/train``. ``--merge`` only combines the two
JSON files into one table; a run interrupted anywhere resumes where it stopped when its command is repeated.)

CPU smoke check::

    python benchmarks/bench_loto.py --tiny
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_quality import held_out  # noqa: E402
from bench_train import phantom_cache  # noqa: E402

#: the shipped default's architecture (every builder option explicit, as ``train_default.py`` records it)
DEFAULT_KW = {"base_width": 8, "pa_head": "paper", "task_classifier": True, "specific_prompt": True,
              "common_prompt": True, "pa_heads": True}
TINY_KW = {"base_width": 4, "min_feature": 2, "task_classifier": True}
TINY_TYPES = ("lymphoma", "lung_cancer", "melanoma")
BASELINES = ("suv2.5", "organ-aware", "oracle41")
REFERENCE = "all"


def subset_cache(source, dest: Path, types: list[str]):
    """A cache of ``source``'s phantom training studies (split ``train``) of ``types`` with a task set of those
    types only (in ``source``'s order): ``dest/cache.json`` plus a link to each case's folder (nothing copied)."""
    from unipet.data.cache import Cache
    from unipet.tasks import TaskSet

    keep = [n for n in source.task_set.names if n in types]
    cases = [c for c in source.split("train") if source.info(c).get("task") in keep]
    task_set = TaskSet([source.task_set[n] for n in keep], name=dest.name)  # "all" or "without-<type>"
    meta = {**source.meta, "task_set": task_set.to_dict(), "cases": cases}
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "cache.json"
    if not path.exists() or json.loads(path.read_text()) != json.loads(json.dumps(meta)):
        for c in cases:
            link = dest / c
            if not link.exists():
                link.symlink_to(Path(source.root).resolve() / c, target_is_directory=True)
        path.write_text(json.dumps(meta, indent=1))
    return Cache(dest)


def train_model(cache, run: Path, args) -> dict:
    """Train (or resume, or reuse) one DpDNet on ``cache`` into ``run``; returns its budget record."""
    from unipet.checkpoint import read_meta
    from unipet.train import train

    record = run / "budget.json"
    if record.exists() and read_meta(run / "checkpoint").complete:
        return json.loads(record.read_text())
    resume = (run / "checkpoint" / "meta.json").exists()
    t0 = time.perf_counter()
    result = train(cache, "dpdnet", run, recipe=None if resume else args.recipe, model_kw=args.model_kw,
                   device="cpu", resume=resume, iterations=args.iterations, patch_size=None if resume else args.patch,
                   batch_size=None if resume else args.batch, workers=0, progress=False, tensorboard=False)
    if result.stopped:
        sys.exit(f"{run.name} stopped at iteration {result.iteration}; run the command again to resume")
    out = {"train_s": round(time.perf_counter() - t0, 1), "iterations": result.iteration, "resumed": resume,
           "tasks": cache.task_set.names, "train_cases": len(cache), "threads": args.threads}
    record.write_text(json.dumps(out, indent=1))
    return out


def type_manifest(manifest_path: Path, task: str, dest: Path) -> Path:
    """The held-out manifest restricted to the studies of ``task``."""
    from unipet.io.manifest import Manifest

    manifest = Manifest.load(manifest_path)
    if not dest.exists():
        Manifest([c for c in manifest if c.task == task], manifest.task_set, source=manifest.source).save(dest)
    return dest


def score(predictor, manifest: Path, out: Path, task: str, study_type: str | None) -> dict:
    """Predict ``manifest`` with ``task`` (a prompt, ``auto`` or ``any``) and score it; the headline numbers of
    ``study_type`` (None: overall), plus the tasks ``auto`` chose."""
    from unipet.evaluate import EvaluationConfig, evaluate
    from unipet.evaluate.baselines import headline
    from unipet.infer import predict_batch

    t0 = time.perf_counter()
    # masks of this checkpoint already written (an interrupted run) are kept: predictions are deterministic
    # (auto is re-run: its choices are counted from this run's records)
    report = predict_batch(predictor, manifest, out / "masks", task=task, overwrite=task == "auto")
    seconds = time.perf_counter() - t0
    summary = evaluate(out / "masks", manifest, out / "eval", EvaluationConfig(n_boot=200), overwrite=True).summary
    row = {**headline(summary, study_type), "predict_s": round(seconds, 1), "n": len(report.done) + len(report.skipped)}
    if report.skipped:
        row["reused"] = len(report.skipped)
    if report.failed:
        row["failed"] = report.failed
    if task == "auto":
        chosen: dict[str, int] = {}
        for r in report.records:
            chosen[r["task"]] = chosen.get(r["task"], 0) + 1
        row["chosen"] = chosen
    return row


def evaluate_left_out(run: Path, left_out: str, manifest: Path, work: Path, device: str) -> dict:
    """Rows of one model without ``left_out`` on the held-out studies of ``left_out``."""
    from unipet.infer import Predictor

    predictor = Predictor.from_checkpoint(run, device=device)
    subset = type_manifest(manifest, left_out, work / f"heldout-{left_out}.json")
    rows = {}
    for task in ["auto", "any", *predictor.task_set.names]:
        rows[task] = score(predictor, subset, work / "pred" / run.name / left_out / task, task, left_out)
    prompts = {t: r for t, r in rows.items() if t not in ("auto", "any")}
    best = max(prompts, key=lambda t: prompts[t].get("dice", -1))
    rows["best prompt (oracle choice)"] = {**prompts[best], "prompt": best}
    return rows


def evaluate_reference(run: Path, types: list[str], manifest: Path, work: Path, device: str) -> dict:
    """Rows of the all-type model: per type, its own prompt, ``auto`` and ``any``."""
    from unipet.infer import Predictor

    predictor = Predictor.from_checkpoint(run, device=device)
    rows: dict = {}
    for t in types:
        subset = type_manifest(manifest, t, work / f"heldout-{t}.json")
        rows[t] = {m: score(predictor, subset, work / "pred" / run.name / t / task, task, t)
                   for m, task in (("own prompt", t), ("auto", "auto"), ("any", "any"))}
    return rows


def baselines(manifest: Path, work: Path, types: list[str]) -> dict:
    """``{type: {baseline: headline}}`` on the held-out studies."""
    from unipet.evaluate import EvaluationConfig
    from unipet.evaluate.baselines import evaluate_baselines, headline

    found = evaluate_baselines(manifest, work / "baselines", list(BASELINES), config=EvaluationConfig(n_boot=200),
                               overwrite=True)
    return {t: {b: headline(found[b], t) for b in BASELINES if b in found} for t in types}


def table(doc: dict) -> str:
    """One markdown table: the left-out type's Dice / sensitivity / FPV under each path."""
    def cell(r: dict | None) -> str:
        if not r or "dice" not in r:
            return "—"
        return f"{r['dice']:.3f} / {r.get('sens_ge1', math.nan):.2f} / {r.get('fpv_ml', math.nan):.1f}"

    head = ("| left out | auto (chose) | any | best known prompt | reference: own prompt | reference: any | "
            "SUV ≥ 2.5 | organ-aware | oracle 41 % |")
    lines = [head, "| " + " | ".join(["---"] * 9) + " |"]
    for t, rows in doc["left_out"].items():
        ref = doc["reference"].get(t, {})
        base = doc["baselines"].get(t, {})
        auto = rows["auto"]
        chose = ", ".join(f"{k} {v}" for k, v in sorted(auto.get("chosen", {}).items(), key=lambda kv: -kv[1]))
        best = rows["best prompt (oracle choice)"]
        lines.append(f"| {t} | {cell(auto)} ({chose}) | {cell(rows['any'])} | {cell(best)} ({best['prompt']}) | "
                     f"{cell(ref.get('own prompt'))} | {cell(ref.get('any'))} | {cell(base.get('suv2.5'))} | "
                     f"{cell(base.get('organ-aware'))} | {cell(base.get('oracle41'))} |")
    lines.append("")
    lines.append("Cells: Dice / lesion sensitivity >= 1 mL / FPV mL per study, over the held-out studies of the type.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path)
    p.add_argument("--train-cache", type=Path, help="the phantom training cache (default: a new cohort, seed 0)")
    p.add_argument("--train-cases", type=int, default=160)
    p.add_argument("--iterations", type=int, default=1200)
    p.add_argument("--patch", type=int, nargs=3, default=(48, 64, 64))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--recipe", default=str(HERE / "recipes" / "prompts_compare_prior.json"))
    p.add_argument("--types", default="", help="comma-separated: the types to leave out, and 'all' for the "
                   "reference model (default: every type and the reference)")
    p.add_argument("--n", type=int, default=40, help="held-out phantom studies")
    p.add_argument("--seed", type=int, default=7, help="seed of the held-out cohort")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path)
    p.add_argument("--tiny", action="store_true", help="CPU smoke check: tiny studies, model and budget")
    p.add_argument("--merge", type=Path, nargs="+", metavar="JSON", help="combine the JSON of processes that "
                   "split --types (one of them with the reference) into one table; nothing is run")
    args = p.parse_args()
    if args.merge:
        return emit(merge([json.loads(f.read_text()) for f in args.merge]), args.out)
    if args.threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    from unipet.data.cache import Cache

    args.model_kw = dict(TINY_KW if args.tiny else DEFAULT_KW)
    if args.tiny:
        args.iterations, args.patch, args.n, args.train_cases = 3, (16, 32, 32), 6, 9
    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-bench-loto-"))
    work.mkdir(parents=True, exist_ok=True)
    source = (Cache(args.train_cache) if args.train_cache else
              phantom_cache(work / "train", args.train_cases, "small", seed=0, tiny=args.tiny,
                            tasks=TINY_TYPES if args.tiny else None))
    types = [n for n in source.task_set.names if any(source.info(c).get("task") == n for c in source.split("train"))]
    if len(types) < 3:
        sys.exit(f"leave-one-type-out needs >= 3 types with training studies (DpDNet's common prompt needs 2 after "
                 f"one is left out); {args.train_cache or 'the cohort'} has {', '.join(types) or 'none'}")
    chosen = [t.strip() for t in args.types.split(",") if t.strip()] or [*types, REFERENCE]
    unknown = [t for t in chosen if t not in types and t != REFERENCE]
    if unknown:
        sys.exit(f"unknown type(s) {', '.join(unknown)}; give some of {', '.join(types)} or {REFERENCE}")
    manifest = held_out(work, args.n, args.seed, "small", args.tiny, tiny_tasks=TINY_TYPES)
    doc: dict = {"benchmark": "leave-one-type-out", "iterations": args.iterations, "recipe": Path(args.recipe).name,
                 "model_kw": args.model_kw, "heldout": {"n": args.n, "seed": args.seed}, "types": types,
                 "train": {}, "left_out": {}, "reference": {}}
    for t in chosen:
        keep = types if t == REFERENCE else [x for x in types if x != t]
        cache = subset_cache(source, work / "caches" / (REFERENCE if t == REFERENCE else f"without-{t}"), keep)
        run = work / "runs" / (REFERENCE if t == REFERENCE else f"without-{t}")
        doc["train"][run.name] = train_model(cache, run, args)
        if t == REFERENCE:
            doc["reference"] = evaluate_reference(run, types, manifest, work, args.device)
        else:
            doc["left_out"][t] = evaluate_left_out(run, t, manifest, work, args.device)
    # the baselines are written once per work folder: by the process that trains the reference
    doc["baselines"] = baselines(manifest, work, types) if REFERENCE in chosen else {}
    emit(doc, args.out)


def merge(docs: list[dict]) -> dict:
    """One document from those of processes that split ``--types`` of one work folder and budget."""
    first = docs[0]
    if len({(d["iterations"], d["recipe"], json.dumps(d["heldout"], sort_keys=True)) for d in docs}) != 1:
        sys.exit("the JSON files to merge come from runs of other budgets, recipes or held-out cohorts")
    out = {**first, "train": {}, "left_out": {}, "reference": {}, "baselines": {}}
    for d in docs:
        out["train"].update(d["train"])
        out["left_out"].update(d["left_out"])
        out["reference"] = out["reference"] or d["reference"]
        out["baselines"] = out["baselines"] or d["baselines"]
    return out


def emit(doc: dict, out: Path | None) -> None:
    """The table (stderr, when a type was left out) and the JSON (stdout; also written to ``out``)."""
    if doc["left_out"]:
        print(table(doc), file=sys.stderr)
    text = json.dumps(doc, indent=1, default=str)
    if out:
        out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
