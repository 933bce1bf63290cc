"""Amazon SNS message verification and SES event parsing (pure: no network I/O of its own).

SNS posts a JSON envelope to our HTTP(S) endpoint; anyone can post the same shape, so nothing in it
is trusted until its RSA signature checks out against the certificate at ``SigningCertURL`` — and
that URL is itself attacker-chosen, so it must match the configured pattern *before* it is fetched.
The rules follow AWS "Verifying the signatures of Amazon SNS messages". A valid signature only
proves the message came from *some* SNS topic, which anyone with an AWS account can own: the
topic must also be on the operator's allow-list, and an empty list refuses everything.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from sesd.addresses import suppression_key
from sesd.errors import SesdError


class SnsError(SesdError):
    """Base of every SNS/SES message problem; str() is a human-readable reason."""


class SnsVerificationError(SnsError):
    """The message cannot be proven to come from SNS (the API answers 403)."""


class SnsCertFetchError(SnsVerificationError):
    """fetch_cert failed (network, HTTP status): maybe transient, unlike a bad signature."""


class SnsMessageError(SnsError):
    """The body is not a well-formed SNS envelope or SES event (the API answers 400)."""


class SnsTopicRefused(SnsVerificationError):
    """The message names a topic that is not on the allow-list (or the list is empty)."""


class SesSetupNotification(SnsMessageError):
    """SES's one-off "AmazonSnsSubscriptionSucceeded" notice: not an email event; ignore it."""


MESSAGE_TYPES = frozenset({"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"})

# Keys signed, in the byte order AWS signs them (alphabetical). Subject only when present.
_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SUB_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")

# SignatureVersion -> digest. "1" is SHA1withRSA (the SNS default), "2" SHA256withRSA (opt-in).
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

# What every SNS message carries; a body without one of them is malformed (400), not forged.
_REQUIRED = ("Type", "MessageId", "TopicArn", "Message", "Timestamp", "SignatureVersion",
             "Signature", "SigningCertURL")
_REQUIRED_SUB = ("SubscribeURL", "Token")
# Envelope fields that must be strings whenever present (Subject may also be JSON null).
_OPTIONAL = ("Subject", "UnsubscribeURL")
_STRING_FIELDS = _REQUIRED + _REQUIRED_SUB + _OPTIONAL
# Longest slice of a client's value repeated in an error (a 2 MB URL must not come back whole).
_SHOWN = 200

# How old a message may be (its signed Timestamp) and still be accepted. SNS keeps retrying an
# HTTP(S) delivery for at most an hour under the longest delivery policy, and every retry carries
# the original Timestamp and signature; anything older is a replay.
MAX_MESSAGE_AGE = timedelta(hours=1)
# Tolerated clock difference for Timestamps ahead of ours.
MAX_CLOCK_SKEW = timedelta(minutes=15)

# What a genuine signing certificate names as its subject (CN or DNS alternative name):
# "sns.amazonaws.com", or a region-shaped "sns.<region>.amazonaws.com(.cn)". Never an S3 host.
_CERT_NAME = re.compile(r"sns(\.[a-z]{2}(-gov)?-[a-z]+-[0-9]+)?\.amazonaws\.com(\.cn)?")

_EVENT_NAMES = {"Rendering Failure": "RenderingFailure"}  # event publishing spells it with a space
_REQUEST_ID = re.compile(r"[0-9]{1,18}")  # fits SQLite's int64; int() alone would accept "1_0"


def parse_envelope(body: bytes) -> dict[str, Any]:
    """Decode an SNS HTTP(S) POST body; shape errors are SnsMessageError, never verification."""
    msg = _json_object(body, "SNS body")
    for key in _STRING_FIELDS:
        value = msg.get(key)
        if key in msg and not isinstance(value, str) and not (key == "Subject" and value is None):
            raise SnsMessageError(f"SNS field {key!r} must be a string")
    kind = msg.get("Type")
    if kind not in MESSAGE_TYPES:
        raise SnsMessageError(f"SNS message Type {kind!r} is not one of {sorted(MESSAGE_TYPES)}")
    required = _REQUIRED + (_REQUIRED_SUB if kind != "Notification" else ())
    missing = [key for key in required if key not in msg]
    if missing:
        raise SnsMessageError(f"SNS message lacks {', '.join(missing)}")
    try:
        _timestamp(msg["Timestamp"])
    except ValueError:
        raise SnsMessageError(f"SNS Timestamp {_show(msg['Timestamp'])} is not an ISO 8601 "
                              "time") from None
    return msg


def _json_object(text: bytes | str, what: str) -> dict[str, Any]:
    """`text` decoded as a JSON object; anything else is an SnsMessageError naming `what`."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise SnsMessageError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SnsMessageError(f"{what} must be a JSON object")
    return value


def _show(value: object) -> str:
    """A client's value inside an error message: repr'd and cut short."""
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}… ({len(text)} characters)"


def _timestamp(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("no time zone")
    return moment


def string_to_sign(msg: Mapping[str, Any]) -> bytes:
    """The exact bytes SNS signed: "Key\\nValue\\n" for each signed key in AWS's fixed order."""
    kind = msg.get("Type")
    keys: tuple[str, ...]
    if kind == "Notification":
        keys = _NOTIFICATION_KEYS
    elif kind in MESSAGE_TYPES:
        keys = _SUB_KEYS
    else:
        raise SnsVerificationError(f"cannot sign SNS message of Type {kind!r}")
    parts: list[str] = []
    for key in keys:
        value = msg.get(key)
        # A null Subject is "not present", as in AWS's own validators (PHP isset()).
        if value is None and key == "Subject":
            continue
        if not isinstance(value, str):
            raise SnsVerificationError(f"signed field {key!r} is missing or not a string")
        # The signed text is "Key\nValue\n" pairs, so a newline inside a value can move a field
        # boundary: {"MessageId": "id\nSubject\nS"} without a Subject signs the same bytes as
        # the genuine message, yet its new MessageId would slip past deduplication. SNS never
        # puts one in these fields. Message comes first and is followed by the fixed key
        # "MessageId", so its own newlines (pretty-printed JSON) cannot shift a later field.
        if key != "Message" and "\n" in value:
            raise SnsVerificationError(f"signed field {key!r} contains a line break")
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode()


def _check_sns_url(name: str, url: object, pattern: re.Pattern[str]) -> str:
    """The host rules shared by SigningCertURL and SubscribeURL: both are attacker-chosen, and
    sesd fetches them, so they must name an allowed SNS host before any I/O."""
    if not isinstance(url, str) or not url:
        raise SnsVerificationError(f"{name} is missing")
    if any(not ch.isprintable() or ch in " \\" for ch in url):
        raise SnsVerificationError(f"{name} contains whitespace, control or '\\' characters")
    if not pattern.match(url):
        raise SnsVerificationError(f"{name} {_show(url)} does not match {pattern.pattern!r}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise SnsVerificationError(f"{name} {_show(url)} is not a URL: {exc}") from None
    # Plain http only when the operator's pattern literally names it (local tests, emulators).
    if parts.scheme != "https" and not (
        parts.scheme == "http" and pattern.pattern.startswith(("^http://", "http://"))
    ):
        raise SnsVerificationError(f"{name} must be https, not {_show(parts.scheme)}")
    # Userinfo makes "https://sns.x.amazonaws.com@evil/" look like AWS to a loose pattern.
    if "@" in parts.netloc or not parts.hostname:
        raise SnsVerificationError(f"{name} must name a host without user information")
    return parts.path if not (parts.query or parts.fragment) else ""


def check_cert_url(url: str, pattern: re.Pattern[str]) -> None:
    """Refuse a SigningCertURL we must not fetch: an attacker chooses it, so check before I/O."""
    path = _check_sns_url("SigningCertURL", url, pattern)
    if not path.endswith(".pem"):
        raise SnsVerificationError("SigningCertURL must be a plain path to a .pem certificate")


def check_subscribe_url(url: str, pattern: re.Pattern[str]) -> None:
    """The SubscribeURL must name an allowed SNS host, like a SigningCertURL; but a genuine one
    is "https://sns.<region>.amazonaws.com/?Action=ConfirmSubscription&...", with a query and
    no .pem, so only the host rules apply."""
    _check_sns_url("SubscribeURL", url, pattern)


def load_certificate(pem: bytes) -> x509.Certificate:
    """Parse a signing certificate and check it looks like one SNS uses: an RSA key, and a
    subject naming sns.amazonaws.com or a region-shaped sns.<region>.amazonaws.com."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except (ValueError, TypeError) as exc:
        raise SnsVerificationError(f"signing certificate is not a PEM X.509 cert: {exc}") from None
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):  # SNS signs only with RSA
        raise SnsVerificationError("signing certificate does not hold an RSA key")
    names = _subject_names(cert)
    if not any(_CERT_NAME.fullmatch(name.lower()) for name in names):
        shown = ", ".join(names)[:_SHOWN] or "nothing"
        raise SnsVerificationError(f"signing certificate names {shown}, not an SNS host")
    return cert


def _subject_names(cert: x509.Certificate) -> list[str]:
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        alternative = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return names
    return names + list(alternative.value.get_values_for_type(x509.DNSName))


class CertificateCache:
    """Signing certificates by URL, for the life of the API process.

    SNS signs with very few certificates, so a small cache serves nearly every message. Only a
    certificate that parses and looks like SNS's is kept (a truncated download must not refuse
    every later message until restart); concurrent messages naming one URL share one fetch; a
    failure is remembered for `failure_ttl` seconds, so a flood naming a broken URL costs one
    fetch, not one each. `fetch` does the I/O and returns the whole body (or raises).
    """

    def __init__(self, fetch: Callable[[str], Awaitable[bytes]], *, size: int = 64,
                 failure_ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._size = size
        self._failure_ttl = failure_ttl
        self._clock = clock
        self._certs: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._failures: OrderedDict[str, tuple[float, SnsVerificationError]] = OrderedDict()
        self._loading: dict[str, asyncio.Future[x509.Certificate]] = {}

    def __len__(self) -> int:
        return len(self._certs)

    async def get(self, url: str) -> x509.Certificate:
        cert = self._certs.get(url)
        if cert is not None:
            self._certs.move_to_end(url)
            return cert
        failed = self._failures.get(url)
        if failed is not None:
            until, error = failed
            if self._clock() < until:
                raise type(error)(f"{error} (remembered for {self._failure_ttl:g} s)")
            del self._failures[url]
        future = self._loading.get(url)
        if future is None:
            future = asyncio.ensure_future(self._load(url))
            self._loading[url] = future
            future.add_done_callback(functools.partial(self._loaded, url))
        # One waiter giving up (its client went away) must not cancel the others' fetch.
        return await asyncio.shield(future)

    def _loaded(self, url: str, future: asyncio.Future[x509.Certificate]) -> None:
        self._loading.pop(url, None)
        if not future.cancelled():
            future.exception()  # retrieved here too: every waiter may have gone away

    async def _load(self, url: str) -> x509.Certificate:
        try:
            try:
                pem = await self._fetch(url)
            except SnsError:
                raise
            except Exception as exc:
                raise SnsCertFetchError(f"cannot fetch signing certificate {_show(url)}: "
                                        f"{_show(exc)}") from exc
            cert = load_certificate(pem)
        except SnsVerificationError as exc:
            self._failures[url] = (self._clock() + self._failure_ttl, exc)
            _prune(self._failures, self._size)
            raise
        # Register first, prune after: never evict the entry just made.
        self._certs[url] = cert
        _prune(self._certs, self._size)
        return cert


def _prune(cache: OrderedDict[str, Any], size: int) -> None:
    while len(cache) > size:
        cache.popitem(last=False)  # least recently used first


CertFetcher = Callable[[str], Awaitable["bytes | x509.Certificate"]]


async def verify(
    msg: Mapping[str, Any],
    fetch_cert: CertFetcher,
    *,
    cert_url_pattern: re.Pattern[str],
    topic_arns: frozenset[str],
    header_type: str | None = None,
    now: datetime | None = None,
) -> None:
    """Prove msg came from an allowed SNS topic, or raise SnsVerificationError (and nothing
    else) saying why. An empty `topic_arns` refuses every message. `fetch_cert` returns the
    certificate at a URL, as PEM bytes or already parsed (CertificateCache.get)."""
    try:
        await _verify(msg, fetch_cert, cert_url_pattern, topic_arns, header_type,
                      now or datetime.now(UTC))
    except SnsVerificationError:
        raise
    except Exception as exc:  # a malformed input must never become a 500
        raise SnsVerificationError(f"SNS message cannot be verified: {_show(exc)}") from exc


async def _verify(
    msg: Mapping[str, Any],
    fetch_cert: CertFetcher,
    pattern: re.Pattern[str],
    topic_arns: frozenset[str],
    header_type: str | None,
    now: datetime,
) -> None:
    kind = msg.get("Type")
    if kind not in MESSAGE_TYPES:
        raise SnsVerificationError(f"unknown SNS message Type {_show(kind)}")
    # The header is outside the signature; a mismatch means someone rewrote one or the other.
    if header_type is not None and header_type != kind:
        raise SnsVerificationError(f"x-amz-sns-message-type {_show(header_type)} != Type "
                                   f"{_show(kind)}")
    topic = msg.get("TopicArn")
    if not topic_arns:
        raise SnsTopicRefused("SNS_TOPIC_ARNS is empty, so no topic is trusted")
    if topic not in topic_arns:
        raise SnsTopicRefused(f"TopicArn {_show(topic)} is not in SNS_TOPIC_ARNS")
    _check_age(msg.get("Timestamp"), now)
    version = msg.get("SignatureVersion")
    algorithm = _HASHES.get(version) if isinstance(version, str) else None
    if algorithm is None:
        raise SnsVerificationError(f"unsupported SignatureVersion {version!r}")
    encoded = msg.get("Signature")
    if not isinstance(encoded, str) or not encoded:
        raise SnsVerificationError("Signature is missing")
    try:
        signature = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SnsVerificationError("Signature is not valid base64") from None
    data = string_to_sign(msg)
    cert_url = msg.get("SigningCertURL")
    check_cert_url(cert_url, pattern)  # type: ignore[arg-type]  # non-str is refused inside
    # All cheap checks are done: only now touch the network (via the caller's cache).
    try:
        fetched = await fetch_cert(cert_url)  # type: ignore[arg-type]
    except SnsVerificationError:
        raise
    except Exception as exc:
        raise SnsCertFetchError(f"cannot fetch signing certificate {_show(cert_url)}: "
                                f"{_show(exc)}") from exc
    cert = fetched if isinstance(fetched, x509.Certificate) else load_certificate(fetched)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise SnsVerificationError(
            f"signing certificate is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d}"
            f" to {cert.not_valid_after_utc:%Y-%m-%d})"
        )
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):  # SNS signs only with RSA
        raise SnsVerificationError("signing certificate does not hold an RSA key")
    try:
        key.verify(signature, data, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise SnsVerificationError("SNS signature does not match the message") from None


def _check_age(stamp: object, now: datetime) -> None:
    try:
        moment = _timestamp(stamp)  # type: ignore[arg-type]  # non-str is refused below
    except (TypeError, ValueError):
        raise SnsVerificationError(f"Timestamp {_show(stamp)} is not an ISO 8601 time") from None
    if now - moment > MAX_MESSAGE_AGE:
        raise SnsVerificationError(f"message is older than {MAX_MESSAGE_AGE} (Timestamp "
                                   f"{_show(stamp)}): a replay")
    if moment - now > MAX_CLOCK_SKEW:
        raise SnsVerificationError(f"Timestamp {_show(stamp)} is in the future")


@dataclass(frozen=True)
class SesEvent:
    """What sesd needs from one SES event; raw keeps the full JSON for storage."""

    event_type: str
    message_id: str | None
    request_id: int | None
    recipients: tuple[str, ...]
    suppress: tuple[tuple[str, str], ...]
    raw: str


def parse_ses_event(message: str) -> SesEvent:
    """Parse the SNS "Message" of an SES identity notification or event-publishing record."""
    data = _json_object(message, "SES event")
    # Identity notifications say notificationType; configuration-set publishing says eventType.
    kind = data.get("eventType", data.get("notificationType"))
    if kind == "AmazonSnsSubscriptionSucceeded":
        raise SesSetupNotification("SES AmazonSnsSubscriptionSucceeded test message, not an event")
    if not isinstance(kind, str) or not kind:
        raise SnsMessageError("SES event has no notificationType or eventType")
    mail = data.get("mail")
    if not isinstance(mail, dict):
        raise SnsMessageError(f"SES {kind} event has no mail object")
    event_type = _EVENT_NAMES.get(kind, kind)
    message_id = mail.get("messageId")
    destination = mail.get("destination")
    recipients = (
        tuple(a for a in destination if isinstance(a, str)) if isinstance(destination, list) else ()
    )
    return SesEvent(
        event_type=event_type,
        message_id=message_id if isinstance(message_id, str) else None,
        request_id=_request_id(mail.get("headers")),
        recipients=recipients,
        suppress=_suppressions(event_type, data),
        raw=message,
    )


def same_address(a: str, b: str) -> bool:
    """Whether two spellings name one mailbox, by the suppression list's key (one rule for both:
    addresses.suppression_key)."""
    return suppression_key(parseaddr(a)[1].strip()) == suppression_key(parseaddr(b)[1].strip())


def addressed_to(address: str, recipients: Iterable[str]) -> bool:
    """Whether an SES event's recipients include the request's address."""
    return any(same_address(address, recipient) for recipient in recipients)


def _request_id(headers: Any) -> int | None:
    """Our X-Request-ID mail header (names are case-insensitive, RFC 5322); SES echoes it back."""
    if not isinstance(headers, list):
        return None
    for header in headers:
        if not isinstance(header, dict):
            continue
        name, value = header.get("name"), header.get("value")
        if isinstance(name, str) and name.lower() == "x-request-id" and isinstance(value, str):
            value = value.strip()
            return int(value) if _REQUEST_ID.fullmatch(value) else None
    return None


def _suppressions(event_type: str, data: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Addresses never to mail again: permanent (hard) bounces and every complaint."""
    if event_type == "Bounce":
        bounce = data.get("bounce")
        # Transient/Undetermined bounces are soft: SES or a later send may still succeed.
        if not isinstance(bounce, dict) or bounce.get("bounceType") != "Permanent":
            return ()
        sub = bounce.get("bounceSubType")
        reason = f"Bounce/Permanent/{sub if isinstance(sub, str) and sub else 'Undetermined'}"
        entries = bounce.get("bouncedRecipients")
    elif event_type == "Complaint":
        complaint = data.get("complaint")
        if not isinstance(complaint, dict):
            return ()
        feedback = complaint.get("complaintFeedbackType")
        reason = f"Complaint/{feedback if isinstance(feedback, str) and feedback else 'unknown'}"
        entries = complaint.get("complainedRecipients")
    else:
        return ()
    found: dict[str, str] = {}  # de-duplicated, first-seen order
    for entry in entries if isinstance(entries, list) else ():
        address = entry.get("emailAddress") if isinstance(entry, dict) else None
        if isinstance(address, str) and address.strip():
            found.setdefault(address.strip(), reason)
    return tuple(found.items())
