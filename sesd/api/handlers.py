"""Route handlers. Input checks live in schemas.py, SQL in the store, SNS rules in sns.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import importlib.resources
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import apsw
import orjson
import structlog
from aiohttp import web

from .. import sns, tracking
from ..store import NewMessage, now_ms
from . import options, schemas
from .base import (
    CERTS,
    DB,
    HOOKS,
    HTTP,
    OPENS,
    PUBLIC_BODY_LIMIT,
    REFUSALS,
    SETTINGS,
    TRACKING_KEY,
    ApiError,
    clip,
    json_response,
    read_capped,
    require_key,
    require_size,
)
from .recipients import RECIPIENT_ROUTES, add_recipient_routes
from .suppressions import add_suppression_routes, stop_held
from .webhooks import add_webhook_routes

T = TypeVar("T")
log = structlog.get_logger()
SNS_PATH = "/v1/events/results"
SNS_TYPES = frozenset(sns.MESSAGE_TYPES)
# Bodies this large are parsed in a worker thread: a few milliseconds of JSON decoding per
# request is enough for a flood of them to stall every other client on the loop.
OFF_LOOP_BYTES = 64 * 1024


def _elapsed(started: float) -> str:
    """Go's Duration.String, as the original service answered, e.g. "12.345ms"."""
    seconds = time.perf_counter() - started
    return f"{seconds:.3f}s" if seconds >= 1 else f"{seconds * 1000:.3f}ms"


# -- messages ---------------------------------------------------------------------------------

async def post_messages(request: web.Request) -> web.Response:
    require_key(request)
    settings = request.app[SETTINGS]
    started = time.perf_counter()
    require_size(request)
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
    rules = schemas.Rules(settings.max_recipients,
                          options.SenderRules(settings.allowed_senders))
    messages = await asyncio.to_thread(_parse_messages, raw, now, rules)
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


def _parse_messages(raw: bytes, now: int, rules: schemas.Rules) -> list[NewMessage]:
    """Decode and validate a POST /v1/messages body (in a worker thread); ApiError 400."""
    try:
        body = orjson.loads(raw)  # refuses invalid UTF-8 and nesting deeper than 1024
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from None
    try:
        return schemas.parse_messages(body, now_ms=now, rules=rules)
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


async def topic_requests(request: web.Request) -> web.Response:
    """One page of a topic's requests, in id order: what failed (with SES's text), what waits."""
    require_key(request)
    try:
        statuses, after, limit = schemas.parse_requests_query(request.query)
    except schemas.ValidationError as exc:
        raise ApiError(400, str(exc)) from None
    db = request.app[DB]
    rows = await db.run(db.store.topic_requests, request.match_info["topicId"], statuses,
                        after=after, limit=limit)
    return json_response({"requests": rows,
                          "next": str(rows[-1]["id"]) if len(rows) == limit else None})


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
    signed link, written once per request (replays are only counted, see opens.py)."""
    request_id = request.query.get("requestId")
    if tracking.verify_token(request.app[TRACKING_KEY], request_id, request.query.get("token")):
        rid = int(str(request_id))
        opens = request.app[OPENS]
        if opens.seen(rid):
            opens.count(rid)
        else:
            db = request.app[DB]
            try:
                await db.run(db.store.record_open, rid)
                opens.remember(rid)
            except Exception as exc:  # the reader still gets the pixel
                log.warning("could not record an open", error=clip(str(exc)))
    return web.Response(body=tracking.PIXEL_PNG, headers=dict(tracking.PIXEL_HEADERS))


# -- SNS --------------------------------------------------------------------------------------

async def _parse(fn: Callable[[Any], T], data: Any, size: int) -> T:
    return await asyncio.to_thread(fn, data) if size > OFF_LOOP_BYTES else fn(data)


def _refused(request: web.Request, event: str, error: object) -> None:
    """One warning per refusal, throttled: a flood of forgeries must not write a flood of log."""
    held_back = request.app[REFUSALS].admit()
    if held_back is not None:
        log.warning(event, error=clip(str(error)), similar_lines_held_back=held_back)


async def sns_results(request: web.Request) -> web.Response:
    """400: not an SNS message; 403: well-formed but not proven to come from an allowed topic;
    503: the signing certificate could not be fetched (SNS retries a 5xx)."""
    settings = request.app[SETTINGS]
    kind = request.headers.get("x-amz-sns-message-type")
    if kind not in SNS_TYPES:
        raise ApiError(400, "x-amz-sns-message-type must be Notification, "
                            "SubscriptionConfirmation or UnsubscribeConfirmation")
    raw = await read_capped(request, PUBLIC_BODY_LIMIT)
    try:
        msg = await _parse(sns.parse_envelope, raw, len(raw))
    except sns.SnsMessageError as exc:
        raise ApiError(400, f"not an SNS message: {exc}") from None
    try:
        await sns.verify(msg, request.app[CERTS].get, cert_url_pattern=settings.cert_url_re,
                         topic_arns=settings.sns_topic_arns, header_type=kind)
    except sns.SnsCertFetchError as exc:  # maybe transient: a 5xx makes SNS retry
        _refused(request, "SNS signing certificate unavailable", exc)
        raise ApiError(503, f"signing certificate unavailable; retry later ({exc})") from None
    except sns.SnsTopicRefused as exc:
        _refused(request, "SNS message refused: topic not allowed (SNS_TOPIC_ARNS)", exc)
        raise ApiError(403, f"message refused: {exc}") from None
    except sns.SnsVerificationError as exc:
        _refused(request, "SNS message refused", exc)
        raise ApiError(403, f"message refused: {exc}") from None
    if kind == "SubscriptionConfirmation":
        return await _confirm(request, msg)
    if kind == "UnsubscribeConfirmation":
        log.info("SNS unsubscribed", topic=msg.get("TopicArn"))
        return json_response({"status": "ok"})
    return await _notification(request, msg)


async def _confirm(request: web.Request, msg: dict[str, Any]) -> web.Response:
    url = str(msg.get("SubscribeURL", ""))
    try:
        sns.check_subscribe_url(url, request.app[SETTINGS].cert_url_re)  # SSRF guard: AWS only
    except sns.SnsError as exc:
        _refused(request, "SNS SubscribeURL refused", exc)
        raise ApiError(403, f"SubscribeURL refused: {exc}") from None
    try:
        async with request.app[HTTP].get(url, allow_redirects=False) as resp:
            status = resp.status
    except Exception as exc:
        raise ApiError(503, f"could not confirm the subscription; retry later ({clip(exc)})"
                       ) from None
    if status != 200:
        raise ApiError(502, f"SubscribeURL answered {status}")
    log.info("SNS subscription confirmed", topic=msg.get("TopicArn"))
    return json_response({"status": "confirmed"})


async def _notification(request: web.Request, msg: dict[str, Any]) -> web.Response:
    text = str(msg.get("Message", ""))
    try:
        event = await _parse(sns.parse_ses_event, text, len(text))
    except sns.SesSetupNotification:
        log.info("SES confirmed its SNS destination", topic=msg.get("TopicArn"))
        return json_response({"status": "ignored"})
    except sns.SnsMessageError as exc:
        # Genuinely signed but not an SES event we understand: a retry would not help.
        log.warning("signed SNS notification is not an SES event", error=clip(str(exc)))
        return json_response({"status": "ignored"})
    db = request.app[DB]
    try:
        candidates = await db.run(db.store.request_candidates, event.request_id,
                                  event.message_id)
        # An event applies only to a request mailed to one of its recipients: an X-Request-ID
        # (a small sequential number) names a request, but only the address proves it is ours.
        request_id = next((rid for rid, email in candidates
                           if sns.addressed_to(email, event.recipients)), None)
        if candidates and request_id is None:
            _refused(request, "SES event not applied: its recipients are not the request's",
                     f"requests {[rid for rid, _ in candidates]}")
        stored = await db.run(db.store.record_result, request_id=request_id,
                              status=event.event_type, raw=event.raw,
                              sns_message_id=msg.get("MessageId"), suppress=event.suppress)
        if event.suppress:  # also on a repeat: the first delivery may have died before this
            await stop_held(request, event.suppress)
    except Exception as exc:
        raise ApiError(503, f"could not store the event; retry later ({clip(exc)})") from None
    if event.suppress and stored:
        log.info("suppressed", addresses=[a for a, _ in event.suppress])
    return json_response({"status": "stored" if stored else "duplicate",
                          "requestId": request_id})


# -- health and the API document --------------------------------------------------------------

async def health(request: web.Request) -> web.Response:
    hooks = request.app[HOOKS]
    processes = hooks.health() if hooks.health else {
        "api": {"pid": os.getpid(), "alive": True, "restarts": 0}}
    alive = all(p["alive"] for p in processes.values())
    held = hooks.held()
    body: dict[str, Any] = {"status": "ok" if alive and not held else "degraded",
                            "transport": request.app[SETTINGS].email_transport,
                            "processes": processes}
    if held:
        body["sending"] = {"state": "held", "reason": held}
    # Intake still works while sending is held: 200, so a load balancer keeps the API in; a dead
    # process is a 503.
    return json_response(body, 200 if alive else 503)


@functools.cache
def openapi_document() -> bytes:
    return importlib.resources.files("sesd.api").joinpath("openapi.json").read_bytes()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_document(), content_type="application/json")


# Unauthenticated routes facing the internet: their bodies are capped at PUBLIC_BODY_LIMIT.
PUBLIC_ROUTES = frozenset({tracking.OPEN_PATH, SNS_PATH, *RECIPIENT_ROUTES})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", post_messages)
    app.router.add_get("/v1/topics/{topicId}", get_topic)
    app.router.add_delete("/v1/topics/{topicId}", delete_topic)
    app.router.add_get("/v1/topics/{topicId}/requests", topic_requests)
    app.router.add_get("/v1/events/counts/sent", counts_sent)
    app.router.add_get(tracking.OPEN_PATH, open_pixel)
    add_recipient_routes(app)
    app.router.add_post(SNS_PATH, sns_results)
    add_suppression_routes(app)
    add_webhook_routes(app)
    app.router.add_get("/health", health)
    app.router.add_get("/openapi.json", openapi)
