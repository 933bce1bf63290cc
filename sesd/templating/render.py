"""Rendering: an interpreter that walks the syntax tree with the data, as handlebars.js would.

Nothing is generated or compiled, and nothing is built per template: the first render costs
what every later one does, time is linear in the template and in the data iterated, and the
tree is only read, so one template renders in any number of threads at once. (A version that
first turned the tree into nested closures rendered no faster, and cost time and garbage
collection at first use.)

The semantics are those of handlebars.js 4 for the supported subset:
  - `if`/`unless` use JavaScript truthiness, except that an empty array is false (`{}` is true);
  - `with` of an empty value (`values.empty`: 0 is not empty) renders its `{{else}}`; otherwise
    the value becomes the context, `../` reaches the enclosing one, and the @data of an
    enclosing `{{#each}}` item carries through;
  - `each` iterates arrays and objects (Object.keys order) with @index, @key, @first, @last;
    anything else, and an empty array or object, renders its `{{else}}`;
  - outputs stringify like JavaScript and escape like handlebars.js; absent values and null
    render as nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sesd.templating.lookup import Frame, resolve
from sesd.templating.syntax import Block, Content, Node, Output
from sesd.templating.values import each_items, empty, escape, js_string, truthy


def render_tree(nodes: Sequence[Node], data: Mapping[str, Any]) -> str:
    """The text of `nodes` (a parsed, whitespace-controlled, flattened tree) for `data`."""
    root = Frame(data)
    out: list[str] = []
    _run(nodes, root, root, out)
    return "".join(out)


def _run(nodes: Sequence[Node], frame: Frame, root: Frame, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, Content):
            out.append(node.value)
        elif isinstance(node, Output):
            value = resolve(node.path, frame, root)
            if type(value) is not str:
                value = js_string(value)
            out.append(value if node.raw else escape(value))
        elif isinstance(node, Block):
            _block(node, frame, root, out)
        # Comments were dropped by whitespace.flatten.


def _block(block: Block, frame: Frame, root: Frame, out: list[str]) -> None:
    value = resolve(block.path, frame, root)
    inverse = block.inverse or ()
    helper = block.helper
    if helper == "if":
        _run(block.program if truthy(value) else inverse, frame, root, out)
    elif helper == "unless":
        _run(inverse if truthy(value) else block.program, frame, root, out)
    elif helper == "with":
        if empty(value):
            _run(inverse, frame, root, out)
        else:
            _run(block.program, Frame(value, frame, (), frame.item), root, out)
    else:
        items = each_items(value)
        if not items:
            _run(inverse, frame, root, out)
        last = len(items) - 1
        for index, (key, item) in enumerate(items):
            data = (index, key, index == 0, index == last)
            _run(block.program, Frame(item, frame, (), data), root, out)
