"""The suppression list: add, page, remove, and what it stops."""

from __future__ import annotations

import pytest

from tests.api.helpers import AUTH, EMPTY, ERROR_KEYS, Env, assert_error, msg


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


async def test_put_suppression_stops_what_the_sender_holds(env: Env) -> None:
    # Two spellings of one mailbox in two messages (within one message they are one request).
    assert (await env.post([msg(emails=["a@example.com", "b@example.com"]),
                            msg(emails=["A@EXAMPLE.COM"])])).status == 200
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
