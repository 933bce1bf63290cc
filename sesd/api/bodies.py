"""A message's subject, HTML and text at intake: templates checked for every recipient, the text
part generated, the click-tracked links found. Everything the sender would otherwise discover
too late (a template that does not parse, a recipient whose data lacks a variable) is refused
here, before anything is stored.

Templates are rendered by sesd itself, per recipient, for every transport: SES's inline
templates (SendEmail/SendBulkEmail with the template content in the request) take only simple
substitutions, no `{{#if}}` or `{{#each}}`, and one renderer everywhere means the outbox shows
exactly what SES sends.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .. import links, templating, textpart
from ..messages import UNSUBSCRIBE_VARIABLE
from .checks import ValidationError, quote

# What sesd uses to mark its own insertions in a message while it composes it (markers.py):
# Unicode noncharacters, which never appear in interchanged text. Refused in what clients send.
_NONCHARACTERS = re.compile("[\ufdd0-\ufdef]")
MAX_DATA_CHARS = templating.MAX_TEMPLATE_DATA_CHARS  # one recipient's data, as SES caps it
# Placeholder values the checks render with: what the sender will provide for every recipient.
_SESD_VARIABLES = {UNSUBSCRIBE_VARIABLE: "https://unsubscribe.invalid/x"}


@dataclass(frozen=True, slots=True)
class Bodies:
    subject: str
    html: str
    text: str
    links: tuple[str, ...]


def _no_noncharacters(value: str, where: str) -> None:
    if not value.isascii() and _NONCHARACTERS.search(value):
        raise ValidationError(f"{where} must not contain Unicode noncharacters "
                              "(U+FDD0 to U+FDEF)")


def _parse(source: str, where: str) -> templating.Template:
    try:
        return templating.parse(source)
    except templating.TemplateError as exc:
        raise ValidationError(f"{where} is not a valid template: {exc}") from None


def prepare(subject: str, html: str, text: str | None, where: str, *, template: bool,
            track_clicks: bool) -> tuple[Bodies, list[tuple[str, templating.Template]]]:
    """The stored bodies of one message, and (field, template) pairs to check per recipient."""
    for field, value in (("subject", subject), ("content", html), ("text", text or "")):
        _no_noncharacters(value, f"{where}.{field}")
    checks: list[tuple[str, templating.Template]] = []
    if template:
        checks.append(("subject", _parse(subject, f"{where}.subject")))
        checks.append(("content", _parse(html, f"{where}.content")))
        if text is None:
            # The text part is a template too: its outputs raw (a text part is not HTML).
            text = templating.raw_outputs(textpart.html_to_text(html))
        checks.append(("text", _parse(text, f"{where}.text")))
    elif text is None:
        text = textpart.html_to_text(html)
    found = tuple(links.links(html)) if track_clicks else ()
    return Bodies(subject, html, text, found), checks


def check_recipients(where: str, checks: Sequence[tuple[str, templating.Template]],
                     defaults: Mapping[str, Any], emails: Sequence[str],
                     data: Sequence[str | None] | None, *, bulk: bool) -> None:
    """Every recipient's data (over the message's defaults) must render every template; the
    first that would not is named with the variable it lacks."""
    sesd_vars = _SESD_VARIABLES if bulk else {}
    for i, email in enumerate(emails):
        text = data[i] if data is not None else None
        own = orjson.loads(text) if text is not None else {}
        merged = {**defaults, **own, **sesd_vars}
        for field, tpl in checks:
            missing = tpl.missing(merged)
            if missing is not None:
                raise ValidationError(f"{where}: recipient {quote(email)} has no data for "
                                      f"{{{{{missing}}}}} in its {field}")


def recipient_data(value: Any, where: str) -> str | None:
    """One recipient's `data` (an object) as stored: JSON text, within SES's size for it."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError(f"{where} must be an object")
    text = orjson.dumps(value).decode()
    if len(text) > MAX_DATA_CHARS:
        raise ValidationError(f"{where} is {len(text):,} characters of JSON; at most "
                              f"{MAX_DATA_CHARS:,}")
    return text
