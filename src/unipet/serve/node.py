"""The node's loop: the SCP stores PET/CT instances under ``incoming/<study>/`` and counts them in the queue;
the main thread queues studies that have been stable for ``stable_s``, processes them one at a time (GPU/CPU
memory holds one model run) and sends the results. Everything it logs names studies by pseudonym
(``unipet.io.dicom.pseudonym`` of the StudyInstanceUID) — never a patient name or ID.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from unipet.errors import UnipetError
from unipet.fileio import atomic_path, atomic_write_json
from unipet.serve.config import NodeConfig
from unipet.serve.network import IMAGE_MODALITIES, SendError, safe_uid, send_files, start_scp
from unipet.serve.pipeline import RESULT_NAMES, StudyRejected, process_study
from unipet.serve.queue import StudyRow, WorkQueue

log = logging.getLogger("unipet.serve")


class DicomNode:
    """A running node for ``config``: ``start()`` then ``run(stop)`` (or ``step()`` in tests), ``close()``."""

    def __init__(self, config: NodeConfig):
        self.config = config
        self.work = Path(config.work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.queue = WorkQueue(self.work / "queue.sqlite")
        self.server = None
        self._log_handler: logging.Handler | None = None

    # ------------------------------------------------------------------------------------------ receiving
    def study_key(self, study_uid: str) -> str:
        from unipet.io.dicom import pseudonym

        return pseudonym(study_uid)

    def store(self, ds) -> None:
        """Keep one received instance (PET/CT only) and count it in the queue."""
        modality = str(ds.get("Modality", "")).upper()
        study_uid = safe_uid(ds.StudyInstanceUID)
        key = self.study_key(study_uid)
        if modality not in IMAGE_MODALITIES:
            log.info("study %s: %s instance acknowledged, not kept (the node segments PT/CT)", key, modality or "?")
            return
        path = self.work / "incoming" / key / f"{safe_uid(ds.SOPInstanceUID)}.dcm"
        with atomic_path(path, overwrite=True) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        status = self.queue.record_instance(study_uid, key)
        if status not in ("receiving",):
            log.warning("study %s: instance received while the study is %s; kept, not processed again", key, status)

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Attach ``node.log``, re-queue studies a dead node left half-done, and start listening."""
        self.work.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.work / "node.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        self._log_handler = handler
        again, failed = self.queue.recover(self.config.max_crashes)
        for uid in again:
            log.info("study %s: resuming after a restart (was processing)", self.study_key(uid))
        for uid in failed:
            log.error("study %s: failed — the node stopped repeatedly while processing it", self.study_key(uid))
        cfg = self.config
        self.server = start_scp(cfg.ae_title, cfg.host, cfg.port, cfg.allowed_aes, self.store)
        atomic_write_json(self.work / "node.json", cfg.to_json(), overwrite=True)
        dest = str(cfg.destination) if cfg.destination else f"{self.work / 'results'} (no destination)"
        log.info("node %s listening on %s:%d; accepts %s; results to %s; stable after %.0f s", cfg.ae_title,
                 cfg.host, cfg.port, ", ".join(cfg.allowed_aes), dest, cfg.stable_s)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        if self._log_handler is not None:
            log.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set (or SIGINT/SIGTERM in the main thread)."""
        stop = stop or threading.Event()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: stop.set())
        try:
            while not stop.is_set():
                if not self.step():
                    stop.wait(self.config.poll_s)
        finally:
            for sig, handler in previous.items():  # the caller's handlers back (an embedding program, a test runner)
                signal.signal(sig, handler)
            self.close()

    # ------------------------------------------------------------------------------------------ processing
    def step(self) -> bool:
        """Queue stable studies and process one; True when a study was processed."""
        for uid in self.queue.promote_stable(self.config.stable_s):
            row = self.queue.get(uid)
            log.info("study %s: complete (%d instances, stable for %.0f s), queued", row.key, row.n_instances,
                     self.config.stable_s)
        row = self.queue.claim()
        if row is None:
            return False
        self.process(row)
        return True

    def process(self, row: StudyRow) -> None:
        cfg = self.config
        folder, out_dir = self.work / "incoming" / row.key, self.work / "results" / row.key
        log.info("study %s: processing (attempt %d)", row.key, row.claims)
        try:
            results = process_study(folder, out_dir, cfg.checkpoint, cfg.task, cfg.device, cfg.rtstruct,
                                    cfg.per_lesion_rois)
        except StudyRejected as exc:
            self._fail(row, str(exc))
            return
        except UnipetError as exc:
            self._fail(row, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return
        except Exception as exc:  # a bug or an unreadable file must not stop the node: record it and go on
            self._fail(row, f"unexpected {type(exc).__name__} while processing; see node.log")
            log.exception("study %s: unexpected error", row.key)
            return
        self.queue.set_timing(row.uid, results.segment_s)
        log.info("study %s: segmented in %.1f s, %d lesion(s)", row.key, results.segment_s, results.n_lesions)
        if not results.files:
            self.queue.finish(row.uid, "done", "no lesion found: nothing to send", segment_s=results.segment_s)
            log.info("study %s: done, no lesion found (nothing sent)", row.key)
            return
        if cfg.destination is None:
            self.queue.finish(row.uid, "done", f"results kept in {out_dir}", segment_s=results.segment_s)
            log.info("study %s: done, results in %s", row.key, out_dir)
            return
        already = self.queue.sent(row.uid)
        todo = [(name, results.files[name]) for name in RESULT_NAMES if name in results.files and name not in already]
        start = time.perf_counter()
        try:
            dest = cfg.destination
            send_files(todo, cfg.ae_title, dest.host, dest.port, dest.ae_title,
                       lambda name, sop: self.queue.mark_sent(row.uid, name, sop))
        except SendError as exc:
            self.queue.retry_later(row.uid, f"{exc}; retrying in {cfg.retry_s:.0f} s", cfg.retry_s)
            log.warning("study %s: %s; retrying in %.0f s", row.key, exc, cfg.retry_s)
            return
        send_s = time.perf_counter() - start
        self.queue.finish(row.uid, "done", None, segment_s=results.segment_s, send_s=send_s)
        log.info("study %s: done, sent %s to %s in %.1f s", row.key, "+".join(n.upper() for n, _ in todo) or
                 "nothing new", cfg.destination, send_s)

    def _fail(self, row: StudyRow, reason: str) -> None:
        reason = " ".join(reason.split())
        self.queue.finish(row.uid, "failed", reason)
        log.error("study %s: failed — %s", row.key, reason)


def status_table(work_dir: str | Path) -> list[dict]:
    """The queue of a node's work folder as rows (for ``unipet serve --status``)."""
    queue = WorkQueue(Path(work_dir) / "queue.sqlite")
    return [{"study": r.key, "status": r.status, "instances": r.n_instances, "claims": r.claims,
             "crashes": r.crashes, "segment_s": r.segment_s, "send_s": r.send_s, "reason": r.reason}
            for r in queue.studies()]
