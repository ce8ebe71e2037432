"""MAST-Pro's claim on real PET (issue 25, claim 2; seed 001): parameter-efficient adaptation to a rare type. JSON out.

A MAST-Pro is pre-trained once on the phantom cohort's training studies (``real_cv.pretrain``: the 4 phantom
types of the 5-task set ``default_sarcoma``; the sarcoma's experts, router and class query exist but receive no
gradient there) and then adapted to the real sarcomas of every fold (``real_cv``: patient-level 5-fold
cross-validation, 7 held-out patients per fold) with k = 1, 5 and all 28 training cases of the fold (the same draw
for every arm of a fold), by

- **full fine-tuning** (every parameter), and
- **PEFT** (``trainable="peft"``: the D-MoE experts, routers and the heads; the Swin UNETR backbone and the
  prompt attention frozen — the paper's parameter-efficient setting),

same recipe, patch, iterations and augmentation. The claim (Meng et al., MICCAI 2025): PEFT keeps most of full
fine-tuning's Dice with about 91 % fewer trained parameters. It is read per k from the paired test of
PEFT - full (``unipet compare``): **holds** when the 95 % interval of the difference lies above -``MARGIN``
(PEFT loses less than 0.05 Dice), **does not hold** when it lies below, else inconclusive. Each arm also reports
its trained parameters, its peak training memory (the peak resident set size of a few training steps of the arm
in a fresh process, measured once per scope — full or PEFT, the same patch and batch at every k — on fold 0's
cases of its first arm: ``VmHWM`` of ``/proc/self/status`` reset just before training, as ``bench_mastpro``'s CPU
probe; it includes the interpreter, so the RSS before training is given too) and its CPU seconds per fold.

Settings (unipet's choices for 2 CPU cores; each says its source): the model is ``bench_mastpro``'s ``--cpu``
configuration (Swin UNETR-12, depths 2-2-2-2, window 4, 8 generic + 4 per-task rank-4 experts, top-4), its text
prompts from the ``hash`` encoder (no MiniLM on the machine: deterministic codes of the knowledge sentences
without their semantics) and **without anatomical prompts** (``use_anatomy=False``: the real crops have no organ
maps, and the model refuses a prediction without one); patch 64 x 32 x 32 (Swin UNETR needs multiples of 32 and
more than one bottleneck voxel; the crops are about 33^3 voxels, so the patch holds the whole crop); batch 2;
the ``mastpro`` recipe (AdamW, cosine, grad clip 1) at lr 5e-4 with 5 % warm-up (``bench_mastpro --cpu``'s),
``real_cv``'s sampling and augmentation. The plain STU-Net-S from scratch (``real_cv.plain_stunet``, the runs
shared with claim 1's table) and the SUV rules are the baselines.

    flock /tmp/unipet-bench.lock python benchmarks/bench_real_mastpro.py --work /tmp/r25 --threads 1 \\
        --out benchmarks/results/real_mastpro.json
    python benchmarks/bench_real_mastpro.py --tiny
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import real_cv
from real_cv import TASK, Arm

ITERATIONS = 60  # fine-tuning steps per fold and arm (2 CPU cores; see RESULTS.md for the seconds)
PRETRAIN_ITERATIONS = 300  # the phantom pre-training (bench_mastpro --cpu's)
STUNET_ITERATIONS = 250  # the shared plain STU-Net-S runs (claim 1's budget: bench_real_dpdnet.ITERATIONS)
SHOTS = (1, 5, None)  # k training sarcomas of a fold (None: all 28)
MARGIN = 0.05  # PEFT "keeps most" of full fine-tuning's Dice: it loses less than this
PATCH = [64, 32, 32]
PROBE_ITERATIONS = 3  # training steps of each memory probe
CPU_KW = {"feature_size": 12, "depths": [2, 2, 2, 2], "window_size": 4, "attention_heads": 4,
          "anatomy_widths": [8, 16, 32], "expert_rank": 4, "generic_experts": 8, "task_experts": 4,
          "top_k_general": 4, "top_k_task": 4, "proposal_hidden": 64, "text_encoder": "hash", "use_anatomy": False}
TINY_KW = {"feature_size": 12, "depths": [1, 1, 1, 1], "window_size": 4, "attention_heads": 4,
           "anatomy_widths": [4, 8, 8], "expert_rank": 2, "generic_experts": 4, "task_experts": 2,
           "top_k_general": 2, "top_k_task": 2, "proposal_hidden": 16, "text_encoder": "hash", "use_anatomy": False}


def shot_label(k: int | None) -> str:
    return "all" if k is None else f"k{k}"


def mastpro_recipe(iterations: int, tiny: bool) -> dict:
    """``real_cv.recipe`` on the ``mastpro`` recipe: lr 5e-4, 5 % warm-up, patch ``PATCH`` (see the docstring)."""
    rec = real_cv.recipe(iterations, tiny, base="mastpro", lr=5e-4, warmup_iterations=max(0, iterations // 20))
    return dict(rec, patch_size=PATCH, checkpoint_every=max(2, iterations) if tiny else 100)


def arms(s: real_cv.Setup, pretrained: Path, iterations: int, shots=SHOTS) -> list[Arm]:
    """Full fine-tuning and PEFT at every k, from the same phantom pre-training."""
    kw = TINY_KW if s.tiny else CPU_KW
    rec = mastpro_recipe(iterations, s.tiny)
    out = []
    for k in shots:
        for trainable, what in (("all", "every parameter"), ("peft", "experts, routers and heads only")):
            out.append(Arm(f"mastpro-{'full' if trainable == 'all' else 'peft'}-{shot_label(k)}", "mastpro", kw, rec,
                           init=str(pretrained), trainable=trainable, shots=k,
                           notes=f"phantom-pretrained MAST-Pro, {what} fine-tuned on "
                                 f"{'all' if k is None else k} training sarcoma(s) of the fold"))
    return out


def pretrain_arm(s: real_cv.Setup, iterations: int) -> Arm:
    """MAST-Pro on the phantom training studies (4 types of the 5-task set), from scratch."""
    rec = mastpro_recipe(iterations, s.tiny)
    return Arm("mastpro-pretrain", "mastpro", TINY_KW if s.tiny else CPU_KW, rec, prompts=(),
               notes="phantom pre-training: every parameter, the phantom cohort's training split")


def memory(s: real_cv.Setup, arm: Arm, threads: int) -> dict:
    """Peak training memory of ``arm`` (``PROBE_ITERATIONS`` steps on fold 0's cases, fresh process), kept in
    ``WORK/runs/<arm>/memory.json`` for the arm's configuration."""
    store = s.work / "runs" / arm.name / "memory.json"
    if store.exists():
        saved = json.loads(store.read_text())
        if saved.get("hash") == arm.config_hash():
            return saved["memory"]
    cases = real_cv.training_cases(s, s.fold_ids()[0], arm.shots, arm.fraction)
    with tempfile.TemporaryDirectory(prefix="mastpro-probe-") as tmp:
        spec = {"cache": str(s.cache.root), "arm": asdict(arm), "cases": cases, "threads": threads,
                "run": str(Path(tmp) / "run")}
        proc = subprocess.run([sys.executable, __file__, "--probe", json.dumps(spec)], capture_output=True, text=True,
                              check=False)
    if proc.returncode != 0:
        sys.exit(f"memory probe of {arm.name} failed:\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps({"hash": arm.config_hash(), "memory": row}, indent=1))
    return row


def _probe(spec: dict) -> None:
    """Child process of ``memory``: a few training steps of the arm; prints its peak RSS as one JSON line."""
    import torch
    from bench_mastpro import _reset_peak_rss, _status_kib

    from unipet.data.cache import Cache
    from unipet.train import train

    torch.set_num_threads(int(spec["threads"]))
    arm = Arm(**{**spec["arm"], "prompts": tuple(spec["arm"]["prompts"])})
    run = Path(spec["run"])
    run.mkdir(parents=True)
    rec = dict(arm.recipe, cases=spec["cases"], iterations=PROBE_ITERATIONS, checkpoint_every=10 ** 9,
               warmup_iterations=0)
    (run / "recipe.json").write_text(json.dumps(rec))
    before = _reset_peak_rss()
    result = train(Cache(spec["cache"]), arm.model, run / "out", recipe=run / "recipe.json", model_kw=arm.model_kw,
                   device="cpu", progress=False, tensorboard=False, init_from=arm.init, trainable=arm.trainable)
    print(json.dumps({"measure": "peak RSS during training (VmHWM, /proc/self/status)",
                      "peak_gib": round(_status_kib("VmHWM") / 2 ** 20, 3),
                      "rss_before_train_gib": round(before / 2 ** 20, 3), "probe_iterations": PROBE_ITERATIONS,
                      "trained_parameters": sum(p.numel() for p in result.model.parameters() if p.requires_grad)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    real_cv.common_args(p)
    p.add_argument("--pretrain-iterations", type=int, default=None, help="phantom pre-training steps (default 300)")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.probe:
        _probe(json.loads(args.probe))
        return
    s = real_cv.start(args)
    iterations = args.iterations or (2 if args.tiny else ITERATIONS)
    pre_its = args.pretrain_iterations or (2 if args.tiny else PRETRAIN_ITERATIONS)
    shots = (1, None) if args.tiny else SHOTS
    pre = pretrain_arm(s, pre_its)
    pretrained = real_cv.pretrain(s, pre, args.threads)
    pre_budget = json.loads((pretrained / "budget.json").read_text())
    table_arms = arms(s, pretrained, iterations, shots)
    plain = real_cv.plain_stunet(2 if args.tiny else STUNET_ITERATIONS, s.tiny)
    results = {a.name: real_cv.run_arm(s, a, args.threads, args.folds) for a in table_arms + [plain]}
    probes: dict[str, dict] = {}  # peak memory depends on the scope, not on k (same patch and batch): one per scope
    for a in table_arms:
        if a.trainable not in probes:
            probes[a.trainable] = memory(s, a, args.threads)
        results[a.name]["budget"]["memory"] = probes[a.trainable]
    comparisons = []
    for k in shots:
        full, peft = f"mastpro-full-{shot_label(k)}", f"mastpro-peft-{shot_label(k)}"
        comparisons.append((full, peft, f"PEFT keeps full fine-tuning's Dice within {MARGIN} at "
                                        f"k = {'all' if k is None else k}", MARGIN))
    comparisons.append(("stunet-s-scratch", "mastpro-full-all", "pre-trained MAST-Pro (full) > plain STU-Net-S"))
    doc = real_cv.table(s, results, comparisons)
    full_p = results[f"mastpro-full-{shot_label(None)}"]["budget"]["trained_parameters"]
    peft_p = results[f"mastpro-peft-{shot_label(None)}"]["budget"]["trained_parameters"]
    doc["claim"] = ("MAST-Pro (seed 001): PEFT keeps most of full fine-tuning's Dice on a rare type with about "
                    "91 % fewer trained parameters")
    doc["trained_parameter_reduction_pct"] = round(100.0 * (1 - peft_p / full_p), 2)
    doc["pretrain"] = {"run": str(pretrained), "iterations": pre_budget["iterations"], "train_s": pre_budget["train_s"],
                       "cases": len(real_cv.phantom_training(s)), "model_kw": pre.model_kw}
    doc["settings"] = {"iterations": iterations, "patch": PATCH, "batch": pre.recipe["batch_size"],
                       "lr": pre.recipe["lr"], "shots": [shot_label(k) for k in shots], "margin": MARGIN,
                       "threads": args.threads, "plain_stunet_iterations": plain.recipe["iterations"]}
    real_cv.print_table(doc)
    real_cv.write(doc, args.out)


if __name__ == "__main__":
    main()
