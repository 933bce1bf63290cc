"""The aiohttp application: the error middleware, its resources (resources.py) and the routes."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import apsw
import structlog
from aiohttp import web

from .. import telemetry
from ..config import Settings
from ..errors import StorageFullError
from .base import HOOKS, PUBLIC_BODY_LIMIT, SETTINGS, ApiError, ApiHooks, clip, error_response
from .guard import GuardedRequestHandler
from .handlers import PUBLIC_ROUTES, add_routes
from .resources import resources

__all__ = ["ApiHooks", "create_app"]

log = structlog.get_logger()

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


def create_app(settings: Settings, hooks: ApiHooks | None = None) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=settings.max_request_bytes)
    app[SETTINGS] = settings
    app[HOOKS] = hooks or ApiHooks()
    app.cleanup_ctx.append(resources)
    add_routes(app)
    return app
