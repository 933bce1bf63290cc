"""OutboxTransport: every message is a complete RFC 5322 file, read back with the email package."""

from __future__ import annotations

import asyncio
import base64
import html
import json
import os
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from sesd.config import Settings
from sesd.errors import PermanentSendError, RetryableSendError
from sesd.transports import BulkEntry, BulkTemplate, Email, Envelope
from sesd.transports.outbox import OutboxTransport

HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "X-Request-ID",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
)


ENVELOPE = Envelope("news@example.com")
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


# Subjects that are RFC 2047 encoded words, hiding any text (line breaks included) in base64.
ENCODED_WORDS = st.text(max_size=60).map(
    lambda text: f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="
)


def outbox(directory: Path, sender: str = "news@example.com") -> OutboxTransport:
    return OutboxTransport(Settings(email_sender=sender, outbox_dir=directory))


def read(path: Path) -> EmailMessage:
    with path.open("rb") as f:
        message = BytesParser(policy=default).parse(f)
    assert isinstance(message, EmailMessage)
    return message


def files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


async def test_send_writes_a_complete_message(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "outbox"  # created by start()
    transport = outbox(directory)
    await transport.start()
    body = "<p>안녕하세요 — “quotes”</p>" + "x" * 2000
    message_id = await transport.send(email(42, "rcpt@example.net", "Grüße 👋", body))
    await transport.close()

    assert message_id.startswith("outbox-")
    [path] = files(directory)
    assert path.name == f"42-{message_id.removeprefix('outbox-')}.eml"
    message = read(path)
    assert message["From"] == "news@example.com"
    assert message["To"] == "rcpt@example.net"
    assert message["Subject"] == "Grüße 👋"
    assert message["X-Request-ID"] == "42"
    assert message["Date"].datetime is not None
    assert message["Message-ID"] == f"<{message_id.removeprefix('outbox-')}@example.com>"
    assert message.get_content_type() == "text/html"
    assert message.get_content_charset() == "utf-8"
    assert message.get_content().rstrip("\r\n") == body
    assert await transport.max_send_rate() is None
    assert transport.name == "outbox"


async def test_every_field_of_the_message_is_in_the_file(tmp_path: Path) -> None:
    transport = outbox(tmp_path)
    await transport.start()
    envelope = Envelope("=?utf-8?b?R3LDvMOfZQ==?= <news@example.com>", ("r@example.com",),
                        "events")
    await transport.send(email(
        5, "a@example.net", "s", "<p>Hello <b>you</b></p>", text="Hello you",
        envelope=envelope, headers=(("List-Unsubscribe", "<https://x.example/u/5.t>"),
                                    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")),
        tags=(("campaign", "spring"), ("kind", "news"))))
    message = read(files(tmp_path)[0])
    assert message["From"] == "Grüße <news@example.com>"
    assert message["Reply-To"] == "r@example.com"
    assert message["List-Unsubscribe"] == "<https://x.example/u/5.t>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["X-SES-CONFIGURATION-SET"] == "events"
    assert message["X-SES-MESSAGE-TAGS"] == "campaign=spring, kind=news"
    # Text and HTML as alternatives, the preferred (HTML) last; no defect in either.
    assert message.get_content_type() == "multipart/alternative"
    assert not message.defects and all(not part.defects for part in message.walk())
    plain, rich = message.get_payload()
    assert (plain.get_content_type(), rich.get_content_type()) == ("text/plain", "text/html")
    assert plain.get_content().strip() == "Hello you"
    assert message.get_body(("html",)).get_content().strip() == "<p>Hello <b>you</b></p>"


@pytest.mark.parametrize(
    ("to", "subject"),
    [
        ("a@example.net", "Hello\r\nBcc: victim@example.org"),
        ("a@example.net", "Hello\nX-Evil: 1"),
        ("a@example.net", "Hello\r\n"),  # would end the header block early
        ("a@example.net", "Hello\u2028X-Evil: 1"),
        ("a@example.net\r\nBcc: victim@example.org", "Hello"),
        # Encoded words decoded and written back raw by Python < 3.11.10 (CVE-2024-6923).
        ("a@example.net", "=?utf-8?q?=0D=0ABcc:_victim@example.org?="),
        ("a@example.net", "Hi =?utf-8?b?DQpCY2M6IHZpY3RpbUBleGFtcGxlLm9yZw==?="),
        ("a@example.net", "=?utf-8?q?Hi=0D=0A=0D=0A?=<p>body</p>"),
        ("=?utf-8?q?=0D=0ABcc:_victim@example.org?= <a@example.net>", "Hello"),
    ],
)
async def test_header_injection_is_permanent_and_leaves_nothing(
    tmp_path: Path, to: str, subject: str
) -> None:
    transport = outbox(tmp_path)
    await transport.start()
    with pytest.raises(PermanentSendError):
        await transport.send(email(1, to, subject, "<p>h</p>"))
    assert files(tmp_path) == []


async def test_unencodable_body_is_permanent(tmp_path: Path) -> None:
    transport = outbox(tmp_path)
    await transport.start()
    with pytest.raises(PermanentSendError):
        await transport.send(email(1, "a@example.net", "s", "lone surrogate \ud800"))
    assert files(tmp_path) == []


async def test_bulk_renders_the_pixel_per_entry(tmp_path: Path) -> None:
    transport = outbox(tmp_path)
    await transport.start()
    template = BulkTemplate("Bulk", '<p>Hi</p><img src="{{{sesdPixel}}}" alt="">')
    pixels = {1: "https://t.example/o?r=1&s=a", 2: "https://t.example/o?r=2&s=b",
              3: 'https://t.example/o?r=3&s="><script>'}
    entries = [
        entry(1, "one@example.net", html.escape(pixels[1])),
        entry(2, "two@example.net\r\nBcc: x@example.org", html.escape(pixels[2])),
        entry(3, "three@example.net", html.escape(pixels[3])),
    ]
    results = await transport.send_bulk(ENVELOPE, template, entries)

    assert [r.request_id for r in results] == [1, 2, 3]
    assert results[0].error is None and results[2].error is None
    assert isinstance(results[1].error, PermanentSendError) and results[1].message_id is None
    written = {read(p)["X-Request-ID"]: read(p) for p in files(tmp_path)}
    assert set(written) == {"1", "3"}
    for one in (entries[0], entries[2]):
        message = written[str(one.request_id)]
        assert message["To"] == one.to
        assert message["Subject"] == "Bulk"
        expected = f'<p>Hi</p><img src="{html.escape(pixels[one.request_id])}" alt="">'
        assert message.get_content().rstrip("\r\n") == expected
    assert await transport.send_bulk(ENVELOPE, template, []) == []


async def test_no_partial_files_under_concurrency(tmp_path: Path) -> None:
    transport = outbox(tmp_path)
    await transport.start()
    body = "<p>" + "y" * 100_000 + "</p>"
    ids = await asyncio.gather(
        *(transport.send(email(i, f"r{i}@example.net", "s", body)) for i in range(30))
    )
    assert len(set(ids)) == 30
    names = [p.name for p in files(tmp_path)]
    assert len(names) == 30
    assert all(n.endswith(".eml") and not n.startswith(".") for n in names)
    for path in files(tmp_path):
        assert read(path).get_content().rstrip("\r\n") == body


async def test_unwritable_outbox_is_retryable_and_leaves_no_tmp(tmp_path: Path) -> None:
    transport = outbox(tmp_path / "gone")
    await transport.start()
    os.rmdir(tmp_path / "gone")
    with pytest.raises(RetryableSendError):
        await transport.send(email(1, "a@example.net", "s", "h"))
    results = await transport.send_bulk(ENVELOPE, PIXEL_TEMPLATE, [entry(2, "b@x.example", "u")])
    assert isinstance(results[0].error, RetryableSendError)
    assert files(tmp_path) == []


@hsettings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(subject=st.text(max_size=200) | ENCODED_WORDS, body=st.text(max_size=500))
def test_any_text_either_round_trips_or_is_refused(tmp_path: Path, subject: str, body: str) -> None:
    directory = tmp_path / "h"
    transport = outbox(directory)

    async def attempt() -> str | None:
        await transport.start()
        try:
            return await transport.send(email(7, "a@example.net", subject, body))
        except PermanentSendError:
            return None

    message_id = asyncio.run(attempt())
    paths = list(directory.iterdir())
    try:
        if message_id is None:
            # Refused only for line breaks in the subject, plain or hidden in an encoded word.
            assert paths == []
            assert subject.splitlines() != [subject] or "=?" in subject
            return
        [path] = paths
        message = read(path)
        # No header smuggled in or lost, whatever the subject held.
        assert sorted(message.keys()) == sorted(HEADERS)
        assert message["X-Request-ID"] == "7"
        if "=?" not in subject:
            # Header whitespace is folding whitespace (RFC 5322): only its position survives.
            assert message["Subject"].split() == subject.split()
        # Line boundaries are rewritten to the file's line ending; the text between them is kept.
        assert _lines(message.get_content()) == _lines(body)
    finally:
        for p in paths:
            p.unlink()


def _lines(text: str) -> list[str]:
    lines = text.splitlines()
    while lines and not lines[-1]:
        lines.pop()
    return lines
