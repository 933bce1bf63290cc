"""The unsubscribe exchange with a recipient: the page, its confirmation, and what a one-click
POST must carry. Pure: no I/O.

The page is self-contained (inline CSS allowed by its hash in the Content-Security-Policy, no
script, no external resource: a mail link must not make the reader's browser fetch anything
else) and works without JavaScript: its one button is a form POST of the RFC 8058 body to the
page's own URL, so a person and a mail provider's one-click request take the same path.
"""

from __future__ import annotations

import base64
import email.message
import email.parser
import email.policy
import hashlib
import urllib.parse
from collections.abc import Mapping
from html import escape
from types import MappingProxyType

import idna

ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058's body: List-Unsubscribe=One-Click

_STYLE = """
:root{color-scheme:light dark;--bg:#f3f4f6;--card:#fff;--text:#1b2230;--muted:#566071;
--accent:#1d5bd6;--on-accent:#fff;--border:#dde1e8;--ok:#15803d}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--card:#1c2129;--text:#e9ecf1;
--muted:#a7afbc;--accent:#6b9df7;--on-accent:#0c1424;--border:#2e3541;--ok:#4ade80}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;
padding:24px 16px;background:var(--bg);color:var(--text);
font:17px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{width:100%;max-width:440px;background:var(--card);border:1px solid var(--border);
border-radius:14px;padding:32px 28px;box-shadow:0 1px 2px rgba(0,0,0,.04),
0 8px 24px rgba(0,0,0,.06)}
h1{margin:0 0 12px;font-size:1.5rem;line-height:1.25;letter-spacing:-.01em}
p{margin:0 0 20px}
strong{font-weight:650;overflow-wrap:anywhere}
button{display:block;width:100%;min-height:48px;padding:12px 20px;border:0;border-radius:10px;
background:var(--accent);color:var(--on-accent);font:inherit;font-weight:650;cursor:pointer}
button:hover{filter:brightness(1.07)}
button:focus-visible{outline:3px solid var(--text);outline-offset:3px}
.note{margin:20px 0 0;color:var(--muted);font-size:.9rem}
.mark{display:block;width:44px;height:44px;margin:0 0 16px;color:var(--ok)}
"""

# The browser must not fetch, frame or run anything: only the inline style (by its hash) and
# the form posting back to this service.
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
PAGE_HEADERS: Mapping[str, str] = MappingProxyType({
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Content-Security-Policy": (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
})

_CHECK = ('<svg class="mark" viewBox="0 0 24 24" aria-hidden="true" fill="none" '
          'stroke="currentColor" stroke-width="2" stroke-linecap="round" '
          'stroke-linejoin="round"><circle cx="12" cy="12" r="10"/>'
          '<path d="m7.5 12.5 3 3 6-6.5"/></svg>')


def mask(address: str) -> str:
    """The address as the page shows it: enough for its owner to recognise, little for anyone
    else who has the link (`a***@example.com`); an IDN domain in its Unicode form."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "***"
    try:
        shown = idna.decode(domain)
    except (idna.IDNAError, UnicodeError, ValueError):
        shown = domain
    return f"{local[0]}***@{shown}"


def _page(title: str, body: str) -> str:
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="robots" content="noindex">'
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def unsubscribe_page(list_id: str, masked: str, action: str) -> str:
    """The page a recipient's unsubscribe link opens: which list, which address, one button.
    `action` is the URL the button posts to, relative to the page (its own token)."""
    lst, who = escape(list_id), escape(masked)
    return _page(f"Unsubscribe from {list_id}", (
        "<h1>Unsubscribe</h1>"
        f"<p>Stop sending <strong>{lst}</strong> emails to <strong>{who}</strong>?</p>"
        f'<form method="post" action="{escape(action, quote=True)}">'
        f'<input type="hidden" name="{ONE_CLICK[0]}" value="{ONE_CLICK[1]}">'
        "<button type=\"submit\">Unsubscribe</button></form>"
        f'<p class="note">This stops <strong>{lst}</strong> emails only. Messages you need, '
        "such as receipts or password resets, still reach you.</p>"))


def unsubscribed_page(list_id: str, masked: str) -> str:
    """The confirmation, also shown when the address was unsubscribed already."""
    lst, who = escape(list_id), escape(masked)
    return _page("Unsubscribed", (
        f"{_CHECK}<h1>You are unsubscribed</h1>"
        f"<p><strong>{who}</strong> will not receive <strong>{lst}</strong> emails "
        "any more.</p>"
        '<p class="note">A message that was already on its way may still arrive.</p>'))


def is_one_click(body: bytes, content_type: str) -> bool:
    """Whether a POST body carries `List-Unsubscribe=One-Click`: form-encoded, as most mail
    providers and the page's button send it, or multipart/form-data, which RFC 8058 prefers.
    `content_type` is the whole Content-Type header (the multipart boundary is in it)."""
    if content_type.split(";", 1)[0].strip().lower() == "multipart/form-data":
        return ONE_CLICK in _multipart_fields(body, content_type)
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        return False
    return ONE_CLICK in urllib.parse.parse_qsl(text, keep_blank_values=True)


def _multipart_fields(body: bytes, content_type: str) -> list[tuple[str, str]]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode("utf-8", "surrogateescape")
    try:
        parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        if not isinstance(parsed, email.message.EmailMessage) or not parsed.is_multipart():
            return []
        fields = []
        for part in parsed.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields.append((name, payload.decode("utf-8", "replace").strip()))
        return fields
    except Exception:  # a malformed body is simply not the one-click body
        return []
