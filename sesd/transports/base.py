"""What every transport takes and gives back; the sender sees nothing else.

The sender composes every message completely (compose.py): a transport only delivers. A bulk
call carries one template whose variables SES substitutes per entry — simple substitutions
only, which is all SES does with a template given in the request — and every entry brings all
of its variables (SES's merging of default data is not relied on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import SendError

# SES refuses a SendBulkEmail call with more entries than this.
MAX_BULK_ENTRIES = 50

Headers = tuple[tuple[str, str], ...]  # SES-ready: printable ASCII values (RFC 2047 encoded)


@dataclass(frozen=True, slots=True)
class Envelope:
    """What one SES call shares by necessity: SES cannot vary these per bulk entry."""

    sender: str  # FromEmailAddress: "addr" or "Name <addr>" (an encoded word when not ASCII)
    reply_to: tuple[str, ...] = ()
    config_set: str = ""  # "" sends none


@dataclass(frozen=True, slots=True)
class Email:
    """One SendEmail: the final message, tracking links already inside."""

    request_id: int
    to: str
    envelope: Envelope
    subject: str
    html: str
    text: str | None = None
    headers: Headers = ()  # X-Request-ID and the rest, as they go on the message
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class BulkTemplate:
    """The content of a bulk call: `{{{name}}}` variables each entry's data fills in."""

    subject: str
    html: str
    text: str | None = None


@dataclass(frozen=True, slots=True)
class BulkEntry:
    """One recipient of a bulk call."""

    request_id: int
    to: str
    data: str  # JSON object text: every variable of the template, for this recipient
    headers: Headers = ()
    tags: tuple[tuple[str, str], ...] = ()


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

    async def send_bulk(self, envelope: Envelope, template: BulkTemplate,
                        entries: Sequence[BulkEntry]) -> list[EntryResult]:
        """Send one template to up to MAX_BULK_ENTRIES recipients; one result per entry, in
        order. Raises a SendError subclass when the whole call failed."""
        ...

    async def max_send_rate(self) -> float | None:
        """The provider's sending-rate quota in messages per second, if it has one."""
        ...
