"""Input validation of the API (sesd.api.schemas), below the HTTP layer."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from sesd.api import schemas

# Addresses shaped like the fast path's regex, plus near misses of every kind it must not wave
# through (special-use names, Punycode, over-long parts, stray characters).
_LOCAL = st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,70}", fullmatch=True)
_LABEL = st.from_regex(r"[A-Za-z0-9-]{1,64}", fullmatch=True) | st.sampled_from(
    ["xn--zz", "xn--fsqu00a", "XN--abc", "ab--cd", "-x", "x-"])
_TLD = st.from_regex(r"[A-Za-z]{1,64}", fullmatch=True) | st.sampled_from(
    ["test", "TEST", "local", "localhost", "invalid", "onion", "arpa", "xn--3lr804guic", "c0m"])
NEAR_PLAIN = st.builds(lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}",
                       _LOCAL, st.lists(_LABEL, min_size=1, max_size=4), _TLD)


def _email_validator_accepts(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


@settings(max_examples=1000, deadline=None)
@given(st.from_regex(schemas.PLAIN_EMAIL, fullmatch=True) | NEAR_PLAIN)
def test_fast_path_accepts_only_what_email_validator_accepts(address: str) -> None:
    if schemas.fast_valid_email(address):
        assert _email_validator_accepts(address), address
    # Whichever path decides, the verdict is email-validator's.
    assert schemas.valid_email(address) == _email_validator_accepts(address), address


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_gets_email_validators_verdict_and_never_a_control(text: str) -> None:
    verdict = schemas.valid_email(text)
    if schemas._CONTROL.search(text):
        assert not verdict
    else:
        assert verdict == _email_validator_accepts(text)


@pytest.mark.parametrize("address", ["a@example.test", "a@b.localhost", "a@xn--zz.com",
                                     "a@mail.invalid", "x" * 65 + "@example.com"])
def test_fast_path_defers_what_it_cannot_decide(address: str) -> None:
    assert schemas.PLAIN_EMAIL.fullmatch(address)
    assert not schemas.fast_valid_email(address)
    assert schemas.valid_email(address) == _email_validator_accepts(address)


@pytest.mark.parametrize(
    "address",
    ["a@example.com", "first.last+tag@sub.example.co.uk", "o'brien@example.ie",
     "用户@例子.广告", "user@xn--fsqu00a.xn--3lr804guic"],
)
def test_valid_addresses(address: str) -> None:
    assert schemas.valid_email(address)


@pytest.mark.parametrize(
    "address",
    ["", "a", "a@", "@example.com", "a@@example.com", "a..b@example.com", ".a@example.com",
     "a@example", "a@-example.com", "a b@example.com", "a@example.com\r\nBcc: b@example.com",
     "a@example.com\n", "a\x85@example.com", "Ann <a@example.com>", "\"quoted local\"@example.com",
     "a@" + "b" * 250 + ".com"],
)
def test_invalid_addresses(address: str) -> None:
    assert not schemas.valid_email(address)
    if address.strip() == address:  # both paths agree
        with pytest.raises(EmailNotValidError):
            validate_email(address, check_deliverability=False)


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
