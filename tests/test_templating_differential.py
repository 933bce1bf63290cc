"""The interpreter against other renderers of the same templates.

- pybars3, through the canonical source sesd rendered with before (tests/pybars_oracle.py):
  a different engine (compiled Python, its own scopes and block calls) behind the same parser.
- handlebars.js itself, when SESD_HANDLEBARS_JS names a directory where `npm install
  handlebars@4` was run (as for tests/test_templating.py).
And the lexer's one-match path for common tags against its general reader.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sesd.templating import TemplateError, parse
from sesd.templating.lexer import Tag, read_tag, tags
from sesd.templating.syntax import Content
from tests.pybars_oracle import render_with_pybars
from tests.test_templating import HANDLEBARS_JS, ORACLE

NAMES = ["a", "b", "it"]
TEXT = st.sampled_from(
    ["", " ", "\n", "  \n", "\r\n", "\t", "x", "<&=>", "{", "}", " \n  ", "'\"\\", "é €"]
)


@st.composite
def templates(draw: st.DrawFn, depth: int = 0, frames: int = 0, in_each: bool = False) -> str:
    """Every construct of the subset: paths of each kind, the four blocks with and without
    `{{else}}`, `~` on any side, comments, standalone lines; `../` only where there is a
    parent and @data only inside `{{#each}}`, so that most drawn templates parse."""

    def path() -> str:
        choices = ["this", *NAMES, "a.b", "it.length", "it.[0]", "b.[x y]", "this.a", "./b"]
        choices += ["@root", "@root.a", "[x y]", "it.[1].a"]
        choices += ["../a", "../it"] if frames else []
        choices += ["../../b"] if frames > 1 else []
        choices += ["@index", "@key", "@first", "@last"] if in_each else []
        return draw(st.sampled_from(choices))

    def tilde() -> str:
        return draw(st.sampled_from(["", "", "~"]))

    out = []
    for _ in range(draw(st.integers(1, 3))):
        out.append(draw(TEXT))
        kinds = ["out", "raw", "amp", "comment", "block"] if depth < 3 else ["out", "raw"]
        kind = draw(st.sampled_from(kinds))
        if kind == "out":
            out.append(f"{{{{{tilde()}{path()}{tilde()}}}}}")
        elif kind == "raw":
            out.append(f"{{{{{tilde()}{{{path()}}}{tilde()}}}}}")
        elif kind == "amp":
            out.append(f"{{{{{tilde()}&{path()}{tilde()}}}}}")
        elif kind == "comment":
            out.append(draw(st.sampled_from(["{{! c }}", "{{!-- }} --}}", "{{~! c ~}}", "{{!}}"])))
        else:
            helper = draw(st.sampled_from(["if", "unless", "each", "with"]))
            target = path()
            if helper == "with" and target == "this":
                target = "a"
            inner = frames + (helper in ("each", "with"))
            body = draw(templates(depth + 1, inner, in_each or helper == "each"))
            block = f"{{{{{tilde()}#{helper} {target}{tilde()}}}}}{draw(TEXT)}{body}"
            if draw(st.booleans()):
                inverse = draw(templates(depth + 1, frames, in_each))
                block += f"{draw(TEXT)}{{{{{tilde()}else{tilde()}}}}}{inverse}"
            out.append(block + f"{draw(TEXT)}{{{{{tilde()}/{helper}{tilde()}}}}}")
    return "".join(out)


SCALARS = st.sampled_from(
    ["", "v", "<&'\"`=>", "a\r\nb", "0", 0, 1, -1.5, 10.0, 1e21, 1e-7, True, False, None]
)
KEYS = st.sampled_from([*NAMES, "x y", "0", "1", "10", "length"])
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12,
)
DATA = st.dictionaries(KEYS, VALUES, max_size=4)


@given(templates(), DATA)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example("{{#each it}}{{#with a}}{{@index}}{{../b}}{{/with}}{{/each}}", {"it": [{"a": 1, "b": 2}]})
@example("{{#each it}}{{@key}}:{{this}},{{/each}}", {"it": {"b": 1, "10": 2, "1": 3}})
@example("\r\n{{#if a}}\r\n{x}\r\n{{/if}}\r\n", {"a": True})
def test_renders_as_the_pybars_oracle(source: str, data: dict[str, Any]) -> None:
    try:
        template = parse(source)
    except TemplateError:
        return  # a `{` of the text met a tag, as handlebars.js would refuse too
    assert template.render(data) == render_with_pybars(source, data)


@pytest.mark.skipif(not HANDLEBARS_JS, reason="set SESD_HANDLEBARS_JS to a dir with handlebars@4")
def test_renders_as_handlebars_js() -> None:
    cases: list[tuple[str, dict[str, Any], str]] = []
    # Strings only: handlebars.js adds adjacent raw numbers (see sesd/templating/__init__.py).
    strings = st.recursive(
        st.sampled_from(["", "v", "<&'\"`=>", "a\r\nb"]),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
        max_leaves=12,
    )

    # Every name present, so that more templates find what they need.
    data = st.fixed_dictionaries(
        {name: strings for name in NAMES}, optional={"x y": strings, "0": strings}
    )

    @given(templates(), data)
    @settings(max_examples=3000, suppress_health_check=list(HealthCheck), database=None)
    def collect(source: str, data: dict[str, Any]) -> None:
        try:
            template = parse(source)
        except TemplateError:
            return
        # Only data sesd accepts: it refuses `it.length` of a string, which handlebars.js reads.
        if template.missing(data) is None:
            cases.append((source, data, template.render(data)))

    collect()
    node = subprocess.run(
        ["node", "-e", ORACLE],
        input=json.dumps([[source, data] for source, data, _ in cases]),
        capture_output=True,
        text=True,
        cwd=Path(HANDLEBARS_JS),
        check=True,
    )
    theirs = json.loads(node.stdout)
    differ = [(s, d, mine, t) for (s, d, mine), t in zip(cases, theirs, strict=True) if mine != t]
    assert not differ[:3], f"{len(differ)} of {len(cases)} differ"
    assert len(cases) > 500


def tags_by_read_tag(source: str) -> list[Content | Tag]:
    """What `tags` yields when every tag goes through the general reader."""
    out: list[Content | Tag] = []
    i = 0
    while (j := source.find("{{", i)) >= 0:
        if j > 0 and source[j - 1] == "\\":
            raise TemplateError("escaped mustaches (\\{{) are not supported", source, j - 1)
        if j > i:
            out.append(Content(source[i:j], source[i:j]))
        out.append(tag := read_tag(source, j))
        i = tag.end
    if i < len(source):
        out.append(Content(source[i:], source[i:]))
    return out


TAG_PIECES = st.sampled_from(
    [*"{}~#/&!>^*[]. \nxa", "{{", "}}", "}}}", "~}}", "{{~", "else", " else ", "if x", "-- "]
)


@given(st.lists(TAG_PIECES, max_size=30).map("".join))
@settings(max_examples=1500, deadline=None)
@example("{{~}}}")
@example("{{#}}}")
@example("{{x~}}}")
@example("{{~else~}}")
def test_common_tags_lex_as_the_general_reader_reads_them(source: str) -> None:
    try:
        expected: list[Content | Tag] | str = tags_by_read_tag(source)
    except TemplateError as error:
        expected = str(error)
    try:
        found: list[Content | Tag] | str = list(tags(source))
    except TemplateError as error:
        found = str(error)
    assert found == expected
