"""The store's side of the recipients' routes and of suppression management, on a real SQLite
file: clicks, unsubscribes, scoped suppressions, imports, the payload's message options, and
the plans that keep each of these queries on its index."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import apsw
import orjson
import pytest

from sesd import events
from sesd.messages import Content
from sesd.notifier import payload
from sesd.store import MIGRATIONS, PROCESSING, Click, NewMessage, Store, now_ms
from sesd.testing import dbview


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "app.db")
    yield s
    s.close()


def add(store: Store, emails: list[str], *, topic: str = "t", **options: object) -> list[int]:
    before = {row[0] for row in store.db.execute("SELECT id FROM requests")}
    content = Content(topic, "S", "<p>x</p>", **options)  # type: ignore[arg-type]
    store.insert_messages([NewMessage(topic, emails, "S", "<p>x</p>", now_ms(),
                                      content=content)])
    return [row[0] for row in store.db.execute("SELECT id FROM requests ORDER BY id")
            if row[0] not in before]


def hook(store: Store) -> None:
    assert store.add_webhook("https://hooks.example/x", None, "whsec_AAAA", limit=10)


def event_rows(store: Store) -> list[tuple[object, ...]]:
    return list(store.db.execute("SELECT type, request_id, detail FROM events ORDER BY id"))


# -- clicks ----------------------------------------------------------------------------------------

def test_clicks_resolve_stored_links_and_write_one_row_per_link(store: Store) -> None:
    links = ("https://a.example/?x=1&y=2", "https://b.example/")
    first, second = add(store, ["a@example.com", "b@example.com"], links=links)
    (plain,) = add(store, ["c@example.com"], topic="no-links")
    hook(store)
    urls = store.record_clicks([Click(first, 0, "UA"), Click(first, 1, None),
                                Click(first, 0, "later"), Click(second, 1, None),
                                Click(first, 2, None), Click(plain, 0, None),
                                Click(10**9, 0, None)])
    assert urls == [links[0], links[1], links[0], links[1], None, None, None]
    assert list(store.db.execute("SELECT request_id, link, user_agent, hits FROM results "
                                 "ORDER BY id")) == [(first, links[0], "UA", 2),
                                                     (first, links[1], None, 1),
                                                     (second, links[1], None, 1)]
    assert [(kind, rid, orjson.loads(detail)) for kind, rid, detail in event_rows(store)] == [
        (events.CLICKED, first, {"link": links[0]}), (events.CLICKED, first, {"link": links[1]}),
        (events.CLICKED, second, {"link": links[1]})]
    store.add_click_hits({(first, links[1]): 5, (second, "https://not-a-link/"): 3})
    assert dbview.hits(store, first, "Click", links[1]) == 6
    assert store.click_url(second, 0) == links[0] and store.click_url(second, 2) is None
    stats = store.topic_stats("t")["result"]
    assert stats == {"statuses": {"Click": 2}, "clicks": {links[0]: 1, links[1]: 2}}
    # SES's own Click events (no link) count among the statuses, not per link.
    store.record_result(request_id=second, status="Click", raw="{}", sns_message_id="m-1")
    assert store.topic_stats("t")["result"] == {"statuses": {"Click": 2},
                                                "clicks": {links[0]: 1, links[1]: 2}}


def test_a_failed_click_batch_writes_nothing(store: Store) -> None:
    (rid,) = add(store, ["a@example.com"], links=("https://a.example/",))
    with pytest.raises(UnicodeEncodeError):  # text SQLite cannot take, in the second click
        store.record_clicks([Click(rid, 0, None), Click(rid, 0, "\ud800")])
    assert store.db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0


# -- unsubscribes ----------------------------------------------------------------------------------

def test_unsubscribe_is_one_transaction_and_idempotent(store: Store) -> None:
    (rid,) = add(store, ["Ann@example.com"], list_id="news")
    (held,) = add(store, ["ann@example.com"], topic="t2", list_id="news")
    (receipt,) = add(store, ["ann@example.com"], topic="t3", stream="transactional")
    store.db.execute(f"UPDATE requests SET status = {PROCESSING}")
    hook(store)
    assert store.unsubscribe_target(rid) == ("Ann@example.com", "news", False)
    done = store.unsubscribe(rid)
    assert done is not None
    assert (done.email, done.list_id, done.recorded, done.stopped) == (
        "Ann@example.com", "news", True, 2)
    assert store.unsubscribe_target(rid) == ("Ann@example.com", "news", True)
    again = store.unsubscribe(rid)
    assert again is not None and (again.recorded, again.stopped) == (False, 0)
    assert list(store.db.execute("SELECT key, scope, reason FROM suppressions")) == [
        ("ann@example.com", "news", "unsubscribe")]
    assert list(store.db.execute("SELECT request_id, status FROM results")) == [
        (rid, "Unsubscribe")]
    assert [(kind, r) for kind, r, _ in event_rows(store)] == [
        (events.UNSUBSCRIBED, rid), (events.SUPPRESSED, rid), (events.SUPPRESSED, held)]
    assert dbview.request_row(store, receipt)["status"] == PROCESSING
    # Transactional mail has no unsubscribe; an unknown request neither.
    assert store.unsubscribe(receipt) is None and store.unsubscribe_target(receipt) is None
    assert store.unsubscribe(10**9) is None


def test_an_unsubscribe_keeps_an_entry_that_exists(store: Store) -> None:
    (rid,) = add(store, ["a@example.com"], list_id="news")
    store.add_suppression("A@example.com", "asked by phone", scope="news")
    store.db.execute(f"UPDATE requests SET status = {PROCESSING}")
    done = store.unsubscribe(rid)
    assert done is not None and done.stopped == 1
    assert list(store.db.execute("SELECT reason FROM suppressions")) == [("asked by phone",)]
    assert dbview.request_row(store, rid)["error"] == "suppressed: asked by phone (list news)"


# -- scoped suppressions and imports ---------------------------------------------------------------

def test_scopes_are_apart(store: Store) -> None:
    store.add_suppression("a@example.com", "manual")
    store.add_suppression("A@Example.com", "unsubscribe", scope="news")
    assert store.is_suppressed("a@EXAMPLE.com") and store.is_suppressed("a@example.com", "news")
    assert not store.is_suppressed("a@example.com", "offers")
    assert store.remove_suppression("a@example.com", "news")
    assert not store.remove_suppression("a@example.com", "news")
    assert store.is_suppressed("a@example.com")


def test_import_adds_what_is_missing_and_stops_what_is_refused(store: Store) -> None:
    (bulk,) = add(store, ["a@example.com"], list_id="news")
    (other,) = add(store, ["b@example.com"], topic="t2", list_id="offers")
    (receipt,) = add(store, ["b@example.com"], topic="t3", stream="transactional")
    (sending,) = add(store, ["a@example.com"], topic="t4", list_id="news")
    store.db.execute(f"UPDATE requests SET status = {PROCESSING}")
    store.db.execute("UPDATE requests SET sending_at = 1 WHERE id = ?", (sending,))
    store.add_suppression("c@example.com", "Bounce", "sns-1")
    hook(store)
    done = store.import_suppressions([
        ("c@example.com", "all", "c@example.com", "imported"),  # exists: kept as it is
        ("b@example.com", "news", "b@example.com", "first"),
        ("a@example.com", "news", "A@example.com", "imported"),
        ("b@example.com", "news", "B@example.com", "second"),  # repeated: the first wins
    ])
    assert (done.rows, done.added, done.stopped) == (4, 2, 1)
    assert list(store.db.execute("SELECT key, scope, email, reason, event FROM suppressions "
                                 "ORDER BY 1, 2")) == [
        ("a@example.com", "news", "A@example.com", "imported", None),
        ("b@example.com", "news", "b@example.com", "first", None),
        ("c@example.com", "all", "c@example.com", "Bounce", "sns-1")]
    rows = {rid: dbview.request_row(store, rid) or {} for rid in (bulk, other, receipt, sending)}
    statuses = {rid: (row["status"], row["error"]) for rid, row in rows.items()}
    assert statuses == {bulk: (4, "suppressed: imported (list news)"), other: (1, None),
                        receipt: (1, None), sending: (1, None)}
    assert [(kind, r) for kind, r, _ in event_rows(store)] == [(events.SUPPRESSED, bulk)]


def test_pages_follow_key_then_scope(store: Store) -> None:
    store.import_suppressions([(k, s, k, "r") for k, s in [
        ("b@x.io", "all"), ("a@x.io", "news"), ("a@x.io", "all"), ("c@x.io", "news")]])
    page, cursor = store.list_suppressions(limit=3)
    assert [(p["email"], p["scope"]) for p in page] == [("a@x.io", "all"), ("a@x.io", "news"),
                                                         ("b@x.io", "all")]
    assert cursor == ("b@x.io", "all")
    page, cursor = store.list_suppressions(limit=3, after=cursor)
    assert [(p["email"], p["scope"]) for p in page] == [("c@x.io", "news")] and cursor is None
    page, cursor = store.list_suppressions(limit=1, scope="news")
    assert [p["email"] for p in page] == ["a@x.io"]
    page, _ = store.list_suppressions(limit=5, scope="news", after=cursor)
    assert [p["email"] for p in page] == ["c@x.io"]


def test_import_of_100000_rows_is_one_statement(store: Store) -> None:
    rows = [(f"u{i}@example.com", "all" if i % 2 else "news", f"u{i}@example.com", "r")
            for i in range(100_000)]
    done = store.import_suppressions(rows)
    assert (done.rows, done.added) == (100_000, 100_000)
    again = store.import_suppressions(rows[:10])
    assert again.added == 0


# -- webhook payloads carry the message's options --------------------------------------------------

def test_due_deliveries_carry_stream_list_and_tags(store: Store) -> None:
    (news,) = add(store, ["a@example.com"], list_id="news",
                  tags=(("campaign", "spring"), ("kind", "promo")))
    (receipt,) = add(store, ["b@example.com"], topic="t2", stream="transactional")
    (plain,) = add(store, ["c@example.com"], topic="t3")
    hook(store)
    with store._write() as cur:
        store.emit_events(cur, events.SENT, [news, receipt, plain, 10**9])
    store.fan_out(100)
    due = {d.request_id: payload.compose_data(d) for d in store.due_deliveries(1, now_ms(), 10)}
    assert due[news] == {"requestId": news, "topicId": "t", "email": "a@example.com",
                        "messageId": None, "stream": "bulk", "list": "news",
                        "tags": {"campaign": "spring", "kind": "promo"}}
    assert (due[receipt]["stream"], due[receipt]["list"], due[receipt]["tags"]) == (
        "transactional", None, {})
    assert (due[plain]["stream"], due[plain]["list"], due[plain]["tags"]) == (
        "bulk", "default", {})
    # The request is gone (never was): no options to tell.
    assert due[10**9] == {"requestId": 10**9, "topicId": None, "email": None,
                          "messageId": None}


# -- plans -----------------------------------------------------------------------------------------

def test_the_new_queries_use_their_indexes(store: Store) -> None:
    def plan(sql: str, *args: object) -> str:
        return " | ".join(dbview.query_plan(store, sql, args))

    assert plan(store.SUPPRESSION_PAGE, "a", "all", 10) == (
        "SEARCH suppressions USING PRIMARY KEY ((key,scope)>(?,?))")
    assert plan(store.SCOPE_PAGE, "a", "news", 10, "news") == (
        "SEARCH suppressions USING INDEX suppressions_scope (scope=? AND key>?)")
    held_list = plan(store.STOP_HELD_LIST, "e", 0, "a@example.com", "news")
    assert "SEARCH requests USING INDEX requests_claim (status=? AND priority=?)" in held_list
    refused = plan(store.STOP_HELD_REFUSED, 0)
    assert "SEARCH requests USING INDEX requests_claim (status=?)" in refused
    assert "SCAN suppressions" not in refused and "SCAN contents" not in refused
    assert refused.count("SEARCH suppressions USING PRIMARY KEY (key=? AND scope=?)") == 4
    for sql, args in [(store.CLICK_LINK, (1, 0)), (store.UNSUBSCRIBE_TARGET, (1,))]:
        assert plan(sql, *args) == ("SEARCH requests USING INTEGER PRIMARY KEY (rowid=?) | "
                                    "SEARCH contents USING INTEGER PRIMARY KEY (rowid=?)")
    clicks = plan(store.TOPIC_CLICKS, "t")
    assert "COVERING INDEX requests_topic (topic_id=?)" in clicks
    assert "COVERING INDEX results_click_once (request_id=? AND link>?)" in clicks
    assert "SEARCH c USING INTEGER PRIMARY KEY (rowid=?) LEFT-JOIN" in plan(store.DUE, 1, 0, 10)
    for sql, args in [(store.STOP_HELD_LIST, ("e", 0, "a", "n")), (store.STOP_HELD_REFUSED, (0,)),
                      (store.TOPIC_CLICKS, ("t",)), (store.DUE, (1, 0, 10))]:
        text = plan(sql, *args)
        assert "SCAN requests" not in text and "SCAN results" not in text, text


def test_v7_adds_the_scope_index_to_a_v6_database(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"
    Store(path).close()
    db = apsw.Connection(str(path))
    db.execute("DROP INDEX suppressions_scope; PRAGMA user_version=6")
    db.execute("INSERT INTO suppressions VALUES ('a@x.io', 'news', 'a@x.io', 'r', NULL, 0)")
    db.close()
    store = Store(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 7
    assert store.list_suppressions(scope="news")[0][0]["email"] == "a@x.io"
    assert "suppressions_scope" in " ".join(dbview.query_plan(store, store.SCOPE_PAGE,
                                                              ("", "", 1, "news")))
    store.close()
