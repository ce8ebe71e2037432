"""What limits the default on the real sarcomas: its 5 mm grid, or the training budget? (issue 24, part 6). JSON out.

The shipped default predicts on its own 5 mm grid (``meta.json`` ``preprocess.target_spacing``); the real crops
have 4.7-5.5 mm pixels and 3.27 mm slices, and the issue's plain STU-Net-S reached Dice 0.73 on one 7-case split
after 900 steps at the crops' own spacing. This table separates the two factors on the protocol of ``real_cv``
(the 5 patient folds of ``benchmarks/real_sts_folds.json``, every case scored once by a model that never saw its
patient, ``unipet.infer`` back on the native grid, ``unipet.evaluate``): the same plain STU-Net-S from scratch,
same recipe (``real_cv.BASE_RECIPE``), at

- the default's grid (5 mm isotropic, the preprocessing of every other table: ``stunet-s-scratch`` is their
  shared baseline run) and at the crops' planned grid (``unipet.data.plan``: nnU-Net's median rule over the 35
  crops; the same normalisation as the default, so only the grid differs);
- ``PLAIN_ITERATIONS`` (250, every table's budget) and ``LONG_ITERATIONS`` (900, the issue's budget) steps.

Paired tests (``unipet compare``): planned grid - 5 mm at each budget, and 900 - 250 steps at each grid.

    flock /tmp/unipet-bench.lock python benchmarks/bench_real_resolution.py --threads 1 --work /tmp/r25 \\
        --out benchmarks/results/real_resolution.json
    python benchmarks/bench_real_resolution.py --tiny
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import real_cv
from real_cv import Arm

PLAIN_ITERATIONS = 250
LONG_ITERATIONS = 900
TINY_ITERATIONS = (4, 6)  # --tiny: short, long


def planned_grid_data(s: real_cv.Setup) -> tuple[Path, list[float]]:
    """``WORK/planned-grid`` holding the real sarcomas cached at their planned spacing (the default's
    normalisation) as ``cache/`` and their manifest as ``manifest.json`` (``Arm.data``); returns it and the grid."""
    from unipet.data.cache import build_cache, compute_fingerprint
    from unipet.data.plan import plan_from_fingerprint
    from unipet.io.manifest import Manifest

    folder = s.work / ("planned-grid-tiny" if s.tiny else "planned-grid")
    real = Manifest([c for c in s.manifest if c.split == "real"], task_set=s.manifest.task_set, source="real")
    fp_file = folder / "fingerprint.json"
    if fp_file.exists():
        fingerprint = json.loads(fp_file.read_text())
    else:
        folder.mkdir(parents=True, exist_ok=True)
        fingerprint = compute_fingerprint(real, list(real))
        fp_file.write_text(json.dumps(fingerprint))
    spacing = [float(v) for v in plan_from_fingerprint(fingerprint)]
    config = dataclasses.replace(s.cache.config, target_spacing=tuple(spacing))
    if not (folder / "manifest.json").exists():
        build_cache(real, folder / "cache", preprocess=config, workers=1)
        real.save(folder / "manifest.json", overwrite=True)
    return folder, spacing


def arms(s: real_cv.Setup, data: Path, long_iterations: int) -> list[Arm]:
    """Plain STU-Net-S at the 5 mm grid and at the planned grid, each at both budgets (the first is every table's
    shared ``stunet-s-scratch`` run)."""
    short = PLAIN_ITERATIONS if not s.tiny else TINY_ITERATIONS[0]
    base = real_cv.plain_stunet(short, s.tiny)

    def variant(grid: str, steps: int, folder: str | None) -> Arm:
        return dataclasses.replace(base, name=f"stunet-s-{grid}-{steps}", recipe=real_cv.recipe(steps, s.tiny),
                                   data=folder, notes=f"plain STU-Net-S from scratch, {grid} grid, {steps} steps")

    return [base, variant("5mm", long_iterations, None), variant("planned", short, str(data)),
            variant("planned", long_iterations, str(data))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    real_cv.common_args(p)
    args = p.parse_args()
    s = real_cv.start(args)
    long_iterations = args.iterations or (LONG_ITERATIONS if not s.tiny else TINY_ITERATIONS[1])
    data, spacing = planned_grid_data(s)
    t0 = time.perf_counter()
    results = {a.name: real_cv.run_arm(s, a, args.threads, args.folds) for a in arms(s, data, long_iterations)}
    names = list(results)  # scratch-250 (5 mm), 5mm-900, planned-250, planned-900
    short = PLAIN_ITERATIONS if not s.tiny else TINY_ITERATIONS[0]
    comparisons = [(names[0], names[2], f"the planned grid beats 5 mm at {short} steps"),
                   (names[1], names[3], f"the planned grid beats 5 mm at {long_iterations} steps"),
                   (names[0], names[1], f"{long_iterations} steps beat {short} at 5 mm"),
                   (names[2], names[3], f"{long_iterations} steps beat {short} at the planned grid")]
    doc = real_cv.table(s, results, comparisons)
    doc.update(benchmark="real-resolution", planned_spacing_mm=spacing, default_spacing_mm=list(
        s.cache.config.target_spacing), seconds=round(time.perf_counter() - t0, 1))
    real_cv.print_table(doc)
    real_cv.write(doc, args.out)


if __name__ == "__main__":
    main()
