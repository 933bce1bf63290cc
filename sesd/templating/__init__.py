"""Handlebars templates, checked strictly and rendered the way SES renders them.

SES renders the subject, HTML and text of a templated send with Handlebars. A template that does
not parse, or data that lacks a variable, makes SES drop the message with a Rendering Failure
that arrives minutes later by SNS. So every template is parsed here first, by a parser of the
supported subset that refuses what handlebars.js would refuse (and what the rendering library
would quietly accept), and `Template.missing` names the first variable a recipient's data lacks
before anything is stored.

Rendering is sesd's own: an interpreter over the syntax tree (`render`), with handlebars.js
semantics where libraries differ from it:
  - comments, `~` whitespace control and standalone block lines are resolved as handlebars.js
    resolves them (`whitespace`);
  - `{}` is truthy, `{{else}}` works in `unless`, `../` inside `with` reaches the outer context,
    `each` over a string renders `{{else}}`, `@key` of an array item is its index;
  - outputs stringify like JavaScript (`1.0` -> `1`, `[1,2]` -> `1,2`) and escape like
    handlebars.js (`& < > " ' \\` =`);
  - path lookup reads own keys only (`{{user.keys}}` is not dict.keys), list indexes and
    `length`, and is the same lookup `Template.missing` uses.
Not reproduced: handlebars.js adds two raw outputs that meet at the start of a block when both
are numbers or booleans (`{{{a}}}{{{b}}}` of 1 and 2 gives `3`), an artefact of its compiled
JavaScript; here they print side by side (`12`).

Not supported, and refused with a TemplateError: partials and inline partials, helpers other
than the four blocks (no `lookup`, `log`, sub-expressions or hash arguments), `{{else if}}`,
`{{^}}` inverse sections, raw blocks, block parameters, escaped mustaches (`\\{{`), and quotes
or backslashes inside `[literal segments]` (refused since pybars, still the test oracle, pastes
names into the Python it generates).

The pipeline, one module each: `lexer` (text and tags) -> `parser` (the `syntax` tree) ->
`whitespace` (handlebars.js's whitespace control) -> `template` (`Template`: `missing` checks
data and `render` renders it, both with `lookup` and `values`).
"""

from sesd.templating.limits import (
    MAX_BULK_DESTINATIONS,
    MAX_INLINE_TEMPLATE_BYTES,
    MAX_STORED_TEMPLATE_BYTES,
    MAX_TEMPLATE_DATA_CHARS,
)
from sesd.templating.syntax import TemplateError
from sesd.templating.template import Template, is_template, parse, raw_outputs

__all__ = [
    "MAX_BULK_DESTINATIONS",
    "MAX_INLINE_TEMPLATE_BYTES",
    "MAX_STORED_TEMPLATE_BYTES",
    "MAX_TEMPLATE_DATA_CHARS",
    "Template",
    "TemplateError",
    "is_template",
    "parse",
    "raw_outputs",
]
