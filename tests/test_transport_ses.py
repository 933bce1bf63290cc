"""SesTransport against the local SES v2 stand-in: what goes on the wire, and what each failure
means to the sender. A real aiobotocore client talks HTTP to a real local server; botocore finds
the server through AWS_ENDPOINT_URL_SESV2, the way an operator would point it at an emulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import botocore.session
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError

from sesd.config import Settings
from sesd.errors import (
    PermanentSendError,
    RetryableSendError,
    SendingPausedError,
    ThrottledError,
)
from sesd.testing.harness import free_port
from sesd.testing.ses_standin import SesStandin
from sesd.transports import BulkEntry, BulkTemplate, Email, Envelope, create_transport
from sesd.transports.outbox import OutboxTransport
from sesd.transports.ses import ENTRY_STATUS_ERRORS, SesTransport, classify, classify_entry

SENDER = "sender@example.com"
ENVELOPE = Envelope(SENDER, config_set="sesd-events")
PIXEL_TEMPLATE = BulkTemplate("s", "{{{sesdPixel}}}")


def email(request_id: int, to: str, subject: str, html: str, *, text: str | None = None,
          envelope: Envelope = ENVELOPE, headers: tuple[tuple[str, str], ...] = (),
          tags: tuple[tuple[str, str], ...] = ()) -> Email:
    """An Email as the sender composes it: X-Request-ID first."""
    return Email(request_id, to, envelope, subject, html, text,
                 (("X-Request-ID", str(request_id)), *headers), tags)


def entry(request_id: int, to: str, pixel: str) -> BulkEntry:
    return BulkEntry(request_id, to, json.dumps({"sesdPixel": pixel}),
                     (("X-Request-ID", str(request_id)),))


def settings(**changes: object) -> Settings:
    base: dict[str, object] = {
        "email_transport": "ses",
        "email_sender": SENDER,
        "ses_config_set": "sesd-events",
        "aws_region": "us-east-1",
        "max_concurrent": 4,
    }
    base.update(changes)
    return Settings(**base)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def ses(**kwargs: object) -> AsyncIterator[SesTransport]:
    cfg = kwargs.pop("settings", None) or settings()
    transport = SesTransport(cfg, **kwargs)  # type: ignore[arg-type]
    await transport.start()
    try:
        yield transport
    finally:
        await transport.close()


# ----------------------------------------------------------------- SendEmail


async def test_send_puts_every_field_on_the_wire(standin: SesStandin) -> None:
    html = '<p>안녕하세요 — “quotes”</p><img src="https://t.example/p?r=42&amp;s=x">'
    async with ses() as transport:
        message_id = await transport.send(email(42, "rcpt@example.net", "Grüße 👋", html))
    [sent] = standin.sends
    assert sent["text"] is None  # no text part unless one is given
    standin.reset()
    envelope = Envelope("News <news@example.com>", ("reply@example.com",), "sesd-events")
    async with ses() as transport:
        message_id = await transport.send(email(
            42, "rcpt@example.net", "Grüße 👋", html, text="안녕하세요 — “quotes”",
            envelope=envelope, headers=(("List-Id", "<news.example.com>"),),
            tags=(("campaign", "spring"),)))

    [sent] = standin.sends
    assert sent["message_id"] == message_id
    assert sent["from"] == "News <news@example.com>"
    assert sent["reply_to"] == ["reply@example.com"]
    assert sent["to"] == ["rcpt@example.net"] and sent["cc"] == [] and sent["bcc"] == []
    assert sent["subject"] == "Grüße 👋"
    assert sent["html"] == html
    assert sent["text"] == "안녕하세요 — “quotes”"
    assert sent["request_id"] == "42"
    assert [list(h) for h in sent["headers"]] == [["X-Request-ID", "42"],
                                                  ["List-Id", "<news.example.com>"]]
    assert sent["tags"] == {"campaign": "spring"}
    assert sent["config_set"] == "sesd-events"
    assert sent["bulk"] is False


async def test_no_configuration_set_unless_the_envelope_has_one(standin: SesStandin) -> None:
    async with ses() as transport:
        await transport.send(email(1, "a@example.net", "s", "<p>h</p>",
                                   envelope=Envelope(SENDER)))
    assert standin.sends[0]["config_set"] is None
    assert standin.sends[0]["reply_to"] == [] and standin.sends[0]["tags"] == {}


async def test_one_client_serves_many_concurrent_sends(standin: SesStandin) -> None:
    standin.config = standin.config.updated({"latency_ms": 20})
    async with ses() as transport:
        ids = await asyncio.gather(
            *(transport.send(email(i, f"r{i}@example.net", "s", "h")) for i in range(20))
        )
    assert len(set(ids)) == 20
    assert sorted(int(s["request_id"]) for s in standin.sends) == list(range(20))


# ----------------------------------------------------------------- SendBulkEmail


async def test_bulk_maps_results_to_entries_in_order(standin: SesStandin) -> None:
    standin.config = standin.config.updated({"reject_pattern": r"^bad@"})
    template = BulkTemplate("Bulk subject", '<p>Hello</p><img src="{{{sesdPixel}}}" alt="">',
                            "Hello, in text")
    pixels = {10: "https://t.example/o?r=10&amp;s=a", 11: "https://t.example/o?r=11&amp;s=b",
              12: "https://t.example/o?r=12&amp;s=c"}
    entries = [entry(10, "one@example.net", pixels[10]),
               entry(11, "bad@example.net", pixels[11]),
               BulkEntry(12, "three@example.net", json.dumps({"sesdPixel": pixels[12]}),
                         (("X-Request-ID", "12"), ("List-Id", "<l.example.com>")),
                         (("t", "v"),))]
    async with ses() as transport:
        results = await transport.send_bulk(ENVELOPE, template, entries)

    assert [r.request_id for r in results] == [10, 11, 12]
    ok, rejected, ok2 = results
    assert ok.error is None and ok2.error is None
    assert isinstance(rejected.error, PermanentSendError)
    assert rejected.message_id is None
    assert rejected.error.code == "MESSAGE_REJECTED"
    assert str(rejected.error).startswith("MESSAGE_REJECTED: Email address is not verified.")

    by_id = {s["message_id"]: s for s in standin.sends}
    assert set(by_id) == {ok.message_id, ok2.message_id}
    for result, one in ((ok, entries[0]), (ok2, entries[2])):
        sent = by_id[result.message_id]
        assert sent["to"] == [one.to]
        assert sent["from"] == SENDER
        assert sent["subject"] == "Bulk subject"
        # {{{x}}} is raw: the value arrives as the sender escaped it for the attribute.
        assert sent["html"] == f'<p>Hello</p><img src="{pixels[one.request_id]}" alt="">'
        assert sent["text"] == "Hello, in text"
        assert sent["request_id"] == str(one.request_id)
        assert sent["config_set"] == "sesd-events"
        assert sent["bulk"] is True
    assert by_id[ok2.message_id]["tags"] == {"t": "v"}
    assert ["List-Id", "<l.example.com>"] in [list(h) for h in by_id[ok2.message_id]["headers"]]


async def test_bulk_whole_call_failure_raises(standin: SesStandin) -> None:
    standin.config = standin.config.updated({"throttle_rate": 1.0})
    async with ses() as transport:
        with pytest.raises(ThrottledError):
            await transport.send_bulk(ENVELOPE, PIXEL_TEMPLATE, [entry(1, "a@x.example", "u")])
        assert await transport.send_bulk(ENVELOPE, PIXEL_TEMPLATE, []) == []


async def test_bulk_refuses_more_than_ses_accepts(standin: SesStandin) -> None:
    entries = [entry(i, f"r{i}@example.net", "u") for i in range(51)]
    async with ses() as transport:
        with pytest.raises(ValueError, match="at most 50"):
            await transport.send_bulk(ENVELOPE, PIXEL_TEMPLATE, entries)
    assert standin.counters.requests == 0


# ----------------------------------------------------------------- failures


async def test_throttle_is_throttled(standin: SesStandin) -> None:
    standin.config = standin.config.updated({"throttle_rate": 1.0})
    async with ses() as transport:
        with pytest.raises(ThrottledError) as info:
            await transport.send(email(1, "a@example.net", "s", "h"))
    assert info.value.code == "TooManyRequestsException"
    assert "Maximum sending rate exceeded" in str(info.value)
    assert standin.counters.throttled == 1  # botocore did not retry on its own


async def test_server_error_is_retryable_not_throttled(standin: SesStandin) -> None:
    standin.config = standin.config.updated({"error_rate": 1.0})
    async with ses() as transport:
        with pytest.raises(RetryableSendError) as info:
            await transport.send(email(1, "a@example.net", "s", "h"))
    assert not isinstance(info.value, ThrottledError)
    assert info.value.code == "InternalFailure"
    assert standin.counters.errors == 1


async def test_hang_past_read_timeout_is_retryable(standin: SesStandin) -> None:
    standin.config = standin.config.updated({"hang_rate": 1.0, "hang_seconds": 3})
    async with ses(read_timeout=0.3) as transport:
        started = time.monotonic()
        with pytest.raises(RetryableSendError) as info:
            await transport.send(email(1, "a@example.net", "s", "h"))
    assert time.monotonic() - started < 2
    assert info.value.code == "SocketTimeoutError"  # aiohttp's: a read that did not come


async def test_outer_guard_bounds_the_whole_call(standin: SesStandin) -> None:
    standin.config = standin.config.updated({"latency_ms": 2000})
    async with ses(read_timeout=20, call_timeout=0.3) as transport:
        started = time.monotonic()
        with pytest.raises(RetryableSendError) as info:
            await transport.send(email(1, "a@example.net", "s", "h"))
    assert time.monotonic() - started < 1.5
    assert info.value.code == "TimeoutError"


async def test_connection_refused_is_retryable(aws_env: Callable[[str], None]) -> None:
    aws_env(f"http://127.0.0.1:{free_port()}")
    async with ses(connect_timeout=1) as transport:
        with pytest.raises(RetryableSendError) as info:
            await transport.send(email(1, "a@example.net", "s", "h"))
        assert await transport.max_send_rate() is None
    assert info.value.code == "ClientConnectorError"  # aiohttp's: nothing listens there


async def test_rejection_is_permanent_and_keeps_ses_text(standin: SesStandin) -> None:
    standin.config = standin.config.updated({"reject_pattern": "nope"})
    async with ses() as transport:
        with pytest.raises(PermanentSendError) as info:
            await transport.send(email(1, "nope@example.net", "s", "h"))
    assert str(info.value).startswith("MessageRejected: Email address is not verified.")
    assert "nope@example.net" in str(info.value)
    assert info.value.code == "MessageRejected"


async def test_paused_account_pauses_sending(standin: SesStandin) -> None:
    standin.config = standin.config.updated({"paused": True})
    async with ses() as transport:
        with pytest.raises(SendingPausedError) as info:
            await transport.send(email(1, "a@example.net", "s", "h"))
    assert info.value.code == "SendingPausedException"


async def test_max_send_rate_reads_get_account(standin: SesStandin) -> None:
    standin.config = standin.config.updated({"max_send_rate_reported": 37.5})
    async with ses() as transport:
        assert await transport.max_send_rate() == 37.5


async def test_send_before_start_is_a_bug() -> None:
    with pytest.raises(RuntimeError, match="start"):
        await SesTransport(settings()).send(email(1, "a@example.net", "s", "h"))


# ----------------------------------------------------------------- classification


def client_error(code: str, message: str, status: int) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "SendEmail")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "message", "status", "kind"),
    [
        ("TooManyRequestsException", "Too many requests", 429, ThrottledError),
        ("Throttling", "Maximum sending rate exceeded.", 400, ThrottledError),
        ("ThrottlingException", "Rate exceeded", 400, ThrottledError),
        ("LimitExceededException", "Maximum sending rate exceeded.", 400, ThrottledError),
        ("SomethingNew", "", 429, ThrottledError),
        ("Throttling", "Daily message quota exceeded.", 400, SendingPausedError),
        ("SendingPausedException", "Sending paused", 400, SendingPausedError),
        ("AccountSuspendedException", "Suspended", 400, SendingPausedError),
        ("UnrecognizedClientException", "The security token is invalid", 403, SendingPausedError),
        ("MessageRejected", "Email address is not verified.", 400, PermanentSendError),
        ("MailFromDomainNotVerifiedException", "Not verified", 400, PermanentSendError),
        ("BadRequestException", "Invalid address", 400, PermanentSendError),
        ("NotFoundException", "Configuration set does not exist", 404, PermanentSendError),
        ("InvalidParameterValue", "Missing final '@domain'", 400, PermanentSendError),
        ("LimitExceededException", "Too many configuration sets", 400, PermanentSendError),
        ("InternalFailure", "An internal error occurred.", 500, RetryableSendError),
        ("ServiceUnavailable", "Service unavailable", 503, RetryableSendError),
    ],
)
def test_classify_client_errors(code: str, message: str, status: int, kind: type) -> None:
    error = classify(client_error(code, message, status))
    assert type(error) is kind
    assert error.code == code
    assert str(error) == (f"{code}: {message}" if message else code)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (EndpointConnectionError(endpoint_url="http://x"), RetryableSendError),
        (TimeoutError(), RetryableSendError),
        (ConnectionResetError("reset"), RetryableSendError),
        (ParamValidationError(report="bad"), PermanentSendError),
    ],
)
def test_classify_other_failures(exc: Exception, kind: type) -> None:
    assert type(classify(exc)) is kind


def test_every_bulk_status_of_the_model_has_a_meaning() -> None:
    model = botocore.session.get_session().get_service_model("sesv2")
    statuses = set(model.shape_for("BulkEmailStatus").enum)
    assert statuses - {"SUCCESS"} == set(ENTRY_STATUS_ERRORS)
    assert classify_entry("SUCCESS", None) is None
    assert type(classify_entry("ACCOUNT_THROTTLED", "slow down")) is ThrottledError
    assert type(classify_entry("ACCOUNT_DAILY_QUOTA_EXCEEDED", None)) is SendingPausedError
    assert type(classify_entry("TRANSIENT_FAILURE", None)) is RetryableSendError
    assert type(classify_entry("SOMETHING_NEW", None)) is RetryableSendError
    error = classify_entry("MESSAGE_REJECTED", "Address blacklisted.")
    assert type(error) is PermanentSendError
    assert str(error) == "MESSAGE_REJECTED: Address blacklisted."


# ----------------------------------------------------------------- the package


def test_create_transport_follows_settings(tmp_path: Path) -> None:
    assert isinstance(create_transport(settings()), SesTransport)
    outbox = create_transport(settings(email_transport="outbox", outbox_dir=tmp_path))
    assert isinstance(outbox, OutboxTransport)
    assert (create_transport(settings()).name, outbox.name) == ("ses", "outbox")
