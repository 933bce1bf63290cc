"""The click redirect: 302 to exactly the stored link for a genuine token, 404 and nothing
recorded for anything else, replays bounded, the database's trouble never the reader's."""

from __future__ import annotations

import asyncio

import apsw
import pytest
import structlog.testing

from sesd import tracking
from sesd.api.base import PUBLIC_BODY_LIMIT
from sesd.api.clicks import MAX_USER_AGENT
from sesd.api.recipients import CLICK_FLUSH_INTERVAL, CLICKS
from sesd.store import Store
from sesd.testing import dbview
from tests.api.helpers import AUTH, ERROR_KEYS, MERGE, Env, assert_error, msg

LINKS = ["https://shop.example/sale?id=7&ref=mail", "http://example.com/a%20b#top"]
HTML = (f'<p><a href="{LINKS[0].replace("&", "&amp;")}">Sale</a> '
        f'<a href="{LINKS[1]}">More</a> <a href="mailto:x@example.com">Mail</a> '
        f'<a href="{LINKS[0].replace("&", "&amp;")}">Sale again</a></p>')


def key_of(env: Env) -> str:
    return str(env.rows("SELECT value FROM settings WHERE key = 'tracking_key'")[0][0])


async def clicked(env: Env, emails: list[str], **fields: object) -> list[int]:
    resp = await env.post([msg(emails=emails, content=HTML, **fields)])
    assert resp.status == 200, await resp.text()
    return env.request_ids()


def click_path(key: str, request_id: int, link: int) -> str:
    return f"{tracking.CLICK_PATH}/{tracking.click_token(key, request_id, link)}"


async def test_genuine_click_redirects_to_exactly_the_stored_link(env: Env) -> None:
    (rid,) = await clicked(env, ["a@example.com"])
    key = key_of(env)
    for link, url in enumerate(LINKS):
        resp = await env.client.get(click_path(key, rid, link), allow_redirects=False,
                                    headers={"User-Agent": "Mail/1.0"})
        assert resp.status == 302
        assert resp.headers["Location"] == url  # the &amp; decoded, the query string intact
        assert resp.headers["Cache-Control"] == "no-store"
    assert env.rows("SELECT request_id, status, link, user_agent, hits FROM results "
                    "ORDER BY id") == [(rid, "Click", LINKS[0], "Mail/1.0", 1),
                                       (rid, "Click", LINKS[1], "Mail/1.0", 1)]
    stats = await (await env.client.get("/v1/topics/t1", headers=AUTH)).json()
    assert stats["result"] == {"statuses": {"Click": 1}, "clicks": {LINKS[0]: 1, LINKS[1]: 1}}


async def test_stats_count_distinct_requests_per_link(env: Env) -> None:
    first, second, third = await clicked(env, ["a@example.com", "b@example.com",
                                               "c@example.com"])
    key = key_of(env)
    for rid, link in [(first, 0), (first, 0), (first, 1), (second, 0), (third, 1),
                      (third, 1)]:
        assert (await env.client.get(click_path(key, rid, link),
                                     allow_redirects=False)).status == 302
    stats = await (await env.client.get("/v1/topics/t1", headers=AUTH)).json()
    assert stats["result"]["statuses"] == {"Click": 3}
    assert stats["result"]["clicks"] == {LINKS[0]: 2, LINKS[1]: 2}


async def test_user_agent_is_cut_and_may_be_missing(env: Env) -> None:
    first, second = await clicked(env, ["a@example.com", "b@example.com"])
    key = key_of(env)
    await env.client.get(click_path(key, first, 0), allow_redirects=False,
                         headers={"User-Agent": "u" * 8_000})
    await env.client.get(click_path(key, second, 0), allow_redirects=False,
                         skip_auto_headers=["User-Agent"])
    assert env.rows("SELECT request_id, user_agent FROM results ORDER BY id") == [
        (first, "u" * MAX_USER_AGENT), (second, None)]


def forgeries(key: str, rid: int) -> list[str]:
    token = tracking.click_token(key, rid, 0)
    ident, link, mac = token.split(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    return [
        f"{ident}.{link}.{flipped}",  # altered MAC
        f"{ident}.1.{mac}",  # the MAC of link 0 on link 1
        f"{rid + 1}.{link}.{mac}",  # moved to the next request
        f"0{ident}.{link}.{mac}",  # another spelling of the id
        tracking.click_token("another-key-0123456789", rid, 0),  # signed by someone else
        tracking.click_token(key, rid, 2),  # genuine, but the message has two links
        tracking.click_token(key, rid + 1000, 0),  # genuine, but no such request
        f"{ident}.{link}.{mac}.x", "x", "%00", "%E2%82%AC" * 50, "9" * 5000 + ".0." + mac,
        f"{ident}.{link}.{mac}%0D%0ALocation:%20https://evil.example/",
    ]


async def test_a_forged_or_unknown_token_is_404_and_redirects_nowhere(env: Env) -> None:
    (rid,) = await clicked(env, ["a@example.com"])
    key = key_of(env)
    for token in forgeries(key, rid):
        resp = await env.client.get(f"{tracking.CLICK_PATH}/{token}", allow_redirects=False)
        assert resp.status == 404, token
        body = await resp.json()
        assert set(body) == ERROR_KEYS
        assert "Location" not in resp.headers
        assert len(body["path"]) < 300  # reflected input is cut short
    assert env.counts()["results"] == 0


async def test_replays_add_no_rows_and_their_count_reaches_the_row(env: Env) -> None:
    (rid,) = await clicked(env, ["a@example.com"])
    key = key_of(env)
    path = click_path(key, rid, 0)
    for _ in range(100):
        resp = await env.client.get(path, allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == LINKS[0]
    assert env.rows("SELECT link, hits FROM results") == [(LINKS[0], 1)]
    app = env.client.app
    assert app is not None
    assert app[CLICKS].memory.drain() == {(rid, LINKS[0]): 99}
    await env.client.get(path, allow_redirects=False)
    assert CLICK_FLUSH_INTERVAL <= 10  # counts reach the database within seconds
    env.db.add_click_hits(app[CLICKS].memory.drain())
    assert dbview.hits(env.db, rid, "Click", LINKS[0]) == 2


async def test_concurrent_first_clicks_all_land_once(env: Env) -> None:
    ids = await clicked(env, [f"u{i}@example.com" for i in range(40)])
    key = key_of(env)
    paths = [click_path(key, rid, link) for rid in ids for link in (0, 1)] * 2
    answers = await asyncio.gather(*(env.client.get(p, allow_redirects=False) for p in paths))
    assert {resp.status for resp in answers} == {302}
    assert [resp.headers["Location"] for resp in answers] == [LINKS[0], LINKS[1]] * 80
    ((rows, hits),) = env.rows("SELECT COUNT(*), SUM(hits) FROM results WHERE status = 'Click'")
    assert rows == 80
    # Each click is counted once: on its row, or in memory for the next flush.
    app = env.client.app
    assert app is not None
    assert hits + sum(app[CLICKS].memory.drain().values()) == len(paths)


async def test_the_first_click_only_is_a_webhook_event(env: Env) -> None:
    (rid,) = await clicked(env, ["a@example.com"])
    env.exec("INSERT INTO webhooks (url, secret, after_event, created_at) "
             "VALUES ('https://h.example/', 's', 0, 0)")
    key = key_of(env)
    for _ in range(3):
        await env.client.get(click_path(key, rid, 1), allow_redirects=False)
    (result_id,) = env.rows("SELECT id FROM results")[0]
    assert env.rows("SELECT type, request_id, result_id, detail FROM events") == [
        ("message.clicked", rid, result_id, f'{{"link":"{LINKS[1]}"}}')]


async def test_the_reader_is_redirected_even_when_the_write_fails(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    (rid,) = await clicked(env, ["a@example.com"])
    key = key_of(env)

    def busy(self: Store, clicks: object) -> list[str | None]:
        raise apsw.BusyError("database is locked")

    monkeypatch.setattr(Store, "record_clicks", busy)
    with structlog.testing.capture_logs(MERGE) as logs:
        resp = await env.client.get(click_path(key, rid, 0), allow_redirects=False)
        forged = await env.client.get(f"{tracking.CLICK_PATH}/{rid}.0.{'A' * 22}",
                                      allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == LINKS[0]
    assert forged.status == 404
    assert env.counts()["results"] == 0
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "could not record a click"]


async def test_click_tracking_off_stores_no_links_to_follow(env: Env) -> None:
    (rid,) = await clicked(env, ["a@example.com"], trackClicks=False)
    resp = await env.client.get(click_path(key_of(env), rid, 0), allow_redirects=False)
    await assert_error(resp, 404, "GET", resp.url.path)


async def test_a_click_with_a_body_over_the_public_cap_is_413(env: Env) -> None:
    (rid,) = await clicked(env, ["a@example.com"])
    path = click_path(key_of(env), rid, 0)
    resp = await env.client.get(path, data=b" " * (PUBLIC_BODY_LIMIT + 1),
                                allow_redirects=False)
    await assert_error(resp, 413, "GET", path)
    assert env.counts()["results"] == 0


async def test_head_says_where_the_link_goes_and_records_nothing(env: Env) -> None:
    (rid,) = await clicked(env, ["a@example.com"])
    path = click_path(key_of(env), rid, 1)
    for _ in range(2):
        resp = await env.client.head(path, allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == LINKS[1]
    assert env.counts()["results"] == 0
    for forged in (f"{tracking.CLICK_PATH}/{rid}.1.{'A' * 22}",
                   click_path(key_of(env), rid, 2),  # genuine, but the message has two links
                   click_path(key_of(env), rid + 1000, 0)):  # genuine, but no such request
        resp = await env.client.head(forged, allow_redirects=False)
        assert resp.status == 404 and "Location" not in resp.headers
    assert (await env.client.get(path, allow_redirects=False)).status == 302
    assert (await env.client.head(path, allow_redirects=False)).status == 302  # from memory
    app = env.client.app
    assert app is not None and app[CLICKS].memory.drain() == {}
    assert env.rows("SELECT link, hits FROM results") == [(LINKS[1], 1)]
