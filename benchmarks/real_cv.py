"""The common protocol of the real-PET claim benchmarks (issue 25): one cross-validation for every method.

Data: the 35 real FDG PET/CT soft-tissue sarcomas of ``../shared/real_sts_fdg`` (CC BY 3.0: Vallieres et al.
Phys Med Biol 2015; TCIA Soft-tissue-Sarcoma, DOI 10.7937/K9/TCIA.2015.7GO2GSKS; Clark et al. 2013; Zwanenburg et
al. 2020 — cite wherever a number from it is shown), cached beside the phantom training cohort of the shipped
default exactly as ``benchmarks/train_real.py`` caches them (the default's preprocessing: 5 mm, CT z-score, SUV
z-score), so a phantom-pretrained network and its fine-tuning see the same normalisation.

Folds: ``benchmarks/real_sts_folds.json`` (patient-level, k = 5, seed 0; ``unipet.data.folds``), committed and
reused by every table — the folds of the default v4's cross-validation. A method is an ``Arm``: a registry model,
its builder options, a recipe, optionally the checkpoint it starts from and the parameters it trains, and how many
of a fold's 28 training sarcomas it sees (``shots``: k cases, ``fraction``: a share; the same cases for every arm
of one fold). ``run_arm`` trains it on every fold (``WORK/runs/<arm>/fold<N>``; a complete run is reused, an
interrupted one resumes; a run folder made with another configuration is refused), predicts the fold's 7 held-out
sarcomas with ``unipet.infer`` (native grid, as ``unipet predict``) and scores them with ``unipet.evaluate``
against the expert masks. Every case is therefore scored by a model that never saw its patient.

Rows give the mean Dice over the 35 patients with its 95 % bootstrap interval, HD95, the cases above SUV >= 2.5,
trained parameters and CPU training seconds; ``paired`` gives ``unipet compare``'s paired test (bootstrap interval
of the mean difference, t and Wilcoxon p) for each comparison a claim rests on, and ``verdict`` reads it.
Baselines in every table: SUV >= 2.5 and 41 % SUVmax (``unipet.evaluate.baselines``) and a plain STU-Net-S trained
on the same folds from scratch (``PLAIN_STUNET``, one set of runs shared by all tables).
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
FOLDS_FILE = HERE / "real_sts_folds.json"
REAL = HERE.parent.parent / "shared" / "real_sts_fdg"
TASK = "soft_tissue_sarcoma"
LICENCE = ("real data: CC BY 3.0 — Vallieres et al. 2015; TCIA Soft-tissue-Sarcoma, DOI 10.7937/K9/TCIA.2015.7GO2GSKS; "
           "Clark et al. 2013; Zwanenburg et al. 2020")
#: the fine-tuning recipe every arm starts from (unipet's choice for 28 small crops on 2 CPU cores): SGD as the
#: default's recipe, lesion / random patches 2:1 (a crop is mostly tumour and its surround), flips along x and
#: small rotations; each claim overrides the learning rate or iterations per comparison and says so.
BASE_RECIPE = {"base": "nnunet", "lr": 0.01, "batch_size": 2, "patch_size": [32, 32, 32],
               "sampling": {"lesion": 0.67, "hot": 0.0, "random": 0.33, "negative": 0.0},
               "augmentation": {"flip_axes": [2], "rotate_deg": 15.0}, "dice_skip_empty": True,
               "checkpoint_every": 100, "workers": 0, "validate_every": 0}


@dataclass
class Arm:
    """One method of a table.

    Attributes:
        name: row name and run-folder name (unique over all tables; a shared arm has one configuration).
        model: registry name (``unipet.models.available()``).
        model_kw: builder options.
        recipe: the recipe (``BASE_RECIPE`` and overrides; ``cases`` is set per fold).
        init: checkpoint / run folder the fine-tuning starts from (None: from scratch).
        trainable: the model's trainable scope (None: the recipe's, i.e. every parameter).
        shots: train on k of the fold's training sarcomas (None: all).
        fraction: train on this share of them (rounded, at least 1).
        prompts: prompts to predict with (``TASK``, ``"auto"``; ``None`` for a model without prompts).
        with_phantoms: also train on the phantom cohort's training studies (the task set's other types).
        data: per-fold inputs (e.g. organ maps): a folder with ``{fold}`` in it holding that fold's real cases as
            ``cache/`` (training) and ``manifest.json`` (held-out prediction); None: the setup's cache and manifest.
            ``init`` may hold ``{fold}`` too (a per-fold pre-training).
    """

    name: str
    model: str
    model_kw: dict[str, Any]
    recipe: dict[str, Any]
    init: str | None = None
    trainable: str | None = None
    shots: int | None = None
    fraction: float | None = None
    prompts: tuple[str | None, ...] = (TASK,)
    with_phantoms: bool = False
    data: str | None = None
    notes: str = ""

    def fold_init(self, fold: int) -> str | None:
        """``init`` of ``fold`` (its ``{fold}`` filled in)."""
        return None if self.init is None else self.init.format(fold=fold)

    def fold_data(self, s: "Setup", fold: int) -> tuple[Any, Any]:
        """``(cache, manifest)`` the arm trains and predicts ``fold`` with (``data``, else the setup's)."""
        if self.data is None:
            return s.cache, s.manifest
        from unipet.data.cache import Cache
        from unipet.io.manifest import Manifest

        folder = Path(self.data.format(fold=fold))
        return Cache(folder / "cache"), Manifest.load(folder / "manifest.json")

    def config_hash(self) -> str:
        # ``data`` enters only when set, so the hashes of runs made before it existed still match
        record = {k: v for k, v in asdict(self).items() if k != "notes" and not (k == "data" and v is None)}
        return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:12]


def plain_stunet(iterations: int, tiny: bool = False) -> Arm:
    """The plain STU-Net-S baseline of every table: no prompt, no pre-training, the fold's 28 cases."""
    kw = {"base_width": 4} if tiny else {"base_width": 16}
    return Arm("stunet-s-scratch", "stunet-s", kw, recipe(iterations, tiny), prompts=(None,),
               notes="plain STU-Net-S from scratch (the issue's baseline)")


def recipe(iterations: int, tiny: bool = False, **overrides: Any) -> dict[str, Any]:
    """``BASE_RECIPE`` with ``iterations`` and overrides (tiny: 16 x 32 x 32 patches, checkpoints every 2)."""
    out = json.loads(json.dumps(BASE_RECIPE))
    out.update(iterations=iterations, **overrides)
    if tiny:
        out.update(patch_size=[16, 32, 32], checkpoint_every=2)
    return out


def pretrained_kwargs(checkpoint: Path) -> dict[str, Any]:
    """The builder options of a pre-trained STU-Net-family checkpoint with its strides made explicit, so that the
    network fine-tuned at the crops' patch (``BASE_RECIPE``) is the pre-trained one (the strides are planned from
    the patch otherwise); a universal prompt of another size is resized (``unipet.models.task_growth``)."""
    from unipet.checkpoint import find_checkpoint, read_meta
    from unipet.models.stunet import resolve_backbone

    meta = read_meta(find_checkpoint(checkpoint))
    kw = dict(meta.model_kwargs)
    conf = resolve_backbone(meta.patch_size, kw.get("backbone", "s"), kw.get("base_width"), kw.get("depth"),
                            kw.get("strides"), kw.get("spacing"), kw.get("min_feature", 4))
    return {**kw, "strides": [list(s) for s in conf["strides"]]}


@dataclass
class Setup:
    """What every arm shares: the cache (phantoms + real), the manifest, the folds."""

    work: Path
    cache: Any
    manifest: Any
    folds: dict[str, int]
    pretrained: Path  # the phantom-pretrained default (4 types) that DpDNet-family arms start from
    tiny: bool
    k: int = 5
    extra: dict[str, Any] = field(default_factory=dict)

    def fold_ids(self) -> list[int]:
        return sorted(set(self.folds.values()))


def setup(work: Path, tiny: bool = False, pretrained: Path | None = None, real: Path = REAL,
          phantoms: Path | None = None) -> Setup:
    """Cache the phantom cohort and the real sarcomas as the default was preprocessed; read (or write) the folds.

    ``pretrained`` defaults to the default v2 (the phantom-only 4-type checkpoint the v4 was grown from:
    ``git show 3a32e17:src/unipet/resources/checkpoints/dpdnet-small/...``), looked for in ``WORK/v2ckpt``; the
    shipped v4 is refused here because its sarcoma head has seen every real case."""
    import train_real

    from unipet.checkpoint import find_checkpoint, read_meta
    from unipet.data.cache import build_cache
    from unipet.data.folds import patient_folds, read_folds, write_folds
    from unipet.data.preprocess import PreprocessConfig

    work.mkdir(parents=True, exist_ok=True)
    if tiny:
        pretrained = train_real._tiny_setup(work)
        real, phantoms = work / "real", work / "cohort"
    pretrained = pretrained or work / "v2ckpt"
    if pretrained == work / "v2ckpt" and not (pretrained / "meta.json").exists():
        extract_v2(pretrained)
    if not (Path(pretrained) / "meta.json").exists() and not (Path(pretrained) / "checkpoint").exists():
        sys.exit(f"no pre-trained checkpoint in {pretrained}; extract the default v2 there: mkdir -p {pretrained} && "
                 "for f in model.safetensors meta.json; do git show 3a32e17:src/unipet/resources/checkpoints/"
                 f"dpdnet-small/$f > {pretrained}/$f; done")
    meta = read_meta(find_checkpoint(pretrained))
    if TASK in meta.task_set.names and not tiny:
        sys.exit(f"{pretrained} already knows {TASK} (trained on every real case); start from the phantom-only v2")
    phantoms = phantoms or work / "cohort"
    if not tiny and not (phantoms / "clinical.csv").exists():
        from unipet.data.phantom import write_phantom_cohort

        write_phantom_cohort(phantoms, n=160, seed=0, size="small", workers=1)
    manifest, _ = train_real.merged_manifest(work, phantoms, real, tiny)
    cache = build_cache(manifest, work / "cache", preprocess=PreprocessConfig.from_dict(meta.preprocess), workers=1)
    real_cases = [(c.case_id, c.patient_id) for c in manifest if c.split == "real"]
    folds_file = work / "folds.json" if tiny else FOLDS_FILE
    k = 2 if tiny else 5
    if not folds_file.exists():
        write_folds(folds_file, patient_folds(real_cases, k=k, seed=0), k=k, seed=0)
    folds = read_folds(folds_file)
    missing = sorted({c for c, _ in real_cases} - set(folds))
    if missing:
        sys.exit(f"{folds_file} lacks {', '.join(missing[:3])}: it was written for another cohort")
    return Setup(work, cache, manifest, folds, Path(pretrained), tiny, k)


#: the commit whose shipped checkpoint is the phantom-only default v2
V2_COMMIT = "3a32e17"


def extract_v2(dest: Path) -> None:
    """Write default v2's ``model.safetensors`` and ``meta.json`` from the repository's history into ``dest``
    (nothing is written when git or the commit is not available: ``setup`` then says how to provide it)."""
    import subprocess

    files = {}
    for name in ("model.safetensors", "meta.json"):
        proc = subprocess.run(["git", "-C", str(HERE), "show",
                               f"{V2_COMMIT}:src/unipet/resources/checkpoints/dpdnet-small/{name}"],
                              capture_output=True)
        if proc.returncode != 0:
            return
        files[name] = proc.stdout
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (dest / name).write_bytes(data)


def training_cases(s: Setup, fold: int, shots: int | None = None, fraction: float | None = None) -> list[str]:
    """The fold's training sarcomas, or k of them / a share of them (the same draw for every arm of the fold)."""
    from unipet.data.folds import fold_split

    train, _ = fold_split(s.folds, fold)
    n = shots if shots is not None else (max(1, round(fraction * len(train))) if fraction is not None else None)
    if n is None or n >= len(train):
        return train
    return sorted(random.Random(1000 + fold).sample(train, n))


def train_arm(s: Setup, arm: Arm, fold: int, threads: int = 1) -> dict[str, Any]:
    """Train ``arm`` on ``fold`` (reused when complete, resumed when interrupted); returns its budget record."""
    real = training_cases(s, fold, arm.shots, arm.fraction)
    cases = list(real)
    if arm.with_phantoms:
        cases += phantom_training(s)
    cache, _ = arm.fold_data(s, fold)
    return train_run(s, arm, s.work / "runs" / arm.name / f"fold{fold}", cases, len(real), threads, cache=cache,
                     init=arm.fold_init(fold))


def phantom_training(s: Setup) -> list[str]:
    """The phantom cohort's training studies (split ``train``; the real sarcomas are split ``real``)."""
    return [c.case_id for c in s.manifest if c.split == "train"]


def pretrain(s: Setup, arm: Arm, threads: int = 1) -> Path:
    """Train ``arm`` once on the phantom training studies alone (``WORK/runs/<arm>``: reused when complete,
    resumed when interrupted) — the phantom pre-training a claim's fine-tuning arms start from; returns the folder."""
    run = s.work / "runs" / arm.name
    train_run(s, arm, run, phantom_training(s), 0, threads)
    return run


def train_run(s: Setup, arm: Arm, run: Path, cases: Sequence[str], real_cases: int, threads: int = 1,
              cache: Any = None, init: str | None = None) -> dict[str, Any]:
    """Train ``arm`` on ``cases`` of ``cache`` (default: the setup's) into ``run`` (``real_cases`` of them real),
    starting from ``init`` (default: ``arm.init``), unless ``run`` holds a complete training of the same
    configuration; returns its budget record (``budget.json``)."""
    from unipet.checkpoint import read_meta
    from unipet.models.base import count_parameters
    from unipet.train import train

    done = claim_run(run, arm)
    if done is not None:
        return done
    rec = dict(arm.recipe, cases=list(cases), name=arm.name)
    rec_path = run / "recipe.json"
    rec_path.write_text(json.dumps(rec, indent=1))
    resume = (run / "checkpoint" / "meta.json").exists()
    t0 = time.perf_counter()
    init = init if init is not None else arm.init
    result = train(cache if cache is not None else s.cache, arm.model, run, recipe=None if resume else rec_path,
                   model_kw=arm.model_kw, device="cpu", resume=resume, progress=False, tensorboard=False,
                   init_from=None if resume or not init else init, trainable=None if resume else arm.trainable)
    if result.stopped:
        sys.exit(f"{arm.name} ({run.name}) stopped at iteration {result.iteration}; run the command again to resume")
    record = {"train_s": round(time.perf_counter() - t0, 1), "iterations": result.iteration,
              "trained_parameters": count_parameters(result.model, trainable_only=True),
              "parameters": count_parameters(result.model), "train_cases": real_cases, "threads": threads,
              "init_from": read_meta(run / "checkpoint").init_from, "resumed": resume}
    (run / "budget.json").write_text(json.dumps(record, indent=1, default=str))
    return record


def claim_run(run: Path, arm: Arm) -> dict[str, Any] | None:
    """The budget record of ``run`` when it holds a complete training of ``arm``'s configuration; else stamp
    ``run`` with the configuration (``arm.json``) and return None. A run of another configuration is refused."""
    from unipet.checkpoint import read_meta

    run.mkdir(parents=True, exist_ok=True)
    stamp = run / "arm.json"
    config = {"hash": arm.config_hash(), "arm": asdict(arm)}
    if stamp.exists() and json.loads(stamp.read_text())["hash"] != config["hash"]:
        sys.exit(f"{run} was trained with another configuration of {arm.name}; rename the arm or remove the folder")
    record_file = run / "budget.json"
    if record_file.exists() and (run / "checkpoint" / "meta.json").exists() and read_meta(run / "checkpoint").complete:
        return json.loads(record_file.read_text())
    stamp.write_text(json.dumps(config, indent=1, default=str))
    return None


def predict_fold(s: Setup, arm: Arm, fold: int, run: Path | None = None) -> dict[str, dict[str, dict]]:
    """``{prompt: {case: per-case numbers}}`` of the fold's held-out sarcomas (cached in ``scores.json``)."""
    import bench_real

    from unipet.data.folds import fold_split
    from unipet.evaluate import EvaluationConfig, evaluate
    from unipet.infer import Predictor, predict_batch
    from unipet.io.manifest import Manifest

    run = run or s.work / "runs" / arm.name / f"fold{fold}"
    done = run / "scores.json"
    if done.exists():
        return json.loads(done.read_text())
    _, held = fold_split(s.folds, fold)
    _, manifest = arm.fold_data(s, fold)
    mpath = run / "heldout.json"
    Manifest([manifest.by_id(c) for c in held], task_set=manifest.task_set, source="real").save(mpath,
                                                                                                 overwrite=True)
    predictor = Predictor.from_checkpoint(run, device="cpu")
    out: dict[str, dict] = {}
    config = EvaluationConfig(n_boot=50, with_suv=True, missing_as_empty=True)
    for prompt in arm.prompts:
        label = prompt or "none"
        preds = run / f"pred_{label}"
        report = predict_batch(predictor, mpath, preds, task=prompt, overwrite=True)
        evaluate(preds, mpath, run / f"eval_{label}", config, overwrite=True)
        out[label] = bench_real.per_case(run / f"eval_{label}")
        if prompt == "auto":
            for r in report.records:
                out[label][r["case_id"]]["auto_task"] = r["task"]
                out[label][r["case_id"]]["auto_p"] = round(r["task_probability"] or 0.0, 3)
    done.write_text(json.dumps(out, indent=1))
    return out


def run_arm(s: Setup, arm: Arm, threads: int = 1, folds: Sequence[int] | None = None,
            after_train: Callable[[Path, int], None] | None = None,
            trainer: Callable[[Setup, Arm, int, int], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train and score ``arm`` on every fold: ``{"per_case": {prompt: {case: numbers}}, "budget": {...}}``.

    ``trainer(s, arm, fold, threads)`` trains a fold into ``WORK/runs/<arm>/fold<N>`` and returns its budget
    record (the keys of ``train_run``'s); default ``train_arm``. A method that ``unipet.train.train`` does not
    run directly (e.g. ``unipet gcis adapt``) gives its own and keeps the folds, predictions and scores."""
    per_prompt: dict[str, dict] = {}
    budgets = []
    for fold in folds if folds is not None else s.fold_ids():
        budgets.append((trainer or train_arm)(s, arm, fold, threads))
        if after_train is not None:
            after_train(s.work / "runs" / arm.name / f"fold{fold}", fold)
        for prompt, cases in predict_fold(s, arm, fold).items():
            per_prompt.setdefault(prompt, {}).update(cases)
    budget = {"iterations": budgets[0]["iterations"], "train_s_per_fold": round(
        sum(b["train_s"] for b in budgets if not b["resumed"]) / max(1, sum(not b["resumed"] for b in budgets)), 1),
        "trained_parameters": budgets[0]["trained_parameters"], "parameters": budgets[0]["parameters"],
        "train_cases": [b["train_cases"] for b in budgets], "init": arm.init, "trainable": arm.trainable or "all",
        "init_from": budgets[0]["init_from"]}
    return {"per_case": per_prompt, "budget": budget, "arm": asdict(arm)}


def baselines(s: Setup) -> dict[str, dict[str, dict]]:
    """``{"suv2.5": per-case, "suvmax41": per-case}`` on every real case (rules learn nothing: all are held out)."""
    import bench_real

    done = s.work / "baselines.json"
    if done.exists():
        return json.loads(done.read_text())
    from unipet.evaluate import EvaluationConfig
    from unipet.evaluate.baselines import evaluate_baselines
    from unipet.io.manifest import Manifest

    real = [c for c in s.manifest if c.split == "real"]
    mpath = s.work / "real_manifest.json"
    Manifest(real, task_set=s.manifest.task_set, source="real").save(mpath, overwrite=True)
    found = evaluate_baselines(mpath, s.work / "baselines", ["suv2.5", "suvmax41"],
                               config=EvaluationConfig(n_boot=50, with_suv=True), overwrite=True)
    if found["skipped"]:
        sys.exit(f"baselines skipped: {found['skipped']}")
    out = {m: bench_real.per_case(s.work / "baselines" / m) for m in ("suv2.5", "suvmax41")}
    done.write_text(json.dumps(out, indent=1))
    return out


def summary_row(cases: dict[str, dict], reference: dict[str, dict] | None = None) -> dict[str, Any]:
    """Mean Dice with its 95 % bootstrap interval over patients, HD95, |MTV| error and cases above SUV >= 2.5."""
    from unipet.evaluate.aggregate import bootstrap_ci

    dice = [c["dice"] for c in cases.values()]
    ci = bootstrap_ci(dice, n_boot=2000, seed=0)

    def mean(key):
        vals = [c[key] for c in cases.values() if c.get(key) is not None and math.isfinite(c[key])]
        return round(sum(vals) / len(vals), 2) if vals else None

    row = {"n": len(dice), "dice": round(ci["mean"], 3), "dice_lo": round(ci["lo"], 3), "dice_hi": round(ci["hi"], 3),
           "hd95_mm": mean("hd95_mm"), "mtv_abs_error_pct": mean("mtv_abs_error_pct")}
    if reference is not None:
        row["above_suv2.5"] = sum(1 for k, c in cases.items() if c["dice"] > reference[k]["dice"])
    return row


def paired(a: dict[str, dict], b: dict[str, dict]) -> dict[str, Any]:
    """``unipet compare``'s paired test of Dice ``b - a`` over the patients both score."""
    from unipet.evaluate.compare import paired_test

    keys = sorted(set(a) & set(b))
    out = paired_test([a[k]["dice"] for k in keys], [b[k]["dice"] for k in keys], n_boot=2000)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def verdict(test: dict[str, Any], margin: float = 0.0) -> str:
    """``holds`` when the interval of ``b - a`` lies above ``-margin`` (with ``margin`` 0: above 0), ``does not
    hold`` when it lies below, else ``inconclusive``."""
    if test["diff_lo"] > -margin:
        return "holds"
    if test["diff_hi"] < -margin:
        return "does not hold"
    return "inconclusive"


def table(s: Setup, results: dict[str, dict], comparisons: Sequence[tuple[str, str, str]],
          base: dict[str, dict] | None = None) -> dict[str, Any]:
    """Rows of every arm / prompt and of the rules, and the paired tests of ``comparisons`` (a, b, claim text[,
    margin]: ``b`` holds when it is no worse than ``a`` by more than the margin, see ``verdict``; default 0).

    Rows are named ``arm`` (or ``arm --task auto`` for a second prompt); a comparison names two rows."""
    base = base if base is not None else baselines(s)
    reference = base["suv2.5"]
    per_row = {f"SUV >= 2.5": reference, "41 % SUVmax": base["suvmax41"]}
    budget = {}
    for name, res in results.items():
        for i, (prompt, cases) in enumerate(res["per_case"].items()):
            row = name if i == 0 else f"{name} --task {prompt}"
            per_row[row] = cases
            budget[row] = res["budget"]
    rows = {name: {**summary_row(cases, reference), **({"budget": budget[name]} if name in budget else {})}
            for name, cases in per_row.items()}
    tests = []
    for a, b, claim, *margin in comparisons:
        test = paired(per_row[a], per_row[b])
        m = float(margin[0]) if margin else 0.0
        tests.append({"a": a, "b": b, "claim": claim, **test, "margin": m, "verdict": verdict(test, m)})
    folds = str(s.work / "folds.json") if s.tiny else str(FOLDS_FILE.relative_to(HERE.parent))
    return {"rows": rows, "paired": tests, "folds": folds,
            "licence": LICENCE, "per_case": per_row}


def print_table(doc: dict[str, Any]) -> None:
    """The table (stderr): Dice [CI], HD95, |MTV|%, cases above SUV >= 2.5, trained parameters, s / fold."""
    head = f"{'method':<44}{'Dice':>7}{'95% CI':>15}{'HD95':>7}{'|MTV|%':>8}{'>2.5':>6}{'trained':>10}{'s/fold':>8}"
    print(head + "\n" + "-" * len(head), file=sys.stderr)
    for name, r in doc["rows"].items():
        b = r.get("budget", {})
        print(f"{name:<44}{r['dice']:>7.3f}  [{r['dice_lo']:.3f}-{r['dice_hi']:.3f}]{r['hd95_mm'] or math.nan:>7.1f}"
              f"{r['mtv_abs_error_pct'] or math.nan:>8.0f}{r.get('above_suv2.5', ''):>6}"
              f"{b.get('trained_parameters', ''):>10}{b.get('train_s_per_fold', ''):>8}", file=sys.stderr)
    for t in doc["paired"]:
        print(f"{t['b']} - {t['a']}: {t['diff']:+.3f} [{t['diff_lo']:+.3f}, {t['diff_hi']:+.3f}] t p={t['t_p']:.3g} "
              f"-> {t['verdict']} ({t['claim']})", file=sys.stderr)


def markdown(doc: dict[str, Any]) -> str:
    """The table and the paired tests of ``doc`` as Markdown (for ``benchmarks/RESULTS.md``)."""
    def num(v, spec: str) -> str:
        return format(v, spec) if isinstance(v, (int, float)) and math.isfinite(v) else "-"

    lines = ["| method | Dice [95 % CI] | HD95 mm | abs MTV error % | > SUV 2.5 | trained params | s / fold |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in doc["rows"].items():
        b = r.get("budget", {})
        lines.append(f"| {name} | {r['dice']:.3f} [{r['dice_lo']:.3f}-{r['dice_hi']:.3f}] | {num(r['hd95_mm'], '.1f')} | "
                     f"{num(r['mtv_abs_error_pct'], '.0f')} | {r.get('above_suv2.5', '')} | {b.get('trained_parameters', '')} | "
                     f"{b.get('train_s_per_fold', '')} |")
    lines += ["", "| comparison (b - a) | mean diff [95 % CI] | t p | Wilcoxon p | margin | verdict |",
              "| --- | --- | --- | --- | --- | --- |"]
    for t in doc["paired"]:
        lines.append(f"| {t['b']} - {t['a']} | {t['diff']:+.3f} [{t['diff_lo']:+.3f}, {t['diff_hi']:+.3f}] | "
                     f"{num(t['t_p'], '.3g')} | {num(t.get('wilcoxon_p'), '.3g')} | {t.get('margin', 0.0)} | "
                     f"{t['verdict']} |")
    return "\n".join(lines)


def write(doc: dict[str, Any], out: Path | None) -> None:
    """Print the JSON (stdout) and write it to ``out``."""
    text = json.dumps(doc, indent=1, default=str)
    if out is not None:
        out.write_text(text + "\n")
    print(text)


def common_args(p) -> None:
    """Arguments every claim benchmark takes."""
    p.add_argument("--work", type=Path, help="cache, runs and scores (reused; default: a temp folder)")
    p.add_argument("--pretrained", type=Path, help="the phantom-only default v2 (default: WORK/v2ckpt)")
    p.add_argument("--iterations", type=int, default=None, help="fine-tuning steps per run (default: the claim's)")
    p.add_argument("--folds", type=int, nargs="+", help="run only these folds (the table needs all five)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on a shared 2-core machine)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--tiny", action="store_true", help="CPU smoke check: tiny cohorts, network and budget")


def start(args) -> Setup:
    """Threads, work folder and ``setup`` from ``common_args``."""
    import tempfile

    import torch

    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="unipet-real-cv-"))
    return setup(work, tiny=args.tiny, pretrained=args.pretrained)
