"""What every transport takes and gives back; the sender sees nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import SendError

# The one template variable of a bulk send. The pixel URL is the only per-recipient part of a
# bulk message; everything else is identical for every entry.
PIXEL_VARIABLE = "sesdPixel"
PIXEL_PLACEHOLDER = "{{" + PIXEL_VARIABLE + "}}"

# SES refuses a SendBulkEmail call with more entries than this.
MAX_BULK_ENTRIES = 50


@dataclass(frozen=True, slots=True)
class Email:
    """One SendEmail: final HTML, tracking pixel already inside."""

    request_id: int
    to: str
    subject: str
    html: str


@dataclass(frozen=True, slots=True)
class BulkEntry:
    """One recipient of a bulk send; `pixel_url` replaces the placeholder in the template."""

    request_id: int
    to: str
    pixel_url: str


@dataclass(frozen=True, slots=True)
class EntryResult:
    """What became of one bulk entry: a message id, or an error classified like a whole call."""

    request_id: int
    message_id: str | None
    error: SendError | None


class Transport(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, email: Email) -> str:
        """Send one message; returns the provider's message id, raises a SendError subclass."""
        ...

    async def send_bulk(
        self, subject: str, html_template: str, entries: Sequence[BulkEntry]
    ) -> list[EntryResult]:
        """Send one template to up to MAX_BULK_ENTRIES recipients; one result per entry, in
        order. Raises a SendError subclass when the whole call failed."""
        ...

    async def max_send_rate(self) -> float | None:
        """The provider's sending-rate quota in messages per second, if it has one."""
        ...


def bulk_safe(subject: str, html_template: str) -> bool:
    """Whether a message can go out as a bulk template without changing its text.

    SES renders the subject and the HTML of a bulk send as Handlebars templates, so any `{{`
    other than the pixel placeholder would be eaten (rendered empty) by SES. Such content must go
    out one SendEmail at a time.
    """
    return "{{" not in subject and "{{" not in html_template.replace(PIXEL_PLACEHOLDER, "")
