"""The aiohttp application: state, middlewares (errors, auth) and routes."""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import orjson
import structlog
from aiohttp import web

from .. import telemetry, tracking
from ..config import Settings
from ..store import Store

T = TypeVar("T")
log = structlog.get_logger()


def _noop() -> None:
    return None


@dataclass(frozen=True)
class ApiHooks:
    """How the API reaches the other processes (no-ops in tests of the app alone)."""

    nudge: Callable[[], None] = _noop  # work stored for now: wake the scheduler
    stopped: Callable[[], None] = _noop  # a topic stopped: the sender re-checks what it holds
    health: Callable[[], dict[str, dict[str, Any]]] | None = None


class Database:
    """The API's apsw connection, used only from one worker thread: SQLite waits (busy timeout,
    fsync) never block the event loop."""

    def __init__(self, settings: Settings) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sesd-api-db")
        self.store: Store = self._pool.submit(
            Store, settings.db_path, durable=True,
            max_page_count=settings.sqlite_max_pages or None).result()

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self._pool.submit(self.store.close).result()
        self._pool.shutdown()


SETTINGS = web.AppKey("settings", Settings)
HOOKS = web.AppKey("hooks", ApiHooks)
DB = web.AppKey("db", Database)
HTTP = web.AppKey("http", aiohttp.ClientSession)
TRACKING_KEY = web.AppKey("tracking_key", str)
CERTS = web.AppKey("certs", dict)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


def error_response(request: web.Request, status: int, message: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": message, "path": request.path, "method": request.method,
                          "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
                          .replace("+00:00", "Z")}, status, headers)


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
    structlog.contextvars.bind_contextvars(http_request_id=uuid.uuid4().hex)
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(request, exc.status, exc.message, exc.headers)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_request_mb
        return error_response(request, 413, f"request body is larger than {limit:g} MB")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Keep headers such as Allow (405); the body is ours, so drop the exception's own
        # Content-Type/Length (passing Content-Type twice makes web.Response raise: a 500).
        headers = {k: v for k, v in exc.headers.items()
                   if k.lower() not in ("content-type", "content-length")}
        return error_response(request, exc.status, exc.reason, headers or None)
    except Exception as exc:
        log.exception("unhandled error", path=request.path, method=request.method)
        telemetry.capture(exc)
        return error_response(request, 500, "internal error; see the service log")
    finally:
        structlog.contextvars.unbind_contextvars("http_request_id")


def require_key(request: web.Request) -> None:
    """🔑 routes: constant-time compare; an unset API_KEY never opens them."""
    expected = request.app[SETTINGS].api_key
    given = request.headers.get("x-api-key", "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "missing or invalid x-api-key")


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    db = Database(settings)
    app[DB] = db
    app[TRACKING_KEY] = settings.tracking_key or await db.run(
        db.store.get_or_create_setting, "tracking_key", tracking.new_key)
    app[HTTP] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5),
                                      headers={"User-Agent": "sesd"})
    app[CERTS] = {}
    yield
    await app[HTTP].close()
    db.close()


def create_app(settings: Settings, hooks: ApiHooks | None = None) -> web.Application:
    from . import handlers

    app = web.Application(middlewares=[errors], client_max_size=settings.max_request_bytes)
    app[SETTINGS] = settings
    app[HOOKS] = hooks or ApiHooks()
    app.cleanup_ctx.append(_resources)
    handlers.add_routes(app)
    return app
