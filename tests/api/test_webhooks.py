"""The webhook routes in process: registration (hostile input answers 400, never stored),
listing without secrets, deletion, deliveries paging and manual retry."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sesd import events
from sesd.store import SENT, Outcome
from tests.api.helpers import AUTH, Env, MakeEnv, assert_error

PATH = "/v1/webhooks"


async def register(env: Env, body: Any) -> Any:
    return await env.client.post(PATH, json=body, headers=AUTH)


def stored_webhooks(env: Env) -> int:
    return env.rows("SELECT COUNT(*) FROM webhooks")[0][0]


HOSTILE = [
    ({"url": "http://127.0.0.1:8080/hook"}, "loopback"),
    ({"url": "http://localhost/hook"}, "loopback"),
    ({"url": "http://[::1]/"}, "loopback"),
    ({"url": "http://10.0.0.5/"}, "private"),
    ({"url": "http://192.168.1.10:3000/x"}, "private"),
    ({"url": "http://169.254.169.254/latest/meta-data/"}, "metadata"),
    ({"url": "http://[::ffff:127.0.0.1]/"}, "loopback"),
    ({"url": "http://0.0.0.0/"}, "unspecified"),
    ({"url": "ftp://example.com/"}, "http:// or https://"),
    ({"url": "file:///etc/passwd"}, "http:// or https://"),
    ({"url": "gopher://example.com/"}, "http:// or https://"),
    ({"url": "javascript:alert(1)"}, "http:// or https://"),
    ({"url": "https://" + "a" * 10_000 + ".example/"}, "at most 2048"),
    ({"url": "https://user:pw@example.com/"}, "credentials"),
    ({"url": "https://example.com/a b"}, "spaces"),
    ({"url": "https://example.com/\r\nX-Injected: 1"}, "control"),
    ({"url": "https:///nohost"}, "no host"),
    ({"url": "https://example.com:99999/"}, "not a valid URL"),
    ({"url": "https://example.com/#frag"}, "fragment"),
    ({"url": 12}, "url is required"),
    ({}, "url is required"),
    ({"url": "https://example.com/", "events": []}, "non-empty list"),
    ({"url": "https://example.com/", "events": ["message.exploded"]}, "known types"),
    ({"url": "https://example.com/", "events": "message.sent"}, "non-empty list"),
    ({"url": "https://example.com/", "secret": "mine"}, "unknown field"),
    ([], "JSON object"),
    ({"url": "https://no-such-host.invalid/"}, "does not resolve"),
]


async def test_hostile_registrations_answer_400_and_store_nothing(env: Env) -> None:
    for body, expected in HOSTILE:
        resp = await register(env, body)
        error = await assert_error(resp, 400, "POST", PATH)
        assert expected in error["error"], (body, error)
        assert len(error["error"]) < 1200  # a 10 kB URL is not reflected whole
    assert stored_webhooks(env) == 0


async def test_invalid_json_oversized_body_and_missing_key(env: Env) -> None:
    resp = await env.client.post(PATH, data=b"{nope", headers=AUTH)
    assert "invalid JSON" in (await assert_error(resp, 400, "POST", PATH))["error"]
    resp = await env.client.post(PATH, data=b'{"url": "' + b"a" * 20_000 + b'"}', headers=AUTH)
    await assert_error(resp, 413, "POST", PATH)
    resp = await env.client.post(PATH, json={"url": "https://93.184.216.34/"})
    await assert_error(resp, 401, "POST", PATH)
    assert stored_webhooks(env) == 0


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(url=st.one_of(st.text(max_size=300),
                     st.builds(lambda host, path: f"http://{host}/{path}",
                               st.text(max_size=60), st.text(max_size=60))))
async def test_arbitrary_urls_never_answer_5xx(make_env: MakeEnv, url: str) -> None:
    env = await make_env(webhook_allow_private=True)
    resp = await register(env, {"url": url})
    assert resp.status in (200, 400), (url, await resp.text())
    if resp.status == 400:
        await assert_error(resp, 400, "POST", PATH)


async def test_register_list_get_delete(make_env: MakeEnv) -> None:
    env = await make_env(webhook_allow_private=True)
    resp = await register(env, {"url": "http://127.0.0.1:9/hook",
                                "events": [events.BOUNCED, events.BOUNCED, events.OPENED]})
    assert resp.status == 200
    made = await resp.json()
    assert made["secret"].startswith("whsec_")
    assert made["events"] == [events.BOUNCED, events.OPENED]  # deduplicated
    wid = made["id"]
    listed = await (await env.client.get(PATH, headers=AUTH)).json()
    assert listed == {"webhooks": [{k: v for k, v in made.items() if k != "secret"}]}
    one = await (await env.client.get(f"{PATH}/{wid}", headers=AUTH)).json()
    assert "secret" not in one
    assert one["deliveries"] == {"pending": 0, "delivered": 0, "failed": 0}
    assert made["secret"] not in str(env.rows("SELECT id, url, events FROM webhooks"))
    resp = await env.client.delete(f"{PATH}/{wid}", headers=AUTH)
    assert resp.status == 200 and await resp.json() == {"deleted": True}
    for method in ("get", "delete"):
        resp = await getattr(env.client, method)(f"{PATH}/{wid}", headers=AUTH)
        await assert_error(resp, 404, method.upper(), f"{PATH}/{wid}")
    resp = await env.client.get(f"{PATH}/abc", headers=AUTH)
    await assert_error(resp, 404, "GET", f"{PATH}/abc")


async def test_public_literal_addresses_register_without_dns(env: Env) -> None:
    resp = await register(env, {"url": "https://93.184.216.34:8443/hooks/sesd?x=1"})
    assert resp.status == 200, await resp.text()


async def test_endpoint_limit_answers_409(make_env: MakeEnv, monkeypatch) -> None:
    from sesd.api import webhooks

    monkeypatch.setattr(webhooks, "MAX_WEBHOOKS", 2)
    env = await make_env(webhook_allow_private=True)
    for _ in range(2):
        assert (await register(env, {"url": "http://127.0.0.1:9/"})).status == 200
    resp = await register(env, {"url": "http://127.0.0.1:9/"})
    assert "at most 2" in (await assert_error(resp, 409, "POST", PATH))["error"]


async def test_deliveries_page_filter_and_retry(make_env: MakeEnv) -> None:
    env = await make_env(webhook_allow_private=True)
    wid = (await (await register(env, {"url": "http://127.0.0.1:9/"})).json())["id"]
    assert (await env.post([{"topicId": "t", "emails": [f"u{i}@example.com" for i in range(5)],
                             "subject": "s", "content": "c"}])).status == 200
    store = env.db
    ids = [job[0] for job in store.claim_due(10).jobs]
    store.record_outcomes([Outcome(i, SENT, f"m{i}", attempts=1, at=1) for i in ids])
    store.fan_out(100)
    base = f"{PATH}/{wid}/deliveries"
    page = await (await env.client.get(f"{base}?limit=2", headers=AUTH)).json()
    assert [d["requestId"] for d in page["deliveries"]] == ids[:2]
    assert page["next"] is not None
    rest = await (await env.client.get(f"{base}?cursor={page['next']}", headers=AUTH)).json()
    assert [d["requestId"] for d in rest["deliveries"]] == ids[2:] and rest["next"] is None
    first = page["deliveries"][0]
    assert first["eventId"].startswith("evt_") and first["type"] == events.SENT
    env.exec("UPDATE deliveries SET status = 2, last_error = 'answered 500' WHERE id = ?",
             first["id"])
    failed = await (await env.client.get(f"{base}?status=failed", headers=AUTH)).json()
    assert [(d["id"], d["lastError"]) for d in failed["deliveries"]] == [
        (first["id"], "answered 500")]
    resp = await env.client.post(f"{base}/{first['id']}/retry", headers=AUTH)
    assert resp.status == 200
    again = await resp.json()
    assert again["status"] == "pending" and again["eventId"] == first["eventId"]
    for query in ("status=lost", "cursor=-1", "limit=0", "limit=5000"):
        await assert_error(await env.client.get(f"{base}?{query}", headers=AUTH), 400, "GET",
                           base)
    await assert_error(await env.client.post(f"{base}/999999/retry", headers=AUTH), 404,
                       "POST", f"{base}/999999/retry")
    other = f"{PATH}/{wid + 1}/deliveries"
    await assert_error(await env.client.get(other, headers=AUTH), 404, "GET", other)
    await assert_error(await env.client.post(f"{other}/{first['id']}/retry", headers=AUTH),
                       404, "POST", f"{other}/{first['id']}/retry")
