"""The per-message options of `POST /v1/messages` beyond the Go API (SPEC "Message options"):
stream and list, the sender fields, extra headers and SES tags, tracking switches, the text part.

Each check refuses, with the field's location, what SES would refuse later (so a message never
fails at SES for a shape intake could have seen) or what would change the mail's meaning (a
header sesd owns, a From the operator did not allow).
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from email.header import Header
from typing import Any

from ..addresses import CONTROL_CHARS, AddressError, canonical_address
from ..messages import BULK, DEFAULT_LIST, STREAMS
from .checks import ValidationError, canonical_addresses, quote

LIST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
CONFIG_SET = re.compile(r"[A-Za-z0-9_-]{1,64}")
TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")
# RFC 5322 field name, as SES's MessageHeader takes it: printable ASCII but ":", 1 to 126.
HEADER_NAME = re.compile(r"[!-9;-~]{1,126}")
MAX_HEADERS = 10  # SES takes 15 per message; sesd adds up to 4 (X-Request-ID, List-*)
MAX_HEADER_VALUE = 870  # SES's documented cap on a header value (encoded)
MAX_TAGS = 50
MAX_REPLY_TO = 10
MAX_DISPLAY_NAME = 200
# Headers sesd writes itself, or that say who the message is from and to: a client may not set
# them (one would be written twice, or the message would claim what it is not).
RESERVED_HEADERS = frozenset({
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "mime-version", "return-path",
    "dkim-signature", "x-request-id", "reply-to", "sender", "list-id",
})
RESERVED_PREFIXES = ("content-", "list-unsubscribe", "x-ses-")


@dataclass(frozen=True)
class SenderRules:
    """Who may be a message's From: lower-cased addresses and "@domain"s."""

    allowed: frozenset[str]

    def allows(self, address: str) -> bool:
        address = address.lower()
        return address in self.allowed or "@" + address.rpartition("@")[2] in self.allowed


def _bool(msg: dict[str, Any], name: str, where: str, default: bool) -> bool:
    value = msg.get(name, default)
    if not isinstance(value, bool):
        raise ValidationError(f"{where}.{name} must be true or false")
    return value


def stream(msg: dict[str, Any], where: str) -> str:
    value = msg.get("stream", BULK)
    if value not in STREAMS:
        raise ValidationError(f"{where}.stream must be \"bulk\" or \"transactional\"")
    return str(value)


def list_id(msg: dict[str, Any], where: str) -> str:
    value = msg.get("list", DEFAULT_LIST)
    if not isinstance(value, str) or not LIST_ID.fullmatch(value):
        raise ValidationError(f"{where}.list must be 1 to 64 letters, digits, '.', '_' or '-'")
    if value.lower() == "all":
        # "all" is the suppression scope of every message: an unsubscribe from a list of that
        # name would stop transactional mail too.
        raise ValidationError(f"{where}.list must not be \"all\" (the scope of every list)")
    return value


def sender(msg: dict[str, Any], where: str, rules: SenderRules) -> str:
    """`from` as SES will take it: "addr" or "Name <addr>" with a canonical address."""
    value = msg.get("from")
    if value is None:
        return ""
    if not isinstance(value, str) or not value.strip() or CONTROL_CHARS.search(value):
        raise ValidationError(f"{where}.from must be an address or \"Name <address>\"")
    name, address = email.utils.parseaddr(value.strip())
    try:
        address = canonical_address(address)
    except AddressError as exc:
        raise ValidationError(f"{where}.from: {exc}") from None
    if len(name) > MAX_DISPLAY_NAME:
        raise ValidationError(f"{where}.from: the display name is longer than "
                              f"{MAX_DISPLAY_NAME} characters")
    if not rules.allows(address):
        raise ValidationError(f"{where}.from {quote(address)} is not an allowed sender (set "
                              "ALLOWED_SENDERS to the addresses and @domains that may send)")
    return email.utils.formataddr((name, address)) if name else address


def reply_to(msg: dict[str, Any], where: str) -> tuple[str, ...]:
    value = msg.get("replyTo")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or len(items) > MAX_REPLY_TO:
        raise ValidationError(f"{where}.replyTo must be an address or a list of 1 to "
                              f"{MAX_REPLY_TO} addresses")
    return tuple(canonical_addresses(items, f"{where}.replyTo"))


def encoded_header(value: str) -> str:
    """A header value as SES takes it: printable ASCII; anything else as RFC 2047 words."""
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(maxlinelen=10_000)


def _pairs(msg: dict[str, Any], field: str, where: str, most: int) -> dict[Any, Any]:
    """`msg[field]`: an object of at most `most` name: value pairs; empty when absent."""
    value = msg.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > most:
        raise ValidationError(f"{where}.{field} must be an object of at most {most} "
                              "name: value pairs")
    return value


def headers(msg: dict[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, text in _pairs(msg, "headers", where, MAX_HEADERS).items():
        at = f"{where}.headers[{quote(name, 60)}]"
        if not HEADER_NAME.fullmatch(name):
            raise ValidationError(f"{at}: a header name is 1 to 126 printable ASCII characters "
                                  "without ':' or spaces")
        lowered = name.lower()
        if lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_PREFIXES):
            raise ValidationError(f"{at}: {name} is set by sesd (or by its own field) and "
                                  "cannot be given as a header")
        if lowered in seen:
            raise ValidationError(f"{at}: given twice")
        seen.add(lowered)
        if not isinstance(text, str) or CONTROL_CHARS.search(text):
            raise ValidationError(f"{at} must be a string without line breaks or control "
                                  "characters")
        if len(encoded_header(text)) > MAX_HEADER_VALUE:
            raise ValidationError(f"{at} is longer than {MAX_HEADER_VALUE} characters once "
                                  "encoded for SES")
        out.append((name, text))
    return tuple(out)


def tags(msg: dict[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    out = []
    for name, text in _pairs(msg, "tags", where, MAX_TAGS).items():
        if not TAG.fullmatch(name) or not isinstance(text, str) or not TAG.fullmatch(text):
            raise ValidationError(f"{where}.tags[{quote(name, 60)}]: SES tag names and values "
                                  "are 1 to 256 letters, digits, '_' or '-'")
        out.append((name, text))
    return tuple(out)


def config_set(msg: dict[str, Any], where: str) -> str:
    value = msg.get("configurationSet")
    if value is None:
        return ""
    if not isinstance(value, str) or not CONFIG_SET.fullmatch(value):
        raise ValidationError(f"{where}.configurationSet must be 1 to 64 letters, digits, '_' "
                              "or '-'")
    return value


def tracking(msg: dict[str, Any], where: str) -> tuple[bool, bool]:
    return _bool(msg, "trackOpens", where, True), _bool(msg, "trackClicks", where, True)


def text(msg: dict[str, Any], where: str) -> str | None:
    value = msg.get("text")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{where}.text must be a non-empty string")
    return value
