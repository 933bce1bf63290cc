"""Looking a path up in the data, the one way both rendering and `missing` do it.

handlebars.js reads own properties only (pybars would find `dict.keys` for `{{user.keys}}`),
arrays by index and `length`, and an absent name is simply absent: here `None`, like JSON's
null, which renders as nothing and which `missing` reports just as it reports an absent name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sesd.templating.syntax import PathExpr

# @index, @key, @first and @last of an `{{#each}}` item, in that order.
ItemData = tuple[int, "int | str", bool, bool]
_DATA_FIELDS = {"index": 0, "key": 1, "first": 2, "last": 3}


@dataclass(slots=True)
class Frame:
    """A data context: the top-level data, an `{{#each}}` item or the value of a `{{#with}}`.

    `parent` is the frame the block was entered from (what `../` reaches). `where` names the
    value from the top-level data, for `missing` to say what is missing; rendering, which never
    says, leaves it empty. `item` is the @data of the innermost `{{#each}}`: a `{{#with}}`
    inside an item keeps it, as in handlebars.js.
    """

    value: Any
    parent: Frame | None = None
    where: tuple[str | int, ...] = ()
    item: ItemData | None = None


def step(value: Any, part: str) -> Any:
    """`value.part`: an own key of an object, an index or `length` of an array, else None."""
    if isinstance(value, Mapping):
        return value.get(part)
    if isinstance(value, list | tuple):
        if part == "length":
            return len(value)
        if part.isdigit() and part.isascii() and int(part) < len(value):
            return value[int(part)]
    return None


def start(path: PathExpr, frame: Frame, root: Frame) -> Frame:
    """The frame `path` is looked up from: the root for `@root`, else `../` parents up."""
    if path.root:
        return root
    for _ in range(path.depth):
        frame = frame.parent  # type: ignore[assignment]  # the parser refused ../ above the top
    return frame


def resolve(path: PathExpr, frame: Frame, root: Frame) -> Any:
    """The value at `path` from `frame` (`root` is the top-level frame), None when absent."""
    if path.depth:
        frame = start(path, frame, root)
    elif path.root:
        frame = root
    elif path.data:
        # The parser allows @data only inside {{#each}}, where every frame has it.
        return frame.item[_DATA_FIELDS[path.data]]  # type: ignore[index]
    value = frame.value
    for part in path.parts:
        # Most data is JSON objects: a dict lookup first, the general step for the rest.
        value = value.get(part) if type(value) is dict else step(value, part)
        if value is None:
            return None
    return value


def label(parts: tuple[str | int, ...]) -> str:
    """A path as a user reads it: `items[2].title`, from names and item keys."""
    text = ""
    for part in parts:
        text += f"[{part}]" if type(part) is int else (f".{part}" if text else str(part))
    return text or "this"
