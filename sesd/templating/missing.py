"""What a recipient's data lacks, found without rendering, following the branches and items
that rendering would take."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sesd.templating.lookup import ABSENT, Frame, label, resolver
from sesd.templating.syntax import Comment, Content, Node, Output
from sesd.templating.values import empty, js_keys, truthy

Check = Callable[[Frame, Frame], "str | None"]


def checker(nodes: list[Node]) -> Check | None:
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


def _node_checker(node: Node) -> Check | None:
    if isinstance(node, Content | Comment) or (isinstance(node, Output) and node.path.data):
        return None
    path = node.path
    resolve = resolver(path)

    def missing_here(frame: Frame) -> str:
        return label(frame[1] + path.parts)

    if isinstance(node, Output):

        def check_output(frame: Frame, root: Frame) -> str | None:
            value, start = resolve(frame, root)
            return missing_here(start) if value is ABSENT or value is None else None

        return check_output
    body = checker(node.program)
    inverse = checker(node.inverse or [])
    if node.helper in ("if", "unless"):
        unless = node.helper == "unless"

        def check_if(frame: Frame, root: Frame) -> str | None:
            value, _ = resolve(frame, root)
            taken = (value is not ABSENT and truthy(value)) != unless
            branch = body if taken else inverse
            return branch(frame, root) if branch is not None else None

        return check_if
    if node.helper == "with":

        def check_with(frame: Frame, root: Frame) -> str | None:
            value, start = resolve(frame, root)
            if value is ABSENT or value is None:
                return missing_here(start)
            if empty(value):
                return inverse(frame, root) if inverse is not None else None
            if body is None:
                return None
            return body((value, start[1] + path.parts, frame), root)

        return check_with

    def check_each(frame: Frame, root: Frame) -> str | None:
        value, start = resolve(frame, root)
        if value is ABSENT or value is None:
            return missing_here(start)
        if isinstance(value, list | tuple):
            items: list[tuple[str | int, Any]] = list(enumerate(value))
        elif isinstance(value, Mapping):
            items = [(key, value[key]) for key in js_keys(value)]
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
