"""Segmentation quality on real FDG PET/CT: checkpoints under each prompt and ``--task auto`` beside SUV rules.

The real cohort is an autoPET-layout folder (default ``../shared/real_sts_fdg``: 35 extremity soft-tissue
sarcomas, one crop of about 5 cm around each tumour; CC BY 3.0 — cite Vallieres et al. Phys Med Biol 2015, the
TCIA collection DOI 10.7937/K9/TCIA.2015.7GO2GSKS, Clark et al. 2013 and Zwanenburg et al. 2020 wherever a number
from it is shown). It is indexed with ``unipet.io.layouts.import_autopet`` (as ``unipet import autopet`` does),
optionally restricted to held-out cases (``--cases FILE``: a JSON list or one case id a line; or ``--folds FILE
--fold N``: the held-out cases of fold N of a ``{"k", "seed", "folds": {case_id: fold}}`` file). Case ids match
either the study id (``STS_003_0``) or the patient id (``STS_003``).

Each checkpoint (``--checkpoint``, repeatable; default: the shipped ``dpdnet-small``) predicts every case under
each prompt of its task set and under ``--task auto``; the baselines of ``unipet.evaluate.baselines`` (SUV >= 2.5,
41 % / 50 % of the lesion's SUVmax over the whole crop, the per-lesion oracles) are written for the same cases;
``unipet.evaluate.evaluate`` (with the MTV / SUVmean errors) scores all of them. Printed: one table (stderr) of
mean Dice, HD95 (mm), |MTV error| (%), signed MTV error (mL), |SUVmean error| and the number of cases above
SUV >= 2.5, and the JSON (stdout) with the same rows, every case's numbers and the task ``auto`` chose per case.

CPU run of the shipped default on the 35 (about 5 minutes on 2 cores)::

    python benchmarks/bench_real.py --work /tmp/real --out real.json

CPU smoke check (3 cases, needs ../shared/real_sts_fdg)::

    python benchmarks/bench_real.py --tiny
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "real_sts_fdg"
BASELINES = ("suv2.5", "suvmax41", "suvmax50", "oracle41", "oracle50", "oracle-best")
#: per-case numbers kept from ``per_case.csv``
CASE_KEYS = ("dice", "hd95_mm", "ref_ml", "pred_ml", "mtv_error_ml", "mtv_abs_error_pct", "suvmean_ref",
             "suvmean_pred", "suvmean_error", "fpv_ml")
TINY_CASES = ("STS_003", "STS_005", "STS_006")


def selected_cases(cases_file: Path | None, folds_file: Path | None, fold: int | None) -> list[str] | None:
    """Case ids to score (None: every case) from ``--cases`` or ``--folds/--fold``."""
    if cases_file is not None:
        text = cases_file.read_text()
        try:
            ids = json.loads(text)
        except ValueError:
            ids = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            sys.exit(f"{cases_file}: give a JSON list of case ids or one case id a line")
        return ids
    if folds_file is not None:
        if fold is None:
            sys.exit("--folds needs --fold N (the held-out fold to score)")
        folds = {str(c): int(f) for c, f in json.loads(folds_file.read_text())["folds"].items()}
        held = sorted(c for c, f in folds.items() if f == fold)
        if not held:
            sys.exit(f"fold {fold} is not in {folds_file} (folds {sorted(set(folds.values()))})")
        return held
    return None


def real_manifest(work: Path, data: Path, case_ids: list[str] | None) -> Path:
    """Manifest of the real cohort's selected cases (all marked test), written into ``work``."""
    from unipet.io.layouts import import_autopet
    from unipet.io.manifest import Manifest

    manifest = import_autopet(data)
    cases = list(manifest)
    if case_ids is not None:
        wanted = set(case_ids)
        cases = [c for c in cases if c.case_id in wanted or c.patient_id in wanted]
        found = {c.case_id for c in cases} | {c.patient_id for c in cases}
        missing = sorted(wanted - found)
        if missing:
            sys.exit(f"case(s) {', '.join(missing[:5])} are not in {data}")
    for case in cases:
        case.split = "test"
    path = work / "real.json"
    Manifest(cases, manifest.task_set, source=manifest.source).save(path, overwrite=True)
    return path


def per_case(folder: Path) -> dict[str, dict[str, float]]:
    """``{case: {key: value}}`` of an evaluation's ``per_case.csv`` (keys of ``CASE_KEYS``)."""
    import pandas as pd

    frame = pd.read_csv(folder / "per_case.csv")
    return {row["case"]: {k: (None if pd.isna(row[k]) else round(float(row[k]), 4)) for k in CASE_KEYS}
            for _, row in frame.iterrows()}


def mean_row(cases: dict[str, dict], reference: dict[str, dict] | None) -> dict[str, float]:
    """Means over cases (NaN-free values only) and, against ``reference`` (SUV >= 2.5), the cases above it."""
    def mean(key, fn=float):
        values = [fn(c[key]) for c in cases.values() if c.get(key) is not None and math.isfinite(c[key])]
        return round(sum(values) / len(values), 4) if values else math.nan

    row = {"n": len(cases), "dice": mean("dice"), "hd95_mm": mean("hd95_mm"),
           "mtv_abs_error_pct": mean("mtv_abs_error_pct"), "mtv_error_ml": mean("mtv_error_ml"),
           "suvmean_abs_error": mean("suvmean_error", abs), "empty": sum(1 for c in cases.values() if not c["pred_ml"])}
    if reference is not None:
        row["above_suv2.5"] = sum(1 for k, c in cases.items() if c["dice"] > reference[k]["dice"])
    return row


def score_checkpoint(checkpoint: Path, manifest: Path, work: Path, tasks: list[str] | None, device: str,
                     tta: bool) -> tuple[dict[str, dict], dict[str, dict]]:
    """Predict and score every prompt (and ``auto``) of one checkpoint.

    Returns ``({prompt: per-case numbers}, {prompt: {"predict_s", "chosen"}})``; ``chosen`` (auto only) is
    ``{case: [task, probability]}``."""
    from unipet.evaluate import EvaluationConfig, evaluate
    from unipet.infer import Predictor, predict_batch

    predictor = Predictor.from_checkpoint(checkpoint, device=device, tta=tta)
    has_classifier = hasattr(predictor.model, "infer_task") and getattr(predictor.model, "task_classifier", 1) is not None
    prompts = list(tasks or predictor.task_set.names) + (["auto"] if has_classifier else [])
    config = EvaluationConfig(n_boot=200, with_suv=True, missing_as_empty=True)
    scores, info = {}, {}
    for prompt in prompts:
        preds = work / f"pred-{checkpoint.name}-{prompt}"
        t0 = time.perf_counter()
        report = predict_batch(predictor, manifest, preds, task=prompt, overwrite=True)
        seconds = time.perf_counter() - t0
        evaluate(preds, manifest, work / f"eval-{checkpoint.name}-{prompt}", config, overwrite=True)
        scores[prompt] = per_case(work / f"eval-{checkpoint.name}-{prompt}")
        info[prompt] = {"predict_s": round(seconds, 1), "failed": report.failed}
        if prompt == "auto":
            info[prompt]["chosen"] = {r["case_id"]: [r["task"], round(r["task_probability"] or 0.0, 3)]
                                      for r in report.records}
    return scores, info


def score_baselines(manifest: Path, work: Path) -> dict[str, dict]:
    """``{baseline: per-case numbers}`` of ``BASELINES`` on the manifest."""
    from unipet.evaluate import EvaluationConfig
    from unipet.evaluate.baselines import evaluate_baselines

    config = EvaluationConfig(n_boot=200, with_suv=True)
    found = evaluate_baselines(manifest, work / "baselines", list(BASELINES), config=config, overwrite=True)
    if found["skipped"]:
        sys.exit(f"baselines skipped: {found['skipped']}")
    return {m: per_case(work / "baselines" / m) for m in BASELINES}


def table(rows: dict[str, dict]) -> str:
    """The printed table: one line per method."""
    head = f"{'method':<34}{'n':>4}{'Dice':>8}{'HD95':>8}{'|MTV|%':>8}{'MTV mL':>9}{'|dSUV|':>8}{'>2.5':>6}{'empty':>6}"
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lines.append(f"{name:<34}{r['n']:>4}{r['dice']:>8.3f}{r['hd95_mm']:>8.1f}{r['mtv_abs_error_pct']:>8.0f}"
                     f"{r['mtv_error_ml']:>9.1f}{r['suvmean_abs_error']:>8.2f}{r.get('above_suv2.5', ''):>6}"
                     f"{r['empty']:>6}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    """The benchmark (see the module docstring); returns the JSON record."""
    from unipet.checkpoint import default_checkpoint

    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-bench-real-"))
    work.mkdir(parents=True, exist_ok=True)
    case_ids = list(TINY_CASES) if args.tiny else selected_cases(args.cases, args.folds, args.fold)
    manifest = real_manifest(work, args.data, case_ids)
    checkpoints = args.checkpoint or [default_checkpoint()]
    per_method = {f"baseline {m}": cases for m, cases in score_baselines(manifest, work).items()}
    models = {}
    for ckpt in checkpoints:
        scores, info = score_checkpoint(ckpt, manifest, work, args.tasks.split(",") if args.tasks else None,
                                        args.device, args.tta)
        models[str(ckpt)] = info
        per_method.update({f"{ckpt.name} --task {p}": cases for p, cases in scores.items()})
    reference = per_method["baseline suv2.5"]
    rows = {name: mean_row(cases, reference) for name, cases in per_method.items()}
    return {"benchmark": "real", "data": str(args.data), "cases": sorted(reference),
            "selection": {"cases_file": str(args.cases) if args.cases else None,
                          "folds_file": str(args.folds) if args.folds else None, "fold": args.fold},
            "licence": "CC BY 3.0 (Vallieres et al. 2015; TCIA Soft-tissue-Sarcoma, DOI 10.7937/K9/TCIA.2015.7GO2GSKS)",
            "tta": args.tta, "models": models, "rows": rows, "per_case": per_method}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="autoPET-layout folder of real studies")
    p.add_argument("--checkpoint", action="append", type=Path, default=None,
                   help="checkpoint / run folder to score (repeatable; default: the shipped default)")
    p.add_argument("--tasks", default="", help="prompts to score (comma-separated; default: the checkpoint's "
                   "whole task set); auto is always added when the checkpoint has a task classifier")
    p.add_argument("--cases", type=Path, help="score only these case ids (JSON list or one a line)")
    p.add_argument("--folds", type=Path, help="folds file {k, seed, folds: {case_id: fold}} (with --fold)")
    p.add_argument("--fold", type=int, help="score only the held-out cases of this fold")
    p.add_argument("--tta", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--work", type=Path)
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--tiny", action="store_true", help=f"CPU smoke check on {', '.join(TINY_CASES)}")
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not (args.data / "README.md").exists() and not any(args.data.glob("*/*/SUV.nii.gz")):
        sys.exit(f"no real cohort in {args.data}; give --data (an autoPET-layout folder)")
    results = run(args)
    print(table(results["rows"]), file=sys.stderr)
    emit(results, args.out)


def emit(results: dict, out: Path | None) -> None:
    """Print the JSON record (stdout) and write it to ``out`` too when given."""
    text = json.dumps(results, indent=2, default=str)
    if out:
        out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
