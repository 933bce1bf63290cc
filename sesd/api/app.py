"""The aiohttp application: state, the error middleware, auth and routes."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hmac
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import apsw
import orjson
import structlog
from aiohttp import web

from .. import telemetry, tracking
from ..config import Settings
from ..errors import StorageFullError
from ..store import Store

T = TypeVar("T")
log = structlog.get_logger()
CERT_FETCH_TIMEOUT = 5.0  # seconds, total; SNS itself waits 15 s for our answer


def _noop() -> None:
    return None


def _none() -> str | None:
    return None


@dataclass(frozen=True)
class ApiHooks:
    """How the API reaches the other processes (no-ops when the app runs alone, as in tests)."""

    nudge: Callable[[], None] = _noop  # work stored: wake the scheduler (cheap, non-blocking)
    stopped: Callable[[], None] = _noop  # requests stopped: the sender re-checks what it holds
    # role -> {"pid", "alive", "restarts"}; None reports only this process, as "api".
    health: Callable[[], dict[str, dict[str, Any]]] | None = None
    held: Callable[[], str | None] = _none  # why sending is held, if it is


class Database:
    """The API's apsw connection, used only from one worker thread, so SQLite waits (the busy
    timeout, fsync of a large ingest) never block the event loop."""

    def __init__(self, pool: ThreadPoolExecutor, store: Store) -> None:
        self._pool = pool
        self.store = store

    @classmethod
    async def open(cls, settings: Settings) -> Database:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sesd-api-db")
        store = await asyncio.get_running_loop().run_in_executor(pool, functools.partial(
            Store, settings.db_path, durable=True,
            max_page_count=settings.sqlite_max_pages or None))
        return cls(pool, store)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def close(self) -> None:
        try:
            await self.run(self.store.close)
        finally:
            self._pool.shutdown(wait=False)


SETTINGS = web.AppKey("settings", Settings)
HOOKS = web.AppKey("hooks", ApiHooks)
DB = web.AppKey("db", Database)
HTTP = web.AppKey("http", aiohttp.ClientSession)
TRACKING_KEY = web.AppKey("tracking_key", str)
CERTS = web.AppKey("certs", dict[str, bytes])


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_response(request: web.Request, status: int, message: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    resp = json_response({"error": message, "path": request.path, "method": request.method,
                          "timestamp": rfc3339(dt.datetime.now(dt.UTC))}, status, headers)
    if status == 413:
        # Close rather than keep the connection: aiohttp would otherwise read on through the
        # rest of the refused body to reuse it.
        resp.force_close()
    return resp


class ApiError(Exception):
    """Raised by handlers to answer an error with the standard body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answers the one JSON shape, aiohttp's own 404/405/413 included; one log line
    per 5xx. No access log: a line per request costs too much under bursts."""
    with structlog.contextvars.bound_contextvars(http_request_id=uuid.uuid4().hex):
        return await _answer(request, handler)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    headers: dict[str, str] | None = None
    try:
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
    except Exception as exc:
        log.exception("unhandled error", status=500, path=request.path, method=request.method)
        telemetry.capture(exc)
        return error_response(request, 500, "internal error; see the service log")
    if status >= 500:
        log.error("request failed", status=status, path=request.path, method=request.method,
                  error=message)
    return error_response(request, status, message, headers)


def require_key(request: web.Request) -> None:
    """🔑 routes: constant-time compare; an unset API_KEY never opens them."""
    expected = request.app[SETTINGS].api_key
    # aiohttp decodes header bytes with surrogateescape: encode them back the same way.
    given = request.headers.get("x-api-key", "").encode("utf-8", "surrogateescape")
    if not expected or not hmac.compare_digest(given, expected.encode()):
        raise ApiError(401, "missing or invalid x-api-key")


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    db = await Database.open(settings)
    try:
        app[DB] = db
        app[TRACKING_KEY] = settings.tracking_key or await db.run(
            db.store.get_or_create_setting, "tracking_key", tracking.new_key)
        app[CERTS] = {}
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=CERT_FETCH_TIMEOUT),
                headers={"User-Agent": "sesd"}) as http:
            app[HTTP] = http
            yield
    finally:
        await db.close()


def create_app(settings: Settings, hooks: ApiHooks | None = None) -> web.Application:
    from .handlers import add_routes

    app = web.Application(middlewares=[errors], client_max_size=settings.max_request_bytes)
    app[SETTINGS] = settings
    app[HOOKS] = hooks or ApiHooks()
    app.cleanup_ctx.append(_resources)
    add_routes(app)
    return app
