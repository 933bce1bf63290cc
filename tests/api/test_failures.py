"""Storage full, a busy database, unexpected errors: the right status, nothing stored."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
import structlog.testing

from sesd.store import Store
from tests.api.helpers import AUTH, EMPTY, MERGE, Env, MakeEnv, assert_error, assert_pixel, msg


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
