"""Looking a path up in the data, the one way both rendering and `missing` do it.

handlebars.js reads own properties only (pybars would find `dict.keys` for `{{user.keys}}`),
arrays by index and `length`, and an absent name is simply absent: here `None`, like JSON's
null, which renders as nothing and which `missing` reports just as it reports an absent name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sesd.templating.syntax import PathExpr

# @index, @key, @first and @last of an `{{#each}}` item, in that order.
ItemData = tuple[int, "int | str", bool, bool]
_DATA_FIELDS = ("index", "key", "first", "last")
Getter = Callable[["Frame", "Frame"], Any]


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


def getter(path: PathExpr) -> Getter:
    """A function from (frame, root frame) to the value at `path`, None when there is none.

    Paths are fixed when the template is parsed, so each gets the function that does only its
    own work: the common `{{name}}` is one dict lookup.
    """
    parts = path.parts
    if path.data:
        field = _DATA_FIELDS.index(path.data)

        def item_data(frame: Frame, root: Frame) -> Any:
            # The parser allows @data only inside {{#each}}, where every frame has it.
            return frame.item[field]  # type: ignore[index]

        return item_data
    if not path.root and not path.depth:
        if not parts:
            return lambda frame, root: frame.value
        if len(parts) == 1:
            (only,) = parts

            def one_name(frame: Frame, root: Frame) -> Any:
                value = frame.value
                if type(value) is dict:
                    return value.get(only)
                return step(value, only)

            return one_name

    def walk(frame: Frame, root: Frame) -> Any:
        value = start(path, frame, root).value
        for part in parts:
            value = step(value, part)
            if value is None:
                break
        return value

    return walk


def label(parts: tuple[str | int, ...]) -> str:
    """A path as a user reads it: `items[2].title`, from names and item keys."""
    text = ""
    for part in parts:
        text += f"[{part}]" if type(part) is int else (f".{part}" if text else str(part))
    return text or "this"
