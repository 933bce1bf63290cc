"""What every API module shares: app state keys, the error type, responses and auth.

A leaf of the API package: it imports nothing from ``sesd.api``, so handlers and the app both
import it and never each other's upper floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sized
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import orjson
import structlog
from aiohttp import web

from ..config import Settings
from ..database import Database
from ..sns import CertificateCache
from .opens import OpenCounter

__all__ = ["Database"]  # the app's DB key holds one; re-exported for the API's modules

H = TypeVar("H", bound=Sized)
log = structlog.get_logger()

# Longest slice of a client's own input that an answer or a log line repeats back: a 2 MB
# field must not become a 2 MB error body or log line.
REFLECT_LIMIT = 200
# Largest body an unauthenticated route reads: an SNS message is at most 256 KB, and its JSON
# envelope escapes it (each quote or backslash doubles), plus the envelope's own fields.
SNS_MESSAGE_MAX = 256 * 1024
PUBLIC_BODY_LIMIT = 2 * SNS_MESSAGE_MAX + 16 * 1024


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


class LogThrottle:
    """At most `burst` lines per `window` seconds for one kind of log line; the next line let
    through says how many were held back. Refusals a client can cause cost no unbounded log."""

    def __init__(self, burst: int = 5, window: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._burst = burst
        self._window = window
        self._clock = clock
        self._started = -window
        self._lines = 0
        self._held = 0

    def admit(self) -> int | None:
        """None: drop this line. Else log it, with the count of lines held back before it."""
        now = self._clock()
        if now - self._started >= self._window:
            self._started, self._lines = now, 0
        if self._lines >= self._burst:
            self._held += 1
            return None
        self._lines += 1
        held, self._held = self._held, 0
        return held


SETTINGS = web.AppKey("settings", Settings)
HOOKS = web.AppKey("hooks", ApiHooks)
DB = web.AppKey("db", Database)
HTTP = web.AppKey("http", aiohttp.ClientSession)
TRACKING_KEY = web.AppKey("tracking_key", str)
CERTS = web.AppKey("certs", CertificateCache)
OPENS = web.AppKey("opens", OpenCounter)
REFUSALS = web.AppKey("refusals", LogThrottle)


class ApiError(Exception):
    """Raised by handlers to answer an error with the standard body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def clip(value: object, limit: int = REFLECT_LIMIT) -> str:
    """A client-supplied value as it may appear in an answer or a log: repr'd, cut short."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text)} characters)"
    return text


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_response(request: web.Request, status: int, message: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    resp = json_response({"error": clip(message, 4 * REFLECT_LIMIT), "path": clip(request.path),
                          "method": clip(request.method), "timestamp":
                          rfc3339(dt.datetime.now(dt.UTC))}, status, headers)
    if status == 413:
        # Close rather than keep the connection: aiohttp would otherwise read on through the
        # rest of the refused body to reuse it.
        resp.force_close()
    return resp


def require_key(request: web.Request) -> None:
    """🔑 routes: constant-time compare; an unset API_KEY never opens them."""
    expected = request.app[SETTINGS].api_key
    # aiohttp decodes header bytes with surrogateescape: encode them back the same way.
    given = request.headers.get("x-api-key", "").encode("utf-8", "surrogateescape")
    if not expected or not hmac.compare_digest(given, expected.encode()):
        raise ApiError(401, "missing or invalid x-api-key")


def require_size(request: web.Request) -> None:
    """🔑 bodies: 413 past MAX_REQUEST_MB by their Content-Length, before anything is read (a
    chunked one is cut off by client_max_size as it is read)."""
    settings = request.app[SETTINGS]
    if (request.content_length or 0) > settings.max_request_bytes:
        raise ApiError(413, f"request body is larger than {settings.max_request_mb:g} MB")


async def read_capped(request: web.Request, limit: int) -> bytes:
    """The body of an unauthenticated request, refused with 413 past `limit` bytes: by its
    Content-Length before reading anything, and while reading when it is chunked."""
    if (request.content_length or 0) > limit:
        raise ApiError(413, f"request body is larger than {limit // 1024} KB")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is larger than {limit // 1024} KB")
        chunks.append(chunk)
    return b"".join(chunks)


@contextlib.asynccontextmanager
async def every(interval: float, job: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """`job` every `interval` seconds while the block runs, and once more after it."""

    async def repeat() -> None:
        while True:
            await asyncio.sleep(interval)
            await job()

    task = asyncio.create_task(repeat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await job()


async def add_hits(db: Database, add: Callable[[H], None], hits: H, failure: str,
                   unit: str) -> None:
    """Adds replays counted in memory to their rows; a failure is logged as `failure` with the
    number of `unit`s lost, never raised: counts are a nicety, never let them take the API down."""
    if not hits:
        return
    try:
        await db.run(add, hits)
    except Exception as exc:
        log.warning(failure, error=clip(str(exc)), **{unit: len(hits)})
