"""Validation of API input: all of a request is checked before any of it is stored."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import orjson

from ..addresses import CONTROL_CHARS, AddressError, canonical_address, key_of_canonical
from ..messages import BULK, Content
from ..store import STATUS_NAMES, NewMessage
from . import bodies, options
from .checks import ValidationError, canonical_addresses, quote

__all__ = ["ValidationError", "parse_messages", "quote"]

MAX_TOPIC_LENGTH = 256
MAX_SUBJECT_LENGTH = 998  # RFC 5322 line limit: the subject becomes a header
MAX_IDEMPOTENCY_KEY = 200

_CONTROL = CONTROL_CHARS  # no line break or control character in a value that becomes a header
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
_HOURS = re.compile(r"[0-9]{1,3}")


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
    """A required string field, not blank; returned as given (callers decide about trimming)."""
    if field not in msg or msg[field] is None:
        raise ValidationError(f"{where}.{field} is required")
    value = msg[field]
    if not isinstance(value, str):
        raise ValidationError(f"{where}.{field} must be a string")
    if not value.strip():
        raise ValidationError(f"{where}.{field} must not be empty")
    return value


def _emails(msg: dict[str, Any], where: str) -> list[str]:
    """The message's recipients in canonical form, each mailbox once: spellings that share a
    suppression key (BOB@Example.COM, bob@example.com) are one recipient, the first one kept."""
    emails = msg.get("emails")
    if not isinstance(emails, list) or not emails:
        raise ValidationError(f"{where}.emails must be a non-empty list of addresses")
    clean = canonical_addresses(emails, f"{where}.emails")
    keys = list(map(key_of_canonical, clean))
    if len(set(keys)) == len(keys):  # the usual case, decided at C speed
        return clean
    first: dict[str, str] = {}
    for key, address in zip(keys, clean, strict=True):
        first.setdefault(key, address)
    return list(first.values())


def _scheduled(msg: dict[str, Any], where: str, now_ms: int) -> int:
    raw = msg.get("scheduledAt")
    if raw is None:
        return now_ms
    try:
        if not isinstance(raw, str):
            raise ValueError("not a string")
        when = parse_time(raw.strip())
        at = int(when.timestamp() * 1000)
    except (ValueError, OverflowError):
        shown = quote(raw, 60) if isinstance(raw, str) else orjson.dumps(raw).decode()[:60]
        raise ValidationError(f"{where}.scheduledAt must be an RFC 3339 time with an offset, "
                              f"e.g. 2030-01-01T09:00:00+09:00; got {shown}") from None
    return max(now_ms, at)  # a time in the past sends now: never a silent drop


@dataclass(frozen=True)
class Rules:
    """What intake needs of the configuration."""

    max_recipients: int = 100_000
    senders: options.SenderRules = dataclasses.field(
        default_factory=lambda: options.SenderRules(frozenset()))


def _recipients(msg: dict[str, Any], where: str) -> tuple[list[str], list[str | None] | None]:
    """`emails` and `recipients` together, in canonical form, each mailbox once (the first
    spelling, and its data, win); the data list is None when no recipient has any."""
    emails: list[str] = []
    data: list[str | None] = []
    given = msg.get("emails")
    if given is not None or "recipients" not in msg:
        emails = _emails(msg, where)
        data = [None] * len(emails)
    entries = msg.get("recipients")
    if entries is not None:
        if not isinstance(entries, list) or not entries:
            raise ValidationError(f"{where}.recipients must be a non-empty list of "
                                  '{"email", "data"} objects')
        for i, entry in enumerate(entries):
            at = f"{where}.recipients[{i}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("email"), str):
                raise ValidationError(f"{at} must be an object with an \"email\" string")
            try:
                emails.append(canonical_address(entry["email"].strip()))
            except AddressError as exc:
                raise ValidationError(f"{at}.email: {exc}") from None
            data.append(bodies.recipient_data(entry.get("data"), f"{at}.data"))
    keys = list(map(key_of_canonical, emails))
    if len(set(keys)) != len(keys):
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        kept = sorted(first.values())
        emails, data = [emails[i] for i in kept], [data[i] for i in kept]
    return emails, (data if any(d is not None for d in data) else None)


def _message(msg: dict[str, Any], where: str, now_ms: int, rules: Rules) -> NewMessage:
    # The topic id is the client's key for stats and stop: kept exactly as given.
    topic = _text(msg, "topicId", where)
    if len(topic) > MAX_TOPIC_LENGTH or _CONTROL.search(topic):
        raise ValidationError(f"{where}.topicId must be at most {MAX_TOPIC_LENGTH} characters "
                              "without control characters")
    subject = _text(msg, "subject", where).strip()
    if _CONTROL.search(subject):
        raise ValidationError(f"{where}.subject must not contain line breaks or control "
                              "characters")
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise ValidationError(f"{where}.subject must be at most {MAX_SUBJECT_LENGTH} "
                              "characters")
    html = _text(msg, "content", where)
    stream = options.stream(msg, where)
    defaults = msg.get("data")
    if defaults is not None and not isinstance(defaults, dict):
        raise ValidationError(f"{where}.data must be an object")
    template = msg.get("template", False)
    if not isinstance(template, bool):
        raise ValidationError(f"{where}.template must be true or false")
    emails, data = _recipients(msg, where)
    template = template or defaults is not None or data is not None
    track_opens, track_clicks = options.tracking(msg, where)
    prepared, checks = bodies.prepare(subject, html, options.text(msg, where), where,
                                      template=template, track_clicks=track_clicks)
    if checks:
        bodies.check_recipients(where, checks, defaults or {}, emails, data,
                                bulk=stream == BULK)
    content = Content(
        topic_id=topic, subject=subject, html=html, text=prepared.text, stream=stream,
        list_id=options.list_id(msg, where), sender=options.sender(msg, where, rules.senders),
        reply_to=options.reply_to(msg, where), headers=options.headers(msg, where),
        tags=options.tags(msg, where), config_set=options.config_set(msg, where),
        template=template,
        data=bodies.recipient_data(defaults, f"{where}.data") if defaults else None,
        track_opens=track_opens, track_clicks=track_clicks, links=prepared.links)
    return NewMessage(topic, emails, subject, html, _scheduled(msg, where, now_ms), data,
                      content)


def parse_messages(body: Any, *, now_ms: int, max_recipients: int | None = None,
                   rules: Rules | None = None) -> list[NewMessage]:
    """Validate a `POST /v1/messages` body; raise ValidationError naming the first problem."""
    rules = rules or Rules()
    if max_recipients is not None:
        rules = dataclasses.replace(rules, max_recipients=max_recipients)
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
        # Count before validating: a huge list is refused without a pass over it.
        for field in ("emails", "recipients"):
            listed = msg.get(field)
            total += len(listed) if isinstance(listed, list) else 0
        if total > rules.max_recipients:
            raise ValidationError(f"too many recipients: at most {rules.max_recipients} per "
                                  "request")
        parsed.append(_message(msg, where, now_ms, rules))
    return parsed


def parse_hours(raw: str | None) -> int:
    if raw is None:
        return 24
    if not _HOURS.fullmatch(raw) or not 1 <= int(raw) <= 168:
        raise ValidationError("hours must be a whole number from 1 to 168")
    return int(raw)


MAX_PAGE = 1000
_CURSOR = re.compile(r"[0-9]{1,19}")
_LIMIT = re.compile(r"[0-9]{1,4}")


def parse_requests_query(query: Any) -> tuple[list[int], int, int]:
    """`?status=failed[,stopped…]&cursor=<id>&limit=<1..1000>` of the requests route:
    (status codes, the id to continue after, page size)."""
    raw_status = query.get("status")
    if raw_status is None or raw_status == "":
        statuses = list(range(len(STATUS_NAMES)))
    else:
        statuses = []
        for name in raw_status.split(","):
            if name not in STATUS_NAMES:
                raise ValidationError(f"status must be one or more of {', '.join(STATUS_NAMES)} "
                                      f"(comma-separated), got {quote(name, 40)}")
            statuses.append(STATUS_NAMES.index(name))
    cursor = query.get("cursor") or "0"
    if not _CURSOR.fullmatch(cursor) or int(cursor) >= 2**63:
        raise ValidationError("cursor must be the `next` value of the previous page")
    limit_raw = query.get("limit", "100")
    if not _LIMIT.fullmatch(limit_raw) or not 1 <= int(limit_raw) <= MAX_PAGE:
        raise ValidationError(f"limit must be a whole number from 1 to {MAX_PAGE}")
    return sorted(set(statuses)), int(cursor), int(limit_raw)
