"""Composing each recipient's message from its content: personalisation, tracking, headers.

Pure: no I/O, no clock. Per content, once (`prepare`): the click-tracked links and the pixel are
marked in the HTML, templates parsed, the envelope and the fixed headers built. Per recipient:
the templates rendered with its data, the marks replaced by its signed URLs, its headers
(X-Request-ID, one-click unsubscribe) added.

Three shapes of SES call come out of it (the actor chooses):
- `email`: one SendEmail, the final message.
- `shared`: a bulk call of one content, SES filling in only the per-recipient URLs.
- `passthrough`: a bulk call of *different* messages: the template is `{{{s}}}` / `{{{h}}}` /
  `{{{t}}}` and each entry carries its own finished subject, HTML and text. Triple braces output
  a value raw and Handlebars does not render a value again, so content holding `{{` goes out
  verbatim; up to 50 one-off messages share one call.
"""

from __future__ import annotations

import email.utils
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .. import links, templating, textpart, tracking
from ..config import Settings
from ..messages import UNSUBSCRIBE_VARIABLE, Content, Job
from ..transports.base import BulkEntry, BulkTemplate, Email, Envelope

# Marks of what sesd inserts, made of Unicode noncharacters (intake refuses them in content):
# the pixel, link number N, the unsubscribe URL. Templates pass them through as plain text.
_OPEN, _CLOSE = "\ufdd0", "\ufdd1"
PIXEL_MARK = f"{_OPEN}P{_CLOSE}"
UNSUBSCRIBE_MARK = f"{_OPEN}U{_CLOSE}"
_MARK = re.compile(f"{_OPEN}([PUL])([0-9]*){_CLOSE}")
# The literal the client writes in non-template content for its visible unsubscribe link.
_UNSUBSCRIBE_LITERAL = re.compile(r"\{\{\{?\s*" + UNSUBSCRIBE_VARIABLE + r"\s*\}?\}\}")
# SES's cap on one entry's template data; a pass-through entry over it goes as a SendEmail.
MAX_ENTRY_DATA = templating.MAX_TEMPLATE_DATA_CHARS
PASSTHROUGH = BulkTemplate("{{{s}}}", "{{{h}}}", "{{{t}}}")
OUTBOX_SENDER = "sesd@localhost"


def link_mark(index: int) -> str:
    return f"{_OPEN}L{index}{_CLOSE}"


@dataclass(frozen=True, slots=True)
class Urls:
    """One recipient's signed URLs."""

    pixel: str | None
    links: tuple[str, ...]
    unsubscribe: str | None


@dataclass(slots=True)
class Prepared:
    """A content made ready to compose: computed once, used for each of its recipients."""

    content: Content
    envelope: Envelope
    identity: str  # the From address (what an unverified-identity hold is about)
    subject: str
    html: str  # with marks
    text: str | None  # with marks
    fixed_headers: tuple[tuple[str, str], ...]  # the client's headers (encoded), List-Id
    tags: tuple[tuple[str, str], ...]
    defaults: dict[str, Any]
    templates: tuple[templating.Template, templating.Template, templating.Template | None] | None
    shared: BulkTemplate | None  # the SES-side template of one content, when SES can fill it


def _to_variable(match: re.Match[str]) -> str:
    kind, number = match[1], match[2]
    name = {"P": "sesdPixel", "U": UNSUBSCRIBE_VARIABLE}.get(kind, f"sesdLink{number}")
    return "{{{" + name + "}}}"


def _encoded(value: str) -> str:
    from email.header import Header

    return value if value.isascii() else Header(value, "utf-8").encode(maxlinelen=10_000)


class Composer:
    def __init__(self, settings: Settings, tracking_key: str) -> None:
        self.base = settings.server_host
        self.key = tracking_key
        self.default_sender = settings.email_sender or OUTBOX_SENDER
        self.default_config_set = settings.ses_config_set
        self.mailto = settings.unsubscribe_mailto

    # -- per content --------------------------------------------------------------------------

    def prepare(self, content: Content) -> Prepared:
        name, address = email.utils.parseaddr(content.sender or self.default_sender)
        sender = email.utils.formataddr((name, address), charset="utf-8") if name else address
        envelope = Envelope(sender, content.reply_to, content.config_set or self.default_config_set)
        fixed = tuple((n, _encoded(v)) for n, v in content.headers)
        if content.bulk:
            domain = address.rpartition("@")[2] or "localhost"
            fixed += (("List-Id", f"<{content.list_id}.{domain}>"),)
        marked = self._mark(content.html, content)
        text = content.text
        if text is None:  # stored before text parts existed: every message gets one now
            text = textpart.html_to_text(content.html)
            if content.template:
                text = templating.raw_outputs(text)
        templates = None
        defaults: dict[str, Any] = orjson.loads(content.data) if content.data else {}
        if content.template:
            templates = (templating.parse(content.subject), templating.parse(marked),
                         templating.parse(text) if text is not None else None)
        elif content.bulk:
            marked = _UNSUBSCRIBE_LITERAL.sub(UNSUBSCRIBE_MARK, marked)
            text = _UNSUBSCRIBE_LITERAL.sub(UNSUBSCRIBE_MARK, text) if text else text
        shared = None
        if templates is None and not any("{{" in part for part in (content.subject, marked,
                                                                   text or "")):
            shared = BulkTemplate(content.subject, _MARK.sub(_to_variable, marked),
                                  _MARK.sub(_to_variable, text) if text else None)
        return Prepared(content, envelope, address.lower(), content.subject, marked, text, fixed,
                        content.tags, defaults, templates, shared)

    def _mark(self, source: str, content: Content) -> str:
        marked = source
        if content.track_clicks and content.links:
            marked = links.rewrite(marked, lambda index, url: link_mark(index))
        if content.track_opens:
            marked = tracking.append_pixel(marked, PIXEL_MARK)
        return marked

    # -- per recipient ------------------------------------------------------------------------

    def urls(self, prepared: Prepared, request_id: int) -> Urls:
        content = prepared.content
        return Urls(
            tracking.pixel_url(self.base, self.key, request_id) if content.track_opens else None,
            tuple(tracking.click_url(self.base, self.key, request_id, i)
                  for i in range(len(content.links))) if content.track_clicks else (),
            tracking.unsubscribe_url(self.base, self.key, request_id) if content.bulk else None)

    def headers(self, prepared: Prepared, request_id: int,
                urls: Urls) -> tuple[tuple[str, str], ...]:
        out: tuple[tuple[str, str], ...] = (("X-Request-ID", str(request_id)),)
        if urls.unsubscribe is not None:
            targets = f"<{urls.unsubscribe}>"
            if self.mailto:
                token = urls.unsubscribe.rpartition("/")[2]
                targets += f", <mailto:{self.mailto}?subject=unsubscribe%20{token}>"
            # RFC 2369 and RFC 8058: what Gmail and Yahoo require of bulk mail.
            out += (("List-Unsubscribe", targets),
                    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        return out + prepared.fixed_headers

    def render(self, prepared: Prepared, job: Job, urls: Urls) -> tuple[str, str, str | None]:
        """The recipient's finished subject, HTML and text."""
        if prepared.templates is None:
            subject, body, text = prepared.subject, prepared.html, prepared.text
        else:
            data = {**prepared.defaults, **(orjson.loads(job.data) if job.data else {})}
            if urls.unsubscribe is not None:
                data[UNSUBSCRIBE_VARIABLE] = urls.unsubscribe
            subject_tpl, html_tpl, text_tpl = prepared.templates
            subject = subject_tpl.render(data)
            body = html_tpl.render(data)
            text = text_tpl.render(data) if text_tpl is not None else None
        return (subject, _MARK.sub(_filler(urls, html.escape), body),
                _MARK.sub(_filler(urls, _same), text) if text is not None else None)

    def email(self, prepared: Prepared, job: Job) -> Email:
        urls = self.urls(prepared, job.request_id)
        subject, body, text = self.render(prepared, job, urls)
        return Email(job.request_id, job.email, prepared.envelope, subject, body, text,
                     self.headers(prepared, job.request_id, urls), prepared.tags)

    def shared_entry(self, prepared: Prepared, job: Job) -> BulkEntry:
        urls = self.urls(prepared, job.request_id)
        data: dict[str, str] = {}
        if urls.pixel is not None:
            data["sesdPixel"] = html.escape(urls.pixel)
        for index, url in enumerate(urls.links):
            data[f"sesdLink{index}"] = url  # URL-safe: nothing to escape
        if urls.unsubscribe is not None:
            data[UNSUBSCRIBE_VARIABLE] = urls.unsubscribe
        return BulkEntry(job.request_id, job.email, orjson.dumps(data).decode(),
                         self.headers(prepared, job.request_id, urls), prepared.tags)

    def passthrough_entry(self, prepared: Prepared, job: Job) -> BulkEntry | None:
        """The recipient's finished message as pass-through data; None when it is larger than
        SES takes in one entry (it then goes as a SendEmail)."""
        urls = self.urls(prepared, job.request_id)
        subject, body, text = self.render(prepared, job, urls)
        data = orjson.dumps({"s": subject, "h": body, "t": text or ""})
        if len(data) > MAX_ENTRY_DATA:  # bytes >= characters: never over SES's limit
            return None
        return BulkEntry(job.request_id, job.email, data.decode(),
                         self.headers(prepared, job.request_id, urls), prepared.tags)


def _same(value: str) -> str:
    return value


def _filler(urls: Urls, escape: Callable[[str], str]) -> Callable[[re.Match[str]], str]:
    def fill(match: re.Match[str]) -> str:
        kind = match[1]
        if kind == "P":
            return escape(urls.pixel) if urls.pixel is not None else ""
        if kind == "U":
            return urls.unsubscribe or ""
        index = int(match[2])
        return urls.links[index] if index < len(urls.links) else ""

    return fill
