"""Per-head health of a prompted checkpoint: is every cancer type's head alive? Prints JSON.

For each task, ``--patches`` lesion patches of that task's validation cases (its training cases when the validation
split has none of its lesions) are drawn from the
cache (lesion-centred, as in training) and ``--patches`` hot-spot patches (physiological uptake outside lesions,
the sampler's ``hot`` kind); the checkpoint's model runs on them **with that task's prompt** and reports:

- ``max_margin``: the largest foreground-minus-background logit over the lesion patches (a head that collapsed
  to background has a large negative value: the shipped stage-1 heads had -27 and -8.5);
- ``lesion_recall``: the share of lesion voxels predicted foreground;
- ``hot_fp_share``: the share of hot-spot voxels (SUV >= 2.5, not lesion) predicted foreground;
- ``fg_share_train``: the share of the task's training samples holding foreground under the run's sampling mix
  (estimated from 200 draws), i.e. how often its head is told "lesion here".

Usage::

    python benchmarks/probe_heads.py CHECKPOINT --cache /tmp/d13/cache [--patches 8]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--patches", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from unipet.data.cache import Cache
    from unipet.data.sampling import PatchSampler
    from unipet.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    model, meta = load_checkpoint(args.checkpoint)[:2]
    model.eval()
    cache = Cache(args.cache)
    names = meta.task_set.names
    patch = meta.patch
    cases = cache.split("val")
    pet = list(cache.config.channels).index("PET")
    out = {"checkpoint": str(args.checkpoint), "iteration": meta.iteration, "heads": {}}
    mix = meta.sampling or {"lesion": 0.5, "random": 0.5}
    train_sampler = PatchSampler(cache, patch_size=patch, mix=mix, seed=args.seed)
    for index, task in enumerate(names):
        rng = np.random.default_rng([args.seed, index])
        def with_lesions(ids):
            return [c for c in ids if cache.info(c).get("task") == task and cache.info(c).get("lesions")]

        own = with_lesions(cases) or with_lesions(cache.split("train"))
        if not own:
            out["heads"][task] = {"error": "no case of this task with lesions in the cache"}
            continue
        sampler = PatchSampler(cache, case_ids=own, patch_size=patch, mix={"lesion": 1.0, "hot": 0.0}, seed=args.seed)
        margins, tp, fg, hot_fp, hot_n = [], 0, 0, 0, 0
        with torch.no_grad():
            for kind in ("lesion", "hot"):
                for _ in range(args.patches):
                    item = sampler.draw(rng, kind=kind, task=index)
                    x = torch.from_numpy(item.image[None])
                    logits = model(x, task=torch.tensor([index]))
                    logits = logits[0] if isinstance(logits, (list, tuple)) else logits
                    margin = (logits[0, 1] - logits[0, 0]).numpy()
                    label = item.label > 0
                    if kind == "lesion":
                        margins.append(float(margin.max()))
                        tp += int((margin > 0)[label].sum())
                        fg += int(label.sum())
                    else:
                        hot = (item.image[pet] >= sampler.hot_level) & ~label
                        hot_fp += int((margin > 0)[hot].sum())
                        hot_n += int(hot.sum())
        draws = [train_sampler.draw(np.random.default_rng([args.seed, index, k]), task=index) for k in range(200)]
        out["heads"][task] = {
            "max_margin": round(max(margins), 2), "median_patch_max_margin": round(float(np.median(margins)), 2),
            "lesion_recall": round(tp / fg, 3) if fg else None,
            "hot_fp_share": round(hot_fp / hot_n, 3) if hot_n else None,
            "fg_share_train": round(float(np.mean([d.label.any() for d in draws])), 3),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
