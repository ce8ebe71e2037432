"""A real Orthanc PACS for tests and benchmarks: Debian's ``Orthanc`` binary run as an ordinary process on free
loopback ports with a temporary configuration and storage, driven over its REST API; and the unipet node run
as a subprocess (``unipet serve``) so that it can be killed and restarted."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from _dicomnet import free_port

REPO = Path(__file__).resolve().parents[1]


class OrthancUnavailable(RuntimeError):
    """Orthanc is not installed or did not start (the message is one line)."""


class Orthanc:
    """``Orthanc(folder, modalities={"unipet": ("UNIPET", port)})``; ``.close()`` stops it and removes nothing
    outside ``folder``."""

    def __init__(self, folder: Path, modalities: dict[str, tuple[str, int]], ae_title: str = "ORTHANC"):
        binary = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/bin")  # Debian: /usr/sbin
        if binary is None:
            raise OrthancUnavailable("Orthanc is not installed (apt-get install orthanc; .ci/run does it)")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ae_title, self.http_port, self.dicom_port = ae_title, free_port(), free_port()
        config = {
            "Name": "unipet-test", "StorageDirectory": str(self.folder / "db"), "IndexDirectory": str(self.folder / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": ae_title,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "Plugins": [], "ConcurrentJobs": 1,
            "DicomModalities": {name: [ae, "127.0.0.1", port] for name, (ae, port) in modalities.items()},
            "DicomCheckCalledAet": True, "OverwriteInstances": False, "StableAge": 3600,
        }
        cfg = self.folder / "orthanc.json"
        cfg.write_text(json.dumps(config))
        self.log = open(self.folder / "orthanc.log", "wb")
        self.proc = subprocess.Popen([binary, str(cfg)], stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=self.folder, start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.close()
                raise OrthancUnavailable(f"Orthanc exited at start (see {self.folder / 'orthanc.log'})")
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.2)
        self.close()
        raise OrthancUnavailable("Orthanc did not answer on its HTTP port within 30 s")

    def _request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method)
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.read()

    def get(self, path: str):
        return json.loads(self._request("GET", path))

    def post(self, path: str, body) -> object:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return json.loads(self._request("POST", path, data) or b"null")

    def file(self, instance_id: str) -> bytes:
        return self._request("GET", f"/instances/{instance_id}/file")

    def upload(self, paths) -> set[str]:
        """POST every file; returns the Orthanc study ids."""
        return {self.post("/instances", Path(p).read_bytes())["ParentStudy"] for p in paths}

    def send_study(self, study_id: str, modality: str) -> None:
        """Orthanc C-STOREs a study to a configured modality (synchronous job)."""
        self.post(f"/modalities/{modality}/store", {"Resources": [study_id], "Synchronous": True})

    def series_by_modality(self, study_id: str) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for series in self.get(f"/studies/{study_id}/series"):
            out.setdefault(series["MainDicomTags"].get("Modality", ""), []).append(series)
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


class NodeProcess:
    """``unipet serve`` as a subprocess on ``port`` with work folder ``work``; ``kill()`` is SIGKILL."""

    def __init__(self, work: Path, port: int, args: list[str]):
        self.work, self.port = Path(work), port
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
        self.out = open(self.work.parent / f"{self.work.name}-stdout.log", "ab")
        marker = self.work / "node.json"
        if marker.exists():
            marker.unlink()
        self.proc = subprocess.Popen([sys.executable, "-m", "unipet", "serve", "--work-dir", str(work), "--port",
                                      str(port), *args], stdout=self.out, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.time() + 120
        while not marker.exists():  # written once the SCP listens
            if self.proc.poll() is not None or time.time() > deadline:
                self.kill()
                raise RuntimeError(f"unipet serve did not start; see {self.out.name}")
            time.sleep(0.1)

    def statuses(self) -> dict[str, tuple]:
        """``{pseudonym: (status, claims, crashes, reason)}`` read from the node's queue."""
        db = self.work / "queue.sqlite"
        if not db.exists():
            return {}
        with sqlite3.connect(db, timeout=30) as con:
            rows = con.execute("SELECT key, status, claims, crashes, reason FROM studies").fetchall()
        return {r[0]: tuple(r[1:]) for r in rows}

    def wait_for(self, predicate, timeout: float, what: str) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.statuses()
            if predicate(state):
                return state
            if self.proc.poll() is not None:
                raise RuntimeError(f"unipet serve exited ({self.proc.returncode}) while waiting for {what}")
            time.sleep(0.1)
        raise TimeoutError(f"timed out waiting for {what}: {self.statuses()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.out.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self.out.close()
