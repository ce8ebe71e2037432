"""DpDNet's claim on real PET (issue 25, claim 1; seed 000): do prompts help a new cancer type? JSON out.

Sarcoma becomes a new cancer-specific prompt of the phantom-pretrained DpDNet (the default v2, 4 phantom types,
grown to 5 with ``unipet.models.task_growth``: the sarcoma prompt, gates and head start as lymphoma's), against the
same network without prompts (STU-Net with the same widths, its tensors copied by name from the same checkpoint)
and against UniSeg's prompt (UniSeg on the same STU-Net, encoder and decoder copied by name, its prompt new), all
fine-tuned on the same folds with the same patch, iterations, learning rate and augmentation (``real_cv``).
DpDNet is also run with ``--task auto`` on its held-out folds (the prompt-free path; its classifier was fine-tuned
on sarcomas alone, so this row shows that the path works on real crops, not that it tells types apart).

The paper (Xue et al.) fine-tunes STU-Net pre-trained on TotalSegmentator; here every arm starts from the
phantom pre-training of the shipped default (unipet's substitute: the only pre-training on the machine). The
comparisons of the claim: DpDNet vs STU-Net (prompts help) and DpDNet vs UniSeg (DpDNet's prompts beat UniSeg's).

``--few-shot`` (issue 24, part 4) draws the few-shot curve of the new prompt instead: DpDNet from the same
pre-training and the same network from scratch (every parameter trained, output prior 0.01), each on k = 1, 5, 10
and all 28 training sarcomas of every fold (the same k cases for both), same iterations; the pre-trained "all"
point is the claim's ``dpdnet-ft`` run.

    python benchmarks/bench_real_dpdnet.py --work /tmp/r25 --out dpdnet-real.json
    python benchmarks/bench_real_dpdnet.py --work /tmp/r25 --few-shot --out dpdnet-fewshot.json
    python benchmarks/bench_real_dpdnet.py --tiny [--few-shot]
"""
from __future__ import annotations

import argparse

import real_cv
from real_cv import TASK, Arm

ITERATIONS = 250  # per fold and arm; 2 CPU cores (see RESULTS.md for the seconds)
SHOTS = (1, 5, 10, None)  # None: all of the fold's training sarcomas


def arms(s: real_cv.Setup, iterations: int) -> list[Arm]:
    """DpDNet (prompted), STU-Net (no prompt), UniSeg (prompted), all from the same pre-training; DpDNet with only
    its new head trained; the plain STU-Net-S from scratch."""
    kw = real_cv.pretrained_kwargs(s.pretrained)
    width = {k: kw[k] for k in ("base_width", "min_feature", "strides") if k in kw}
    donor = "lymphoma"
    rec = real_cv.recipe(iterations, s.tiny)
    init = str(s.pretrained)
    return [
        Arm("dpdnet-ft", "dpdnet", kw, dict(rec, task_donors={TASK: donor}), init=init, prompts=(TASK, "auto"),
            notes=f"phantom-pretrained DpDNet, sarcoma prompt grown from {donor}, every parameter fine-tuned"),
        Arm("stunet-ft", "stunet-s", width, rec, init=init, prompts=(None,),
            notes="the same STU-Net without prompts, same pre-training, every parameter fine-tuned"),
        Arm("uniseg-ft", "uniseg", dict(width, task_classifier=False), rec, init=init, prompts=(TASK,),
            notes="UniSeg's prompt on the same STU-Net, same pre-training (prompt new), every parameter fine-tuned"),
        Arm("dpdnet-newhead", "dpdnet", kw, dict(rec, task_donors={TASK: donor}), init=init, trainable="new-head",
            prompts=(TASK,), notes="the same, but only the sarcoma prompt-aware head trained (the default v4's scope: "
            "every other type's masks stay bit-identical)"),
        real_cv.plain_stunet(iterations, s.tiny),
    ]


def few_shot_arms(s: real_cv.Setup, iterations: int) -> list[tuple[Arm, Arm]]:
    """``(pre-trained, scratch)`` DpDNet pairs for every k of ``SHOTS`` (tiny: k = 1 and all)."""
    pretrained = arms(s, iterations)[0]
    scratch_recipe = {k: v for k, v in pretrained.recipe.items() if k != "task_donors"}
    scratch_recipe["prior_init"] = 0.01
    pairs = []
    for k in (1, None) if s.tiny else SHOTS:
        tag = "all" if k is None else f"k{k}"
        pre = pretrained if k is None else Arm(f"dpdnet-ft-{tag}", "dpdnet", pretrained.model_kw, pretrained.recipe,
                                               init=pretrained.init, shots=k, prompts=(TASK,),
                                               notes=f"{pretrained.notes}; {k} training sarcoma(s)")
        pairs.append((pre, Arm(f"dpdnet-scratch-{tag}", "dpdnet", pretrained.model_kw, scratch_recipe, shots=k,
                               prompts=(TASK,), notes=f"the same DpDNet from scratch; {tag} training sarcomas")))
    return pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    real_cv.common_args(p)
    p.add_argument("--few-shot", action="store_true", help="the few-shot curve (issue 24) instead of the claim")
    args = p.parse_args()
    s = real_cv.start(args)
    if args.few_shot:
        pairs = few_shot_arms(s, args.iterations or ITERATIONS)
        results = {a.name: real_cv.run_arm(s, a, args.threads, args.folds) for pair in pairs for a in pair}
        results = {name: {**r, "per_case": {TASK: r["per_case"][TASK]}} for name, r in results.items()}
        doc = real_cv.table(s, results, [(b.name, a.name, f"pre-trained > scratch with {a.shots or 'all'} case(s)")
                                         for a, b in pairs])
        doc["claim"] = "few-shot curve of a new prompt: pre-trained default vs from scratch (issue 24, part 4)"
        real_cv.print_table(doc)
        real_cv.write(doc, args.out)
        return
    results = {a.name: real_cv.run_arm(s, a, args.threads, args.folds) for a in arms(s, args.iterations or ITERATIONS)}
    doc = real_cv.table(s, results, [
        ("stunet-ft", "dpdnet-ft", "prompts help: DpDNet > the same STU-Net without prompts"),
        ("uniseg-ft", "dpdnet-ft", "DpDNet's prompts > UniSeg's prompt"),
        ("stunet-s-scratch", "dpdnet-ft", "pre-trained prompted > plain STU-Net-S from scratch"),
        ("dpdnet-newhead", "dpdnet-ft", "fine-tuning the whole network > only the new prompt-aware head"),
    ])
    doc["claim"] = "DpDNet (seed 000): cancer-specific and common prompts help a new cancer type"
    real_cv.print_table(doc)
    real_cv.write(doc, args.out)


if __name__ == "__main__":
    main()
