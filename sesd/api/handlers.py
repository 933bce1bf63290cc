"""Route handlers. Input checks live in schemas.py, SQL in the store, SNS rules in sns.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import importlib.resources
import os
import re
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import apsw
import orjson
import structlog
from aiohttp import web

from .. import addresses, sns, tracking
from ..store import NewMessage, now_ms
from . import schemas
from .app import (
    CERTS,
    DB,
    HOOKS,
    HTTP,
    SETTINGS,
    TRACKING_KEY,
    ApiError,
    json_response,
    require_key,
)

log = structlog.get_logger()
CERT_CACHE_SIZE = 64
MAX_CERT_BYTES = 64 * 1024
SNS_TYPES = frozenset(sns.MESSAGE_TYPES)


def _elapsed(started: float) -> str:
    """Go's Duration.String, as the original service answered, e.g. "12.345ms"."""
    seconds = time.perf_counter() - started
    return f"{seconds:.3f}s" if seconds >= 1 else f"{seconds * 1000:.3f}ms"


# -- messages ---------------------------------------------------------------------------------

async def post_messages(request: web.Request) -> web.Response:
    require_key(request)
    settings = request.app[SETTINGS]
    started = time.perf_counter()
    if (request.content_length or 0) > settings.max_request_bytes:
        raise ApiError(413, f"request body is larger than {settings.max_request_mb:g} MB")
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        _check_idempotency_key(key)
    raw = await request.read()  # client_max_size cuts chunked bodies off with a 413
    body_hash = ""
    if key is not None:
        body_hash = await asyncio.to_thread(lambda: hashlib.sha256(raw).hexdigest())
        if (replay := await _replay(request, key, body_hash)) is not None:
            return replay
    now = now_ms()
    # Off the event loop: 20,000 recipients at as many IDN domains take seconds to validate,
    # and /health, SNS and the pixel must answer meanwhile.
    messages = await asyncio.to_thread(_parse_messages, raw, now, settings.max_recipients)
    summary = {"count": sum(len(m.emails) for m in messages), "messages": len(messages)}
    idempotency = None if key is None else (key, body_hash, orjson.dumps(summary))
    db = request.app[DB]
    try:
        count = await db.run(db.store.insert_messages, messages, idempotency=idempotency,
                             keys_expire_before=now - settings.idempotency_ttl_ms)
    except apsw.ConstraintError:
        # A concurrent request with the same key committed first: answer as its replay.
        if key is not None and (replay := await _replay(request, key, body_hash)) is not None:
            return replay
        raise
    # Nudge for future work too: the scheduler sleeps toward the earliest due time it knew,
    # which may be later than what was just stored.
    request.app[HOOKS].nudge()
    return json_response({"count": count, "elapsed": _elapsed(started),
                          "messages": summary["messages"]})


def _check_idempotency_key(key: str) -> None:
    if not 0 < len(key) <= schemas.MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, f"Idempotency-Key must be 1 to {schemas.MAX_IDEMPOTENCY_KEY} "
                            "characters")
    try:
        # aiohttp keeps undecodable header bytes as lone surrogates, which SQLite cannot take.
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "Idempotency-Key must be valid UTF-8") from None


def _parse_messages(raw: bytes, now: int, max_recipients: int) -> list[NewMessage]:
    """Decode and validate a POST /v1/messages body (in a worker thread); ApiError 400."""
    try:
        body = orjson.loads(raw)  # refuses invalid UTF-8 and nesting deeper than 1024
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from None
    try:
        return schemas.parse_messages(body, now_ms=now, max_recipients=max_recipients)
    except schemas.ValidationError as exc:
        raise ApiError(400, str(exc)) from None


async def _replay(request: web.Request, key: str, body_hash: str) -> web.Response | None:
    db = request.app[DB]
    found = await db.run(db.store.idempotent_response, key)
    if found is None:
        return None
    stored_hash, stored, created_at = found
    if created_at < now_ms() - request.app[SETTINGS].idempotency_ttl_ms:
        return None  # expired: the key is free again
    if stored_hash != body_hash:
        raise ApiError(409, "Idempotency-Key was already used with a different body")
    return json_response({**orjson.loads(stored), "elapsed": "0s"},
                         headers={"Idempotent-Replayed": "true"})


# -- topics and counts ------------------------------------------------------------------------

async def get_topic(request: web.Request) -> web.Response:
    require_key(request)
    db = request.app[DB]
    return json_response(await db.run(db.store.topic_stats, request.match_info["topicId"]))


async def delete_topic(request: web.Request) -> web.Response:
    require_key(request)
    db = request.app[DB]
    count = await db.run(db.store.stop_topic, request.match_info["topicId"])
    if count:
        request.app[HOOKS].stopped()
    return json_response({"count": count})


async def counts_sent(request: web.Request) -> web.Response:
    require_key(request)
    try:
        hours = schemas.parse_hours(request.query.get("hours"))
    except schemas.ValidationError as exc:
        raise ApiError(400, str(exc)) from None
    since = now_ms() - hours * 3_600_000
    db = request.app[DB]
    count = await db.run(db.store.sent_since, since)
    moment = dt.datetime.fromtimestamp(since / 1000, dt.UTC).replace(microsecond=0)
    return json_response({"count": count, "hours": hours,
                          "since": moment.isoformat().replace("+00:00", "Z")})


# -- open tracking ----------------------------------------------------------------------------

async def open_pixel(request: web.Request) -> web.Response:
    """Always the pixel, whatever the query or the database says; an Open only for a genuine
    signed link."""
    request_id = request.query.get("requestId")
    if tracking.verify_token(request.app[TRACKING_KEY], request_id, request.query.get("token")):
        db = request.app[DB]
        try:
            await db.run(db.store.record_open, int(str(request_id)))
        except Exception as exc:  # the reader still gets the pixel
            log.warning("could not record an open", error=str(exc))
    return web.Response(body=tracking.PIXEL_PNG, headers=dict(tracking.PIXEL_HEADERS))


# -- SNS --------------------------------------------------------------------------------------

async def _fetch_cert(request: web.Request, url: str) -> bytes:
    certs = request.app[CERTS]
    if url in certs:
        return certs[url]
    try:
        async with request.app[HTTP].get(url, allow_redirects=False) as resp:
            if resp.status != 200:
                raise sns.SnsCertFetchError(f"certificate fetch answered {resp.status}")
            pem = await resp.content.read(MAX_CERT_BYTES)
    except sns.SnsError:
        raise
    except Exception as exc:
        raise sns.SnsCertFetchError(f"could not fetch the signing certificate: {exc!r}") from exc
    if len(certs) >= CERT_CACHE_SIZE:
        certs.pop(next(iter(certs)))  # oldest first; SNS uses very few certificates
    certs[url] = pem
    return pem


async def sns_results(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    kind = request.headers.get("x-amz-sns-message-type")
    if kind not in SNS_TYPES:
        raise ApiError(400, "x-amz-sns-message-type must be Notification, "
                            "SubscriptionConfirmation or UnsubscribeConfirmation")
    try:
        msg = sns.parse_envelope(await request.read())
        await sns.verify(msg, functools.partial(_fetch_cert, request),
                         cert_url_pattern=settings.cert_url_re,
                         topic_arns=settings.sns_topic_arns, header_type=kind)
    except sns.SnsCertFetchError as exc:  # maybe transient: a 5xx makes SNS retry
        raise ApiError(503, f"signing certificate unavailable; retry later ({exc})") from None
    except sns.SnsError as exc:
        log.warning("SNS message refused", error=str(exc))
        raise ApiError(403, f"message refused: {exc}") from None
    if kind == "SubscriptionConfirmation":
        return await _confirm(request, msg)
    if kind == "UnsubscribeConfirmation":
        log.info("SNS unsubscribed", topic=msg.get("TopicArn"))
        return json_response({"status": "ok"})
    return await _notification(request, msg)


def check_subscribe_url(url: str, pattern: re.Pattern[str]) -> None:
    """The SubscribeURL must name an allowed SNS host, like a SigningCertURL; but a genuine one
    is "https://sns.<region>.amazonaws.com/?Action=ConfirmSubscription&...", a query and no
    .pem, which sns.check_cert_url refuses. Same host rules, then."""
    if any(not ch.isprintable() or ch in " \\" for ch in url) or not pattern.match(url):
        raise sns.SnsVerificationError(f"{url[:200]!r} does not match {pattern.pattern!r}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise sns.SnsVerificationError(f"{url[:200]!r} is not a URL: {exc}") from None
    if parts.scheme != "https" and not (
            parts.scheme == "http" and pattern.pattern.startswith(("^http://", "http://"))):
        raise sns.SnsVerificationError(f"must be https, not {parts.scheme!r}")
    if "@" in parts.netloc or not parts.hostname:
        raise sns.SnsVerificationError("must name a host without user information")


async def _confirm(request: web.Request, msg: dict[str, Any]) -> web.Response:
    url = str(msg.get("SubscribeURL", ""))
    try:
        check_subscribe_url(url, request.app[SETTINGS].cert_url_re)  # SSRF guard: AWS only
    except sns.SnsError as exc:
        log.warning("SNS SubscribeURL refused", error=str(exc))
        raise ApiError(403, f"SubscribeURL refused: {exc}") from None
    try:
        async with request.app[HTTP].get(url, allow_redirects=False) as resp:
            status = resp.status
    except Exception as exc:
        raise ApiError(503, f"could not confirm the subscription; retry later ({exc!r})"
                       ) from None
    if status != 200:
        raise ApiError(502, f"SubscribeURL answered {status}")
    log.info("SNS subscription confirmed", topic=msg.get("TopicArn"))
    return json_response({"status": "confirmed"})


async def _notification(request: web.Request, msg: dict[str, Any]) -> web.Response:
    try:
        event = sns.parse_ses_event(str(msg.get("Message", "")))
    except sns.SesSetupNotification:
        log.info("SES confirmed its SNS destination", topic=msg.get("TopicArn"))
        return json_response({"status": "ignored"})
    except sns.SnsMessageError as exc:
        # Genuinely signed but not an SES event we understand: a retry would not help.
        log.warning("signed SNS notification is not an SES event", error=str(exc))
        return json_response({"status": "ignored"})
    db = request.app[DB]
    try:
        request_id = await db.run(db.store.find_request, event.request_id, event.message_id)
        stored = await db.run(db.store.record_result, request_id=request_id,
                              status=event.event_type, raw=event.raw,
                              sns_message_id=msg.get("MessageId"), suppress=event.suppress)
        if event.suppress:  # also on a repeat: the first delivery may have died before this
            await _stop_held(request, event.suppress)
    except Exception as exc:
        raise ApiError(503, f"could not store the event; retry later ({exc!r})") from None
    if event.suppress and stored:
        log.info("suppressed", addresses=[a for a, _ in event.suppress])
    return json_response({"status": "stored" if stored else "duplicate",
                          "requestId": request_id})


async def _stop_held(request: web.Request, suppress: Sequence[tuple[str, str]]) -> None:
    """Newly suppressed addresses: stop what the sender already holds for them, and tell it."""
    db = request.app[DB]
    if await db.run(db.store.stop_suppressed_held, suppress):
        request.app[HOOKS].stopped()


# -- suppressions -----------------------------------------------------------------------------

async def list_suppressions(request: web.Request) -> web.Response:
    require_key(request)
    limit_raw = request.query.get("limit", "100")
    # ASCII digits only: str.isdigit() accepts "²", which int() then refuses (a 500).
    if not re.fullmatch(r"[0-9]{1,4}", limit_raw) or not 1 <= int(limit_raw) <= 1000:
        raise ApiError(400, "limit must be a whole number from 1 to 1000")
    limit = int(limit_raw)
    db = request.app[DB]
    rows, cursor = await db.run(db.store.list_suppressions, limit=limit,
                                after=request.query.get("after", ""))
    return json_response({"suppressions": rows, "next": cursor})


async def put_suppression(request: web.Request) -> web.Response:
    require_key(request)
    email = request.match_info["email"].strip()
    # Any syntactically valid address, sendable or not (a non-ASCII local part too): the store
    # keys it with addresses.suppression_key, so every spelling of it is suppressed.
    if not addresses.valid_syntax(email):
        raise ApiError(400, f"{addresses.shown(email)} is not a valid e-mail address")
    reason = "manual"
    raw = await request.read()
    if raw.strip():
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"invalid JSON: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("reason", ""), str):
            raise ApiError(400, 'body must be {"reason": "..."}')
        reason = body.get("reason", "").strip()[:500] or "manual"
    db = request.app[DB]
    await db.run(db.store.add_suppression, email, reason)
    await _stop_held(request, [(email, reason)])
    return json_response({"email": email, "reason": reason})


async def delete_suppression(request: web.Request) -> web.Response:
    require_key(request)
    db = request.app[DB]
    email = request.match_info["email"].strip()
    if not await db.run(db.store.remove_suppression, email):  # any spelling of it
        raise ApiError(404, f"{addresses.shown(email)} is not suppressed")
    return json_response({"removed": True})


# -- health and the API document --------------------------------------------------------------

async def health(request: web.Request) -> web.Response:
    hooks = request.app[HOOKS]
    processes = hooks.health() if hooks.health else {
        "api": {"pid": os.getpid(), "alive": True, "restarts": 0}}
    ok = all(p["alive"] for p in processes.values())
    return json_response({"status": "ok" if ok else "degraded",
                          "transport": request.app[SETTINGS].email_transport,
                          "processes": processes}, 200 if ok else 503)


@functools.cache
def openapi_document() -> bytes:
    return importlib.resources.files("sesd.api").joinpath("openapi.json").read_bytes()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_document(), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", post_messages)
    app.router.add_get("/v1/topics/{topicId}", get_topic)
    app.router.add_delete("/v1/topics/{topicId}", delete_topic)
    app.router.add_get("/v1/events/counts/sent", counts_sent)
    app.router.add_get("/v1/events/open", open_pixel)
    app.router.add_post("/v1/events/results", sns_results)
    app.router.add_get("/v1/suppressions", list_suppressions)
    app.router.add_put("/v1/suppressions/{email}", put_suppression)
    app.router.add_delete("/v1/suppressions/{email}", delete_suppression)
    app.router.add_get("/health", health)
    app.router.add_get("/openapi.json", openapi)
