"""Where the time of one whole-study prediction goes, stage by stage, plus torch.profiler's top operators of the
sliding window. Prints JSON.

Stages follow ``Predictor.predict_study`` and ``write_prediction``: read the NIfTI files, preprocess (reorient,
body crop, resample to the checkpoint's spacing, normalise), the sliding window (network + stitching), back to
the input grid, the lesion table, writing. Default: the shipped checkpoint on an autoPET-grid phantom::

    unipet phantom /tmp/vsnn/autopet --n 1 --size autopet --seed 3
    python benchmarks/profile_predict.py /tmp/vsnn/autopet --tta-axes 0,1,2 > profile.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, help="autoPET-layout folder (the first study is profiled)")
    p.add_argument("--checkpoint", type=Path, help="checkpoint (default: the shipped default)")
    p.add_argument("--task", default="lymphoma")
    p.add_argument("--tile-batch", type=int, default=2)
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--top", type=int, default=12, help="torch.profiler rows to keep")
    p.add_argument("--no-torch-profile", action="store_true")
    args = p.parse_args()

    import torch

    from unipet.data.preprocess import preprocess_study, restore_to_study_grid
    from unipet.infer import Predictor
    from unipet.infer.predictor import write_prediction
    from unipet.io.layouts import import_autopet
    from unipet.io.manifest import load_study
    from unipet.checkpoint import default_checkpoint
    from unipet.components import components

    ckpt = args.checkpoint or default_checkpoint()
    predictor = Predictor.from_checkpoint(ckpt, device="cpu", overlap=args.overlap, tile_batch=args.tile_batch)
    manifest = import_autopet(args.data)
    stages: dict[str, float] = {}

    def clock(name, fn, *a, **kw):
        t = time.perf_counter()
        out = fn(*a, **kw)
        stages[name] = round(time.perf_counter() - t, 3)
        return out

    study = clock("read", load_study, manifest.cases[0], manifest.task_set, with_label=False)
    pre = clock("preprocess", preprocess_study, study, predictor.config, with_label=False)
    task = predictor.task_index(args.task)
    prob = clock("sliding_window", predictor.probabilities, pre.image, task, pre.organs)
    fg = prob[1].cpu().numpy()
    mask = clock("restore", restore_to_study_grid, fg, pre, order=1, fill=0.0, threshold=0.5)
    _, comps = clock("components", components, mask > 0, study.spacing, study.affine, connectivity=18)
    out_dir = Path(args.data).parent / f"profile-{time.time_ns()}"
    from unipet.infer.predictor import Prediction

    clock("write", write_prediction, Prediction(mask=mask, task=args.task, task_probability=None, lesions=comps),
          study, out_dir)
    out = {"benchmark": "profile_predict", "checkpoint": str(ckpt), "study_shape_zyx": list(study.shape),
           "preprocessed_shape_zyx": list(pre.image.shape[1:]), "patch": list(predictor.patch),
           "threads": torch.get_num_threads(), "tiles": predictor.last_tiles, "stages_s": stages, "total_s": round(sum(stages.values()), 3)}
    if not args.no_torch_profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            predictor.probabilities(pre.image, task, pre.organs)
        rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in rows) or 1
        out["torch_profile_top"] = [{"op": e.key, "self_cpu_s": round(e.self_cpu_time_total / 1e6, 3),
                                     "share": round(e.self_cpu_time_total / total, 3), "calls": e.count}
                                    for e in rows[:args.top]]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
