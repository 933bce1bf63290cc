"""Per-process logging and error reporting, set up again in every child after spawn."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from .config import Settings

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def setup(settings: Settings, role: str) -> structlog.stdlib.BoundLogger:
    """Configure structlog (and Sentry when a DSN is set) for this process; return its logger."""
    level = _LEVELS.get(settings.log_level, logging.INFO)
    renderer: Any
    if settings.log_format == "json":
        try:
            import orjson

            renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
            factory: Any = structlog.BytesLoggerFactory(sys.stderr.buffer)
        except ImportError:  # pragma: no cover - orjson is a dependency
            renderer = structlog.processors.JSONRenderer()
            factory = structlog.PrintLoggerFactory(sys.stderr)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        # Cached per process: each child runs this after spawn, before its first log line, and
        # no logger object crosses a process boundary.
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(role=role)
    # Libraries that log through the standard library (aiohttp, botocore) go to stderr at WARNING.
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr,
                        format=f"%(asctime)s {role} %(name)s %(levelname)s %(message)s")
    if settings.sentry_dsn:
        setup_sentry(settings, role)
    return structlog.get_logger()


def setup_sentry(settings: Settings, role: str, *, transport: Any = None) -> None:
    """Errors only, and nothing private in them: no local variables (a frame of the API holds
    request bodies, addresses and keys), no request data, no secret from the settings.
    `transport` replaces the network one (tests)."""
    import sentry_sdk

    secrets = settings.secrets()

    def scrub(event: Any, hint: Any) -> Any:
        event.pop("request", None)
        return _redact(event, secrets)

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.env,
        # Only errors: tracing every e-mail would cost more than sending it.
        traces_sample_rate=0.0,
        server_name=None,
        include_local_variables=False,
        include_source_context=False,  # source lines may quote values too; PII stays off (default)
        max_request_body_size="never",
        # The aiohttp integration would attach every request (and its body) to events.
        auto_enabling_integrations=False,
        before_send=scrub,
        transport=transport,
    )
    sentry_sdk.set_tag("role", role)


def _redact(value: Any, secrets: list[str]) -> Any:
    """Every string in an event with each secret value replaced (an exception message or a
    breadcrumb may quote one)."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "<redacted>")
        return value
    if isinstance(value, dict):
        return {k: _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secrets) for v in value]
    return value


def capture(exc: BaseException) -> None:
    """Report an unexpected error to Sentry if it is configured (a no-op otherwise)."""
    try:
        import sentry_sdk

        sentry_sdk.capture_exception(exc)
    except Exception:  # pragma: no cover - reporting must never take the process down
        pass
