"""Prediction speed for an autoPET-size study (400x400x326 voxels). Prints JSON.

End to end (NIfTI in -> mask NIfTI + lesion table out, through ``unipet.infer.predict_batch``) without TTA and
with 8x mirroring, in wall seconds and CPU seconds; plus the sliding window alone against MONAI's plain
``sliding_window_inference`` over the same network and preprocessed volume (Gaussian blending, same overlap
and tile batch, bf16 autocast on CUDA) as the reference.

GPU run (DpDNet / STU-Net-S at the training patch 112x160x128, random weights unless --checkpoint)::

    python benchmarks/bench_predict.py --device cuda

CPU smoke check::

    python benchmarks/bench_predict.py --tiny
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

AUTOPET_SHAPE = (326, 400, 400)  # (z, y, x)
AUTOPET_SPACING = (3.0, 2.0364, 2.0364)  # mm


def synthetic_study(root: Path, shape, spacing, seed: int = 0) -> None:
    """One study in the autoPET layout: an elliptic body (CT 40 HU, SUV ~1), air around, 12 hot spheres."""
    from unipet.io.nifti import save_volume
    from unipet.study import make_affine

    rng = np.random.default_rng(seed)
    z, y, x = shape
    yy, xx = np.ogrid[:y, :x]
    body2d = ((yy - y / 2) / (0.38 * y)) ** 2 + ((xx - x / 2) / (0.45 * x)) ** 2 <= 1
    body = np.broadcast_to(body2d, shape)
    ct = np.where(body, np.float32(40.0), np.float32(-1000.0)).astype(np.float32)
    pet = np.where(body, np.float32(1.0), np.float32(0.0)).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    for _ in range(12):
        c = rng.uniform([0.1 * z, 0.35 * y, 0.3 * x], [0.9 * z, 0.65 * y, 0.7 * x]).astype(int)
        r = int(rng.integers(2, 8))
        sl = tuple(slice(max(0, ci - r), min(n, ci + r + 1)) for ci, n in zip(c, shape))
        zz, yy3, xx3 = np.ogrid[sl]
        ball = (zz - c[0]) ** 2 + (yy3 - c[1]) ** 2 + (xx3 - c[2]) ** 2 <= r * r
        label[sl][ball], pet[sl][ball] = 1, rng.uniform(4, 15)
    affine = make_affine(spacing)
    d = root / "p000" / "s000"
    for name, vol in (("SUV", pet), ("CTres", ct), ("SEG", label)):
        save_volume(vol, affine, d / f"{name}.nii.gz")
    (root / "clinical.csv").write_text("study_id,patient_id,task\ns000,p000,lymphoma\n")


def random_checkpoint(run: Path, patch, model_kw: dict) -> Path:
    """A checkpoint of a randomly initialised model with nnU-Net-style normalisation (for speed only)."""
    import torch

    from unipet.data.normalize import make_spec
    from unipet.data.preprocess import PreprocessConfig
    from unipet.models import create
    from unipet.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create("dpdnet", in_channels=2, num_classes=2, tasks="default", patch_size=patch, **model_kw)
    stats = {"intensity": {"CT": {"mean": 30.0, "std": 120.0, "p00_5": -900.0, "p99_5": 1200.0},
                           "PET": {"mean": 2.0, "std": 3.0, "p00_5": 0.0, "p99_5": 20.0}}}
    cfg = PreprocessConfig(channels=("CT", "PET"), normalisation={"CT": make_spec("ct-zscore", stats),
                                                                  "PET": make_spec("suv-zscore", stats)})
    meta = {"model": model.config, "preprocess": cfg.to_dict(), "patch_size": list(patch), "channels": ["CT", "PET"]}
    return save_checkpoint(run, model, meta)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="trained checkpoint (default: random DpDNet weights)")
    p.add_argument("--device", default="auto")
    p.add_argument("--patch", type=int, nargs=3, default=(112, 160, 128))
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--tile-batch", type=int, default=2)
    p.add_argument("--work", type=Path)
    p.add_argument("--skip-tta", action="store_true", help="skip the 8x mirroring run")
    p.add_argument("--tiny", action="store_true", help="CPU smoke check: 48x64x64 volume, tiny model and patch")
    args = p.parse_args()

    import torch
    from monai.inferers import sliding_window_inference

    from unipet.data.preprocess import preprocess_study
    from unipet.infer import Predictor, predict_batch
    from unipet.io.layouts import import_phantom
    from unipet.io.manifest import load_study

    shape, spacing, model_kw = AUTOPET_SHAPE, AUTOPET_SPACING, {}
    if args.tiny:
        shape, args.patch, args.device, model_kw = (48, 64, 64), (16, 32, 32), "cpu", {"base_width": 4, "min_feature": 2}
    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-bench-predict-"))
    data = work / "data"
    if not (data / "clinical.csv").exists():
        synthetic_study(data, shape, spacing)
    ckpt = args.checkpoint or random_checkpoint(work / "run", args.patch, model_kw)

    out: dict = {"benchmark": "predict", "study_shape_zyx": list(shape), "spacing_mm": list(spacing),
                 "overlap": args.overlap, "tile_batch": args.tile_batch, "end_to_end_s": {}, "cpu_s": {}}
    for name, tta in (("no_tta", False), ("tta_8x", True)):
        if tta and args.skip_tta:
            continue
        predictor = Predictor.from_checkpoint(ckpt, device=args.device, overlap=args.overlap, tta=tta,
                                              tile_batch=args.tile_batch)
        if predictor.device.type == "cuda":  # warm-up: CUDA context, cuDNN plans
            predictor.probabilities(np.zeros((2, *predictor.patch), np.float32), task=0)
            torch.cuda.synchronize()
        dest = work / f"pred-{name}-{time.time_ns()}"
        wall, cpu = time.perf_counter(), time.process_time()
        report = predict_batch(predictor, data, dest, task="lymphoma")
        out["end_to_end_s"][name] = round(time.perf_counter() - wall, 3)
        out["cpu_s"][name] = round(time.process_time() - cpu, 3)
        if report.failed:
            raise SystemExit(f"prediction failed: {report.failed}")
        out.setdefault("lesions_found", report.records[0]["lesions"])
    out["device"] = str(predictor.device) + (f" ({torch.cuda.get_device_name(predictor.device)})"
                                             if predictor.device.type == "cuda" else "")
    out["patch"] = list(predictor.patch)

    # the sliding window alone: unipet's predictor vs MONAI's plain call, same network and volume
    manifest = import_phantom(data)
    study = load_study(manifest.cases[0], manifest.task_set, with_label=False)
    pre = preprocess_study(study, predictor.config, with_label=False)
    out["preprocessed_shape"] = list(pre.image.shape[1:])
    plain = Predictor.from_checkpoint(ckpt, device=args.device, overlap=args.overlap, tile_batch=args.tile_batch)
    model, dev = plain.model, plain.device

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    t = time.perf_counter()
    plain.probabilities(pre.image, task=0)
    sync()
    out["sliding_window_s"] = {"unipet": round(time.perf_counter() - t, 3)}
    x = torch.from_numpy(pre.image)[None].to(dev)
    task = torch.zeros(args.tile_batch, dtype=torch.long, device=dev)
    t = time.perf_counter()
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        sliding_window_inference(x, predictor.patch, args.tile_batch, lambda tiles: model(tiles, task=task[:len(tiles)]),
                                 overlap=args.overlap, mode="gaussian", sigma_scale=0.125)
    sync()
    out["sliding_window_s"]["monai_plain"] = round(time.perf_counter() - t, 3)
    if dev.type == "cuda":
        out["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2 ** 30, 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
