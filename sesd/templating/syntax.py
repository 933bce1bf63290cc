"""The syntax tree of a template, and the error that says where a template went wrong."""

from __future__ import annotations

from dataclasses import dataclass, field

from sesd.errors import SesdError

EXCERPT = 40  # characters of the source quoted in an error, and of a name echoed back


class TemplateError(SesdError, ValueError):
    """A template outside the supported subset, or data that does not fit it."""

    def __init__(self, problem: str, source: str = "", offset: int | None = None) -> None:
        self.problem = problem
        self.line = self.column = 0
        where = ""
        if offset is not None:
            self.line = source.count("\n", 0, offset) + 1
            self.column = offset - (source.rfind("\n", 0, offset) + 1) + 1
            excerpt = source[offset : offset + EXCERPT]
            if len(source) > offset + EXCERPT:
                excerpt += "…"
            where = f" at line {self.line}, column {self.column}: {excerpt!r}"
        super().__init__(problem + where)


@dataclass(frozen=True, slots=True)
class PathExpr:
    """A variable reference: `depth` parents up (`../`), from the root (`@root`), or `@data`.

    No parts and no `data` is `this`: the context itself.
    """

    text: str
    parts: tuple[str, ...] = ()
    depth: int = 0
    root: bool = False
    data: str = ""  # "index", "key", "first" or "last"


@dataclass(slots=True)
class Content:
    """Text between tags: `original` as written, `value` once whitespace control is done."""

    original: str
    value: str
    left_stripped: bool = False
    right_stripped: bool = False


@dataclass(slots=True)
class Output:
    """`{{path}}` (HTML-escaped) or `{{{path}}}` / `{{&path}}` (raw)."""

    path: PathExpr
    raw: bool
    strip: tuple[bool, bool]  # `~` on the left and on the right


@dataclass(slots=True)
class Comment:
    """Renders nothing, but takes part in whitespace control until `flatten` drops it."""

    strip: tuple[bool, bool]


@dataclass(slots=True)
class Block:
    """`{{#helper path}}program{{else}}inverse{{/helper}}`, helper one of if/unless/each/with."""

    helper: str
    path: PathExpr
    offset: int
    open_strip: tuple[bool, bool]
    program: list[Node] = field(default_factory=list)
    inverse: list[Node] | None = None
    inverse_strip: tuple[bool, bool] = (False, False)
    close_strip: tuple[bool, bool] = (False, False)


Node = Content | Output | Comment | Block
