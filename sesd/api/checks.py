"""What every input check shares: the error it raises and how it shows a client's value."""

from __future__ import annotations

import orjson


class ValidationError(ValueError):
    """The request is invalid; the message says where and why."""


def quote(value: str, limit: int = 100) -> str:
    """A value shown in an error message: JSON-quoted, cut short."""
    return orjson.dumps(value[:limit] + ("…" if len(value) > limit else "")).decode()
