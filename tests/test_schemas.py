"""Input validation of the API (sesd.api.schemas), below the HTTP layer."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from sesd.api import schemas


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-01-01T09:00:00+09:00", dt.datetime(2030, 1, 1, tzinfo=dt.UTC)),
        ("2030-01-01T00:00:00Z", dt.datetime(2030, 1, 1, tzinfo=dt.UTC)),
        ("2030-01-01t00:00:00z", dt.datetime(2030, 1, 1, tzinfo=dt.UTC)),
        ("2030-01-01 00:00:00-01:30", dt.datetime(2030, 1, 1, 1, 30, tzinfo=dt.UTC)),
        ("2030-01-01T00:00:00.5Z", dt.datetime(2030, 1, 1, 0, 0, 0, 500_000, tzinfo=dt.UTC)),
        ("2030-01-01T00:00:00.123456789Z",
         dt.datetime(2030, 1, 1, 0, 0, 0, 123_456, tzinfo=dt.UTC)),
    ],
)
def test_parse_time(text: str, expected: dt.datetime) -> None:
    assert schemas.parse_time(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "2030-01-01", "2030-01-01T00:00:00", "2030-01-01T00:00Z", "2030-01-01T00:00:00+0900",
     "2030-02-30T00:00:00Z", "2030-01-01T24:00:00Z", "2030-01-01T00:00:00+24:00",
     "2030-01-01T00:00:00.Z", "2030-01-01T00:00:00.1234567890Z", "0000-01-01T00:00:00Z",
     "\u0662030-01-01T00:00:00Z", "tomorrow"],
)
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        schemas.parse_time(text)


def test_parse_hours() -> None:
    assert schemas.parse_hours(None) == 24
    assert [schemas.parse_hours(h) for h in ("1", "24", "168", "001")] == [1, 24, 168, 1]
    for bad in ("0", "169", "", "abc", "1.5", "-1", "+1", " 1", "1 ", "\u0661", "1000"):
        with pytest.raises(schemas.ValidationError):
            schemas.parse_hours(bad)


NOW = 1_800_000_000_000


def test_parse_messages_trims_clamps_and_counts() -> None:
    body = {"messages": [
        {"topicId": " t ", "emails": [" a@example.com "], "subject": " s ", "content": " c ",
         "scheduledAt": "2000-01-01T00:00:00Z"},
        {"topicId": "t", "emails": ["b@example.com"], "subject": "s", "content": "c",
         "scheduledAt": "2099-01-01T00:00:00Z"},
    ]}
    first, second = schemas.parse_messages(body, now_ms=NOW, max_recipients=2)
    # Addresses and the subject (a header) are trimmed; the topic id (the client's key) and the
    # HTML are kept as given.
    assert (first.topic_id, list(first.emails), first.subject, first.html) == (
        " t ", ["a@example.com"], "s", " c ")
    assert first.scheduled_at == NOW
    assert second.scheduled_at == int(dt.datetime(2099, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    with pytest.raises(schemas.ValidationError, match="too many recipients"):
        schemas.parse_messages(body, now_ms=NOW, max_recipients=1)


@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\x0b", "\x1b", "\x7f", "\x85", "\x9b",
                                  "\u2028", "\u2029"])
def test_header_values_refuse_line_breaks_and_controls(char: str) -> None:
    for field in ("topicId", "subject"):
        message = {"topicId": "t", "emails": ["a@example.com"], "subject": "s", "content": "c"}
        message[field] = f"a{char}b"
        with pytest.raises(schemas.ValidationError, match=field):
            schemas.parse_messages({"messages": [message]}, now_ms=NOW, max_recipients=10)
    # Content is HTML, not a header: line breaks are fine there.
    message = {"topicId": "t", "emails": ["a@example.com"], "subject": "s",
               "content": f"a{char}b\r\n"}
    assert schemas.parse_messages({"messages": [message]}, now_ms=NOW, max_recipients=10)


def test_errors_name_the_message_and_field() -> None:
    good = {"topicId": "t", "emails": ["a@example.com"], "subject": "s", "content": "c"}
    bad = {**good, "emails": [f"u{i}@example.com" for i in range(17)] + ["x@"]}
    with pytest.raises(schemas.ValidationError) as caught:
        schemas.parse_messages({"messages": [good, good, good, bad]}, now_ms=NOW,
                               max_recipients=100)
    assert str(caught.value) == 'messages[3].emails[17]: "x@" is not a valid e-mail address'
    for field, value, expected in [
            ("subject", None, "messages[0].subject is required"),
            ("content", 5, "messages[0].content must be a string"),
            ("topicId", " ", "messages[0].topicId must not be empty"),
            ("scheduledAt", "2030-01-01T09:00:00", "messages[0].scheduledAt must be an RFC 3339")]:
        with pytest.raises(schemas.ValidationError, match=re.escape(expected)):
            schemas.parse_messages({"messages": [{**good, field: value}]}, now_ms=NOW,
                                   max_recipients=100)


def _one(emails: list[str]) -> dict[str, object]:
    return {"messages": [{"topicId": "t", "emails": emails, "subject": "s", "content": "c"}]}


def test_recipients_are_stored_canonical_and_once_per_mailbox() -> None:
    (message,) = schemas.parse_messages(_one([
        "Bob@Example.COM", "user@bücher.de", "bob@example.com", " BOB@example.com ",
        "ann@xn--bcher-kva.de", "ANN@BÜCHER.DE", "carol@example.com"]), now_ms=NOW,
        max_recipients=10)
    # First spelling wins; domains are lower-case Punycode, local parts as given.
    assert list(message.emails) == ["Bob@example.com", "user@xn--bcher-kva.de",
                                    "ann@xn--bcher-kva.de", "carol@example.com"]


def test_recipients_are_deduplicated_within_a_message_not_across() -> None:
    body = _one(["a@example.com"])
    body["messages"] = [*body["messages"], *body["messages"]]  # type: ignore[list-item]
    first, second = schemas.parse_messages(body, now_ms=NOW, max_recipients=10)
    assert list(first.emails) == list(second.emails) == ["a@example.com"]


@pytest.mark.parametrize(("address", "says"), [
    ("zoë@example.com", 'messages[0].emails[1]: "zoë@example.com" has non-ASCII characters '
                        "before the @, which SES cannot deliver (it has no SMTPUTF8)"),
    ("=?utf-8?q?victim=40target.example=2C?=@attacker.example",
     'messages[0].emails[1]: "=?utf-8?q?victim=40target.example=2C?=@attacker.example" '
     "contains an RFC 2047 encoded word"),
    ("a@example.com\r\nBcc: b@example.com",
     'messages[0].emails[1]: "a@example.com\\r\\nBcc: b@example.com" contains control'),
])
def test_undeliverable_recipients_are_refused_naming_them(address: str, says: str) -> None:
    with pytest.raises(schemas.ValidationError) as caught:
        schemas.parse_messages(_one(["ok@example.com", address]), now_ms=NOW, max_recipients=10)
    assert str(caught.value).startswith(says)
