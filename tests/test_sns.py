"""SNS signature verification and SES event parsing (sesd.sns)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sesd.config import DEFAULT_SNS_CERT_URL_PATTERN
from sesd.sns import (
    MESSAGE_TYPES,
    CertificateCache,
    SesEvent,
    SesSetupNotification,
    SnsCertFetchError,
    SnsError,
    SnsMessageError,
    SnsTopicRefused,
    SnsVerificationError,
    addressed_to,
    check_cert_url,
    check_subscribe_url,
    load_certificate,
    parse_envelope,
    parse_ses_event,
    same_address,
    string_to_sign,
    verify,
)

FIXTURES = Path(__file__).parent / "fixtures" / "ses"
DEFAULT_PATTERN = re.compile(DEFAULT_SNS_CERT_URL_PATTERN)
LOCAL_PATTERN = re.compile(r"^http://127\.0\.0\.1:\d+/")
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000.pem"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
SUBSCRIPTION_KEYS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)


# ---------------------------------------------------------------- key material and signing helpers


def _make_cert(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def cert_pem(rsa_key: rsa.RSAPrivateKey) -> bytes:
    now = dt.datetime.now(dt.UTC)
    return _make_cert(
        rsa_key, not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=30)
    )


class FakeFetch:
    """fetch_cert stand-in: returns a fixed PEM and records every URL it was asked for."""

    def __init__(self, pem: bytes | BaseException) -> None:
        self.pem = pem
        self.calls: list[str] = []

    async def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        if isinstance(self.pem, BaseException):
            raise self.pem
        return self.pem


@pytest.fixture
def fetch(cert_pem: bytes) -> FakeFetch:
    return FakeFetch(cert_pem)


def sign(
    msg: dict[str, Any],
    key: rsa.RSAPrivateKey,
    version: str = "1",
    *,
    digest: hashes.HashAlgorithm | None = None,
    cert_url: str = CERT_URL,
) -> dict[str, Any]:
    """Sign msg the way SNS does (independent re-implementation of the string to sign)."""
    keys = NOTIFICATION_KEYS if msg["Type"] == "Notification" else SUBSCRIPTION_KEYS
    text = "".join(f"{k}\n{msg[k]}\n" for k in keys if k in msg)
    if digest is None:
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(text.encode(), padding.PKCS1v15(), digest)
    return {
        **msg,
        "SignatureVersion": version,
        "SigningCertURL": cert_url,
        "Signature": base64.b64encode(signature).decode(),
    }


def sns_time(moment: dt.datetime | None = None) -> str:
    """A Timestamp as SNS writes it (UTC, milliseconds, "Z"); now by default."""
    moment = moment or dt.datetime.now(dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def notification(
    *,
    subject: str | None = "Amazon SES Email Event Notification",
    message: str | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Message": (FIXTURES / "event-delivery.json").read_text() if message is None else message,
        "Timestamp": timestamp or sns_time(),
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&x=1",
    }
    if subject is not None:
        msg["Subject"] = subject
    return msg


def subscription(kind: str = "SubscriptionConfirmation") -> dict[str, Any]:
    return {
        "Type": kind,
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3",
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=x",
        "Timestamp": sns_time(),
    }


async def check(msg: dict[str, Any], fetch: FakeFetch, **kwargs: Any) -> None:
    kwargs.setdefault("cert_url_pattern", DEFAULT_PATTERN)
    kwargs.setdefault("topic_arns", frozenset({TOPIC}))
    await verify(msg, fetch, **kwargs)


# ---------------------------------------------------------------------------- genuine messages


@pytest.mark.asyncio
@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize(
    "make",
    [
        notification,
        lambda: notification(subject=None),
        subscription,
        lambda: subscription("UnsubscribeConfirmation"),
    ],
    ids=["notification", "notification-no-subject", "subscribe", "unsubscribe"],
)
async def test_genuine_messages_verify(rsa_key, fetch, version: str, make: Callable) -> None:
    msg = sign(make(), rsa_key, version)
    # Through the real JSON round trip the API does, with the header and an allow-list set.
    parsed = parse_envelope(orjson.dumps(msg))
    await check(parsed, fetch, topic_arns=frozenset({TOPIC}), header_type=msg["Type"])
    assert fetch.calls == [CERT_URL]


@pytest.mark.asyncio
async def test_local_http_pattern_is_allowed_when_explicit(rsa_key, fetch) -> None:
    url = "http://127.0.0.1:8123/cert.pem"
    await check(
        sign(notification(), rsa_key, "2", cert_url=url), fetch, cert_url_pattern=LOCAL_PATTERN
    )
    assert fetch.calls == [url]


@pytest.mark.asyncio
async def test_null_subject_is_treated_as_absent(rsa_key, fetch) -> None:
    msg = sign(notification(subject=None), rsa_key)
    await check({**msg, "Subject": None}, fetch)


def test_string_to_sign_matches_aws_layout() -> None:
    msg = notification(subject="S", message="M", timestamp="2012-05-02T00:54:06.655Z")
    assert string_to_sign(msg) == (
        b"Message\nM\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\nSubject\nS\n"
        b"Timestamp\n2012-05-02T00:54:06.655Z\nTopicArn\n" + TOPIC.encode() + b"\n"
        b"Type\nNotification\n"
    )
    sub = subscription()
    text = string_to_sign(sub).decode()
    assert [line for line in text.split("\n")[0::2] if line] == list(SUBSCRIPTION_KEYS)
    with pytest.raises(SnsVerificationError, match="Token"):
        string_to_sign({k: v for k, v in sub.items() if k != "Token"})
    with pytest.raises(SnsVerificationError):
        string_to_sign({**sub, "Type": "Bogus"})


# ---------------------------------------------------------------------------- forgeries refused


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Message", '{"eventType":"Bounce"}'),
        ("Subject", "other"),
        ("TopicArn", TOPIC + "x"),
        ("MessageId", "other-id"),
        ("Timestamp", sns_time(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))),
    ],
    ids=["Message", "Subject", "TopicArn", "MessageId", "Timestamp"],  # stable for pytest -n
)
async def test_tampered_field_refused(rsa_key, fetch, field: str, value: str) -> None:
    msg = sign(notification(), rsa_key, "2")
    with pytest.raises(SnsVerificationError, match="signature does not match"):
        # Both topics allowed: the signature alone must catch the change.
        await check({**msg, field: value}, fetch, topic_arns=frozenset({TOPIC, TOPIC + "x"}))


@pytest.mark.asyncio
async def test_removed_or_added_subject_refused(rsa_key, fetch) -> None:
    with_subject = sign(notification(), rsa_key)
    with pytest.raises(SnsVerificationError):
        await check({k: v for k, v in with_subject.items() if k != "Subject"}, fetch)
    without = sign(notification(subject=None), rsa_key)
    with pytest.raises(SnsVerificationError):
        await check({**without, "Subject": "injected"}, fetch)


@pytest.mark.asyncio
async def test_tampered_subscribe_url_refused(rsa_key, fetch) -> None:
    msg = sign(subscription(), rsa_key, "2")
    with pytest.raises(SnsVerificationError):
        await check({**msg, "SubscribeURL": "https://evil.example/confirm"}, fetch)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"Signature": None}, "Signature is missing"),
        ({"Signature": ""}, "Signature is missing"),
        ({"Signature": "not base64!!"}, "base64"),
        ({"Signature": "QUJD"}, "signature does not match"),
        ({"SignatureVersion": "3"}, "SignatureVersion"),
        ({"SignatureVersion": None}, "SignatureVersion"),
        ({"SignatureVersion": 1}, "SignatureVersion"),
        ({"Type": "Bogus"}, "Type"),
        ({"SigningCertURL": None}, "SigningCertURL"),
    ],
)
async def test_bad_signature_fields_refused(rsa_key, fetch, change, reason: str) -> None:
    msg = sign(notification(), rsa_key)
    for key, value in change.items():
        if value is None:
            msg.pop(key)
        else:
            msg[key] = value
    with pytest.raises(SnsVerificationError, match=reason):
        await check(msg, fetch)


@pytest.mark.asyncio
async def test_wrong_algorithm_refused(rsa_key, fetch) -> None:
    # Signed with SHA1 but claims SignatureVersion 2 (SHA256), and the reverse.
    msg = sign(notification(), rsa_key, "2", digest=hashes.SHA1())
    with pytest.raises(SnsVerificationError, match="signature does not match"):
        await check(msg, fetch)
    msg = sign(notification(), rsa_key, "1", digest=hashes.SHA256())
    with pytest.raises(SnsVerificationError, match="signature does not match"):
        await check(msg, fetch)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("url", "pattern"),
    [
        ("http://evil.example/cert.pem", DEFAULT_PATTERN),
        ("https://sns.us-east-1.amazonaws.com.evil.com/x.pem", DEFAULT_PATTERN),
        ("https://user@sns.us-east-1.amazonaws.com/x.pem", DEFAULT_PATTERN),
        # Even under an operator's too-loose pattern, userinfo tricks are refused.
        ("https://sns.us-east-1.amazonaws.com@evil.com/x.pem", re.compile(r"^https://sns\.")),
        ("https://sns.us-east-1.amazonaws.com:443@evil.com/x.pem", re.compile(r"^https://sns\.")),
        ("http://sns.us-east-1.amazonaws.com/x.pem", re.compile(r"^https?://sns\.")),
        ("ftp://sns.us-east-1.amazonaws.com/x.pem", re.compile(r"^ftp://")),
        ("https://sns.us-east-1.amazonaws.com/x.txt", DEFAULT_PATTERN),
        ("https://sns.us-east-1.amazonaws.com/x.pem?a=b", DEFAULT_PATTERN),
        ("https://sns.us-east-1.amazonaws.com/x.pem#frag", DEFAULT_PATTERN),
        ("https://sns.us-east-1.amazonaws.com/a\\@evil.com/x.pem", DEFAULT_PATTERN),
        ("https://sns.us-east-1.amazonaws.com/x .pem", DEFAULT_PATTERN),
        ("https://sns.us-east-1.amazonaws.com/x.pem", LOCAL_PATTERN),
        ("", DEFAULT_PATTERN),
    ],
)
async def test_foreign_cert_url_refused_without_fetching(rsa_key, fetch, url, pattern) -> None:
    with pytest.raises(SnsVerificationError, match="SigningCertURL"):
        check_cert_url(url, pattern)
    msg = sign(notification(), rsa_key, cert_url=url)
    with pytest.raises(SnsVerificationError, match="SigningCertURL"):
        await check(msg, fetch, cert_url_pattern=pattern)
    assert fetch.calls == []


def test_cert_url_accepted() -> None:
    check_cert_url(CERT_URL, DEFAULT_PATTERN)
    check_cert_url(
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-x.pem", DEFAULT_PATTERN
    )
    check_cert_url("http://127.0.0.1:9/sns.pem", LOCAL_PATTERN)


@pytest.mark.asyncio
async def test_disallowed_topic_refused_without_fetching(rsa_key, fetch) -> None:
    msg = sign(notification(), rsa_key)
    with pytest.raises(SnsVerificationError, match="TopicArn"):
        await check(msg, fetch, topic_arns=frozenset({"arn:aws:sns:us-east-1:1:other"}))
    assert fetch.calls == []


@pytest.mark.asyncio
async def test_header_type_mismatch_refused(rsa_key, fetch) -> None:
    msg = sign(notification(), rsa_key)
    with pytest.raises(SnsVerificationError, match="x-amz-sns-message-type"):
        await check(msg, fetch, header_type="SubscriptionConfirmation")
    assert fetch.calls == []


@pytest.mark.asyncio
@pytest.mark.parametrize(("before", "after"), [(-30, -1), (1, 30)], ids=["expired", "not-yet"])
async def test_cert_outside_validity_refused(rsa_key, before: int, after: int) -> None:
    now = dt.datetime.now(dt.UTC)
    pem = _make_cert(
        rsa_key,
        not_before=now + dt.timedelta(days=before),
        not_after=now + dt.timedelta(days=after),
    )
    with pytest.raises(SnsVerificationError, match="not valid now"):
        await check(sign(notification(), rsa_key), FakeFetch(pem))


@pytest.mark.asyncio
async def test_other_key_refused(rsa_key, cert_pem) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(SnsVerificationError, match="signature does not match"):
        await check(sign(notification(), other), FakeFetch(cert_pem))
    now = dt.datetime.now(dt.UTC)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_pem = _make_cert(
        ec_key, not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=1)
    )
    with pytest.raises(SnsVerificationError, match="RSA"):
        await check(sign(notification(), rsa_key), FakeFetch(ec_pem))


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "pem",
    [
        b"",
        b"not a pem",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "text, not bytes",
    ],
)
async def test_bad_pem_refused(rsa_key, pem) -> None:
    with pytest.raises(SnsVerificationError, match="certificate"):
        await check(sign(notification(), rsa_key), FakeFetch(pem))


@pytest.mark.asyncio
async def test_fetch_failure_is_a_verification_error(rsa_key) -> None:
    fetch = FakeFetch(OSError("connection refused"))
    with pytest.raises(SnsCertFetchError, match="connection refused") as info:
        await check(sign(notification(), rsa_key), fetch)
    assert isinstance(info.value, SnsVerificationError)
    assert fetch.calls == [CERT_URL]


@pytest.mark.asyncio
async def test_fetch_cancellation_propagates(rsa_key) -> None:
    fetch = FakeFetch(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await check(sign(notification(), rsa_key), fetch)


def test_error_hierarchy() -> None:
    assert issubclass(SnsVerificationError, SnsError)
    assert issubclass(SnsMessageError, SnsError)
    assert not issubclass(SnsMessageError, SnsVerificationError)
    assert not issubclass(SnsVerificationError, SnsMessageError)
    assert {"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"} == MESSAGE_TYPES


# ------------------------------------------------------------------------- property-based tests


# signed_pair is module-scoped, so reusing it across examples is safe.
FIXTURE_CHECK = HealthCheck.function_scoped_fixture


@pytest.fixture(scope="module")
def signed_pair(rsa_key, cert_pem) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    return (sign(notification(), rsa_key, "1"), sign(subscription(), rsa_key, "2"), cert_pem)


@settings(max_examples=300, deadline=None, suppress_health_check=[FIXTURE_CHECK])
@given(which=st.booleans(), data=st.data())
def test_mutated_messages_never_verify(signed_pair, which: bool, data: st.DataObject) -> None:
    notif, sub, pem = signed_pair
    msg = copy.deepcopy(notif if which else sub)
    signed = NOTIFICATION_KEYS if which else SUBSCRIPTION_KEYS
    op = data.draw(st.sampled_from(["set", "drop", "flip"]))
    if op == "set":  # any new value for a signed field (Subject may be added)
        key = data.draw(st.sampled_from(signed))
        msg[key] = data.draw(st.text().filter(lambda v: v != msg.get(key)))
    elif op == "drop":
        del msg[data.draw(st.sampled_from([k for k in signed if k in msg]))]
    else:  # flip bits of one signature byte (PKCS#1 v1.5 signatures are unique per message)
        raw = bytearray(base64.b64decode(msg["Signature"]))
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
        msg["Signature"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(SnsVerificationError):
        asyncio.run(verify(msg, FakeFetch(pem), cert_url_pattern=DEFAULT_PATTERN,
                           topic_arns=frozenset({TOPIC})))


_json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20)
)


@settings(max_examples=200, deadline=None, suppress_health_check=[FIXTURE_CHECK])
@given(
    junk=st.dictionaries(
        st.sampled_from(
            [
                "Type",
                "MessageId",
                "TopicArn",
                "Message",
                "Timestamp",
                "Subject",
                "Signature",
                "SignatureVersion",
                "SigningCertURL",
                "Token",
                "SubscribeURL",
            ]
        ),
        st.one_of(
            _json_scalar,
            st.lists(_json_scalar, max_size=2),
            st.just("Notification"),
            st.just("1"),
            st.just(CERT_URL),
        ),
    )
)
def test_arbitrary_input_only_raises_verification_error(signed_pair, junk) -> None:
    with pytest.raises(SnsVerificationError):
        asyncio.run(verify(junk, FakeFetch(signed_pair[2]), cert_url_pattern=DEFAULT_PATTERN,
                           topic_arns=frozenset({TOPIC})))


@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            _json_scalar,
            lambda inner: st.one_of(
                st.lists(inner, max_size=3),
                st.dictionaries(st.text(max_size=10), inner, max_size=3),
            ),
            max_leaves=8,
        ).map(orjson.dumps),
    )
)
def test_parse_envelope_only_raises_message_error(body: bytes) -> None:
    with contextlib.suppress(SnsMessageError):
        parse_envelope(body)


@given(text=st.text(max_size=200))
def test_parse_ses_event_only_raises_message_error(text: str) -> None:
    with contextlib.suppress(SnsMessageError):
        parse_ses_event(text)


# ------------------------------------------------------------------------------ parse_envelope


def test_parse_envelope_accepts_genuine_shape(rsa_key) -> None:
    msg = sign(notification(), rsa_key)
    assert parse_envelope(orjson.dumps(msg)) == msg
    assert parse_envelope(orjson.dumps(sign(subscription(), rsa_key)))["Token"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "JSON"),
        (b"{", "JSON"),
        (b"[]", "object"),
        (b'"x"', "object"),
        (orjson.dumps({**notification(), "Message": {"a": 1}}), "Message"),
        (orjson.dumps({**notification(), "Signature": 5}), "Signature"),
        (orjson.dumps({k: v for k, v in notification().items() if k != "MessageId"}), "MessageId"),
        (
            orjson.dumps({k: v for k, v in subscription().items() if k != "SubscribeURL"}),
            "SubscribeURL",
        ),
        (orjson.dumps({**notification(), "Type": "Bogus"}), "Type"),
        (orjson.dumps({k: v for k, v in notification().items() if k != "Type"}), "Type"),
    ],
)
def test_parse_envelope_rejects_malformed(body: bytes, reason: str) -> None:
    with pytest.raises(SnsMessageError, match=reason):
        parse_envelope(body)


# ----------------------------------------------------------------------------- parse_ses_event

ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"

# fixture -> (event_type, message_id, recipients, suppress)
EXPECTED: dict[str, tuple[str, str, tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "notification-delivery.json": (
        "Delivery",
        "0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000",
        ("jane@example.com",),
        (),
    ),
    "notification-bounce-permanent.json": (
        "Bounce",
        "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
        ("jane@example.com", "mary@example.com", "richard@example.com"),
        (("jane@example.com", "Bounce/Permanent/General"),),
    ),
    "notification-bounce-permanent-no-dsn.json": (
        "Bounce",
        "00000137860315fd-34208509-5b74-41f3-95c5-22c1edc3c924-000000",
        ("jane@example.com", "mary@example.com", "richard@example.com"),
        (
            ("jane@example.com", "Bounce/Permanent/General"),
            ("richard@example.com", "Bounce/Permanent/General"),
        ),
    ),
    "notification-complaint.json": (
        "Complaint",
        "000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000",
        ("jane@example.com", "mary@example.com", "richard@example.com"),
        (("richard@example.com", "Complaint/abuse"),),
    ),
    "notification-complaint-no-feedback.json": (
        "Complaint",
        "0000013786031775-163e3910-53eb-4c8e-a04a-f29debf88a84-000000",
        ("jane@example.com", "mary@example.com", "richard@example.com"),
        (("richard@example.com", "Complaint/unknown"),),
    ),
    "event-delivery.json": ("Delivery", ID, ("recipient@example.com",), ()),
    "event-bounce.json": (
        "Bounce",
        ID,
        ("recipient@example.com",),
        (("recipient@example.com", "Bounce/Permanent/General"),),
    ),
    "event-complaint.json": (
        "Complaint",
        ID,
        ("recipient@example.com",),
        (("recipient@example.com", "Complaint/abuse"),),
    ),
    "event-send.json": ("Send", ID, ("recipient@example.com",), ()),
    "event-reject.json": ("Reject", ID, ("sender@example.com",), ()),
    "event-open.json": ("Open", ID, ("recipient@example.com",), ()),
    "event-click.json": ("Click", ID, ("recipient@example.com",), ()),
    "event-rendering-failure.json": ("RenderingFailure", ID, ("recipient@example.com",), ()),
    "event-delivery-delay.json": ("DeliveryDelay", ID, ("recipient@example.com",), ()),
}


def test_every_fixture_has_expectations() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parse_fixture(name: str) -> None:
    text = (FIXTURES / name).read_text()
    event = parse_ses_event(text)
    assert event == SesEvent(*EXPECTED[name][:2], None, *EXPECTED[name][2:], raw=text)


def _with_headers(name: str, *headers: dict[str, Any]) -> str:
    data = json.loads((FIXTURES / name).read_text())
    data["mail"].setdefault("headers", []).extend(headers)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ({"name": "X-Request-ID", "value": "12345"}, 12345),
        ({"name": "x-request-id", "value": " 7 "}, 7),
        ({"name": "X-REQUEST-ID", "value": "abc"}, None),
        ({"name": "X-Request-ID", "value": "1_000"}, None),
        ({"name": "X-Request-ID", "value": "-3"}, None),
        ({"name": "X-Request-ID", "value": 5}, None),
        ({"name": "X-Other", "value": "5"}, None),
    ],
)
def test_request_id_from_mail_headers(header: dict[str, Any], expected: int | None) -> None:
    for name in ("notification-delivery.json", "event-bounce.json", "event-rendering-failure.json"):
        assert parse_ses_event(_with_headers(name, header)).request_id == expected


def test_transient_bounce_does_not_suppress() -> None:
    data = json.loads((FIXTURES / "event-bounce.json").read_text())
    data["bounce"]["bounceType"] = "Transient"
    event = parse_ses_event(json.dumps(data))
    assert event.event_type == "Bounce"
    assert event.suppress == ()
    data["bounce"]["bounceType"] = "Undetermined"
    assert parse_ses_event(json.dumps(data)).suppress == ()


def test_permanent_bounce_without_subtype_and_duplicates() -> None:
    data = json.loads((FIXTURES / "notification-bounce-permanent-no-dsn.json").read_text())
    del data["bounce"]["bounceSubType"]
    data["bounce"]["bouncedRecipients"].append({"emailAddress": "jane@example.com"})
    data["bounce"]["bouncedRecipients"].append({"status": "5.1.1"})
    assert parse_ses_event(json.dumps(data)).suppress == (
        ("jane@example.com", "Bounce/Permanent/Undetermined"),
        ("richard@example.com", "Bounce/Permanent/Undetermined"),
    )


def test_verified_notification_carries_ses_event(rsa_key) -> None:
    msg = sign(notification(message=(FIXTURES / "event-complaint.json").read_text()), rsa_key)
    envelope = parse_envelope(orjson.dumps(msg))
    event = parse_ses_event(envelope["Message"])
    assert event.event_type == "Complaint"
    assert event.raw == msg["Message"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "JSON"),
        ("nope", "JSON"),
        ("[1]", "object"),
        ('{"mail": {}}', "notificationType or eventType"),
        ('{"eventType": "Bounce"}', "mail object"),
        ('{"notificationType": "Delivery", "mail": []}', "mail object"),
        ('{"eventType": 7, "mail": {}}', "eventType"),
    ],
)
def test_parse_ses_event_rejects_non_events(text: str, reason: str) -> None:
    with pytest.raises(SnsMessageError, match=reason):
        parse_ses_event(text)


def test_subscription_succeeded_notice_is_a_clear_message_error() -> None:
    text = json.dumps(
        {
            "notificationType": "AmazonSnsSubscriptionSucceeded",
            "message": "You have successfully subscribed your Amazon SNS topic "
            "'arn:aws:sns:us-east-1:123456789012:ses-events' to receive "
            "'Bounce' notifications from Amazon SES for identity 'example.com'.",
        }
    )
    with pytest.raises(SesSetupNotification, match="AmazonSnsSubscriptionSucceeded") as info:
        parse_ses_event(text)
    assert isinstance(info.value, SnsMessageError)


# ------------------------------------------------------------------ replays, names, the cache


@pytest.mark.asyncio
@pytest.mark.parametrize(("field", "reason"), [("MessageId", "line break"),
                                               ("Subject", "line break"),
                                               ("TopicArn", "line break"),
                                               ("Timestamp", "not an ISO 8601 time")])
async def test_newline_in_a_signed_field_is_refused(rsa_key, fetch, field: str,
                                                    reason: str) -> None:
    msg = sign(notification(), rsa_key)
    changed = {**msg, field: msg[field] + "\nSubject\nx"}
    with pytest.raises(SnsVerificationError, match=reason):
        await check(changed, fetch, topic_arns=frozenset({TOPIC, changed["TopicArn"]}))
    assert fetch.calls == []


@pytest.mark.asyncio
async def test_moving_a_field_boundary_keeps_the_bytes_but_is_refused(rsa_key, fetch) -> None:
    """Without a Subject, a MessageId that carries one signs the same bytes: a new id for
    deduplication under a genuine signature. The newline rule is what stops it."""
    msg = sign(notification(), rsa_key)
    moved = {k: v for k, v in msg.items() if k != "Subject"}
    moved["MessageId"] = f"{msg['MessageId']}\nSubject\n{msg['Subject']}"
    unchecked = "".join(f"{k}\n{moved[k]}\n" for k in NOTIFICATION_KEYS if k in moved)
    assert unchecked.encode() == string_to_sign(msg)  # the forgery the rule exists for
    with pytest.raises(SnsVerificationError, match="line break"):
        await check(moved, fetch)


@pytest.mark.asyncio
async def test_newlines_inside_message_are_genuine(rsa_key, fetch) -> None:
    await check(sign(notification(message='{\n  "eventType": "Send"\n}'), rsa_key), fetch)


@pytest.mark.asyncio
@pytest.mark.parametrize(("age", "ok"), [(dt.timedelta(minutes=59), True),
                                         (dt.timedelta(hours=1, minutes=1), False),
                                         (dt.timedelta(days=-1), False),
                                         (dt.timedelta(minutes=-5), True)])
async def test_timestamp_age_is_bounded(rsa_key, fetch, age: dt.timedelta, ok: bool) -> None:
    now = dt.datetime.now(dt.UTC)
    msg = sign(notification(timestamp=sns_time(now - age)), rsa_key)
    if ok:
        await check(msg, fetch, now=now)
    else:
        with pytest.raises(SnsVerificationError, match=r"older than|future"):
            await check(msg, fetch, now=now)
        assert fetch.calls == []


def test_unparsable_timestamp_is_malformed(rsa_key) -> None:
    msg = sign(notification(timestamp="yesterday"), rsa_key)
    with pytest.raises(SnsMessageError, match="Timestamp"):
        parse_envelope(orjson.dumps(msg))


@pytest.mark.asyncio
async def test_empty_allow_list_refuses_everything(rsa_key, fetch) -> None:
    for msg in (sign(notification(), rsa_key), sign(subscription(), rsa_key)):
        with pytest.raises(SnsTopicRefused, match="SNS_TOPIC_ARNS is empty"):
            await check(msg, fetch, topic_arns=frozenset())
    assert fetch.calls == []


def _named_cert(key: rsa.RSAPrivateKey, cn: str, sans: tuple[str, ...] = ()) -> bytes:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1))
               .not_valid_after(now + dt.timedelta(days=1)))
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("cn", ["sns.amazonaws.com", "sns.us-east-1.amazonaws.com",
                                "SNS.eu-west-1.AMAZONAWS.com", "sns.cn-north-1.amazonaws.com.cn"])
def test_certificate_subject_of_sns_is_accepted(rsa_key, cn: str) -> None:
    load_certificate(_named_cert(rsa_key, cn))


@pytest.mark.parametrize("cn", ["evil.example", "sns.s3.amazonaws.com", "s3.amazonaws.com",
                                "sns.amazonaws.com.evil.example", "x.sns.amazonaws.com"])
def test_certificate_subject_elsewhere_is_refused(rsa_key, cn: str) -> None:
    with pytest.raises(SnsVerificationError, match="not an SNS host"):
        load_certificate(_named_cert(rsa_key, cn))


def test_certificate_subject_alternative_name_counts(rsa_key) -> None:
    load_certificate(_named_cert(rsa_key, "Amazon", sans=("sns.us-west-2.amazonaws.com",)))


def test_subscribe_url_guard_accepts_real_aws_urls_only() -> None:
    """SNS's SubscribeURL has a query and no .pem: the guard must accept it under the default
    pattern (it once reused the SigningCertURL rules and refused every genuine one)."""
    check_subscribe_url(
        "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
        "arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37fb687f", DEFAULT_PATTERN)
    for url in ["", "http://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription",
                "https://sns.us-west-2.amazonaws.com.evil.example/?x=1",
                "https://sns.us-west-2.amazonaws.com@evil.example/?x=1",
                "https://evil.example/?u=https://sns.us-west-2.amazonaws.com/",
                "https://sns.s3.amazonaws.com/?Action=ConfirmSubscription",
                "https://sns.us-west-2.amazonaws.com/?x=1 2"]:
        with pytest.raises(SnsVerificationError, match="SubscribeURL"):
            check_subscribe_url(url, DEFAULT_PATTERN)


def test_refusals_do_not_reflect_a_huge_value(rsa_key) -> None:
    url = "https://sns.us-east-1.amazonaws.com/" + "a" * 2_000_000 + ".pem?x"
    with pytest.raises(SnsVerificationError) as info:
        check_cert_url(url, DEFAULT_PATTERN)
    assert len(str(info.value)) < 1000


@pytest.mark.parametrize(("a", "b", "same"), [
    ("a@example.com", "a@example.com", True),
    ("a@Example.COM", "a@example.com", True),
    ("A@example.com", "a@example.com", True),
    ("a@bücher.de", "a@xn--bcher-kva.de", True),
    ("Ann <a@example.com>", "a@example.com", True),
    ("a@example.com", "b@example.com", False),
    ("a@example.com", "a@example.org", False),
    ("a@example.com.evil", "a@example.com", False),
])
def test_same_address(a: str, b: str, same: bool) -> None:
    assert same_address(a, b) is same
    assert addressed_to(a, ["x@y.example", b]) is same


class CountingFetch:
    """fetch for CertificateCache: a body per URL, counted; a gate makes calls overlap."""

    def __init__(self, bodies: dict[str, bytes | BaseException]) -> None:
        self.bodies = bodies
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        await self.gate.wait()
        body = self.bodies[url]
        if isinstance(body, BaseException):
            raise body
        return body


@pytest.mark.asyncio
async def test_cache_evicts_least_recently_used_beyond_its_size(cert_pem) -> None:
    fetch = CountingFetch({f"u{i}": cert_pem for i in range(4)})
    cache = CertificateCache(fetch, size=2)
    for url in ["u0", "u1", "u0", "u2", "u0", "u1"]:
        assert isinstance(await cache.get(url), x509.Certificate)
        assert len(cache) <= 2
    # u1 was the least recently used when u2 came in; u0 stayed, being used since.
    assert fetch.calls == ["u0", "u1", "u2", "u1"]


@pytest.mark.asyncio
async def test_cache_shares_one_fetch_among_concurrent_messages(cert_pem) -> None:
    fetch = CountingFetch({"u": cert_pem})
    fetch.gate.clear()
    cache = CertificateCache(fetch)
    waiters = [asyncio.ensure_future(cache.get("u")) for _ in range(20)]
    await asyncio.sleep(0.01)
    fetch.gate.set()
    certs = await asyncio.gather(*waiters)
    assert fetch.calls == ["u"]
    assert len({id(c) for c in certs}) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("body", [b"-----BEGIN CERTIFICATE-----\nMIIB", OSError("refused")],
                         ids=["truncated", "unreachable"])
async def test_cache_keeps_no_failure_past_its_ttl(cert_pem, body) -> None:
    now = [0.0]
    fetch = CountingFetch({"u": body})
    cache = CertificateCache(fetch, failure_ttl=30, clock=lambda: now[0])
    for _ in range(3):  # a flood naming the broken URL costs one fetch
        with pytest.raises(SnsVerificationError):
            await cache.get("u")
    assert fetch.calls == ["u"]
    assert len(cache) == 0  # nothing that failed to parse was kept
    now[0] = 31.0
    fetch.bodies["u"] = cert_pem  # the next try after the TTL fetches again, and keeps it
    await cache.get("u")
    await cache.get("u")
    assert fetch.calls == ["u", "u"]


@pytest.mark.asyncio
async def test_cache_fetch_failure_is_a_fetch_error(cert_pem) -> None:
    cache = CertificateCache(CountingFetch({"u": OSError("refused")}))
    with pytest.raises(SnsCertFetchError, match="refused"):
        await cache.get("u")
    with pytest.raises(SnsCertFetchError, match="remembered"):
        await cache.get("u")
