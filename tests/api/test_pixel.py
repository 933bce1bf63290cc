"""The open-tracking pixel: always the PNG, an Open only for a genuine link."""

from __future__ import annotations

import apsw
import pytest

from sesd import tracking
from sesd.store import Store
from tests.api.helpers import AUTH, Env, MakeEnv, assert_pixel, msg


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
