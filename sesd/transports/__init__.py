"""Where messages go: Amazon SES v2, or `.eml` files in an outbox folder."""

from __future__ import annotations

from ..config import Settings
from .base import (
    MAX_BULK_ENTRIES,
    BulkEntry,
    BulkTemplate,
    Email,
    EntryResult,
    Envelope,
    Transport,
)

__all__ = [
    "MAX_BULK_ENTRIES",
    "BulkEntry",
    "BulkTemplate",
    "Email",
    "EntryResult",
    "Envelope",
    "Transport",
    "create_transport",
]


def create_transport(settings: Settings) -> Transport:
    """The transport `settings.email_transport` names; call start() before use."""
    # Imported here so that a process using the outbox never loads botocore.
    if settings.email_transport == "ses":
        from .ses import SesTransport

        return SesTransport(settings, read_timeout=settings.ses_timeout,
                            call_timeout=settings.ses_timeout + 10)
    if settings.email_transport == "outbox":
        from .outbox import OutboxTransport

        return OutboxTransport(settings)
    raise ValueError(f"unknown transport {settings.email_transport!r}")
