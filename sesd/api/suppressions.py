"""The suppression routes (🔑): list and export, add and remove one address, import many.

Every address goes through addresses.suppression_key (in the store, or in suppression_rows for
an import), so no spelling of a mailbox dodges its entry. A scope is `all` (the default: no mail
at all) or a list id (no bulk mail of that list, as an unsubscribe does). Adding entries stops
what the sender already holds for them, as a bounce does; the claim refuses the rest.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence

import orjson
from aiohttp import web

from .. import addresses
from ..store import ALL_SCOPE
from . import suppression_rows
from .base import DB, HOOKS, ApiError, json_response, require_key, require_size
from .checks import ValidationError

EXPORT_PAGE = 5_000  # rows per database read while streaming an export
_LIMIT = re.compile(r"[0-9]{1,4}")


def _scope(request: web.Request) -> str:
    try:
        return suppression_rows.scope(request.query.get("scope"))
    except ValidationError as exc:
        raise ApiError(400, str(exc)) from None


async def stop_held(request: web.Request, suppress: Sequence[tuple[str, str]],
                    scope: str = ALL_SCOPE) -> None:
    """Newly suppressed addresses: stop what the sender already holds for them, and tell it."""
    db = request.app[DB]
    if await db.run(db.store.stop_suppressed_held, suppress, scope=scope):
        request.app[HOOKS].stopped()


async def list_suppressions(request: web.Request) -> web.StreamResponse:
    """A page in key order (`next`: the cursor of the following one), or with `format=csv`
    every entry (of `scope`, when given) as a CSV download."""
    require_key(request)
    query = request.query
    scope = _scope(request) if query.get("scope") else None
    fmt = query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ApiError(400, 'format must be "json" or "csv"')
    if "after" in query:
        raise ApiError(400, "after is gone: pass the previous page's `next` as cursor")
    if fmt == "csv":
        return await _export(request, scope)
    limit_raw = query.get("limit", "100")
    # ASCII digits only: str.isdigit() accepts "²", which int() then refuses (a 500).
    if not _LIMIT.fullmatch(limit_raw) or not 1 <= int(limit_raw) <= 1000:
        raise ApiError(400, "limit must be a whole number from 1 to 1000")
    after = None
    if query.get("cursor"):
        try:
            after = suppression_rows.decode_cursor(query["cursor"])
        except ValidationError as exc:
            raise ApiError(400, str(exc)) from None
    db = request.app[DB]
    rows, cursor = await db.run(db.store.list_suppressions, limit=int(limit_raw), after=after,
                                scope=scope)
    return json_response({"suppressions": rows, "next": suppression_rows.encode_cursor(cursor)
                          if cursor is not None else None})


async def _export(request: web.Request, scope: str | None) -> web.StreamResponse:
    """Streamed page by page, each a short read: the database thread is never held for the
    whole list, and memory stays at one page whatever its length."""
    resp = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8", "Cache-Control": "no-store",
        "Content-Disposition": 'attachment; filename="suppressions.csv"'})
    db = request.app[DB]
    # The first page before the headers go out: an error there still answers in JSON.
    rows, cursor = await db.run(db.store.list_suppressions, limit=EXPORT_PAGE, scope=scope)
    await resp.prepare(request)
    await resp.write(suppression_rows.csv_header().encode())
    while True:
        await resp.write(suppression_rows.csv_lines(
            (r["email"], r["scope"], r["reason"], r["event"], r["createdAt"])
            for r in rows).encode())
        if cursor is None:
            break
        rows, cursor = await db.run(db.store.list_suppressions, limit=EXPORT_PAGE,
                                    after=cursor, scope=scope)
    await resp.write_eof()
    return resp


def _email(request: web.Request) -> str:
    email = request.match_info["email"].strip()
    # Any syntactically valid address, sendable or not (a non-ASCII local part too): the store
    # keys it with addresses.suppression_key, so every spelling of it is suppressed.
    if not addresses.valid_syntax(email):
        raise ApiError(400, f"{addresses.shown(email)} is not a valid e-mail address")
    return email


async def put_suppression(request: web.Request) -> web.Response:
    require_key(request)
    email = _email(request)
    scope = _scope(request)
    reason = "manual"
    raw = await request.read()
    if raw.strip():
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"invalid JSON: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("reason", ""), str):
            raise ApiError(400, 'body must be {"reason": "..."}')
        reason = body.get("reason", "").strip()[:suppression_rows.MAX_REASON] or "manual"
    db = request.app[DB]
    await db.run(db.store.add_suppression, email, reason, scope=scope)
    await stop_held(request, [(email, reason)], scope)
    return json_response({"email": email, "scope": scope, "reason": reason})


async def delete_suppression(request: web.Request) -> web.Response:
    require_key(request)
    email = request.match_info["email"].strip()
    scope = _scope(request)
    db = request.app[DB]
    if not await db.run(db.store.remove_suppression, email, scope):  # any spelling of it
        where = "" if scope == ALL_SCOPE else f" for list {scope}"
        raise ApiError(404, f"{addresses.shown(email)} is not suppressed{where}")
    return json_response({"removed": True})


async def import_suppressions(request: web.Request) -> web.Response:
    """CSV (header email[,scope][,reason]) or a JSON array; all or nothing."""
    require_key(request)
    started = time.perf_counter()
    require_size(request)
    raw = await request.read()  # client_max_size cuts chunked bodies off with a 413
    try:
        # Off the event loop: 100,000 rows take a few hundred milliseconds to check.
        rows = await asyncio.to_thread(suppression_rows.parse_import, raw,
                                       request.headers.get("Content-Type", ""))
    except ValidationError as exc:
        raise ApiError(400, f"nothing imported: {exc}") from None
    db = request.app[DB]
    done = await db.run(db.store.import_suppressions, rows)
    if done.stopped:
        request.app[HOOKS].stopped()
    return json_response({"rows": done.rows, "added": done.added,
                          "unchanged": done.rows - done.added, "stopped": done.stopped,
                          "elapsed": f"{time.perf_counter() - started:.3f}s"})


def add_suppression_routes(app: web.Application) -> None:
    app.router.add_get("/v1/suppressions", list_suppressions)
    # Before /{email}: "import" is no address.
    app.router.add_post("/v1/suppressions/import", import_suppressions)
    app.router.add_put("/v1/suppressions/{email}", put_suppression)
    app.router.add_delete("/v1/suppressions/{email}", delete_suppression)
