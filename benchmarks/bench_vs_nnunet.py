"""unipet vs nnU-Net v2 on the CPU, side by side on the same machine and studies. Prints JSON.

Needs nnU-Net v2 (the ``[bench]`` extra), best in a venv of its own so that the main one stays clean::

    python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install torch==2.13.0
    /tmp/bench-venv/bin/pip install -c constraints.txt -e ".[bench]"     # constraints.txt: torch==2.13.0

Parts (``--parts``, comma separated; ``layout`` times one forward per memory layout and precision; each engine runs in a subprocess of its own, one after the other; wall and
CPU seconds per study and the process's peak resident memory (``VmHWM``, and ``ru_maxrss`` of the process tree)):

``same``  the same network, two engines. A small phantom cohort (``unipet phantom`` → ``unipet import`` →
          ``unipet to-nnunet``) is planned and preprocessed by nnU-Net (``nnUNetv2_plan_and_preprocess``,
          ``-gpu_memory_target`` small so that a 5 mm phantom needs several tiles). From those plans: nnU-Net's own
          network class (``PlainConvUNet``, untrained, weights saved as nnU-Net saves them in
          ``fold_0/checkpoint_final.pth``) and unipet's ``nnunet`` model at the same stages, kernels, strides,
          widths, patch and spacing, with the **same weights** (mapped name by name; the forward outputs are
          compared). Both normalise every channel with nnU-Net's ``CTNormalization`` (clip to the dataset's
          foreground 0.5/99.5 percentiles, z-score with its mean/std; the plans are set to it for PET too, since
          unipet records fixed dataset statistics, not per-image ones). Then ``nnUNetPredictor`` (its
          ``predict_from_files_sequential``) and unipet's ``predict_batch`` (what ``unipet predict`` runs), NIfTI in
          → mask NIfTI out, overlap 0.5, one tile per forward (nnU-Net's only choice), without and with 8x
          mirroring. Agreement: the preprocessed arrays of both engines, and the masks (Dice, voxel agreement).
``user``  each with its defaults on an autoPET-grid study (326x400x400 at 3x2.04x2.04 mm, a ``--size autopet``
          phantom): nnU-Net's default 3d_fullres plan of autoPET-grid phantoms (default GPU-memory target, its
          ``PlainConvUNet``, **untrained weights: the time does not depend on them**) vs ``unipet predict`` with
          the shipped default checkpoint. nnU-Net's full sliding window at this size takes far more than this
          machine's benchmark budget, so its time is composed of measured parts, run as nnU-Net runs them:
          preprocessing (``run_case``), the sliding window's own work (``predict_sliding_window_return_logits``
          with the network swapped for one that returns zeros of the right shape: Gaussian, accumulation,
          buffers), the network on ``--nnunet-tiles`` real tiles times the number of tiles, and the export
          (``export_prediction_from_logits``). Peak RSS: that run's, plus the network's measured activation peak.
          With ``--backends`` (default on) ``same`` adds the same network exported (``unipet export``: fp32 ONNX;
          an int8 OpenVINO graph, which its acceptance may refuse) through ``--backend onnxruntime`` / ``openvino``
          (fp32, ``--cpu-bf16``, int8), and ``user`` times the whole ``unipet predict`` process (interpreter
          start, imports, reading, prediction, writing) with the shipped default per backend.
``train`` training throughput on the ``same`` network and patch, batch 2: nnU-Net's ``nnUNetTrainer`` (CPU,
          ``nnUNet_n_proc_DA`` data workers) vs unipet's trainer (``bench_train.py --model nnunet``), it/s and
          the share of time spent waiting for data.

Run (2-core CPU: ``layout,same`` about 10 minutes, ``user,train`` about 7, after the cohorts and plans exist)::

    /tmp/bench-venv/bin/python benchmarks/bench_vs_nnunet.py --work /tmp/vsnn --parts same,user,train
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATASET_SAME, DATASET_USER = 917, 918


# ---------------------------------------------------------------------------------------------- processes
def vm_hwm_mb() -> float:
    """This process's peak resident memory (``VmHWM``, MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def run_measured(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 1800) -> dict:
    """Run ``cmd``; its JSON (last stdout line) plus wall seconds, CPU seconds and peak RSS of the process tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"error": f"timed out after {timeout} s", "stderr_tail": err[-2000:]}
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # cumulative over finished children: take differences
    result = {"process_wall_s": round(wall, 2), "returncode": proc.returncode, "_ru": usage}
    starts = [i for i, ln in enumerate(out.splitlines()) if ln.startswith("{")]
    if proc.returncode != 0 or not starts:
        result["error"] = err[-3000:]
        return result
    result.update(json.loads("\n".join(out.splitlines()[starts[0]:])))  # one JSON document, on one or more lines
    return result


class Meter:
    """Differences of the children's CPU time between runs (``ru_maxrss`` is a maximum over all of them)."""

    def __init__(self) -> None:
        self.last = resource.getrusage(resource.RUSAGE_CHILDREN)

    def take(self, result: dict) -> dict:
        now = result.pop("_ru", None) or resource.getrusage(resource.RUSAGE_CHILDREN)
        result["process_cpu_s"] = round((now.ru_utime + now.ru_stime) - (self.last.ru_utime + self.last.ru_stime), 2)
        self.last = now
        return result


def sh(cmd: list[str], env: dict[str, str] | None = None) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, **(env or {})}, stdout=sys.stderr)


def nnunet_env(work: Path) -> dict[str, str]:
    """nnU-Net's folders, and its process counts set to the machine's cores (its default is 8)."""
    cores = str(os.cpu_count() or 2)
    return {"nnUNet_raw": str(work / "raw"), "nnUNet_preprocessed": str(work / "pre"),
            "nnUNet_results": str(work / "results"), "nnUNet_def_n_proc": cores, "nnUNet_n_proc_DA": "1"}


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


# ---------------------------------------------------------------------------------------------- data
def prepare_cohort(work: Path, n: int, size: str, seed: int, dataset: int, name: str) -> Path:
    """A phantom cohort exported as nnU-Net raw ``DatasetNNN_name`` (reused when present)."""
    raw = work / "raw" / f"Dataset{dataset}_{name}"
    if (raw / "dataset.json").exists():
        return raw
    cohort = work / f"cohort-{name}"
    if not (cohort / "clinical.csv").exists():
        sh([bin_path("unipet"), "phantom", str(cohort), "--n", str(n), "--size", size, "--seed", str(seed)])
    sh([bin_path("unipet"), "import", "phantom", str(cohort), "--out", str(work / f"{name}.json")])
    sh([bin_path("unipet"), "to-nnunet", str(work / f"{name}.json"), str(raw)])
    return raw


def plan(work: Path, dataset: int, gpu_memory_gb: float | None, preprocess: bool) -> dict:
    """nnU-Net's plans for ``dataset`` (planned once; ``preprocess`` also writes its preprocessed training data)."""
    plans_name = "nnUNetPlans" if gpu_memory_gb is None else f"nnUNetPlans_{gpu_memory_gb:g}G"
    folder = next((work / "pre").glob(f"Dataset{dataset}_*"), None)
    if folder is None or not (folder / f"{plans_name}.json").exists():
        cmd = [bin_path("nnUNetv2_plan_and_preprocess"), "-d", str(dataset), "-c", "3d_fullres", "-np", "1"]
        if gpu_memory_gb is not None:
            cmd += ["-gpu_memory_target", f"{gpu_memory_gb:g}", "-overwrite_plans_name", plans_name]
        if not preprocess:
            cmd += ["--no_pp"]
        sh(cmd, nnunet_env(work))
        folder = next((work / "pre").glob(f"Dataset{dataset}_*"))
    plans = json.loads((folder / f"{plans_name}.json").read_text())
    return plans


def input_folder(work: Path, raw: Path, cases: list[str], name: str) -> Path:
    """An nnU-Net raw folder (``dataset.json`` + ``imagesTs``) holding only ``cases`` (links to ``raw``'s files)."""
    out = work / "inputs" / name
    if out.exists():
        shutil.rmtree(out)
    (out / "imagesTs").mkdir(parents=True)
    shutil.copy(raw / "dataset.json", out / "dataset.json")
    for cid in cases:
        for ch in (0, 1):
            src = next(p for d in ("imagesTr", "imagesTs") for p in [raw / d / f"{cid}_{ch:04d}.nii.gz"] if p.exists())
            os.symlink(src, out / "imagesTs" / src.name)
    return out


def case_ids(raw: Path) -> list[str]:
    return sorted({p.name[:-len("_0000.nii.gz")] for d in ("imagesTs", "imagesTr") for p in (raw / d).glob("*_0000.nii.gz")})


# ---------------------------------------------------------------------------------------------- models
def ct_normalised_plans(plans: dict) -> dict:
    """The plans with every channel of 3d_fullres normalised by nnU-Net's ``CTNormalization``."""
    cfg = plans["configurations"]["3d_fullres"]
    cfg["normalization_schemes"] = ["CTNormalization"] * len(cfg["normalization_schemes"])
    cfg["use_mask_for_norm"] = [False] * len(cfg["use_mask_for_norm"])
    return plans


def nnunet_network(plans: dict, in_channels: int = 2, num_classes: int = 2):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = plans["configurations"]["3d_fullres"]["architecture"]
    return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                  in_channels, num_classes, allow_init=True, deep_supervision=False)


def unipet_model(plans: dict):
    """unipet's ``nnunet`` at the plans' patch and spacing; checks that its topology equals the plans'."""
    from unipet.models import create

    cfg = plans["configurations"]["3d_fullres"]
    kw = cfg["architecture"]["arch_kwargs"]
    model = create("nnunet", in_channels=2, num_classes=2, tasks="default", patch_size=cfg["patch_size"],
                   spacing=cfg["spacing"], base_channels=kw["features_per_stage"][0],
                   max_channels=max(kw["features_per_stage"]), max_stages=kw["n_stages"])
    strides = [list(s) for s in model.strides]
    if strides != [list(s) for s in kw["strides"]]:
        raise SystemExit(f"unipet's nnunet plans strides {strides}, nnU-Net {kw['strides']}: not the same network")
    return model


def map_weights(unipet_state: dict, nnunet_state: dict, n_stages: int) -> dict:
    """nnU-Net ``PlainConvUNet`` state dict holding the weights of unipet's ``nnunet`` (MONAI ``DynUNet``).

    Conv biases (nnU-Net has them, DynUNet not) are zero: an instance norm follows every such conv, so they
    change nothing. Deep-supervision heads map to nnU-Net's lower ``seg_layers``.
    """
    import torch

    def stage(s: int) -> str:
        return "net.input_block" if s == 0 else ("net.bottleneck" if s == n_stages - 1 else f"net.downsamples.{s - 1}")

    out = {}
    for key, ref in nnunet_state.items():
        k = key.replace("decoder.encoder.", "encoder.").replace("all_modules.0", "conv").replace("all_modules.1", "norm")
        p = k.split(".")
        src = None
        if p[0] == "encoder":  # encoder.stages.S.0.convs.C.(conv|norm).W
            s, c, kind, w = int(p[2]), int(p[5]), p[6], p[7]
            src = None if (kind == "conv" and w == "bias") else \
                (f"{stage(s)}.conv{c + 1}.conv.{w}" if kind == "conv" else f"{stage(s)}.norm{c + 1}.{w}")
        elif p[1] == "stages":  # decoder.stages.U.convs.C.(conv|norm).W
            u, c, kind, w = int(p[2]), int(p[4]), p[5], p[6]
            base = f"net.upsamples.{u}.conv_block"
            src = None if (kind == "conv" and w == "bias") else \
                (f"{base}.conv{c + 1}.conv.{w}" if kind == "conv" else f"{base}.norm{c + 1}.{w}")
        elif p[1] == "transpconvs":
            src = f"net.upsamples.{p[2]}.transp_conv.conv.{p[3]}"
        elif p[1] == "seg_layers":
            u = int(p[2])
            src = (f"net.output_block.conv.conv.{p[3]}" if u == n_stages - 2
                   else f"net.deep_supervision_heads.{n_stages - 3 - u}.conv.conv.{p[3]}")
        value = torch.zeros_like(ref) if src is None else unipet_state[src]
        if value.shape != ref.shape:
            raise SystemExit(f"weight map: {key} {tuple(ref.shape)} <- {src} {tuple(value.shape)}")
        out[key] = value.clone()
    return out


def build_same_models(work: Path, raw: Path, plans: dict) -> dict:
    """nnU-Net model folder + unipet checkpoint with the same weights; returns paths and the forward check."""
    import torch

    from unipet.data.preprocess import PreprocessConfig
    from unipet.checkpoint import save_checkpoint

    plans = ct_normalised_plans(plans)
    cfg = plans["configurations"]["3d_fullres"]
    torch.manual_seed(0)
    model = unipet_model(plans).eval()
    net = nnunet_network(plans).eval()
    n_stages = cfg["architecture"]["arch_kwargs"]["n_stages"]
    net.load_state_dict(map_weights(model.state_dict(), net.state_dict(), n_stages))
    x = torch.randn(1, 2, *cfg["patch_size"])
    with torch.inference_mode():
        diff = float((model(x) - net(x)).abs().max())
    folder = work / "results" / raw.name / "nnUNetTrainer__nnUNetPlans_ct__3d_fullres"
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    shutil.copy(raw / "dataset.json", folder / "dataset.json")
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    dataset_json = json.loads((raw / "dataset.json").read_text())
    torch.save({"network_weights": net.state_dict(), "optimizer_state": None, "grad_scaler_state": None,
                "logging": {}, "_best_ema": None, "current_epoch": 0, "trainer_name": "nnUNetTrainer",
                "inference_allowed_mirroring_axes": (0, 1, 2),
                "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0,
                              "dataset_json": dataset_json, "device": "cpu"}},
               folder / "fold_0" / "checkpoint_final.pth")
    props = plans["foreground_intensity_properties_per_channel"]

    def norm(ch: str) -> dict:
        s = props[ch]
        return {"scheme": "ct-zscore", "lo": s["percentile_00_5"], "hi": s["percentile_99_5"], "mean": s["mean"],
                "std": max(s["std"], 1e-8)}

    pre = PreprocessConfig(channels=("CT", "PET"), normalisation={"CT": norm("0"), "PET": norm("1")},
                           target_spacing=tuple(cfg["spacing"]), crop_to_body=False)
    meta = {"model": model.config, "preprocess": pre.to_dict(), "patch_size": list(cfg["patch_size"]),
            "channels": ["CT", "PET"], "spacing": list(cfg["spacing"]), "output_activation": "softmax",
            "recipe": {"augmentation": {"flip_axes": [0, 1, 2]}},
            "provenance": {"note": "untrained unipet nnunet; the same weights as the nnU-Net model folder beside it"}}
    ckpt = save_checkpoint(work / "unipet-same", model, meta)
    return {"nnunet_folder": str(folder), "unipet_checkpoint": str(ckpt), "forward_max_abs_diff": diff,
            "patch": cfg["patch_size"], "spacing": cfg["spacing"], "arch": cfg["architecture"]["arch_kwargs"]}


# ---------------------------------------------------------------------------------------------- workers
def worker_nnunet(args) -> dict:
    """nnU-Net's predictor over the input folder's studies, one ``predict_from_files_sequential`` per study."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    t0 = time.perf_counter()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=args.mirror,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(args.model, use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    load_s = time.perf_counter() - t0
    files = sorted((Path(args.inputs) / "imagesTs").glob("*_0000.nii.gz"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    studies = {}
    for f0 in files:
        cid = f0.name[:-len("_0000.nii.gz")]
        w, c = time.perf_counter(), time.process_time()
        predictor.predict_from_files_sequential([[str(f0), str(f0.with_name(f"{cid}_0001.nii.gz"))]],
                                                [str(out / cid)], save_probabilities=False, overwrite=True)
        studies[cid] = {"wall_s": round(time.perf_counter() - w, 3), "cpu_s": round(time.process_time() - c, 3)}
    return {"engine": "nnunet", "load_s": round(load_s, 3), "studies": studies, "threads": torch.get_num_threads(),
            "vm_hwm_mb": vm_hwm_mb()}


def worker_unipet(args) -> dict:
    """unipet's ``predict_batch`` (what ``unipet predict`` runs) over the input folder's studies."""
    import torch

    from unipet.infer import Predictor, predict_batch

    t0 = time.perf_counter()
    options = json.loads(args.options or "{}")
    predictor = Predictor.from_checkpoint(args.model, backend=args.backend, device="cpu", overlap=0.5, tta=args.mirror,
                                          tta_axes=[int(a) for a in args.tta_axes.split(",")] if args.tta_axes else None,
                                          tile_batch=args.tile_batch, **options)
    load_s = time.perf_counter() - t0
    studies: dict = {}
    mark = {"w": time.perf_counter(), "c": time.process_time()}

    def on_case(i, total, cid, status, detail) -> None:
        w, c = time.perf_counter(), time.process_time()
        studies[cid] = {"wall_s": round(w - mark["w"], 3), "cpu_s": round(c - mark["c"], 3), "status": status,
                        "tiles": dict(predictor.last_tiles), "passes": getattr(predictor, "last_passes", 1)}
        if status == "failed":
            studies[cid]["error"] = str(detail)
        mark.update(w=w, c=c)

    predict_batch(predictor, args.inputs, args.out, task=args.task, overwrite=True, on_case=on_case)
    return {"engine": "unipet", "backend": args.backend, "load_s": round(load_s, 3), "studies": studies,
            "threads": torch.get_num_threads(), "vm_hwm_mb": vm_hwm_mb(), "options": options}


def worker_cli(args) -> dict:
    """The whole ``unipet predict`` command in this process (``--cli-args``): seconds to import the CLI, seconds of
    the command; the caller measures the process from outside (interpreter start included)."""
    t0 = time.perf_counter()
    from unipet.cli import main as unipet_main

    imported = time.perf_counter()
    code = unipet_main(json.loads(args.cli_args))
    return {"engine": "unipet-cli", "returncode": code, "import_cli_s": round(imported - t0, 2),
            "command_s": round(time.perf_counter() - imported, 2), "vm_hwm_mb": vm_hwm_mb()}


def export_for_bench(checkpoint: str | Path, out: Path, fmt: str, precision: str,
                     check_studies: str | None = None) -> dict:
    """``unipet export`` of ``checkpoint`` into ``out`` (reused when there); the export record, or the refusal."""
    from unipet.infer.backends.bundle import is_export, read_export
    from unipet.infer.backends.export import ExportRejected, export_checkpoint

    if is_export(out):
        return {"folder": str(out), **read_export(out)[1]}
    print(f"[export] {out.name}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    try:
        record = export_checkpoint(checkpoint, out, fmt=fmt, precision=precision, check_studies=check_studies,
                                   overwrite=True, keep_rejected=True,  # a refused graph is timed, and flagged so
                                   progress=lambda line: print(line, file=sys.stderr, flush=True))
    except ExportRejected as exc:
        return {"folder": None, "refused": str(exc), "seconds": round(time.perf_counter() - t, 1)}
    return {"folder": str(out), "seconds": round(time.perf_counter() - t, 1), **record}


def worker_nnunet_parts(args) -> dict:
    """nnU-Net's default predictor on one big study, in measured parts (see the module docstring, ``user``)."""
    import numpy as np
    import torch
    from nnunetv2.inference.export_prediction import export_prediction_from_logits
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(args.model, use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    f0 = sorted((Path(args.inputs) / "imagesTs").glob("*_0000.nii.gz"))[0]
    files = [str(f0), str(f0).replace("_0000.nii.gz", "_0001.nii.gz")]
    pre = predictor.configuration_manager.preprocessor_class(verbose=False)
    t = time.perf_counter()
    data, _, props = pre.run_case(files, None, predictor.plans_manager, predictor.configuration_manager,
                                  predictor.dataset_json)
    preprocess_s = time.perf_counter() - t
    data = torch.from_numpy(data)
    slicers = predictor._internal_get_sliding_window_slicers(data.shape[1:])
    net = predictor.network.eval()
    patch = tuple(predictor.configuration_manager.patch_size)
    tile = torch.randn(1, data.shape[0], *patch)
    hwm_before = vm_hwm_mb()
    times = []
    with torch.inference_mode():
        for i in range(args.nnunet_tiles + 1):  # the first is a warm-up
            t = time.perf_counter()
            net(tile)
            times.append(time.perf_counter() - t)
    per_tile = float(np.median(times[1:]))
    network_peak_mb = max(0.0, vm_hwm_mb() - hwm_before)

    class Zeros(torch.nn.Module):
        def forward(self, x):
            return torch.zeros((x.shape[0], predictor.label_manager.num_segmentation_heads, *x.shape[2:]))

    predictor.network = Zeros()
    t = time.perf_counter()
    with torch.inference_mode():
        logits = predictor.predict_sliding_window_return_logits(data)
    window_s = time.perf_counter() - t
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    export_prediction_from_logits(logits, props, predictor.configuration_manager, predictor.plans_manager,
                                  predictor.dataset_json, str(out / "study"), False)
    export_s = time.perf_counter() - t
    n = len(slicers)
    return {"engine": "nnunet-parts", "preprocess_s": round(preprocess_s, 2), "preprocessed_shape": list(data.shape[1:]),
            "patch": list(patch), "tiles": n, "network_s_per_tile": round(per_tile, 3),
            "sliding_window_without_network_s": round(window_s, 2), "export_s": round(export_s, 2),
            "total_s_no_mirroring": round(preprocess_s + window_s + n * per_tile + export_s, 1),
            "total_s_8x_mirroring": round(preprocess_s + window_s + 8 * n * per_tile + export_s, 1),
            "vm_hwm_mb_without_network": hwm_before, "network_activation_peak_mb": round(network_peak_mb, 1),
            "vm_hwm_mb": vm_hwm_mb(), "threads": torch.get_num_threads()}


def worker_nnunet_train(args) -> dict:
    """nnU-Net's trainer for ``--iterations`` iterations on the CPU: it/s after a warm-up, data-wait share."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    stamps: list[tuple[float, float]] = []

    class Timed(nnUNetTrainer):
        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cpu")):  # nnU-Net records its init arguments by name
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_iterations_per_epoch = args.iterations + args.warmup
            self.num_val_iterations_per_epoch = 1
            self.num_epochs = 1
            self.save_every = 10 ** 9
            self.disable_checkpointing = True

        def train_step(self, batch):
            t = time.perf_counter()
            out = super().train_step(batch)
            stamps.append((t, time.perf_counter()))
            return out

    plans = json.loads(Path(args.plans).read_text())
    plans["continue_training"] = False  # what nnUNetv2_train's get_trainer_from_args adds
    dataset_json = json.loads(Path(args.dataset_json).read_text())
    trainer = Timed(plans, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))
    trainer.run_training()
    timed = stamps[args.warmup:]
    span = timed[-1][1] - timed[0][0]
    compute = sum(b - a for a, b in timed)
    return {"engine": "nnunet-train", "iterations": len(timed), "it_per_s": round(len(timed) / span, 3),
            "data_wait_share": round(max(0.0, 1 - compute / span), 3), "batch_size": trainer.batch_size,
            "patch": list(trainer.configuration_manager.patch_size), "threads": torch.get_num_threads(),
            "data_workers": os.environ.get("nnUNet_n_proc_DA")}


# ---------------------------------------------------------------------------------------------- comparisons
def mask_agreement(a_dir: Path, b_dir: Path, cases: list[str]) -> dict:
    import nibabel as nib
    import numpy as np

    out = {}
    for cid in cases:
        a_img, b_img = nib.load(str(a_dir / f"{cid}.nii.gz")), nib.load(str(b_dir / f"{cid}.nii.gz"))
        a, b = np.asarray(a_img.dataobj) > 0, np.asarray(b_img.dataobj) > 0
        same_grid = a.shape == b.shape and bool(np.allclose(a_img.affine, b_img.affine, atol=1e-3))
        rec = {"same_grid": same_grid, "shape": list(a.shape)}
        if same_grid:
            denom = a.sum() + b.sum()
            rec.update(dice=round(float(2 * (a & b).sum() / denom), 4) if denom else 1.0,
                       voxel_agreement=round(float((a == b).mean()), 5), fg_voxels=[int(a.sum()), int(b.sum())])
        out[cid] = rec
    return out


def preprocessing_agreement(same: dict, raw: Path, cid: str) -> dict:
    """nnU-Net's and unipet's preprocessed arrays of one study (same grid? largest difference)."""
    import numpy as np
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    import torch

    from unipet.data.preprocess import preprocess_study
    from unipet.infer import Predictor
    from unipet.io.layouts import import_nnunet
    from unipet.io.manifest import load_study

    p = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    p.initialize_from_trained_model_folder(same["nnunet_folder"], use_folds=(0,))
    f0 = next(q for d in ("imagesTr", "imagesTs") for q in [raw / d / f"{cid}_0000.nii.gz"] if q.exists())
    data, _, _ = p.configuration_manager.preprocessor_class(verbose=False).run_case(
        [str(f0), str(f0).replace("_0000.nii.gz", "_0001.nii.gz")], None, p.plans_manager, p.configuration_manager,
        p.dataset_json)
    manifest = import_nnunet(raw)
    case = next(c for c in manifest.cases if c.case_id == cid)
    config = Predictor.from_checkpoint(same["unipet_checkpoint"], device="cpu").config
    ours = preprocess_study(load_study(case, manifest.task_set, with_label=False), config, with_label=False).image
    rec = {"nnunet_shape": list(data.shape[1:]), "unipet_shape": list(ours.shape[1:])}
    if data.shape == ours.shape:
        rec["max_abs_diff"] = round(float(np.abs(data - ours).max()), 6)
    return rec


def part_layout(args, out: dict, meter: Meter) -> None:
    """Forward time of one tile batch per memory layout and precision (fp32 / bf16 autocast, contiguous /
    channels_last_3d): the shipped default at its patch (batch 2) and the 'same' network (batch 1); interleaved
    repetitions, medians, in this process (2 threads)."""
    import copy

    import torch

    from unipet.checkpoint import default_checkpoint
    from unipet.checkpoint import load_checkpoint

    work = args.work
    models = {}
    default, meta = load_checkpoint(default_checkpoint())
    models["default_dpdnet_small"] = (default.eval(), (2, 2, *meta.patch_size), {"task": torch.zeros(2, dtype=torch.long)})
    plans_file = next((work / "pre").glob(f"Dataset{DATASET_SAME}_*"), None)
    if plans_file is not None and (plans_file / f"nnUNetPlans_{args.gpu_memory_gb:g}G.json").exists():
        plans = ct_normalised_plans(json.loads((plans_file / f"nnUNetPlans_{args.gpu_memory_gb:g}G.json").read_text()))
        torch.manual_seed(0)
        models["same_nnunet"] = (unipet_model(plans).eval(), (1, 2, *plans["configurations"]["3d_fullres"]["patch_size"]), {})
    res = {"threads": torch.get_num_threads()}
    for name, (model, shape, kw) in models.items():
        x = torch.randn(*shape)
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last_3d)
        xcl = x.contiguous(memory_format=torch.channels_last_3d)
        variants = {"fp32": (model, x, False), "fp32_channels_last": (cl, xcl, False), "bf16": (model, x, True),
                    "bf16_channels_last": (cl, xcl, True)}
        times: dict = {k: [] for k in variants}
        with torch.inference_mode():
            ref = model(x, **kw).float()
            agree = {}
            for k, (m, xx, bf) in variants.items():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf):
                    y = m(xx, **kw).float()
                agree[k] = {"max_abs_diff": round(float((y - ref).abs().max()), 5),
                            "argmax_agreement": round(float((y.argmax(1) == ref.argmax(1)).float().mean()), 5)}
            for _ in range(args.layout_repeats):
                for k, (m, xx, bf) in variants.items():
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf):
                        t = time.perf_counter()
                        m(xx, **kw)
                        times[k].append(time.perf_counter() - t)
        res[name] = {"input": list(shape), "median_s": {k: round(sorted(v)[len(v) // 2], 3) for k, v in times.items()},
                     "vs_fp32": agree}
    out["layout"] = res


def part_backends(args, out: dict, meter: Meter) -> None:
    """One forward per backend and precision, in this process (2 threads, interleaved repetitions, medians): the
    shipped default (lymphoma graph, batch 2) and the 'same' topology (``nnunet`` builder at nnU-Net's small-memory
    plan of the 5 mm phantoms: patch 112x56x48, 32-320, 5 stages; untrained, seed 0; batch 1). Inputs: content tiles
    of phantom studies (check seed); int8 calibrated on ``CALIBRATION_SEEDS`` tiles (speed only here: the mask
    acceptance runs in ``same``). Agreement with PyTorch float32: max |Δ| of probabilities and argmax agreement."""
    import numpy as np
    import openvino as ov
    import torch

    from unipet.checkpoint import CheckpointMeta, default_checkpoint, load_checkpoint
    from unipet.infer import Predictor
    from unipet.infer.backends.calibration import CALIBRATION_SEEDS, CHECK_SEEDS, phantom_tiles
    from unipet.infer.backends.graph import FixedTask, export_onnx
    from unipet.infer.backends.quantize import quantize_openvino
    from unipet.infer.backends.runtime import onnxruntime_session, openvino_session
    from unipet.models import create

    work = args.work / "backends"
    work.mkdir(parents=True, exist_ok=True)
    default, meta = load_checkpoint(default_checkpoint())
    torch.manual_seed(0)
    same = create("nnunet", in_channels=2, num_classes=2, tasks="default", patch_size=(112, 56, 48),
                  spacing=(5.0, 5.0, 5.0), base_channels=32, max_channels=320, max_stages=5).eval()
    same_meta = CheckpointMeta.from_dict({**meta.to_dict(), "model": same.config, "patch_size": [112, 56, 48]})
    nets = {"default_dpdnet_small": (default, meta, 1, 2, True), "same_nnunet": (same, same_meta, None, 1, False)}
    res: dict = {"threads": torch.get_num_threads()}
    for name, (model, m, task, batch, channels_last) in nets.items():
        predictor = Predictor(model, m, device="cpu", channels_last=False)
        x = np.ascontiguousarray(phantom_tiles(predictor, CHECK_SEEDS, batch))
        calib = phantom_tiles(predictor, CALIBRATION_SEEDS, 16)
        wrapper = FixedTask(model, task)
        onnx_path = export_onnx(wrapper, work / f"{name}.onnx", m.patch, 2)
        int8 = quantize_openvino(ov.convert_model(str(onnx_path)), calib)
        ov.save_model(int8, str(work / f"{name}.int8.xml"), compress_to_fp16=False)
        xt = torch.from_numpy(x)
        xcl = xt.contiguous(memory_format=torch.channels_last_3d)
        model_cl = __import__("copy").deepcopy(model).to(memory_format=torch.channels_last_3d)
        wrapper_cl = FixedTask(model_cl, task)

        def torch_run(bf16: bool, layout: bool):
            w, inp = (wrapper_cl, xcl) if layout else (wrapper, xt)

            def run():
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    return w(inp).float().numpy()
            return run

        variants = {"torch_fp32": torch_run(False, channels_last), "torch_bf16": torch_run(True, channels_last),
                    "onnxruntime_fp32": (lambda s=onnxruntime_session(onnx_path): s(x)),
                    "openvino_fp32": (lambda s=openvino_session(onnx_path): s(x)),
                    "openvino_bf16": (lambda s=openvino_session(onnx_path, precision="bf16"): s(x)),
                    "openvino_int8": (lambda s=openvino_session(work / f"{name}.int8.xml"): s(x))}
        ref = torch.from_numpy(variants["torch_fp32"]()).softmax(1)
        agree, times = {}, {k: [] for k in variants}
        for k, fn in variants.items():
            p = torch.from_numpy(fn()).softmax(1)
            agree[k] = {"max_abs_diff_probability": round(float((p - ref).abs().max()), 5),
                        "argmax_agreement": round(float((p.argmax(1) == ref.argmax(1)).float().mean()), 5)}
        for _ in range(args.layout_repeats):
            for k, fn in variants.items():
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        med = {k: round(sorted(v)[len(v) // 2], 3) for k, v in times.items()}
        res[name] = {"input": list(x.shape), "median_s": med, "vs_torch_fp32": agree,
                     "speedup_vs_torch_fp32": {k: round(med["torch_fp32"] / v, 2) for k, v in med.items()}}
        print(f"[backends] {name} {med}", file=sys.stderr, flush=True)
    out["backends"] = res


def part_same(args, out: dict, meter: Meter) -> None:
    work = args.work
    raw = prepare_cohort(work, args.cases, "small", args.seed, DATASET_SAME, "PhantomSmall")
    plans = plan(work, DATASET_SAME, args.gpu_memory_gb, preprocess=True)
    same = build_same_models(work, raw, plans)
    cases = case_ids(raw)[:args.studies]
    inputs = input_folder(work, raw, cases, "same")
    inputs_mirror = input_folder(work, raw, cases[:args.mirror_studies], "same-mirror")
    res: dict = {"models": same, "studies": cases, "preprocessing": preprocessing_agreement(same, raw, cases[0]),
                 "runs": {}}
    py = sys.executable
    runs = [("nnunet", False, None), ("unipet", False, None), ("unipet_bf16", False, '{"cpu_bf16": true}')]
    if args.speedup_rows:
        runs += [("unipet_no_speedups", False, '{"crop_to_content": false, "skip_empty": false, "channels_last": false}'),
                 ("unipet_cl", False, '{"channels_last": true}')]
    models = {"unipet": same["unipet_checkpoint"]}
    if args.backends:  # the same network exported: ONNX Runtime / OpenVINO x fp32 / bf16 / int8
        exports = res["exports"] = {
            "onnx_fp32": export_for_bench(same["unipet_checkpoint"], work / "export-same-onnx", "onnx", "fp32"),
            "openvino_int8": export_for_bench(same["unipet_checkpoint"], work / "export-same-int8", "openvino", "int8",
                                              args.check_studies)}
        models.update(ort=exports["onnx_fp32"]["folder"], ov=exports["onnx_fp32"]["folder"],
                      ovint8=exports["openvino_int8"]["folder"])
        runs += [("unipet_ort", False, None), ("unipet_ov", False, None), ("unipet_ovbf16", False, '{"cpu_bf16": true}')]
        runs += [("unipet_ovint8", False, None)] if models["ovint8"] else []
    if not args.skip_mirroring:
        runs += [("nnunet", True, None), ("unipet", True, None), ("unipet_bf16", True, '{"cpu_bf16": true}')]
    backend_of = {"ort": "onnxruntime", "ov": "openvino", "ovbf16": "openvino", "ovint8": "openvino"}
    for engine, mirror, options in runs:
        name = f"{engine}_{'mirror8' if mirror else 'plain'}"
        dest = work / "pred" / name
        variant = engine.split("_")[1] if "_" in engine else ""
        model = same["nnunet_folder"] if engine == "nnunet" else models.get(variant.replace("bf16", ""), models["unipet"])
        cmd = [py, str(Path(__file__).resolve()), "--worker", engine.split("_")[0], "--model", model, "--inputs",
               str(inputs_mirror if mirror else inputs),
               "--out", str(dest), "--tile-batch", "1", "--tta-axes", "0,1,2",
               "--backend", backend_of.get(variant, "torch")]
        if mirror:
            cmd.append("--mirror")
        if options:
            cmd += ["--options", options]
        print(f"[same] {name}", file=sys.stderr, flush=True)
        res["runs"][name] = meter.take(run_measured(cmd, nnunet_env(work)))
    for mode in ("plain", "mirror8"):
        for other in ("unipet", "unipet_bf16", "unipet_ort", "unipet_ov", "unipet_ovbf16", "unipet_ovint8"):
            if f"nnunet_{mode}" in res["runs"] and f"{other}_{mode}" in res["runs"]:
                res[f"masks_nnunet_vs_{other}_{mode}"] = mask_agreement(
                    work / "pred" / f"nnunet_{mode}", work / "pred" / f"{other}_{mode}",
                    cases if mode == "plain" else cases[:args.mirror_studies])
            if other != "unipet" and f"{other}_{mode}" in res["runs"]:  # each backend / precision vs torch float32
                res[f"masks_unipet_vs_{other}_{mode}"] = mask_agreement(
                    work / "pred" / f"unipet_{mode}", work / "pred" / f"{other}_{mode}",
                    cases if mode == "plain" else cases[:args.mirror_studies])
    out["same_network"] = res


def part_user(args, out: dict, meter: Meter) -> None:
    import torch

    work = args.work
    raw = prepare_cohort(work, 1, "autopet", args.user_seed, DATASET_USER, "PhantomAutoPET")
    plans = plan(work, DATASET_USER, None, preprocess=False)
    folder = work / "results" / raw.name / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    if not (folder / "fold_0" / "checkpoint_final.pth").exists():
        (folder / "fold_0").mkdir(parents=True, exist_ok=True)
        shutil.copy(raw / "dataset.json", folder / "dataset.json")
        (folder / "plans.json").write_text(json.dumps(plans, indent=2))
        torch.manual_seed(0)
        net = nnunet_network(plans)  # nnU-Net's own initialisation; untrained (timing only)
        torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                    "inference_allowed_mirroring_axes": (0, 1, 2),
                    "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0,
                                  "dataset_json": json.loads((raw / "dataset.json").read_text()), "device": "cpu"}},
                   folder / "fold_0" / "checkpoint_final.pth")
    cases = case_ids(raw)[:1]
    inputs = input_folder(work, raw, cases, "user")
    cfg = plans["configurations"]["3d_fullres"]
    res: dict = {"study": cases[0], "nnunet_plan": {"patch": cfg["patch_size"], "spacing": cfg["spacing"],
                                                    "features": cfg["architecture"]["arch_kwargs"]["features_per_stage"],
                                                    "weights": "untrained (timing only)"}, "runs": {}}
    py, me = sys.executable, str(Path(__file__).resolve())
    print("[user] nnunet parts", file=sys.stderr, flush=True)
    res["runs"]["nnunet_parts"] = meter.take(run_measured(
        [py, me, "--worker", "nnunet-parts", "--model", str(folder), "--inputs", str(inputs), "--out",
         str(work / "pred" / "user-nnunet"), "--nnunet-tiles", str(args.nnunet_tiles)], nnunet_env(work)))
    from unipet.checkpoint import default_checkpoint

    for name, mirror, options in (("unipet_plain", False, None), ("unipet_bf16_plain", False, '{"cpu_bf16": true}'),
                                  ("unipet_mirror8", True, None), ("unipet_bf16_mirror8", True, '{"cpu_bf16": true}')):
        if mirror and args.skip_mirroring:
            continue
        cmd = [py, me, "--worker", "unipet", "--model", str(default_checkpoint()), "--inputs", str(inputs), "--out",
               str(work / "pred" / f"user-{name}"), "--tile-batch", str(args.tile_batch), "--task", "lymphoma"]
        if mirror:
            cmd += ["--mirror", "--tta-axes", "0,1,2"]
        if options:
            cmd += ["--options", options]
        print(f"[user] {name}", file=sys.stderr, flush=True)
        res["runs"][name] = meter.take(run_measured(cmd, nnunet_env(work)))
    if args.backends:  # the whole `unipet predict` process with the shipped default, per backend
        exp = res["export_default_onnx"] = export_for_bench(default_checkpoint(), work / "export-default-onnx",
                                                            "onnx", "fp32")
        for name, extra in (("torch", []), ("onnxruntime", ["-c", exp["folder"], "--backend", "onnxruntime"]),
                            ("openvino", ["-c", exp["folder"], "--backend", "openvino"]),
                            ("openvino_bf16", ["-c", exp["folder"], "--backend", "openvino", "--cpu-bf16"])):
            argv = ["predict", str(inputs), str(work / "pred" / f"user-cli-{name}"), "--task", "lymphoma",
                    "--overwrite"] + extra
            print(f"[user] cli {name}", file=sys.stderr, flush=True)
            res["runs"][f"cli_{name}"] = meter.take(run_measured([py, me, "--worker", "cli", "--cli-args",
                                                                  json.dumps(argv)]))
        for name in ("onnxruntime", "openvino", "openvino_bf16"):
            a, b = work / "pred" / "user-cli-torch", work / "pred" / f"user-cli-{name}"
            if a.exists() and b.exists():
                res[f"masks_cli_torch_vs_{name}"] = mask_agreement(a, b, cases)
    for name in ("plain", "mirror8"):
        a, b = work / "pred" / f"user-unipet_{name}", work / "pred" / f"user-unipet_bf16_{name}"
        if a.exists() and b.exists():
            res[f"masks_fp32_vs_bf16_{name}"] = mask_agreement(a, b, cases)
    out["user_level"] = res


def part_train(args, out: dict, meter: Meter) -> None:
    work = args.work
    raw = prepare_cohort(work, args.cases, "small", args.seed, DATASET_SAME, "PhantomSmall")
    plans = plan(work, DATASET_SAME, args.gpu_memory_gb, preprocess=True)
    plans_path = next((work / "pre").glob(f"Dataset{DATASET_SAME}_*")) / f"nnUNetPlans_{args.gpu_memory_gb:g}G.json"
    cfg = plans["configurations"]["3d_fullres"]
    py, me = sys.executable, str(Path(__file__).resolve())
    res: dict = {"patch": cfg["patch_size"], "batch_size": cfg["batch_size"], "runs": {}}
    print("[train] nnunet", file=sys.stderr, flush=True)
    res["runs"]["nnunet"] = meter.take(run_measured(
        [py, me, "--worker", "nnunet-train", "--plans", str(plans_path), "--dataset-json", str(raw / "dataset.json"),
         "--iterations", str(args.train_iterations), "--warmup", str(args.train_warmup)],
        {**nnunet_env(work), "nnUNet_compile": "false"}))
    cache = work / "unipet-cache"
    if not (cache / "cache.json").exists():
        sh([bin_path("unipet"), "preprocess", str(work / "PhantomSmall.json"), "--out", str(cache), "--spacing",
            *map(str, cfg["spacing"])])
    kw = cfg["architecture"]["arch_kwargs"]
    model_kw = {"spacing": cfg["spacing"], "base_channels": kw["features_per_stage"][0],
                "max_channels": max(kw["features_per_stage"]), "max_stages": kw["n_stages"]}
    print("[train] unipet", file=sys.stderr, flush=True)
    r = run_measured([py, str(HERE / "bench_train.py"), "--device", "cpu", "--cache", str(cache), "--model", "nnunet",
                      "--patch", *map(str, cfg["patch_size"]), "--batch", str(cfg["batch_size"]), "--iterations",
                      str(args.train_iterations), "--warmup", str(args.train_warmup), "--workers", "1",
                      "--model-kw", json.dumps(model_kw), "--amp", "none", "--work", str(work / "unipet-train")])
    res["runs"]["unipet"] = meter.take(r)
    out["training"] = res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/vsnn"))
    p.add_argument("--parts", default="same,user,train")
    p.add_argument("--cases", type=int, default=6, help="phantom studies of the 'same' cohort (planning)")
    p.add_argument("--studies", type=int, default=2, help="studies timed in 'same'")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--user-seed", type=int, default=3, help="seed of the autoPET-grid phantom of 'user'")
    p.add_argument("--gpu-memory-gb", type=float, default=1.0, help="nnU-Net's planning target for 'same'")
    p.add_argument("--skip-mirroring", action="store_true")
    p.add_argument("--mirror-studies", type=int, default=1, help="studies timed with 8x mirroring in 'same'")
    p.add_argument("--nnunet-tiles", type=int, default=2, help="'user': network tiles nnU-Net runs for its per-tile time")
    p.add_argument("--tile-batch", type=int, default=2, help="'user': unipet's tile batch (its default)")
    p.add_argument("--layout-repeats", type=int, default=5)
    p.add_argument("--train-iterations", type=int, default=10)
    p.add_argument("--train-warmup", type=int, default=3)
    # worker mode
    p.add_argument("--backends", action=argparse.BooleanOptionalAction, default=True,
                   help="'same' and 'user': add unipet's exported backends (ONNX Runtime, OpenVINO fp32/bf16/int8)")
    p.add_argument("--speedup-rows", action=argparse.BooleanOptionalAction, default=True,
                   help="'same': also the rows with the predictor's speed-ups off / channels-last forced")
    p.add_argument("--check-studies", help="'same': real studies added to the int8 acceptance check")
    p.add_argument("--worker", choices=("nnunet", "unipet", "nnunet-parts", "nnunet-train", "cli"))
    p.add_argument("--backend", default="torch"), p.add_argument("--cli-args")
    p.add_argument("--model"), p.add_argument("--inputs"), p.add_argument("--out"), p.add_argument("--options")
    p.add_argument("--mirror", action="store_true"), p.add_argument("--tta-axes"), p.add_argument("--task")
    p.add_argument("--plans"), p.add_argument("--dataset-json"), p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    if args.worker:
        fn = {"nnunet": worker_nnunet, "unipet": worker_unipet, "nnunet-parts": worker_nnunet_parts,
              "nnunet-train": worker_nnunet_train, "cli": worker_cli}[args.worker]
        print(json.dumps(fn(args)), flush=True)
        return
    import platform

    import torch

    args.work.mkdir(parents=True, exist_ok=True)
    try:
        from importlib.metadata import version
        nnunet_version = version("nnunetv2")
    except Exception:  # noqa: BLE001 - reported, not fatal for the record
        nnunet_version = None
    out: dict = {"benchmark": "vs_nnunet", "machine": {"cpu": platform.processor() or platform.machine(),
                 "cores": os.cpu_count(), "torch": torch.__version__, "nnunetv2": nnunet_version}}
    meter = Meter()
    with contextlib.redirect_stdout(sys.stderr):  # nnU-Net prints progress; stdout holds only the JSON
        for part in args.parts.split(","):
            {"layout": part_layout, "same": part_same, "user": part_user, "train": part_train,
             "backends": part_backends}[part.strip()](args, out, meter)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
