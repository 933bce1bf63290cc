"""Topic statistics, stopping a topic, and the sent counts."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from sesd.store import SENT
from tests.api.helpers import AUTH, Env, assert_error, msg


async def test_unknown_topic_answers_zeros(env: Env) -> None:
    resp = await env.client.get("/v1/topics/nothing-here", headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {
        "request": {"total": 0, "created": 0, "processing": 0, "sent": 0, "failed": 0,
                    "stopped": 0},
        "result": {"statuses": {}, "clicks": {}},
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
        "result": {"statuses": {"Delivery": 1, "Open": 2, "Bounce": 1}, "clicks": {}},
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


async def test_counts_sent_windows(env: Env) -> None:
    assert (await env.post([msg(emails=[f"u{i}@example.com" for i in range(5)])])).status == 200
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    hour = 3_600_000
    for rid, ago in zip(env.request_ids(), [0.5, 2, 100, 200, None], strict=True):
        if ago is not None:
            env.exec(f"UPDATE requests SET status = {SENT}, sent_at = ? WHERE id = ?",
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
