"""The node's work queue: one SQLite file on disk, so a restarted node knows every study it has seen.

A study moves ``receiving`` → ``queued`` (no new instance for ``stable_s``) → ``processing`` → ``done`` or
``failed`` (with one reason). Results are sent object by object and every sent object is recorded
(``sent``), so a node killed while sending resends only what was not confirmed; one killed while segmenting finds
the study back in ``processing`` at start and queues it again (``recover``). A study is never queued twice once
it is ``done`` or ``failed``. Rows hold no patient identifier: a study is keyed by its StudyInstanceUID and
named in logs by a pseudonym of it.

Each call opens its own connection (the SCP's association threads and the processing loop write concurrently);
SQLite's locking serialises them, and WAL keeps readers from blocking the writer.
"""
from __future__ import annotations

import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    uid TEXT PRIMARY KEY,            -- StudyInstanceUID
    key TEXT NOT NULL,               -- pseudonym used in folders and logs
    status TEXT NOT NULL,            -- receiving, queued, processing, done, failed
    reason TEXT,                     -- why failed / why waiting, one line
    n_instances INTEGER NOT NULL DEFAULT 0,
    first_at REAL, last_at REAL,     -- first and last instance received (epoch s)
    not_before REAL NOT NULL DEFAULT 0,
    claims INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0,
    segment_s REAL, send_s REAL, finished_at REAL
);
CREATE TABLE IF NOT EXISTS sent (
    uid TEXT NOT NULL, name TEXT NOT NULL, sop_uid TEXT NOT NULL, sent_at REAL NOT NULL,
    PRIMARY KEY (uid, name)
);
"""


@dataclass(frozen=True)
class StudyRow:
    """One study of the queue (see the module docstring for the statuses)."""

    uid: str
    key: str
    status: str
    reason: str | None
    n_instances: int
    first_at: float | None
    last_at: float | None
    claims: int
    crashes: int
    segment_s: float | None
    send_s: float | None
    finished_at: float | None


class WorkQueue:
    """The SQLite work queue at ``path`` (created when missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=60.0)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=60.0, isolation_level=None)) as db:
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def record_instance(self, uid: str, key: str, now: float | None = None) -> str:
        """Count one received instance of study ``uid``; returns the study's status after it.

        A new study starts ``receiving``; a ``queued`` one goes back to ``receiving`` (more is coming); a study
        already ``processing``, ``done`` or ``failed`` keeps its status (the instance is stored, not re-queued).
        """
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute("SELECT status FROM studies WHERE uid = ?", (uid,)).fetchone()
            if row is None:
                db.execute("INSERT INTO studies (uid, key, status, n_instances, first_at, last_at) "
                           "VALUES (?, ?, 'receiving', 1, ?, ?)", (uid, key, now, now))
                return "receiving"
            status = "receiving" if row[0] in ("receiving", "queued") else row[0]
            db.execute("UPDATE studies SET n_instances = n_instances + 1, last_at = ?, status = ? WHERE uid = ?",
                       (now, status, uid))
            return status

    def promote_stable(self, stable_s: float, now: float | None = None) -> list[str]:
        """Queue every ``receiving`` study without a new instance for ``stable_s``; returns their uids."""
        now = time.time() if now is None else now
        with self._tx() as db:
            uids = [r[0] for r in db.execute("SELECT uid FROM studies WHERE status = 'receiving' AND last_at <= ?",
                                             (now - stable_s,))]
            db.executemany("UPDATE studies SET status = 'queued' WHERE uid = ?", [(u,) for u in uids])
        return uids

    def recover(self, max_crashes: int) -> tuple[list[str], list[str]]:
        """At start: studies left ``processing`` by a dead node are queued again, or failed once the node died
        ``max_crashes`` times on them. Returns ``(requeued uids, failed uids)``."""
        with self._tx() as db:
            rows = db.execute("SELECT uid, crashes FROM studies WHERE status = 'processing'").fetchall()
            again, failed = [], []
            for uid, crashes in rows:
                if crashes + 1 >= max_crashes:
                    db.execute("UPDATE studies SET status = 'failed', crashes = crashes + 1, finished_at = ?, "
                               "reason = ? WHERE uid = ?",
                               (time.time(), f"the node stopped {crashes + 1} times while processing this study; "
                                             "not retried — check node.log", uid))
                    failed.append(uid)
                else:
                    db.execute("UPDATE studies SET status = 'queued', crashes = crashes + 1 WHERE uid = ?", (uid,))
                    again.append(uid)
        return again, failed

    def claim(self, now: float | None = None) -> StudyRow | None:
        """Take the oldest ``queued`` study that may run now and mark it ``processing``; None when there is none."""
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute("SELECT uid FROM studies WHERE status = 'queued' AND not_before <= ? "
                             "ORDER BY last_at LIMIT 1", (now,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE studies SET status = 'processing', claims = claims + 1 WHERE uid = ?", (row[0],))
        return self.get(row[0])

    def retry_later(self, uid: str, reason: str, delay_s: float) -> None:
        """Put a ``processing`` study back in the queue, not before ``delay_s`` (e.g. the destination is down)."""
        with self._tx() as db:
            db.execute("UPDATE studies SET status = 'queued', reason = ?, not_before = ? WHERE uid = ?",
                       (reason, time.time() + delay_s, uid))

    def finish(self, uid: str, status: str, reason: str | None = None, segment_s: float | None = None,
               send_s: float | None = None) -> None:
        """Close a study as ``done`` or ``failed`` (``reason``: one line)."""
        if status not in ("done", "failed"):
            raise ValueError(status)
        with self._tx() as db:
            db.execute("UPDATE studies SET status = ?, reason = ?, segment_s = COALESCE(?, segment_s), "
                       "send_s = COALESCE(?, send_s), finished_at = ? WHERE uid = ?",
                       (status, reason, segment_s, send_s, time.time(), uid))

    def set_timing(self, uid: str, segment_s: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE studies SET segment_s = ? WHERE uid = ?", (segment_s, uid))

    def mark_sent(self, uid: str, name: str, sop_uid: str) -> None:
        """Record that result ``name`` (``seg``, ``sr``, ``rtstruct``) of study ``uid`` reached the destination."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO sent (uid, name, sop_uid, sent_at) VALUES (?, ?, ?, ?)",
                       (uid, name, sop_uid, time.time()))

    def sent(self, uid: str) -> dict[str, str]:
        """``{name: SOPInstanceUID}`` of the results of ``uid`` already sent."""
        with self._tx() as db:
            return dict(db.execute("SELECT name, sop_uid FROM sent WHERE uid = ?", (uid,)).fetchall())

    def get(self, uid: str) -> StudyRow | None:
        with self._tx() as db:
            row = db.execute(f"SELECT {', '.join(StudyRow.__dataclass_fields__)} FROM studies WHERE uid = ?",
                             (uid,)).fetchone()
        return StudyRow(*row) if row else None

    def studies(self) -> list[StudyRow]:
        """Every study, oldest first."""
        with self._tx() as db:
            rows = db.execute(f"SELECT {', '.join(StudyRow.__dataclass_fields__)} FROM studies "
                              "ORDER BY first_at").fetchall()
        return [StudyRow(*r) for r in rows]
