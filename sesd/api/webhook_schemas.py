"""Validation of webhook registrations: all of the input's shape, before any DNS or storage.

Whether the host may be reached is decided apart (sesd.notifier.addresses), on the addresses
the name resolves to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from yarl import URL

from .. import events
from .schemas import ValidationError, quote

MAX_URL_LENGTH = 2048
# Whitespace and control characters never belong in a URL; yarl would quote some silently.
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True, slots=True)
class NewWebhook:
    url: str
    host: str
    port: int
    events: list[str] | None  # None: every event type


def parse_url(raw: Any) -> tuple[str, str, int]:
    """(url, host, port) of an endpoint URL, or ValidationError saying what is wrong."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValidationError("url is required: the endpoint's http(s) URL")
    url = raw.strip()
    if len(url) > MAX_URL_LENGTH:
        raise ValidationError(f"url must be at most {MAX_URL_LENGTH} characters "
                              f"(got {len(url)})")
    if _UNSAFE.search(url):
        raise ValidationError("url must not contain spaces or control characters")
    try:
        parsed = URL(url)
        port = parsed.port
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"url {quote(url)} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise ValidationError(f"url must be http:// or https://, got {quote(url)}")
    host = parsed.raw_host
    if not host or port is None:
        raise ValidationError(f"url {quote(url)} has no host")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise ValidationError("url must not carry credentials: receivers authenticate sesd "
                              "by the webhook-signature header")
    if parsed.raw_fragment:
        raise ValidationError("url must not have a #fragment")
    return url, host, port


def parse_events(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise ValidationError("events must be a non-empty list of event types (omit it for all)")
    chosen: list[str] = []
    for i, kind in enumerate(raw):
        if not isinstance(kind, str) or kind not in events.EVENT_TYPES:
            shown = quote(kind, 60) if isinstance(kind, str) else "a non-string"
            raise ValidationError(f"events[{i}] is {shown}; known types: "
                                  f"{', '.join(events.EVENT_TYPES)}")
        if kind not in chosen:
            chosen.append(kind)
    return chosen


def parse_webhook(body: Any) -> NewWebhook:
    if not isinstance(body, dict):
        raise ValidationError('body must be a JSON object: {"url": "...", "events": [...]}')
    unknown = sorted(set(body) - {"url", "events"})
    if unknown:
        raise ValidationError(f"unknown field {quote(str(unknown[0]), 60)}: "
                              "a webhook has url and events")
    url, host, port = parse_url(body.get("url"))
    return NewWebhook(url, host, port, parse_events(body.get("events")))
