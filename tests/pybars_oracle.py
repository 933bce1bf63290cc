"""A second renderer, for tests: pybars3 fed a canonical source written from the syntax tree.

This is how sesd rendered before its interpreter (sesd/templating/render.py), kept as an oracle
for a differential test: an independent rendering engine that shares only the parser, the
whitespace pass, the value rules and the path lookup. The library never sees a construct it
handles differently from handlebars.js: whitespace and comments were settled by the tree, its
own whitespace pass is off, blocks and outputs go through helpers with handlebars.js semantics,
and paths through the same lookup `missing` uses.

Compiling costs about a millisecond a tag; `render_with_pybars` compiles on every call.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

import pybars

from sesd.templating.lookup import step
from sesd.templating.parser import parse_tree
from sesd.templating.syntax import Comment, Content, Node, Output, PathExpr
from sesd.templating.values import empty, js_keys, js_string, truthy
from sesd.templating.whitespace import control_whitespace, flatten

# Escaping as sesd did it before `values.escape`, so that the two are compared too.
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


def _emit_path(path: PathExpr) -> str:
    if path.data:
        return "@" + path.data
    segments = ".".join(f"[{part}]" for part in path.parts)
    if path.root:
        return "@root." + segments if segments else "@root"
    return "../" * path.depth + (segments or "this")


def canonical_source(nodes: list[Node]) -> str:
    """The template again, in the only forms handed to pybars: every `{` that could join a
    following `{{` goes through a helper, outputs go through our stringify-and-escape helpers,
    and data is always looked up as a path, never as a helper name."""
    out: list[str] = []
    for node in nodes:
        if isinstance(node, Content):
            text = _JOINING_BRACE.sub(_LBRACE, node.value)
            lead = _LEADING_SPACE.match(text).end()  # type: ignore[union-attr]
            if "\r" in text[:lead]:
                text = text[:lead].replace("\r", _CR) + text[lead:]
            out.append(text)
        elif isinstance(node, Comment):
            continue
        elif isinstance(node, Output):
            helper = "r" if node.raw else "e"
            out.append(f"{{{{{{{helper} {_emit_path(node.path)}}}}}}}")
        else:
            opening = f"{{{{#{node.helper} {_emit_path(node.path)}}}}}"
            out.append(opening + canonical_source(node.program))
            if node.inverse is not None:
                out.append("{{else}}" + canonical_source(node.inverse))
            out.append(f"{{{{/{node.helper}}}}}")
    return "".join(out)


def _unwrap(value: Any) -> Any:
    if isinstance(value, pybars.Scope):
        return value.context
    return value


def _if(this: Any, options: dict[str, Any], value: Any) -> Any:
    branch = "fn" if truthy(_unwrap(value)) else "inverse"
    return options[branch](this)


def _unless(this: Any, options: dict[str, Any], value: Any) -> Any:
    branch = "inverse" if truthy(_unwrap(value)) else "fn"
    return options[branch](this)


def _with(this: Any, options: dict[str, Any], value: Any) -> Any:
    value = _unwrap(value)
    if empty(value):
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
        items = [(key, value[key]) for key in js_keys(value)]
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


HELPERS: dict[str, Callable[..., Any]] = {
    "if": _if,
    "unless": _unless,
    "with": _with,
    "each": _each,
    "e": lambda this, value: js_string(_unwrap(value)).translate(_ESCAPES),
    "r": lambda this, value: js_string(_unwrap(value)),
    "lb": lambda this: "{",
    "cr": lambda this: "\r",
}


class _Compiler(pybars.Compiler):
    """pybars, minus its whitespace pass: whitespace was settled by handlebars.js's rules."""

    def whitespace_control(self, source: str) -> str:
        return source


def _resolve(context: Any, *segments: str) -> Any:
    """PathExpr lookup for the compiled template, in place of pybars' own.

    pybars falls back to Python attributes (`{{user.keys}}` finds dict.keys) and raises on a name
    looked up in a list; handlebars.js reads own properties only, and absent is just absent.
    Lookups follow the same `step` as `missing`, so the two can never disagree.
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
        value = step(value, segment)
        if value is None:
            return None
    return value


# pybars keeps its code builder on the class, so two compiles at once would mix their output.
_COMPILING = threading.Lock()


def compile_canonical(source: str) -> Callable[..., Any]:
    with _COMPILING:
        render = _Compiler().compile(source)
    # The compiled module calls `resolve` by its global name; this template's module only.
    if render.__globals__.get("resolve") is not pybars._compiler.resolve:
        raise RuntimeError("pybars internals changed: compiled templates no longer call resolve")
    render.__globals__["resolve"] = _resolve
    return render


def render_with_pybars(source: str, data: Mapping[str, Any]) -> str:
    """`source` parsed as sesd parses it, then rendered by pybars3 from its canonical source."""
    nodes = parse_tree(source)
    control_whitespace(nodes, True)
    return str(compile_canonical(canonical_source(flatten(nodes)))(data, helpers=HELPERS))
