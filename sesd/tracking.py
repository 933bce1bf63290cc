"""Signed open-tracking links and the 1x1 pixel they load.

The original service's pixel took a bare, sequential request id, so anyone could record opens for
anyone's mail. Every link now carries an HMAC of the id under a key only this service knows.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import struct
import zlib
from collections.abc import Mapping
from html import escape
from types import MappingProxyType

OPEN_PATH = "/v1/events/open"
CLICK_PATH = "/v1/events/click"  # + "/{token}": 302 to the link the token names
UNSUBSCRIBE_PATH = "/v1/unsubscribe"  # + "/{token}": the page (GET) and one-click (POST)

# 128 bits cannot be guessed, and keep the link short. Base64 of 16 bytes is 22 characters.
_TOKEN_BYTES = 16
_TOKEN_CHARS = 22
# Domain separation: should the key ever sign anything else, those MACs can't pass as pixels.
_DOMAIN = b"sesd-open:v1:"
_CLICK_DOMAIN = b"sesd-click:v1:"
_UNSUBSCRIBE_DOMAIN = b"sesd-unsubscribe:v1:"
# "<request id>.<link number>.<mac>" and "<request id>.<mac>": the ids in clear (the route looks
# them up), the MAC over exactly their canonical text.
_CLICK_TOKEN = re.compile(r"(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,4})\.([A-Za-z0-9_-]{22})")
_UNSUBSCRIBE_TOKEN = re.compile(r"(0|[1-9][0-9]{0,18})\.([A-Za-z0-9_-]{22})")
MAX_LINKS = 10_000
# Only the canonical spelling of an id verifies ("007" does not), so a token names exactly one id.
# SQLite rowids fit in 19 digits; the cap also keeps int() away from hostile megabyte strings.
_ID_TEXT = re.compile(r"0|[1-9][0-9]{0,19}")
_MAX_ID = 2**63 - 1


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


# 1x1, 8-bit RGBA, one fully transparent pixel (filter byte 0, then R, G, B, A all zero).
PIXEL_PNG: bytes = (
    b"\x89PNG\r\n\x1a\n"
    + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0))
    + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 5))
    + _png_chunk(b"IEND", b"")
)

# Every open should reach us, so no client or proxy may answer from a cache.
PIXEL_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        "Content-Type": "image/png",
        "Cache-Control": "no-cache, no-store, must-revalidate",
        "Pragma": "no-cache",
        "Expires": "0",
    }
)

_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def new_key() -> str:
    """A fresh signing key: 32 random bytes, URL-safe base64 without padding."""
    return _b64(secrets.token_bytes(32))


def make_token(key: str, request_id: int) -> str:
    """The token that proves a pixel link for `request_id` came from us."""
    _check_key_and_id(key, request_id)
    return _sign(key.encode(), request_id)


def verify_token(key: str, request_id: object, token: object) -> bool:
    """Whether `token` is ours for `request_id` (an int or its decimal text, as in the query).

    Takes whatever a request brings and never raises: anything malformed is simply not genuine.
    """
    if not isinstance(key, str) or not key:
        return False
    rid = _parse_id(request_id)
    if rid is None or not isinstance(token, str) or len(token) != _TOKEN_CHARS:
        return False
    if not token.isascii():
        return False
    try:
        key_bytes = key.encode()
    except UnicodeEncodeError:  # lone surrogates: no key we ever handed out
        return False
    return hmac.compare_digest(_sign(key_bytes, rid).encode(), token.encode())


def pixel_url(base_url: str, key: str, request_id: int) -> str:
    """The signed link for one request; the token is URL-safe, so nothing needs quoting."""
    token = make_token(key, request_id)
    return f"{base_url.rstrip('/')}{OPEN_PATH}?requestId={request_id}&token={token}"


def pixel_html(url: str) -> str:
    """The <img> tag for a pixel URL (or for the "{{sesdPixel}}" placeholder: braces survive)."""
    return (
        f'<img src="{escape(url, quote=True)}" width="1" height="1" alt="" '
        'style="display:none;border:0">'
    )


def append_pixel(html: str, url: str) -> str:
    """The HTML with the pixel just before its last </body>, or at the end when it has none."""
    last = None
    for last in _BODY_END.finditer(html):  # noqa: B007 - only the last match matters
        pass
    tag = pixel_html(url)
    if last is None:
        return html + tag
    return html[: last.start()] + tag + html[last.start() :]


def click_token(key: str, request_id: int, link: int) -> str:
    """The token of link number `link` of request `request_id`'s message."""
    _check_key_and_id(key, request_id)
    if not 0 <= link < MAX_LINKS:
        raise ValueError(f"link number out of range: {link}")
    text = f"{request_id}.{link}"
    return f"{text}.{_mac(key.encode(), _CLICK_DOMAIN, text)}"


def read_click_token(key: str, token: object) -> tuple[int, int] | None:
    """(request id, link number) of a genuine click token; None for anything else."""
    match = _CLICK_TOKEN.fullmatch(token) if isinstance(token, str) else None
    if match is None or not _genuine(key, _CLICK_DOMAIN, f"{match[1]}.{match[2]}", match[3]):
        return None
    request_id = int(match[1])
    return (request_id, int(match[2])) if request_id <= _MAX_ID else None


def unsubscribe_token(key: str, request_id: int) -> str:
    """The token of request `request_id`'s unsubscribe page (it names the address and list)."""
    _check_key_and_id(key, request_id)
    return f"{request_id}.{_mac(key.encode(), _UNSUBSCRIBE_DOMAIN, str(request_id))}"


def read_unsubscribe_token(key: str, token: object) -> int | None:
    """The request id of a genuine unsubscribe token; None for anything else."""
    match = _UNSUBSCRIBE_TOKEN.fullmatch(token) if isinstance(token, str) else None
    if match is None or not _genuine(key, _UNSUBSCRIBE_DOMAIN, match[1], match[2]):
        return None
    request_id = int(match[1])
    return request_id if request_id <= _MAX_ID else None


def click_url(base_url: str, key: str, request_id: int, link: int) -> str:
    return f"{base_url.rstrip('/')}{CLICK_PATH}/{click_token(key, request_id, link)}"


def unsubscribe_url(base_url: str, key: str, request_id: int) -> str:
    return f"{base_url.rstrip('/')}{UNSUBSCRIBE_PATH}/{unsubscribe_token(key, request_id)}"


def _check_key_and_id(key: str, request_id: int) -> None:
    if not key:
        raise ValueError("an empty tracking key would let anyone sign links")
    if isinstance(request_id, bool) or not isinstance(request_id, int):
        raise TypeError(f"request id must be an int, not {type(request_id).__name__}")
    if not 0 <= request_id <= _MAX_ID:
        raise ValueError(f"request id out of range: {request_id}")


def _genuine(key: str, domain: bytes, text: str, mac: str) -> bool:
    if not isinstance(key, str) or not key:
        return False
    try:
        key_bytes = key.encode()
    except UnicodeEncodeError:  # lone surrogates: no key we ever handed out
        return False
    return hmac.compare_digest(_mac(key_bytes, domain, text).encode(), mac.encode())


def _mac(key: bytes, domain: bytes, text: str) -> str:
    mac = _keyed(key, domain).copy()
    mac.update(text.encode())
    return _b64(mac.digest()[:_TOKEN_BYTES])


@functools.lru_cache(maxsize=16)
def _keyed(key: bytes, domain: bytes) -> hmac.HMAC:
    """The HMAC state after the key and the domain: copied per token, so the key's two hashes
    are computed once, not once per link of every message (three or more per recipient)."""
    return hmac.new(key, domain, hashlib.sha256)


def _sign(key: bytes, request_id: int) -> str:
    return _mac(key, _DOMAIN, str(request_id))


def _parse_id(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= _MAX_ID else None
    if isinstance(value, str) and _ID_TEXT.fullmatch(value):
        rid = int(value)
        return rid if rid <= _MAX_ID else None
    return None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
