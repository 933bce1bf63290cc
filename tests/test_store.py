"""The store against a real SQLite file: claims, outcomes, results, stats and their plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from sesd.errors import StorageFullError
from sesd.store import (
    CREATED,
    FAILED,
    MIGRATIONS,
    PROCESSING,
    SENT,
    STOPPED,
    NewMessage,
    Outcome,
    Store,
    now_ms,
)
from sesd.testing import dbview


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "app.db")


def add(store: Store, topic: str, n: int, at: int | None = None, html: str = "<p>x</p>") -> None:
    store.insert_messages([NewMessage(topic, [f"{topic}{i}@example.com" for i in range(n)], "S",
                                      html, now_ms() if at is None else at)])


def status_of(store: Store, request_id: int) -> int:
    row = dbview.request_row(store, request_id)
    assert row is not None
    return int(row["status"])


def test_schema_is_versioned_and_reopenable(tmp_path: Path) -> None:
    Store(tmp_path / "a.db").close()
    again = Store(tmp_path / "a.db")
    assert again.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert again.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert again.db.execute("PRAGMA cache_size").fetchone()[0] == -65536


def test_content_is_stored_once_per_message(store: Store) -> None:
    assert store.insert_messages([NewMessage("t", ["a@x.io", "b@x.io", "c@x.io"], "S", "H",
                                             now_ms())]) == 3
    assert store.db.execute("SELECT COUNT(*) FROM contents").fetchone()[0] == 1


def test_claim_takes_due_rows_in_schedule_order(store: Store) -> None:
    now = now_ms()
    add(store, "late", 2, now - 10)
    add(store, "early", 2, now - 1000)
    add(store, "future", 2, now + 60_000)
    claimed = store.claim_due(3, now)
    # The earliest scheduled win; RETURNING order itself is unspecified.
    assert {job[1] for job in claimed.jobs} == {"early0@example.com", "early1@example.com",
                                                "late0@example.com"}
    assert all(status_of(store, rid) == PROCESSING for rid, _, _, _ in claimed.jobs)
    assert len(store.claim_due(10, now).jobs) == 1  # the future rows stay
    assert store.next_due() == now + 60_000


def test_suppressed_recipients_are_stopped_with_the_reason(store: Store) -> None:
    add(store, "t", 3)
    store.add_suppression("T1@EXAMPLE.COM", "Bounce: Permanent/General")  # case-insensitive
    claimed = store.claim_due(10)
    assert claimed.suppressed == 1 and len(claimed.jobs) == 2
    row = store.db.execute("SELECT status, error FROM requests WHERE email='t1@example.com'")
    assert row.fetchone() == (STOPPED, "suppressed: Bounce: Permanent/General")


def test_outcomes_and_release(store: Store) -> None:
    add(store, "t", 4)
    ids = [rid for rid, _, _, _ in store.claim_due(10).jobs]
    at = now_ms()
    store.record_outcomes([Outcome(ids[0], SENT, "m-1", None, 1, at),
                           Outcome(ids[1], FAILED, None, "MessageRejected: no", 2, at),
                           Outcome(ids[2], CREATED, None, None, 0, at)])
    assert [status_of(store, i) for i in ids] == [SENT, FAILED, CREATED, PROCESSING]
    assert dbview.request_row(store, ids[1])["error"] == "MessageRejected: no"
    assert store.release_processing().released == 1
    assert status_of(store, ids[3]) == CREATED


def test_a_real_send_is_recorded_even_after_a_stop(store: Store) -> None:
    add(store, "t", 2)
    ids = [rid for rid, _, _, _ in store.claim_due(10).jobs]
    assert store.stop_topic("t") == 2
    assert store.stopped_among(ids) == set(ids)
    store.record_outcomes([Outcome(ids[0], SENT, "m", None, 1, now_ms()),
                           Outcome(ids[1], FAILED, None, "x", 1, now_ms())])
    assert status_of(store, ids[0]) == SENT  # never hide a send
    assert status_of(store, ids[1]) == STOPPED  # the stop wins over a failure


def test_results_are_stored_once_per_sns_message(store: Store) -> None:
    add(store, "t", 1)
    rid = store.claim_due(1).jobs[0][0]
    store.record_outcomes([Outcome(rid, SENT, "ses-1", None, 1, now_ms())])
    assert store.request_candidates(None, "ses-1") == [(rid, "t0@example.com")]
    assert store.request_candidates(rid, None) == [(rid, "t0@example.com")]
    assert store.request_candidates(999, "nope") == []
    kwargs = {"request_id": rid, "status": "Bounce", "raw": "{}", "sns_message_id": "sns-1",
              "suppress": [("t0@example.com", "Bounce: Permanent/General")]}
    assert store.record_result(**kwargs) is True
    assert store.record_result(**kwargs) is False
    assert store.is_suppressed("T0@example.com")
    assert store.record_open(rid) and not store.record_open(10**9)
    stats = store.topic_stats("t")
    assert stats == {"request": {"total": 1, "created": 0, "processing": 0, "sent": 1,
                                 "failed": 0, "stopped": 0},
                     "result": {"statuses": {"Bounce": 1, "Open": 1}, "clicks": {}}}
    assert store.sent_since(now_ms() - 60_000) == 1


def test_hot_queries_use_their_indexes(store: Store) -> None:
    def plan(sql: str, *args: object) -> str:
        return " | ".join(dbview.query_plan(store, sql, args))

    for priority in (0, 1):
        claim = plan(store.CLAIM, 1, 10, priority)
        assert "requests_claim (status=? AND priority=? AND scheduled_at<?)" in claim
        assert "TEMP B-TREE" not in claim  # no sort, no scan
    next_due = plan(store.NEXT_DUE, 1)
    assert "COVERING INDEX requests_claim (status=? AND priority=?)" in next_due
    # The suppression check per claimed row is one primary-key search on (key, scope): the key
    # is lower(email), computed by SQLite, never a scan of suppressions or a Python call.
    assert "SEARCH suppressions USING PRIMARY KEY (key=? AND scope=?)" in claim
    assert "SCAN suppressions" not in claim
    assert "USING INDEX requests_claim (status=?)" in plan(store.STOP_HELD, "r", 0,
                                                            "a@example.com")
    assert "COVERING INDEX requests_topic" in plan(store.TOPIC_REQUESTS, "t")
    results = plan(store.TOPIC_RESULTS, "t")
    assert "requests_topic" in results and "results_request" in results
    assert "requests_sent_at" in plan(store.SENT_SINCE, 0)
    for sql in (store.CLAIM, store.TOPIC_REQUESTS, store.TOPIC_RESULTS, store.SENT_SINCE):
        assert "SCAN requests" not in plan(sql, *(["t"] if "?" in sql and "?1" not in sql
                                                 else [1, 10, 1]))


def test_full_database_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "full.db"
    Store(path).close()
    small = Store(path, max_page_count=40)
    with pytest.raises(StorageFullError):
        small.insert_messages([NewMessage("big", [f"u{i}@example.com" for i in range(50_000)],
                                          "S", "H", now_ms())])
    assert small.db.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 0
    assert small.db.execute("SELECT COUNT(*) FROM contents").fetchone()[0] == 0
    add(small, "ok", 3)  # small writes still fit afterwards
    assert small.db.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 3
