"""Looking a path up in the data, the one way both rendering and `missing` do it.

handlebars.js reads own properties only (pybars would find `dict.keys` for `{{user.keys}}`),
arrays by index and `length`, and an absent name is simply absent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sesd.templating.syntax import PathExpr

ABSENT = object()
# A context frame: (value, where it came from as path parts, the frame it was entered from).
Frame = tuple[Any, tuple[str | int, ...], Any]


def label(parts: tuple[str | int, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if type(part) is int else (f".{part}" if text else str(part))
    return text or "this"


def step(value: Any, part: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(part, ABSENT)
    if isinstance(value, list | tuple):
        if part == "length":
            return len(value)
        if part.isdigit() and part.isascii() and int(part) < len(value):
            return value[int(part)]
    return ABSENT


def resolver(path: PathExpr) -> Callable[[Frame, Frame], tuple[Any, Frame]]:
    """A function from (frame, root frame) to (value or ABSENT, the frame the path starts at)."""
    parts, depth = path.parts, path.depth
    if path.data:
        return lambda frame, root: (True, frame)
    if path.root:

        def start(frame: Frame, root: Frame) -> Frame:
            return root
    elif depth:

        def start(frame: Frame, root: Frame) -> Frame:
            for _ in range(depth):
                frame = frame[2]
            return frame
    else:

        def start(frame: Frame, root: Frame) -> Frame:
            return frame

    if len(parts) == 1 and not path.root and not depth:
        (only,) = parts

        def resolve_one(frame: Frame, root: Frame) -> tuple[Any, Frame]:
            value = frame[0]
            if type(value) is dict:
                return value.get(only, ABSENT), frame
            return step(value, only), frame

        return resolve_one

    def resolve(frame: Frame, root: Frame) -> tuple[Any, Frame]:
        frame = start(frame, root)
        value = frame[0]
        for part in parts:
            value = step(value, part)
            if value is ABSENT:
                break
        return value, frame

    return resolve
