"""benchmarks/bench_loto.py --tiny: leave one type out, then find it with auto / any / every known prompt."""
from __future__ import annotations

import json
import subprocess
import sys

from _bench import ROOT, is_dice, run_tiny

TYPES = ("lung_cancer", "lymphoma", "melanoma")


def test_bench_loto_tiny(tmp_path):
    data, work = run_tiny("bench_loto.py", tmp_path)
    assert sorted(data["types"]) == sorted(TYPES) and set(data["left_out"]) == set(TYPES)
    for left in TYPES:
        run = f"without-{left}"
        known = data["train"][run]["tasks"]
        assert left not in known and sorted(known) == sorted(set(TYPES) - {left})  # the model has no prompt for it
        meta = json.loads((work / "runs" / run / "checkpoint" / "meta.json").read_text())
        assert [t["name"] for t in meta["model"]["tasks"]["tasks"]] == known
        trained = json.loads((work / "caches" / run / "cache.json").read_text())["cases"]
        assert trained and all(json.loads((work / "caches" / run / c / "case.json").read_text())["task"] != left
                               for c in trained)  # no study of the left-out type in its training
        rows = data["left_out"][left]
        assert set(rows) == {"auto", "any", *known, "best prompt (oracle choice)"}
        n = rows["auto"]["n"]
        assert n >= 1 and sum(rows["auto"]["chosen"].values()) == n and set(rows["auto"]["chosen"]) <= set(known)
        for row in rows.values():
            assert is_dice(row["dice"]) and row["n"] == n
        best = rows["best prompt (oracle choice)"]
        assert best["dice"] == max(rows[t]["dice"] for t in known) and best["prompt"] in known
        assert rows["any"]["fpv_ml"] >= max(rows[t]["fpv_ml"] for t in known) - 1e-6  # any keeps every prompt's mask
        ref = data["reference"][left]
        assert set(ref) == {"own prompt", "auto", "any"} and ref["own prompt"]["n"] == n
        assert {"suv2.5", "oracle41"} <= set(data["baselines"][left])
    assert data["train"]["all"]["tasks"] == data["types"]


def test_bench_loto_merges_processes_that_split_the_types(tmp_path):
    """Two processes split the types over one work folder; --merge gives the table of a single run."""
    a, work = run_tiny("bench_loto.py", tmp_path, "--types", "all,lymphoma")
    b, _ = run_tiny("bench_loto.py", tmp_path, "--types", "melanoma")
    assert a["baselines"] and not b["baselines"] and set(b["train"]) == {"without-melanoma"}
    out = tmp_path / "merged.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_loto.py"), "--merge",
                           str(tmp_path / "out--typesall,lymphoma.json"), str(tmp_path / "out--typesmelanoma.json"),
                           "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    merged = json.loads(out.read_text())
    assert set(merged["left_out"]) == {"lymphoma", "melanoma"} and merged["reference"] == a["reference"]
    assert merged["left_out"]["melanoma"] == b["left_out"]["melanoma"] and "| melanoma |" in proc.stderr
