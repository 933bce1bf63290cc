"""Amazon SNS message verification and SES event parsing (pure: no network I/O of its own).

SNS posts a JSON envelope to our HTTP(S) endpoint; anyone can post the same shape, so nothing in it
is trusted until its RSA signature checks out against the certificate at ``SigningCertURL`` — and
that URL is itself attacker-chosen, so it must match the configured pattern *before* it is fetched.
The rules follow AWS "Verifying the signatures of Amazon SNS messages".
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sesd.errors import SesdError


class SnsError(SesdError):
    """Base of every SNS/SES message problem; str() is a human-readable reason."""


class SnsVerificationError(SnsError):
    """The message cannot be proven to come from SNS (the API answers 403)."""


class SnsCertFetchError(SnsVerificationError):
    """fetch_cert failed (network, HTTP status): maybe transient, unlike a bad signature."""


class SnsMessageError(SnsError):
    """The body is not a well-formed SNS envelope or SES event (the API answers 400)."""


class SesSetupNotification(SnsMessageError):
    """SES's one-off "AmazonSnsSubscriptionSucceeded" notice: not an email event; ignore it."""


MESSAGE_TYPES = frozenset({"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"})

# Keys signed, in the byte order AWS signs them (alphabetical). Subject only when present.
_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SUB_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")

# SignatureVersion -> digest. "1" is SHA1withRSA (the SNS default), "2" SHA256withRSA (opt-in).
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

_REQUIRED = ("Type", "MessageId", "TopicArn", "Message", "Timestamp")
_REQUIRED_SUB = ("SubscribeURL", "Token")
# Envelope fields that must be strings whenever present (Subject may also be JSON null).
_OPTIONAL = ("Subject", "SignatureVersion", "Signature", "SigningCertURL", "UnsubscribeURL")
_STRING_FIELDS = _REQUIRED + _REQUIRED_SUB + _OPTIONAL

_EVENT_NAMES = {"Rendering Failure": "RenderingFailure"}  # event publishing spells it with a space
_REQUEST_ID = re.compile(r"[0-9]{1,18}")  # fits SQLite's int64; int() alone would accept "1_0"


def parse_envelope(body: bytes) -> dict[str, Any]:
    """Decode an SNS HTTP(S) POST body; shape errors are SnsMessageError, never verification."""
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SnsMessageError(f"SNS body is not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise SnsMessageError("SNS body must be a JSON object")
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
    return msg


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
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode()


def check_cert_url(url: str, pattern: re.Pattern[str]) -> None:
    """Refuse a SigningCertURL we must not fetch: an attacker chooses it, so check before I/O."""
    if not isinstance(url, str) or not url:
        raise SnsVerificationError("SigningCertURL is missing")
    if any(not ch.isprintable() or ch in " \\" for ch in url):
        raise SnsVerificationError("SigningCertURL contains whitespace, control or '\\' characters")
    if not pattern.match(url):
        raise SnsVerificationError(f"SigningCertURL {url!r} does not match {pattern.pattern!r}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise SnsVerificationError(f"SigningCertURL {url!r} is not a URL: {exc}") from None
    # Plain http only when the operator's pattern literally names it (local tests, emulators).
    if parts.scheme != "https" and not (
        parts.scheme == "http" and pattern.pattern.startswith(("^http://", "http://"))
    ):
        raise SnsVerificationError(f"SigningCertURL must be https, not {parts.scheme!r}")
    # Userinfo makes "https://sns.x.amazonaws.com@evil/" look like AWS to a loose pattern.
    if "@" in parts.netloc or not parts.hostname:
        raise SnsVerificationError("SigningCertURL must name a host without user information")
    if parts.query or parts.fragment or not parts.path.endswith(".pem"):
        raise SnsVerificationError("SigningCertURL must be a plain path to a .pem certificate")


async def verify(
    msg: Mapping[str, Any],
    fetch_cert: Callable[[str], Awaitable[bytes]],
    *,
    cert_url_pattern: re.Pattern[str],
    topic_arns: frozenset[str] = frozenset(),
    header_type: str | None = None,
) -> None:
    """Prove msg came from SNS, or raise SnsVerificationError (and nothing else) saying why."""
    try:
        await _verify(msg, fetch_cert, cert_url_pattern, topic_arns, header_type)
    except SnsVerificationError:
        raise
    except Exception as exc:  # a malformed input must never become a 500
        raise SnsVerificationError(f"SNS message cannot be verified: {exc!r}") from exc


async def _verify(
    msg: Mapping[str, Any],
    fetch_cert: Callable[[str], Awaitable[bytes]],
    pattern: re.Pattern[str],
    topic_arns: frozenset[str],
    header_type: str | None,
) -> None:
    kind = msg.get("Type")
    if kind not in MESSAGE_TYPES:
        raise SnsVerificationError(f"unknown SNS message Type {kind!r}")
    # The header is outside the signature; a mismatch means someone rewrote one or the other.
    if header_type is not None and header_type != kind:
        raise SnsVerificationError(f"x-amz-sns-message-type {header_type!r} != Type {kind!r}")
    topic = msg.get("TopicArn")
    if topic_arns and topic not in topic_arns:
        raise SnsVerificationError(f"TopicArn {topic!r} is not in the allowed list")
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
        pem = await fetch_cert(cert_url)  # type: ignore[arg-type]
    except Exception as exc:
        raise SnsCertFetchError(f"cannot fetch signing certificate {cert_url!r}: {exc}") from exc
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except (ValueError, TypeError) as exc:
        raise SnsVerificationError(f"signing certificate is not a PEM X.509 cert: {exc}") from None
    now = datetime.now(UTC)
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
    try:
        data = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        raise SnsMessageError(f"SES event is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SnsMessageError("SES event must be a JSON object")
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
