"""The API in process, for addresses, suppressions and idempotency keys (checked in the file)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sesd.api import schemas
from sesd.api.app import create_app
from sesd.config import Settings, load
from sesd.errors import ConfigError
from sesd.store import IDEMPOTENCY_PURGE_BATCH, Store

API_KEY = "k" * 20
AUTH = {"x-api-key": API_KEY}
DAY_MS = 24 * 3_600_000


@dataclass
class Api:
    client: TestClient
    store: Store  # a separate connection on the app's file

    async def post(self, emails: list[str], headers: dict[str, str] | None = None) -> Any:
        body = {"messages": [{"topicId": "t", "emails": emails, "subject": "s", "content": "c"}]}
        return await self.client.post("/v1/messages", json=body,
                                      headers={**AUTH, **(headers or {})})

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return list(self.store.db.execute(sql, args))


@pytest.fixture
async def api(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[Api]:
    settings = dataclasses.replace(Settings(), db_path=tmp_path / "app.db", api_key=API_KEY)
    client = await aiohttp_client(create_app(settings))
    store = Store(settings.db_path)
    yield Api(client, store)
    store.close()


async def test_one_request_per_mailbox_and_the_count_says_so(api: Api) -> None:
    resp = await api.post(["Bob@Example.COM", "bob@example.com", "BOB@EXAMPLE.COM",
                           "ann@BÜCHER.de", "ann@xn--bcher-kva.de", "c@example.com"],
                          {"Idempotency-Key": "k1"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["count"] == 3
    assert api.rows("SELECT email FROM requests ORDER BY id") == [
        ("Bob@example.com",), ("ann@xn--bcher-kva.de",), ("c@example.com",)]
    replay = await api.post(["Bob@Example.COM", "bob@example.com", "BOB@EXAMPLE.COM",
                             "ann@BÜCHER.de", "ann@xn--bcher-kva.de", "c@example.com"],
                            {"Idempotency-Key": "k1"})
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert (await replay.json())["count"] == 3


@pytest.mark.parametrize(("address", "says"), [
    ("zoë@example.com", "SES cannot deliver"),
    ("=?utf-8?q?victim=40target.example=2C?=@attacker.example", "RFC 2047 encoded word"),
])
async def test_undeliverable_address_is_400_and_stores_nothing(api: Api, address: str,
                                                               says: str) -> None:
    resp = await api.post(["ok@example.com", address])
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error.startswith(f"messages[0].emails[1]: {schemas.quote(address)}") and says in error
    assert api.rows("SELECT COUNT(*) FROM requests") == [(0,)]
    assert api.rows("SELECT COUNT(*) FROM contents") == [(0,)]


async def test_validation_runs_off_the_event_loop(api: Api,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real = schemas.parse_messages

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(schemas, "parse_messages", recording)
    assert (await api.post(["a@example.com"])).status == 200
    assert threads and threading.get_ident() not in threads


async def test_suppression_routes_take_any_spelling(api: Api) -> None:
    resp = await api.client.put("/v1/suppressions/Ann@Bücher.DE", headers=AUTH)
    assert await resp.json() == {"email": "Ann@Bücher.DE", "scope": "all", "reason": "manual"}
    # A second spelling updates the one entry (the display address stays the first one).
    resp = await api.client.put("/v1/suppressions/ann@xn--bcher-kva.de", headers=AUTH,
                                json={"reason": "asked"})
    assert resp.status == 200
    listed = await (await api.client.get("/v1/suppressions", headers=AUTH)).json()
    assert [(s["email"], s["reason"]) for s in listed["suppressions"]] == [
        ("Ann@Bücher.DE", "asked")]
    # Not sendable, still suppressible (a manual entry from a bounce seen elsewhere).
    assert (await api.client.put("/v1/suppressions/zoë@example.com", headers=AUTH)).status == 200
    resp = await api.client.delete("/v1/suppressions/ANN@BÜCHER.DE", headers=AUTH)
    assert await resp.json() == {"removed": True}
    assert (await api.client.delete("/v1/suppressions/ann@bücher.de", headers=AUTH)).status == 404
    assert api.rows("SELECT key FROM suppressions") == [("zoë@example.com",)]


async def test_suppressions_page_in_key_order_with_a_cursor(api: Api) -> None:
    for email in ["b@example.com", "A@Example.com", "c@bücher.de"]:
        assert (await api.client.put(f"/v1/suppressions/{email}", headers=AUTH)).status == 200
    first = await (await api.client.get("/v1/suppressions?limit=2", headers=AUTH)).json()
    assert [s["email"] for s in first["suppressions"]] == ["A@Example.com", "b@example.com"]
    assert isinstance(first["next"], str)
    rest = await (await api.client.get("/v1/suppressions", headers=AUTH,
                                       params={"limit": "2", "cursor": first["next"]})).json()
    assert rest == {"suppressions": [{"email": "c@bücher.de", "scope": "all", "reason": "manual",
                                      "event": None,
                                      "createdAt": rest["suppressions"][0]["createdAt"]}],
                    "next": None}


async def test_idempotency_keys_expire_after_the_ttl(api: Api) -> None:
    headers = {"Idempotency-Key": "batch-1"}
    assert (await api.post(["a@example.com"], headers)).status == 200
    again = await api.post(["a@example.com"], headers)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert (await api.post(["other@example.com"], headers)).status == 409
    # A day later (the default TTL) the key is free: a new request, even with another body.
    api.store.db.execute("UPDATE idempotency SET created_at = created_at - ?", (DAY_MS + 1,))
    fresh = await api.post(["other@example.com"], headers)
    assert fresh.status == 200 and "Idempotent-Replayed" not in fresh.headers
    assert api.rows("SELECT email FROM requests ORDER BY id") == [("a@example.com",),
                                                                  ("other@example.com",)]
    (created_at,) = api.rows("SELECT created_at FROM idempotency WHERE key = 'batch-1'")[0]
    assert api.rows("SELECT MAX(created_at) FROM requests") == [(created_at,)]
    assert (await api.post(["other@example.com"], headers)).headers.get(
        "Idempotent-Replayed") == "true"


async def test_expired_keys_are_purged_in_small_batches(api: Api) -> None:
    expired = 2 * IDEMPOTENCY_PURGE_BATCH + 10
    api.store.db.executemany(
        "INSERT INTO idempotency (key, body_hash, response, created_at) VALUES (?, 'h', x'', ?)",
        [(f"old-{i}", i) for i in range(expired)] + [("live", 2**62)])
    remaining = []
    for _ in range(3):
        assert (await api.post(["a@example.com"])).status == 200  # any ingest purges a batch
        remaining.append(api.rows("SELECT COUNT(*) FROM idempotency WHERE key LIKE 'old-%'")[0][0])
    assert remaining == [expired - IDEMPOTENCY_PURGE_BATCH, expired - 2 * IDEMPOTENCY_PURGE_BATCH,
                         0]
    assert api.rows("SELECT key FROM idempotency") == [("live",)]


def test_ttl_setting_is_parsed_and_checked() -> None:
    assert load({}).idempotency_ttl_ms == DAY_MS
    assert load({"IDEMPOTENCY_TTL_HOURS": "0.5"}).idempotency_ttl_ms == 1_800_000
    for bad in ("0", "-1", "abc", "inf", "10000"):
        with pytest.raises(ConfigError) as caught:
            load({"IDEMPOTENCY_TTL_HOURS": bad})
        assert caught.value.variable == "IDEMPOTENCY_TTL_HOURS"
