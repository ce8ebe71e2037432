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

    python benchmarks/bench_real_dpdnet.py --work /tmp/r25 --out dpdnet-real.json
    python benchmarks/bench_real_dpdnet.py --tiny
"""
from __future__ import annotations

import argparse

import real_cv
from real_cv import TASK, Arm

ITERATIONS = 250  # per fold and arm; 2 CPU cores (see RESULTS.md for the seconds)


def arms(s: real_cv.Setup, iterations: int) -> list[Arm]:
    """DpDNet (prompted), STU-Net (no prompt), UniSeg (prompted), all from the same pre-training; the plain
    STU-Net-S from scratch."""
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
        real_cv.plain_stunet(iterations, s.tiny),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    real_cv.common_args(p)
    args = p.parse_args()
    s = real_cv.start(args)
    results = {a.name: real_cv.run_arm(s, a, args.threads, args.folds) for a in arms(s, args.iterations or ITERATIONS)}
    doc = real_cv.table(s, results, [
        ("stunet-ft", "dpdnet-ft", "prompts help: DpDNet > the same STU-Net without prompts"),
        ("uniseg-ft", "dpdnet-ft", "DpDNet's prompts > UniSeg's prompt"),
        ("stunet-s-scratch", "dpdnet-ft", "pre-trained prompted > plain STU-Net-S from scratch"),
    ])
    doc["claim"] = "DpDNet (seed 000): cancer-specific and common prompts help a new cancer type"
    real_cv.print_table(doc)
    real_cv.write(doc, args.out)


if __name__ == "__main__":
    main()
