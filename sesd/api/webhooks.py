"""The webhook routes (🔑): register, list, show and delete endpoints; list and retry deliveries.

A registration is refused (400) when the URL's host is, or resolves to, an address webhooks may
not reach (unless WEBHOOK_ALLOW_PRIVATE): the notifier checks again at every connection, so a
name that later resolves elsewhere gains nothing.
"""

from __future__ import annotations

import asyncio
import re
import socket

import orjson
from aiohttp import web

from ..notifier import addresses, signing
from ..store import DELIVERY_STATUS_NAMES
from . import webhook_schemas
from .base import DB, SETTINGS, ApiError, clip, json_response, read_capped, require_key
from .schemas import MAX_PAGE, ValidationError, quote

MAX_WEBHOOKS = 100  # each one multiplies every event's fan-out
MAX_BODY = 16 * 1024
RESOLVE_TIMEOUT = 3.0  # seconds for the registration-time DNS check
_ID = re.compile(r"[0-9]{1,18}")
_LIMIT = re.compile(r"[0-9]{1,4}")


def _id(request: web.Request, name: str, what: str) -> int:
    raw = request.match_info[name]
    if not _ID.fullmatch(raw):
        raise ApiError(404, f"no {what} {quote(raw, 40)}")
    return int(raw)


async def _check_host(request: web.Request, host: str, port: int) -> None:
    """400 unless every address of `host` is public; the notifier repeats this on connect."""
    if request.app[SETTINGS].webhook_allow_private:
        return
    literal = addresses.parse_ip(host)
    if literal is not None:
        found = [str(literal)]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
        except (OSError, TimeoutError, UnicodeError) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else (str(exc) or "failed")
            raise ApiError(400, f"url host {clip(host, 100)} does not resolve ({why})"
                           ) from None
        found = [str(info[4][0]) for info in infos]
    for address in found:
        reason = addresses.refusal(address)
        if reason is not None:
            where = clip(host, 100) if address == host else \
                f"{clip(host, 100)} resolves to {address}, which"
            raise ApiError(400, f"url refused: {where} is a {reason} address; webhooks reach "
                                "public addresses only (set WEBHOOK_ALLOW_PRIVATE=true for "
                                "endpoints on your own network)")


async def post_webhook(request: web.Request) -> web.Response:
    require_key(request)
    raw = await read_capped(request, MAX_BODY)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from None
    try:
        hook = webhook_schemas.parse_webhook(body)
    except ValidationError as exc:
        raise ApiError(400, str(exc)) from None
    await _check_host(request, hook.host, hook.port)
    secret = signing.new_secret()
    db = request.app[DB]
    created = await db.run(db.store.add_webhook, hook.url, hook.events, secret,
                           limit=MAX_WEBHOOKS)
    if created is None:
        raise ApiError(409, f"at most {MAX_WEBHOOKS} webhooks may be registered; delete one "
                            "first")
    # The secret is answered here only: it is never shown again.
    return json_response({**created, "secret": secret})


async def list_webhooks(request: web.Request) -> web.Response:
    require_key(request)
    db = request.app[DB]
    return json_response({"webhooks": await db.run(db.store.list_webhooks)})


async def get_webhook(request: web.Request) -> web.Response:
    require_key(request)
    webhook_id = _id(request, "id", "webhook")
    db = request.app[DB]
    found = await db.run(db.store.get_webhook, webhook_id)
    if found is None:
        raise ApiError(404, f"no webhook {webhook_id}")
    return json_response(found)


async def delete_webhook(request: web.Request) -> web.Response:
    require_key(request)
    webhook_id = _id(request, "id", "webhook")
    db = request.app[DB]
    if not await db.run(db.store.delete_webhook, webhook_id):
        raise ApiError(404, f"no webhook {webhook_id}")
    return json_response({"deleted": True})


async def list_deliveries(request: web.Request) -> web.Response:
    """`?status=pending|delivered|failed[,…]&cursor=<id>&limit=<1..1000>`, in id order."""
    require_key(request)
    webhook_id = _id(request, "id", "webhook")
    query = request.query
    statuses = list(range(len(DELIVERY_STATUS_NAMES)))
    if query.get("status"):
        statuses = []
        for name in query["status"].split(","):
            if name not in DELIVERY_STATUS_NAMES:
                raise ApiError(400, f"status must be one or more of "
                                    f"{', '.join(DELIVERY_STATUS_NAMES)} (comma-separated), "
                                    f"got {quote(name, 40)}")
            statuses.append(DELIVERY_STATUS_NAMES.index(name))
    cursor = query.get("cursor") or "0"
    if not _ID.fullmatch(cursor):
        raise ApiError(400, "cursor must be the `next` value of the previous page")
    limit_raw = query.get("limit", "100")
    if not _LIMIT.fullmatch(limit_raw) or not 1 <= int(limit_raw) <= MAX_PAGE:
        raise ApiError(400, f"limit must be a whole number from 1 to {MAX_PAGE}")
    limit = int(limit_raw)
    db = request.app[DB]
    if await db.run(db.store.get_webhook, webhook_id) is None:
        raise ApiError(404, f"no webhook {webhook_id}")
    rows = await db.run(db.store.list_deliveries, webhook_id, sorted(set(statuses)),
                        after=int(cursor), limit=limit)
    return json_response({"deliveries": rows,
                          "next": str(rows[-1]["id"]) if len(rows) == limit else None})


async def retry_delivery(request: web.Request) -> web.Response:
    """Queue one delivery again now, whatever its status; the notifier picks it up within a
    scan, with the same webhook-id."""
    require_key(request)
    webhook_id = _id(request, "id", "webhook")
    delivery_id = _id(request, "delivery", "delivery")
    db = request.app[DB]
    found = await db.run(db.store.retry_delivery, webhook_id, delivery_id)
    if found is None:
        raise ApiError(404, f"webhook {webhook_id} has no delivery {delivery_id}")
    return json_response(found)


def add_webhook_routes(app: web.Application) -> None:
    app.router.add_post("/v1/webhooks", post_webhook)
    app.router.add_get("/v1/webhooks", list_webhooks)
    app.router.add_get("/v1/webhooks/{id}", get_webhook)
    app.router.add_delete("/v1/webhooks/{id}", delete_webhook)
    app.router.add_get("/v1/webhooks/{id}/deliveries", list_deliveries)
    app.router.add_post("/v1/webhooks/{id}/deliveries/{delivery}/retry", retry_delivery)
