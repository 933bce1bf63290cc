"""What a recipient's data lacks, found without rendering: a walk of the syntax tree that
takes the branches and items rendering would take, with the same lookup."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sesd.templating.lookup import Frame, label, resolve, start
from sesd.templating.syntax import Block, Node, Output, PathExpr
from sesd.templating.values import each_items, empty, truthy


def first_missing(nodes: Sequence[Node], data: Mapping[str, Any]) -> str | None:
    """The first variable rendering `nodes` with `data` would need and not find, else None.

    An `{{#if}}`/`{{#unless}}` condition may be absent (it is false); an output, or the value
    of an `{{#each}}`/`{{#with}}`, that is absent or null is missing.
    """
    root = Frame(data)
    return _walk(nodes, root, root)


def _walk(nodes: Sequence[Node], frame: Frame, root: Frame) -> str | None:
    for node in nodes:
        found = None
        if isinstance(node, Output):
            if not node.path.data and resolve(node.path, frame, root) is None:
                found = _name(node.path, frame, root)
        elif isinstance(node, Block):
            found = _block(node, frame, root)
        if found is not None:
            return found
    return None


def _block(block: Block, frame: Frame, root: Frame) -> str | None:
    path, helper = block.path, block.helper
    value = resolve(path, frame, root)
    inverse = block.inverse or ()
    if helper in ("if", "unless"):
        taken = truthy(value) != (helper == "unless")
        return _walk(block.program if taken else inverse, frame, root)
    if value is None:
        return _name(path, frame, root)
    if helper == "with":
        if empty(value):
            return _walk(inverse, frame, root)
        where = start(path, frame, root).where + path.parts
        return _walk(block.program, Frame(value, frame, where, frame.item), root)
    items = each_items(value)
    if not items:
        return _walk(inverse, frame, root)
    where = start(path, frame, root).where + path.parts
    last = len(items) - 1
    for index, (key, item) in enumerate(items):
        data = (index, key, index == 0, index == last)
        found = _walk(block.program, Frame(item, frame, (*where, key), data), root)
        if found is not None:
            return found
    return None


def _name(path: PathExpr, frame: Frame, root: Frame) -> str:
    return label(start(path, frame, root).where + path.parts)
