"""Handlebars templates, checked strictly and rendered the way SES renders them.

SES renders the subject, HTML and text of a templated send with Handlebars. A template that does
not parse, or data that lacks a variable, makes SES drop the message with a Rendering Failure
that arrives minutes later by SNS. So every template is parsed here first, by a parser of the
supported subset that refuses what handlebars.js would refuse (and what the rendering library
would quietly accept), and `Template.missing` names the first variable a recipient's data lacks
before anything is stored.

Rendering goes through pybars3, fed a canonical source that this module writes from its own
syntax tree, so the library never sees a construct it handles differently from handlebars.js:
  - comments, `~` whitespace control and standalone block lines are resolved here, following
    handlebars.js, and the library's own (approximate) whitespace pass is switched off;
  - `if`, `unless`, `each` and `with` are replaced by helpers with handlebars.js semantics
    (`{}` is truthy, `{{else}}` works in `unless`, `../` inside `with` reaches the outer context,
    `each` over a string renders `{{else}}`, `@key` of an array item is its index);
  - outputs go through helpers that stringify like JavaScript (`1.0` -> `1`, `[1,2]` -> `1,2`)
    and escape like handlebars.js (`& < > " ' \\` =`; the library leaves `=` alone).
  - path lookup is ours too: own keys only (pybars would find `dict.keys` for `{{user.keys}}`),
    list indexes and `length`, and the same lookup `Template.missing` uses.
Not reproduced: handlebars.js adds two raw outputs that meet at the start of a block when both
are numbers or booleans (`{{{a}}}{{{b}}}` of 1 and 2 gives `3`), an artefact of its compiled
JavaScript; here they print side by side (`12`).

Not supported, and refused with a TemplateError: partials and inline partials, helpers other
than the four blocks (no `lookup`, `log`, sub-expressions or hash arguments), `{{else if}}`,
`{{^}}` inverse sections, raw blocks, block parameters, escaped mustaches (`\\{{`), and quotes
or backslashes inside `[literal segments]` (pybars pastes names into the Python it generates).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pybars

from sesd.errors import SesdError

# SES limits (SES v2 API reference and developer guide, "Using templates to send personalized
# email"). Template data is a JSON string per destination; the template itself is bounded by the
# request (inline) or by the stored template's size.
MAX_TEMPLATE_DATA_CHARS = 262_144  # TemplateData, and ReplacementTemplateData of a bulk entry
MAX_STORED_TEMPLATE_BYTES = 500 * 1024  # a stored template, text and HTML parts together
MAX_INLINE_TEMPLATE_BYTES = 1024 * 1024  # an inline template's input JSON, text and HTML parts
MAX_BULK_DESTINATIONS = 50  # BulkEmailEntries of one SendBulkEmail call

_BLOCK_HELPERS = frozenset({"if", "unless", "each", "with"})
# Names handlebars.js resolves as helpers before data: `{{log}}` would call the helper.
_HELPER_NAMES = _BLOCK_HELPERS | {"lookup", "log", "helperMissing", "blockHelperMissing"}
_DATA_VARS = frozenset({"index", "key", "first", "last"})
_EXCERPT = 40

# handlebars.js ID: anything but whitespace and these punctuation marks.
_ID = re.compile(r"[^\s!\"#%&'()*+,./;<=>@\[\\\]^`{|}~]+")
_LITERAL_SEGMENT = re.compile(r"\[([^\]'\\\x00-\x1f]+)\]")
# Words of a tag's inside; a `[literal segment]` may hold spaces. A lone `[` is its own word,
# so that it fails as a path rather than vanishing.
_TOKEN = re.compile(r"(?:\[[^\]]*\]|[^\s\[])+|\[")
_NUMBER_OR_LITERAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?|true|false|null|undefined")
# JavaScript's \s, which handlebars.js uses when it strips whitespace.
_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_LSTRIP_ALL = re.compile(f"^[{_JS_SPACE}]+")
_RSTRIP_ALL = re.compile(f"[{_JS_SPACE}]+\\Z")
_LSTRIP_LINE = re.compile(r"^[ \t]*\r?\n?")
_RSTRIP_LINE = re.compile(r"[ \t]+\Z")
_PREV_LINE = re.compile(f"\\r?\\n[{_JS_SPACE}]*?\\Z")
_PREV_LINE_ROOT = re.compile(f"(^|\\r?\\n)[{_JS_SPACE}]*?\\Z")
_NEXT_LINE = re.compile(f"^[{_JS_SPACE}]*?\\r?\\n")
_NEXT_LINE_ROOT = re.compile(f"^[{_JS_SPACE}]*?(\\r?\\n|\\Z)")


class TemplateError(SesdError, ValueError):
    """A template outside the supported subset, or data that does not fit it."""

    def __init__(self, problem: str, source: str = "", offset: int | None = None) -> None:
        self.problem = problem
        self.line = self.column = 0
        where = ""
        if offset is not None:
            self.line = source.count("\n", 0, offset) + 1
            self.column = offset - (source.rfind("\n", 0, offset) + 1) + 1
            excerpt = source[offset : offset + _EXCERPT]
            if len(source) > offset + _EXCERPT:
                excerpt += "…"
            where = f" at line {self.line}, column {self.column}: {excerpt!r}"
        super().__init__(problem + where)


@dataclass(frozen=True, slots=True)
class _Path:
    """A variable reference: `depth` parents up (`../`), from the root (`@root`), or `@data`."""

    text: str
    parts: tuple[str, ...] = ()
    depth: int = 0
    root: bool = False
    data: str = ""  # "index", "key", "first" or "last"


@dataclass(slots=True)
class _Content:
    original: str
    value: str
    left_stripped: bool = False
    right_stripped: bool = False


@dataclass(slots=True)
class _Output:
    path: _Path
    raw: bool
    strip: tuple[bool, bool]


@dataclass(slots=True)
class _Comment:
    strip: tuple[bool, bool]


@dataclass(slots=True)
class _Block:
    helper: str
    path: _Path
    offset: int
    open_strip: tuple[bool, bool]
    program: list[_Node] = field(default_factory=list)
    inverse: list[_Node] | None = None
    inverse_strip: tuple[bool, bool] = (False, False)
    close_strip: tuple[bool, bool] = (False, False)


_Node = _Content | _Output | _Comment | _Block


# --- lexing and parsing ---------------------------------------------------------------------


@dataclass(slots=True)
class _Tag:
    kind: str  # "output", "raw", "comment", "open", "else", "close"
    start: int
    end: int
    inner: str
    strip: tuple[bool, bool]


def _tags(source: str) -> Iterator[_Content | _Tag]:
    """Split the source into text and tags, refusing unclosed and unsupported mustaches."""
    i = 0
    while True:
        j = source.find("{{", i)
        if j < 0:
            if i < len(source):
                yield _Content(source[i:], source[i:])
            return
        if j > 0 and source[j - 1] == "\\":
            raise TemplateError("escaped mustaches (\\{{) are not supported", source, j - 1)
        if j > i:
            yield _Content(source[i:j], source[i:j])
        yield (tag := _read_tag(source, j))
        i = tag.end


def _read_tag(source: str, start: int) -> _Tag:
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
        if sigil == "&":
            kind, k = "raw", k + 1
        elif sigil == "#":
            kind, k = "open", k + 1
        elif sigil == "/":
            kind, k = "close", k + 1
        elif sigil in (">", "^", "*"):
            what = {">": "partials", "^": "inverse sections ({{^x}})", "*": "decorators"}[sigil]
            raise TemplateError(f"{what} are not supported", source, start)
    end, inner_end, strip_close = _find_close(source, start, k, closer)
    inner = source[k:inner_end]
    if kind == "output" and inner.strip() == "else":
        kind = "else"
    return _Tag(kind, start, end, inner, (strip_open, strip_close))


_CLOSE = re.compile(r"(~?)}}")
_CLOSE_TRIPLE = re.compile(r"}(~?)}}")


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


def _read_comment(source: str, start: int, k: int, strip_open: bool) -> _Tag:
    if source.startswith("--", k):
        # As in handlebars.js, the closing `--}}` may reuse the opening dashes: `{{!--}}`.
        stop = re.compile(r"--(~?)}}").search(source, k)
    else:
        stop = re.compile(r"(~?)}}").search(source, k)
    if stop is None:
        raise TemplateError("unclosed comment", source, start)
    return _Tag("comment", start, stop.end(), "", (strip_open, stop.group(1) == "~"))


def _parse_path(token: str, source: str, offset: int) -> _Path:
    def bad(problem: str) -> TemplateError:
        return TemplateError(f"{problem}: {token[:_EXCERPT]!r}", source, offset)

    rest, depth, root = token, 0, False
    if rest.startswith("@"):
        head = _ID.match(rest, 1)
        name = head.group() if head else ""
        if name in _DATA_VARS and head and head.end() == len(rest):
            return _Path(token, data=name)
        if name != "root":
            raise bad("unknown data variable (use @index, @key, @first, @last or @root)")
        root, rest = True, rest[5:]
        if rest and not rest.startswith("."):
            raise bad("malformed path")
        rest = rest[1:]
    else:
        while rest.startswith("../"):
            depth, rest = depth + 1, rest[3:]
        for this, prefixes in (("this", ("this.", "this/")), (".", ("./",))):
            if rest == this:
                return _Path(token, depth=depth)
            if rest.startswith(prefixes):
                rest = rest[len(this) + 1 :]
                break
        else:
            if depth == 0 and rest in _HELPER_NAMES:
                raise bad(f"'{rest}' names a helper, not a variable (write this.{rest})")
            if _NUMBER_OR_LITERAL.fullmatch(rest):
                raise bad("literal values are not supported")
    parts: list[str] = []
    pos = 0
    while pos < len(rest) or not parts:
        seg = _LITERAL_SEGMENT.match(rest, pos) or _ID.match(rest, pos)
        if seg is None:
            raise bad("malformed path")
        name = seg.group(1) if seg.re is _LITERAL_SEGMENT else seg.group()
        if name in ("this", "..", ".") or name.startswith("@"):
            raise bad("'this', '..' and '@' names may only start a path")
        parts.append(name)
        pos = seg.end()
        if pos == len(rest) and seg.re is _ID and _NUMBER_OR_LITERAL.fullmatch(name):
            # handlebars.js reads a final `1` or `true` as a literal: `items.1` does not parse.
            raise bad(f"write a number or literal name as [{name}]")
        if pos < len(rest):
            if rest[pos] != ".":
                raise bad("malformed path (separate names with '.')")
            pos += 1
            if pos == len(rest):
                raise bad("malformed path (ends with '.')")
    return _Path(token, tuple(parts), depth, root)


@dataclass(slots=True)
class _Context:
    """What the parser knows of the data context at a point: its depth, and if @index exists."""

    depth: int
    in_each: bool


def _parse(source: str) -> list[_Node]:
    root: list[_Node] = []
    # (block, where its tags go now, the context inside it)
    stack: list[tuple[_Block, list[_Node], _Context]] = []
    body, scope = root, _Context(0, False)

    def path_of(tag: _Tag, token: str) -> _Path:
        path = _parse_path(token, source, tag.start)
        if path.depth > scope.depth:
            raise TemplateError("'../' goes above the top-level data", source, tag.start)
        if path.data and not scope.in_each:
            problem = f"@{path.data} is only defined inside {{{{#each}}}}"
            raise TemplateError(problem, source, tag.start)
        return path

    for item in _tags(source):
        if isinstance(item, _Content):
            body.append(item)
            continue
        tag, tokens = item, _TOKEN.findall(item.inner)
        if tag.kind == "comment":
            body.append(_Comment(tag.strip))
        elif tag.kind in ("output", "raw"):
            if len(tokens) != 1:
                problem = "empty mustache" if not tokens else "helpers are not supported"
                if tokens[:1] == ["else"]:
                    problem = "{{else if}} is not supported (nest an {{#if}} inside {{else}})"
                raise TemplateError(problem, source, tag.start)
            path = path_of(tag, tokens[0])
            body.append(_Output(path, tag.kind == "raw", tag.strip))
        elif tag.kind == "open":
            if not tokens or tokens[0] not in _BLOCK_HELPERS:
                name = tokens[0] if tokens else ""
                raise TemplateError(
                    f"unknown block helper {name[:_EXCERPT]!r} (use if, unless, each or with)",
                    source,
                    tag.start,
                )
            if len(tokens) != 2:
                problem = f"{{{{#{tokens[0]}}}}} takes exactly one variable"
                raise TemplateError(problem, source, tag.start)
            block = _Block(tokens[0], path_of(tag, tokens[1]), tag.start, tag.strip)
            if block.helper == "with" and block.path == _Path(block.path.text):
                # handlebars.js enters no new context for it, so `../` inside would mislead.
                raise TemplateError(
                    "{{#with this}} changes nothing; leave it out", source, tag.start
                )
            body.append(block)
            stack.append((block, body, scope))
            body = block.program
            if block.helper in ("each", "with"):
                scope = _Context(scope.depth + 1, scope.in_each or block.helper == "each")
        elif tag.kind == "else":
            if not stack:
                raise TemplateError("{{else}} outside a block", source, tag.start)
            block, _, outer = stack[-1]
            if block.inverse is not None:
                raise TemplateError("a second {{else}} in one block", source, tag.start)
            block.inverse, block.inverse_strip = [], tag.strip
            body, scope = block.inverse, outer
        else:
            name = item.inner.strip()
            if not stack:
                problem = f"{{{{/{name[:_EXCERPT]}}}}} closes no block"
                raise TemplateError(problem, source, tag.start)
            block, body, scope = stack.pop()
            if name != block.helper:
                raise TemplateError(
                    f"{{{{/{name[:_EXCERPT]}}}}} closes {{{{#{block.helper}}}}}"
                    f" opened at line {source.count(chr(10), 0, block.offset) + 1}",
                    source,
                    tag.start,
                )
            block.close_strip = tag.strip
    if stack:
        block = stack[-1][0]
        raise TemplateError(f"{{{{#{block.helper}}}}} is never closed", source, block.offset)
    return root


# --- whitespace: handlebars.js's WhitespaceControl, step for step ---------------------------


def _prev_is_space(body: list[_Node], i: int, is_root: bool) -> bool:
    prev = body[i - 1] if i > 0 else None
    if prev is None:
        return is_root
    if isinstance(prev, _Content):
        pattern = _PREV_LINE if (i > 1 or not is_root) else _PREV_LINE_ROOT
        return pattern.search(prev.original) is not None
    return False


def _next_is_space(body: list[_Node], i: int, is_root: bool) -> bool:
    nxt = body[i + 1] if i + 1 < len(body) else None
    if nxt is None:
        return is_root
    if isinstance(nxt, _Content):
        pattern = _NEXT_LINE if (i + 2 < len(body) or not is_root) else _NEXT_LINE_ROOT
        return pattern.search(nxt.original) is not None
    return False


def _omit_right(body: list[_Node], i: int | None, multiple: bool = False) -> None:
    j = 0 if i is None else i + 1
    node = body[j] if j < len(body) else None
    if not isinstance(node, _Content) or (not multiple and node.right_stripped):
        return
    before = node.value
    node.value = (_LSTRIP_ALL if multiple else _LSTRIP_LINE).sub("", before, count=1)
    node.right_stripped = node.value != before


def _omit_left(body: list[_Node], i: int | None, multiple: bool = False) -> bool:
    j = len(body) - 1 if i is None else i - 1
    node = body[j] if j >= 0 else None
    if not isinstance(node, _Content) or (not multiple and node.left_stripped):
        return False
    before = node.value
    node.value = (_RSTRIP_ALL if multiple else _RSTRIP_LINE).sub("", before, count=1)
    node.left_stripped = node.value != before
    return node.left_stripped


def _block_strip(block: _Block) -> dict[str, bool]:
    program, inverse = block.program, block.inverse
    closing = inverse if inverse is not None else program  # the body the close tag ends
    strip = {
        "open": block.open_strip[0],
        "close": block.close_strip[1],
        "open_standalone": _next_is_space(program, -1, False),
        "close_standalone": _prev_is_space(closing, len(closing), False),
    }
    if block.open_strip[1]:
        _omit_right(program, None, True)
    if inverse is not None:
        if block.inverse_strip[0]:
            _omit_left(program, None, True)
        if block.inverse_strip[1]:
            _omit_right(inverse, None, True)
        if block.close_strip[0]:
            _omit_left(inverse, None, True)
        if _prev_is_space(program, len(program), False) and _next_is_space(inverse, -1, False):
            _omit_left(program, None)
            _omit_right(inverse, None)
    elif block.close_strip[0]:
        _omit_left(program, None, True)
    return strip


def _control_whitespace(body: list[_Node], is_root: bool) -> None:
    for i, node in enumerate(body):
        if isinstance(node, _Content):
            continue
        if isinstance(node, _Block):
            _control_whitespace(node.program, False)
            if node.inverse is not None:
                _control_whitespace(node.inverse, False)
            strip = _block_strip(node)
        else:
            strip = {"open": node.strip[0], "close": node.strip[1]}
            if isinstance(node, _Comment):
                strip["inline_standalone"] = True
        prev_space = _prev_is_space(body, i, is_root)
        next_space = _next_is_space(body, i, is_root)
        if strip["close"]:
            _omit_right(body, i, True)
        if strip["open"]:
            _omit_left(body, i, True)
        if strip.get("inline_standalone") and prev_space and next_space:
            _omit_right(body, i)
            _omit_left(body, i)
        if isinstance(node, _Block):
            if strip["open_standalone"] and prev_space:
                _omit_right(node.program, None)
                _omit_left(body, i)
            if strip["close_standalone"] and next_space:
                _omit_right(body, i)
                _omit_left(node.inverse if node.inverse is not None else node.program, None)


def _flatten(body: list[_Node]) -> list[_Node]:
    """Drop comments and merge the text around them, once whitespace has been settled."""
    out: list[_Node] = []
    for node in body:
        if isinstance(node, _Comment):
            continue
        if isinstance(node, _Content):
            if not node.value:
                continue
            if out and isinstance(out[-1], _Content):
                out[-1] = _Content(out[-1].original, out[-1].value + node.value)
                continue
        elif isinstance(node, _Block):
            node.program = _flatten(node.program)
            if node.inverse is not None:
                node.inverse = _flatten(node.inverse)
        out.append(node)
    return out


# --- rendering: canonical source for pybars, with handlebars.js helpers -----------------------

_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}
    | {"'": "&#x27;", "`": "&#x60;", "=": "&#x3D;"}
)
# Emitted helper names are short: pybars parses its input at roughly a millisecond a tag.
_LBRACE = "{{{lb}}}"
_JOINING_BRACE = re.compile(r"\{(?=\{|\Z)")
_CR = "{{{cr}}}"
# pybars drops the CR of a CRLF in the whitespace that starts a text (its grammar keeps only the
# last character of `'\r'? '\n'`); those CRs go through a helper instead.
_LEADING_SPACE = re.compile(r"[ \t\r\n]*")


def _emit_path(path: _Path) -> str:
    if path.data:
        return "@" + path.data
    segments = ".".join(f"[{part}]" for part in path.parts)
    if path.root:
        return "@root." + segments if segments else "@root"
    return "../" * path.depth + (segments or "this")


def _emit(nodes: list[_Node]) -> str:
    """The template again, in the only forms handed to pybars: every `{` that could join a
    following `{{` goes through a helper, outputs go through our stringify-and-escape helpers,
    and data is always looked up as a path, never as a helper name."""
    out: list[str] = []
    for node in nodes:
        if isinstance(node, _Content):
            text = _JOINING_BRACE.sub(_LBRACE, node.value)
            lead = _LEADING_SPACE.match(text).end()  # type: ignore[union-attr]
            if "\r" in text[:lead]:
                text = text[:lead].replace("\r", _CR) + text[lead:]
            out.append(text)
        elif isinstance(node, _Comment):
            continue
        elif isinstance(node, _Output):
            helper = "r" if node.raw else "e"
            out.append(f"{{{{{{{helper} {_emit_path(node.path)}}}}}}}")
        else:
            out.append(f"{{{{#{node.helper} {_emit_path(node.path)}}}}}{_emit(node.program)}")
            if node.inverse is not None:
                out.append("{{else}}" + _emit(node.inverse))
            out.append(f"{{{{/{node.helper}}}}}")
    return "".join(out)


def _js_number(value: float) -> str:
    """JavaScript's Number#toString, so `{{price}}` of 10.0 reads `10` as in handlebars.js."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    # repr gives the shortest digits that round-trip, as JavaScript does; only the layout differs.
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    k = len(text)
    n = int(exponent) + len(digits)
    minus = "-" if sign else ""
    if k <= n <= 21:
        return minus + text + "0" * (n - k)
    if 0 < n <= 21:
        return minus + text[:n] + "." + text[n:]
    if -6 < n <= 0:
        return minus + "0." + "0" * -n + text
    e = n - 1
    mantissa = text if k == 1 else text[0] + "." + text[1:]
    return f"{minus}{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


def _unwrap(value: Any) -> Any:
    if isinstance(value, pybars.Scope):
        return value.context
    return value


def _js_string(value: Any) -> str:
    value = _unwrap(value)
    kind = type(value)
    if kind is str:
        return value
    if value is None:
        return ""
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return _js_number(value)
    if isinstance(value, list | tuple):
        return ",".join("" if item is None else _js_string(item) for item in value)
    if isinstance(value, Mapping):
        return "[object Object]"
    return str(value)


def _truthy(value: Any) -> bool:
    """handlebars.js `if`: JavaScript truthiness, and an empty array is false ({} is true)."""
    if value is None or value is False or value == "":
        return False
    if type(value) in (int, float):
        return value == value and value != 0
    if isinstance(value, list | tuple):
        return len(value) > 0
    return True


def _empty(value: Any) -> bool:
    """handlebars.js isEmpty, used by `with`: like falsy, except that 0 is not empty."""
    if type(value) in (int, float) and value == 0:
        return False
    return not _truthy(value)


def _is_array_index(key: str) -> bool:
    canonical = key.isdigit() and key.isascii() and (key == "0" or key[0] != "0")
    return canonical and int(key) < 2**32 - 1


def _js_keys(mapping: Mapping[str, Any]) -> list[str]:
    """Object.keys order: array-index keys ascending, then the rest in insertion order."""
    keys = list(mapping)
    indexes = [key for key in keys if _is_array_index(key)]
    if not indexes:
        return keys
    return sorted(indexes, key=int) + [key for key in keys if not _is_array_index(key)]


def _if(this: Any, options: dict[str, Any], value: Any) -> Any:
    branch = "fn" if _truthy(_unwrap(value)) else "inverse"
    return options[branch](this)


def _unless(this: Any, options: dict[str, Any], value: Any) -> Any:
    branch = "inverse" if _truthy(_unwrap(value)) else "fn"
    return options[branch](this)


def _with(this: Any, options: dict[str, Any], value: Any) -> Any:
    value = _unwrap(value)
    if _empty(value):
        return options["inverse"](this)
    # The new context's parent is the block's own context, and @index etc. carry through.
    data = {"index": this.index, "key": this.key, "first": this.first, "last": this.last}
    scope = pybars.Scope(value, this, options["root"], **data)
    return options["fn"](scope)


def _each(this: Any, options: dict[str, Any], value: Any) -> Any:
    value = _unwrap(value)
    items: list[tuple[int | str, Any]] = []
    if isinstance(value, list | tuple):
        items = list(enumerate(value))
    elif isinstance(value, Mapping):
        items = [(key, value[key]) for key in _js_keys(value)]
    if not items:
        return options["inverse"](this)
    fn, root, last = options["fn"], options["root"], len(items) - 1
    out = pybars.strlist()
    for index, (key, item) in enumerate(items):
        first, is_last = index == 0, index == last
        out.grow(
            fn(pybars.Scope(item, this, root, index=index, key=key, first=first, last=is_last))
        )
    return out


_HELPERS: dict[str, Callable[..., Any]] = {
    "if": _if,
    "unless": _unless,
    "with": _with,
    "each": _each,
    "e": lambda this, value: _js_string(value).translate(_ESCAPES),
    "r": lambda this, value: _js_string(value),
    "lb": lambda this: "{",
    "cr": lambda this: "\r",
}


class _Compiler(pybars.Compiler):
    """pybars, minus its whitespace pass: whitespace was settled by handlebars.js's rules."""

    def whitespace_control(self, source: str) -> str:
        return source


def _resolve(context: Any, *segments: str) -> Any:
    """_Path lookup for the compiled template, in place of pybars' own.

    pybars falls back to Python attributes (`{{user.keys}}` finds dict.keys) and raises on a name
    looked up in a list; handlebars.js reads own properties only, and absent is just absent.
    Lookups follow the same `_step` as `missing`, so the two can never disagree.
    """
    value = context
    for segment in segments:
        if not segment:
            continue
        if isinstance(value, pybars.Scope):
            if segment == "@_parent":
                value = value.parent
                continue
            if segment == "@root":
                value = value.root
                continue
            if segment[0] == "@":
                value = getattr(value, segment[1:])
                continue
            value = value.context
        value = _step(value, segment)
        if value is _ABSENT:
            return None
    return value


# pybars keeps its code builder on the class, so two compiles at once would mix their output.
_COMPILING = threading.Lock()


def _compile(source: str) -> Callable[..., Any]:
    with _COMPILING:
        render = _Compiler().compile(source)
    # The compiled module calls `resolve` by its global name; this template's module only.
    if render.__globals__.get("resolve") is not pybars._compiler.resolve:
        raise RuntimeError("pybars internals changed: compiled templates no longer call resolve")
    render.__globals__["resolve"] = _resolve
    return render


# --- missing: what a recipient's data lacks, without rendering ------------------------------

_ABSENT = object()
# A context frame: (value, where it came from as path parts, the frame it was entered from).
_Frame = tuple[Any, tuple[str | int, ...], Any]
_Check = Callable[[_Frame, _Frame], "str | None"]


def _label(parts: tuple[str | int, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if type(part) is int else (f".{part}" if text else str(part))
    return text or "this"


def _step(value: Any, part: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(part, _ABSENT)
    if isinstance(value, list | tuple):
        if part == "length":
            return len(value)
        if part.isdigit() and part.isascii() and int(part) < len(value):
            return value[int(part)]
    return _ABSENT


def _resolver(path: _Path) -> Callable[[_Frame, _Frame], tuple[Any, _Frame]]:
    """A function from (frame, root frame) to (value or _ABSENT, the frame the path starts at)."""
    parts, depth = path.parts, path.depth
    if path.data:
        return lambda frame, root: (True, frame)
    if path.root:

        def start(frame: _Frame, root: _Frame) -> _Frame:
            return root
    elif depth:

        def start(frame: _Frame, root: _Frame) -> _Frame:
            for _ in range(depth):
                frame = frame[2]
            return frame
    else:

        def start(frame: _Frame, root: _Frame) -> _Frame:
            return frame

    if len(parts) == 1 and not path.root and not depth:
        (only,) = parts

        def resolve_one(frame: _Frame, root: _Frame) -> tuple[Any, _Frame]:
            value = frame[0]
            if type(value) is dict:
                return value.get(only, _ABSENT), frame
            return _step(value, only), frame

        return resolve_one

    def resolve(frame: _Frame, root: _Frame) -> tuple[Any, _Frame]:
        frame = start(frame, root)
        value = frame[0]
        for part in parts:
            value = _step(value, part)
            if value is _ABSENT:
                break
        return value, frame

    return resolve


def _checker(nodes: list[_Node]) -> _Check | None:
    checks = [check for node in nodes if (check := _node_checker(node)) is not None]
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]

    def check_all(frame: _Frame, root: _Frame) -> str | None:
        for check in checks:
            found = check(frame, root)
            if found is not None:
                return found
        return None

    return check_all


def _node_checker(node: _Node) -> _Check | None:
    if isinstance(node, _Content | _Comment) or (isinstance(node, _Output) and node.path.data):
        return None
    path = node.path
    resolve = _resolver(path)

    def missing_here(frame: _Frame) -> str:
        return _label(frame[1] + path.parts)

    if isinstance(node, _Output):

        def check_output(frame: _Frame, root: _Frame) -> str | None:
            value, start = resolve(frame, root)
            return missing_here(start) if value is _ABSENT or value is None else None

        return check_output
    body = _checker(node.program)
    inverse = _checker(node.inverse or [])
    if node.helper in ("if", "unless"):
        unless = node.helper == "unless"

        def check_if(frame: _Frame, root: _Frame) -> str | None:
            value, _ = resolve(frame, root)
            taken = (value is not _ABSENT and _truthy(value)) != unless
            branch = body if taken else inverse
            return branch(frame, root) if branch is not None else None

        return check_if
    if node.helper == "with":

        def check_with(frame: _Frame, root: _Frame) -> str | None:
            value, start = resolve(frame, root)
            if value is _ABSENT or value is None:
                return missing_here(start)
            if _empty(value):
                return inverse(frame, root) if inverse is not None else None
            if body is None:
                return None
            return body((value, start[1] + path.parts, frame), root)

        return check_with

    def check_each(frame: _Frame, root: _Frame) -> str | None:
        value, start = resolve(frame, root)
        if value is _ABSENT or value is None:
            return missing_here(start)
        if isinstance(value, list | tuple):
            items: list[tuple[str | int, Any]] = list(enumerate(value))
        elif isinstance(value, Mapping):
            items = [(key, value[key]) for key in _js_keys(value)]
        else:
            items = []
        if not items:
            return inverse(frame, root) if inverse is not None else None
        if body is None:
            return None
        where = start[1] + path.parts
        for key, item in items:
            found = body((item, (*where, key), frame), root)
            if found is not None:
                return found
        return None

    return check_each


# --- the public face --------------------------------------------------------------------------


class Template:
    """A parsed template: checked per recipient, rendered (compiled on first use) per recipient.

    Compiling with pybars is slow (about 2.5 ms a tag: seconds for a large newsletter), and in
    production SES renders, so `render` compiles only when first asked, once per template.
    """

    __slots__ = ("_check", "_emitted", "_render", "source")

    def __init__(self, source: str, nodes: list[_Node]) -> None:
        self.source = source
        self._check = _checker(nodes)
        self._emitted = _emit(nodes)
        self._render: Callable[..., Any] | None = None

    def missing(self, data: Mapping[str, Any]) -> str | None:
        """The first variable `render(data)` would need and not find (`user.name`,
        `items[2].title`), following the branches and items rendering would take; else None.

        An `{{#if}}`/`{{#unless}}` condition may be absent (it is false); an output, or the
        value of an `{{#each}}`/`{{#with}}`, that is absent or null is missing: SES fails the
        message for it rather than rendering nothing.
        """
        if self._check is None:
            return None
        root: _Frame = (data, (), None)
        return self._check(root, root)

    def render(self, data: Mapping[str, Any]) -> str:
        """The text SES would produce from `data` (absent values render as nothing)."""
        if self._render is None:
            self._render = _compile(self._emitted)
        return str(self._render(data, helpers=_HELPERS))


# A bulk send checks and renders one template for many recipients, and messages of a campaign
# share theirs: parse (and the slow compile behind render) happen once per distinct source.
@functools.lru_cache(maxsize=128)
def parse(source: str) -> Template:
    """Parse `source` as a Handlebars template of the supported subset.

    Raises TemplateError naming the problem, its line and column and an excerpt. Templates
    are cached by source, so parsing the same text again is free.
    """
    nodes = _parse(source)
    _control_whitespace(nodes, True)
    return Template(source, _flatten(nodes))


def is_template(text: str) -> bool:
    """Whether SES would treat `text` as more than plain text: any `{{` starts a tag."""
    return "{{" in text


def raw_outputs(source: str) -> str:
    """`source` with every HTML-escaped output made raw (`{{name}}` -> `{{{name}}}`).

    For a text/plain part rendered by SES: escaping there would show `&amp;` to the reader.
    Blocks, comments and outputs that are already raw are left as they are, byte for byte.
    """
    out: list[str] = []
    i = 0
    for item in _tags(source):
        if isinstance(item, _Tag) and item.kind == "output":
            strip_open, strip_close = item.strip
            out.append(source[i : item.start])
            out.append(f"{{{{{'~' * strip_open}{{{item.inner}}}{'~' * strip_close}}}}}")
            i = item.end
    out.append(source[i:])
    return "".join(out)
