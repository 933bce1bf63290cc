"""A local stand-in for the Amazon SES v2 HTTP API.

The stand-in speaks the SES v2 REST-JSON protocol exactly as botocore's
``sesv2`` client sends it, so sesd (and anything else built on
botocore/aiobotocore) can point ``endpoint_url`` at it in tests and benchmarks.

Operations
    ``POST /v2/email/outbound-emails``         SendEmail      -> ``{"MessageId"}``
    ``POST /v2/email/outbound-bulk-emails``    SendBulkEmail  -> ``{"BulkEmailEntryResults"}``
    ``GET  /v2/email/account``                 GetAccount     -> ``SendQuota``, ``SendingEnabled``
    ``GET  /v2/email/suppression/addresses``   ListSuppressedDestinations (paged with NextToken)

Errors are answered the way botocore's rest-json parser reads them: an HTTP
status, an ``x-amzn-ErrorType: <Code>`` header and a ``{"message": ...}`` body.
Every SES call must carry an ``Authorization: AWS4-HMAC-SHA256 ...`` header
(the signature itself is not checked), else 403
``MissingAuthenticationTokenException``.

What is recorded
    Every accepted message is one entry of ``sends`` (one per SendEmail, one
    per bulk entry): ``t``, ``message_id``, ``to``, ``cc``, ``bcc``, ``from``,
    ``reply_to``, ``subject``, ``html``, ``text`` (rendered), ``headers``
    (``[name, value]`` pairs as SES puts them on the message: ``Simple.Headers``
    / ``Template.Headers``; for bulk the template's headers with each entry's
    ``ReplacementHeaders`` replacing those of the same name), ``request_id``
    (the ``X-Request-ID`` header), ``tags`` (``{name: value}``; bulk:
    ``DefaultEmailTags`` overridden by the entry's ``ReplacementTags``),
    ``config_set`` and ``bulk``. ``counters`` count calls per operation
    (``send_email_calls``, ``send_bulk_email_calls``...) and their outcomes.

ListSuppressedDestinations answers the ``suppressed`` knob, filtered by
``Reason``, ``StartDate`` and ``EndDate``, in pages of ``PageSize`` (at most
1000) chained by an opaque ``NextToken`` (a bad one: 400
``InvalidNextTokenException``).

Templates (``Content.Template`` / ``DefaultContent.Template``, inline
``TemplateContent`` only) are rendered as SES renders them: Handlebars, with
``{{x}}`` HTML-escaped and ``{{{x}}}`` raw; only text containing ``{{`` is
rendered. A bulk entry's ``ReplacementTemplateData`` is merged key by key into
the default ``TemplateData`` (nested objects recursively, arrays replaced):
what SES does, although its guide describes a whole-object fallback. SES
documents inline templates as "simple substitutions only" and answers block
helpers with 400 ``Template contains unsupported operations.``; so does the
stand-in unless ``template_blocks`` is set, which renders ``{{#if}}``,
``{{#each}}``... with pybars3 (whose parser takes seconds on a 100 KB template;
plain ``{{path}}`` templates are rendered without it). A variable missing from
the data (or null) is a *Rendering Failure*: SES answers success with a
MessageId but delivers nothing, so the message is not in ``sends`` but in
``rendering_failures`` (with its ``error``; counted in ``rendering_failures``,
still in the rate window). A false ``{{#if x}}`` on a missing ``x`` is not a
failure.

Validation (400 ``BadRequestException``, counted in ``bad_requests``): the
model's required members; addresses (From, Reply-To, To/Cc/Bcc) must be 7-bit
ASCII with an ``@`` (SES has no SMTPUTF8: one bad address anywhere fails a
whole SendBulkEmail); at most 50 recipients per message and 50 bulk entries;
headers per ``MessageHeader`` (name ``[!-9;-~]{1,126}``, value printable ASCII,
1..995, so non-ASCII must arrive RFC 2047-encoded), at most 15 per list, none
of the names SES sets itself (To, Cc, Bcc, From, Reply-To, Subject, Date,
Message-ID, MIME-Version, Content-Type, Content-Disposition, Return-Path) and
no repeat of a name SES allows once (List-Unsubscribe, List-Id...); tag names
and values ``[A-Za-z0-9_-]{1,256}``; ``TemplateData`` a JSON object of at most
262,144 characters; inline template content at most 1 MB; a simple message at
most 40 MB once base64-encoded. A ``TemplateName``/``TemplateArn`` without
``TemplateContent`` answers 404 ``NotFoundException`` (no stored templates).

Order of the checks for a send request: ``bulk_unsupported`` (404 HTML page,
SendBulkEmail only), authentication, validation, ``paused`` or not
``sending_enabled`` (400 ``SendingPausedException``), ``unverified_senders``
(400 ``MessageRejected``, the whole call), ``throttle_rate`` (spurious 429),
``max_rate`` (429 ``TooManyRequestsException``), ``error_rate`` (500
``InternalFailure``), ``reject_pattern`` (400 ``MessageRejected``; per entry
for bulk), rendering (a failure still answers success), acceptance.
The decision is made, and an accepted send is logged, at request arrival; the
``latency_ms`` / ``hang_seconds`` sleep happens afterwards, before answering.
So a client that times out on a hanging request has nevertheless had its
message accepted -- just like the ambiguous case with the real service.

Control endpoints (not part of SES)
    ``GET  /_standin/config``   current :class:`StandinConfig` as JSON
    ``POST /_standin/config``   JSON object with some :class:`StandinConfig`
                                field names; merged into the current config
                                (takes effect from the next SES call)
    ``GET  /_standin/log``      ``{"sends": [...], "rendering_failures": [...],
                                "counters": {...}, "next": n}``;
                                ``?since=<index>`` returns ``sends[index:]``
    ``POST /_standin/reset``    clear the log, counters and rate window

Run standalone::

    python -m sesd.testing.ses_standin --port 0 --max-rate 200 --latency-ms 30
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import dataclasses
import datetime
import email
import email.policy
import email.utils
import functools
import random
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
import pybars
import pybars._compiler as pybars_compiler
from aiohttp import web
from multidict import MultiMapping
from pybars._compiler import escape as pybars_escape

__all__ = [
    "STANDIN_KEY",
    "UNLIMITED_QUOTA",
    "Counters",
    "RenderingFailure",
    "SesStandin",
    "StandinConfig",
    "TemplateError",
    "main",
    "render_template",
    "start_standin",
]

MAX_RECIPIENTS_PER_MESSAGE = 50
UNLIMITED_QUOTA = 1_000_000.0  # MaxSendRate reported when nothing limits the rate
MAX_BULK_ENTRIES = 50
MAX_HEADERS = 15  # MessageHeaderList max in the sesv2 model
MAX_TEMPLATE_DATA = 262_144  # EmailTemplateData max, in characters
MAX_INLINE_TEMPLATE_BYTES = 1024 * 1024  # SES guide: inline template content up to 1 MB
MAX_MESSAGE_BYTES = 40 * 1024 * 1024  # SES v2: 40 MB per message after base64
MAX_SUPPRESSED_PAGE = 1000
SUPPRESSION_REASONS = ("BOUNCE", "COMPLAINT")


# --------------------------------------------------------------------------
# configuration


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_regex(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string or null")
    try:
        re.compile(value)
    except re.error as e:
        raise ValueError(f"{name} is not a valid regex: {e}") from None


def _suppressed_entries(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError("suppressed must be a list of {email, reason} objects")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - {"email", "reason", "last_update_time"}:
            raise ValueError(
                f"suppressed[{i}] must be an object with email, reason and optionally "
                "last_update_time"
            )
        addr, reason, when = item.get("email"), item.get("reason"), item.get("last_update_time")
        if not isinstance(addr, str) or not addr:
            raise ValueError(f"suppressed[{i}].email must be a non-empty string")
        if reason not in SUPPRESSION_REASONS:
            raise ValueError(f"suppressed[{i}].reason must be BOUNCE or COMPLAINT")
        if when is not None and (not _is_number(when) or when < 0):
            raise ValueError(f"suppressed[{i}].last_update_time must be epoch seconds")
        out.append({"email": addr, "reason": reason, "last_update_time": when})
    return tuple(out)


@dataclass(frozen=True)
class StandinConfig:
    """Behaviour knobs of the stand-in (all optional)."""

    #: max recipients accepted in any sliding one-second window (None = unlimited)
    max_rate: float | None = None
    #: sleep before answering every SES call
    latency_ms: float = 0
    #: probability of a 500 InternalFailure
    error_rate: float = 0
    #: probability of a spurious 429 TooManyRequestsException
    throttle_rate: float = 0
    #: probability of sleeping ``hang_seconds`` before answering
    hang_rate: float = 0
    hang_seconds: float = 30
    #: regex; a matching recipient is rejected with MessageRejected
    reject_pattern: str | None = None
    #: answer every send with 400 SendingPausedException
    paused: bool = False
    #: seed for the randomness (error/throttle/hang rates)
    seed: int | None = None
    #: what GetAccount reports as SendQuota.MaxSendRate; None: ``max_rate`` when set (the
    #: quota is what is enforced), else UNLIMITED_QUOTA (a stand-in that does not limit)
    max_send_rate_reported: float | None = None
    #: what GetAccount reports as SendQuota.Max24HourSend
    max_24_hour_send: float = 50000.0
    #: regex; a send whose From address matches answers 400 MessageRejected (unverified)
    unverified_senders: str | None = None
    #: SendBulkEmail answers 404 with an HTML page, as moto 5.2.5 does (no such route)
    bulk_unsupported: bool = False
    #: GetAccount's SendingEnabled; False also refuses sends, like ``paused``
    sending_enabled: bool = True
    #: GetAccount's ProductionAccessEnabled (False: the account is in the sandbox)
    production_access_enabled: bool = True
    #: render block helpers ({{#if}}, {{#each}}...) in inline templates instead of
    #: answering 400 "Template contains unsupported operations." as SES does
    template_blocks: bool = False
    #: what ListSuppressedDestinations answers: ``{"email", "reason", "last_update_time"?}``
    suppressed: tuple[dict[str, Any], ...] = ()

    @property
    def reported_send_rate(self) -> float:
        """SendQuota.MaxSendRate as GetAccount reports it."""
        if self.max_send_rate_reported is not None:
            return float(self.max_send_rate_reported)
        return float(self.max_rate) if self.max_rate is not None else UNLIMITED_QUOTA

    def __post_init__(self) -> None:
        if self.max_rate is not None and (not _is_number(self.max_rate) or self.max_rate < 0):
            raise ValueError("max_rate must be a non-negative number or null")
        for name in ("latency_ms", "hang_seconds", "max_send_rate_reported", "max_24_hour_send"):
            v = getattr(self, name)
            if name == "max_send_rate_reported" and v is None:
                continue
            if not _is_number(v) or v < 0:
                raise ValueError(f"{name} must be a non-negative number")
        for name in ("error_rate", "throttle_rate", "hang_rate"):
            v = getattr(self, name)
            if not _is_number(v) or not 0 <= v <= 1:
                raise ValueError(f"{name} must be a number between 0 and 1")
        _check_regex("reject_pattern", self.reject_pattern)
        _check_regex("unverified_senders", self.unverified_senders)
        for name in (
            "paused",
            "bulk_unsupported",
            "sending_enabled",
            "production_access_enabled",
            "template_blocks",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a boolean")
        if self.seed is not None and (
            not isinstance(self.seed, int) or isinstance(self.seed, bool)
        ):
            raise ValueError("seed must be an integer or null")
        # Arrives as a JSON list from /_standin/config; kept as a tuple (the config is frozen).
        object.__setattr__(self, "suppressed", _suppressed_entries(self.suppressed))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, changes: dict[str, Any]) -> StandinConfig:
        """A copy with ``changes`` applied; ValueError on unknown fields/bad values."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


@dataclass
class Counters:
    requests: int = 0  # SES API requests (any operation, any outcome)
    send_email_calls: int = 0  # SendEmail requests (any outcome)
    send_bulk_email_calls: int = 0  # SendBulkEmail requests (any outcome)
    get_account_calls: int = 0
    list_suppressed_calls: int = 0  # ListSuppressedDestinations requests
    accepted: int = 0  # delivered messages (one per SendEmail, one per bulk entry)
    accepted_recipients: int = 0
    rendering_failures: int = 0  # accepted but not delivered: template data lacked a variable
    throttled: int = 0  # 429 answers (max_rate or throttle_rate)
    errors: int = 0  # 500 InternalFailure answers
    rejected: int = 0  # MessageRejected (reject_pattern, unverified sender; bulk: per entry)
    paused: int = 0  # SendingPausedException answers
    bad_requests: int = 0  # 400 BadRequestException / 404 NotFoundException answers
    auth_failures: int = 0  # 403 MissingAuthenticationTokenException answers
    not_implemented: int = 0  # 404 HTML answers (bulk_unsupported)
    peak_window: int = 0  # max recipients accepted in any sliding 1 s window

    def count_call(self, calls: str) -> None:
        """One more SES request, and one more of its operation, counted in the field `calls`."""
        self.requests += 1
        setattr(self, calls, getattr(self, calls) + 1)

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------
# request validation (pure): each helper returns the clean value or raises _Refused


class _Refused(Exception):
    """A request SES would refuse as a whole; answered with ``status``/``code``."""

    def __init__(self, message: str, status: int = 400, code: str = "BadRequestException"):
        super().__init__(message)
        self.status = status
        self.code = code


def _clip(value: Any, limit: int = 80) -> str:
    """Reflected input, truncated: error texts never echo a whole hostile value."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _obj(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Refused(f"{field} must be an object")
    return value


def _text(value: Any, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _Refused(f"{field} must be a string")
    return value


def _address(addr: Any, field: str) -> str:
    if not isinstance(addr, str) or not addr:
        raise _Refused(f"{field} must be a non-empty string")
    if not addr.isascii():
        # SES has no SMTPUTF8 (RFC 6531): Punycode the domain, RFC 2047-encode a display name.
        raise _Refused(f"Invalid address in {field}: {_clip(addr)} (addresses must be 7-bit ASCII)")
    if "@" not in addr:
        raise _Refused(f"Invalid address in {field}: {_clip(addr)} (missing final '@domain')")
    return addr


def _address_list(value: Any, field: str, suffix: str = "") -> list[str]:
    """A list of addresses; ``field + suffix`` names it in an error (built only then)."""
    if value is None:
        return []
    if type(value) is not list:
        raise _Refused(f"{field}{suffix} must be a list of addresses")
    for a in value:
        # The hot path of every send: one cheap test, the precise message only on failure.
        if type(a) is not str or not a.isascii() or "@" not in a:
            _address(a, field + suffix)
    return value


def _destination(value: Any, field: str) -> tuple[list[str], list[str], list[str]]:
    if value is None:
        return [], [], []
    if type(value) is not dict:
        raise _Refused(f"{field} must be an object")
    return (
        _address_list(value.get("ToAddresses"), field, ".ToAddresses"),
        _address_list(value.get("CcAddresses"), field, ".CcAddresses"),
        _address_list(value.get("BccAddresses"), field, ".BccAddresses"),
    )


_HEADER_NAME = re.compile(r"[!-9;-~]{1,126}")  # MessageHeaderName: printable ASCII but ':'
_HEADER_VALUE = re.compile(r"[ -~]{1,995}")  # MessageHeaderValue
# SES sets these itself on Simple, Template and bulk sends, so they cannot be custom headers.
_SES_SET_HEADERS = frozenset(
    (
        "bcc", "cc", "content-disposition", "content-type", "date", "from", "message-id",
        "mime-version", "reply-to", "return-path", "subject", "to",
    )
)
# SES refuses a second occurrence of these in one message (SES guide: header fields).
_SINGLE_HEADERS = frozenset(
    (
        "accept-language", "acceptlanguage", "archived-at", "auto-submitted", "bounces-to",
        "comments", "content-alternative", "content-base", "content-class", "content-description",
        "content-disposition", "content-duration", "content-id", "content-language",
        "content-length", "content-location", "content-md5", "content-transfer-encoding",
        "content-type", "date",
        "delivered-to", "disposition-notification-options", "disposition-notification-to",
        "dkim-signature", "domainkey-signature", "errors-to", "from", "importance", "in-reply-to",
        "keywords", "list-archive", "list-help", "list-id", "list-owner", "list-post",
        "list-subscribe", "list-unsubscribe", "list-unsubscribe-post", "message-context",
        "message-id", "mime-version", "organization", "original-from", "original-message-id",
        "original-recipient", "original-subject", "precedence", "priority", "references",
        "reply-to", "return-path", "return-receipt-to", "sender", "solicitation", "sensitivity",
        "subject", "thread-index", "thread-topic", "user-agent", "vbr-info",
    )
)


def _headers(value: Any, field: str) -> list[list[str]]:
    """A MessageHeaderList as ``[name, value]`` pairs."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Refused(f"{field} must be a list of {{Name, Value}} objects")
    if len(value) > MAX_HEADERS:
        raise _Refused(f"{field} has {len(value)} headers; SES allows at most {MAX_HEADERS}")
    out: list[list[str]] = []
    once: set[str] | None = None
    for h in value:
        if not isinstance(h, dict):
            raise _Refused(f"{field} must be a list of {{Name, Value}} objects")
        name, val = h.get("Name"), h.get("Value")
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise _Refused(
                f"Invalid header name in {field}: {_clip(name)} "
                "(1 to 126 printable ASCII characters, no colon)"
            )
        if not isinstance(val, str) or not _HEADER_VALUE.fullmatch(val):
            raise _Refused(
                f"Invalid value of header {name} in {field}: 1 to 995 printable ASCII "
                "characters (encode anything else per RFC 2047)"
            )
        lname = name.lower()
        if lname in _SES_SET_HEADERS:
            raise _Refused(f"Header {name} in {field} is set by SES and cannot be a custom header")
        if lname in _SINGLE_HEADERS:
            if once is None:
                once = set()
            elif lname in once:
                raise _Refused(f"Header {name} appears more than once in {field}")
            once.add(lname)
        out.append([name, val])
    return out


def _merge_headers(template: list[list[str]], replacement: list[list[str]]) -> list[list[str]]:
    """An entry's ReplacementHeaders replace the template's headers of the same name."""
    if not replacement:
        return list(template)
    if not template:
        return replacement
    names = {n.lower() for n, _ in replacement}
    return [h for h in template if h[0].lower() not in names] + replacement


def _find_header(headers: list[list[str]], lname: str) -> str | None:
    for name, val in headers:
        if name.lower() == lname:
            return val
    return None


_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")  # MessageTag name and value rules


def _tags(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, list):
        raise _Refused(f"{field} must be a list of {{Name, Value}} objects")
    out: dict[str, str] = {}
    for tag in value:
        if not isinstance(tag, dict):
            raise _Refused(f"{field} must be a list of {{Name, Value}} objects")
        for part in ("Name", "Value"):
            v = tag.get(part)
            if not isinstance(v, str) or not _TAG.fullmatch(v):
                raise _Refused(
                    f"Invalid tag {part.lower()} in {field}: {_clip(v)} (1 to 256 ASCII "
                    "letters, digits, '_' or '-')"
                )
        out[tag["Name"]] = tag["Value"]
    return out


def _template_data(value: Any, field: str) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if not isinstance(value, str):
        raise _Refused(f"{field} must be a string holding a JSON object")
    if len(value) > MAX_TEMPLATE_DATA:
        raise _Refused(
            f"{field} is {len(value)} characters; SES allows at most {MAX_TEMPLATE_DATA}"
        )
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise _Refused(f"{field} is not valid JSON") from None
    if not isinstance(data, dict):
        raise _Refused(f"{field} must be a JSON object")
    return data


def _utf8_size(parts: tuple[str | None, ...], limit: int) -> int:
    """UTF-8 size of ``parts``; skips the encoding when the characters alone prove it fits."""
    chars = sum(len(p) for p in parts if p)
    if chars * 4 <= limit:  # a character is at most 4 bytes
        return chars
    return sum(len(p.encode("utf-8", "surrogatepass")) for p in parts if p)


def _check_message_size(parts: tuple[str | None, ...], field: str) -> None:
    raw_limit = MAX_MESSAGE_BYTES * 3 // 4  # the 40 MB are counted after base64
    if _utf8_size(parts, raw_limit) > raw_limit:
        raise _Refused(f"{field} is larger than SES's 40 MB message limit")


def _simple_parts(value: Any) -> tuple[str, str | None, str | None]:
    """Subject, HTML and text of ``Content.Simple`` (Subject and Body are required)."""
    try:
        subject = value["Subject"]["Data"]
        body = value["Body"]
        html, text = body.get("Html"), body.get("Text")
        if html is not None:
            html = html["Data"]
        if text is not None:
            text = text["Data"]
    except (KeyError, TypeError, AttributeError):
        raise _Refused(_simple_problem(value)) from None
    if (
        type(subject) is not str
        or (html is not None and type(html) is not str)
        or (text is not None and type(text) is not str)
    ):
        raise _Refused("Content.Simple Subject.Data and Body.Html/Text.Data must be strings")
    return subject, html, text


def _simple_problem(value: Any) -> str:
    """What is wrong with a ``Content.Simple`` the fast path could not read (off the hot path)."""
    if not isinstance(value, dict):
        return "Content.Simple must be an object"
    for part in ("Subject", "Body"):
        if not isinstance(value.get(part), dict):
            return f"Missing required parameter Content.Simple.{part}"
    if "Data" not in value["Subject"]:
        return "Missing required parameter Content.Simple.Subject.Data"
    return "Content.Simple.Body.Html and .Text must be objects with Data"


# --------------------------------------------------------------------------
# template rendering (pure)


class TemplateError(ValueError):
    """A template SES refuses at the request (400): bad syntax or unsupported operations."""


class RenderingFailure(Exception):
    """What SES reports as a Rendering Failure event: the message is accepted, never sent."""


class _Missing:
    """Stands for a variable absent from (or null in) the data.

    pybars renders ``None`` as "", but SES fails the message instead: this value is falsy
    (so ``{{#if x}}`` takes the else branch, as Handlebars does) and refuses to become text.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __bool__(self) -> bool:
        return False

    def __getitem__(self, key: Any) -> _Missing:
        return _Missing(f"{self.name}.{key}")

    def __str__(self) -> str:
        raise RenderingFailure(f"Attribute '{self.name}' is not present in the rendering data.")

    def __repr__(self) -> str:  # inside an array rendered whole: as the null it stands for
        return "None"


class _Data(dict[str, Any]):
    """Template data whose absent keys resolve to :class:`_Missing` instead of None."""

    def __missing__(self, key: str) -> _Missing:
        return _Missing(key)


def _as_data(value: Any, name: str = "") -> Any:
    if isinstance(value, dict):
        return _Data({k: _as_data(v, k) for k, v in value.items()})
    if isinstance(value, list):
        return [_as_data(v, name) for v in value]
    return _Missing(name) if value is None else value


def _merge_data(default: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Key by key, nested objects recursively, everything else (arrays too) replaced."""
    out = dict(default)
    for key, value in override.items():
        base = out.get(key)
        if isinstance(base, dict) and isinstance(value, dict):
            value = _merge_data(base, value)
        out[key] = value
    return out


_MUSTACHE = re.compile(r"\{\{(\{?)(.*?)\}\}(\}?)", re.DOTALL)


def _tags_of(text: str) -> list[str]:
    """The expression inside every ``{{...}}``; TemplateError on one left open."""
    if "{{" in _MUSTACHE.sub("", text):
        raise TemplateError("Template is invalid: a '{{' is never closed")
    return [m.group(2).strip().strip("~&").strip() for m in _MUSTACHE.finditer(text)]


def _check_template(text: str, blocks: bool) -> None:
    """Refuse what SES refuses at the request; pybars itself drops an unclosed block silently."""
    stack: list[str] = []
    for tag in _tags_of(text):
        if not tag or tag[0] == "!":
            continue
        operation = tag[0] in "#^/>" or tag == "else" or tag.startswith("else ") or (
            len(tag.split()) > 1
        )
        if operation and not blocks:
            raise TemplateError("Template contains unsupported operations.")
        if tag[0] in "#^":
            stack.append(tag)
        elif tag[0] == "/" and (not stack or _block_name(stack.pop()) != tag[1:].strip()):
            raise TemplateError(f"Template is invalid: unexpected {{{{{_clip(tag, 40)}}}}}")
    if stack:
        raise TemplateError(f"Template is invalid: {{{{{_clip(stack[-1], 40)}}}}} is never closed")


def _block_name(tag: str) -> str:
    """``if`` for ``#if vip``: what the closing ``{{/if}}`` must name."""
    words = tag[1:].split()
    return words[0] if words else ""


_COMPILER = pybars.Compiler()
# Names pybars resolves as helpers before looking at the data.
_HELPER_NAMES = frozenset(pybars_compiler._pybars_["helpers"]) | {"this", "else"}
_PLAIN_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*")


def _pybars_renderer(text: str) -> Callable[[Mapping[str, Any]], str]:
    # pybars (PyMeta) parses in superlinear time: ~20 ms for 2 KB, seconds for 100 KB.
    try:
        template = _COMPILER.compile(text)
    except Exception as e:
        raise TemplateError(f"Template is invalid: {_clip(str(e))}") from None
    # pybars registers every template as a module in sys.modules; only our cache may keep it.
    sys.modules.pop(template.__module__, None)

    def render(data: Mapping[str, Any]) -> str:
        scope = data if isinstance(data, _Data) else _as_data(dict(data))
        try:
            return str(template(scope))
        except RenderingFailure:
            raise
        except Exception as e:  # e.g. a variable named like a helper ("log") called without args
            raise RenderingFailure(f"Template rendering failed: {type(e).__name__}") from None

    return render


def _lazy_pybars_renderer(text: str) -> Callable[[Mapping[str, Any]], str]:
    """pybars, compiled only the first time the plain renderer needs it."""
    compiled: list[Callable[[Mapping[str, Any]], str]] = []

    def render(data: Mapping[str, Any]) -> str:
        if not compiled:
            compiled.append(_pybars_renderer(text))
        return compiled[0](data)

    return render


def _plain_renderer(
    text: str, fallback: Callable[[Mapping[str, Any]], str]
) -> Callable[[Mapping[str, Any]], str] | None:
    """A renderer for text whose every tag is ``{{path}}`` or ``{{{path}}}``, else None.

    Renders exactly what pybars renders (a property test holds the two together) in
    linear time, and hands the rare value it does not handle (an array, an object, a path
    through something other than objects) to ``fallback``.
    """
    if "\\{{" in text:  # an escaped mustache: leave it to pybars
        return None
    parts: list[tuple[str, tuple[str, ...], bool]] = []  # (literal before, path, escape it)
    pos = 0
    for m in _MUSTACHE.finditer(text):
        raw, name = bool(m.group(1)), m.group(2).strip()
        path = tuple(name.split("."))
        if raw != bool(m.group(3)) or not _PLAIN_PATH.fullmatch(name) or path[0] in _HELPER_NAMES:
            return None
        parts.append((text[pos : m.start()], path, not raw))
        pos = m.end()
    tail = text[pos:]

    def render(data: Mapping[str, Any]) -> str:
        out = []
        for literal, path, escape in parts:
            value: Any = data
            for i, segment in enumerate(path):
                if not isinstance(value, dict):
                    return fallback(data)
                value = value.get(segment)
                if value is None or isinstance(value, _Missing):
                    missing = ".".join(path[i:])
                    raise RenderingFailure(
                        f"Attribute '{missing}' is not present in the rendering data."
                    )
            kind = type(value)
            if kind is bool:
                value = "true" if value else "false"
            elif kind is int or kind is float:
                value = str(value)
            elif kind is not str:
                return fallback(data)  # objects and arrays: whatever pybars makes of them
            out.append(literal)
            out.append(pybars_escape(value) if escape else value)
        out.append(tail)
        return "".join(out)

    return render


@functools.lru_cache(maxsize=256)
def _renderer(text: str, blocks: bool) -> Callable[[Mapping[str, Any]], str]:
    _check_template(text, blocks)
    return _plain_renderer(text, _lazy_pybars_renderer(text)) or _pybars_renderer(text)


def render_template(
    text: str | None, data: Mapping[str, Any], *, blocks: bool = True
) -> str | None:
    """Render ``text`` with Handlebars as SES does (only when it contains ``{{``).

    ``{{x}}`` is HTML-escaped, ``{{{x}}}`` raw. Raises RenderingFailure when the output
    needs a variable that ``data`` lacks or holds as null, TemplateError when SES would
    refuse the template (``blocks=False``: any block helper, as for inline templates).
    """
    if not text or "{{" not in text:
        return text
    return _renderer(text, blocks)(data)


# --------------------------------------------------------------------------
# the stand-in

_JSON_HEADERS = {"Content-Type": "application/json"}
# What moto 5.2.5's server (werkzeug) answers for a route it does not know.
_NOT_FOUND_PAGE = (
    b"<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n"
    b"<p>The requested URL was not found on the server. If you entered the URL manually "
    b"please check your spelling and try again.</p>\n"
)


@dataclass(frozen=True)
class _Template:
    """Inline template content, checked; rendered once the send is accepted."""

    parts: tuple[str | None, ...]  # Subject, Html, Text
    # One renderer per part holding "{{" (looked up once per call, not once per bulk entry).
    renderers: tuple[Callable[[Mapping[str, Any]], str] | None, ...]
    data: dict[str, Any]

    def render(self, data: Mapping[str, Any]) -> list[str | None]:
        return [
            part if render is None else render(data)
            for part, render in zip(self.parts, self.renderers, strict=True)
        ]


class _BulkEntry(NamedTuple):
    to: list[str]
    cc: list[str]
    bcc: list[str]
    headers: list[list[str]]
    tags: dict[str, str]
    data: dict[str, Any]  # ReplacementTemplateData, parsed


class SesStandin:
    """In-memory SES v2 stand-in; ``app`` is the aiohttp application."""

    def __init__(self, config: StandinConfig = StandinConfig()) -> None:
        self.sends: list[dict[str, Any]] = []
        #: accepted messages SES would not deliver (template data lacked a variable)
        self.rendering_failures: list[dict[str, Any]] = []
        self.counters = Counters()
        # accepted (monotonic time, recipients) inside the last second
        self._window: collections.deque[tuple[float, int]] = collections.deque()
        self._window_sum = 0
        # SES-looking ids: "<ms>-<instance uuid prefix>-<sequence>-000000"
        self._instance = str(uuid.uuid4())[:23]
        self._seq = 0
        self._started = time.time()
        self._config = config
        self._rng = random.Random(config.seed)
        self._compile_patterns()
        self.app = self._make_app()

    # -- config ------------------------------------------------------------

    @property
    def config(self) -> StandinConfig:
        return self._config

    @config.setter
    def config(self, config: StandinConfig) -> None:
        old = self._config
        self._config = config
        self._compile_patterns()
        if config.seed is not None and config.seed != old.seed:
            self._rng = random.Random(config.seed)

    def _compile_patterns(self) -> None:
        cfg = self._config
        self._reject_re = re.compile(cfg.reject_pattern) if cfg.reject_pattern else None
        self._unverified_re = (
            re.compile(cfg.unverified_senders) if cfg.unverified_senders else None
        )

    def reset(self) -> None:
        self.sends.clear()
        self.rendering_failures.clear()
        self.counters = Counters()
        self._window.clear()
        self._window_sum = 0

    def peak_window(self) -> int:
        """Max recipients accepted in any sliding one-second window so far."""
        return self.counters.peak_window

    def log_snapshot(self, since: int = 0) -> dict[str, Any]:
        return {
            "sends": self.sends[since:],
            "rendering_failures": self.rendering_failures,
            "counters": self.counters.to_dict(),
            "next": len(self.sends),
        }

    # -- plumbing ----------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v2/email/outbound-emails", self._send_email)
        app.router.add_post("/v2/email/outbound-bulk-emails", self._send_bulk_email)
        app.router.add_get("/v2/email/account", self._get_account)
        app.router.add_get("/v2/email/suppression/addresses", self._list_suppressed)
        app.router.add_get("/_standin/config", self._get_config)
        app.router.add_post("/_standin/config", self._post_config)
        app.router.add_get("/_standin/log", self._get_log)
        app.router.add_post("/_standin/reset", self._post_reset)
        app[STANDIN_KEY] = self
        return app

    def _next_id(self) -> int:
        self._seq += 1
        return self._seq

    def _message_id(self) -> str:
        n = self._next_id()
        return f"{int(time.time() * 1000):016x}-{self._instance}-{n:012x}-000000"

    def _request_id(self) -> str:
        return f"{self._instance}-{self._next_id():012x}"

    def _ok(self, payload: dict[str, Any]) -> web.Response:
        return web.Response(
            body=orjson.dumps(payload),
            status=200,
            headers={"Content-Type": "application/json", "x-amzn-RequestId": self._request_id()},
        )

    def _error(self, status: int, code: str, message: str) -> web.Response:
        return web.Response(
            body=orjson.dumps({"message": message}),
            status=status,
            headers={
                "Content-Type": "application/json",
                "x-amzn-ErrorType": code,
                "x-amzn-RequestId": self._request_id(),
            },
        )

    def _refused(self, refusal: _Refused) -> web.Response:
        self.counters.bad_requests += 1
        return self._error(refusal.status, refusal.code, str(refusal))

    @staticmethod
    def _authorized(request: web.Request) -> bool:
        auth = request.headers.get("Authorization")
        return auth is not None and auth.startswith("AWS4-HMAC-SHA256")

    def _unauthorized(self) -> web.Response:
        self.counters.auth_failures += 1
        return self._error(
            403, "MissingAuthenticationTokenException", "Missing Authentication Token"
        )

    @staticmethod
    def _region(request: web.Request) -> str:
        m = re.search(r"Credential=[^/,]*/\d+/([^/,]+)/", request.headers.get("Authorization", ""))
        return (m.group(1) if m else "us-east-1").upper()

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            raise _Refused("Request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _Refused("Request body must be a JSON object")
        return body

    async def _answer(self, response: web.Response, hang: bool) -> web.Response:
        cfg = self._config
        delay = cfg.latency_ms / 1000.0
        if hang:
            delay += cfg.hang_seconds
        if delay > 0:
            await asyncio.sleep(delay)
        return response

    def _prune(self, now: float) -> None:
        w = self._window
        limit = now - 1.0
        while w and w[0][0] <= limit:
            self._window_sum -= w.popleft()[1]

    def _not_verified(self, request: web.Request, identity: str) -> web.Response:
        self.counters.rejected += 1
        return self._error(
            400,
            "MessageRejected",
            "Email address is not verified. The following identities failed the check in "
            f"region {self._region(request)}: {identity}",
        )

    def _gate(
        self, request: web.Request, now: float, n: int, sender: str
    ) -> web.Response | None:
        """Account-level refusals, in the documented order; None lets the send through."""
        cfg = self._config
        if cfg.paused or not cfg.sending_enabled:
            self.counters.paused += 1
            return self._error(400, "SendingPausedException", "Sending is paused for this account.")
        if self._unverified_re is not None:
            # SES checks the identity of the From address, whatever its display name.
            address = email.utils.parseaddr(sender)[1] or sender
            if self._unverified_re.search(address):
                return self._not_verified(request, address)
        if cfg.throttle_rate and self._rng.random() < cfg.throttle_rate:
            self.counters.throttled += 1
            return self._error(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
        self._prune(now)
        if cfg.max_rate is not None and self._window_sum + n > cfg.max_rate:
            self.counters.throttled += 1
            return self._error(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
        if cfg.error_rate and self._rng.random() < cfg.error_rate:
            self.counters.errors += 1
            return self._error(500, "InternalFailure", "An internal error occurred.")
        return None

    def _rejected_address(self, addresses: list[str]) -> str | None:
        r = self._reject_re
        if r is None:
            return None
        for a in addresses:
            if r.search(a):
                return a
        return None

    def _admit(self, now: float, n: int) -> None:
        """Account ``n`` accepted recipients at monotonic time ``now``."""
        if n <= 0:
            return
        self._window.append((now, n))
        self._window_sum += n
        if self._window_sum > self.counters.peak_window:
            self.counters.peak_window = self._window_sum

    def _deliver(
        self, entry: dict[str, Any], template: _Template | None, data: Mapping[str, Any] | None
    ) -> bool:
        """Render ``entry``'s template and log it as sent; False on a Rendering Failure."""
        if template is not None:
            assert data is not None
            try:
                entry["subject"], entry["html"], entry["text"] = template.render(data)
            except RenderingFailure as e:
                entry["error"] = str(e)
                self.rendering_failures.append(entry)
                self.counters.rendering_failures += 1
                return False
        self.sends.append(entry)
        self.counters.accepted += 1
        self.counters.accepted_recipients += len(entry["to"]) + len(entry["cc"]) + len(entry["bcc"])
        return True

    def _inline_template(self, value: Any, field: str) -> _Template:
        tpl = _obj(value, field)
        content = tpl.get("TemplateContent")
        if content is None:
            name = tpl.get("TemplateName") or tpl.get("TemplateArn")
            if name:
                raise _Refused(
                    f"Template {_clip(name)} does not exist (the stand-in keeps no stored "
                    "templates: send TemplateContent)",
                    404,
                    "NotFoundException",
                )
            raise _Refused(f"Missing required parameter {field}.TemplateContent")
        content = _obj(content, field + ".TemplateContent")
        parts = tuple(
            _text(content.get(k), f"{field}.TemplateContent.{k}")
            for k in ("Subject", "Html", "Text")
        )
        if _utf8_size(parts, MAX_INLINE_TEMPLATE_BYTES) > MAX_INLINE_TEMPLATE_BYTES:
            raise _Refused(f"{field}.TemplateContent is larger than SES's 1 MB inline limit")
        blocks = self._config.template_blocks
        try:
            renderers = tuple(_renderer(p, blocks) if p and "{{" in p else None for p in parts)
        except TemplateError as e:
            raise _Refused(str(e)) from None
        data = _template_data(tpl.get("TemplateData"), field + ".TemplateData")
        return _Template(parts, renderers, data)

    # -- SES operations ----------------------------------------------------

    async def _send_email(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        t = time.time()
        c = self.counters
        c.count_call("send_email_calls")
        if not self._authorized(request):
            return self._unauthorized()
        cfg = self._config
        hang = bool(cfg.hang_rate) and self._rng.random() < cfg.hang_rate
        try:
            body = await self._body(request)
            entry, template = self._parse_send_email(body)
        except _Refused as e:
            return await self._answer(self._refused(e), hang)
        to, cc, bcc = entry["to"], entry["cc"], entry["bcc"]
        n = len(to) + len(cc) + len(bcc)
        refusal = self._gate(request, now, n, entry["from"])
        if refusal is not None:
            return await self._answer(refusal, hang)
        bad = (
            self._rejected_address(to) or self._rejected_address(cc) or self._rejected_address(bcc)
        )
        if bad is not None:
            c.rejected += 1
            return await self._answer(
                self._error(
                    400,
                    "MessageRejected",
                    "Email address is not verified. The following identities failed "
                    f"the check in region {self._region(request)}: {bad}",
                ),
                hang,
            )
        mid = self._message_id()
        entry["t"] = t
        entry["message_id"] = mid
        # A Rendering Failure is decided after SES said yes: the call still succeeds.
        self._deliver(entry, template, template.data if template else None)
        self._admit(now, n)
        return await self._answer(self._ok({"MessageId": mid}), hang)

    def _parse_send_email(self, body: dict[str, Any]) -> tuple[dict[str, Any], _Template | None]:
        content = body.get("Content")
        if not isinstance(content, dict):
            raise _Refused("Missing required parameter Content")
        to, cc, bcc = _destination(body.get("Destination"), "Destination")
        reply_to = _address_list(body.get("ReplyToAddresses"), "ReplyToAddresses")
        tags = _tags(body.get("EmailTags"), "EmailTags")
        sender = body.get("FromEmailAddress")
        template: _Template | None = None
        subject = html = text = None
        if content.get("Simple") is not None:
            subject, html, text = _simple_parts(content["Simple"])
            if len(subject) + len(html or "") + len(text or "") > MAX_MESSAGE_BYTES // 8:
                _check_message_size((subject, html, text), "Content.Simple")  # may be too big
            headers = _headers(content["Simple"].get("Headers"), "Content.Simple.Headers")
        elif content.get("Template") is not None:
            template = self._inline_template(content["Template"], "Content.Template")
            headers = _headers(content["Template"].get("Headers"), "Content.Template.Headers")
        elif content.get("Raw") is not None:
            try:
                raw = base64.b64decode(_obj(content["Raw"], "Content.Raw").get("Data") or b"")
                msg = email.message_from_bytes(raw, policy=email.policy.default)
                headers = [[k, str(v)] for k, v in msg.items()]
                subject = msg.get("Subject")
                sender = sender or msg.get("From")
                if not (to or cc or bcc):
                    to = [a for _, a in email.utils.getaddresses(msg.get_all("To", []))]
                    cc = [a for _, a in email.utils.getaddresses(msg.get_all("Cc", []))]
                    bcc = [a for _, a in email.utils.getaddresses(msg.get_all("Bcc", []))]
                if not reply_to:
                    reply_to = [
                        a for _, a in email.utils.getaddresses(msg.get_all("Reply-To", []))
                    ]
                part = msg.get_body(("html",))
                html = part.get_content() if part is not None else None
                part = msg.get_body(("plain",))
                text = part.get_content() if part is not None else None
            except (ValueError, TypeError, binascii.Error, LookupError) as e:
                raise _Refused(f"Invalid raw message: {_clip(str(e))}") from None
            for field, addrs in (("To", to), ("Cc", cc), ("Bcc", bcc), ("Reply-To", reply_to)):
                _address_list(addrs, "Content.Raw ", field)
        else:
            raise _Refused("Content must contain one of Simple, Raw or Template")
        if not sender:
            raise _Refused("Missing required parameter FromEmailAddress")
        _address(sender, "FromEmailAddress")
        n = len(to) + len(cc) + len(bcc)
        if n == 0:
            raise _Refused("Destination must contain at least one recipient")
        if n > MAX_RECIPIENTS_PER_MESSAGE:
            raise _Refused(f"Recipient count exceeds {MAX_RECIPIENTS_PER_MESSAGE}.")
        request_id = _find_header(headers, "x-request-id")
        entry = {
            "t": None,
            "message_id": None,
            "to": to,
            "cc": cc,
            "bcc": bcc,
            "from": sender,
            "reply_to": reply_to,
            "subject": subject,
            "request_id": request_id,
            "config_set": body.get("ConfigurationSetName"),
            "tags": tags,
            "headers": headers,
            "html": html,
            "text": text,
            "bulk": False,
        }
        return entry, template

    async def _send_bulk_email(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        t = time.time()
        c = self.counters
        c.count_call("send_bulk_email_calls")
        cfg = self._config
        if cfg.bulk_unsupported:
            # An emulator without the route answers before looking at the request at all.
            c.not_implemented += 1
            return await self._answer(
                web.Response(status=404, body=_NOT_FOUND_PAGE, content_type="text/html",
                             charset="utf-8"),
                False,
            )
        if not self._authorized(request):
            return self._unauthorized()
        hang = bool(cfg.hang_rate) and self._rng.random() < cfg.hang_rate
        try:
            body = await self._body(request)
            shared, template, entries = self._parse_bulk(body)
        except _Refused as e:
            return await self._answer(self._refused(e), hang)
        # SES verifies the one From identity before any entry: an unverified one fails the call.
        total = sum(len(e.to) + len(e.cc) + len(e.bcc) for e in entries)
        refusal = self._gate(request, now, total, shared["from"])
        if refusal is not None:
            return await self._answer(refusal, hang)

        region = None
        results: list[dict[str, Any]] = []
        admitted = 0
        for entry in entries:
            all_rcpt = entry.to + entry.cc + entry.bcc
            n = len(all_rcpt)
            if n == 0 or n > MAX_RECIPIENTS_PER_MESSAGE:
                results.append(
                    {
                        "Status": "INVALID_PARAMETER",
                        "Error": f"Entry must have 1 to {MAX_RECIPIENTS_PER_MESSAGE} recipients.",
                    }
                )
                continue
            bad = self._rejected_address(all_rcpt)
            if bad is not None:
                c.rejected += 1
                if region is None:
                    region = self._region(request)
                results.append(
                    {
                        "Status": "MESSAGE_REJECTED",
                        "Error": "Email address is not verified. The following identities failed "
                        f"the check in region {region}: {bad}",
                    }
                )
                continue
            if not entry.data:
                data = template.data
            elif template.data:
                data = _merge_data(template.data, entry.data)
            else:
                data = entry.data
            headers = _merge_headers(shared["headers"], entry.headers)
            request_id = _find_header(headers, "x-request-id")
            mid = self._message_id()
            record = {
                "t": t,
                "message_id": mid,
                "to": entry.to,
                "cc": entry.cc,
                "bcc": entry.bcc,
                "from": shared["from"],
                "reply_to": shared["reply_to"],
                "subject": None,
                "request_id": request_id,
                "config_set": shared["config_set"],
                "tags": {**shared["tags"], **entry.tags} if entry.tags else shared["tags"],
                "headers": headers,
                "html": None,
                "text": None,
                "bulk": True,
            }
            self._deliver(record, template, data)
            admitted += n
            results.append({"Status": "SUCCESS", "MessageId": mid})
        self._admit(now, admitted)
        return await self._answer(self._ok({"BulkEmailEntryResults": results}), hang)

    def _parse_bulk(
        self, body: dict[str, Any]
    ) -> tuple[dict[str, Any], _Template, list[_BulkEntry]]:
        entries = body.get("BulkEmailEntries")
        if not isinstance(entries, list) or not entries:
            raise _Refused("Missing required parameter BulkEmailEntries")
        if len(entries) > MAX_BULK_ENTRIES:
            raise _Refused(f"BulkEmailEntries must contain at most {MAX_BULK_ENTRIES} entries.")
        if not all(isinstance(e, dict) for e in entries):
            raise _Refused("BulkEmailEntries must be a list of objects")
        sender = body.get("FromEmailAddress")
        if not sender:
            raise _Refused("Missing required parameter FromEmailAddress")
        _address(sender, "FromEmailAddress")
        default = _obj(body.get("DefaultContent"), "DefaultContent").get("Template")
        if not isinstance(default, dict):
            raise _Refused("Missing required parameter DefaultContent.Template")
        template = self._inline_template(default, "DefaultContent.Template")
        shared = {
            "from": sender,
            "reply_to": _address_list(body.get("ReplyToAddresses"), "ReplyToAddresses"),
            "tags": _tags(body.get("DefaultEmailTags"), "DefaultEmailTags"),
            "headers": _headers(default.get("Headers"), "DefaultContent.Template.Headers"),
            "config_set": body.get("ConfigurationSetName"),
        }
        parsed = []
        for i, e in enumerate(entries):
            field = f"BulkEmailEntries[{i}]"
            to, cc, bcc = _destination(e.get("Destination"), field + ".Destination")
            replacement = _obj(
                _obj(e.get("ReplacementEmailContent"), field + ".ReplacementEmailContent").get(
                    "ReplacementTemplate"
                ),
                field + ".ReplacementEmailContent.ReplacementTemplate",
            )
            parsed.append(
                _BulkEntry(
                    to,
                    cc,
                    bcc,
                    _headers(e.get("ReplacementHeaders"), field + ".ReplacementHeaders"),
                    _tags(e.get("ReplacementTags"), field + ".ReplacementTags"),
                    _template_data(
                        replacement.get("ReplacementTemplateData"),
                        field + ".ReplacementTemplateData",
                    ),
                )
            )
        return shared, template, parsed

    async def _get_account(self, request: web.Request) -> web.Response:
        self.counters.count_call("get_account_calls")
        if not self._authorized(request):
            return self._unauthorized()
        cfg = self._config  # read per call: a runtime change shows in the next GetAccount
        payload = {
            "DedicatedIpAutoWarmupEnabled": False,
            "EnforcementStatus": "HEALTHY",
            "ProductionAccessEnabled": cfg.production_access_enabled,
            "SendingEnabled": cfg.sending_enabled and not cfg.paused,
            "SendQuota": {
                "Max24HourSend": float(cfg.max_24_hour_send),
                "MaxSendRate": float(cfg.reported_send_rate),
                "SentLast24Hours": float(self.counters.accepted_recipients),
            },
        }
        return await self._answer(self._ok(payload), False)

    async def _list_suppressed(self, request: web.Request) -> web.Response:
        self.counters.count_call("list_suppressed_calls")
        if not self._authorized(request):
            return self._unauthorized()
        try:
            page, token = self._suppressed_page(request.query)
        except _Refused as e:
            return await self._answer(self._refused(e), False)
        payload: dict[str, Any] = {"SuppressedDestinationSummaries": page}
        if token is not None:
            payload["NextToken"] = token
        return await self._answer(self._ok(payload), False)

    def _suppressed_page(
        self, query: MultiMapping[str]
    ) -> tuple[list[dict[str, Any]], str | None]:
        reasons = set(query.getall("Reason", []))
        if reasons - set(SUPPRESSION_REASONS):
            raise _Refused("Reason must be BOUNCE or COMPLAINT")
        try:
            size = int(query.get("PageSize", MAX_SUPPRESSED_PAGE))
        except ValueError:
            raise _Refused("PageSize must be an integer") from None
        if not 1 <= size <= MAX_SUPPRESSED_PAGE:
            raise _Refused(f"PageSize must be between 1 and {MAX_SUPPRESSED_PAGE}")
        start, end = _query_time(query, "StartDate"), _query_time(query, "EndDate")
        offset = 0
        if query.get("NextToken"):
            try:
                offset = int(base64.urlsafe_b64decode(query["NextToken"]).decode("ascii"))
            except (ValueError, binascii.Error):
                raise _Refused(
                    "The NextToken is invalid.", 400, "InvalidNextTokenException"
                ) from None
        matching = []
        for item in self._config.suppressed:
            when = item["last_update_time"]
            when = self._started if when is None else when
            if reasons and item["reason"] not in reasons:
                continue
            if (start is not None and when < start) or (end is not None and when > end):
                continue
            matching.append(
                {"EmailAddress": item["email"], "Reason": item["reason"], "LastUpdateTime": when}
            )
        page = matching[offset : offset + size]
        more = offset + size < len(matching)
        token = base64.urlsafe_b64encode(str(offset + size).encode()).decode() if more else None
        return page, token

    # -- control endpoints -------------------------------------------------

    async def _get_config(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self._config.to_dict()), headers=_JSON_HEADERS)

    async def _post_config(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("config must be a JSON object")
            self.config = self._config.updated(changes)
        except (ValueError, TypeError) as e:
            return web.Response(
                status=400, body=orjson.dumps({"message": str(e)}), headers=_JSON_HEADERS
            )
        return web.Response(body=orjson.dumps(self._config.to_dict()), headers=_JSON_HEADERS)

    async def _get_log(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return web.Response(
                status=400, body=b'{"message":"since must be an integer"}', headers=_JSON_HEADERS
            )
        return web.Response(
            body=orjson.dumps(self.log_snapshot(max(since, 0))), headers=_JSON_HEADERS
        )

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(body=b'{"ok":true}', headers=_JSON_HEADERS)


def _query_time(query: MultiMapping[str], name: str) -> float | None:
    """A timestamp query parameter (botocore sends ISO 8601) as epoch seconds."""
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _Refused(f"{name} is not a timestamp: {_clip(raw)}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


#: the :class:`SesStandin` behind an application: ``app[STANDIN_KEY]``
STANDIN_KEY = web.AppKey("ses_standin", SesStandin)


# --------------------------------------------------------------------------
# running


async def start_standin(
    config: StandinConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    backlog: int = 4096,
    shutdown_timeout: float = 0.5,
) -> tuple[SesStandin, web.AppRunner, str]:
    """Start a stand-in; returns ``(standin, runner, "http://host:port")``.

    Stop it with ``await runner.cleanup()``.
    """
    standin = SesStandin(config if config is not None else StandinConfig())
    runner = web.AppRunner(standin.app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=backlog)
    await site.start()
    bound_port = runner.addresses[0][1]
    url_host = f"[{host}]" if ":" in host else host
    return standin, runner, f"http://{url_host}:{bound_port}"


def _suppressed_arg(value: str) -> tuple[dict[str, Any], ...]:
    """``--suppressed``: a JSON array, or ``@FILE`` holding one."""
    try:
        if value.startswith("@"):
            with open(value[1:], "rb") as f:
                value = f.read().decode()
        return _suppressed_entries(orjson.loads(value))
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# StandinConfig's number knobs as flags: (flag, type, help); each sets the field it names.
_NUMBER_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("--max-rate", float, "max recipients accepted in any sliding 1 s window; more answers 429 "
     "TooManyRequestsException (default: unlimited)"),
    ("--latency-ms", float, "sleep before answering each SES call, in ms (default: %(default)s)"),
    ("--error-rate", float, "probability of a 500 InternalFailure (default: %(default)s)"),
    ("--throttle-rate", float, "probability of a spurious 429 TooManyRequestsException "
     "(default: %(default)s)"),
    ("--hang-rate", float, "probability of sleeping --hang-seconds before answering "
     "(default: %(default)s)"),
    ("--hang-seconds", float, "how long a hanging request sleeps (default: %(default)s)"),
    ("--seed", int, "random seed for the error/throttle/hang rates"),
    ("--max-send-rate-reported", float, "SendQuota.MaxSendRate reported by GetAccount "
     f"(default: --max-rate when set, else {UNLIMITED_QUOTA:g})"),
    ("--max-24-hour-send", float, "SendQuota.Max24HourSend reported by GetAccount "
     "(default: %(default)s)"),
)
# Its on/off knobs: (flag, field, argparse action, help).
_SWITCHES: tuple[tuple[str, str, str, str], ...] = (
    ("--paused", "paused", "store_true", "answer sends with 400 SendingPausedException"),
    ("--sending-disabled", "sending_enabled", "store_false",
     "GetAccount reports SendingEnabled false and sends answer SendingPausedException"),
    ("--sandbox", "production_access_enabled", "store_false",
     "GetAccount reports ProductionAccessEnabled false (the account is in the sandbox)"),
    ("--bulk-unsupported", "bulk_unsupported", "store_true",
     "SendBulkEmail answers 404 with an HTML page, as moto 5.2.5 does"),
    ("--template-blocks", "template_blocks", "store_true",
     "render {{#if}}/{{#each}}/... in inline templates; by default they answer 400 "
     "'Template contains unsupported operations.' as SES does"),
)


def _build_parser() -> argparse.ArgumentParser:
    d = StandinConfig()
    p = argparse.ArgumentParser(
        prog="python -m sesd.testing.ses_standin",
        description="Local stand-in for the Amazon SES v2 HTTP API (SendEmail, SendBulkEmail, "
        "GetAccount, ListSuppressedDestinations). Validates requests as SES does, renders "
        "inline templates with Handlebars and records every accepted message. Prints "
        "'listening http://HOST:PORT' once ready and serves until SIGTERM/SIGINT. Every knob "
        "below can also be changed at runtime with POST /_standin/config (JSON, field names "
        "with underscores); GET /_standin/log returns the sends, rendering failures and "
        "counters; POST /_standin/reset clears them.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument(
        "--port",
        type=int,
        default=0,
        help="port to bind; 0 picks a free one (default: %(default)s)",
    )
    p.add_argument(
        "--backlog", type=int, default=4096, help="listen backlog (default: %(default)s)"
    )
    for flag, kind, text in _NUMBER_FLAGS:
        dest = flag[2:].replace("-", "_")
        p.add_argument(flag, type=kind, default=getattr(d, dest), help=text)
    p.add_argument(
        "--reject-pattern",
        default=d.reject_pattern,
        help="regex; a matching recipient gets 400 MessageRejected (bulk: MESSAGE_REJECTED entry)",
    )
    p.add_argument(
        "--unverified-senders",
        default=d.unverified_senders,
        metavar="REGEX",
        help="a send whose From address matches answers 400 MessageRejected 'Email address is "
        "not verified...' (bulk: the whole call)",
    )
    for flag, dest, action, text in _SWITCHES:
        p.add_argument(flag, dest=dest, action=action, default=getattr(d, dest), help=text)
    p.add_argument(
        "--suppressed",
        type=_suppressed_arg,
        default=d.suppressed,
        metavar="JSON|@FILE",
        help='what ListSuppressedDestinations answers: a JSON array of {"email", "reason": '
        '"BOUNCE"|"COMPLAINT", "last_update_time"?: epoch seconds}, or @FILE holding one',
    )
    return p


async def _serve(config: StandinConfig, host: str, port: int, backlog: int) -> None:
    _standin, runner, url = await start_standin(config, host, port, backlog=backlog)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening {url}", flush=True)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        # Every config field has a flag of the same name (dest), so none can be forgotten here.
        config = StandinConfig(
            **{f.name: getattr(args, f.name) for f in dataclasses.fields(StandinConfig)}
        )
    except ValueError as e:
        print(f"ses_standin: {e}", file=sys.stderr)
        return 2
    coro = _serve(config, args.host, args.port, args.backlog)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            r.run(coro)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
