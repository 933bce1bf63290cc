"""sesd.addresses: the canonical form (what SES can take) and the suppression key, pure."""

from __future__ import annotations

import unicodedata

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from sesd import addresses
from sesd.addresses import AddressError, canonical_address, key_of_canonical, suppression_key

# Addresses shaped like the fast path's regex, plus near misses of every kind it must not wave
# through (special-use names, Punycode, over-long parts, stray characters).
_LOCAL = st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,70}", fullmatch=True)
_LABEL = st.from_regex(r"[A-Za-z0-9-]{1,64}", fullmatch=True) | st.sampled_from(
    ["xn--zz", "xn--fsqu00a", "XN--abc", "ab--cd", "-x", "x-"])
_TLD = st.from_regex(r"[A-Za-z]{1,64}", fullmatch=True) | st.sampled_from(
    ["test", "TEST", "local", "localhost", "invalid", "onion", "arpa", "xn--3lr804guic", "c0m"])
NEAR_PLAIN = st.builds(lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}",
                       _LOCAL, st.lists(_LABEL, min_size=1, max_size=4), _TLD)
# Internationalised domains: Unicode letters (any case, composed or not), Punycode, UTS #46
# mappings (full-width letters, the ideographic full stop), mixed with ASCII local parts.
_IDN_LABEL = st.text(st.characters(categories=["Ll", "Lu", "Lo", "Mn", "Nd"]), min_size=1,
                     max_size=12) | st.sampled_from(
    ["bücher", "BÜCHER", "bu\u0308cher", "xn--bcher-kva", "XN--BCHER-KVA", "faß", "例子",
     "\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25", "xn--", "a-b"])  # full-width
IDN = st.builds(lambda local, labels, dot, tld: f"{local}@{dot.join([*labels, tld])}",
                _LOCAL, st.lists(_IDN_LABEL, min_size=1, max_size=3),
                st.sampled_from([".", ".", "。"]),
                st.sampled_from(["de", "DE", "com", "广告", "xn--3lr804guic", "test"]))


def expected_canonical(address: str) -> str | None:
    """What email-validator (no SMTPUTF8) says: the local part as given, its ASCII domain."""
    try:
        validated = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return f"{address.rpartition('@')[0]}@{validated.ascii_domain}"


def canonical_or_none(address: str) -> str | None:
    try:
        return canonical_address(address)
    except AddressError:
        return None


@settings(max_examples=500, deadline=None)
@given(st.from_regex(addresses.PLAIN_EMAIL, fullmatch=True) | NEAR_PLAIN)
def test_fast_path_accepts_only_what_email_validator_accepts(address: str) -> None:
    if addresses.is_plain(address):
        assert expected_canonical(address) is not None, address
    assert canonical_or_none(address) == expected_canonical(address), address


@settings(max_examples=500, deadline=None)
@given(IDN | st.text(max_size=80))
def test_canonical_form_is_email_validators_ascii_form(address: str) -> None:
    canonical = canonical_or_none(address)
    if addresses._ENCODED_WORD.search(address):
        assert canonical is None  # refused on top of email-validator's rules
        return
    assert canonical == expected_canonical(address), address
    if canonical is not None:
        assert canonical.isascii()
        assert canonical_address(canonical) == canonical  # a fixed point
        # The key SQLite computes (ASCII lower) is the key of every spelling.
        assert key_of_canonical(canonical) == suppression_key(canonical) == suppression_key(
            address)


@pytest.mark.parametrize(("address", "canonical"), [
    ("ann@BÜCHER.de", "ann@xn--bcher-kva.de"),
    ("ann@xn--bcher-kva.de", "ann@xn--bcher-kva.de"),
    ("Ann@Bücher.DE", "Ann@xn--bcher-kva.de"),  # the local part as given
    ("ann@bu\u0308cher.de", "ann@xn--bcher-kva.de"),  # NFD domain
    ("ann@XN--BCHER-KVA.DE", "ann@xn--bcher-kva.de"),
    ("BOB@Example.COM", "BOB@example.com"),
    ("user@例子.广告", "user@xn--fsqu00a.xn--4rr70v"),
    ("a@\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com", "a@example.com"),  # full-width
    ("a@faß.de", "a@xn--fa-hia.de"),  # UTS #46 non-transitional: not fass.de
])
def test_canonical_examples(address: str, canonical: str) -> None:
    assert canonical_address(address) == canonical


@pytest.mark.parametrize(("address", "says"), [
    ("zoë@example.com", '"zoë@example.com" has non-ASCII characters before the @, which SES '
                        "cannot deliver (it has no SMTPUTF8)"),
    ("用户@例子.广告", "non-ASCII characters before the @"),
    ("=?utf-8?q?victim=40target.example=2C?=@attacker.example", "RFC 2047 encoded word"),
    ("=?UTF-8?B?dmljdGlt?=@example.com", "RFC 2047 encoded word"),
    ("a@example.com\r\nBcc: b@example.com", "control characters or line breaks"),
    ("a\x85@example.com", "control characters"),
    ("x@", '"x@" is not a valid e-mail address'),
    ("zoë@", "is not a valid e-mail address"),  # invalid first, unsendable second
    ("a@example.test", "is not a valid e-mail address"),
    ("a" * 300 + "@example.com", "is not a valid e-mail address"),
])
def test_refusals_name_the_address_and_say_why(address: str, says: str) -> None:
    with pytest.raises(AddressError) as caught:
        canonical_address(address)
    assert says in str(caught.value)
    assert str(caught.value).startswith(addresses.shown(address))
    assert len(str(caught.value)) < 300  # the address is reflected cut short
    assert "\r" not in str(caught.value) and "\n" not in str(caught.value)


def test_fast_path_leaves_encoded_words_to_the_slow_path() -> None:
    word = "=?utf-8?q?victim=40target.example=2C?=@attacker.example"
    assert addresses.PLAIN_EMAIL.fullmatch(word)  # a legal dot-atom, so the regex alone passes
    assert not addresses.is_plain(word)
    # A lone "=?" is no encoded word: still a valid address, just decided by email-validator.
    assert canonical_address("a=?b@example.com") == "a=?b@example.com"


def test_a_list_at_few_domains_validates_each_domain_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    addresses._domain_forms.cache_clear()
    calls: list[str] = []
    real = addresses.validate_email

    def counting(address: str, **kwargs: object) -> object:
        calls.append(address)
        return real(address, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(addresses, "validate_email", counting)
    emails = [f"user{i}@bücher{i % 50}.de" for i in range(5000)]
    assert [canonical_address(e) for e in emails] == [
        f"user{i}@{real(f'a@bücher{i % 50}.de', check_deliverability=False).ascii_domain}"
        for i in range(5000)]
    assert len(calls) == 50


@pytest.mark.parametrize("spellings", [
    ["ann@bücher.de", "ann@BÜCHER.de", "ann@xn--bcher-kva.de", "Ann@Bücher.DE",
     "ANN@XN--BCHER-KVA.DE", "ann@bu\u0308cher.de", " ann@bücher.de "],
    ["bob@example.com", "BOB@Example.COM", "Bob@EXAMPLE.com"],
    # Not sendable (non-ASCII local part), still one key: bounce reports and manual entries.
    ["émile@example.com", "Émile@example.com", "E\u0301MILE@EXAMPLE.COM",
     "e\u0301mile@Example.com"],
    ["straße@example.com", "STRASSE@example.com", "strasse@example.com"],  # full case folding
    ["ann@bücher.test", "ANN@xn--bcher-kva.TEST"],  # a domain email-validator refuses
])
def test_every_spelling_has_one_key(spellings: list[str]) -> None:
    assert len({suppression_key(s) for s in spellings}) == 1, [suppression_key(s)
                                                              for s in spellings]


def test_keys_keep_different_mailboxes_apart() -> None:
    keys = [suppression_key(a) for a in ["ann@bücher.de", "ann@bucher.de", "anne@bücher.de",
                                         "a@faß.de", "a@fass.de", "no-at-sign", "@", ""]]
    assert len(set(keys)) == len(keys)
    assert suppression_key("Garbled@@X..Y") == suppression_key("garbled@@x..y")  # stable


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_key_of_any_text_is_a_fixed_point_and_case_blind(text: str) -> None:
    key = suppression_key(text)
    assert suppression_key(key) == key
    assert unicodedata.is_normalized("NFC", key.rpartition("@")[0])
    assert suppression_key(text.upper()) == suppression_key(text.lower()) or not text.isascii()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_valid_syntax_is_email_validators_verdict_and_never_a_control(text: str) -> None:
    verdict = addresses.valid_syntax(text)
    if addresses.CONTROL_CHARS.search(text):
        assert not verdict
    else:
        try:
            validate_email(text, check_deliverability=False)
        except EmailNotValidError:
            assert not verdict
        else:
            assert verdict


@pytest.mark.parametrize("address", [
    "a@example.com", "first.last+tag@sub.example.co.uk", "o'brien@example.ie",
    "用户@例子.广告", "user@xn--fsqu00a.xn--3lr804guic", "zoë@example.com"])
def test_valid_syntax_takes_what_a_manual_suppression_may_name(address: str) -> None:
    assert addresses.valid_syntax(address)


@pytest.mark.parametrize("address", [
    "", "a", "a@", "@example.com", "a@@example.com", "a..b@example.com", ".a@example.com",
    "a@example", "a@-example.com", "a b@example.com", "a@example.com\r\nBcc: b@example.com",
    "a@example.com\n", "a\x85@example.com", "Ann <a@example.com>", "\"quoted local\"@example.com",
    "a@" + "b" * 250 + ".com"])
def test_invalid_everywhere(address: str) -> None:
    assert not addresses.valid_syntax(address)
    with pytest.raises(AddressError):
        canonical_address(address)
