"""One-click unsubscribe: the page reads only; its POST (RFC 8058's body, form-encoded or
multipart, or the page's button) suppresses exactly the message's list, records one
Unsubscribe result, stops what the sender holds for that address and list; forgeries 404."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from sesd import tracking
from sesd.api.base import PUBLIC_BODY_LIMIT
from sesd.api.recipients import UNSUBSCRIBE_BODY_LIMIT
from sesd.store import PROCESSING
from tests.api.helpers import AUTH, ERROR_KEYS, Env, assert_error, msg

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def key_of(env: Env) -> str:
    return str(env.rows("SELECT value FROM settings WHERE key = 'tracking_key'")[0][0])


def page_path(env: Env, request_id: int) -> str:
    return f"{tracking.UNSUBSCRIBE_PATH}/{tracking.unsubscribe_token(key_of(env), request_id)}"


def recorded(env: Env) -> dict[str, list[tuple[object, ...]]]:
    return {"suppressions": env.rows("SELECT key, scope, reason FROM suppressions ORDER BY 1, 2"),
            "results": env.rows("SELECT request_id, status FROM results ORDER BY id"),
            "requests": env.rows("SELECT id, status, error FROM requests ORDER BY id")}


async def newsletter(env: Env, emails: list[str], **fields: object) -> list[int]:
    before = set(env.request_ids())
    resp = await env.post([msg(emails=emails, **{"list": "news", **fields})])
    assert resp.status == 200, await resp.text()
    return [rid for rid in env.request_ids() if rid not in before]


async def test_the_page_names_list_and_masked_address_and_changes_nothing(env: Env) -> None:
    (rid,) = await newsletter(env, ["ann.lee@example.com"])
    before = recorded(env)
    for _ in range(3):  # a scanner, a preview, the reader
        resp = await env.client.get(page_path(env, rid))
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        assert resp.headers["Cache-Control"] == "no-store"
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        page = await resp.text()
        assert "<strong>news</strong>" in page and "a***@example.com" in page
        assert "ann.lee" not in page  # the address is masked
        token = page_path(env, rid).rsplit("/", 1)[1]
        assert f'<form method="post" action="{token}">' in page
    assert recorded(env) == before
    assert env.counts()["suppressions"] == 0 and env.counts()["results"] == 0


@pytest.mark.parametrize("encoding", ["form", "multipart"])
async def test_one_click_suppresses_exactly_that_list_once(env: Env, encoding: str) -> None:
    (rid,) = await newsletter(env, ["Ann@Example.com"])
    data: object = ONE_CLICK
    if encoding == "multipart":
        form = aiohttp.FormData()
        form.add_field("List-Unsubscribe", "One-Click", content_type="text/plain")
        data = form
    for _ in range(2):  # idempotent
        resp = await env.client.post(page_path(env, rid), data=data)
        assert resp.status == 200, await resp.text()
        assert resp.headers["Cache-Control"] == "no-store"
        page = await resp.text()
        assert "You are unsubscribed" in page and "A***@example.com" in page
    assert recorded(env)["suppressions"] == [("ann@example.com", "news", "unsubscribe")]
    assert recorded(env)["results"] == [(rid, "Unsubscribe")]
    # The page now says so, still without touching anything.
    page = await (await env.client.get(page_path(env, rid))).text()
    assert "You are unsubscribed" in page and "<form" not in page
    # Another newsletter of the same list to the same mailbox: its own result, one suppression.
    (other,) = await newsletter(env, ["ann@example.com"], topicId="t2")
    assert (await env.client.post(page_path(env, other), data=ONE_CLICK)).status == 200
    assert recorded(env)["suppressions"] == [("ann@example.com", "news", "unsubscribe")]
    assert recorded(env)["results"] == [(rid, "Unsubscribe"), (other, "Unsubscribe")]
    stats = await (await env.client.get("/v1/topics/t1", headers=AUTH)).json()
    assert stats["result"]["statuses"] == {"Unsubscribe": 1}


async def test_held_requests_of_that_address_and_list_are_stopped(env: Env) -> None:
    (rid,) = await newsletter(env, ["a@example.com"])
    (same_list,) = await newsletter(env, ["A@EXAMPLE.COM"], topicId="t2")
    (in_flight,) = await newsletter(env, ["a@example.com"], topicId="t3")
    (other_list,) = await newsletter(env, ["a@example.com"], topicId="t4", list="offers")
    (transactional,) = await newsletter(env, ["a@example.com"], topicId="t5",
                                        stream="transactional")
    (other_address,) = await newsletter(env, ["b@example.com"], topicId="t6")
    env.exec(f"UPDATE requests SET status = {PROCESSING}")
    env.exec("UPDATE requests SET sending_at = 1 WHERE id = ?", in_flight)
    env.exec("INSERT INTO webhooks (url, secret, after_event, created_at) "
             "VALUES ('https://h.example/', 's', 0, 0)")
    assert (await env.client.post(page_path(env, rid), data=ONE_CLICK)).status == 200
    assert env.hooks.stops == 1
    error = "suppressed: unsubscribe (list news)"
    assert recorded(env)["requests"] == [
        (rid, 4, error), (same_list, 4, error), (in_flight, 1, None), (other_list, 1, None),
        (transactional, 1, None), (other_address, 1, None)]
    assert env.rows("SELECT type, request_id FROM events ORDER BY id") == [
        ("message.unsubscribed", rid), ("message.suppressed", rid),
        ("message.suppressed", same_list)]
    # Again: nothing more to stop, no second event, the sender not told again.
    assert (await env.client.post(page_path(env, rid), data=ONE_CLICK)).status == 200
    assert env.hooks.stops == 1
    assert len(env.rows("SELECT id FROM events")) == 3


async def test_a_later_bulk_send_to_that_list_is_refused_by_the_claim(env: Env) -> None:
    (rid,) = await newsletter(env, ["a@example.com"])
    assert (await env.client.post(page_path(env, rid), data=ONE_CLICK)).status == 200
    await newsletter(env, ["a@example.com"], topicId="later")
    await newsletter(env, ["a@example.com"], topicId="offers", list="offers")
    await newsletter(env, ["a@example.com"], topicId="receipt", stream="transactional")
    claimed = env.db.claim_due(100)
    kept = {topic for (topic,) in env.rows(
        f"SELECT topic_id FROM requests WHERE status = {PROCESSING}")}
    assert claimed.suppressed == 2  # the first newsletter and the later one
    assert kept == {"offers", "receipt"}
    assert env.rows("SELECT error FROM requests WHERE topic_id = 'later'") == [
        ("suppressed: unsubscribe (list news)",)]


def forged_tokens(env: Env, rid: int) -> list[str]:
    token = tracking.unsubscribe_token(key_of(env), rid)
    ident, mac = token.split(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    return [f"{ident}.{flipped}", f"{rid + 1}.{mac}", f"0{ident}.{mac}",
            tracking.unsubscribe_token("another-key-0123456789", rid),
            tracking.unsubscribe_token(key_of(env), rid + 1000),  # no such request
            tracking.click_token(key_of(env), rid, 0),  # a click token is no unsubscribe one
            f"{token}.x", "x", "%00", "9" * 5000 + "." + mac]


async def test_forged_tokens_are_404_and_record_nothing(env: Env) -> None:
    (rid,) = await newsletter(env, ["a@example.com"])
    before = recorded(env)
    for token in forged_tokens(env, rid):
        for method in ("GET", "POST"):
            resp = await env.client.request(method, f"{tracking.UNSUBSCRIBE_PATH}/{token}",
                                            data=ONE_CLICK if method == "POST" else None)
            assert resp.status == 404, (method, token)
            body = await resp.json()
            assert set(body) == ERROR_KEYS and len(body["path"]) < 300
    assert recorded(env) == before


async def test_a_transactional_request_has_no_unsubscribe(env: Env) -> None:
    (rid,) = await newsletter(env, ["a@example.com"], stream="transactional")
    for method in ("GET", "POST"):
        resp = await env.client.request(method, page_path(env, rid), data=ONE_CLICK)
        await assert_error(resp, 404, method, page_path(env, rid))
    assert env.counts()["suppressions"] == 0 and env.counts()["results"] == 0


@pytest.mark.parametrize(("body", "content_type"), [
    (b"", "application/x-www-form-urlencoded"),
    (b"List-Unsubscribe=Yes", "application/x-www-form-urlencoded"),
    (b"\xff\xfe\x00garbage", "application/octet-stream"),
    (b'{"List-Unsubscribe": "One-Click"}', "application/json"),
    (b"--x\r\nbroken", "multipart/form-data; boundary=x"),
    (b"A" * (UNSUBSCRIBE_BODY_LIMIT - 1), "application/x-www-form-urlencoded"),
])
async def test_a_post_without_the_one_click_body_is_400(env: Env, body: bytes,
                                                        content_type: str) -> None:
    (rid,) = await newsletter(env, ["a@example.com"])
    before = recorded(env)
    resp = await env.client.post(page_path(env, rid), data=body,
                                 headers={"Content-Type": content_type})
    error = await assert_error(resp, 400, "POST", page_path(env, rid))
    assert "List-Unsubscribe=One-Click" in error["error"]
    assert recorded(env) == before


async def test_bodies_over_the_caps_are_413_and_record_nothing(env: Env) -> None:
    (rid,) = await newsletter(env, ["a@example.com"])
    path = page_path(env, rid)
    resp = await env.client.post(path, data=b"List-Unsubscribe=One-Click&" + b"x" * (
        UNSUBSCRIBE_BODY_LIMIT))
    await assert_error(resp, 413, "POST", path)
    resp = await env.client.post(path, data=b" " * (PUBLIC_BODY_LIMIT + 1))
    await assert_error(resp, 413, "POST", path)
    assert resp.headers.get("Connection", "").lower() == "close"

    async def chunks() -> AsyncIterator[bytes]:
        yield b"List-Unsubscribe=One-Click&"
        for _ in range(UNSUBSCRIBE_BODY_LIMIT // 1024 + 2):
            yield b"x" * 1024

    resp = await env.client.post(path, data=chunks())
    assert "Content-Length" not in resp.request_info.headers
    await assert_error(resp, 413, "POST", path)
    assert env.counts()["suppressions"] == 0 and env.counts()["results"] == 0
    assert (await env.client.get("/health")).status == 200
