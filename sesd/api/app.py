"""The aiohttp application: its resources, the error middleware and the routes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import apsw
import structlog
from aiohttp import web

from .. import sns, telemetry, tracking
from ..config import Settings
from ..errors import StorageFullError
from ..store import Store
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
    ApiHooks,
    Database,
    LogThrottle,
    clip,
    error_response,
)
from .guard import GuardedRequestHandler
from .handlers import PUBLIC_ROUTES, add_routes
from .opens import OpenCounter

__all__ = ["ApiHooks", "create_app"]

log = structlog.get_logger()
CERT_FETCH_TIMEOUT = 5.0  # seconds, total; SNS itself waits 15 s for our answer
MAX_CERT_BYTES = 64 * 1024  # SNS certificates are about 2 KB
OPEN_FLUSH_INTERVAL = 5.0  # seconds between writes of counted pixel replays

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answers the one JSON shape, aiohttp's own 404/405/413 included; one log line
    per 5xx. No access log: a line per request costs too much under bursts."""
    conn = request.protocol if isinstance(request.protocol, GuardedRequestHandler) else None
    if conn is not None:
        conn.request_started(request)
    try:
        with structlog.contextvars.bound_contextvars(http_request_id=uuid.uuid4().hex):
            resp = await _answer(request, handler)
        if request.body_exists and not request.content.is_eof():
            # Answered without reading the body (a 401, a pixel with a body): close rather
            # than read on through the rest of it to reuse the connection.
            resp.force_close()
        return resp
    finally:
        if conn is not None:
            conn.request_finished()


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    headers: dict[str, str] | None = None
    try:
        if (request.match_info.route.resource is not None
                and request.match_info.route.resource.canonical in PUBLIC_ROUTES
                and (request.content_length or 0) > PUBLIC_BODY_LIMIT):
            raise ApiError(413, f"request body is larger than {PUBLIC_BODY_LIMIT // 1024} KB")
        return await handler(request)
    except ApiError as exc:
        status, message, headers = exc.status, exc.message, exc.headers
    except StorageFullError:
        status, message = 507, ("storage is full: nothing of this request was stored; "
                                "free disk space and retry")
    except apsw.BusyError:
        status, message, headers = 503, "the database is busy; retry shortly", {"Retry-After": "1"}
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_request_mb
        status, message = 413, f"request body is larger than {limit:g} MB"
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Keep headers such as Allow (405); the body is ours, so drop the exception's own
        # Content-Type/Length (passing Content-Type twice makes web.Response raise: a 500).
        headers = {k: v for k, v in exc.headers.items()
                   if k.lower() not in ("content-type", "content-length")} or None
        status, message = exc.status, exc.reason
    except ConnectionError:
        raise  # the client went away (or a deadline closed it): nothing to answer
    except Exception as exc:
        log.exception("unhandled error", status=500, path=clip(request.path),
                      method=clip(request.method))
        telemetry.capture(exc)
        return error_response(request, 500, "internal error; see the service log")
    if status >= 500:
        log.error("request failed", status=status, path=clip(request.path),
                  method=clip(request.method), error=clip(message))
    return error_response(request, status, message, headers)


async def fetch_pem(http: aiohttp.ClientSession, url: str) -> bytes:
    """The whole body at a certificate URL, read to its end: a part of one never passes for a
    certificate. Larger than MAX_CERT_BYTES is refused; redirects are not followed."""
    async with http.get(url, allow_redirects=False) as resp:
        if resp.status != 200:
            raise sns.SnsCertFetchError(f"certificate fetch answered {resp.status}")
        if (resp.content_length or 0) > MAX_CERT_BYTES:
            raise sns.SnsVerificationError(f"certificate is larger than {MAX_CERT_BYTES} bytes")
        body = bytearray()
        async for chunk in resp.content.iter_chunked(16 * 1024):
            body += chunk
            if len(body) > MAX_CERT_BYTES:
                raise sns.SnsVerificationError(
                    f"certificate is larger than {MAX_CERT_BYTES} bytes")
    return bytes(body)


async def _flush_opens(app: web.Application) -> None:
    hits = app[OPENS].drain()
    if hits:
        db = app[DB]
        try:
            await db.run(db.store.add_open_hits, hits)
        except Exception as exc:  # counts are a nicety: never let them take the API down
            log.warning("could not add pixel hits", error=clip(str(exc)), requests=len(hits))


async def _flush_opens_forever(app: web.Application) -> None:
    while True:
        await asyncio.sleep(OPEN_FLUSH_INTERVAL)
        await _flush_opens(app)


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.sns_topic_arns:
        log.warning("SNS_TOPIC_ARNS is empty: every SNS message and subscription will be "
                    "refused (403) until it lists your SES event topics")
    db = await Database.open(functools.partial(
        Store, settings.db_path, durable=True, max_page_count=settings.sqlite_max_pages or None),
        name="sesd-api-db")
    try:
        app[DB] = db
        app[TRACKING_KEY] = settings.tracking_key or await db.run(
            db.store.get_or_create_setting, "tracking_key", tracking.new_key)
        app[OPENS] = OpenCounter()
        app[REFUSALS] = LogThrottle()
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=CERT_FETCH_TIMEOUT),
                headers={"User-Agent": "sesd"}) as http:
            app[HTTP] = http
            app[CERTS] = sns.CertificateCache(functools.partial(fetch_pem, http))
            flusher = asyncio.create_task(_flush_opens_forever(app))
            try:
                yield
            finally:
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher
                await _flush_opens(app)
    finally:
        await db.close()


def create_app(settings: Settings, hooks: ApiHooks | None = None) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=settings.max_request_bytes)
    app[SETTINGS] = settings
    app[HOOKS] = hooks or ApiHooks()
    app.cleanup_ctx.append(_resources)
    add_routes(app)
    return app
