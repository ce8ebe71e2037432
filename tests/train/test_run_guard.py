"""What survives a crash: SIGKILL during checkpoint writes, a full disk, SIGTERM (exit 143), errors inside the
training loop with DataLoader workers (no hang, no orphaned worker), and log rows after a resume."""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from _synthetic import write_autopet
from unipet.errors import DiskFullError
from unipet.models import create
from unipet import checkpoint as ckpt
from unipet.train import run_guard

REPO = Path(__file__).resolve().parents[2]
# the source tree first: the children run the unipet of this checkout, whichever one is installed
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}
TINY = ["--model", "nnunet", "--patch", "16", "16", "16", "--batch", "1", "--model-kw", "base_channels=2",
        "--model-kw", "max_channels=4", "--no-progress"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    from unipet.data.cache import build_cache
    from unipet.io.layouts import import_autopet

    root = tmp_path_factory.mktemp("crash")
    manifest = import_autopet(write_autopet(root / "ap", n=3))
    build_cache(manifest, root / "cache", ct_norm="ct-window")
    return root / "cache"


def _processes_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line contains ``text`` (DataLoader workers inherit it)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = next((l for l in (entry / "status").read_text().splitlines() if l.startswith("State:")), "")
            except OSError:
                continue
            if text in cmd and "Z" not in state.split(":", 1)[-1][:3]:
                out.append(int(entry.name))
    return out


def _no_orphans(marker: str, wait_s: float = 10.0) -> bool:
    deadline = time.time() + wait_s
    while time.time() < deadline:
        if not _processes_mentioning(marker):
            return True
        time.sleep(0.2)
    return False


# ------------------------------------------------------------------------------------------ checkpoint writes
_KILL_CHILD = textwrap.dedent("""
    import os, sys, time
    import torch
    from unipet.models import create
    from unipet import checkpoint as ckpt
    run, stage, marker = sys.argv[1], sys.argv[2], sys.argv[3]
    model = create("nnunet", in_channels=2, num_classes=2, tasks=["lymphoma"], patch_size=(16, 16, 16),
                   base_channels=8, max_channels=32, max_stages=3)
    ckpt.save_checkpoint(run, model, {"model": model.config, "iteration": 1})

    def hold():
        open(marker, "w").close()
        time.sleep(120)

    if stage == "tmp":  # everything written into the temporary folder, nothing swapped yet
        fsync = ckpt._fsync_dir
        ckpt._fsync_dir = lambda path: (fsync(path), hold() if path.name.startswith(ckpt.TMP_PREFIX) else None)
    elif stage == "swap":  # checkpoint/ already renamed to .checkpoint.old/, the new one not yet in place
        replace = os.replace
        def slow(src, dst):
            replace(src, dst)
            if str(dst).endswith(ckpt.OLD):
                hold()
        ckpt.os.replace = slow
    i = 1
    while True:
        i += 1
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        ckpt.save_checkpoint(run, model, {"model": model.config, "iteration": i})
""")


@pytest.mark.parametrize("stage", ["tmp", "swap", "random"])
def test_sigkill_during_a_checkpoint_write_leaves_a_complete_checkpoint(tmp_path, stage):
    run, marker = tmp_path / "run", tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(run), stage, str(marker)], env=ENV)
    try:
        deadline = time.time() + 90
        if stage == "random":  # while checkpoints are written back to back
            while not ((run / "checkpoint" / "meta.json").exists() and (ckpt.read_meta(run).iteration or 0) >= 3):
                assert time.time() < deadline
                time.sleep(0.02)
        else:
            while not marker.exists():
                assert time.time() < deadline and proc.poll() is None
                time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if stage == "tmp":
        assert list(run.glob(".checkpoint.tmp*")) and (run / "checkpoint").exists()
    if stage == "swap":
        assert not (run / "checkpoint").exists() and (run / ".checkpoint.old").exists()
    model, meta = ckpt.load_checkpoint(run)  # whichever of checkpoint/ or .checkpoint.old/ is complete
    ckpt.verify_weights(run)
    assert meta.iteration == 1 if stage != "random" else meta.iteration >= 3
    run_guard.prepare_run(run, resume=True)
    assert not list(run.glob(".checkpoint.tmp*"))
    assert (run / "checkpoint").exists()  # an interrupted swap undone
    ckpt.save_checkpoint(run, model, dataclasses.replace(meta, iteration=meta.iteration + 1))  # the run goes on
    assert ckpt.read_meta(run).iteration == meta.iteration + 1
    assert (run / "checkpoint").exists() and not (run / ".checkpoint.old").exists()


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MB tmpfs where the OS lets this process mount one (root in a container), else skip."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here; the patched-writer tests cover a full disk")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_real_full_disk_keeps_the_previous_checkpoint(small_fs):
    small = create("nnunet", in_channels=2, num_classes=2, tasks=["lymphoma"], patch_size=(16, 16, 16),
                   base_channels=2, max_channels=4, max_stages=3)
    big = create("nnunet", in_channels=2, num_classes=2, tasks=["lymphoma"], patch_size=(32, 32, 32),
                 base_channels=16, max_channels=64, max_stages=4)
    assert sum(p.numel() for p in big.parameters()) * 4 > 2_500_000  # does not fit in 2 MB
    run = small_fs / "run"
    ckpt.save_checkpoint(run, small, {"model": small.config, "iteration": 1})
    with pytest.raises(DiskFullError, match=r"disk full.*needs about \d+ MB"):
        ckpt.save_checkpoint(run, big, {"model": big.config, "iteration": 2})
    _, meta = ckpt.load_checkpoint(run)
    assert meta.iteration == 1 and not list(run.glob(".checkpoint.tmp*"))
    from unipet import fileio

    (small_fs / "t.bin").write_bytes(b"old")
    with pytest.raises(DiskFullError):
        fileio.atomic_write_bytes(small_fs / "t.bin", b"x" * 3_000_000, overwrite=True)
    assert (small_fs / "t.bin").read_bytes() == b"old"


# ------------------------------------------------------------------------------------------ training runs
def test_error_inside_the_loop_with_workers_exits_cleanly(tmp_path, cache):
    run = tmp_path / "errrun"
    script = textwrap.dedent(f"""
        import sys
        from unipet.errors import UnipetError
        from unipet.train import run_guard, train
        def boom(it, logs):
            if it == 2:
                raise ZeroDivisionError("integer modulo by zero")
        try:
            with run_guard.guarded({str(run)!r}):
                train({str(cache)!r}, "nnunet", {str(run)!r}, iterations=50, patch_size=(16, 16, 16), batch_size=1,
                      workers=2, progress=False, tensorboard=False, callbacks=[boom],
                      model_kw={{"base_channels": 2, "max_channels": 4}})
        except UnipetError as exc:
            print("ERR", exc)
            sys.exit(2)
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(run)], env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "training failed: ZeroDivisionError" in proc.stdout and "error.log" in proc.stdout
    assert "ZeroDivisionError" in (run / "error.log").read_text()
    assert _no_orphans(str(run))


def test_api_training_error_with_workers_does_not_hang(tmp_path, cache):
    """``unipet.train.train`` called directly (no CLI guard): an exception in the loop still stops the workers, so
    the interpreter exits instead of waiting forever for workers that ignore SIGTERM."""
    run = tmp_path / "apirun"
    script = textwrap.dedent(f"""
        from unipet.train import train
        def boom(it, logs):
            if it == 2:
                raise ZeroDivisionError("integer modulo by zero")
        train({str(cache)!r}, "nnunet", {str(run)!r}, iterations=50, patch_size=(16, 16, 16), batch_size=1,
              workers=2, progress=False, tensorboard=False, callbacks=[boom],
              model_kw={{"base_channels": 2, "max_channels": 4}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "ZeroDivisionError" in proc.stderr
    assert _no_orphans(str(run))


def test_sigterm_stops_with_143_and_resume_has_no_duplicate_log_rows(tmp_path, cache):
    run = tmp_path / "termrun"
    cmd = [sys.executable, "-m", "unipet", "train", str(cache), "--out", str(run), "--iterations", "5000",
           "--checkpoint-every", "5000", "--workers", "2", *TINY]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while not ((run / "log.jsonl").exists() and (run / "log.jsonl").read_text().strip()) and time.time() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "--resume" in err and "Traceback" not in err
    meta = ckpt.read_meta(run)
    stopped_at = meta.iteration
    # a checkpoint written by the trainer records its orientation and the checksum of its weights
    assert meta.preprocess["orientation"] == "RAS"
    assert meta.weights_sha256 == ckpt.file_sha256(run / "checkpoint" / "model.safetensors")
    assert 10 <= stopped_at < 5000
    assert _no_orphans(str(run))
    # a row the killed run logged after its last checkpoint (as SIGKILL would leave it) is dropped on resume
    with open(run / "log.jsonl", "a") as fh:
        fh.write(json.dumps({"iteration": stopped_at + 3, "loss": 9.0}) + "\n")
    (run / ".checkpoint.tmpstale").mkdir()
    from unipet.cli import main

    assert main(["train", str(cache), "--out", str(run), "--resume", "--iterations", str(stopped_at + 2),
                 "--workers", "0", *TINY]) == 0
    rows = [json.loads(l)["iteration"] for l in (run / "log.jsonl").read_text().splitlines() if l.strip()]
    assert len(rows) == len(set(rows)) and rows == sorted(rows) and rows[-1] == stopped_at + 2
    assert not (run / ".checkpoint.tmpstale").exists()


def test_truncate_log_drops_rows_after_the_iteration_and_a_cut_last_line(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"iteration": i}) + "\n" for i in (10, 20, 30)) + '{"iteration": 4')
    assert run_guard.truncate_log(log, 20) == 2
    assert [json.loads(l)["iteration"] for l in log.read_text().splitlines()] == [10, 20]
    assert run_guard.truncate_log(log, 20) == 0


def test_options_refused_up_front():
    from unipet.errors import ConfigError

    with pytest.raises(ConfigError, match="--checkpoint-every must be >= 1"):
        run_guard.check_options(checkpoint_every=0)
    with pytest.raises(ConfigError, match="takes no option bogus"):
        run_guard.check_options("nnunet", {"bogus": 1})
    run_guard.check_options("nnunet", {"base_channels": 4})
