"""The text/plain alternative of an HTML part.

Converted with inscriptis (Apache-2.0), which lays out what a reader sees: headings and
paragraphs as blocks, lists with bullets, nothing from `<head>`, `<script>`, `<style>` or
`display:none`. Around it this module
  - lays out tables as blocks, one cell after the other: mail uses tables for layout, and a
    grid of padded cells reads badly as text;
  - writes each link as `text (URL)` (the URL alone when the text is empty or is the URL),
    for http(s), `mailto:`, `tel:` and template-variable hrefs; anchors and relative links
    keep only their text;
  - drops images, so the tracking pixel never shows;
  - wraps lines at `width` without breaking a word or a URL;
  - keeps every Handlebars token (`{{name}}`, `{{#each items}}` …) exactly as written, so the
    text part is itself a template SES can render. Tokens between table rows stay between
    them (a parser would otherwise move stray text out of the table, out of its loop).
"""

from __future__ import annotations

import re
import textwrap
from html import escape
from html.parser import HTMLParser
from typing import Any

from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.html_engine import Inscriptis
from inscriptis.html_properties import Display
from inscriptis.model.config import ParserConfig
from inscriptis.model.html_element import HtmlElement
from inscriptis.model.tag import CustomHtmlTagHandlerMapping
from lxml.etree import ParserError
from lxml.html import HtmlElement as LxmlElement
from lxml.html import document_fromstring

# A Handlebars token, as the text part must keep it.
_TOKEN = re.compile(r"\{\{!--.*?--~?\}\}|\{\{~?\{.*?\}~?\}\}|\{\{.*?\}\}", re.DOTALL)
# Tokens and link edges travel through the converter as words of private-use characters: no
# converter touches them, and a wrapper never breaks them. A token's stand-in is exactly as long
# as the token, so lines are wrapped at their final length.
_TOKEN_START, _TOKEN_PAD = "\ue000", "\ue001"
_LINK_OPEN, _LINK_CLOSE, _LINK_END = "\ue002", "\ue003", "\ue004"
_DIGIT_BASE, _DIGITS = 0xE100, 0xF8FF - 0xE100
_STAND_IN = re.compile(f"{_TOKEN_START}([\ue100-\uf8ff]+){_TOKEN_PAD}*")
_LINK = re.compile(f"{_LINK_OPEN}(.*?){_LINK_CLOSE}(.*?){_LINK_END}", re.DOTALL)
_STRAY = re.compile(f"[{_LINK_OPEN}{_LINK_CLOSE}{_LINK_END}]")
_MARKERS = re.compile("[\ue000-\ue004]")
_SHOWN_SCHEMES = ("http://", "https://", "mailto:", "tel:")
_TOKEN_TAG = "sesd-token"
_LIST_INDENT = re.compile(r"\s*(?:[*+•-]|\d+\.)?\s*")
# Characters XML (and so lxml) refuses outright; no mail client shows them either.
_UNPARSABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_XML_DECLARATION = re.compile(r"^\s*<\?xml [^>]*\?>")


def _stand_in(index: int, length: int) -> str:
    digits = ""
    while True:
        index, digit = divmod(index, _DIGITS)
        digits = chr(_DIGIT_BASE + digit) + digits
        if not index:
            break
    return _TOKEN_START + digits + _TOKEN_PAD * max(0, length - 1 - len(digits))


def _token_index(digits: str) -> int:
    index = 0
    for char in digits:
        index = index * _DIGITS + ord(char) - _DIGIT_BASE
    return index


class _TagSpans(HTMLParser):
    """Where the start tags are: a token inside one is an attribute value, not text."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.spans: list[tuple[int, int]] = []
        self._line_starts = [0] + [i + 1 for i, c in enumerate(source) if c == "\n"]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line, column = self.getpos()
        start = self._line_starts[line - 1] + column
        self.spans.append((start, start + len(self.get_starttag_text() or "")))

    handle_startendtag = handle_starttag


def _in_tag(spans: list[tuple[int, int]], offset: int) -> bool:
    return any(start < offset < end for start, end in spans)


def _hide_tokens(html: str) -> tuple[str, list[str]]:
    """Replace tokens by stand-ins: in text, as an element that writes the stand-in where it
    stands; inside a tag, as the stand-in itself."""
    tokens: list[str] = []
    if "{{" not in html:
        return html, tokens
    finder = _TagSpans(html)
    try:
        finder.feed(html)
        finder.close()
    except Exception:
        pass  # malformed HTML: spans read so far
    out: list[str] = []
    done = 0
    for match in _TOKEN.finditer(html):
        index = len(tokens)
        tokens.append(match.group())
        out.append(html[done : match.start()])
        if _in_tag(finder.spans, match.start()):
            out.append(escape(_stand_in(index, len(match.group()))))
        else:
            out.append(f'<{_TOKEN_TAG} n="{index}"></{_TOKEN_TAG}>')
        done = match.end()
    out.append(html[done:])
    return "".join(out), tokens


def _config(tokens: list[str]) -> ParserConfig:
    css = CSS_PROFILES["strict"].copy()
    for tag in ("table", "thead", "tbody", "tfoot", "tr", "td", "th", "caption"):
        css[tag] = HtmlElement(display=Display.block)
    hrefs: list[str] = []

    def ignore(*_: Any) -> None:
        return None

    def token_start(state: Any, attrs: dict[str, str]) -> None:
        index = int(attrs.get("n", "0"))
        state.tags[-1].write(_stand_in(index, len(tokens[index])))

    def a_start(state: Any, attrs: dict[str, str]) -> None:
        hrefs.append((attrs.get("href") or "").strip())
        state.tags[-1].write(_LINK_OPEN)

    def a_end(state: Any) -> None:
        href = hrefs.pop() if hrefs else ""
        # What is written is HTML-unescaped once more (see _tree); `?a=1&copy=2` must survive.
        state.tags[-1].write(_LINK_CLOSE + href.replace("&", "&amp;") + _LINK_END)

    table_tags = ("table", "tr", "td", "th")
    return ParserConfig(
        css=css,
        display_images=False,
        custom_html_tag_handler_mapping=CustomHtmlTagHandlerMapping(
            start_tag_mapping={_TOKEN_TAG: token_start, "a": a_start}
            | dict.fromkeys(table_tags, ignore),
            end_tag_mapping={"a": a_end} | dict.fromkeys(table_tags, ignore),
        ),
    )


def _link_text(match: re.Match[str]) -> str:
    text, href = match.group(1), match.group(2)
    shown = href.lower().startswith(_SHOWN_SCHEMES) or _TOKEN_START in href
    if not shown:
        return text
    label = text.strip()
    if not label:
        return href
    if label in (href, href.split(":", 1)[-1], href.split("//", 1)[-1]):
        return text
    return f"{text} ({href})"


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for line in text.split("\n"):
        line = line.rstrip()
        if len(line) <= width:
            lines.append(line)
            continue
        lead = len(line) - len(line.lstrip())
        hang = len(_LIST_INDENT.match(line).group())  # type: ignore[union-attr]
        lines += textwrap.wrap(
            line[lead:],
            width,
            initial_indent=" " * lead,
            subsequent_indent=" " * hang,
            break_long_words=False,
            break_on_hyphens=False,
        )
    return lines


def _tree(html: str) -> LxmlElement | None:
    """The parsed document, its text ready for inscriptis.

    inscriptis decodes entities a second time in text lxml has already decoded, so
    `&amp;lt;` would print as `<` and a URL's `&copy=2` as `©=2`: every `&` of the decoded
    text is written back as `&amp;` for that second pass to undo.
    """
    html = _UNPARSABLE.sub("", _XML_DECLARATION.sub("", html, count=1))
    if not html.strip():
        return None
    try:
        tree = document_fromstring(html)
    except (ParserError, ValueError):
        return None
    for element in tree.iter():
        if element.text and isinstance(element.tag, str):
            element.text = element.text.replace("&", "&amp;")
        if element.tail:
            element.tail = element.tail.replace("&", "&amp;")
    return tree


def html_to_text(html: str, *, width: int = 76) -> str:
    """The visible text of `html`, links with their URLs, wrapped at `width` columns.

    A word or URL longer than `width` gets a line of its own, unbroken. Handlebars tokens come
    out exactly as written.
    """
    # The converter's own markers must not come in with the document.
    hidden, tokens = _hide_tokens(_MARKERS.sub("", html))
    tree = _tree(hidden)
    text = Inscriptis(tree, _config(tokens)).get_text() if tree is not None else ""
    text = _STRAY.sub("", _LINK.sub(_link_text, text))
    lines = _wrap(text.replace("\r", ""), width)
    # One blank line at most between blocks, none at the ends.
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    joined = "\n".join(out)
    return _STAND_IN.sub(lambda m: tokens[_token_index(m.group(1))], joined)
