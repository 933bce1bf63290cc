"""From tags to the syntax tree: paths and blocks of the supported subset, as handlebars.js
reads them, and nothing it would refuse."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sesd.templating.lexer import Tag, tags
from sesd.templating.syntax import (
    EXCERPT,
    Block,
    Comment,
    Content,
    Node,
    Output,
    PathExpr,
    TemplateError,
)

_BLOCK_HELPERS = frozenset({"if", "unless", "each", "with"})
# Names handlebars.js resolves as helpers before data: `{{log}}` would call the helper.
_HELPER_NAMES = _BLOCK_HELPERS | {"lookup", "log", "helperMissing", "blockHelperMissing"}
_DATA_VARS = frozenset({"index", "key", "first", "last"})
# Whitespace control, checking and rendering recurse once or twice a level; far deeper than any
# e-mail needs, and far from Python's recursion limit, which would otherwise be the error.
MAX_NESTED_BLOCKS = 100

# handlebars.js ID: anything but whitespace and these punctuation marks.
_ID = re.compile(r"[^\s!\"#%&'()*+,./;<=>@\[\\\]^`{|}~]+")
_LITERAL_SEGMENT = re.compile(r"\[([^\]'\\\x00-\x1f]+)\]")
# Words of a tag's inside; a `[literal segment]` may hold spaces. A lone `[` is its own word,
# so that it fails as a path rather than vanishing.
_TOKEN = re.compile(r"(?:\[[^\]]*\]|[^\s\[])+|\[")
_NUMBER_OR_LITERAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?|true|false|null|undefined")


def _parse_path(token: str, source: str, offset: int) -> PathExpr:
    def bad(problem: str) -> TemplateError:
        return TemplateError(f"{problem}: {token[:EXCERPT]!r}", source, offset)

    rest, depth, root = token, 0, False
    if rest.startswith("@"):
        head = _ID.match(rest, 1)
        name = head.group() if head else ""
        if name in _DATA_VARS and head and head.end() == len(rest):
            return PathExpr(token, data=name)
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
                return PathExpr(token, depth=depth)
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
    return PathExpr(token, tuple(parts), depth, root)


@dataclass(slots=True)
class _Context:
    """What the parser knows of the data context at a point: its depth, and if @index exists."""

    depth: int
    in_each: bool


def parse_tree(source: str) -> list[Node]:
    root: list[Node] = []
    # (block, where its tags go now, the context inside it)
    stack: list[tuple[Block, list[Node], _Context]] = []
    body, scope = root, _Context(0, False)
    # Templates repeat their names; a path's meaning does not depend on where it stands.
    paths: dict[str, PathExpr] = {}

    def path_of(tag: Tag, token: str) -> PathExpr:
        path = paths.get(token)
        if path is None:
            path = paths[token] = _parse_path(token, source, tag.start)
        if path.depth > scope.depth:
            raise TemplateError("'../' goes above the top-level data", source, tag.start)
        if path.data and not scope.in_each:
            problem = f"@{path.data} is only defined inside {{{{#each}}}}"
            raise TemplateError(problem, source, tag.start)
        return path

    for item in tags(source):
        if isinstance(item, Content):
            body.append(item)
            continue
        tag, tokens = item, _TOKEN.findall(item.inner)
        if tag.kind == "comment":
            body.append(Comment(tag.strip))
        elif tag.kind in ("output", "raw"):
            if len(tokens) != 1:
                problem = "empty mustache" if not tokens else "helpers are not supported"
                if tokens[:1] == ["else"]:
                    problem = "{{else if}} is not supported (nest an {{#if}} inside {{else}})"
                raise TemplateError(problem, source, tag.start)
            path = path_of(tag, tokens[0])
            body.append(Output(path, tag.kind == "raw", tag.strip))
        elif tag.kind == "open":
            if not tokens or tokens[0] not in _BLOCK_HELPERS:
                name = tokens[0] if tokens else ""
                raise TemplateError(
                    f"unknown block helper {name[:EXCERPT]!r} (use if, unless, each or with)",
                    source,
                    tag.start,
                )
            if len(tokens) != 2:
                problem = f"{{{{#{tokens[0]}}}}} takes exactly one variable"
                raise TemplateError(problem, source, tag.start)
            block = Block(tokens[0], path_of(tag, tokens[1]), tag.start, tag.strip)
            if block.helper == "with" and block.path == PathExpr(block.path.text):
                # handlebars.js enters no new context for it, so `../` inside would mislead.
                raise TemplateError(
                    "{{#with this}} changes nothing; leave it out", source, tag.start
                )
            if len(stack) == MAX_NESTED_BLOCKS:
                problem = f"blocks nested more than {MAX_NESTED_BLOCKS} deep"
                raise TemplateError(problem, source, tag.start)
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
                problem = f"{{{{/{name[:EXCERPT]}}}}} closes no block"
                raise TemplateError(problem, source, tag.start)
            block, body, scope = stack.pop()
            if name != block.helper:
                raise TemplateError(
                    f"{{{{/{name[:EXCERPT]}}}}} closes {{{{#{block.helper}}}}}"
                    f" opened at line {source.count(chr(10), 0, block.offset) + 1}",
                    source,
                    tag.start,
                )
            block.close_strip = tag.strip
    if stack:
        block = stack[-1][0]
        raise TemplateError(f"{{{{#{block.helper}}}}} is never closed", source, block.offset)
    return root
