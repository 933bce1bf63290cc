"""Values as handlebars.js sees them: JavaScript's stringification, truthiness and key order,
and its HTML escaping."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

# handlebars.js escapes `=` and the backtick too, which Python's html.escape leaves alone.
# `&` comes first, so that no entity written here is escaped again.
ESCAPES = (
    ("&", "&amp;"),
    ("<", "&lt;"),
    (">", "&gt;"),
    ('"', "&quot;"),
    ("'", "&#x27;"),
    ("`", "&#x60;"),
    ("=", "&#x3D;"),
)


def escape(text: str) -> str:
    """HTML-escape as handlebars.js does.

    One `in` and, if found, one `replace` per character: each is a linear scan in C, where
    `str.translate` with multi-character replacements runs about ten times slower on text
    that has many of them, and a regular expression slower still on text that has none.
    """
    for char, entity in ESCAPES:
        if char in text:
            text = text.replace(char, entity)
    return text


def js_number(value: float) -> str:
    """JavaScript's Number#toString, so `{{price}}` of 10.0 reads `10` as in handlebars.js."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    # repr gives the shortest digits that round-trip, as JavaScript does; only the layout differs.
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    k = len(text)
    n = int(exponent) + len(digits)
    minus = "-" if sign else ""
    if k <= n <= 21:
        return minus + text + "0" * (n - k)
    if 0 < n <= 21:
        return minus + text[:n] + "." + text[n:]
    if -6 < n <= 0:
        return minus + "0." + "0" * -n + text
    e = n - 1
    mantissa = text if k == 1 else text[0] + "." + text[1:]
    return f"{minus}{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


def js_string(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value
    if value is None:
        return ""
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return js_number(value)
    if isinstance(value, list | tuple):
        return ",".join("" if item is None else js_string(item) for item in value)
    if isinstance(value, Mapping):
        return "[object Object]"
    return str(value)


def truthy(value: Any) -> bool:
    """handlebars.js `if`: JavaScript truthiness, and an empty array is false ({} is true)."""
    if value is None or value is False or value == "":
        return False
    if type(value) in (int, float):
        return value == value and value != 0
    if isinstance(value, list | tuple):
        return len(value) > 0
    return True


def empty(value: Any) -> bool:
    """handlebars.js isEmpty, used by `with`: like falsy, except that 0 is not empty."""
    if type(value) in (int, float) and value == 0:
        return False
    return not truthy(value)


def _is_array_index(key: str) -> bool:
    canonical = key.isdigit() and key.isascii() and (key == "0" or key[0] != "0")
    return canonical and int(key) < 2**32 - 1


def js_keys(mapping: Mapping[str, Any]) -> list[str]:
    """Object.keys order: array-index keys ascending, then the rest in insertion order."""
    keys = list(mapping)
    indexes = [key for key in keys if _is_array_index(key)]
    if not indexes:
        return keys
    return sorted(indexes, key=int) + [key for key in keys if not _is_array_index(key)]


def each_items(value: Any) -> list[tuple[int | str, Any]]:
    """What `{{#each}}` iterates: an array's items by index, an object's in Object.keys order;
    nothing for anything else (a string renders the `{{else}}`, as in handlebars.js)."""
    if isinstance(value, list | tuple):
        return list(enumerate(value))
    if isinstance(value, Mapping):
        return [(key, value[key]) for key in js_keys(value)]
    return []
