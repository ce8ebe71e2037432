"""Synthetic whole-body FDG PET/CT studies and cohorts with known truth (lesions, organs, survival).

``generate_study(seed)`` builds one patient — anatomy head to thigh (``anatomy``), a cancer type's lesions
(``lesions``), PET in SUV and CT in HU (``imaging``) and a simulated outcome (``clinical``) — deterministically
from the seed. ``write_phantom_cohort`` writes many of them in
the autoPET layout with a ``clinical.csv``; ``unipet import phantom`` reads it back.

Sizes (``(z, y, x)`` voxels at ``(z, y, x)`` mm): ``small`` 192×96×96 at 5 mm (fast tests and demos),
``full`` 330×224×224 at 3×2×2 mm, ``autopet`` 326×400×400 at 3×2.04×2.04 mm (autoPET's PET grid).

``spectrum`` (``default`` or ``wide``, see ``unipet.data.phantom.spectrum``) widens the lesions and imaging; the
default spectrum gives the arrays every earlier cohort had. A wide-spectrum study of a seed is the default study
of that seed with the additions (its anatomy, physiology and noise draws are the same), or a partial field of
view of it: then ``truth["field_of_view"]`` gives the kept box and ``truth["lesions"][i]["in_view"]`` which
lesions are in it (the other truth numbers stay those of the whole patient).
"""
from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unipet.data.organs import ORGAN_LABELS
from unipet.data.phantom.anatomy import build_anatomy
from unipet.data.phantom.clinical import TASKS, sample_subject, simulate_outcome
from unipet.data.phantom.geometry import Grid
from unipet.data.phantom.imaging import sample_scan, synthesize, widen_scan
from unipet.data.phantom.lesions import Lesion, place_lesions, plan_lesions, widen_plan
from unipet.data.phantom.spectrum import SARCOMA, Spectrum, get_spectrum, spectrum_rng
from unipet.errors import ConfigError, OutputExistsError, UnknownTaskError
from unipet.study import Study, StudyMeta

SIZES: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    "small": ((192, 96, 96), (5.0, 5.0, 5.0)),
    "full": ((330, 224, 224), (3.0, 2.0, 2.0)),
    "autopet": ((326, 400, 400), (3.0, 2.0364, 2.0364)),
}
NEGATIVE_FRACTION = 0.3
FOLLOW_UP_FRACTION = 0.12
FOLLOW_UP_MONTHS = 3.0
CLINICAL_COLUMNS = ("study_id", "patient_id", "task", "sex", "age", "weight_kg", "height_m", "time", "event",
                    "negative", "true_mtv_ml", "true_tlg", "true_suv_max", "n_lesions", "visit", "injected_dose_bq",
                    "injection_to_scan_s", "seed", "size")


@dataclass
class PhantomStudy:
    """One synthetic study and its truth.

    Attributes:
        study: the ``Study`` (PET SUV, CT HU, lesion ``label``, ``organs`` map, ``organ_labels``, task, meta).
        truth: ``negative`` flag, ``lesions`` (list of dicts: site, organ, ct, primary, necrotic, diameter_mm,
            centre_xyz_mm, volume_ml, suv_max, suv_mean, suv_true_peak), ``mtv_ml``, ``tlg`` (SUV·mL),
            ``suv_max`` — burden from the true mask and the noise-free (blurred) SUV — and ``outcome``
            (``time`` months, ``event``) for baseline studies.
        pet_clean: the noise-free, PSF-blurred SUV ``(z, y, x)`` float32 (what a perfect scanner would show).
        instances: lesion instance map ``(z, y, x)`` uint16: 0 background, ``i + 1`` for ``truth["lesions"][i]``.
    """

    study: Study
    truth: dict[str, Any]
    pet_clean: np.ndarray = field(repr=False)
    instances: np.ndarray = field(repr=False)


def _streams(seed: int, visit: int) -> dict[str, np.random.Generator]:
    """Independent random streams of a study: subject, anatomy, lesions, outcome (patient), scan (per visit)."""
    root = np.random.SeedSequence(int(seed))
    subject, anatomy, lesions, outcome = root.spawn(4)
    scan = np.random.SeedSequence(int(seed), spawn_key=(100 + visit,))
    return {k: np.random.default_rng(s) for k, s in
            (("subject", subject), ("anatomy", anatomy), ("lesions", lesions), ("outcome", outcome), ("scan", scan))}


def _resolve_task(task: str | None, spectrum: Spectrum | None = None) -> str | None:
    if task is None:
        return None
    name = str(task).lower()
    if name in TASKS:
        return name
    if name in (SARCOMA, "sarcoma", "sts"):
        if spectrum is not None and spectrum.sarcoma:
            return SARCOMA
        raise UnknownTaskError(f"the phantom makes {SARCOMA} only with the wide spectrum; pass spectrum='wide' "
                               "(unipet phantom --spectrum wide)")
    from unipet.tasks import TaskSet

    try:
        name = TaskSet.load().resolve(name)
    except UnknownTaskError:
        name = ""
    if name not in TASKS:
        raise UnknownTaskError(f"the phantom has no cancer type {task!r}; use one of {', '.join(TASKS)} (or None for a random one)")
    return name


def _grid(size: str, rng: np.random.Generator) -> Grid:
    if size not in SIZES:
        raise ConfigError(f"unknown phantom size {size!r}; use one of {', '.join(SIZES)}")
    shape, spacing = SIZES[size]
    top = float(rng.uniform(-25.0, 15.0))  # field-of-view top, mm below the vertex (negative: above it)
    origin = (-(top + (shape[0] - 1) * spacing[0]), 10.0 - (shape[1] - 1) * spacing[1] / 2, -(shape[2] - 1) * spacing[2] / 2)
    return Grid(shape, spacing, origin)


def generate_study(seed: int, task: str | None = None, size: str = "small", negative: bool | None = None,
                   spectrum: str | Spectrum | None = None) -> PhantomStudy:
    """Generate one whole-body FDG PET/CT study; the same arguments always give identical arrays.

    Args:
        seed: the patient's seed (any non-negative int).
        task: cancer type (``lung_cancer``, ``lymphoma``, ``melanoma``, ``breast_cancer`` or an alias); None
            draws one from the seed.
        size: ``small``, ``full`` or ``autopet`` (see the module docstring).
        negative: True for a lesion-free study (a patient in remission; the task is still set); None draws it
            with probability 0.3.
        spectrum: ``default`` (None), ``wide`` or a ``Spectrum`` (see the module docstring); the wide spectrum
            also allows ``task="soft_tissue_sarcoma"``.

    Returns:
        A :class:`PhantomStudy`; ``study.study_id`` is ``phantom<seed>``.
    """
    spec = get_spectrum(spectrum)
    return _generate(int(seed), _resolve_task(task, spec), size, negative, visit=0, spectrum=spec)


def _generate(seed: int, task: str | None, size: str, negative: bool | None, visit: int,
              study_id: str | None = None, patient_id: str | None = None,
              spectrum: Spectrum | None = None) -> PhantomStudy:
    spectrum = spectrum or get_spectrum(None)
    wide = not spectrum.is_default
    plan_rng, scan_rng = (spectrum_rng(seed), spectrum_rng(seed, visit)) if wide else (None, None)
    rs = _streams(seed, visit)
    srng = rs["subject"]
    drawn_task = TASKS[int(srng.integers(len(TASKS)))]
    drawn_negative = bool(srng.random() < NEGATIVE_FRACTION)
    task = task or drawn_task
    negative = drawn_negative if negative is None else bool(negative)
    subject = sample_subject(srng, task)
    grid = _grid(size, srng)
    anatomy = build_anatomy(subject, grid, rs["anatomy"])
    specs = [] if negative else plan_lesions(task, rs["lesions"], female=subject.sex == "F")
    if wide:
        specs = widen_plan(specs, spectrum.bulky, spectrum.muscle, plan_rng)
    scale = _response(specs, rs["scan"]) if visit > 0 and specs else None
    lesions = place_lesions(specs, anatomy, rs["lesions"], scale=scale)
    scan = sample_scan(rs["scan"], subject, grid.voxel_ml)
    if spectrum.scanner:
        scan = widen_scan(scan, scan_rng)
    images = synthesize(anatomy, lesions, scan, subject, rs["scan"],
                        head_neck_rng=scan_rng if spectrum.head_neck else None)
    instances = np.zeros(grid.shape, np.uint16)
    for i, les in enumerate(lesions):
        instances[les.slices][les.mask] = i + 1
    label = (instances > 0).astype(np.uint8)
    truth = _truth(lesions, label, images.pet_clean, grid, negative=not lesions)
    dose = subject.weight_kg * float(rs["scan"].uniform(3.0e6, 4.0e6))
    delay = float(rs["scan"].uniform(3300.0, 4200.0))
    extra: dict[str, Any] = {"injection_to_scan_s": round(delay, 1), "negative": int(truth["negative"]), "seed": seed,
                             "size": size, "visit": visit}
    if wide:
        extra.update(spectrum=spectrum.name, psf_fwhm_mm=round(scan.psf_fwhm_mm, 2))
    if visit == 0:
        time, event = simulate_outcome(truth["mtv_ml"], truth["tlg"], truth["suv_max"], subject.age, task, rs["outcome"])
        truth["outcome"] = {"time": float(time[0]), "event": int(event[0])}
        extra.update(truth["outcome"])
    sid = study_id or f"phantom{seed}"
    meta = StudyMeta(age=subject.age, sex=subject.sex, weight_kg=subject.weight_kg, height_m=subject.height_m,
                     tracer="FDG", scanner="unipet phantom", injected_dose_bq=round(dose, 0), extra=extra)
    study = Study(study_id=sid, patient_id=patient_id or sid, pet=images.pet, ct=images.ct, affine=grid.affine,
                  task=task, label=label, organs=anatomy.organs, organ_labels=dict(ORGAN_LABELS), meta=meta)
    ps = PhantomStudy(study=study, truth=truth, pet_clean=images.pet_clean, instances=instances)
    if wide:
        fov, centre_pick, margin_mm = scan_rng.random() < spectrum.partial_fov, scan_rng.random(), scan_rng.uniform(30, 80)
        if fov:
            ps = partial_view(ps, centre_pick, float(margin_mm))
    return ps


def partial_view(ps: PhantomStudy, pick: float, margin_mm: float) -> PhantomStudy:
    """The study cut to a box ``margin_mm`` around one lesion (chosen by ``pick`` in [0, 1)), or around a body
    voxel of a lesion-free study: a partial field of view like a real crop around a tumour.

    Every array, the affine and the truth's ``field_of_view`` / per-lesion ``in_view`` are updated (see the
    module docstring)."""
    from unipet.study import index_to_world_zyx

    st = ps.study
    if ps.truth["lesions"]:
        target = ps.instances == 1 + int(pick * len(ps.truth["lesions"]))
    else:
        body = np.flatnonzero(st.organs > 0)
        target = np.zeros(st.organs.shape, bool)
        target.reshape(-1)[body[int(pick * body.size)]] = True
    idx = np.nonzero(target)
    margin = [int(np.ceil(margin_mm / s)) for s in st.spacing]
    box = tuple(slice(max(0, int(i.min()) - m), min(n, int(i.max()) + 1 + m))
                for i, m, n in zip(idx, margin, target.shape))
    affine = np.array(st.affine, dtype=np.float64)
    affine[:3, 3] = (index_to_world_zyx(st.affine) @ np.array([b.start for b in box] + [1.0]))[:3]
    instances = ps.instances[box].copy()
    label = (instances > 0).astype(np.uint8)
    seen = set(int(v) for v in np.unique(instances) if v)
    truth = dict(ps.truth, field_of_view={"box_zyx": [[b.start, b.stop] for b in box], "margin_mm": round(margin_mm, 1)},
                 lesions=[dict(les, in_view=(i + 1) in seen) for i, les in enumerate(ps.truth["lesions"])])
    study = Study(study_id=st.study_id, patient_id=st.patient_id, pet=st.pet[box].copy(), ct=st.ct[box].copy(),
                  affine=affine, task=st.task, label=label, organs=st.organs[box].copy(),
                  organ_labels=st.organ_labels, meta=st.meta)
    study.meta.extra["partial_fov"] = 1
    return PhantomStudy(study=study, truth=truth, pet_clean=ps.pet_clean[box].copy(), instances=instances)


def _response(specs: list, rng: np.random.Generator) -> np.ndarray:
    """Per-lesion diameter factors at follow-up: complete / partial response, stable or progressive disease."""
    kind = rng.choice(4, p=[0.25, 0.35, 0.2, 0.2])
    base = (0.0, rng.uniform(0.4, 0.8), rng.uniform(0.85, 1.15), rng.uniform(1.1, 1.5))[kind]
    return base * np.exp(rng.normal(0, 0.1, len(specs)))


def _truth(lesions: list[Lesion], label: np.ndarray, pet_clean: np.ndarray, grid: Grid, negative: bool) -> dict[str, Any]:
    vml = grid.voxel_ml
    rows = []
    for les in lesions:
        vals = pet_clean[les.slices][les.mask]
        c = les.centre
        rows.append({
            "site": les.spec.site, "organ": les.organ, "ct": les.spec.ct, "primary": les.spec.primary,
            "necrotic": les.spec.necrotic, "diameter_mm": round(les.spec.diameter_mm, 2),
            "centre_xyz_mm": [round(float(c[2]), 1), round(float(c[1]), 1), round(float(c[0]), 1)],
            "volume_ml": round(float(les.mask.sum()) * vml, 4), "suv_max": round(float(vals.max()), 4),
            "suv_mean": round(float(vals.mean()), 4), "suv_true_peak": round(les.spec.suv, 3)})
    inside = label.astype(bool)
    vals = pet_clean[inside]
    return {"negative": bool(negative), "lesions": rows, "mtv_ml": round(float(inside.sum()) * vml, 4),
            "tlg": round(float(vals.sum()) * vml, 4), "suv_max": round(float(vals.max()) if vals.size else 0.0, 4)}


# ---------------------------------------------------------------------------------------------- cohort
def _plan_cohort(n: int, seed: int, tasks: tuple[str, ...] = TASKS) -> list[dict[str, Any]]:
    """Patients of a cohort of ``n`` studies: seed, task (``tasks`` in turn), negative flag, visits (1 or 2)."""
    rng = np.random.default_rng([int(seed), 0x5EED])
    tasks = [tasks[i % len(tasks)] for i in range(n)]
    rng.shuffle(tasks)
    negatives = np.zeros(n, bool)
    negatives[: int(round(NEGATIVE_FRACTION * n))] = True
    rng.shuffle(negatives)
    patients, made, j = [], 0, 0
    while made < n:
        visits = 2 if (n - made >= 2 and rng.random() < FOLLOW_UP_FRACTION) else 1
        pseed = int(np.random.SeedSequence([int(seed), j]).generate_state(1, np.uint32)[0])
        patients.append({"index": j, "seed": pseed, "task": tasks[made], "negative": bool(negatives[made]),
                         "visits": visits})
        made += visits
        j += 1
    return patients


def _make_patient(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Generate and write one patient's studies (a process-pool worker); returns their clinical rows."""
    out, size, cohort_seed = Path(job["out"]), job["size"], job["cohort_seed"]
    pid = f"PH{cohort_seed}_{job['index']:04d}"
    rows, outcome = [], None
    for visit in range(job["visits"]):
        sid = f"{pid}_{visit}"
        ps = _generate(job["seed"], job["task"], size, job["negative"], visit, study_id=sid, patient_id=pid,
                       spectrum=get_spectrum(job.get("spectrum")))
        st = ps.study
        if visit == 0:
            outcome = ps.truth["outcome"]
        # Follow-up after 3 months, or half-way to an earlier death / censoring; time counts from this scan.
        time = outcome["time"] - visit * min(FOLLOW_UP_MONTHS, 0.5 * outcome["time"])
        _write_study(ps, out / pid / sid, job["overwrite"], job["dicom"])
        m = st.meta
        rows.append({"study_id": sid, "patient_id": pid, "task": st.task, "sex": m.sex, "age": m.age,
                     "weight_kg": m.weight_kg, "height_m": m.height_m, "time": round(time, 2), "event": outcome["event"],
                     "negative": int(ps.truth["negative"]), "true_mtv_ml": ps.truth["mtv_ml"], "true_tlg": ps.truth["tlg"],
                     "true_suv_max": ps.truth["suv_max"], "n_lesions": len(ps.truth["lesions"]), "visit": visit,
                     "injected_dose_bq": m.injected_dose_bq, "injection_to_scan_s": m.extra["injection_to_scan_s"],
                     "seed": job["seed"], "size": size})
    return rows


def _write_study(ps: PhantomStudy, folder: Path, overwrite: bool, dicom: bool) -> None:
    from unipet.fileio import atomic_write_json
    from unipet.io.nifti import save_volume

    st = ps.study
    save_volume(st.pet, st.affine, folder / "SUV.nii.gz", overwrite=overwrite)
    save_volume(st.ct, st.affine, folder / "CTres.nii.gz", overwrite=overwrite)
    save_volume(st.label, st.affine, folder / "SEG.nii.gz", overwrite=overwrite)
    save_volume(st.organs, st.affine, folder / "ORGANS.nii.gz", overwrite=overwrite)
    atomic_write_json(folder / "truth.json", ps.truth, overwrite=overwrite)
    if dicom:
        try:
            from unipet.io.dicom_write import write_dicom_study
        except ImportError:
            raise ConfigError("DICOM export needs unipet.io.dicom_write, which this installation lacks; "
                              "write the cohort without --dicom") from None
        write_dicom_study(st, folder / "dicom", injected_dose_bq=st.meta.injected_dose_bq,
                          injection_to_scan_s=st.meta.extra["injection_to_scan_s"], overwrite=overwrite)


def _clear_previous(out: Path) -> None:
    """Remove the study folders an earlier phantom cohort in ``out`` listed (and nothing else)."""
    old = out / "clinical.csv"
    if not old.exists():
        return
    with old.open(newline="") as fh:
        for row in csv.DictReader(fh):
            pid, sid = row.get("patient_id", ""), row.get("study_id", "")
            if not pid or not sid or "/" in pid + sid or ".." in pid + sid:
                continue
            folder = out / pid / sid
            if folder.is_dir():
                shutil.rmtree(folder)
            if (out / pid).is_dir() and not any((out / pid).iterdir()):
                (out / pid).rmdir()


def write_phantom_cohort(out_dir: str | Path, n: int, seed: int, size: str = "small", dicom: bool = False,
                         overwrite: bool = False, workers: int = 1, spectrum: str | None = None,
                         tasks: tuple[str, ...] | None = None) -> Path:
    """Write ``n`` phantom studies in the autoPET layout.

    Layout: ``<out>/<patient>/<study>/{SUV,CTres,SEG,ORGANS}.nii.gz`` (+ ``truth.json``, and ``dicom/{PT,CT}``
    when ``dicom``), ``<out>/clinical.csv`` (columns ``CLINICAL_COLUMNS``) and ``<out>/organs.json``
    (``ORGAN_LABELS``). About 30 % of studies are negative controls (still carrying a cancer-type task) and
    about 12 % of patients have a 3-month follow-up study (patient id shared), to exercise patient-level splits.

    Args:
        out_dir: output folder; refused when it exists and is not empty, unless ``overwrite`` (which replaces
            the studies of an earlier cohort listed in its ``clinical.csv`` and leaves other files alone).
        n: number of studies (≥ 1). seed: cohort seed. size: ``small``, ``full`` or ``autopet``.
        workers: processes (1 = in this process).
        spectrum: ``default`` (None) or ``wide`` (see the module docstring).
        tasks: the cancer types dealt in turn (default: the four of ``TASKS``; ``soft_tissue_sarcoma`` only with
            the wide spectrum).

    Returns:
        ``out_dir`` as a Path.
    """
    from rich.progress import Progress

    from unipet.fileio import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    if n < 1:
        raise ConfigError(f"a phantom cohort needs at least one study, got n={n}")
    if size not in SIZES:
        raise ConfigError(f"unknown phantom size {size!r}; use one of {', '.join(SIZES)}")
    spec = get_spectrum(spectrum)
    dealt = tuple(_resolve_task(t, spec) for t in tasks) if tasks else TASKS
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder; choose another output folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{out} exists and is not empty; choose an empty folder or pass --overwrite")
        _clear_previous(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [dict(p, out=str(out), size=size, cohort_seed=int(seed), overwrite=overwrite, dicom=dicom,
                 spectrum=spec.name)
            for p in _plan_cohort(int(n), int(seed), dealt)]
    rows: list[dict[str, Any]] = []
    with Progress(transient=True) as bar:
        task = bar.add_task(f"phantom studies ({size})", total=len(jobs))
        if workers <= 1:
            for job in jobs:
                rows += _make_patient(job)
                bar.advance(task)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for fut in as_completed([pool.submit(_make_patient, job) for job in jobs]):
                    rows += fut.result()
                    bar.advance(task)
    rows.sort(key=lambda r: r["study_id"])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CLINICAL_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "clinical.csv", buf.getvalue(), overwrite=True)
    atomic_write_json(out / "organs.json", dict(ORGAN_LABELS), overwrite=True)
    return out
