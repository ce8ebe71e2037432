"""The node's SQLite work queue: statuses, stable-study promotion, restart recovery, sent results."""
from __future__ import annotations

from unipet.serve.queue import WorkQueue


def test_study_lifecycle_survives_a_new_queue_object(tmp_path):
    q = WorkQueue(tmp_path / "q.sqlite")
    assert q.record_instance("1.2.3", "dcm-a", now=100.0) == "receiving"
    assert q.record_instance("1.2.3", "dcm-a", now=105.0) == "receiving"
    assert q.promote_stable(10.0, now=110.0) == []  # 5 s since the last instance
    assert q.promote_stable(10.0, now=116.0) == ["1.2.3"]
    assert q.record_instance("1.2.3", "dcm-a", now=117.0) == "receiving"  # more came: wait again
    assert q.promote_stable(10.0, now=127.0) == ["1.2.3"]
    row = q.claim(now=128.0)
    assert row.uid == "1.2.3" and row.status == "processing" and row.n_instances == 3 and row.claims == 1
    assert q.claim(now=128.0) is None
    q.mark_sent("1.2.3", "seg", "9.9.1")
    # the node dies here; a new node opens the same file
    q2 = WorkQueue(tmp_path / "q.sqlite")
    assert q2.recover(max_crashes=2) == (["1.2.3"], [])
    assert q2.sent("1.2.3") == {"seg": "9.9.1"}
    row = q2.claim()
    assert row.claims == 2 and row.crashes == 1
    q2.finish("1.2.3", "done", segment_s=1.5, send_s=0.2)
    assert q2.record_instance("1.2.3", "dcm-a") == "done"  # a late instance never re-queues a finished study
    assert q2.promote_stable(0.0) == [] and q2.claim() is None
    assert [(r.status, r.segment_s) for r in q2.studies()] == [("done", 1.5)]


def test_a_study_that_keeps_killing_the_node_is_failed(tmp_path):
    q = WorkQueue(tmp_path / "q.sqlite")
    q.record_instance("7", "dcm-b", now=0.0)
    q.promote_stable(1.0, now=5.0)
    q.claim()
    assert q.recover(max_crashes=2) == (["7"], [])
    q.claim()
    assert q.recover(max_crashes=2) == ([], ["7"])
    row = q.get("7")
    assert row.status == "failed" and "stopped 2 times" in row.reason


def test_retry_later_waits(tmp_path):
    q = WorkQueue(tmp_path / "q.sqlite")
    q.record_instance("8", "dcm-c", now=0.0)
    q.promote_stable(1.0, now=5.0)
    q.claim()
    q.retry_later("8", "destination down", delay_s=3600.0)
    assert q.claim() is None and q.get("8").status == "queued"
