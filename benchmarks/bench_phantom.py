"""Phantom generation speed per size, and writing a cohort (autoPET layout, optionally DICOM). Prints JSON.

For each size: seconds to generate one study in memory (median of ``--repeats`` seeds), the grid, lesions per
positive study; then seconds to write a cohort of ``--cohort`` small studies with ``--workers`` processes.

    python benchmarks/bench_phantom.py --out phantom.json
    python benchmarks/bench_phantom.py --tiny
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="small,full,autopet")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cohort", type=int, default=24)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--dicom", action="store_true", help="also write DICOM series for the cohort")
    p.add_argument("--out", type=Path, help="write the JSON here too")
    p.add_argument("--tiny", action="store_true", help="small size only, 2 repeats, a 4-study cohort")
    args = p.parse_args()

    from unipet.data.phantom import generate_study, write_phantom_cohort

    if args.tiny:
        args.sizes, args.repeats, args.cohort, args.workers = "small", 2, 4, 2
    result: dict = {"machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()}, "sizes": {}}
    for size in args.sizes.split(","):
        times, lesions = [], []
        for seed in range(args.repeats):
            t0 = time.perf_counter()
            ph = generate_study(seed, size=size, negative=False)
            times.append(time.perf_counter() - t0)
            lesions.append(len(ph.truth["lesions"]))
        result["sizes"][size] = {"grid_zyx": list(ph.study.pet.shape), "spacing_zyx_mm": list(ph.study.spacing),
                                 "seconds_median": round(statistics.median(times), 3),
                                 "lesions_mean": statistics.mean(lesions)}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_phantom_cohort(Path(tmp) / "c", n=args.cohort, seed=0, size="small", dicom=args.dicom,
                             workers=args.workers)
        result["cohort"] = {"studies": args.cohort, "workers": args.workers, "dicom": args.dicom,
                            "seconds": round(time.perf_counter() - t0, 2)}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
