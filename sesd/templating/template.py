"""The public face: parse a source into a Template, check a recipient's data, render it."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from sesd.templating.lexer import Tag, tags
from sesd.templating.missing import first_missing
from sesd.templating.parser import parse_tree
from sesd.templating.render import render_tree
from sesd.templating.syntax import Node
from sesd.templating.whitespace import control_whitespace, flatten


class Template:
    """A parsed template, checked and rendered per recipient by walking its syntax tree.

    The tree is not changed after `parse`, and checking and rendering only read it, so one
    Template serves any number of threads at once (the API checks in worker threads while the
    sender renders on its event loop).
    """

    __slots__ = ("_nodes", "source")

    def __init__(self, source: str, nodes: list[Node]) -> None:
        self.source = source
        self._nodes = nodes

    def missing(self, data: Mapping[str, Any]) -> str | None:
        """The first variable `render(data)` would need and not find (`user.name`,
        `items[2].title`), following the branches and items rendering would take; else None.

        An `{{#if}}`/`{{#unless}}` condition may be absent (it is false); an output, or the
        value of an `{{#each}}`/`{{#with}}`, that is absent or null is missing: SES fails the
        message for it rather than rendering nothing.
        """
        return first_missing(self._nodes, data)

    def render(self, data: Mapping[str, Any]) -> str:
        """The text SES would produce from `data` (absent values render as nothing)."""
        return render_tree(self._nodes, data)


# A bulk send checks and renders one template for many recipients, and messages of a campaign
# share theirs: each distinct source is parsed once. lru_cache is safe across threads; two
# threads parsing the same new source at once may both parse it, and either result is right.
@functools.lru_cache(maxsize=128)
def parse(source: str) -> Template:
    """Parse `source` as a Handlebars template of the supported subset.

    Raises TemplateError naming the problem, its line and column and an excerpt. Templates
    are cached by source, so parsing the same text again is free.
    """
    nodes = parse_tree(source)
    control_whitespace(nodes, True)
    return Template(source, flatten(nodes))


def is_template(text: str) -> bool:
    """Whether SES would treat `text` as more than plain text: any `{{` starts a tag."""
    return "{{" in text


def raw_outputs(source: str) -> str:
    """`source` with every HTML-escaped output made raw (`{{name}}` -> `{{{name}}}`).

    For a text/plain part rendered by SES: escaping there would show `&amp;` to the reader.
    Blocks, comments and outputs that are already raw are left as they are, byte for byte.
    """
    out: list[str] = []
    i = 0
    for item in tags(source):
        if isinstance(item, Tag) and item.kind == "output":
            strip_open, strip_close = item.strip
            out.append(source[i : item.start])
            out.append(f"{{{{{'~' * strip_open}{{{item.inner}}}{'~' * strip_close}}}}}")
            i = item.end
    out.append(source[i:])
    return "".join(out)
