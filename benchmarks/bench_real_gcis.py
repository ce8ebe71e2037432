"""gCIS's claim on real PET (issue 25, claim 3; seed 002): few-shot adaptation by routing. JSON out.

A gCIS is pre-trained once on the phantom cohort's training studies (``real_cv.pretrain``: the 4 phantom lesion
types of the 5-task set ``default_sarcoma``; no organ tasks — the real-PET cache holds none) and then adapted to
the real sarcomas of every fold (``real_cv``'s patient-level 5-fold cross-validation) from k = 1 and 5 training
cases of the fold (the same draw for every arm of a fold) in three ways, same recipe, patch and iterations:

- **adapt** (``unipet gcis adapt``, ``unipet.train.gcis.adapt``): the sarcoma prompt is routed by the pre-trained
  routers, the model pruned to that single path and its encoder frozen; the kept decoder path and heads train;
- **fine-tune**: the whole (unpruned) gCIS, every parameter, from the same pre-training;
- **scratch**: the same single-path network as *adapt* (the same route) from random initialisation, every
  parameter trainable (``adapt(from_scratch=True)``).

Claim (Ouyang et al. 2024): routing a new prompt to the pre-trained paths makes few-shot adaptation work. Read
per k from ``unipet compare``'s paired tests: adapt > scratch (holds when the 95 % interval of the difference
lies above 0) and adapt no worse than fine-tuning the whole gCIS by more than ``MARGIN`` Dice. And the pruned
one-task model gives the same masks as the full one: every fine-tuned full gCIS of a fold is exported to its
sarcoma path (``unipet.analysis.gcis.export``) and both predict the fold's held-out real crops (sliding window
of ``unipet.infer``); the voxels that differ are counted per fold.

Settings (unipet's choices for 2 CPU cores; each says its source): ``bench_gcis``'s ``--cpu`` widths (Swin
feature size 12, heads 1/2/4/8, window 4, decoder 8/8/16/32/64, bottleneck 32, router hidden 64; 6 paths x 7
routed modules as the paper) with the ``hash`` text encoder (MiniLM is not installed here: the prompts are
deterministic codes of the task descriptions without their semantics, so the sarcoma's route reflects no
knowledge of what a sarcoma is — a limit of this test of routing); patch 64 x 32 x 32 (gCIS needs multiples of 32
and more than one bottleneck voxel; the crops are about 33^3 voxels); batch 2; ``real_cv``'s cache (CT z-score,
not the gCIS cache's CT window: one normalisation for every claim) with its sampling and augmentation; the
``gcis`` recipe for the pre-training (AdamW, one cosine cycle, lr 1e-3, multi-spacing off: ``bench_gcis --cpu``)
and ``gcis-adapt`` (AdamW, cosine) at lr 1e-3 for every adaptation arm. Baselines: the SUV rules and the plain
STU-Net-S from scratch (``real_cv.plain_stunet``, the runs shared with claim 1's table).

    flock /tmp/unipet-bench.lock python benchmarks/bench_real_gcis.py --work /tmp/r25 --threads 1 \\
        --out benchmarks/results/real_gcis.json
    python benchmarks/bench_real_gcis.py --tiny
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import real_cv
from bench_gcis import CPU_MODEL, TINY_MODEL
from bench_mastpro import subset_cache
from real_cv import TASK, Arm

ITERATIONS = 60  # steps of every adaptation run (2 CPU cores; see RESULTS.md for the seconds)
PRETRAIN_ITERATIONS = 300  # the phantom pre-training
STUNET_ITERATIONS = 250  # the shared plain STU-Net-S runs (claim 1's budget: bench_real_dpdnet.ITERATIONS)
SHOTS = (1, 5)
MARGIN = 0.05  # adapt "matches" fine-tuning the whole gCIS: it loses less than this
PATCH = [64, 32, 32]
LR = 1e-3


def model_kw(tiny: bool) -> dict:
    return {**(TINY_MODEL if tiny else CPU_MODEL), "text_encoder": "hash"}


def gcis_recipe(base: str, iterations: int, tiny: bool, **overrides) -> dict:
    """``real_cv.recipe`` on the shipped gCIS recipe ``base`` at lr ``LR`` and patch ``PATCH``."""
    rec = real_cv.recipe(iterations, tiny, base=base, lr=LR, **overrides)
    return dict(rec, patch_size=PATCH, checkpoint_every=max(2, iterations) if tiny else 100)


def pretrain_arm(s: real_cv.Setup, iterations: int) -> Arm:
    """gCIS on the phantom training studies (4 lesion types of the 5-task set), from scratch."""
    rec = gcis_recipe("gcis", iterations, s.tiny, multi_spacing=None, restart_period=iterations,
                      warmup_iterations=max(1, iterations // 20))
    return Arm("gcis-pretrain", "gcis", model_kw(s.tiny), rec, prompts=(),
               notes="phantom pre-training: every parameter, the phantom cohort's training split")


def arms(s: real_cv.Setup, pretrained: Path, iterations: int, shots=SHOTS) -> dict[str, list[Arm]]:
    """``{"adapt": [...], "finetune": [...], "scratch": [...]}``, one arm per k, all from ``pretrained`` (the
    scratch arm uses it only to route the prompt)."""
    rec = gcis_recipe("gcis-adapt", iterations, s.tiny)
    kw, init = model_kw(s.tiny), str(pretrained)
    out: dict[str, list[Arm]] = {"adapt": [], "finetune": [], "scratch": []}
    for k in shots:
        out["adapt"].append(Arm(f"gcis-adapt-k{k}", "gcis", kw, rec, init=init, trainable="decoder", shots=k,
                                notes="unipet gcis adapt: route the sarcoma prompt, prune to its path, encoder "
                                      "frozen"))
        out["finetune"].append(Arm(f"gcis-ft-k{k}", "gcis", kw, rec, init=init, trainable="all", shots=k,
                                   notes="the whole phantom-pretrained gCIS, every parameter fine-tuned"))
        out["scratch"].append(Arm(f"gcis-scratch-k{k}", "gcis", kw, rec, init=init, trainable="all", shots=k,
                                  notes="the adapted arm's single-path network (same route) from random "
                                        "initialisation, every parameter"))
    return out


def adapt_fold(s: real_cv.Setup, arm: Arm, fold: int, threads: int = 1) -> dict:
    """``real_cv.run_arm``'s trainer for the adapt / scratch arms: ``unipet.train.gcis.adapt`` on the fold's k
    training sarcomas (a cache view whose training split is those cases, so ``adapt`` draws exactly them)."""
    from unipet.checkpoint import read_meta
    from unipet.train.gcis import adapt

    run = s.work / "runs" / arm.name / f"fold{fold}"
    done = real_cv.claim_run(run, arm)
    if done is not None:
        return done
    if (run / "checkpoint").exists():  # an interrupted adaptation: adapt cannot resume, start it again
        shutil.rmtree(run / "checkpoint")
    cases = real_cv.training_cases(s, fold, arm.shots, arm.fraction)
    (run / "recipe.json").write_text(json.dumps(dict(arm.recipe, cases=cases, name=arm.name), indent=1))
    t0 = time.perf_counter()
    res = adapt(arm.init, subset_cache(s.cache.root, cases), run, task=TASK, shots=len(cases),
                recipe=run / "recipe.json", device="cpu", from_scratch=arm.trainable == "all")
    if sorted(res["cases"]) != sorted(cases):
        raise RuntimeError(f"adapt trained on {res['cases']}, not the fold's draw {cases}")
    meta = read_meta(run / "checkpoint")
    record = {"train_s": round(time.perf_counter() - t0, 1), "iterations": meta.iteration,
              "trained_parameters": res["trainable_params"],
              "parameters": res["trainable_params"] + res["frozen_params"], "train_cases": len(cases),
              "threads": threads, "init_from": meta.init_from, "resumed": False, "route": res["route"]}
    (run / "budget.json").write_text(json.dumps(record, indent=1, default=str))
    return record


def pruned_vs_full(s: real_cv.Setup, run: Path, fold: int) -> dict:
    """Export the full gCIS of ``run`` to its sarcoma path and count the voxels whose label differs between the
    two on the fold's held-out crops (kept in ``run/pruned_vs_full.json``)."""
    import numpy as np

    from unipet.analysis.gcis import export
    from unipet.data.folds import fold_split
    from unipet.infer import Predictor

    done = run / "pruned_vs_full.json"
    if done.exists():
        return json.loads(done.read_text())
    record = export(run, TASK, run / "pruned", overwrite=True)
    full, pruned = Predictor.from_checkpoint(run, device="cpu"), Predictor.from_checkpoint(run / "pruned", device="cpu")
    _, held = fold_split(s.folds, fold)
    differing = voxels = foreground = 0
    for case_id in held:
        image = np.asarray(s.cache.load(case_id).image)
        a = full.segment(image, full.task_index(TASK))
        b = pruned.segment(image, pruned.task_index(TASK))
        differing += int((a != b).sum())
        voxels += a.size
        foreground += int((a > 0).sum())
    out = {"fold": fold, "cases": len(held), "voxels": voxels, "foreground_voxels_full": foreground,
           "differing_voxels": differing, "route": record["route"], "params_full": record["params_full"],
           "params_pruned": record["params_pruned"]}
    done.write_text(json.dumps(out, indent=1))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    real_cv.common_args(p)
    p.add_argument("--pretrain-iterations", type=int, default=None, help="phantom pre-training steps (default 300)")
    args = p.parse_args()
    s = real_cv.start(args)
    iterations = args.iterations or (2 if args.tiny else ITERATIONS)
    pre = pretrain_arm(s, args.pretrain_iterations or (2 if args.tiny else PRETRAIN_ITERATIONS))
    pretrained = real_cv.pretrain(s, pre, args.threads)
    pre_budget = json.loads((pretrained / "budget.json").read_text())
    groups = arms(s, pretrained, iterations)
    results, pruning = {}, {}
    for a in groups["adapt"] + groups["scratch"]:
        results[a.name] = real_cv.run_arm(s, a, args.threads, args.folds, trainer=adapt_fold)
    for a in groups["finetune"]:
        checks = pruning[a.name] = []
        results[a.name] = real_cv.run_arm(s, a, args.threads, args.folds,
                                          after_train=lambda run, fold: checks.append(pruned_vs_full(s, run, fold)))
    plain = real_cv.plain_stunet(2 if args.tiny else STUNET_ITERATIONS, s.tiny)
    results[plain.name] = real_cv.run_arm(s, plain, args.threads, args.folds)
    comparisons = []
    for k in SHOTS:
        comparisons += [(f"gcis-scratch-k{k}", f"gcis-adapt-k{k}", f"routing beats training the same path from "
                         f"scratch at k = {k}"),
                        (f"gcis-ft-k{k}", f"gcis-adapt-k{k}", f"routing keeps the whole gCIS's fine-tuned Dice within "
                         f"{MARGIN} at k = {k}", MARGIN)]
    doc = real_cv.table(s, results, comparisons)
    doc["claim"] = "gCIS (seed 002): routing a new prompt to pre-trained paths adapts to a new type from few cases"
    doc["pruned_vs_full"] = {"per_fold": pruning, "differing_voxels": sum(r["differing_voxels"] for rs in
                                                                           pruning.values() for r in rs),
                             "voxels": sum(r["voxels"] for rs in pruning.values() for r in rs)}
    doc["routes"] = {a.name: {f"fold{f}": json.loads((s.work / "runs" / a.name / f"fold{f}" / "budget.json")
                                                     .read_text())["route"] for f in args.folds or s.fold_ids()}
                     for a in groups["adapt"] + groups["scratch"]}
    doc["pretrain"] = {"run": str(pretrained), "iterations": pre_budget["iterations"], "train_s": pre_budget["train_s"],
                       "cases": len(real_cv.phantom_training(s)), "model_kw": pre.model_kw}
    doc["settings"] = {"iterations": iterations, "patch": PATCH, "batch": pre.recipe["batch_size"], "lr": LR,
                       "shots": list(SHOTS), "margin": MARGIN, "threads": args.threads,
                       "plain_stunet_iterations": plain.recipe["iterations"]}
    real_cv.print_table(doc)
    real_cv.write(doc, args.out)


if __name__ == "__main__":
    main()
