"""The HTTP API in process (aiohttp test client against create_app), checked against the database.

Every case looks at the SQLite file through a separate connection afterwards: a 4xx must have
stored nothing, a 200 exactly what it says. SNS messages are signed with a throwaway certificate
served by a real local aiohttp server, so the app fetches it over HTTP as it would from AWS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import apsw
import orjson
import pytest
import structlog
import structlog.testing
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from sesd import tracking
from sesd.api.app import ApiHooks, create_app
from sesd.config import Settings
from sesd.errors import StorageFullError
from sesd.store import Store
from tests.test_sns import EXPECTED, FIXTURES, TOPIC, _make_cert, notification, sign, subscription

API_KEY = "k" * 20
AUTH = {"x-api-key": API_KEY}
TABLES = ("contents", "requests", "results", "suppressions", "idempotency")
ERROR_KEYS = {"error", "path", "method", "timestamp"}
MERGE = [structlog.contextvars.merge_contextvars]  # log lines as the service renders them


# ------------------------------------------------------------------------------------ harness


@dataclass
class Recorder:
    """ApiHooks that count their calls; `processes` is what /health reports when set."""

    nudges: int = 0
    stops: int = 0
    processes: dict[str, dict[str, Any]] | None = None

    def hooks(self) -> ApiHooks:
        def nudge() -> None:
            self.nudges += 1

        def stopped() -> None:
            self.stops += 1

        health = (lambda: self.processes) if self.processes is not None else None
        return ApiHooks(nudge=nudge, stopped=stopped, health=health)


@dataclass
class Env:
    client: TestClient
    hooks: Recorder
    db: Store  # a separate connection on the app's file
    settings: Settings
    cert_hits: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {t: self.db.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return list(self.db.db.execute(sql, args))

    def exec(self, sql: str, *args: Any) -> None:
        self.db.db.execute(sql, args)

    def request_ids(self, topic: str | None = None) -> list[int]:
        if topic is None:
            return [r[0] for r in self.rows("SELECT id FROM requests ORDER BY id")]
        return [r[0] for r in self.rows("SELECT id FROM requests WHERE topic_id = ? ORDER BY id",
                                        topic)]

    async def post(self, messages: Any, headers: dict[str, str] | None = None) -> Any:
        body = messages if isinstance(messages, bytes) else orjson.dumps({"messages": messages})
        return await self.client.post("/v1/messages", data=body,
                                      headers={**AUTH, **(headers or {})})


MakeEnv = Callable[..., Awaitable[Env]]
EMPTY = dict.fromkeys(TABLES, 0)


@pytest.fixture
async def make_env(tmp_path, aiohttp_client) -> AsyncIterator[MakeEnv]:
    stores: list[Store] = []

    async def make(recorder: Recorder | None = None, **overrides: Any) -> Env:
        recorder = recorder or Recorder()
        settings = dataclasses.replace(
            Settings(), **{"db_path": tmp_path / "app.db", "api_key": API_KEY, **overrides})
        client = await aiohttp_client(create_app(settings, recorder.hooks()))
        store = Store(settings.db_path)
        stores.append(store)
        return Env(client, recorder, store, settings)

    yield make
    for store in stores:
        store.close()


@pytest.fixture
async def env(make_env: MakeEnv) -> Env:
    return await make_env()


def msg(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"topicId": "t1", "emails": ["a@example.com"], "subject": "Hello",
                            "content": "<p>Hi</p>"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


async def assert_error(resp: Any, status: int, method: str, path: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == ERROR_KEYS, body
    assert body["method"] == method
    assert body["path"] == path
    assert isinstance(body["error"], str) and body["error"]
    stamp = dt.datetime.fromisoformat(body["timestamp"])
    assert stamp.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 60
    return body


# --------------------------------------------------------------------------- POST /v1/messages

LONG = "x" * 257

INVALID_BODIES: dict[str, bytes] = {
    "invalid-json": b'{"messages": [',
    "empty-body": b"",
    "non-utf8": b'{"messages": [{"topicId": "t\xff\xfe", "emails": ["a@example.com"], '
                b'"subject": "s", "content": "c"}]}',
    "latin1-bytes": "{\"messages\": \"caf\u00e9\"}".encode("latin-1"),
    "deeply-nested": b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "huge-int": b'{"messages": [' + b"9" * 40 + b"]}",
    "array-body": b"[]",
    "string-body": b'"messages"',
    "null-body": b"null",
}

INVALID_MESSAGES: dict[str, Any] = {
    "messages-missing": {},
    "messages-null": {"messages": None},
    "messages-empty": {"messages": []},
    "messages-object": {"messages": {"0": msg()}},
    "messages-string": {"messages": "x"},
    "message-not-object": {"messages": [1]},
    "topic-missing": {"messages": [msg(topicId=...)]},
    "topic-empty": {"messages": [msg(topicId="   ")]},
    "topic-number": {"messages": [msg(topicId=7)]},
    "topic-crlf": {"messages": [msg(topicId="a\r\nb")]},
    "topic-lf": {"messages": [msg(topicId="a\nb")]},
    "topic-nul": {"messages": [msg(topicId="a\x00b")]},
    "topic-del": {"messages": [msg(topicId="a\x7fb")]},
    "topic-c1": {"messages": [msg(topicId="a\x9bb")]},
    "topic-too-long": {"messages": [msg(topicId=LONG)]},
    "subject-missing": {"messages": [msg(subject=...)]},
    "subject-empty": {"messages": [msg(subject="")]},
    "subject-blank": {"messages": [msg(subject=" \t\r\n ")]},
    "subject-null": {"messages": [msg(subject=None)]},
    "subject-crlf": {"messages": [msg(subject="Hi\r\nBcc: victim@example.com")]},
    "subject-lf": {"messages": [msg(subject="Hi\nthere")]},
    "subject-cr": {"messages": [msg(subject="Hi\rthere")]},
    "subject-control": {"messages": [msg(subject="Hi\x1bthere")]},
    "subject-vertical-tab": {"messages": [msg(subject="Hi\x0bthere")]},
    "subject-nel": {"messages": [msg(subject="Hi\x85Bcc: victim@example.com")]},
    "subject-line-separator": {"messages": [msg(subject="Hi\u2028Bcc: victim@example.com")]},
    "subject-paragraph-separator": {"messages": [msg(subject="Hi\u2029there")]},
    "subject-too-long": {"messages": [msg(subject="s" * 999)]},
    "content-missing": {"messages": [msg(content=...)]},
    "content-blank": {"messages": [msg(content="\n  \t")]},
    "content-list": {"messages": [msg(content=["<p>"])]},
    "emails-missing": {"messages": [msg(emails=...)]},
    "emails-empty": {"messages": [msg(emails=[])]},
    "emails-string": {"messages": [msg(emails="a@example.com")]},
    "emails-null": {"messages": [msg(emails=None)]},
    "email-number": {"messages": [msg(emails=[5])]},
    "email-null": {"messages": [msg(emails=["a@example.com", None])]},
    "email-empty": {"messages": [msg(emails=[""])]},
    "email-invalid": {"messages": [msg(emails=["not-an-address"])]},
    "email-double-at": {"messages": [msg(emails=["a@@example.com"])]},
    "email-no-domain": {"messages": [msg(emails=["a@"])]},
    "email-crlf": {"messages": [msg(emails=["a@example.com\r\nBcc: b@example.com"])]},
    "email-lf-inside": {"messages": [msg(emails=["a\n@example.com"])]},
    "email-display-name": {"messages": [msg(emails=["Ann <a@example.com>"])]},
    "scheduled-unparsable": {"messages": [msg(scheduledAt="tomorrow")]},
    "scheduled-naive": {"messages": [msg(scheduledAt="2030-01-01T09:00:00")]},
    "scheduled-date-only": {"messages": [msg(scheduledAt="2030-01-01")]},
    "scheduled-number": {"messages": [msg(scheduledAt=1893456000)]},
    "scheduled-bad-day": {"messages": [msg(scheduledAt="2030-02-30T00:00:00Z")]},
    "scheduled-bad-offset": {"messages": [msg(scheduledAt="2030-01-01T00:00:00+25:00")]},
    "scheduled-empty": {"messages": [msg(scheduledAt="")]},
}


@pytest.mark.parametrize("body", list(INVALID_BODIES.values()), ids=list(INVALID_BODIES))
async def test_unparsable_body_is_400_and_stores_nothing(env: Env, body: bytes) -> None:
    resp = await env.post(body)
    await assert_error(resp, 400, "POST", "/v1/messages")
    assert env.counts() == EMPTY
    assert env.hooks.nudges == 0


@pytest.mark.parametrize("body", list(INVALID_MESSAGES.values()), ids=list(INVALID_MESSAGES))
async def test_invalid_message_is_400_and_stores_nothing(env: Env, body: Any) -> None:
    resp = await env.post(orjson.dumps(body))
    error = (await assert_error(resp, 400, "POST", "/v1/messages"))["error"]
    if body.get("messages") and isinstance(body["messages"], list):
        assert "messages[0]" in error  # says where
    assert env.counts() == EMPTY
    assert env.hooks.nudges == 0


@pytest.mark.parametrize("bad_at", [0, 1, 2])
async def test_one_bad_message_stores_nothing_of_the_request(env: Env, bad_at: int) -> None:
    messages = [msg(topicId=f"t{i}", emails=[f"u{i}@example.com", f"v{i}@example.com"])
                for i in range(3)]
    messages[bad_at]["emails"][1] = "broken@"
    resp = await env.post(messages)
    body = await assert_error(resp, 400, "POST", "/v1/messages")
    assert f"messages[{bad_at}].emails[1]" in body["error"]
    assert env.counts() == EMPTY
    assert env.hooks.nudges == 0


async def test_too_many_recipients(make_env: MakeEnv) -> None:
    env = await make_env(max_recipients=3)
    resp = await env.post([msg(emails=["a@example.com", "b@example.com"]),
                           msg(emails=["c@example.com", "d@example.com"])])
    assert "too many recipients" in (await assert_error(resp, 400, "POST", "/v1/messages"))["error"]
    assert env.counts() == EMPTY
    resp = await env.post([msg(emails=["a@example.com", "b@example.com"]),
                           msg(emails=["c@example.com"])])
    assert resp.status == 200
    assert (await resp.json())["count"] == 3


async def test_success_stores_each_content_once_and_clamps_past_times(env: Env) -> None:
    before = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    resp = await env.post([
        msg(topicId=" news ", subject="  Past  ", content=" <p>one</p> ",
            emails=[" a@example.com", "b@example.com", "c@example.com"],
            scheduledAt="2001-02-03T04:05:06+09:00"),
        msg(topicId="news", subject="Future", content="<p>two</p>",
            emails=["d@example.com", "e@example.com"],
            scheduledAt="2999-01-01T09:00:00.123456789+09:00"),
        msg(topicId="other", emails=["f@example.com"], scheduledAt=None),
    ])
    after = int(dt.datetime.now(dt.UTC).timestamp() * 1000) + 1
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["count"] == 6
    assert body["messages"] == 3
    assert re.fullmatch(r"\d+\.\d{3}(ms|s)", body["elapsed"])
    assert env.hooks.nudges == 1
    assert env.counts() == {**EMPTY, "contents": 3, "requests": 6}
    contents = env.rows("SELECT id, subject, html FROM contents ORDER BY id")
    # The subject (a header) is trimmed; the HTML and the topic id are kept as given.
    assert [(s, h) for _, s, h in contents] == [("Past", " <p>one</p> "),
                                                ("Future", "<p>two</p>"), ("Hello", "<p>Hi</p>")]
    rows = env.rows("SELECT topic_id, email, content_id, scheduled_at, status FROM requests "
                    "ORDER BY id")
    assert [r[1] for r in rows] == [f"{c}@example.com" for c in "abcdef"]
    assert [r[0] for r in rows] == [" news "] * 3 + ["news"] * 2 + ["other"]
    assert [r[2] for r in rows] == [contents[0][0]] * 3 + [contents[1][0]] * 2 + [contents[2][0]]
    assert all(r[4] == 0 for r in rows)
    for r in rows[:3] + rows[5:]:  # past and absent scheduledAt: now, never dropped
        assert before <= r[3] <= after
    future = dt.datetime(2999, 1, 1, tzinfo=dt.UTC).timestamp() * 1000 + 123
    assert [r[3] for r in rows[3:5]] == [int(future)] * 2


async def test_body_just_under_the_limit_is_accepted(make_env: MakeEnv) -> None:
    env = await make_env(max_request_mb=0.001)  # 1048 bytes
    body = orjson.dumps({"messages": [msg(content="x" * 900)]})
    assert len(body) < env.settings.max_request_bytes
    resp = await env.post(body)
    assert resp.status == 200, await resp.text()
    assert env.counts()["requests"] == 1


async def test_body_over_the_limit_is_413(make_env: MakeEnv) -> None:
    env = await make_env(max_request_mb=0.001)
    body = orjson.dumps({"messages": [msg(content="x" * 5000)]})
    resp = await env.post(body)
    assert resp.request_info.headers.get("Content-Length") == str(len(body))
    await assert_error(resp, 413, "POST", "/v1/messages")
    assert env.counts() == EMPTY

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"messages": [{"topicId": "t", "emails": ["a@example.com"], "subject": "s", '
        for _ in range(20):
            yield b'"content": "' + b"x" * 200 + b'", '
        yield b'"content": "c"}]}'

    resp = await env.client.post("/v1/messages", data=chunks(), headers=AUTH)
    assert "Content-Length" not in resp.request_info.headers
    await assert_error(resp, 413, "POST", "/v1/messages")
    assert env.counts() == EMPTY
    assert env.hooks.nudges == 0
    # The service still answers on afterwards.
    assert (await env.post([msg()])).status == 200


# ------------------------------------------------------------------------------------- auth

KEYED_ROUTES = [
    ("POST", "/v1/messages"),
    ("GET", "/v1/topics/t1"),
    ("DELETE", "/v1/topics/t1"),
    ("GET", "/v1/events/counts/sent"),
    ("GET", "/v1/suppressions"),
    ("PUT", "/v1/suppressions/x@example.com"),
    ("DELETE", "/v1/suppressions/a@example.com"),
]
BAD_KEYS = [None, "", "wrong", API_KEY + "x", API_KEY[:-1], API_KEY.upper()]


@pytest.mark.parametrize(("method", "path"), KEYED_ROUTES)
async def test_keyed_routes_refuse_missing_or_wrong_key(env: Env, method: str, path: str) -> None:
    assert (await env.post([msg()])).status == 200
    env.exec("INSERT INTO suppressions (email, reason, created_at) VALUES ('a@example.com', "
             "'manual', 0)")
    before = env.counts()
    for key in BAD_KEYS:
        headers = {} if key is None else {"x-api-key": key}
        body = orjson.dumps({"messages": [msg()]}) if method == "POST" else None
        resp = await env.client.request(method, path, headers=headers, data=body)
        await assert_error(resp, 401, method, path)
    assert env.counts() == before
    assert env.rows("SELECT status FROM requests") == [(0,)]
    assert (env.hooks.nudges, env.hooks.stops) == (1, 0)


@pytest.mark.parametrize(("method", "path"), KEYED_ROUTES)
async def test_unset_api_key_closes_keyed_routes(make_env: MakeEnv, method: str,
                                                 path: str) -> None:
    env = await make_env(api_key="")
    for key in [None, "", "anything", API_KEY]:
        headers = {} if key is None else {"x-api-key": key}
        body = orjson.dumps({"messages": [msg()]}) if method == "POST" else None
        resp = await env.client.request(method, path, headers=headers, data=body)
        await assert_error(resp, 401, method, path)
    assert env.counts() == EMPTY


async def test_open_routes_need_no_key(make_env: MakeEnv) -> None:
    env = await make_env(api_key="")
    assert (await env.client.get("/health")).status == 200
    assert (await env.client.get("/v1/events/open?requestId=1&token=x")).status == 200
    # The SNS endpoint answers on its own terms (here: no message type header).
    await assert_error(await env.client.post("/v1/events/results", data=b"{}"), 400, "POST",
                       "/v1/events/results")


# ------------------------------------------------------------------------ unknown routes/methods


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("POST", "/v1/nope", 404),
        ("GET", "/v1/topics", 404),
        ("GET", "/v1/topics/a/b", 404),
        ("PUT", "/v1/messages", 405),
        ("GET", "/v1/messages", 405),
        ("PATCH", "/v1/topics/t1", 405),
        ("GET", "/v1/events/results", 405),
        ("POST", "/health", 405),
    ],
)
async def test_unknown_route_and_wrong_method_use_the_error_shape(
        env: Env, method: str, path: str, status: int) -> None:
    resp = await env.client.request(method, path, headers=AUTH)
    await assert_error(resp, status, method, path)
    if status == 405:
        assert resp.headers.get("Allow")


# ----------------------------------------------------------------------------- Idempotency-Key


async def test_idempotent_replay_creates_nothing_twice(env: Env) -> None:
    body = orjson.dumps({"messages": [msg(emails=["a@example.com", "b@example.com"])]})
    headers = {"Idempotency-Key": "batch-1"}
    first = await env.post(body, headers)
    assert first.status == 200
    assert "Idempotent-Replayed" not in first.headers
    expected = await first.json()
    for _ in range(2):
        again = await env.post(body, headers)
        assert again.status == 200
        assert again.headers.get("Idempotent-Replayed") == "true"
        replay = await again.json()
        assert (replay["count"], replay["messages"]) == (expected["count"], expected["messages"])
    assert env.counts() == {**EMPTY, "contents": 1, "requests": 2, "idempotency": 1}
    assert env.hooks.nudges == 1

    other = orjson.dumps({"messages": [msg(emails=["c@example.com"])]})
    await assert_error(await env.post(other, headers), 409, "POST", "/v1/messages")
    assert env.counts() == {**EMPTY, "contents": 1, "requests": 2, "idempotency": 1}
    # Without the key the same body is a new request.
    assert (await env.post(body)).status == 200
    assert env.counts()["requests"] == 4


async def test_idempotency_key_of_a_refused_request_stays_free(env: Env) -> None:
    headers = {"Idempotency-Key": "k1"}
    await assert_error(await env.post([msg(emails=[])], headers), 400, "POST", "/v1/messages")
    assert env.counts() == EMPTY
    resp = await env.post([msg()], headers)
    assert resp.status == 200
    assert "Idempotent-Replayed" not in resp.headers


@pytest.mark.parametrize("key", ["", "x" * 201])
async def test_bad_idempotency_key_is_400(env: Env, key: str) -> None:
    await assert_error(await env.post([msg()], {"Idempotency-Key": key}), 400, "POST",
                       "/v1/messages")
    assert env.counts() == EMPTY


async def test_concurrent_identical_requests_create_once(env: Env) -> None:
    body = orjson.dumps({"messages": [msg(emails=["a@example.com", "b@example.com"])]})
    responses = await asyncio.gather(*(env.post(body, {"Idempotency-Key": "race"})
                                       for _ in range(8)))
    assert [r.status for r in responses] == [200] * 8
    bodies = [await r.json() for r in responses]
    assert {b["count"] for b in bodies} == {2}
    fresh = [r for r in responses if "Idempotent-Replayed" not in r.headers]
    assert len(fresh) == 1
    assert env.counts() == {**EMPTY, "contents": 1, "requests": 2, "idempotency": 1}


# ------------------------------------------------------------------------------------- topics


async def test_unknown_topic_answers_zeros(env: Env) -> None:
    resp = await env.client.get("/v1/topics/nothing-here", headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {
        "request": {"total": 0, "created": 0, "processing": 0, "sent": 0, "failed": 0,
                    "stopped": 0},
        "result": {"statuses": {}},
    }


async def test_topic_counts_and_stop(env: Env) -> None:
    emails = [f"u{i}@example.com" for i in range(7)]
    assert (await env.post([msg(topicId="t1", emails=emails),
                            msg(topicId="t2", emails=["z@example.com"])])).status == 200
    ids = env.request_ids("t1")
    # 0, 1: created; 2, 3: processing; 4: sent; 5: failed; 6: stopped
    for status, rid in zip([0, 0, 1, 1, 2, 3, 4], ids, strict=True):
        env.exec("UPDATE requests SET status = ? WHERE id = ?", status, rid)
    for rid, status in [(ids[4], "Delivery"), (ids[4], "Delivery"), (ids[4], "Open"),
                        (ids[5], "Bounce"), (ids[0], "Open"), (env.request_ids("t2")[0], "Open")]:
        env.exec("INSERT INTO results (request_id, status, created_at) VALUES (?, ?, 0)",
                 rid, status)
    resp = await env.client.get("/v1/topics/t1", headers=AUTH)
    assert await resp.json() == {
        "request": {"total": 7, "created": 2, "processing": 2, "sent": 1, "failed": 1,
                    "stopped": 1},
        "result": {"statuses": {"Delivery": 1, "Open": 2, "Bounce": 1}},
    }

    resp = await env.client.delete("/v1/topics/t1", headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {"count": 4}
    assert env.hooks.stops == 1
    assert [r[0] for r in env.rows("SELECT status FROM requests WHERE topic_id = 't1' "
                                   "ORDER BY id")] == [4, 4, 4, 4, 2, 3, 4]
    assert env.rows("SELECT status FROM requests WHERE topic_id = 't2'") == [(0,)]
    stats = await (await env.client.get("/v1/topics/t1", headers=AUTH)).json()
    assert stats["request"] == {"total": 7, "created": 0, "processing": 0, "sent": 1,
                                "failed": 1, "stopped": 5}

    resp = await env.client.delete("/v1/topics/t1", headers=AUTH)
    assert await resp.json() == {"count": 0}
    assert env.hooks.stops == 1
    assert await (await env.client.delete("/v1/topics/never", headers=AUTH)).json() == {"count": 0}


async def test_topic_id_with_spaces_and_unicode_in_the_path(env: Env) -> None:
    topic = "news letter \u00fc #1?"
    assert (await env.post([msg(topicId=topic)])).status == 200
    path = "/v1/topics/news%20letter%20%C3%BC%20%231%3F"
    stats = await (await env.client.get(path, headers=AUTH)).json()
    assert stats["request"]["total"] == 1
    assert await (await env.client.delete(path, headers=AUTH)).json() == {"count": 1}


# ------------------------------------------------------------------------------- counts/sent


async def test_counts_sent_windows(env: Env) -> None:
    assert (await env.post([msg(emails=[f"u{i}@example.com" for i in range(5)])])).status == 200
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    hour = 3_600_000
    for rid, ago in zip(env.request_ids(), [0.5, 2, 100, 200, None], strict=True):
        if ago is not None:
            env.exec("UPDATE requests SET status = 2, sent_at = ? WHERE id = ?",
                     now - int(ago * hour), rid)
    for query, hours, count in [("?hours=1", 1, 1), ("", 24, 2), ("?hours=24", 24, 2),
                                ("?hours=168", 168, 3), ("?hours=100", 100, 2)]:
        resp = await env.client.get(f"/v1/events/counts/sent{query}", headers=AUTH)
        assert resp.status == 200
        body = await resp.json()
        assert (body["count"], body["hours"]) == (count, hours), query
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["since"])
        since = dt.datetime.fromisoformat(body["since"])
        expected = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)
        assert abs((since - expected).total_seconds()) < 5


@pytest.mark.parametrize("hours", ["0", "169", "abc", "1.5", "-1", "", " 24", "1e2", "0x10",
                                   "9" * 50, "\u0661"])
async def test_counts_sent_rejects_other_hours(env: Env, hours: str) -> None:
    resp = await env.client.get("/v1/events/counts/sent", params={"hours": hours}, headers=AUTH)
    await assert_error(resp, 400, "GET", "/v1/events/counts/sent")


# ---------------------------------------------------------------------------- tracking pixel


async def assert_pixel(resp: Any) -> None:
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    assert resp.headers["Pragma"] == "no-cache"
    assert resp.headers["Expires"] == "0"
    assert await resp.read() == tracking.PIXEL_PNG


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?requestId=1",
        "?token=AAAAAAAAAAAAAAAAAAAAAA",
        "?requestId=abc&token=xyz",
        "?requestId=%ff%fe&token=%zz",
        "?requestId=-1&token=AAAAAAAAAAAAAAAAAAAAAA",
        "?requestId=1&requestId=2&token=",
        "?requestId=" + "9" * 5000 + "&token=AAAAAAAAAAAAAAAAAAAAAA",
        "?requestId=1&token=" + "A" * 5000,
        "?requestId=1&token=%00%0d%0a",
        "?requestId=%F0%9F%98%80&token=%E2%82%AC" * 3,
    ],
)
async def test_pixel_always_answers_the_png(env: Env, query: str) -> None:
    assert (await env.post([msg()])).status == 200
    await assert_pixel(await env.client.get(f"/v1/events/open{query}"))
    assert env.counts()["results"] == 0


async def test_genuine_pixel_records_one_open(env: Env) -> None:
    assert (await env.post([msg(emails=["a@example.com", "b@example.com"])])).status == 200
    first, second = env.request_ids()
    key = env.rows("SELECT value FROM settings WHERE key = 'tracking_key'")[0][0]
    token = tracking.make_token(key, first)
    # forgeries first: nothing recorded
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    for query in [f"requestId={first}&token={forged}",
                  f"requestId={second}&token={token}",  # a real token moved to another id
                  f"requestId=0{first}&token={token}",  # another spelling of the id
                  f"requestId={first}&token={tracking.make_token('other-key-xxxxxxxx', first)}"]:
        await assert_pixel(await env.client.get(f"/v1/events/open?{query}"))
    assert env.counts()["results"] == 0

    await assert_pixel(await env.client.get(f"/v1/events/open?requestId={first}&token={token}"))
    assert env.rows("SELECT request_id, status FROM results") == [(first, "Open")]
    stats = await (await env.client.get("/v1/topics/t1", headers=AUTH)).json()
    assert stats["result"]["statuses"] == {"Open": 1}
    # The URL the sender builds works as-is.
    url = tracking.pixel_url("http://x", key, second)
    await assert_pixel(await env.client.get(url.removeprefix("http://x")))
    assert env.rows("SELECT request_id FROM results ORDER BY id") == [(first,), (second,)]


async def test_pixel_uses_the_configured_key_and_ignores_unknown_requests(
        make_env: MakeEnv) -> None:
    env = await make_env(tracking_key="configured-key-0123456789")
    assert (await env.post([msg()])).status == 200
    (rid,) = env.request_ids()
    token = tracking.make_token("configured-key-0123456789", rid)
    await assert_pixel(await env.client.get(f"/v1/events/open?requestId={rid}&token={token}"))
    assert env.rows("SELECT request_id, status FROM results") == [(rid, "Open")]
    missing = rid + 100  # a genuine signature for a request that does not exist
    token = tracking.make_token("configured-key-0123456789", missing)
    await assert_pixel(await env.client.get(f"/v1/events/open?requestId={missing}&token={token}"))
    assert env.counts()["results"] == 1


# -------------------------------------------------------------------------------------- SNS


@pytest.fixture(scope="module")
def sns_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def sns_cert(sns_key: rsa.RSAPrivateKey) -> bytes:
    now = dt.datetime.now(dt.UTC)
    return _make_cert(sns_key, not_before=now - dt.timedelta(days=1),
                      not_after=now + dt.timedelta(days=30))


@dataclass
class CertServer:
    server: TestServer
    hits: list[str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def pattern(self) -> str:
        return rf"^http://127\.0\.0\.1:{self.server.port}/"

    @property
    def cert_url(self) -> str:
        return f"{self.base}/SimpleNotificationService-test.pem"


@pytest.fixture
async def cert_server(aiohttp_server, sns_cert: bytes) -> CertServer:
    hits: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(request.path_qs)
        if request.path.startswith("/redirect/"):
            raise web.HTTPFound("/SimpleNotificationService-test.pem")
        if request.path.endswith(".pem") and not request.path.startswith("/missing/"):
            return web.Response(body=sns_cert, content_type="application/x-pem-file")
        if request.path == "/confirm":
            return web.Response(text="<ConfirmSubscriptionResponse/>")
        return web.Response(status=404 if request.path.startswith("/missing/") else 500)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    return CertServer(server, hits)


@pytest.fixture
async def sns_env(make_env: MakeEnv, cert_server: CertServer) -> Env:
    env = await make_env(sns_cert_url_pattern=cert_server.pattern)
    env.cert_hits = cert_server.hits
    return env


def fixture_text(name: str, request_id: int | None = None) -> str:
    text = (FIXTURES / name).read_text()
    if request_id is None:
        return text
    data = json.loads(text)
    data["mail"].setdefault("headers", []).append({"name": "X-Request-ID",
                                                   "value": str(request_id)})
    return json.dumps(data)


def signed_notification(key: rsa.RSAPrivateKey, cert_url: str, message: str, *,
                        version: str = "1", message_id: str = "msg-1", **kwargs: Any
                        ) -> dict[str, Any]:
    return sign({**notification(message=message), "MessageId": message_id}, key, version,
                cert_url=cert_url, **kwargs)


async def post_sns(env: Env, message: dict[str, Any] | bytes, kind: str | None = None) -> Any:
    """POST as SNS does; the type header is the message's own Type unless `kind` is given."""
    if kind is None:
        assert isinstance(message, dict)
        kind = message["Type"]
    headers = {"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": kind}
    data = message if isinstance(message, bytes) else orjson.dumps(message)
    return await env.client.post("/v1/events/results", data=data, headers=headers)


async def new_request(env: Env, email: str = "a@example.com") -> int:
    assert (await env.post([msg(emails=[email])])).status == 200
    return env.request_ids()[-1]


@pytest.mark.parametrize("kind", [None, "", "Bogus", "notification"])
async def test_sns_requires_a_known_message_type(sns_env: Env, cert_server: CertServer, sns_key,
                                                 kind: str | None) -> None:
    message = signed_notification(sns_key, cert_server.cert_url, fixture_text("event-send.json"))
    headers = {} if kind is None else {"x-amz-sns-message-type": kind}
    resp = await sns_env.client.post("/v1/events/results", data=orjson.dumps(message),
                                     headers=headers)
    await assert_error(resp, 400, "POST", "/v1/events/results")
    assert sns_env.counts() == EMPTY
    assert sns_env.cert_hits == []


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_genuine_notification_is_stored_and_matched(
        sns_env: Env, cert_server: CertServer, sns_key, name: str, version: str) -> None:
    event_type, message_id, _, suppress = EXPECTED[name]
    other = await new_request(sns_env, "other@example.com")
    rid = await new_request(sns_env)
    if version == "1":  # matched by our X-Request-ID mail header
        text = fixture_text(name, rid)
        sns_env.exec("UPDATE requests SET message_id = ? WHERE id = ?", message_id, other)
    else:  # matched by SES mail.messageId
        text = fixture_text(name)
        sns_env.exec("UPDATE requests SET message_id = ? WHERE id = ?", message_id, rid)
    # Requests the sender holds (processing) for a suppressed address are stopped at once;
    # created ones are left to the scheduler's claim, which skips suppressed addresses.
    suppressed = [email for email, _ in suppress]
    held = {email: await new_request(sns_env, email.upper()) for email in suppressed}
    waiting = [await new_request(sns_env, email) for email in suppressed]
    bystander = await new_request(sns_env, "bystander@example.com")
    sns_env.exec("UPDATE requests SET status = 1 WHERE id IN (SELECT value FROM json_each(?))",
                 json.dumps([*held.values(), bystander]))
    message = signed_notification(sns_key, cert_server.cert_url, text, version=version,
                                  message_id=f"sns-{name}-{version}")
    resp = await post_sns(sns_env, message)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"status": "stored", "requestId": rid}
    for email, reason in suppress:
        assert sns_env.rows("SELECT status, error FROM requests WHERE id = ?", held[email]) == [
            (4, f"suppressed: {reason}")]
    assert all(sns_env.rows("SELECT status FROM requests WHERE id = ?", i) == [(0,)]
               for i in waiting)
    assert sns_env.rows("SELECT status FROM requests WHERE id = ?", bystander) == [(1,)]
    assert sns_env.rows("SELECT request_id, status, raw, sns_message_id FROM results") == [
        (rid, event_type, text, f"sns-{name}-{version}")]
    assert json.loads(sns_env.rows("SELECT raw FROM results")[0][0]) == json.loads(text)
    assert cert_server.hits == ["/SimpleNotificationService-test.pem"]

    listed = await (await sns_env.client.get("/v1/suppressions", headers=AUTH)).json()
    assert [(s["email"], s["reason"]) for s in listed["suppressions"]] == sorted(suppress)
    assert all(s["event"] == f"sns-{name}-{version}" for s in listed["suppressions"])
    assert sns_env.hooks.stops == (1 if suppress else 0)
    stats = await (await sns_env.client.get("/v1/topics/t1", headers=AUTH)).json()
    assert stats["result"]["statuses"] == {event_type: 1}


async def test_request_header_wins_over_message_id_and_unmatched_is_kept(
        sns_env: Env, cert_server: CertServer, sns_key) -> None:
    by_header = await new_request(sns_env)
    by_message_id = await new_request(sns_env, "b@example.com")
    _, message_id, _, _ = EXPECTED["event-delivery.json"]
    sns_env.exec("UPDATE requests SET message_id = ? WHERE id = ?", message_id, by_message_id)
    text = fixture_text("event-delivery.json", by_header)
    resp = await post_sns(sns_env, signed_notification(sns_key, cert_server.cert_url, text))
    assert (await resp.json())["requestId"] == by_header
    # An X-Request-ID naming no request falls back to the message id.
    text = fixture_text("event-delivery.json", 999_999)
    resp = await post_sns(sns_env, signed_notification(sns_key, cert_server.cert_url, text,
                                                       message_id="msg-2"))
    assert (await resp.json())["requestId"] == by_message_id
    # Nothing matches: still stored (raw kept for the operator), with no request.
    text = fixture_text("notification-delivery.json")
    resp = await post_sns(sns_env, signed_notification(sns_key, cert_server.cert_url, text,
                                                       message_id="msg-3"))
    assert await resp.json() == {"status": "stored", "requestId": None}
    assert sns_env.rows("SELECT request_id, sns_message_id FROM results ORDER BY id") == [
        (by_header, "msg-1"), (by_message_id, "msg-2"), (None, "msg-3")]
    # One certificate fetch for all three: cached.
    assert cert_server.hits == ["/SimpleNotificationService-test.pem"]


async def test_repeated_sns_message_is_stored_once(sns_env: Env, cert_server: CertServer,
                                                   sns_key) -> None:
    rid = await new_request(sns_env, "recipient@example.com")
    text = fixture_text("event-bounce.json", rid)
    message = signed_notification(sns_key, cert_server.cert_url, text, version="2")
    first = await post_sns(sns_env, message)
    assert (await first.json())["status"] == "stored"
    for _ in range(3):
        again = await post_sns(sns_env, message)
        assert again.status == 200
        assert await again.json() == {"status": "duplicate", "requestId": rid}
    assert sns_env.counts() == {**EMPTY, "contents": 1, "requests": 1, "results": 1,
                                "suppressions": 1}
    assert sns_env.hooks.stops == 0  # nothing was held for the address


async def test_allowed_topic_list(make_env: MakeEnv, cert_server: CertServer, sns_key) -> None:
    env = await make_env(sns_cert_url_pattern=cert_server.pattern,
                         sns_topic_arns=frozenset({TOPIC}))
    message = signed_notification(sns_key, cert_server.cert_url, fixture_text("event-send.json"))
    assert (await post_sns(env, message)).status == 200
    assert env.counts()["results"] == 1


def _other_key_message(cert_url: str) -> dict[str, Any]:
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return signed_notification(other, cert_url, fixture_text("event-send.json"))


@pytest.mark.parametrize(
    "forge",
    [
        "tampered-message",
        "tampered-message-id",
        "unsigned",
        "no-signature",
        "bad-base64",
        "version-3",
        "version-missing",
        "version-2-signed-sha1",
        "foreign-cert-host",
        "localhost-not-allowed",
        "cert-url-with-userinfo",
        "other-key",
        "header-type-mismatch",
        "not-json",
        "not-an-object",
        "disallowed-topic",
    ],
)
async def test_unverifiable_notification_is_403_and_stores_nothing(
        make_env: MakeEnv, cert_server: CertServer, sns_key, forge: str) -> None:
    overrides: dict[str, Any] = {"sns_cert_url_pattern": cert_server.pattern}
    if forge == "disallowed-topic":
        overrides["sns_topic_arns"] = frozenset({"arn:aws:sns:us-east-1:123456789012:other"})
    env = await make_env(**overrides)
    rid = await new_request(env, "recipient@example.com")
    url = cert_server.cert_url
    bounce = fixture_text("event-bounce.json", rid)
    good = signed_notification(sns_key, url, fixture_text("event-delivery.json", rid))
    kind: str | None = None
    body: dict[str, Any] | bytes
    fetched = True
    if forge == "tampered-message":
        body = {**good, "Message": bounce}
    elif forge == "tampered-message-id":
        body = {**good, "MessageId": "other"}
    elif forge == "unsigned":
        body = {k: v for k, v in good.items()
                if k not in ("Signature", "SignatureVersion", "SigningCertURL")}
        fetched = False
    elif forge == "no-signature":
        body = {k: v for k, v in good.items() if k != "Signature"}
        fetched = False
    elif forge == "bad-base64":
        body = {**good, "Signature": "!!not base64!!"}
        fetched = False
    elif forge == "version-3":
        body = {**good, "SignatureVersion": "3"}
        fetched = False
    elif forge == "version-missing":
        body = {k: v for k, v in good.items() if k != "SignatureVersion"}
        fetched = False
    elif forge == "version-2-signed-sha1":
        body = signed_notification(sns_key, url, bounce, version="2", digest=hashes.SHA1())
    elif forge == "foreign-cert-host":
        body = signed_notification(sns_key, "http://evil.example/cert.pem", bounce)
        fetched = False
    elif forge == "localhost-not-allowed":
        body = signed_notification(sns_key, url.replace("127.0.0.1", "localhost"), bounce)
        fetched = False
    elif forge == "cert-url-with-userinfo":
        body = signed_notification(sns_key, f"{cert_server.base}@evil.example/cert.pem", bounce)
        fetched = False
    elif forge == "other-key":
        body = _other_key_message(url)
    elif forge == "header-type-mismatch":
        body, kind = good, "SubscriptionConfirmation"
        fetched = False
    elif forge == "not-json":
        body, kind = b"{not json", "Notification"
        fetched = False
    elif forge == "not-an-object":
        body, kind = b"[1, 2]", "Notification"
        fetched = False
    else:
        body = signed_notification(sns_key, url, bounce)
        fetched = False
    before = env.counts()
    resp = await post_sns(env, body, kind=kind)
    await assert_error(resp, 403, "POST", "/v1/events/results")
    assert env.counts() == before
    assert env.hooks.stops == 0
    assert cert_server.hits == (["/SimpleNotificationService-test.pem"] if fetched else [])


@pytest.mark.parametrize("version", ["1", "2"])
async def test_subscription_is_confirmed_by_one_get(sns_env: Env, cert_server: CertServer,
                                                   sns_key, version: str) -> None:
    confirm = f"{cert_server.base}/confirm?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=x"
    message = sign({**subscription(), "SubscribeURL": confirm}, sns_key, version,
                   cert_url=cert_server.cert_url)
    resp = await post_sns(sns_env, message)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "confirmed"
    confirms = [h for h in cert_server.hits if h.startswith("/confirm")]
    assert confirms == [confirm.removeprefix(cert_server.base)]
    assert sns_env.counts() == EMPTY


async def test_unsubscribe_confirmation_fetches_nothing(sns_env: Env, cert_server: CertServer,
                                                       sns_key) -> None:
    message = sign({**subscription("UnsubscribeConfirmation"),
                    "SubscribeURL": f"{cert_server.base}/confirm?Action=ConfirmSubscription"},
                   sns_key, cert_url=cert_server.cert_url)
    resp = await post_sns(sns_env, message)
    assert resp.status == 200
    assert cert_server.hits == ["/SimpleNotificationService-test.pem"]
    assert sns_env.counts() == EMPTY


@pytest.mark.parametrize("where", ["foreign-host", "tampered", "userinfo"])
async def test_subscribe_url_elsewhere_is_refused_unfetched(
        sns_env: Env, cert_server: CertServer, sns_key, where: str) -> None:
    local = f"{cert_server.base}/confirm?Action=ConfirmSubscription"
    if where == "foreign-host":
        message = sign({**subscription(), "SubscribeURL": "http://evil.example/confirm?x=1"},
                       sns_key, cert_url=cert_server.cert_url)
    elif where == "userinfo":
        message = sign({**subscription(),
                        "SubscribeURL": f"{cert_server.base}@evil.example/confirm?x=1"},
                       sns_key, cert_url=cert_server.cert_url)
    else:
        message = sign({**subscription(), "SubscribeURL": local}, sns_key,
                       cert_url=cert_server.cert_url)
        message["SubscribeURL"] = local + "&extra=1"
    resp = await post_sns(sns_env, message)
    await assert_error(resp, 403, "POST", "/v1/events/results")
    assert not [h for h in cert_server.hits if h.startswith("/confirm")]


async def test_subscribe_url_failing_is_an_error(sns_env: Env, cert_server: CertServer,
                                                 sns_key) -> None:
    message = sign({**subscription(), "SubscribeURL": f"{cert_server.base}/broken?x=1"},
                   sns_key, cert_url=cert_server.cert_url)
    resp = await post_sns(sns_env, message)
    body = await assert_error(resp, 502, "POST", "/v1/events/results")
    assert "500" in body["error"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_certificate_server_down_is_503(make_env: MakeEnv, sns_key) -> None:
    port = _closed_port()
    env = await make_env(sns_cert_url_pattern=rf"^http://127\.0\.0\.1:{port}/")
    rid = await new_request(env, "recipient@example.com")
    message = signed_notification(sns_key, f"http://127.0.0.1:{port}/cert.pem",
                                  fixture_text("event-bounce.json", rid))
    resp = await post_sns(env, message)
    await assert_error(resp, 503, "POST", "/v1/events/results")
    assert env.counts() == {**EMPTY, "contents": 1, "requests": 1}
    assert env.hooks.stops == 0


async def test_certificate_not_found_is_503(sns_env: Env, cert_server: CertServer,
                                            sns_key) -> None:
    message = signed_notification(sns_key, f"{cert_server.base}/missing/cert.pem",
                                  fixture_text("event-send.json"))
    resp = await post_sns(sns_env, message)
    await assert_error(resp, 503, "POST", "/v1/events/results")
    assert sns_env.counts() == EMPTY
    assert cert_server.hits == ["/missing/cert.pem"]


# ------------------------------------------------------------------------------ suppressions


async def test_suppression_list_add_page_remove(env: Env) -> None:
    listed = await (await env.client.get("/v1/suppressions", headers=AUTH)).json()
    assert listed == {"suppressions": [], "next": None}

    resp = await env.client.put("/v1/suppressions/c@example.com", headers=AUTH,
                                json={"reason": " asked to stop "})
    assert resp.status == 200
    assert await resp.json() == {"email": "c@example.com", "reason": "asked to stop"}
    for email in ["a@example.com", "b@example.com", "d@example.com", "e@example.com"]:
        resp = await env.client.put(f"/v1/suppressions/{email}", headers=AUTH)
        assert await resp.json() == {"email": email, "reason": "manual"}
    assert env.counts()["suppressions"] == 5
    assert env.rows("SELECT reason FROM suppressions WHERE email = 'c@example.com'") == [
        ("asked to stop",)]

    seen: list[str] = []
    after = ""
    pages = 0
    while True:
        resp = await env.client.get("/v1/suppressions", headers=AUTH,
                                    params={"limit": "2", "after": after})
        assert resp.status == 200
        page = await resp.json()
        pages += 1
        assert len(page["suppressions"]) <= 2
        seen += [s["email"] for s in page["suppressions"]]
        if page["next"] is None:
            break
        assert page["next"] == page["suppressions"][-1]["email"]
        after = page["next"]
    assert seen == ["a@example.com", "b@example.com", "c@example.com", "d@example.com",
                    "e@example.com"]
    assert pages == 3
    first = (await (await env.client.get("/v1/suppressions?limit=1", headers=AUTH)).json())
    assert set(first["suppressions"][0]) == {"email", "reason", "event", "createdAt"}

    resp = await env.client.delete("/v1/suppressions/b@example.com", headers=AUTH)
    assert resp.status == 200
    assert env.counts()["suppressions"] == 4
    resp = await env.client.delete("/v1/suppressions/b@example.com", headers=AUTH)
    await assert_error(resp, 404, "DELETE", "/v1/suppressions/b@example.com")
    # Addresses compare case-insensitively.
    resp = await env.client.delete("/v1/suppressions/A@Example.COM", headers=AUTH)
    assert resp.status == 200
    assert [r[0] for r in env.rows("SELECT email FROM suppressions ORDER BY email")] == [
        "c@example.com", "d@example.com", "e@example.com"]


@pytest.mark.parametrize("email", ["not-an-email", "a@", "a%0D%0ABcc:b@example.com", "%20"])
async def test_suppression_invalid_email_is_400(env: Env, email: str) -> None:
    resp = await env.client.put(f"/v1/suppressions/{email}", headers=AUTH)
    assert resp.status == 400
    assert set(await resp.json()) == ERROR_KEYS
    assert env.counts() == EMPTY


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"reason": 5}', b'"x"'])
async def test_suppression_invalid_body_is_400(env: Env, body: bytes) -> None:
    resp = await env.client.put("/v1/suppressions/a@example.com", headers=AUTH, data=body)
    await assert_error(resp, 400, "PUT", "/v1/suppressions/a@example.com")
    assert env.counts() == EMPTY


@pytest.mark.parametrize("limit", ["0", "1001", "abc", "-1", "1.5", "", " 5", "\u00b2",
                                   "\u0661", "1" * 5000])
async def test_suppression_list_limit_is_checked(env: Env, limit: str) -> None:
    resp = await env.client.get("/v1/suppressions", headers=AUTH, params={"limit": limit})
    await assert_error(resp, 400, "GET", "/v1/suppressions")


# ------------------------------------------------------------------------------- storage full


async def test_storage_full_is_507_and_stores_nothing(make_env: MakeEnv) -> None:
    env = await make_env(sqlite_max_pages=40)  # 160 KB with 4 KB pages
    big = [msg(content="<p>" + "x" * 300_000 + "</p>")]
    resp = await env.post(big)
    await assert_error(resp, 507, "POST", "/v1/messages")
    assert env.counts() == EMPTY
    many = [msg(topicId=f"topic-{i}", emails=[f"user{j}@example.com" for j in range(50)])
            for i in range(100)]
    resp = await env.post(many, {"Idempotency-Key": "full"})
    await assert_error(resp, 507, "POST", "/v1/messages")
    assert env.counts() == EMPTY
    assert env.hooks.nudges == 0
    # Space remains for ordinary work, and the key of the refused request is still free.
    resp = await env.post([msg(emails=["a@example.com", "b@example.com"])],
                          {"Idempotency-Key": "full"})
    assert resp.status == 200
    assert "Idempotent-Replayed" not in resp.headers
    assert env.counts() == {**EMPTY, "contents": 1, "requests": 2, "idempotency": 1}
    # The pixel still answers even if it cannot record.
    await assert_pixel(await env.client.get("/v1/events/open?requestId=1&token=x"))


# ------------------------------------------------------------------------------------- health


async def test_health_without_supervisor(env: Env) -> None:
    resp = await env.client.get("/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok"
    assert body["transport"] == "outbox"
    assert set(body["processes"]) == {"api"}
    assert body["processes"]["api"]["alive"] is True


async def test_health_reports_processes(make_env: MakeEnv) -> None:
    recorder = Recorder(processes={
        "api": {"pid": 10, "alive": True, "restarts": 0},
        "scheduler": {"pid": 11, "alive": True, "restarts": 2},
        "sender": {"pid": 12, "alive": True, "restarts": 0},
    })
    env = await make_env(recorder, email_transport="ses")
    resp = await env.client.get("/health")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "transport": "ses",
                                 "processes": recorder.processes}

    assert recorder.processes is not None
    recorder.processes["sender"] = {"pid": 0, "alive": False, "restarts": 3}
    resp = await env.client.get("/health")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "degraded"
    assert body["processes"]["sender"] == {"pid": 0, "alive": False, "restarts": 3}


async def test_transient_bounce_is_stored_without_suppressing(sns_env: Env, cert_server: CertServer,
                                                              sns_key) -> None:
    rid = await new_request(sns_env, "recipient@example.com")
    data = json.loads(fixture_text("event-bounce.json", rid))
    data["bounce"]["bounceType"] = "Transient"
    message = signed_notification(sns_key, cert_server.cert_url, json.dumps(data))
    resp = await post_sns(sns_env, message)
    assert await resp.json() == {"status": "stored", "requestId": rid}
    assert sns_env.counts()["suppressions"] == 0
    assert sns_env.hooks.stops == 0


# ------------------------------------------------------------------------------ database busy


async def test_database_busy_is_503_and_stores_nothing(make_env: MakeEnv,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sesd.store.BUSY_TIMEOUT_MS", 50)
    env = await make_env()
    env.exec("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        resp = await env.post([msg()])
        await assert_error(resp, 503, "POST", "/v1/messages")
        assert resp.headers.get("Retry-After") == "1"
    finally:
        env.exec("ROLLBACK")
    assert env.counts() == EMPTY
    assert env.hooks.nudges == 0
    assert (await env.post([msg()])).status == 200


async def test_other_bodies_over_the_limit_are_413(make_env: MakeEnv) -> None:
    env = await make_env(max_request_mb=0.001)
    resp = await env.client.put("/v1/suppressions/a@example.com", headers=AUTH,
                                json={"reason": "x" * 5000})
    await assert_error(resp, 413, "PUT", "/v1/suppressions/a@example.com")
    resp = await env.client.post("/v1/events/results", data=b"{" + b" " * 5000 + b"}",
                                 headers={"x-amz-sns-message-type": "Notification"})
    await assert_error(resp, 413, "POST", "/v1/events/results")
    assert env.counts() == EMPTY


def test_real_aws_subscribe_url_passes_the_ssrf_guard() -> None:
    """SNS's SubscribeURL has a query and no .pem: the guard must accept it under the default
    pattern (it once reused the SigningCertURL rules and refused every genuine one)."""
    from sesd.api.handlers import check_subscribe_url
    from sesd.sns import SnsVerificationError

    pattern = Settings().cert_url_re
    check_subscribe_url(
        "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
        "arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37fb687f", pattern)
    for url in ["", "http://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription",
                "https://sns.us-west-2.amazonaws.com.evil.example/?x=1",
                "https://sns.us-west-2.amazonaws.com@evil.example/?x=1",
                "https://evil.example/?u=https://sns.us-west-2.amazonaws.com/",
                "https://sns.us-west-2.amazonaws.com/?x=1 2"]:
        with pytest.raises(SnsVerificationError):
            check_subscribe_url(url, pattern)


# --------------------------------------------------------------------- added: edge behaviour


async def test_error_message_names_message_index_and_field(env: Env) -> None:
    good = msg()
    bad = msg(emails=[f"u{i}@example.com" for i in range(17)] + ["x@"])
    resp = await env.post([good, good, good, bad])
    body = await assert_error(resp, 400, "POST", "/v1/messages")
    assert body["error"] == 'messages[3].emails[17]: "x@" is not a valid e-mail address'
    assert env.counts() == EMPTY


async def test_future_only_post_still_nudges(env: Env) -> None:
    # The scheduler sleeps toward the earliest due time it knew, which may be later than this.
    assert (await env.post([msg(scheduledAt="2999-01-01T00:00:00Z")])).status == 200
    assert env.hooks.nudges == 1
    assert env.rows("SELECT status FROM requests") == [(0,)]


async def test_idempotency_race_on_insert_answers_the_winner(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two requests with one key both find nothing, then both insert: the loser's insert fails
    on the key's constraint and it answers as a replay (or 409), creating nothing."""
    body = orjson.dumps({"messages": [msg(emails=["a@example.com", "b@example.com"])]})
    headers = {"Idempotency-Key": "race"}
    assert (await env.post(body, headers)).status == 200
    real = Store.idempotent_response
    calls: list[str] = []

    def first_lookup_misses(self: Store, key: str) -> Any:
        calls.append(key)
        return None if len(calls) == 1 else real(self, key)

    monkeypatch.setattr(Store, "idempotent_response", first_lookup_misses)
    again = await env.post(body, headers)
    assert again.status == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert (await again.json())["count"] == 2
    calls.clear()
    other = orjson.dumps({"messages": [msg(emails=["c@example.com"])]})
    await assert_error(await env.post(other, headers), 409, "POST", "/v1/messages")
    assert env.counts() == {**EMPTY, "contents": 1, "requests": 2, "idempotency": 1}
    assert env.hooks.nudges == 1


async def test_oversized_answer_closes_the_connection(make_env: MakeEnv) -> None:
    env = await make_env(max_request_mb=0.001)
    resp = await env.post(orjson.dumps({"messages": [msg(content="x" * 5000)]}))
    await assert_error(resp, 413, "POST", "/v1/messages")
    assert resp.headers.get("Connection", "").lower() == "close"


async def test_api_key_with_odd_bytes_is_401_not_500(env: Env) -> None:
    for value in ["кл\u044e\u0447", "k" * 19 + "\u00e9", API_KEY + "\u00ff"]:
        resp = await env.client.get("/v1/topics/t1", headers={"x-api-key": value})
        await assert_error(resp, 401, "GET", "/v1/topics/t1")
    # Bytes that are not UTF-8 at all reach the server only over a raw socket.
    reader, writer = await asyncio.open_connection(env.client.host, env.client.port)
    writer.write(b"GET /v1/topics/t1 HTTP/1.1\r\nHost: x\r\nx-api-key: \xff\xfe" +
                 API_KEY.encode() + b"\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]


async def test_unexpected_error_is_a_logged_500_without_details(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[BaseException] = []
    monkeypatch.setattr("sesd.telemetry.capture", reported.append)

    def broken(self: Store, topic_id: str) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(Store, "topic_stats", broken)
    with structlog.testing.capture_logs(MERGE) as logs:
        resp = await env.client.get("/v1/topics/t1", headers=AUTH)
    body = await assert_error(resp, 500, "GET", "/v1/topics/t1")
    assert "secret" not in body["error"] and "Traceback" not in body["error"]
    assert [type(e) for e in reported] == [RuntimeError]
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["path"] == "/v1/topics/t1"
    assert len(errors[0]["http_request_id"]) == 32


async def test_each_5xx_logs_one_line_and_other_answers_none(
        make_env: MakeEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sesd.store.BUSY_TIMEOUT_MS", 50)
    env = await make_env()
    with structlog.testing.capture_logs(MERGE) as logs:
        assert (await env.post([msg()])).status == 200
        assert (await env.client.get("/nope")).status == 404
        env.exec("BEGIN IMMEDIATE")
        try:
            assert (await env.post([msg()])).status == 503
        finally:
            env.exec("ROLLBACK")
    assert [(e["event"], e["status"]) for e in logs] == [("request failed", 503)]
    assert len(logs[0]["http_request_id"]) == 32


async def test_pixel_answers_even_when_the_database_fails(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await env.post([msg()])).status == 200
    (rid,) = env.request_ids()
    key = env.rows("SELECT value FROM settings WHERE key = 'tracking_key'")[0][0]

    def busy(self: Store, request_id: int) -> bool:
        raise apsw.BusyError("database is locked")

    monkeypatch.setattr(Store, "record_open", busy)
    resp = await env.client.get(f"/v1/events/open?requestId={rid}&"
                                f"token={tracking.make_token(key, rid)}")
    await assert_pixel(resp)
    assert env.counts()["results"] == 0


async def test_put_suppression_stops_what_the_sender_holds(env: Env) -> None:
    emails = ["a@example.com", "b@example.com", "A@EXAMPLE.COM"]
    assert (await env.post([msg(emails=emails)])).status == 200
    held_a, held_b, held_upper = env.request_ids()
    env.exec("UPDATE requests SET status = 1")
    resp = await env.client.put("/v1/suppressions/a@example.com", headers=AUTH,
                                json={"reason": "asked"})
    assert resp.status == 200
    assert env.hooks.stops == 1
    assert env.rows("SELECT id, status, error FROM requests ORDER BY id") == [
        (held_a, 4, "suppressed: asked"), (held_b, 1, None), (held_upper, 4, "suppressed: asked")]
    # Nothing held for it: no call.
    assert (await env.client.put("/v1/suppressions/c@example.com", headers=AUTH)).status == 200
    assert env.hooks.stops == 1
    resp = await env.client.delete("/v1/suppressions/%20a@example.com%20", headers=AUTH)
    assert await resp.json() == {"removed": True}


async def test_storage_full_then_more_room(make_env: MakeEnv, tmp_path) -> None:
    env = await make_env(sqlite_max_pages=40)
    big = [msg(content="<p>" + "x" * 300_000 + "</p>")]
    await assert_error(await env.post(big, {"Idempotency-Key": "big"}), 507, "POST",
                       "/v1/messages")
    assert env.counts() == EMPTY
    # The operator raises the limit (frees disk): the same request now goes in, once.
    roomy = await make_env(sqlite_max_pages=0)
    resp = await roomy.post(big, {"Idempotency-Key": "big"})
    assert resp.status == 200, await resp.text()
    assert roomy.counts() == {**EMPTY, "contents": 1, "requests": 1, "idempotency": 1}


@pytest.mark.parametrize("text", ['{"notificationType": "AmazonSnsSubscriptionSucceeded", '
                                  '"message": "ok"}', '{"hello": "world"}', "not json"])
async def test_signed_notification_that_is_no_ses_event_is_acknowledged(
        sns_env: Env, cert_server: CertServer, sns_key, text: str) -> None:
    resp = await post_sns(sns_env, signed_notification(sns_key, cert_server.cert_url, text))
    assert resp.status == 200
    assert await resp.json() == {"status": "ignored"}
    assert sns_env.counts() == EMPTY


async def test_store_failure_on_a_notification_is_503(
        sns_env: Env, cert_server: CertServer, sns_key, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: Store, **kwargs: Any) -> bool:
        raise StorageFullError("the database is full")

    monkeypatch.setattr(Store, "record_result", full)
    message = signed_notification(sns_key, cert_server.cert_url, fixture_text("event-bounce.json"))
    await assert_error(await post_sns(sns_env, message), 503, "POST", "/v1/events/results")
    assert sns_env.counts() == EMPTY
    assert sns_env.hooks.stops == 0


async def test_certificates_are_cached_in_a_bounded_map(
        sns_env: Env, cert_server: CertServer, sns_key, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sesd.api.handlers.CERT_CACHE_SIZE", 2)
    urls = [f"{cert_server.base}/c{i}.pem" for i in range(3)] + [f"{cert_server.base}/c0.pem"]
    for i, url in enumerate(urls):
        message = signed_notification(sns_key, url, fixture_text("event-send.json"),
                                      message_id=f"m{i}")
        assert (await post_sns(sns_env, message)).status == 200
    # c0 was dropped when c2 came in, so it is fetched again.
    assert cert_server.hits == ["/c0.pem", "/c1.pem", "/c2.pem", "/c0.pem"]
    assert sns_env.counts()["results"] == 4


async def test_certificate_redirect_is_not_followed(sns_env: Env, cert_server: CertServer,
                                                    sns_key) -> None:
    url = f"{cert_server.base}/redirect/cert.pem"
    message = signed_notification(sns_key, url, fixture_text("event-send.json"))
    await assert_error(await post_sns(sns_env, message), 503, "POST", "/v1/events/results")
    assert cert_server.hits == ["/redirect/cert.pem"]
    assert sns_env.counts() == EMPTY
