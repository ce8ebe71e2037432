"""unipet's default recipe vs nnU-Net v2, trained for the same wall time on the same phantoms (CPU). Prints JSON.

Issue 17, part 3. Both start from scratch on the same phantom training split and get the same wall-clock budget
(``--budget-s``, counted from the start of each engine's training process: imports, setup, data loading and
checkpointing included); then both predict the same held-out phantoms (another seed, ``--per-type`` lesion-positive
studies of every cancer type) **without mirroring**, and ``unipet evaluate`` scores both: Dice per cancer type,
lesion sensitivity, FPV.

``nnU-Net v2``  its own plans of the training split (``nnUNetv2_plan_and_preprocess -c 3d_fullres``, default
                GPU-memory target), its ``nnUNetTrainer`` on the CPU, fold ``all`` (every training study), with a
                short-epoch variant (``nnUNetTrainerBudget``, defined here: ``--nnunet-epoch-iterations`` training
                iterations and 1 validation iteration per epoch, instead of 250 + 50) that plans its epoch count
                from the measured epoch time so that the budget ends on a finished epoch with a saved
                ``checkpoint_final.pth`` and its poly learning-rate schedule decayed over the epochs that fit (the
                schedule is nnU-Net's; only its length follows the budget); a last, shorter epoch uses the time
                left when a full one no longer fits. Everything else is nnU-Net's default:
                augmentation, deep supervision, Dice + CE, SGD lr 1e-2, oversampling, EMA pseudo-Dice, checkpoints.
                Prediction: ``nnUNetPredictor`` (overlap 0.5, Gaussian, no mirroring).
``unipet``      the shipped default's model and recipe (``recipes/default_v2.json``: DpDNet-small, STU-Net base
                width 8, paper PA heads, task classifier; patch 48x64x64, batch 2, SGD lr 5e-3 poly, hot-spot
                patches, per-task Dice; the model kwargs of ``train_default.py``), trained from scratch (the
                shipped checkpoint was fine-tuned from an earlier one: here both start from random weights). The
                poly schedule needs an iteration count up front: 15 calibration iterations (in the same process,
                inside the budget) give the step time, the run is planned to end at the budget, and a SIGTERM at the
                budget (unipet's trainer then saves its checkpoint) guards the end. Prediction: ``predict_batch``
                (what ``unipet predict`` runs; each study's own task prompt; no TTA).

Both use PyTorch with ``--threads`` intra-op threads (2 on the 2-core CPU) and data in one worker / the main
process (``nnUNet_n_proc_DA=1``; unipet ``workers 0``, its default on the CPU).

The calibration measures the machine as it is at that moment: run it under the CPU lock on a quiet machine (a
busy one makes it plan too few iterations; the result records ``calibration_step_s`` and ``planned_iterations``).

Run (needs nnU-Net v2 and unipet in one venv, see ``bench_vs_nnunet.py``; about 2 x budget + 5 minutes; data,
plans and caches in ``--work`` are reused, ``--engines unipet`` retrains only unipet)::

    /tmp/bench-venv/bin/python benchmarks/bench_vs_nnunet_train.py --work /tmp/vsnn-train --budget-s 600

Tiny smoke run (2 training studies, 1 held-out lymphoma and 1 lung-cancer study, 12 s each on 1 thread, nnU-Net
planned for a 0.05 GB target so that one of its steps is short)::

    /tmp/bench-venv/bin/python benchmarks/bench_vs_nnunet_train.py --work /tmp/vsnn-tiny --tiny
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_vs_nnunet import Meter, bin_path, nnunet_env, run_measured, sh, vm_hwm_mb  # noqa: E402

DATASET = 919
DATASET_NAME = f"Dataset{DATASET}_PhantomBudget"
TRAINER = "nnUNetTrainerBudget"
TASKS = ("breast_cancer", "lung_cancer", "lymphoma", "melanoma")
# the shipped default's architecture kwargs, as benchmarks/train_default.py records them
DEFAULT_MODEL_KW = {"base_width": 8, "pa_head": "paper", "task_classifier": True, "specific_prompt": True,
                    "common_prompt": True, "pa_heads": True}


# ---------------------------------------------------------------------------------------------- data
def plans_name_of(args) -> str:
    """nnU-Net's default plans, or (``--nnunet-gpu-gb``) plans made for another GPU-memory target."""
    return "nnUNetPlans" if args.nnunet_gpu_gb is None else f"nnUNetPlans_{args.nnunet_gpu_gb:g}G"


def _positive(case: dict, root: Path) -> bool:
    import nibabel as nib
    import numpy as np

    label = Path(case["label"])
    label = label if label.is_absolute() else root / label
    return bool(np.asarray(nib.load(str(label)).dataobj).any())


def prepare_data(args) -> dict:
    """Training split (every study of ``--train-seed``) and held-out split (``--per-type`` lesion-positive studies
    per cancer type of ``--test-seed``) as manifests, nnU-Net raw datasets and unipet's cache (all reused)."""
    work = args.work
    env = nnunet_env(work)
    out = {}
    for name, n, seed in (("train", args.train_cases, args.train_seed), ("test", args.test_pool, args.test_seed)):
        cohort = work / f"cohort-{name}"
        if not (cohort / "clinical.csv").exists():
            sh([bin_path("unipet"), "phantom", str(cohort), "--n", str(n), "--seed", str(seed), "--size", "small",
                "-j", str(args.threads), "--overwrite"])
        if not (work / f"{name}-all.json").exists():
            sh([bin_path("unipet"), "import", "phantom", str(cohort), "--out", str(work / f"{name}-all.json")])
    train = work / "train.json"
    if not train.exists():
        manifest = json.loads((work / "train-all.json").read_text())
        for case in manifest["cases"]:
            case["split"] = "train"  # the whole cohort is the training split of both engines
        train.write_text(json.dumps(manifest, indent=1))
    heldout = work / "heldout.json"
    if not heldout.exists():
        manifest = json.loads((work / "test-all.json").read_text())
        root = (work / "test-all.json").parent
        picked = []
        for task in args.tasks.split(","):
            cases = [c for c in manifest["cases"] if c["task"] == task and _positive(c, root)]
            if len(cases) < args.per_type:
                raise SystemExit(f"held-out cohort has {len(cases)} lesion-positive {task} studies, "
                                 f"need {args.per_type}: raise --test-pool")
            picked += cases[:args.per_type]
        for case in picked:
            case["split"] = "test"
        manifest["cases"] = picked
        heldout.write_text(json.dumps(manifest, indent=1))
    raw = work / "raw" / DATASET_NAME
    if not (raw / "dataset.json").exists():
        sh([bin_path("unipet"), "to-nnunet", str(train), str(raw)])
    raw_test = work / "heldout-nnunet"
    if not (raw_test / "dataset.json").exists():
        sh([bin_path("unipet"), "to-nnunet", str(heldout), str(raw_test)])
    pre = work / "pre" / DATASET_NAME
    plans_name = plans_name_of(args)
    if not (pre / f"{plans_name}.json").exists() or not (pre / f"{plans_name}_3d_fullres").exists():
        cmd = [bin_path("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET), "-c", "3d_fullres", "-np",
               str(args.threads)]
        if args.nnunet_gpu_gb is not None:
            cmd += ["-gpu_memory_target", f"{args.nnunet_gpu_gb:g}", "-overwrite_plans_name", plans_name]
        sh(cmd, env)
    cache = work / "unipet-cache"
    if not (cache / "cache.json").exists():
        sh([bin_path("unipet"), "preprocess", str(train), "--out", str(cache), "-j", str(args.threads)])
    plans = json.loads((pre / f"{plans_name}.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    held = json.loads(heldout.read_text())["cases"]
    out.update(train_studies=len(json.loads(train.read_text())["cases"]), heldout_studies=[c["case_id"] for c in held],
               heldout_tasks={t: sum(c["task"] == t for c in held) for t in TASKS},
               nnunet_plan={"patch": cfg["patch_size"], "spacing": cfg["spacing"], "batch_size": cfg["batch_size"],
                            "features": cfg["architecture"]["arch_kwargs"]["features_per_stage"],
                            "strides": cfg["architecture"]["arch_kwargs"]["strides"]})
    return out


# ---------------------------------------------------------------------------------------------- workers
def worker_nnunet_train(args) -> dict:
    """nnU-Net's trainer (short epochs, epoch count planned from the budget) on fold ``all``, CPU."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    torch.set_num_threads(args.threads)
    deadline = args.deadline
    epoch_iterations = args.epoch_iterations
    record: dict = {"epoch_log": [], "train_iterations": 0}

    class nnUNetTrainerBudget(nnUNetTrainer):  # noqa: N801 - nnU-Net's naming of trainer variants
        """nnU-Net's trainer with short epochs and as many of them as fit before ``deadline`` (time.time())."""

        def __init__(self, plans: dict, configuration: str, fold, dataset_json: dict,
                     device: torch.device = torch.device("cpu")):  # nnU-Net records its init arguments by name
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_iterations_per_epoch = epoch_iterations
            self.num_val_iterations_per_epoch = 1

        def run_training(self):  # nnU-Net's loop; the epoch count is re-planned after every epoch
            self.on_train_start()
            record["setup_s"] = round(time.time() - args.started, 2)
            while self.current_epoch < self.num_epochs:
                t = time.time()
                self.on_epoch_start()
                self.on_train_epoch_start()
                train_outputs = [self.train_step(next(self.dataloader_train))
                                 for _ in range(self.num_iterations_per_epoch)]
                self.on_train_epoch_end(train_outputs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    val_outputs = [self.validation_step(next(self.dataloader_val))
                                   for _ in range(self.num_val_iterations_per_epoch)]
                    self.on_validation_epoch_end(val_outputs)
                self.on_epoch_end()
                took = time.time() - t
                record["train_iterations"] += len(train_outputs)
                record["epoch_log"].append({"s": round(took, 2), "iterations": len(train_outputs),
                                            "lr": self.optimizer.param_groups[0]["lr"],
                                            "train_loss": float(self.logger.get_value("train_losses", step=-1))})
                remaining = deadline - time.time() - args.reserve_s
                more = int(remaining // took)
                if more == 0:  # a last, shorter epoch with the iterations that still fit (validation step as one)
                    fit = int(remaining // (took / (self.num_iterations_per_epoch + 1))) - 1
                    if fit >= 1:
                        self.num_iterations_per_epoch, more = min(fit, self.num_iterations_per_epoch), 1
                self.num_epochs = self.current_epoch + max(0, more)
                self.lr_scheduler.max_steps = max(self.num_epochs, self.current_epoch + 1)
            self.on_train_end()

    plans = json.loads(Path(args.plans).read_text())
    plans["continue_training"] = False  # what nnUNetv2_train's get_trainer_from_args adds
    dataset_json = json.loads(Path(args.dataset_json).read_text())
    with contextlib.redirect_stdout(sys.stderr):
        trainer = nnUNetTrainerBudget(plans, "3d_fullres", "all", dataset_json, device=torch.device("cpu"))
        # the predictor rebuilds the network through the trainer class named in the checkpoint, which it looks up
        # in nnU-Net's package: the budget variant changes only the epoch loop, so its checkpoints record
        # nnUNetTrainer (renamed after __init__, which named the output folder after the variant)
        nnUNetTrainerBudget.__name__ = "nnUNetTrainer"
        trainer.run_training()
    folder = Path(trainer.output_folder).parent  # nnU-Net wrote plans.json and dataset.json there
    epochs = trainer.current_epoch
    return {"engine": "nnunet", "model_folder": str(folder), "epochs": epochs, "val_iterations": epochs,
            "batch_size": trainer.batch_size, "patch": list(trainer.configuration_manager.patch_size),
            "wall_s": round(time.time() - args.started, 1), "threads": torch.get_num_threads(),
            "vm_hwm_mb": vm_hwm_mb(), **record}


def worker_unipet_train(args) -> dict:
    """unipet's default recipe from scratch: 15 calibration iterations, then a run planned to end at the budget."""
    import signal

    import torch

    from unipet.train import train

    torch.set_num_threads(args.threads)
    recipe = str(HERE / "recipes" / "default_v2.json")
    common = dict(recipe=recipe, model_kw=DEFAULT_MODEL_KW, device="cpu", patch_size=(48, 64, 64), batch_size=2,
                  workers=0, progress=False, tensorboard=False)
    stamps: list[float] = []
    calib_dir = Path(args.out) / "calibration"
    shutil.rmtree(calib_dir, ignore_errors=True)
    t_call = time.time()
    with contextlib.redirect_stdout(sys.stderr):
        train(args.cache, "dpdnet", calib_dir, iterations=args.calibration,
              callbacks=[lambda i, logs: stamps.append(time.time())], **common)
    shutil.rmtree(calib_dir, ignore_errors=True)
    step_s = (stamps[-1] - stamps[2]) / (len(stamps) - 3)  # after 3 warm-up steps
    startup_s = stamps[0] - t_call - step_s  # model build, cache open: paid again by the real run
    iterations = max(1, int((args.deadline - time.time() - startup_s - args.reserve_s) / step_s))
    run = Path(args.out) / "run"
    shutil.rmtree(run, ignore_errors=True)
    stopped_by_budget = {"v": False}

    def guard(i, logs) -> None:
        if time.time() >= args.deadline and not stopped_by_budget["v"]:
            stopped_by_budget["v"] = True
            os.kill(os.getpid(), signal.SIGTERM)  # unipet's trainer saves a checkpoint and returns

    losses: list[float] = []
    with contextlib.redirect_stdout(sys.stderr):
        result = train(args.cache, "dpdnet", run, iterations=iterations,
                       callbacks=[guard, lambda i, logs: losses.append(float(logs["loss"]))], **common)
    tail = losses[-50:]
    return {"engine": "unipet", "run": str(run), "calibration_iterations": args.calibration,
            "calibration_step_s": round(step_s, 3), "planned_iterations": iterations,
            "train_iterations": result.iteration, "stopped_by_budget": stopped_by_budget["v"],
            "final_loss_mean_last_50": round(sum(tail) / max(1, len(tail)), 4), "model_kw": DEFAULT_MODEL_KW,
            "recipe": recipe, "wall_s": round(time.time() - args.started, 1), "threads": torch.get_num_threads(),
            "vm_hwm_mb": vm_hwm_mb()}


def worker_nnunet_predict(args) -> dict:
    """``nnUNetPredictor`` (fold ``all``, no mirroring, overlap 0.5) over the held-out folder's studies."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                    perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                    allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(args.model, use_folds=("all",),
                                                       checkpoint_name="checkpoint_final.pth")
        predictor.predict_from_files(str(Path(args.inputs) / "imagesTs"), args.pred, save_probabilities=False,
                                     overwrite=True, num_processes_preprocessing=1,
                                     num_processes_segmentation_export=1)
    return {"engine": "nnunet", "wall_s": round(time.perf_counter() - t0, 1), "vm_hwm_mb": vm_hwm_mb()}


# ---------------------------------------------------------------------------------------------- scores
def scores(summary: dict) -> dict:
    """Dice per cancer type, lesion sensitivity and FPV from ``unipet evaluate``'s summary.json."""
    det = summary["lesion_detection"]
    row = {"dice": {t: summary["tasks"].get(t, {}).get("dice", {}).get("mean") for t in TASKS},
           "dice_overall": summary["overall"]["dice"]["mean"],
           "lesion_sensitivity_pooled": det["overall"]["sensitivity"],
           "lesion_sensitivity_ge_1ml": None, "fpv_ml_per_study": summary["overall"]["fpv_ml"]["mean"],
           "fnv_ml_per_study": summary["overall"]["fnv_ml"]["mean"],
           "lesion_sensitivity_per_type": {t: det["tasks"].get(t, {}).get("sensitivity") for t in TASKS}}
    big = [v for k, v in det["overall"]["by_size"].items() if k != "<1"]
    n = sum(v["n"] for v in big)
    row["lesion_sensitivity_ge_1ml"] = sum(v["detected"] for v in big) / n if n else None
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/vsnn-train"))
    p.add_argument("--budget-s", type=float, default=600.0, help="training wall seconds of each engine")
    p.add_argument("--train-cases", type=int, default=40, help="phantom studies of the training split")
    p.add_argument("--train-seed", type=int, default=31)
    p.add_argument("--test-seed", type=int, default=32, help="held-out phantoms (a seed no training used)")
    p.add_argument("--test-pool", type=int, default=32, help="held-out studies generated to pick --per-type from")
    p.add_argument("--per-type", type=int, default=3, help="lesion-positive held-out studies per cancer type")
    p.add_argument("--tasks", default=",".join(TASKS), help="cancer types of the held-out split")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--nnunet-epoch-iterations", type=int, default=5)
    p.add_argument("--nnunet-gpu-gb", type=float, help="nnU-Net planning target in GB (default: nnU-Net's own)")
    p.add_argument("--reserve-s", type=float, default=10.0, help="seconds kept for the final checkpoint")
    p.add_argument("--engines", default="nnunet,unipet")
    p.add_argument("--tiny", action="store_true", help="smoke run: 2 training studies, 1 per type, 20 s budgets")
    # worker mode
    p.add_argument("--worker", choices=("nnunet-train", "unipet-train", "nnunet-predict"))
    p.add_argument("--deadline", type=float), p.add_argument("--started", type=float)
    p.add_argument("--plans"), p.add_argument("--dataset-json"), p.add_argument("--epoch-iterations", type=int)
    p.add_argument("--cache"), p.add_argument("--out"), p.add_argument("--calibration", type=int, default=15)
    p.add_argument("--model"), p.add_argument("--inputs"), p.add_argument("--pred")
    args = p.parse_args()
    if args.worker:
        fn = {"nnunet-train": worker_nnunet_train, "unipet-train": worker_unipet_train,
              "nnunet-predict": worker_nnunet_predict}[args.worker]
        print(json.dumps(fn(args)), flush=True)
        return
    if args.tiny:
        args.budget_s, args.train_cases, args.test_pool, args.per_type = 12.0, 2, 6, 1
        args.tasks = "lymphoma,lung_cancer"
        args.nnunet_epoch_iterations, args.reserve_s, args.threads, args.calibration = 1, 1.0, 1, 5
        args.nnunet_gpu_gb = 0.05 if args.nnunet_gpu_gb is None else args.nnunet_gpu_gb  # a small patch
    import platform

    import torch

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    env = {**nnunet_env(work), "nnUNet_compile": "false", "OMP_NUM_THREADS": str(args.threads)}
    py, me = sys.executable, str(Path(__file__).resolve())
    out: dict = {"benchmark": "vs_nnunet_train", "budget_s": args.budget_s,
                 "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                             "torch": torch.__version__, "threads": args.threads}}
    try:
        from importlib.metadata import version
        out["machine"]["nnunetv2"] = version("nnunetv2")
    except Exception:  # noqa: BLE001 - reported, not fatal for the record
        pass
    meter = Meter()
    t = time.time()
    with contextlib.redirect_stdout(sys.stderr):
        out["data"] = prepare_data(args)
    out["data"]["prepare_s"] = round(time.time() - t, 1)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    train_res: dict = {}
    for engine in engines:
        print(f"[train] {engine}, budget {args.budget_s:g} s", file=sys.stderr, flush=True)
        started = time.time()
        common = ["--deadline", str(started + args.budget_s), "--started", str(started),
                  "--reserve-s", str(args.reserve_s), "--threads", str(args.threads), "--calibration",
                  str(args.calibration)]
        if engine == "nnunet":
            plans_name = plans_name_of(args)
            shutil.rmtree(work / "results" / DATASET_NAME / f"{TRAINER}__{plans_name}__3d_fullres", ignore_errors=True)
            cmd = [py, me, "--worker", "nnunet-train",
                   "--plans", str(work / "pre" / DATASET_NAME / f"{plans_name}.json"),
                   "--dataset-json", str(work / "raw" / DATASET_NAME / "dataset.json"),
                   "--epoch-iterations", str(args.nnunet_epoch_iterations), *common]
        else:
            cmd = [py, me, "--worker", "unipet-train", "--cache", str(work / "unipet-cache"), "--out",
                   str(work / "unipet"), *common]
        train_res[engine] = meter.take(run_measured(cmd, env, timeout=args.budget_s + 600))
        out["training"] = train_res
        print(json.dumps({engine: train_res[engine]}), file=sys.stderr, flush=True)
    pred_res: dict = {}
    for engine in engines:
        r = train_res.get(engine, {})
        if "error" in r:
            continue
        dest = work / "pred" / engine
        shutil.rmtree(dest, ignore_errors=True)
        print(f"[predict] {engine}", file=sys.stderr, flush=True)
        if engine == "nnunet":
            cmd = [py, me, "--worker", "nnunet-predict", "--model", r["model_folder"], "--inputs",
                   str(work / "heldout-nnunet"), "--pred", str(dest), "--threads", str(args.threads)]
        else:
            cmd = [py, str(HERE / "bench_vs_nnunet.py"), "--worker", "unipet",
                   "--model", str(Path(r["run"]) / "checkpoint"),
                   "--inputs", str(work / "heldout.json"), "--out", str(dest), "--tile-batch", "2"]
        pred_res[engine] = meter.take(run_measured(cmd, env, timeout=1200))
        evaluation = work / "eval" / engine
        sh([bin_path("unipet"), "evaluate", str(dest), str(work / "heldout.json"), "--out", str(evaluation),
            "--overwrite", "--n-boot", "200"])
        pred_res[engine]["scores"] = scores(json.loads((evaluation / "summary.json").read_text()))
        out["prediction"] = pred_res
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
