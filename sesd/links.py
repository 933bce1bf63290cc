"""Click tracking: the http(s) links of an HTML part, and the same part with them rewritten.

Links are found by a real HTML parser (the standard library's), never a regex over the
document: an `<a href>` inside a comment, a `<script>` or a `<style>` is not a link, and a
reader's mail client agrees. The parser also says where each tag starts, so a rewrite changes
only the bytes of the href values it replaces; everything else stays byte for byte.

The URL of a link is its attribute value as the mail client reads it: entities decoded
(`?a=1&amp;b=2` -> `?a=1&b=2`) and surrounding whitespace dropped, so a redirect goes exactly
where the reader would have gone.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from html import escape, unescape
from html.parser import HTMLParser
from urllib.parse import urlsplit

_LINK_TAGS = frozenset({"a", "area"})
# HTML's "ASCII whitespace": what a browser strips around a URL and what separates attributes.
_SPACE = " \t\n\f\r"


@dataclass(frozen=True, slots=True)
class _Href:
    start: int  # the value's first character, or its opening quote
    end: int  # just past the value, or its closing quote
    raw: str  # the value as written, without quotes


def _href_of(tag: str) -> tuple[int, int, str] | None:
    """The first href attribute of a raw start tag (`<a class=x href='…'>`): its span and text.

    Follows the HTML tokenizer's attribute states, which is what decides where a value ends:
    quoted up to the same quote, unquoted up to whitespace or `>`.
    """
    i, n = 1, len(tag)
    while i < n and tag[i] not in _SPACE + "/>":
        i += 1  # the tag name
    while i < n:
        while i < n and (tag[i] in _SPACE or tag[i] == "/"):
            i += 1
        if i >= n or tag[i] == ">":
            return None
        name_start = i
        i += 1  # a first `=` belongs to the name
        while i < n and tag[i] not in _SPACE + "/>=":
            i += 1
        name = tag[name_start:i].lower()
        while i < n and tag[i] in _SPACE:
            i += 1
        if i >= n or tag[i] != "=":
            if name == "href":
                return None  # `<a href>`: no value
            continue
        i += 1
        while i < n and tag[i] in _SPACE:
            i += 1
        if i < n and tag[i] in "\"'":
            close = tag.find(tag[i], i + 1)
            if close < 0:
                return None
            start, end, value = i, close + 1, tag[i + 1 : close]
        else:
            start = i
            while i < n and tag[i] not in _SPACE + ">":
                i += 1
            end, value = i, tag[start:i]
        i = end
        if name == "href":
            return start, end, value
    return None


class _Finder(HTMLParser):
    """Collects the href of every `<a>` and `<area>` start tag, with its offsets."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.source = source
        self.hrefs: list[_Href] = []
        self._line_starts = [0]
        self._line_starts += [i + 1 for i, c in enumerate(source) if c == "\n"]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _LINK_TAGS:
            return
        text = self.get_starttag_text() or ""
        line, column = self.getpos()
        offset = self._line_starts[line - 1] + column
        found = _href_of(text)
        if found is None or not self.source.startswith(text, offset):
            return
        start, end, raw = found
        # Trust our reading of the tag only where the parser read the same value.
        parsed = next((value for name, value in attrs if name == "href"), None)
        if parsed != unescape(raw):
            return
        self.hrefs.append(_Href(offset + start, offset + end, raw))

    handle_startendtag = handle_starttag


def _hrefs(html: str) -> list[_Href]:
    finder = _Finder(html)
    try:
        finder.feed(html)
        finder.close()
    except Exception:
        pass  # malformed HTML: keep what was read before it
    return finder.hrefs


def _tracked_url(raw: str) -> str | None:
    """The URL a click would open, if it is an http(s) link we may track."""
    if "{{" in raw:
        return None  # a template variable: the URL differs per recipient
    url = unescape(raw).strip(_SPACE)
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


Skip = Collection[str] | Callable[[str], bool]


def _skipper(skip: Skip) -> Callable[[str], bool]:
    if callable(skip):
        return skip
    return skip.__contains__


def _tracked(html: str, skip: Skip) -> list[tuple[_Href, str]]:
    skipped = _skipper(skip)
    found = []
    for href in _hrefs(html):
        url = _tracked_url(href.raw)
        if url is not None and not skipped(url):
            found.append((href, url))
    return found


def links(html: str, skip: Skip = ()) -> list[str]:
    """The distinct tracked URLs of `html` in document order; a URL's index is its link number.

    Tracked: the href of `<a>` and `<area>` when it is an absolute http(s) URL. Not tracked:
    other schemes (`mailto:`, `tel:`), anchors and relative links, anything in comments,
    `<script>` or `<style>`, hrefs holding `{{` (template variables), and URLs in `skip`
    (a collection of URLs, or a predicate on the URL).
    """
    return list(dict.fromkeys(url for _, url in _tracked(html, skip)))


def rewrite(html: str, replacement: Callable[[int, str], str], skip: Skip = ()) -> str:
    """`html` with the href of every tracked link replaced by `replacement(index, url)`.

    `index` is the URL's position in `links(html, skip)`; the returned text is written as a
    double-quoted attribute value, HTML-escaped (a URL's `&` becomes `&amp;`; braces of a
    template placeholder such as `{{{sesdClick3}}}` stay as they are). Nothing else changes.
    """
    out: list[str] = []
    numbers: dict[str, int] = {}
    done = 0
    for href, url in _tracked(html, skip):
        index = numbers.setdefault(url, len(numbers))
        out.append(html[done : href.start])
        out.append('"' + escape(replacement(index, url), quote=True) + '"')
        done = href.end
    out.append(html[done:])
    return "".join(out)
