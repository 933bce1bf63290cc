"""The suppression list: add, page, remove, scopes, export, import, and what it stops."""

from __future__ import annotations

import csv
import io
import re
import time

import pytest

from sesd.api.suppressions import EXPORT_PAGE
from sesd.store import PROCESSING
from tests.api.helpers import AUTH, EMPTY, ERROR_KEYS, Env, MakeEnv, assert_error, msg


async def test_suppression_list_add_page_remove(env: Env) -> None:
    listed = await (await env.client.get("/v1/suppressions", headers=AUTH)).json()
    assert listed == {"suppressions": [], "next": None}

    resp = await env.client.put("/v1/suppressions/c@example.com", headers=AUTH,
                                json={"reason": " asked to stop "})
    assert resp.status == 200
    assert await resp.json() == {"email": "c@example.com", "scope": "all",
                                 "reason": "asked to stop"}
    for email in ["a@example.com", "b@example.com", "d@example.com", "e@example.com"]:
        resp = await env.client.put(f"/v1/suppressions/{email}", headers=AUTH)
        assert await resp.json() == {"email": email, "scope": "all", "reason": "manual"}
    assert env.counts()["suppressions"] == 5
    assert env.rows("SELECT reason FROM suppressions WHERE email = 'c@example.com'") == [
        ("asked to stop",)]

    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        resp = await env.client.get("/v1/suppressions", headers=AUTH,
                                    params={"limit": "2", "cursor": cursor})
        assert resp.status == 200
        page = await resp.json()
        pages += 1
        assert len(page["suppressions"]) <= 2
        seen += [s["email"] for s in page["suppressions"]]
        if page["next"] is None:
            break
        cursor = page["next"]
    assert seen == ["a@example.com", "b@example.com", "c@example.com", "d@example.com",
                    "e@example.com"]
    assert pages == 3
    first = (await (await env.client.get("/v1/suppressions?limit=1", headers=AUTH)).json())
    assert set(first["suppressions"][0]) == {"email", "scope", "reason", "event", "createdAt"}

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
    env.exec(f"UPDATE requests SET status = {PROCESSING}")
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


# -- scopes -------------------------------------------------------------------------------------

async def test_a_list_scope_is_its_own_entry(env: Env) -> None:
    put = await env.client.put("/v1/suppressions/a@example.com?scope=news", headers=AUTH)
    assert await put.json() == {"email": "a@example.com", "scope": "news", "reason": "manual"}
    assert env.rows("SELECT key, scope FROM suppressions") == [("a@example.com", "news")]
    # The default scope is all: that entry does not exist, so nothing is removed.
    resp = await env.client.delete("/v1/suppressions/a@example.com", headers=AUTH)
    body = await assert_error(resp, 404, "DELETE", "/v1/suppressions/a@example.com")
    assert body["error"] == '"a@example.com" is not suppressed'
    resp = await env.client.delete("/v1/suppressions/a@example.com?scope=offers", headers=AUTH)
    assert "for list offers" in (await resp.json())["error"]
    resp = await env.client.delete("/v1/suppressions/A@EXAMPLE.com?scope=news", headers=AUTH)
    assert await resp.json() == {"removed": True}
    assert env.counts()["suppressions"] == 0


@pytest.mark.parametrize("scope", ["news letter", "x" * 65, "ALL%20", "%00", "ü"])
async def test_a_bad_scope_is_400_and_stores_nothing(env: Env, scope: str) -> None:
    for method in ("PUT", "DELETE"):
        resp = await env.client.request(method, f"/v1/suppressions/a@example.com?scope={scope}",
                                        headers=AUTH)
        body = await assert_error(resp, 400, method, "/v1/suppressions/a@example.com")
        assert 'scope must be "all" or a list id' in body["error"]
    resp = await env.client.get(f"/v1/suppressions?scope={scope}", headers=AUTH)
    await assert_error(resp, 400, "GET", "/v1/suppressions")
    assert env.counts() == EMPTY


async def test_put_for_a_list_stops_only_bulk_mail_of_that_list(env: Env) -> None:
    assert (await env.post([msg(emails=["a@example.com"], list="news"),
                            msg(emails=["a@example.com"], list="offers"),
                            msg(emails=["a@example.com"], list="news",
                                stream="transactional")])).status == 200
    news, offers, receipt = env.request_ids()
    env.exec(f"UPDATE requests SET status = {PROCESSING}")
    resp = await env.client.put("/v1/suppressions/a@example.com?scope=news", headers=AUTH,
                                json={"reason": "asked by phone"})
    assert resp.status == 200
    assert env.rows("SELECT id, status, error FROM requests ORDER BY id") == [
        (news, 4, "suppressed: asked by phone (list news)"), (offers, 1, None),
        (receipt, 1, None)]
    assert env.hooks.stops == 1


async def test_pages_with_an_opaque_cursor_across_scopes_and_within_one(env: Env) -> None:
    entries = [("a@example.com", "all"), ("a@example.com", "news"), ("b@example.com", "news"),
               ("c@example.com", "all"), ("c@example.com", "offers"), ("d@example.com", "news")]
    for email, scope in entries:
        assert (await env.client.put(f"/v1/suppressions/{email}?scope={scope}",
                                     headers=AUTH)).status == 200

    async def walk(**params: str) -> tuple[list[tuple[str, str]], int]:
        seen: list[tuple[str, str]] = []
        pages, cursor = 0, ""
        while True:
            resp = await env.client.get("/v1/suppressions", headers=AUTH,
                                        params={"limit": "2", **params,
                                                **({"cursor": cursor} if cursor else {})})
            assert resp.status == 200, await resp.text()
            page = await resp.json()
            pages += 1
            seen += [(s["email"], s["scope"]) for s in page["suppressions"]]
            if page["next"] is None:
                return seen, pages
            cursor = page["next"]

    assert await walk() == (entries, 3 + 1)  # a full last page still offers a cursor
    assert await walk(scope="news") == ([e for e in entries if e[1] == "news"], 2)
    assert await walk(scope="all") == ([e for e in entries if e[1] == "all"], 2)
    assert await walk(scope="nothing") == ([], 1)


@pytest.mark.parametrize("params", [{"cursor": "garbage!"}, {"cursor": "WzEsMl0"},
                                    {"cursor": "x" * 5_000}, {"after": "a@example.com"},
                                    {"format": "xml"}])
async def test_a_bad_cursor_or_format_is_400(env: Env, params: dict[str, str]) -> None:
    resp = await env.client.get("/v1/suppressions", headers=AUTH, params=params)
    body = await assert_error(resp, 400, "GET", "/v1/suppressions")
    assert len(body["error"]) < 300


# -- the CSV export -------------------------------------------------------------------------------

async def export_text(env: Env, **params: str) -> str:
    resp = await env.client.get("/v1/suppressions", headers=AUTH,
                                params={"format": "csv", **params})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="suppressions.csv"'
    assert resp.headers.get("Transfer-Encoding") == "chunked"  # streamed
    return await resp.text()


async def export(env: Env, **params: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(await export_text(env, **params), newline="")))


async def test_export_streams_every_row_with_a_header(env: Env) -> None:
    rows = [(f"u{i:05d}@example.com", "news" if i % 3 == 0 else "all", "r") for i in range(12_000)]
    env.db.import_suppressions([(e, s, e, r) for e, s, r in rows])
    assert rows.__len__() > EXPORT_PAGE * 2  # more than two database pages
    table = await export(env)
    assert table[0] == ["email", "scope", "reason", "event", "createdAt"]
    assert [(e, s, r) for e, s, r, _, _ in table[1:]] == sorted(rows)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", c[4]) for c in table[1:])
    news = await export(env, scope="news")
    assert [(e, s, r) for e, s, r, _, _ in news[1:]] == [x for x in sorted(rows) if x[1] == "news"]
    assert await export(env, scope="none") == [table[0]]


async def test_export_cells_cannot_become_spreadsheet_formulas(env: Env) -> None:
    hostile = {"=cmd@example.com": '=HYPERLINK("http://evil.example","click")',
               "+a@example.com": "+1+cmd|' /C calc'!A0", "-b@example.com": "-2+3",
               "c@example.com": "@SUM(A1:A9)", "d@example.com": "\t=1+1"}
    for email, reason in hostile.items():
        resp = await env.client.put(f"/v1/suppressions/{email}?scope=-list", headers=AUTH,
                                    json={"reason": reason})
        assert resp.status == 200, await resp.text()
    body = (await export_text(env)).encode()
    table = list(csv.reader(io.StringIO(body.decode(), newline="")))
    assert len(table) == 6
    for row in table[1:]:
        for cell in row:
            assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r"), row
    # And importing the export restores exactly what was exported (nothing new to add).
    resp = await env.client.post("/v1/suppressions/import", headers=AUTH, data=body)
    assert await resp.json() == {"rows": 5, "added": 0, "unchanged": 5, "stopped": 0,
                                 "elapsed": ANY_ELAPSED}
    env.exec("DELETE FROM suppressions")
    resp = await env.client.post("/v1/suppressions/import", headers=AUTH, data=body)
    assert (await resp.json())["added"] == 5
    assert dict(env.rows("SELECT email, reason FROM suppressions")) == {
        email: reason.strip() for email, reason in hostile.items()}
    assert {scope for (scope,) in env.rows("SELECT scope FROM suppressions")} == {"-list"}


# -- imports --------------------------------------------------------------------------------------

class _Elapsed(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(r"\d+\.\d{3}s", other) is not None

    __hash__ = str.__hash__


ANY_ELAPSED = _Elapsed()


async def test_import_csv_and_json(env: Env) -> None:
    env.db.add_suppression("kept@example.com", "Bounce: Permanent/General", "sns-1")
    body = (b"email,scope,reason\n"
            b"a@example.com,,\n"
            b"B@Example.COM,news,asked\n"
            b"kept@EXAMPLE.com,all,would overwrite\n"
            b"a@example.com,all,repeated in the file\n")
    resp = await env.client.post("/v1/suppressions/import", data=body,
                                 headers={**AUTH, "Content-Type": "text/csv"})
    assert await resp.json() == {"rows": 4, "added": 2, "unchanged": 2, "stopped": 0,
                                 "elapsed": ANY_ELAPSED}
    assert env.rows("SELECT key, scope, email, reason, event FROM suppressions ORDER BY 1, 2") == [
        ("a@example.com", "all", "a@example.com", "imported", None),
        ("b@example.com", "news", "B@Example.COM", "asked", None),
        ("kept@example.com", "all", "kept@example.com", "Bounce: Permanent/General", "sns-1")]
    resp = await env.client.post("/v1/suppressions/import", headers=AUTH,
                                 json=[{"email": "c@example.com", "scope": "offers"}])
    assert (await resp.json())["added"] == 1
    assert env.counts()["suppressions"] == 4


@pytest.mark.parametrize(("body", "says"), [
    (b"email\na@example.com\nb@example.com\nnot-an-address\n",
     'nothing imported: line 4: "not-an-address" is not a valid e-mail address'),
    (b'[{"email": "a@example.com"}, {"email": "b@example.com", "scope": "a b"}]',
     'nothing imported: [1]: scope must be "all" or a list id'),
    (b"a@example.com\n", "is the header line missing?"),
    (b"", "the CSV is empty"),
    (b"[1, 2]", "[0] must be an object"),
    (b"\xff\xfe", "not UTF-8"),
])
async def test_one_bad_row_imports_nothing(env: Env, body: bytes, says: str) -> None:
    resp = await env.client.post("/v1/suppressions/import", headers=AUTH, data=body)
    error = await assert_error(resp, 400, "POST", "/v1/suppressions/import")
    assert says in error["error"]
    assert env.counts() == EMPTY


async def test_import_needs_the_key_and_a_body_within_the_limit(make_env: MakeEnv) -> None:
    env = await make_env(max_request_mb=0.001)
    resp = await env.client.post("/v1/suppressions/import", data=b"email\na@example.com\n")
    await assert_error(resp, 401, "POST", "/v1/suppressions/import")
    resp = await env.client.post("/v1/suppressions/import", headers=AUTH,
                                 data=b"email\n" + b"a@example.com\n" * 200)
    await assert_error(resp, 413, "POST", "/v1/suppressions/import")
    assert env.counts() == EMPTY


async def test_import_stops_held_requests_the_list_now_refuses(env: Env) -> None:
    assert (await env.post([msg(emails=["a@example.com", "b@example.com", "c@example.com"],
                                list="news"),
                            msg(emails=["b@example.com"], stream="transactional")])).status == 200
    a, b, c, receipt = env.request_ids()
    env.exec(f"UPDATE requests SET status = {PROCESSING}")
    body = b"email,scope,reason\nA@example.com,all,manual list\nb@example.com,news,\n"
    resp = await env.client.post("/v1/suppressions/import", headers=AUTH, data=body)
    assert (await resp.json())["stopped"] == 2
    assert env.hooks.stops == 1
    assert env.rows("SELECT id, status, error FROM requests ORDER BY id") == [
        (a, 4, "suppressed: manual list"), (b, 4, "suppressed: imported (list news)"),
        (c, 1, None), (receipt, 1, None)]


async def test_importing_100000_rows_takes_well_under_two_seconds(env: Env) -> None:
    body = "email,scope,reason\n" + "".join(
        f"user{i}@example{i % 1000}.com,{'news' if i % 4 == 0 else 'all'},bounce\n"
        for i in range(100_000))
    started = time.perf_counter()
    resp = await env.client.post("/v1/suppressions/import", headers=AUTH,
                                 data=io.BytesIO(body.encode()))
    elapsed = time.perf_counter() - started
    answer = await resp.json()
    assert answer["added"] == 100_000, answer
    assert env.counts()["suppressions"] == 100_000
    print(f"\n100,000-row CSV import: {elapsed:.2f} s through the API ({answer['elapsed']})")
    # The goal is well under 2 s; a margin for a loaded shared machine.
    assert elapsed < 4
