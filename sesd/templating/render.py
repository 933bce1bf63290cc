"""Rendering: an interpreter over the syntax tree, with handlebars.js semantics.

The tree is turned once into nested closures, one per tag, each doing only its own work (the
path lookup chosen for its path, escaped or raw), and text is kept as plain strings. Rendering
walks them with the data and appends pieces to one list: time is linear in the template and in
the data iterated, and nothing is generated or compiled, so the first render of a template costs
what every later one does. Closures hold nothing that changes: a Template renders in any number
of threads at once.

The semantics are those of handlebars.js 4 for the supported subset:
  - `if`/`unless` use JavaScript truthiness, except that an empty array is false (`{}` is true);
  - `with` of an empty value (see `values.empty`; 0 is not empty) renders its `{{else}}`;
    otherwise the value becomes the context, `../` reaches the enclosing one, and @data of an
    enclosing `{{#each}}` item carries through;
  - `each` iterates arrays and objects (Object.keys order) with @index, @key, @first, @last;
    anything else, and an empty array or object, renders its `{{else}}`;
  - outputs stringify like JavaScript and escape like handlebars.js; absent values and null
    render as nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sesd.templating.lookup import Frame, getter
from sesd.templating.syntax import Block, Comment, Content, Node, Output
from sesd.templating.values import each_items, empty, escape, js_string, truthy

# A rendering step: appends the node's text, for this frame, to the output list.
Step = Callable[[Frame, Frame, list[str]], None]
# A body is its text and steps in order; text is appended directly, without a call.
Body = tuple[str | Step, ...]


def renderer(nodes: list[Node]) -> Callable[[Mapping[str, Any]], str]:
    """A function from a recipient's data to the rendered text of `nodes`."""
    body = _body(nodes)
    if all(type(part) is str for part in body):
        text = "".join(body)  # type: ignore[arg-type]
        return lambda data: text

    def render(data: Mapping[str, Any]) -> str:
        root = Frame(data)
        out: list[str] = []
        _run(body, root, root, out)
        return "".join(out)

    return render


def _run(body: Body, frame: Frame, root: Frame, out: list[str]) -> None:
    for part in body:
        if type(part) is str:
            out.append(part)
        else:
            part(frame, root, out)  # type: ignore[operator]


def _body(nodes: list[Node] | None) -> Body:
    parts: list[str | Step] = []
    for node in nodes or ():
        if isinstance(node, Content):
            parts.append(node.value)
        elif isinstance(node, Output):
            parts.append(_output(node))
        elif isinstance(node, Block):
            parts.append(_BLOCKS[node.helper](node))
        else:
            assert isinstance(node, Comment)  # dropped by whitespace.flatten; nothing to render
    return tuple(parts)


def _output(node: Output) -> Step:
    get = getter(node.path)
    if node.raw:

        def raw(frame: Frame, root: Frame, out: list[str]) -> None:
            value = get(frame, root)
            out.append(value if type(value) is str else js_string(value))

        return raw

    def escaped(frame: Frame, root: Frame, out: list[str]) -> None:
        value = get(frame, root)
        out.append(escape(value if type(value) is str else js_string(value)))

    return escaped


def _if(node: Block) -> Step:
    get, program, inverse = getter(node.path), _body(node.program), _body(node.inverse)
    if node.helper == "unless":
        program, inverse = inverse, program

    def if_(frame: Frame, root: Frame, out: list[str]) -> None:
        _run(program if truthy(get(frame, root)) else inverse, frame, root, out)

    return if_


def _with(node: Block) -> Step:
    get, program, inverse = getter(node.path), _body(node.program), _body(node.inverse)

    def with_(frame: Frame, root: Frame, out: list[str]) -> None:
        value = get(frame, root)
        if empty(value):
            _run(inverse, frame, root, out)
        else:
            _run(program, Frame(value, frame, (), frame.item), root, out)

    return with_


def _each(node: Block) -> Step:
    get, program, inverse = getter(node.path), _body(node.program), _body(node.inverse)

    def each(frame: Frame, root: Frame, out: list[str]) -> None:
        items = each_items(get(frame, root))
        if not items:
            _run(inverse, frame, root, out)
            return
        last = len(items) - 1
        for index, (key, item) in enumerate(items):
            data = (index, key, index == 0, index == last)
            _run(program, Frame(item, frame, (), data), root, out)

    return each


_BLOCKS: dict[str, Callable[[Block], Step]] = {
    "if": _if,
    "unless": _if,
    "with": _with,
    "each": _each,
}
