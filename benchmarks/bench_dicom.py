"""DICOM in the clinic, on the three real PET/CT studies of ../shared/real_sts_dicom (prints JSON):

1. ``rtstruct``: agreement of unipet's RTSTRUCT reader with the source's own rasterisation (``SEG.nii.gz`` of
   ../shared/real_sts_fdg) for the PET-drawn and the CT-drawn ROI, and the write → read round trip.
2. ``chain``: one study end to end with the CLI (import → predict → dicom-sr → dicom-rtstruct → view), wall
   seconds per step (each a fresh process, as a user runs them).
3. ``node``: a real Orthanc C-STOREs the three studies to ``unipet serve``; per study the receive time (first
   to last instance), segmentation and send time, and the wall time from the first C-STORE to the last study
   done; once undisturbed and once with the node SIGKILLed mid-study and restarted.

    flock /tmp/unipet-bench.lock python benchmarks/bench_dicom.py --out benchmarks/dicom.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))  # the Orthanc harness of the tests
SHARED = REPO.parent / "shared"
CASES = ("STS_019", "STS_025", "STS_042")


def dice(a, b) -> float:
    return 2.0 * float(np.sum(a & b)) / float(a.sum() + b.sum())


def bench_rtstruct(tmp: Path) -> list[dict]:
    import pydicom

    from unipet.io.dicom import _group, _headers, _pick_pet, sort_slices
    from unipet.io.dicom_sr import pet_sources
    from unipet.io.nifti import load_volume
    from unipet.io.rtstruct import read_rtstruct_labels, write_rtstruct

    rows = []
    for case in CASES:
        folder = SHARED / "real_sts_dicom" / case
        ref, _ = load_volume(SHARED / "real_sts_fdg" / case / f"{case}_0" / "SEG.nii.gz", what="mask", dtype=np.uint8)
        headers = _headers(folder)
        info, members = _pick_pet(_group(headers), folder, None)
        _, affine = sort_slices([d for _, d in members])
        row = {"case": case, "reference_voxels": int(ref.sum())}
        for roi in ("GTV_Mass_PET", "GTV_Mass_CT"):
            start = time.perf_counter()
            labels, _ = read_rtstruct_labels(headers, ref.shape, affine, info.frame_of_reference_uid, info.uid,
                                             rois=[roi])
            row[roi] = {"dice": round(dice(labels > 0, ref > 0), 4), "voxels": int((labels > 0).sum()),
                        "read_s": round(time.perf_counter() - start, 3)}
        out = tmp / f"{case}_rs.dcm"
        start = time.perf_counter()
        write_rtstruct((ref > 0).astype(np.uint8), pet_sources(folder / "PET"), out, ["lesions"], overwrite=True)
        write_s = time.perf_counter() - start
        back, _ = read_rtstruct_labels([(out, pydicom.dcmread(out))], ref.shape, affine, info.frame_of_reference_uid,
                                       info.uid, rois=["lesions"])
        row["round_trip"] = {"dice": round(dice(back > 0, ref > 0), 4), "exact": bool(np.array_equal(back > 0, ref > 0)),
                             "write_s": round(write_s, 3)}
        rows.append(row)
    return rows


def _run(args: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "unipet", *args], check=True, env=env, capture_output=True)
    return round(time.perf_counter() - start, 2)


def bench_chain(tmp: Path, case: str = "STS_019") -> dict:
    folder = SHARED / "real_sts_dicom" / case
    times = {"import": _run(["import", "dicom", str(folder), "--out", str(tmp / "sts.json")])}
    cid = json.loads((tmp / "sts.json").read_text())["cases"][0]["case_id"]
    times["predict"] = _run(["predict", str(tmp / "sts.json"), str(tmp / "preds"), "--device", "cpu"])
    mask = tmp / "preds" / f"{cid}.nii.gz"
    times["dicom_sr"] = _run(["dicom-sr", str(mask), str(folder / "PET"), str(tmp / "out")])
    times["dicom_rtstruct"] = _run(["dicom-rtstruct", str(mask), str(folder / "PET"), str(tmp / "out" / "rs.dcm"),
                                    "--task", "sarcoma"])
    times["view"] = _run(["view", f"{tmp / 'sts.json'}#{cid}", "--pred", str(tmp / "preds"), "--out",
                          str(tmp / "view.html")])
    return {"case": case, "seconds": times, "total_s": round(sum(times.values()), 2)}


def bench_node(tmp: Path, restart: bool) -> dict:
    from _dicomnet import free_port
    from _orthanc import NodeProcess, Orthanc

    port = free_port()
    orthanc = Orthanc(tmp / "orthanc", {"unipet": ("UNIPET", port)})
    try:
        ids = [next(iter(orthanc.upload(sorted((SHARED / "real_sts_dicom" / c).rglob("*.dcm"))))) for c in CASES]
        work = tmp / "node"
        args = ["--allow", "ORTHANC", "--dest", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}", "--stable-s", "1",
                "--rtstruct", "--device", "cpu"]
        node = NodeProcess(work, port, args)
        start = time.perf_counter()
        push_s = []
        try:
            for sid in ids:
                t = time.perf_counter()
                orthanc.send_study(sid, "unipet")
                push_s.append(round(time.perf_counter() - t, 2))
            if restart:
                node.wait_for(lambda s: any(v[0] == "processing" for v in s.values()), 300, "processing")
                node.kill()
                node = NodeProcess(work, port, args)
            node.wait_for(lambda s: len(s) == 3 and all(v[0] in ("done", "failed") for v in s.values()), 900, "done")
            wall = time.perf_counter() - start
        finally:
            node.stop()
        with sqlite3.connect(work / "queue.sqlite") as con:
            rows = con.execute("SELECT status, claims, crashes, last_at - first_at, segment_s, send_s, n_instances "
                               "FROM studies ORDER BY first_at").fetchall()
    finally:
        orthanc.close()
    return {"restart": restart, "wall_s": round(wall, 2), "orthanc_store_call_s": push_s, "studies": [
        {"status": r[0], "claims": r[1], "crashes": r[2], "receive_s": round(r[3], 2), "segment_s": round(r[4], 2),
         "send_s": round(r[5], 2), "instances": r[6]} for r in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--parts", default="rtstruct,chain,node")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    result = {"machine": f"{platform.node()} {os.cpu_count()} CPUs, torch threads {os.environ.get('OMP_NUM_THREADS')}"}
    with tempfile.TemporaryDirectory(prefix="unipet-bench-dicom-") as scratch:
        tmp = Path(scratch)
        if "rtstruct" in parts:
            result["rtstruct"] = bench_rtstruct(tmp)
        if "chain" in parts:
            (tmp / "chain").mkdir()
            result["chain"] = bench_chain(tmp / "chain")
        if "node" in parts:
            result["node"] = []
            for restart in (False, True):
                (tmp / f"node{int(restart)}").mkdir()
                result["node"].append(bench_node(tmp / f"node{int(restart)}", restart))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
