"""The store's side of sending: started calls and topic stops, retries, sender crashes, the
requests route's pages, and the upgrade of a database made by the previous release."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from sesd.store import (
    FAILED,
    MAX_CRASHES,
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


def add(store: Store, topic: str, n: int) -> list[int]:
    store.insert_messages([NewMessage(topic, [f"{topic}{i}@example.com" for i in range(n)], "S",
                                      "<p>x</p>", now_ms())])
    return [r[0] for r in store.db.execute("SELECT id FROM requests WHERE topic_id = ? "
                                           "ORDER BY id", (topic,))]


def status_of(store: Store, request_id: int) -> int:
    row = dbview.request_row(store, request_id)
    assert row is not None
    return int(row["status"])


def test_a_stop_never_counts_a_request_whose_call_has_started(store: Store) -> None:
    ids = add(store, "t", 4)
    claimed = [j[0] for j in store.claim_due(3).jobs]
    assert store.begin_sending(claimed[:2]) == set(claimed[:2])
    # Two are in SES's hands; one is claimed but not started; one still waits in the store.
    assert store.stop_topic("t") == 2
    assert [status_of(store, i) for i in ids].count(STOPPED) == 2
    # The stopped claimed one may not start any more: the sender drops it.
    assert store.begin_sending([claimed[2]]) == set()
    store.record_outcomes([Outcome(claimed[0], SENT, "m", None, 1, now_ms()),
                           Outcome(claimed[1], FAILED, None, "MessageRejected: x", 1, now_ms())])
    assert status_of(store, claimed[0]) == SENT and status_of(store, claimed[1]) == FAILED
    final = [status_of(store, i) for i in ids]
    assert final.count(STOPPED) == 2  # exactly what the stop answered


def test_a_retry_clears_the_started_mark_so_a_stop_can_take_it(store: Store) -> None:
    [rid] = add(store, "t", 1)
    store.claim_due(1)
    store.begin_sending([rid])
    assert store.stop_topic("t") == 0
    store.record_outcomes([Outcome(rid, PROCESSING, None, "InternalFailure: boom", 1, now_ms())])
    row = dbview.request_row(store, rid)
    assert row is not None
    assert (row["status"], row["sending_at"], row["attempts"], row["error"]) == (
        PROCESSING, None, 1, "InternalFailure: boom")
    assert store.stop_topic("t") == 1


def test_sender_crashes_are_counted_and_isolate_then_fail(store: Store) -> None:
    assert MAX_CRASHES == 3  # the walk below is written for three
    ids = add(store, "t", 3)
    store.claim_due(10)
    released = store.release_processing(crashed=True)
    assert (released.released, released.failed) == (3, 0)
    assert store.suspect_level() == 1
    assert store.claim_due(10).jobs == []  # suspects are not claimed with the rest
    pair = [j[0] for j in store.claim_suspects(1, 2).jobs]
    assert len(pair) == 2
    assert store.release_processing(crashed=True).failed == 0  # the pair dies again
    assert store.suspect_level() == 2
    [victim] = [j[0] for j in store.claim_suspects(2, 1).jobs]
    released = store.release_processing(crashed=True)  # and once more, alone: the culprit
    assert (released.released, released.failed) == (0, 1)
    row = dbview.request_row(store, victim)
    assert row is not None and row["status"] == FAILED
    assert row["error"] == ("the sender process crashed 3 times while holding this request; "
                            "not tried again")
    # The innocent ones go out, one level at a time, highest first.
    for level in (2, 1):
        assert store.suspect_level() == level
        [rid] = [j[0] for j in store.claim_suspects(level, 50).jobs]
        store.record_outcomes([Outcome(rid, SENT, f"m-{rid}", None, 1, now_ms())])
    assert store.suspect_level() == 0
    assert sorted(status_of(store, i) for i in ids) == [SENT, SENT, FAILED]


def test_an_external_kill_does_not_count_as_a_crash(store: Store) -> None:
    add(store, "t", 2)
    store.claim_due(10)
    assert store.release_processing().released == 2
    assert store.suspect_level() == 0
    assert len(store.claim_due(10).jobs) == 2


def test_topic_requests_pages_in_id_order_over_statuses(store: Store) -> None:
    ids = add(store, "t", 7)
    add(store, "other", 3)
    claimed = [j[0] for j in store.claim_due(4).jobs]
    store.record_outcomes([Outcome(claimed[0], SENT, "m-0", None, 1, now_ms()),
                           Outcome(claimed[1], FAILED, None, "MessageRejected: no", 3, now_ms())])
    everything = [0, 1, 2, 3, 4]
    seen: list[int] = []
    after = 0
    while page := store.topic_requests("t", everything, after=after, limit=3):
        seen += [r["id"] for r in page]
        after = page[-1]["id"]
    assert seen == ids
    [failed] = store.topic_requests("t", [FAILED])
    assert failed == {**failed, "id": claimed[1], "status": "failed", "attempts": 3,
                      "error": "MessageRejected: no", "messageId": None,
                      "email": "t1@example.com"}
    assert store.topic_requests("t", [SENT])[0]["messageId"] == "m-0"
    plan = " | ".join(dbview.query_plan(store, store.TOPIC_PAGE, ("t", 0, 0, 10)))
    assert "requests_topic" in plan and "TEMP B-TREE" not in plan


def test_a_previous_release_database_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = apsw.Connection(str(path))
    conn.execute(MIGRATIONS[0])
    conn.execute("PRAGMA user_version=1")
    conn.execute("INSERT INTO contents (id, subject, html, created_at) VALUES (1, 's', 'h', 0)")
    conn.execute("INSERT INTO requests (topic_id, email, content_id, scheduled_at, status, "
                 "created_at, updated_at) VALUES ('news', 'a@example.com', 1, 0, 1, 0, 0), "
                 "('news', 'b@example.com', 1, 0, 0, 0, 0)")
    conn.close()
    store = Store(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert store.contents([1])[1].topic_id == "news"
    assert store.release_processing().released == 1
    assert len(store.claim_due(10).jobs) == 2


def test_an_ses_open_event_after_a_pixel_open_adds_a_hit_not_an_error(store: Store) -> None:
    [rid] = add(store, "t", 1)
    assert store.record_open(rid)
    assert store.record_result(request_id=rid, status="Open", raw="{}", sns_message_id="sns-o")
    assert store.record_result(request_id=rid, status="Open", raw="{}",
                               sns_message_id="sns-o") is False  # SNS's repeat: nothing
    assert store.record_result(request_id=rid, status="Open", raw="{}", sns_message_id="sns-p")
    rows = store.db.execute("SELECT COUNT(*), MAX(hits) FROM results WHERE status = 'Open'"
                            ).fetchone()
    assert rows == (1, 3)  # one row per request; the pixel and two SES events are its hits
