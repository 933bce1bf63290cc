"""Signed pixel links: tokens that can't be forged, and a pixel that is a real PNG."""

from __future__ import annotations

import base64
import html
import struct
import zlib
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sesd.tracking import (
    PIXEL_HEADERS,
    PIXEL_PNG,
    append_pixel,
    make_token,
    new_key,
    pixel_html,
    pixel_url,
    verify_token,
)

KEY = new_key()
OTHER_KEY = new_key()
PLACEHOLDER = "{{sesdPixel}}"  # any template placeholder: the pixel's braces must survive


# -- keys and tokens ---------------------------------------------------------------------------


def test_new_key_is_32_random_bytes_urlsafe_unpadded() -> None:
    key = new_key()
    assert "=" not in key
    assert len(base64.urlsafe_b64decode(key + "=")) == 32
    assert new_key() != key


def test_round_trip_with_int_and_query_text() -> None:
    token = make_token(KEY, 42)
    assert len(token) == 22
    assert "=" not in token
    assert verify_token(KEY, 42, token)
    assert verify_token(KEY, "42", token)


def test_token_depends_on_id_and_key() -> None:
    other = new_key()
    assert make_token(KEY, 1) != make_token(KEY, 2)
    assert make_token(KEY, 1) != make_token(other, 1)
    assert make_token(KEY, 1) == make_token(KEY, 1)
    assert not verify_token(other, 1, make_token(KEY, 1))
    assert not verify_token(KEY, 2, make_token(KEY, 1))


def test_changed_token_fails() -> None:
    token = make_token(KEY, 7)
    for i in range(len(token)):
        flipped = "A" if token[i] != "A" else "B"
        assert not verify_token(KEY, 7, token[:i] + flipped + token[i + 1 :])
    assert not verify_token(KEY, 7, token[:-1])
    assert not verify_token(KEY, 7, token + "A")
    assert not verify_token(KEY, 7, token + "=")


@pytest.mark.parametrize("spelling", ["007", "+7", " 7", "7 ", "7.0", "\u0667", "0x7", "-7", "7\n"])
def test_only_the_canonical_spelling_of_an_id_verifies(spelling: str) -> None:
    assert not verify_token(KEY, spelling, make_token(KEY, 7))


def test_the_message_is_domain_separated() -> None:
    # A bare HMAC of the id under the same key is not a valid token.
    import hashlib
    import hmac

    bare = hmac.new(KEY.encode(), b"7", hashlib.sha256).digest()[:16]
    assert not verify_token(KEY, 7, base64.urlsafe_b64encode(bare).rstrip(b"=").decode())


@pytest.mark.parametrize(
    ("key", "request_id", "error"),
    [
        ("", 1, ValueError),
        (KEY, -1, ValueError),
        (KEY, 2**63, ValueError),
        (KEY, True, TypeError),
        (KEY, "1", TypeError),
    ],
    ids=["empty-key", "negative", "too-large", "bool", "text"],  # KEY is random: stable ids
)
def test_make_token_refuses_bad_input(key: str, request_id: object, error: type) -> None:
    with pytest.raises(error):
        make_token(key, request_id)  # type: ignore[arg-type]


GARBAGE = [
    None,
    "",
    " ",
    "\x00",
    "é" * 22,
    "\ud800" * 22,
    "A" * 10**6,
    "9" * 10**6,
    b"1",
    1.0,
    -1,
    2**63,
    10**5000,
    True,
    [],
    {},
    object(),
]


@pytest.mark.parametrize("junk", GARBAGE, ids=lambda j: type(j).__name__)
def test_garbage_never_raises_and_never_verifies(junk: object) -> None:
    token = make_token(KEY, 1)
    assert verify_token(KEY, junk, token) is False
    assert verify_token(KEY, 1, junk) is False
    assert verify_token(junk, 1, token) is False  # type: ignore[arg-type]
    assert verify_token(KEY, junk, junk) is False


def test_a_key_with_lone_surrogates_never_raises() -> None:
    assert verify_token("\ud800", 1, "A" * 22) is False


ids = st.one_of(
    st.integers(),
    st.text(),
    st.from_regex(r"\A[0-9]{1,25}\Z"),
    st.none(),
    st.binary(),
    st.floats(),
    st.booleans(),
)
tokens = st.one_of(
    st.text(),
    st.text(alphabet="ABCDEFGHabcdefgh0123456789-_", min_size=22, max_size=22),
    st.none(),
    st.binary(),
    st.integers(),
)


@settings(max_examples=300, deadline=None)
@given(request_id=ids, token=tokens)
def test_arbitrary_input_never_raises_and_never_verifies(request_id: object, token: object) -> None:
    assert verify_token(KEY, request_id, token) is False


@settings(max_examples=200, deadline=None)
@given(request_id=st.integers(0, 2**63 - 1), other=st.integers(0, 2**63 - 1))
def test_a_token_verifies_for_its_own_id_only(request_id: int, other: int) -> None:
    token = make_token(KEY, request_id)
    assert verify_token(KEY, request_id, token)
    assert verify_token(KEY, str(request_id), token)
    assert verify_token(KEY, other, token) == (other == request_id)


# -- URLs and HTML -----------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["https://mail.example.com", "https://mail.example.com/"])
def test_pixel_url(base: str) -> None:
    url = pixel_url(base, KEY, 123)
    token = make_token(KEY, 123)
    assert url == f"https://mail.example.com/v1/events/open?requestId=123&token={token}"
    query = parse_qs(urlsplit(url).query)
    assert verify_token(KEY, query["requestId"][0], query["token"][0])


def test_pixel_url_keeps_a_base_path() -> None:
    assert pixel_url("https://example.com/sesd//", KEY, 1).startswith(
        "https://example.com/sesd/v1/events/open?requestId=1&token="
    )


def test_pixel_html_escapes_the_url_as_an_attribute() -> None:
    url = pixel_url("https://example.com", KEY, 5)
    tag = pixel_html(url)
    assert tag == (
        f'<img src="{html.escape(url)}" width="1" height="1" alt="" style="display:none;border:0">'
    )
    assert "&amp;token=" in tag
    hostile = pixel_html('https://x.example/"><script>alert(1)</script>')
    assert "<script>" not in hostile
    assert '"><' not in hostile


def test_pixel_html_leaves_the_template_placeholder_intact() -> None:
    assert f'src="{PLACEHOLDER}"' in pixel_html(PLACEHOLDER)


def test_append_pixel_goes_before_the_last_body_end_tag() -> None:
    tag = pixel_html("u")
    page = "<html><body><p>a</body> b </BODY >\n</html>"
    assert append_pixel(page, "u") == f"<html><body><p>a</body> b {tag}</BODY >\n</html>"


@pytest.mark.parametrize("body", ["<p>Hi</p>", "", "<html><body>no end tag", "</bodyguard>"])
def test_append_pixel_appends_without_a_body_end_tag(body: str) -> None:
    assert append_pixel(body, "u") == body + pixel_html("u")


def test_append_pixel_with_the_template_placeholder() -> None:
    out = append_pixel("<body>Hi</body>", PLACEHOLDER)
    assert out == f"<body>Hi{pixel_html(PLACEHOLDER)}</body>"
    assert out.count(PLACEHOLDER) == 1


@given(st.text())
def test_append_pixel_only_inserts(body: str) -> None:
    out = append_pixel(body, "https://example.com/p?a=1&b=2")
    tag = pixel_html("https://example.com/p?a=1&b=2")
    at = out.rfind(tag)
    assert at >= 0
    assert out[:at] + out[at + len(tag) :] == body


# -- the pixel itself --------------------------------------------------------------------------


def test_pixel_is_a_valid_1x1_transparent_png() -> None:
    assert PIXEL_PNG.startswith(b"\x89PNG\r\n\x1a\n")
    chunks: list[tuple[bytes, bytes]] = []
    pos = 8
    while pos < len(PIXEL_PNG):
        (length,) = struct.unpack(">I", PIXEL_PNG[pos : pos + 4])
        kind = PIXEL_PNG[pos + 4 : pos + 8]
        data = PIXEL_PNG[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", PIXEL_PNG[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + data), kind
        chunks.append((kind, data))
        pos += 12 + length
    assert pos == len(PIXEL_PNG)
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    # 1x1, bit depth 8, colour type 6 (RGBA), deflate, adaptive filtering, no interlace.
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (1, 1, 8, 6, 0, 0, 0)
    # One scanline: filter type 0, then RGBA with alpha 0.
    scanline = zlib.decompress(chunks[1][1])
    assert len(scanline) == 5
    assert scanline[0] == 0
    assert scanline[4] == 0
    assert chunks[2][1] == b""


def test_pixel_headers_forbid_caching() -> None:
    assert dict(PIXEL_HEADERS) == {
        "Content-Type": "image/png",
        "Cache-Control": "no-cache, no-store, must-revalidate",
        "Pragma": "no-cache",
        "Expires": "0",
    }
    with pytest.raises(TypeError):
        PIXEL_HEADERS["Expires"] = "1"  # type: ignore[index]


# ----------------------------------------------------------------- click and unsubscribe tokens

from sesd.tracking import (  # noqa: E402
    click_token,
    click_url,
    read_click_token,
    read_unsubscribe_token,
    unsubscribe_token,
    unsubscribe_url,
)


@given(st.integers(0, 2**63 - 1), st.integers(0, 9_999))
def test_click_tokens_name_exactly_their_request_and_link(request_id: int, link: int) -> None:
    token = click_token(KEY, request_id, link)
    assert read_click_token(KEY, token) == (request_id, link)
    assert read_click_token(OTHER_KEY, token) is None
    assert read_unsubscribe_token(KEY, token) is None  # a click token opens nothing else
    forged = f"{request_id}.{(link + 1) % 10_000}.{token.rsplit('.', 1)[1]}"
    assert read_click_token(KEY, forged) is None


@given(st.integers(0, 2**63 - 1))
def test_unsubscribe_tokens_name_exactly_their_request(request_id: int) -> None:
    token = unsubscribe_token(KEY, request_id)
    assert read_unsubscribe_token(KEY, token) == request_id
    assert read_unsubscribe_token(OTHER_KEY, token) is None
    mac = token.rsplit(".", 1)[1]
    assert read_unsubscribe_token(KEY, f"{request_id + 1}.{mac}") is None
    assert read_click_token(KEY, f"{request_id}.0.{mac}") is None  # domains are separate


@given(st.text(max_size=80))
def test_hostile_tokens_are_refused_without_raising(token: str) -> None:
    assert read_click_token(KEY, token) is None
    assert read_unsubscribe_token(KEY, token) is None


def test_non_canonical_ids_do_not_verify() -> None:
    token = unsubscribe_token(KEY, 7)
    mac = token.rsplit(".", 1)[1]
    assert read_unsubscribe_token(KEY, f"07.{mac}") is None
    assert read_unsubscribe_token(KEY, None) is None and read_click_token(KEY, 7) is None
    assert read_unsubscribe_token("", token) is None


def test_urls_are_under_the_public_routes() -> None:
    assert click_url("https://mail.example.com/", KEY, 5, 2).startswith(
        "https://mail.example.com/v1/events/click/5.2.")
    assert unsubscribe_url("https://mail.example.com", KEY, 5).startswith(
        "https://mail.example.com/v1/unsubscribe/5.")
    with pytest.raises(ValueError):
        click_token(KEY, 5, 10_000)
    with pytest.raises(ValueError):
        unsubscribe_token("", 5)
