"""Click tracking: the http(s) links of an HTML part, and the same part with them rewritten.

Links are found by an HTML tokenizer, never a regex looking for links: an `<a href>` inside a
comment, a `<script>` or a `<style>` is not a link, and a reader's mail client agrees. The
tokenizer says where each tag starts, so a rewrite changes only the bytes of the href values it
replaces; everything else stays byte for byte.

It reads a document exactly as the standard library's `html.parser` (Python 3.11) does, quirks
included; the tests hold it to a parser-based reading over generated documents. It is its own
because `HTMLParser` spends its time on what is not a link (it decodes every text run, counts
lines, calls a handler per token), about 0.4 ms for a 2 kB message. Here the tokens mail is
made of (text, end tags, well-formed start tags) are taken by one compiled pattern, many at a
time, at C speed; every other construct (comments, declarations, raw-text elements, odd tags)
is read by code that follows html.parser step by step.

The URL of a link is its attribute value as the mail client reads it: entities decoded
(`?a=1&amp;b=2` -> `?a=1&b=2`) and surrounding whitespace dropped, so a redirect goes exactly
where the reader would have gone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from html import escape, unescape
from string import ascii_letters
from urllib.parse import urlsplit

# An href found: the value's span in the document (quotes included) and its text as written.
_Href = tuple[int, int, str]

_LINK_TAGS = frozenset({"a", "area"})
# Elements whose content html.parser reads as text up to their end tag (3.11 knows these two).
_RAW_TEXT_END = {
    name: re.compile(r"</\s*" + "".join(f"[{c}{c.upper()}]" for c in name) + r"\s*>")
    for name in ("script", "style")
}
_READ_TAGS = _LINK_TAGS | _RAW_TEXT_END.keys()
_LETTERS = frozenset(ascii_letters)
# HTML's "ASCII whitespace": what a browser strips around a URL and what separates attributes.
_SPACE = " \t\n\f\r"

# html.parser's reading of a start tag, where `\s` is Python's (Unicode) whitespace. The name
# runs to one of `\t\n\r\f />` or NUL; then attributes: `name`, `name=value`, `name = 'v'`…
_TAG_NAME = re.compile(r"[^\t\n\r\f />\x00]*")
_VALUE = r"""(?:'[^']*'|"[^"]*"|(?!['"])[^>\s]*)"""
_ATTRIBUTE_NAME = r"""(?<=['"\s/])[^\s/>][^\s/=>]*"""
# How far a tag reaches; what follows decides whether it is whole (see `_tag_end`).
_TAG_EXTENT = re.compile(
    rf"<[a-zA-Z][^\t\n\r\f />\x00]*(?:[\s/]*(?:{_ATTRIBUTE_NAME}"
    rf"(?:\s*=+\s*{_VALUE}\s*)?(?:\s|/(?!>))*)*)?\s*"
)
# Where a whole tag's attributes start, then one attribute at a time.
_TAG_HEAD = re.compile(r"[a-zA-Z][^\t\n\r\f />\x00]*(?:\s|/(?!>))*")
_ATTRIBUTE = re.compile(rf"({_ATTRIBUTE_NAME})(\s*=+\s*({_VALUE}))?(?:\s|/(?!>))*")

# Tags as well-formed mail writes them, `<td class="x" width=3 nowrap>`: ASCII names, ASCII
# whitespace before each attribute, values quoted or plain words. Where these match, the
# reading above ends the tag at the same `>` and reads the same attributes, and `_href_of`
# agrees with it, so they stand in for both on the common path.
_WS = r"[ \t\n\r\f]"
_PLAIN_ATTRIBUTE_NAME = r"[a-zA-Z_:][-a-zA-Z0-9_:.]*+"
_PLAIN_VALUE_TEXT = r"""(?:"[^"]*+"|'[^']*+'|[^\s"'=<>`]++)"""
_PLAIN_VALUE = rf"{_WS}*+={_WS}*+{_PLAIN_VALUE_TEXT}"
_PLAIN_ATTRIBUTE = rf"{_WS}++{_PLAIN_ATTRIBUTE_NAME}(?:{_PLAIN_VALUE})?+"
_PLAIN_END = rf"{_WS}*+/?>"
_HREF = rf"[hH][rR][eE][fF](?={_WS}|[=/>])"
_LINK_NAME = rf"(?:[aA]|[aA][rR][eE][aA])(?={_WS}|[/>])"
_RAW_TEXT_NAME = rf"(?:[sS][cC][rR][iI][pP][tT]|[sS][tT][yY][lL][eE])(?={_WS}|[/>])"
# A plain start tag that is neither a link nor opens raw text, and a plain `<a>` or `<area>`
# start tag with an href (group 1: the first href's value).
_OTHER_TAG = (
    rf"<(?!{_LINK_NAME}|{_RAW_TEXT_NAME})[a-zA-Z][-a-zA-Z0-9_:.]*+"
    rf"(?:{_PLAIN_ATTRIBUTE})*+{_PLAIN_END}"
)
_LINK_TAG = (
    rf"<{_LINK_NAME}(?:{_WS}++(?!{_HREF}){_PLAIN_ATTRIBUTE_NAME}(?:{_PLAIN_VALUE})?+)*+"
    rf"{_WS}++{_HREF}{_WS}*+={_WS}*+({_PLAIN_VALUE_TEXT})(?:{_PLAIN_ATTRIBUTE})*+{_PLAIN_END}"
)
# The common path, one call for many tokens: text, end tags and plain tags that hold nothing
# to look at, then perhaps a plain link. It stops at the first `<` it does not take, for
# `_markup_end` to read. (Outside raw text an end tag reaches its first `>`, whatever it holds.)
_RUN = re.compile(rf"(?:[^<]*+(?:</[^>]*+>|{_OTHER_TAG}))*+[^<]*+(?:{_LINK_TAG})?+")

# Comments and marked sections (`<![CDATA[…]]>`, Outlook's `<![if mso]>…<![endif]>`).
_COMMENT_END = re.compile(r"--\s*>")
_SECTION_NAME = re.compile(r"[a-zA-Z][-_.a-zA-Z0-9]*\s*")
_SECTION_END = re.compile(r"]\s*]\s*>")
_MS_SECTION_END = re.compile(r"]\s*>")
_SECTIONS = frozenset({"temp", "cdata", "ignore", "include", "rcdata"})
_MS_SECTIONS = frozenset({"if", "else", "endif"})

# An http(s) URL with its host part as `urlsplit` divides it, holding nothing that makes
# `urlsplit` do more: tab, CR and LF (it drops them), brackets (it checks an IPv6 host).
_PLAIN_HTTP = re.compile(r"[hH][tT][tT][pP][sS]?://([^/?#\t\r\n\[\]]*)[^\t\r\n\[\]]*")


class _Unreadable(Exception):
    """Where html.parser gives up on a document (an unknown `<![keyword`): nothing after it
    counts."""


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


def _tag_end(html: str, i: int) -> int:
    """Just past the start tag at `i`, or -1 where html.parser waits for more."""
    j = _TAG_EXTENT.match(html, i).end()  # type: ignore[union-attr]  # `<` + letter matches
    following = html[j : j + 1]
    if following == ">":
        return j + 1
    if following == "/":
        return j + 2 if html.startswith("/>", j) else -1
    if not following or following in _LETTERS or following == "=":
        return -1  # cut off inside a name or before a value
    return j  # a stray character ends the tag where the reading stopped


def _start_tag(html: str, i: int, name: str) -> tuple[int, _Href | None, bool]:
    """The `<a>`, `<area>`, `<script>` or `<style>` start tag at `i`, read in full: where
    reading resumes (-1: cut off), its href, and whether its content is raw text."""
    end = _tag_end(html, i)
    if end < 0:
        return -1, None, False
    k = _TAG_HEAD.match(html, i + 1).end()  # type: ignore[union-attr]
    parsed: str | None = None
    seen = False
    while k < end:
        attribute = _ATTRIBUTE.match(html, k)
        if attribute is None:
            break
        if not seen and attribute.group(1).lower() == "href":
            seen = True
            rest, value = attribute.group(2, 3)
            if rest and value[:1] == value[-1:] and value[:1] in ("'", '"'):
                value = value[1:-1]
            parsed = unescape(value) if rest else None
        k = attribute.end()
    closing = html[k:end].strip()
    if closing not in (">", "/>"):
        return end, None, False  # html.parser reads such a "tag" as text
    if name not in _LINK_TAGS:
        return end, None, closing == ">"
    found = _href_of(html[i:end])
    if found is None:
        return end, None, False
    start, stop, raw = found
    # Trust our reading of the value only where the parser read the same value.
    if parsed is None or parsed != unescape(raw):
        return end, None, False
    return end, (i + start, i + stop, raw), False


def _search(pattern: re.Pattern[str], html: str, i: int, absent: dict[str, int]) -> int:
    """Just past the first match of `pattern` from `i`, or -1. Remembers where a search
    failed: a document of many unclosed `<!--` costs one search, not one per `<!--`."""
    if absent.get(pattern.pattern, len(html) + 1) <= i:
        return -1
    match = pattern.search(html, i)
    if match is None:
        absent[pattern.pattern] = i
        return -1
    return match.end()


def _declaration_end(html: str, i: int, absent: dict[str, int]) -> int:
    """Just past the `<!…>` at `i` (a comment, marked section, doctype or bogus comment), or
    -1 where it is cut off."""
    if html.startswith("<!--", i):
        return _search(_COMMENT_END, html, i + 4, absent)
    if html.startswith("<![", i):
        name = _SECTION_NAME.match(html, i + 3)
        if i + 3 == len(html) or (name is not None and name.end() == len(html)):
            return -1
        keyword = name.group().strip().lower() if name else ""
        if keyword in _SECTIONS:
            return _search(_SECTION_END, html, i + 3, absent)
        if keyword in _MS_SECTIONS:
            return _search(_MS_SECTION_END, html, i + 3, absent)
        raise _Unreadable
    after = html.find(">", i + 2)  # a doctype or a bogus comment: its first `>`
    return after + 1 if after >= 0 else -1


def _markup_end(html: str, i: int, hrefs: list[_Href], absent: dict[str, int]) -> int:
    """Just past the markup at `i` that the common path did not take, read as html.parser
    reads it (a link found on the way goes to `hrefs`); -1 where nothing after is a link."""
    kind = html[i + 1 : i + 2]
    if kind in _LETTERS:
        name = _TAG_NAME.match(html, i + 1).group().lower()  # type: ignore[union-attr]
        if name in _READ_TAGS:
            end, href, raw_text = _start_tag(html, i, name)
            if href is not None:
                hrefs.append(href)
            if raw_text:
                # The content is text up to the element's own end tag, or to the end.
                close = _RAW_TEXT_END[name].search(html, end)
                return close.end() if close else -1
        else:
            end = _tag_end(html, i)
    elif kind in ("/", "?"):
        end = html.find(">", i + 2)  # an end tag or processing instruction: its first `>`
        end = end + 1 if end >= 0 else -1
    elif kind == "!":
        end = _declaration_end(html, i, absent)
    else:
        return i + 1  # a `<` that opens nothing is text
    if end < 0:
        # Cut off: html.parser reads up to the next `>` as text. With no `>` left no tag can
        # end, so nothing after is a link.
        end = html.find(">", i + 1) + 1
        return end if end else -1
    return end


def _hrefs(html: str) -> list[_Href]:
    """The href of every `<a>` and `<area>` start tag of `html`, in document order."""
    hrefs: list[_Href] = []
    absent: dict[str, int] = {}
    run = _RUN.match
    n = len(html)
    i = 0
    try:
        while True:
            token = run(html, i)
            i = token.end()  # type: ignore[union-attr]  # all optional: it always matches
            start, end = token.span(1)  # type: ignore[union-attr]
            if start >= 0:
                quoted = 1 if html[start] in "'\"" else 0
                hrefs.append((start, end, html[start + quoted : end - quoted]))
            elif i == n or (i := _markup_end(html, i, hrefs, absent)) < 0:
                return hrefs
    except _Unreadable:
        return hrefs  # what was read before it stands


def _tracked_url(raw: str) -> str | None:
    """The URL a click would open, if it is an http(s) link we may track."""
    if "{{" in raw:
        return None  # a template variable: the URL differs per recipient
    url = unescape(raw).strip(_SPACE)
    plain = _PLAIN_HTTP.fullmatch(url)
    if plain and (host := plain.group(1)).isascii():
        # What `urlsplit` would answer (it checks only a non-ASCII host further), at a tenth of
        # its cost: as much as finding the link.
        return url if host else None
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
    found = [(href, _tracked_url(href[2])) for href in _hrefs(html)]
    return [(href, url) for href, url in found if url is not None and not skipped(url)]


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
    for (start, end, _), url in _tracked(html, skip):
        index = numbers.setdefault(url, len(numbers))
        out.append(html[done:start])
        out.append(f'"{escape(replacement(index, url), quote=True)}"')
        done = end
    out.append(html[done:])
    return "".join(out)
