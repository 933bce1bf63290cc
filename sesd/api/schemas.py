"""Validation of API input: all of a request is checked before any of it is stored."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from email_validator import EmailNotValidError, validate_email

from ..store import NewMessage

MAX_TOPIC_LENGTH = 256
MAX_SUBJECT_LENGTH = 998  # RFC 5322 line limit: the subject becomes a header
MAX_IDEMPOTENCY_KEY = 200

# Control characters never belong in a value that becomes a header (CR/LF would inject headers).
# C1 controls (NEL \x85 among them) and U+2028/U+2029 are line boundaries too (str.splitlines):
# the outbox transport refuses them at send time, so refuse them here, before anything is stored.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The fast path: plain ASCII dot-atom local part, LDH domain labels and an alphabetic TLD. Every
# address it accepts, email-validator accepts too (a property test keeps it so), except names
# under special-use TLDs (.test, .local, .invalid…), which email-validator refuses and we allow
# for test and internal mail; anything else (IDN, quoted local parts) is decided by
# email-validator itself. Validating 100,000 addresses through it alone would take seconds.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}")


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


class ValidationError(ValueError):
    """The request is invalid; the message says where and why."""


def valid_email(address: str) -> bool:
    if _CONTROL.search(address) or len(address) > 254:
        return False
    if _PLAIN_EMAIL.fullmatch(address) and len(address.partition("@")[0]) <= 64:
        return True
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def parse_time(value: str) -> dt.datetime:
    """RFC 3339 with an explicit offset (`Z` or ±hh:mm); naive times are ambiguous, refused."""
    if not _RFC3339.fullmatch(value):
        raise ValueError("not an RFC 3339 time with an offset")
    text = value[:-1] + "+00:00" if value[-1] in "Zz" else value
    date, _, rest = text.replace("t", "T").replace(" ", "T").partition("T")
    if "." in rest:  # Python takes at most microseconds; RFC 3339 allows any precision
        clock, _, frac_zone = rest.partition(".")
        digits = re.match(r"\d+", frac_zone)
        assert digits is not None
        rest = f"{clock}.{digits.group()[:6].ljust(6, '0')}{frac_zone[digits.end():]}"
    return dt.datetime.fromisoformat(f"{date}T{rest}")


def _text(msg: dict[str, Any], field: str, where: str) -> str:
    value = msg.get(field)
    if not isinstance(value, str):
        raise ValidationError(f"{where}.{field} must be a string")
    value = value.strip()
    if not value:
        raise ValidationError(f"{where}.{field} must not be empty")
    return value


def parse_messages(body: Any, *, now_ms: int, max_recipients: int) -> list[NewMessage]:
    """Validate a `POST /v1/messages` body; raise ValidationError naming the first problem."""
    if not isinstance(body, dict):
        raise ValidationError("body must be a JSON object with a 'messages' list")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValidationError("messages must be a non-empty list")
    total = 0
    parsed: list[NewMessage] = []
    for index, msg in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(msg, dict):
            raise ValidationError(f"{where} must be an object")
        topic = _text(msg, "topicId", where)
        if len(topic) > MAX_TOPIC_LENGTH or _CONTROL.search(topic):
            raise ValidationError(f"{where}.topicId must be at most {MAX_TOPIC_LENGTH} characters "
                                  "without control characters")
        subject = _text(msg, "subject", where)
        if _CONTROL.search(subject):
            raise ValidationError(f"{where}.subject must not contain line breaks or control "
                                  "characters")
        if len(subject) > MAX_SUBJECT_LENGTH:
            raise ValidationError(f"{where}.subject must be at most {MAX_SUBJECT_LENGTH} "
                                  "characters")
        html = _text(msg, "content", where)
        emails = msg.get("emails")
        if not isinstance(emails, list) or not emails:
            raise ValidationError(f"{where}.emails must be a non-empty list of addresses")
        total += len(emails)
        if total > max_recipients:
            raise ValidationError(f"too many recipients: at most {max_recipients} per request")
        clean: list[str] = []
        for i, address in enumerate(emails):
            if not isinstance(address, str):
                raise ValidationError(f"{where}.emails[{i}] must be a string")
            address = address.strip()
            if not valid_email(address):
                raise ValidationError(f"{where}.emails[{i}]: {address[:100]!r} is not a valid "
                                      "e-mail address")
            clean.append(address)
        scheduled = now_ms
        if msg.get("scheduledAt") is not None:
            raw = msg["scheduledAt"]
            try:
                if not isinstance(raw, str):
                    raise ValueError
                when = parse_time(raw.strip())
            except (ValueError, OverflowError):
                raise ValidationError(f"{where}.scheduledAt must be an RFC 3339 time with an "
                                      f"offset, e.g. 2030-01-01T09:00:00+09:00; got {raw!r:.60}"
                                      ) from None
            # A time in the past sends now: never a silent drop.
            scheduled = max(now_ms, int(when.timestamp() * 1000))
        parsed.append(NewMessage(topic, clean, subject, html, scheduled))
    return parsed


def parse_hours(raw: str | None) -> int:
    if raw is None:
        return 24
    if not re.fullmatch(r"[0-9]{1,3}", raw) or not 1 <= int(raw) <= 168:
        raise ValidationError("hours must be a whole number from 1 to 168")
    return int(raw)
