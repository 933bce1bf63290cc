"""Schema upgrades on databases built by earlier releases, with rows in them."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from sesd import store as store_module
from sesd.store import FAILED, MIGRATIONS, STOPPED, Store, now_ms

V1 = MIGRATIONS[0]  # the released v1 schema: never edited, so it is the v1 database
assert isinstance(V1, str)

# (status, email as the v1 intake stored it) -> (status, email) after the upgrade
REQUESTS = [
    (0, "Ann@BÜCHER.de", 0, "Ann@xn--bcher-kva.de"),  # waiting: canonical now
    (1, "bob@Example.COM", 1, "bob@example.com"),
    (0, "carol@example.com", 0, "carol@example.com"),
    (0, "zoë@example.com", FAILED, "zoë@example.com"),  # SES cannot take it: failed, kept
    (1, "=?utf-8?q?v=40t.example?=@attacker.example", FAILED,
     "=?utf-8?q?v=40t.example?=@attacker.example"),
    (2, "Ann@BÜCHER.de", 2, "Ann@BÜCHER.de"),  # terminal rows are history: untouched
    (4, "DAVE@Example.com", 4, "DAVE@Example.com"),
]
SUPPRESSIONS = [  # email, reason, event, created_at
    ("ann@bücher.de", "Bounce/Permanent/General", "sns-1", 100),
    ("ANN@xn--bcher-kva.de", "manual", None, 200),  # NOCASE kept it apart: the same mailbox
    ("BOB@example.com", "Complaint/abuse", "sns-2", 300),
    ("Émile@Example.com", "manual", None, 400),
]


def build_v1(path: Path, requests: list[tuple[int, str]]) -> None:
    db = apsw.Connection(str(path))
    db.execute(V1)
    db.execute("PRAGMA user_version=1")
    db.execute("INSERT INTO contents (id, subject, html, created_at) VALUES (1, 's', 'h', 0)")
    db.executemany("INSERT INTO requests (topic_id, email, content_id, scheduled_at, status, "
                   "created_at, updated_at) VALUES ('t', ?, 1, 0, ?, 0, 0)",
                   [(email, status) for status, email in requests])
    db.executemany("INSERT INTO suppressions (email, reason, event, created_at) "
                   "VALUES (?, ?, ?, ?)", SUPPRESSIONS)
    db.execute("INSERT INTO idempotency (key, body_hash, response, created_at) "
               "VALUES ('k', 'h', x'7b7d', 0)")
    db.close()


def test_v1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    build_v1(path, [(status, email) for status, email, _, _ in REQUESTS])
    store = Store(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)

    rows = store.db.execute("SELECT status, email, error FROM requests ORDER BY id").fetchall()
    assert [(s, e) for s, e, _ in rows] == [(s, e) for _, _, s, e in REQUESTS]
    errors = [error for _, _, error in rows]
    assert errors[3].startswith('address refused: "zoë@example.com" has non-ASCII characters')
    assert "RFC 2047 encoded word" in errors[4]
    assert errors[:3] == [None] * 3

    # One entry per mailbox, the earliest kept; every spelling finds it.
    assert store.db.execute("SELECT key, scope, email, reason, event, created_at "
                            "FROM suppressions ORDER BY key").fetchall() == [
        ("ann@xn--bcher-kva.de", "all", "ann@bücher.de", "Bounce/Permanent/General", "sns-1",
         100),
        ("bob@example.com", "all", "BOB@example.com", "Complaint/abuse", "sns-2", 300),
        ("émile@example.com", "all", "Émile@Example.com", "manual", None, 400),
    ]
    assert store.is_suppressed("ANN@BÜCHER.DE") and store.is_suppressed("e\u0301mile@example.com")
    assert store.idempotent_response("k") == ("h", b"{}", 0)

    # The claim finds the suppressed waiting requests by key; the rest go on.
    assert store.release_processing().released == 1
    claimed = store.claim_due(10, now_ms())
    assert claimed.suppressed == 2
    assert [email for _, email, _, _ in claimed.jobs] == ["carol@example.com"]
    assert store.db.execute("SELECT email, error FROM requests WHERE status = ? AND id < 3 "
                            "ORDER BY id", (STOPPED,)).fetchall() == [
        ("Ann@xn--bcher-kva.de", "suppressed: Bounce/Permanent/General"),
        ("bob@example.com", "suppressed: Complaint/abuse")]
    store.close()
    assert Store(path).db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_waiting_requests_are_rewritten_in_chunks(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "_MIGRATION_CHUNK", 3)
    path = tmp_path / "app.db"
    waiting = [(i % 2, f"u{i}@Bücher.DE") for i in range(11)]
    build_v1(path, [(2, "sent@Example.com"), *waiting])
    store = Store(path)
    assert store.db.execute("SELECT email FROM requests ORDER BY id").fetchall() == [
        ("sent@Example.com",), *[(f"u{i}@xn--bcher-kva.de",) for i in range(11)]]


def test_a_failed_upgrade_changes_nothing(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "app.db"
    build_v1(path, [(0, "a@Example.com"), (0, "b@Example.com")])
    calls: list[str] = []

    def breaks_on_the_second(address: str) -> str:
        calls.append(address)
        if len(calls) == 2:
            raise RuntimeError("power cut")
        return address.lower()

    monkeypatch.setattr(store_module, "canonical_address", breaks_on_the_second)
    with pytest.raises(RuntimeError):
        Store(path)
    db = apsw.Connection(str(path))
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert db.execute("SELECT email FROM requests ORDER BY id").fetchall() == [
        ("a@Example.com",), ("b@Example.com",)]
    assert [row[1] for row in db.execute("PRAGMA table_info(suppressions)")] == [
        "email", "reason", "event", "created_at"]
    assert db.execute("SELECT COUNT(*) FROM suppressions").fetchone()[0] == len(SUPPRESSIONS)
    db.close()
    monkeypatch.undo()
    assert Store(path).db.execute("SELECT email FROM requests ORDER BY id").fetchall() == [
        ("a@example.com",), ("b@example.com",)]
