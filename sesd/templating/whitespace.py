"""Whitespace control as handlebars.js does it: `~` strips, and block, `{{else}}` and comment
tags alone on their line take the line with them (its WhitespaceControl visitor, step for step).
"""

from __future__ import annotations

import re

from sesd.templating.syntax import Block, Comment, Content, Node

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


def _prev_is_space(body: list[Node], i: int, is_root: bool) -> bool:
    prev = body[i - 1] if i > 0 else None
    if prev is None:
        return is_root
    if isinstance(prev, Content):
        pattern = _PREV_LINE if (i > 1 or not is_root) else _PREV_LINE_ROOT
        return pattern.search(prev.original) is not None
    return False


def _next_is_space(body: list[Node], i: int, is_root: bool) -> bool:
    nxt = body[i + 1] if i + 1 < len(body) else None
    if nxt is None:
        return is_root
    if isinstance(nxt, Content):
        pattern = _NEXT_LINE if (i + 2 < len(body) or not is_root) else _NEXT_LINE_ROOT
        return pattern.search(nxt.original) is not None
    return False


def _omit_right(body: list[Node], i: int | None, multiple: bool = False) -> None:
    j = 0 if i is None else i + 1
    node = body[j] if j < len(body) else None
    if not isinstance(node, Content) or (not multiple and node.right_stripped):
        return
    before = node.value
    node.value = (_LSTRIP_ALL if multiple else _LSTRIP_LINE).sub("", before, count=1)
    node.right_stripped = node.value != before


def _omit_left(body: list[Node], i: int | None, multiple: bool = False) -> bool:
    j = len(body) - 1 if i is None else i - 1
    node = body[j] if j >= 0 else None
    if not isinstance(node, Content) or (not multiple and node.left_stripped):
        return False
    before = node.value
    node.value = (_RSTRIP_ALL if multiple else _RSTRIP_LINE).sub("", before, count=1)
    node.left_stripped = node.value != before
    return node.left_stripped


def _block_strip(block: Block) -> dict[str, bool]:
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


def control_whitespace(body: list[Node], is_root: bool) -> None:
    for i, node in enumerate(body):
        if isinstance(node, Content):
            continue
        if isinstance(node, Block):
            control_whitespace(node.program, False)
            if node.inverse is not None:
                control_whitespace(node.inverse, False)
            strip = _block_strip(node)
        else:
            strip = {"open": node.strip[0], "close": node.strip[1]}
            if isinstance(node, Comment):
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
        if isinstance(node, Block):
            if strip["open_standalone"] and prev_space:
                _omit_right(node.program, None)
                _omit_left(body, i)
            if strip["close_standalone"] and next_space:
                _omit_right(body, i)
                _omit_left(node.inverse if node.inverse is not None else node.program, None)


def flatten(body: list[Node]) -> list[Node]:
    """Drop comments and merge the text around them, once whitespace has been settled."""
    out: list[Node] = []
    for node in body:
        if isinstance(node, Comment):
            continue
        if isinstance(node, Content):
            if not node.value:
                continue
            if out and isinstance(out[-1], Content):
                out[-1] = Content(out[-1].original, out[-1].value + node.value)
                continue
        elif isinstance(node, Block):
            node.program = flatten(node.program)
            if node.inverse is not None:
                node.inverse = flatten(node.inverse)
        out.append(node)
    return out
