"""What a recipient's data lacks, found without rendering, following the branches and items
that rendering would take."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sesd.templating.lookup import Frame, getter, label, start
from sesd.templating.syntax import Comment, Content, Node, Output
from sesd.templating.values import each_items, empty, truthy

# A whole template's check: from a recipient's data to the first missing name, else None.
Check = Callable[[Mapping[str, Any]], "str | None"]
# A check of part of a template, in a frame: None when the part cannot miss anything.
_Check = Callable[[Frame, Frame], "str | None"]


def checker(nodes: list[Node]) -> Check:
    """The check of a template's `nodes`, as nested closures like `render.renderer`'s."""
    check = _checker(nodes)
    if check is None:
        return lambda data: None

    def missing(data: Mapping[str, Any]) -> str | None:
        root = Frame(data)
        return check(root, root)

    return missing


def _checker(nodes: list[Node]) -> _Check | None:
    checks = [check for node in nodes if (check := _node_checker(node)) is not None]
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]

    def check_all(frame: Frame, root: Frame) -> str | None:
        for check in checks:
            found = check(frame, root)
            if found is not None:
                return found
        return None

    return check_all


def _node_checker(node: Node) -> _Check | None:
    if isinstance(node, Content | Comment) or (isinstance(node, Output) and node.path.data):
        return None
    path = node.path
    get = getter(path)

    def missing_here(frame: Frame, root: Frame) -> str:
        return label(start(path, frame, root).where + path.parts)

    if isinstance(node, Output):

        def check_output(frame: Frame, root: Frame) -> str | None:
            return missing_here(frame, root) if get(frame, root) is None else None

        return check_output
    body = _checker(node.program)
    inverse = _checker(node.inverse or [])
    if node.helper in ("if", "unless"):
        unless = node.helper == "unless"

        def check_if(frame: Frame, root: Frame) -> str | None:
            taken = truthy(get(frame, root)) != unless
            branch = body if taken else inverse
            return branch(frame, root) if branch is not None else None

        return check_if
    if node.helper == "with":

        def check_with(frame: Frame, root: Frame) -> str | None:
            value = get(frame, root)
            if value is None:
                return missing_here(frame, root)
            if empty(value):
                return inverse(frame, root) if inverse is not None else None
            if body is None:
                return None
            where = start(path, frame, root).where + path.parts
            return body(Frame(value, frame, where, frame.item), root)

        return check_with

    def check_each(frame: Frame, root: Frame) -> str | None:
        value = get(frame, root)
        if value is None:
            return missing_here(frame, root)
        items = each_items(value)
        if not items:
            return inverse(frame, root) if inverse is not None else None
        if body is None:
            return None
        where = start(path, frame, root).where + path.parts
        last = len(items) - 1
        for index, (key, item) in enumerate(items):
            data = (index, key, index == 0, index == last)
            found = body(Frame(item, frame, (*where, key), data), root)
            if found is not None:
                return found
        return None

    return check_each
