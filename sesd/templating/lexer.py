"""Splitting a template's source into text and tags, refusing mustaches outside the subset."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from sesd.templating.syntax import Content, TemplateError


@dataclass(slots=True)
class Tag:
    kind: str  # "output", "raw", "comment", "open", "else", "close"
    start: int
    end: int
    inner: str
    strip: tuple[bool, bool]


_SIGILS = {"&": "raw", "#": "open", "/": "close"}
_UNSUPPORTED_SIGILS = {">": "partials", "^": "inverse sections ({{^x}})", "*": "decorators"}
_CLOSE = re.compile(r"(~?)}}")
_CLOSE_TRIPLE = re.compile(r"}(~?)}}")
_LONG_COMMENT_CLOSE = re.compile(r"--(~?)}}")
# The common tag (`{{name}}`, `{{#if x}}`, `{{/if}}`, `{{&x}}`, with `~`) in one match, where
# `read_tag` would step through it. Its inside holds none of the characters that make
# `read_tag` look closer (braces, `~`, `[`, the sigils it refuses), `}}}` is left to it, and
# the possessive `?+` never gives back a `~` or sigil, so both read every such tag alike.
_SIMPLE_TAG = re.compile(r"\{\{(~?+)([#/&]?+)([^{}~\[!>^*]*)(?:(~)\}\}|\}\}(?!\}))")
_SIMPLE_KINDS = {"": "output", "#": "open", "/": "close", "&": "raw"}


def tags(source: str) -> Iterator[Content | Tag]:
    """Split the source into text and tags, refusing unclosed and unsupported mustaches."""
    i = 0
    while True:
        j = source.find("{{", i)
        if j < 0:
            if i < len(source):
                yield Content(source[i:], source[i:])
            return
        if j > 0 and source[j - 1] == "\\":
            raise TemplateError("escaped mustaches (\\{{) are not supported", source, j - 1)
        if j > i:
            yield Content(source[i:j], source[i:j])
        simple = _SIMPLE_TAG.match(source, j)
        if simple is None:
            tag = read_tag(source, j)
        else:
            strip_open, sigil, inner, strip_close = simple.groups()
            kind = _SIMPLE_KINDS[sigil]
            if kind == "output" and inner.strip() == "else":
                kind = "else"
            tag = Tag(kind, j, simple.end(), inner, (bool(strip_open), bool(strip_close)))
        yield tag
        i = tag.end


def read_tag(source: str, start: int) -> Tag:
    k = start + 2
    strip_open = source.startswith("~", k)
    k += strip_open
    if source.startswith("{{", start + 2):
        raise TemplateError("raw blocks ({{{{ }}}}) are not supported", source, start)
    if source.startswith("{", k):
        kind, k, closer = "raw", k + 1, "}"
    elif source.startswith("!", k):
        return _read_comment(source, start, k + 1, strip_open)
    else:
        kind, closer = "output", ""
        sigil = source[k : k + 1]
        if sigil in _SIGILS:
            kind, k = _SIGILS[sigil], k + 1
        elif sigil in _UNSUPPORTED_SIGILS:
            raise TemplateError(f"{_UNSUPPORTED_SIGILS[sigil]} are not supported", source, start)
    end, inner_end, strip_close = _find_close(source, start, k, closer)
    inner = source[k:inner_end]
    if kind == "output" and inner.strip() == "else":
        kind = "else"
    return Tag(kind, start, end, inner, (strip_open, strip_close))


def _find_close(source: str, start: int, k: int, closer: str) -> tuple[int, int, bool]:
    """Where the tag ends, where its inside ends, and whether it strips (`~}}`).

    `[literal segments]` may hold braces, so they are skipped whole; a `{{` before the close
    means the tag was never closed.
    """
    close = _CLOSE_TRIPLE if closer else _CLOSE
    n = len(source)
    while k < n:
        c = source[k]
        if c == "[":
            stop = source.find("]", k)
            if stop < 0:
                break
            k = stop + 1
            continue
        if c == "{" and source.startswith("{{", k):
            break
        if c in "}~":
            if not closer and _CLOSE_TRIPLE.match(source, k):
                # handlebars.js reads `}}}` as the close of a {{{ whatever opened the tag.
                raise TemplateError("a {{ is closed by }}}", source, start)
            found = close.match(source, k)
            if found:
                if source.startswith("}}}}", k):
                    raise TemplateError(
                        "}}}} closes a raw block, which is not supported", source, start
                    )
                return found.end(), k, found.group(1) == "~"
            if closer and _CLOSE.match(source, k):
                raise TemplateError("a {{{ is closed by }} instead of }}}", source, start)
        k += 1
    raise TemplateError("unclosed mustache: no matching }}", source, start)


def _read_comment(source: str, start: int, k: int, strip_open: bool) -> Tag:
    # As in handlebars.js, the closing `--}}` may reuse the opening dashes: `{{!--}}`.
    long = source.startswith("--", k)
    stop = (_LONG_COMMENT_CLOSE if long else _CLOSE).search(source, k)
    if stop is None:
        raise TemplateError("unclosed comment", source, start)
    return Tag("comment", start, stop.end(), "", (strip_open, stop.group(1) == "~"))
