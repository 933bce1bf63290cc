"""Webhook events in the store: written in the transaction of their fact, only while an endpoint
exists, once per fact; fanned out exactly once; deliveries listed, retried, expired."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw
import pytest

from sesd import events
from sesd.store import (
    DELIVERED,
    FAILED,
    GAVE_UP,
    PENDING,
    PROCESSING,
    SENT,
    STOPPED,
    Attempt,
    NewMessage,
    Outcome,
    Store,
    now_ms,
)
from sesd.testing import dbview


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "app.db")
    yield s
    s.close()


def requests(store: Store, n: int, topic: str = "t") -> list[int]:
    store.insert_messages([NewMessage(topic, [f"u{i}@example.com" for i in range(n)], "s", "h",
                                      0)])
    return [job[0] for job in store.claim_due(n).jobs]


def hook(store: Store, event_types: list[str] | None = None) -> int:
    made = store.add_webhook("https://hooks.example/x", event_types, "whsec_AAAA", limit=10)
    assert made is not None
    return int(made["id"])


def rows(store: Store) -> list[tuple[Any, ...]]:
    return list(store.db.execute("SELECT type, request_id FROM events ORDER BY id"))


def test_nothing_is_written_while_no_webhook_exists(store: Store) -> None:
    ids = requests(store, 3)
    store.record_outcomes([Outcome(ids[0], SENT, "m0", attempts=1, at=1),
                           Outcome(ids[1], FAILED, error="MessageRejected", attempts=1, at=1)])
    assert store.record_open(ids[0])
    assert rows(store) == []


def test_outcomes_emit_one_event_per_changed_row(store: Store) -> None:
    hook(store)
    ids = requests(store, 4)
    store.record_outcomes([
        Outcome(ids[0], SENT, "m0", attempts=1, at=1),
        Outcome(ids[0], SENT, "m0", attempts=1, at=1),  # the same send twice in one batch
        Outcome(ids[1], FAILED, error="MessageRejected", attempts=1, at=1),
        Outcome(ids[2], PENDING, error="Throttling", attempts=1, at=1),  # a retry: no event
    ])
    store.record_outcomes([Outcome(ids[0], SENT, "m0", attempts=1, at=2)])  # recorded again
    store.record_outcomes([Outcome(ids[1], FAILED, error="again", attempts=2, at=2)])
    assert rows(store) == [(events.SENT, ids[0]), (events.FAILED, ids[1])]


def test_a_send_recorded_after_a_stop_is_still_sent(store: Store) -> None:
    hook(store)
    ids = requests(store, 1, topic="stopme")
    store.begin_sending(ids)
    store.db.execute(f"UPDATE requests SET status = {STOPPED} WHERE id = ?", (ids[0],))
    store.record_outcomes([Outcome(ids[0], SENT, "m0", attempts=1, at=1)])
    assert rows(store) == [(events.SENT, ids[0])]


def test_an_event_and_its_fact_roll_back_together(store: Store, monkeypatch) -> None:
    hook(store)
    ids = requests(store, 1)

    def explode(*args: Any, **kwargs: Any) -> int:
        raise apsw.IOError("disk went away")

    monkeypatch.setattr(store, "_emit", explode)
    with pytest.raises(apsw.IOError):
        store.record_outcomes([Outcome(ids[0], SENT, "m0", attempts=1, at=1)])
    # The fact did not happen either:
    assert dbview.request_row(store, ids[0])["status"] == PROCESSING
    assert rows(store) == []


def test_first_open_only(store: Store) -> None:
    hook(store)
    ids = requests(store, 1)
    for _ in range(3):
        assert store.record_open(ids[0])
    assert not store.record_open(999_999)
    ((kind, rid, result_id),) = store.db.execute("SELECT type, request_id, result_id "
                                                  "FROM events")
    assert (kind, rid) == (events.OPENED, ids[0])
    assert dbview.hits(store, ids[0], "Open") == 3
    assert result_id == store.db.execute("SELECT id FROM results WHERE status = 'Open'"
                                         ).fetchone()[0]


@pytest.mark.parametrize(("status", "kind"), sorted(events.FROM_SES.items()))
def test_matched_ses_results_emit_their_event(store: Store, status: str, kind: str) -> None:
    hook(store)
    ids = requests(store, 1)
    assert store.record_result(request_id=ids[0], status=status, raw="{}", sns_message_id="s1")
    assert not store.record_result(request_id=ids[0], status=status, raw="{}",
                                   sns_message_id="s1")  # an SNS repeat: stored once
    assert store.record_result(request_id=None, status=status, raw="{}", sns_message_id="s2")
    assert store.record_result(request_id=ids[0], status="Send", raw="{}", sns_message_id="s3")
    assert rows(store) == [(kind, ids[0])]


def test_suppression_stops_emit_suppressed(store: Store) -> None:
    hook(store)
    store.insert_messages([NewMessage("t", ["a@example.com", "b@example.com"], "s", "h", 0)])
    store.add_suppression("a@example.com", "bounce")
    claimed = store.claim_due(10)
    assert claimed.suppressed == 1
    held = claimed.jobs[0][0]
    assert store.stop_suppressed_held([("b@example.com", "complaint")]) == 1
    assert store.stop_suppressed_held([]) == 0
    assert [k for k, _ in rows(store)] == [events.SUPPRESSED, events.SUPPRESSED]
    assert rows(store)[1] == (events.SUPPRESSED, held)


def test_requests_failed_after_sender_crashes_emit_failed(store: Store) -> None:
    hook(store)
    ids = requests(store, 1)
    for _ in range(3):
        store.release_processing(crashed=True)
        store.claim_suspects(store.suspect_level(), 10)
    assert dbview.request_row(store, ids[0])["status"] == FAILED
    assert rows(store) == [(events.FAILED, ids[0])]


def test_fan_out_is_exactly_once_and_follows_filters(store: Store) -> None:
    everything = hook(store)
    only_failed = hook(store, [events.FAILED])
    ids = requests(store, 3)
    store.record_outcomes([Outcome(ids[0], SENT, "m0", attempts=1, at=1),
                           Outcome(ids[1], FAILED, error="x", attempts=1, at=1)])
    assert store.fan_out(1) == (1, 1)  # one event at a time: the sent one, to one endpoint
    assert store.fan_out(100) == (1, 2)  # the failed one, to both
    assert store.fan_out(100) == (0, 0)
    assert store.event_cursor() == store.latest_event() == 2
    late = hook(store)  # registered now: receives what happens from now on only
    store.record_outcomes([Outcome(ids[2], SENT, "m2", attempts=1, at=1)])
    assert store.fan_out(100) == (1, 2)
    per_hook = dict(store.db.execute("SELECT webhook_id, COUNT(*) FROM deliveries "
                                     "GROUP BY webhook_id"))
    assert per_hook == {everything: 3, only_failed: 1, late: 1}


def test_fan_out_rolls_back_with_its_cursor(store: Store) -> None:
    hook(store)
    ids = requests(store, 1)
    store.record_outcomes([Outcome(ids[0], SENT, "m0", attempts=1, at=1)])
    store.db.execute("CREATE TRIGGER boom BEFORE UPDATE ON settings "
                     "BEGIN SELECT RAISE(ABORT, 'crash'); END")
    store.db.execute("INSERT INTO settings (key, value) VALUES ('webhook_event_cursor', '0')")
    with pytest.raises(apsw.ConstraintError):
        store.fan_out(100)
    assert store.db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 0
    store.db.execute("DROP TRIGGER boom")
    assert store.fan_out(100) == (1, 1)


def test_due_walks_its_index_without_a_sort(store: Store) -> None:
    plan = " ".join(dbview.query_plan(store, Store.DUE, (1, now_ms(), 10)))
    assert "deliveries_due" in plan and "TEMP B-TREE" not in plan
    plan = " ".join(dbview.query_plan(store, Store.DELIVERY_PAGE, (1, 0, 0, 10)))
    assert "deliveries_list" in plan and "TEMP B-TREE" not in plan


def test_attempts_retry_expire_and_manual_retry(store: Store) -> None:
    wid = hook(store)
    ids = requests(store, 3)
    store.record_outcomes([Outcome(i, SENT, f"m{i}", attempts=1, at=1) for i in ids])
    store.fan_out(100)
    now = now_ms()
    d1, d2, d3 = (d.delivery_id for d in store.due_deliveries(wid, now, 10))
    store.record_attempts([Attempt(d1, DELIVERED, now, 204),
                           Attempt(d2, PENDING, now, 500, "answered 500", now + 60_000),
                           Attempt(d3, GAVE_UP, now, None, "refused")])
    assert [d.delivery_id for d in store.due_deliveries(wid, now, 10)] == []
    listed = {d["id"]: d for d in store.list_deliveries(wid, [0, 1, 2])}
    assert listed[d1]["status"] == "delivered" and listed[d1]["lastStatus"] == 204
    assert listed[d2]["status"] == "pending" and listed[d2]["lastError"] == "answered 500"
    assert listed[d2]["nextAt"] == now + 60_000 and listed[d2]["attempts"] == 1
    assert listed[d3]["status"] == "failed" and listed[d3]["lastError"] == "refused"
    assert [d["id"] for d in store.list_deliveries(wid, [2])] == [d3]
    assert store.hurry_deliveries(wid, now) == 1
    assert [d.delivery_id for d in store.due_deliveries(wid, now, 10)] == [d2]
    # Past the window, pending deliveries fail (first_at is `now`: a window of -1 ms passes).
    assert store.expire_deliveries(wid, -1, now) == 1
    assert "gave up" in store.list_deliveries(wid, [2])[0]["lastError"]
    again = store.retry_delivery(wid, d3)
    assert again is not None and again["status"] == "pending" and again["attempts"] == 0
    assert store.retry_delivery(wid + 1, d3) is None
    assert store.get_webhook(wid)["deliveries"] == {"pending": 1, "delivered": 1, "failed": 1}
    assert store.delete_webhook(wid)
    assert store.db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 0


def test_webhook_limit(store: Store) -> None:
    assert store.add_webhook("https://a.example/", None, "whsec_A", limit=1) is not None
    assert store.add_webhook("https://b.example/", None, "whsec_B", limit=1) is None
