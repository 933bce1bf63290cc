"""Rendering cost: no compile step, linear in the template and in the data.

The sender renders every templated message itself, per recipient, so a burst of distinct
one-recipient templates (password resets) must not pay a per-template compile: pybars took
~1 ms a tag, seconds for a 100 KB template. Times are CPU time of this process, the best of a
few runs, so that other processes on the machine do not count; bounds leave room for a slow
machine, and each would be missed by far by a compile step or by quadratic work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sesd.templating import parse

UNITS = (
    "<p>Hello {{name}}, {{#if vip}}VIP of {{user.city}}{{else}}guest{{/if}}</p>\n",
    "<ul>{{#each items}}<li>{{@index}}: {{title}} for {{../name}}</li>{{/each}}</ul>\n",
)  # five tags each
DATA: dict[str, Any] = {
    "name": "Ann <a&b>",
    "vip": True,
    "user": {"city": "Oslo"},
    "items": [{"title": f"item {i}"} for i in range(3)],
}


def source_of(tags: int, salt: str = "") -> str:
    """A template of `tags` tags; `salt` makes it a source `parse` has not cached."""
    return salt + "".join(UNITS[i % 2] for i in range(tags // 5))


def best_cpu(work: Callable[[int], object], runs: int = 3) -> float:
    """The least CPU time `work(run)` took over `runs` runs."""
    times = []
    for run in range(runs):
        started = time.process_time()
        work(run)
        times.append(time.process_time() - started)
    return min(times)


def test_first_render_of_a_new_small_template_costs_no_compile() -> None:
    count = 200
    salts = iter(range(10**9))

    def burst(run: int) -> None:
        for _ in range(count):
            template = parse(source_of(5, f"<!-- {next(salts)} -->"))
            template.missing(DATA)
            template.render(DATA)

    # ~0.1 ms per template idle (parse, check and render); pybars took 7 ms to compile.
    assert best_cpu(burst) / count < 1e-3


def test_a_100_kb_template_parses_and_renders_well_under_100_ms() -> None:
    source = ""
    while len(source) < 100_000:
        source += "".join(UNITS)
    assert source.count("{{") > 6_000

    def first_use(run: int) -> None:
        template = parse(f"<!-- {run} -->" + source)
        template.render(DATA)
        template.missing(DATA)

    # ~50 ms idle, most of it parsing 6,455 tags; pybars took 11 s.
    assert best_cpu(first_use) < 0.1


def test_cost_is_linear_in_the_template() -> None:
    def first_uses(tags: int) -> float:
        return best_cpu(lambda run: parse(source_of(tags, f"<!-- {tags} {run} -->")).render(DATA))

    small, large = first_uses(300), first_uses(3_000)
    assert large / small < 20  # 10 when linear

    def warm(tags: int) -> float:
        template = parse(source_of(tags))
        return best_cpu(lambda run: [template.render(DATA) for _ in range(10)])

    assert warm(3_000) / warm(300) < 20


def test_cost_is_linear_in_the_data() -> None:
    template = parse(source_of(50))

    def render_with(items: int) -> float:
        data = DATA | {"items": [{"title": f"item {i}"} for i in range(items)]}
        return best_cpu(lambda run: template.render(data))

    assert render_with(20_000) / render_with(2_000) < 20  # 10 when linear
