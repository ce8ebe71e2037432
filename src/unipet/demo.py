"""The demo pipeline behind ``unipet demo``: phantom cohort → manifest → cache → summary.

Every step writes into one working folder and is skipped when its output is already there, so the demo
can be interrupted and re-run.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable

from rich.table import Table


def run_demo(out: str | Path, n: int = 12, seed: int = 0, workers: int = 1,
             echo: Callable[[str], None] = print) -> Table:
    """Run the demo chain in ``out``; returns a rich Table summarising the cohort and cache."""
    from unipet.data.cache import build_cache
    from unipet.data.phantom import write_phantom_cohort
    from unipet.io.layouts import import_phantom

    out = Path(out)
    cohort = out / "cohort"
    if not (cohort / "clinical.csv").exists():
        echo(f"[1/3] generating {n} phantom PET/CT studies in {cohort}")
        write_phantom_cohort(cohort, n=n, seed=seed, size="small", workers=workers, overwrite=cohort.exists())
    else:
        echo(f"[1/3] re-using the phantom cohort in {cohort}")
    manifest = import_phantom(cohort, split_seed=seed)
    manifest.save(out / "cohort.json", overwrite=True)
    echo(f"[2/3] imported {len(manifest)} studies into {out / 'cohort.json'}")
    cache = build_cache(manifest, out / "cache", workers=workers)
    echo(f"[3/3] preprocessed into {out / 'cache'}")
    return summary_table(cache)


def summary_table(cache) -> Table:
    """Per task: studies, lesion-positive studies, lesions, and splits of a cache."""
    rows: dict[str, Counter] = {}
    for cid in cache.case_ids:
        info = cache.info(cid)
        c = rows.setdefault(str(info["task"]), Counter())
        c["studies"] += 1
        c["positive"] += bool(info["lesions"])
        c["lesions"] += len(info["lesions"])
        c[f"split:{info['split']}"] += 1
    table = Table(title=f"cache {cache.root} — channels {', '.join(cache.config.channels)}")
    for col in ("task", "studies", "lesion-positive", "lesions", "train/val/test"):
        table.add_column(col)
    for task, c in sorted(rows.items()):
        table.add_row(task, str(c["studies"]), str(c["positive"]), str(c["lesions"]),
                      f"{c['split:train']}/{c['split:val']}/{c['split:test']}")
    return table
