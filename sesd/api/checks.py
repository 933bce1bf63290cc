"""What every input check shares: the error it raises and how it shows a client's value."""

from __future__ import annotations

from typing import Any

from ..addresses import AddressError, canonical_address, shown


class ValidationError(ValueError):
    """The request is invalid; the message says where and why."""


def quote(value: str, limit: int = 100) -> str:
    """A value shown in an error message: JSON-quoted, cut short (as addresses.shown does)."""
    return shown(value, limit)


def canonical_addresses(items: list[Any], where: str) -> list[str]:
    """Each item, a string, as its canonical address; refused at `where[i]` otherwise."""
    out: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ValidationError(f"{where}[{i}] must be a string")
        try:
            out.append(canonical_address(item.strip()))
        except AddressError as exc:
            raise ValidationError(f"{where}[{i}]: {exc}") from None
    return out
