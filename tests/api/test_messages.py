"""POST /v1/messages: validation, all-or-nothing storage, limits, idempotency."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from sesd.store import Store
from tests.api.helpers import AUTH, EMPTY, Env, MakeEnv, assert_error, msg

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
    assert body["error"] == (f'messages[{bad_at}].emails[1]: "broken@" is not a valid e-mail '
                             'address')
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


async def test_future_only_post_still_nudges(env: Env) -> None:
    # The scheduler sleeps toward the earliest due time it knew, which may be later than this.
    assert (await env.post([msg(scheduledAt="2999-01-01T00:00:00Z")])).status == 200
    assert env.hooks.nudges == 1
    assert env.rows("SELECT status FROM requests") == [(0,)]


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
    assert resp.headers.get("Connection", "").lower() == "close"  # not read on to reuse it
    assert env.counts() == EMPTY
    resp = await env.client.put("/v1/suppressions/a@example.com", headers=AUTH,
                                json={"reason": "x" * 5000})
    await assert_error(resp, 413, "PUT", "/v1/suppressions/a@example.com")
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
