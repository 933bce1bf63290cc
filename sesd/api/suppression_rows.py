"""Suppression rows in and out: the import's CSV or JSON, the export's CSV, the list's cursor.
Pure: no I/O.

An import is checked whole before anything is stored: the first bad row answers with where it
is (a CSV line, a JSON index) and why. Each row becomes (key, scope, email, reason), its key
made by addresses.suppression_key, ready for the store's set-based insert.

The export is meant to be opened in a spreadsheet, so no cell may read as a formula: one that
starts with `=`, `+`, `-`, `@`, a tab or a carriage return (or that quote mark itself) gets a
leading `'`, which spreadsheets show as text. The import drops that mark again, so an export
imports as it was.
"""

from __future__ import annotations

import base64
import binascii
import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from .. import addresses
from ..store import ALL_SCOPE
from .checks import ValidationError, quote
from .options import LIST_ID

MAX_IMPORT_ROWS = 100_000
MAX_REASON = 500
IMPORT_REASON = "imported"
COLUMNS = ("email", "scope", "reason")
# What the export adds; an import of an export ignores them.
EXPORT_ONLY = ("event", "createdAt")
EXPORT_COLUMNS = (*COLUMNS, *EXPORT_ONLY)
_FIELDS = frozenset(EXPORT_COLUMNS)
_FORMULA_START = frozenset("=+-@\t\r'")

Row = tuple[str, str, str, str]  # (key, scope, email, reason)


# -- scopes and the cursor ----------------------------------------------------------------------

def scope(value: str | None, where: str = "scope") -> str:
    """`all` (the default) or a list id, as the messages' `list` takes it."""
    if value is None or value == "":
        return ALL_SCOPE
    if value != ALL_SCOPE and (not LIST_ID.fullmatch(value) or value.lower() == ALL_SCOPE):
        # No message can have a list named "All" (options.list_id): such a row would match none.
        raise ValidationError(f"{where} must be \"all\" or a list id (1 to 64 letters, digits, "
                              f"'.', '_' or '-'), got {quote(value, 70)}")
    return value


def encode_cursor(cursor: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(cursor))).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[str, str]:
    """The (key, scope) a page's `next` names; ValidationError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError):
        value = None
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, str) for v in value)):
        raise ValidationError("cursor must be the `next` value of the previous page")
    return value[0], value[1]


# -- import -------------------------------------------------------------------------------------

def unguard(value: str) -> str:
    """A cell as it was before the export's formula guard."""
    if value[:1] == "'" and _formula_like(value[1:]):
        return value[1:]
    return value


def _formula_like(value: str) -> bool:
    """Whether a spreadsheet might read the cell as a formula (or it starts with the mark)."""
    return bool(value) and (value[0] in _FORMULA_START or value.lstrip()[:1] in _FORMULA_START)


def key(email: str) -> str | None:
    """addresses.suppression_key of a valid address, None for an invalid one. A sendable
    address takes the fast path the claim relies on too (its canonical form, lower-cased: the
    same key, see addresses.key_of_canonical); only the others are case-folded in full."""
    try:
        return addresses.key_of_canonical(addresses.canonical_address(email))
    except addresses.AddressError:
        pass
    return addresses.suppression_key(email) if addresses.valid_syntax(email) else None


def _row(email: Any, scope_value: Any, reason: Any, where: str) -> Row:
    if email is not None and not isinstance(email, str):
        raise ValidationError(f"{where}: email must be a string")
    if not email or not email.strip():
        raise ValidationError(f"{where}: email is required")
    email = unguard(email.strip())
    row_key = key(email)
    if row_key is None:
        raise ValidationError(f"{where}: {addresses.shown(email)} is not a valid e-mail address")
    for name, value in (("scope", scope_value), ("reason", reason)):
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"{where}: {name} must be a string")
    row_scope = ALL_SCOPE
    if scope_value:
        row_scope = scope_value.strip()
        if row_scope != ALL_SCOPE:
            row_scope = scope(unguard(row_scope), f"{where}: scope")
    reason_text = unguard(reason.strip())[:MAX_REASON] if reason else ""
    return row_key, row_scope, email, reason_text or IMPORT_REASON


def parse_import(body: bytes, content_type: str) -> list[Row]:
    """The rows of a `POST /v1/suppressions/import` body: a JSON array of objects when the
    Content-Type says JSON (or, with none, the body starts with `[`), else CSV."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json" or (kind not in ("text/csv", "application/csv")
                                      and body.lstrip()[:1] == b"["):
        return _parse_json(body)
    return _parse_csv(body)


def _parse_json(body: bytes) -> list[Row]:
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"invalid JSON: {exc}") from None
    if not isinstance(items, list):
        raise ValidationError('the body must be a JSON array of {"email", "scope"?, '
                              '"reason"?} objects')
    _check_count(len(items))
    rows = []
    for i, item in enumerate(items):
        where = f"[{i}]"
        if not isinstance(item, dict):
            raise ValidationError(f"{where} must be an object with an email")
        if not _FIELDS.issuperset(item):
            unknown = set(item) - _FIELDS
            raise ValidationError(f"{where}: unknown field {quote(sorted(unknown)[0], 40)}; "
                                  f"the fields are {', '.join(COLUMNS)}")
        rows.append(_row(item.get("email"), item.get("scope"), item.get("reason"), where))
    return rows


def _check_count(n: int) -> None:
    if n > MAX_IMPORT_ROWS:
        raise ValidationError(f"too many rows: at most {MAX_IMPORT_ROWS:,} per import "
                              "(split the file)")


def _parse_csv(body: bytes) -> list[Row]:
    try:
        text = body.decode("utf-8-sig")  # a spreadsheet's export may begin with a BOM
    except UnicodeDecodeError as exc:
        raise ValidationError(f"the CSV is not UTF-8 (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[Row] = []
    header: dict[str, int] | None = None
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # blank lines
            where = f"line {reader.line_num}"
            if header is None:
                header = _header(cells, where)
                email_at, scope_at, reason_at = (header["email"], header.get("scope"),
                                                 header.get("reason"))
                continue
            if len(cells) != len(header):
                raise ValidationError(f"{where} has {len(cells)} fields; the header has "
                                      f"{len(header)}")
            _check_count(len(rows) + 1)
            rows.append(_row(cells[email_at],
                             cells[scope_at] if scope_at is not None else None,
                             cells[reason_at] if reason_at is not None else None, where))
    except csv.Error as exc:
        raise ValidationError(f"line {reader.line_num}: not valid CSV ({exc})") from None
    if header is None:
        raise ValidationError("the CSV is empty: its first line must be a header such as "
                              "email,scope,reason")
    return rows


def _header(cells: Sequence[str], where: str) -> dict[str, int]:
    names = [cell.strip().lower() for cell in cells]
    known = {name.lower(): name for name in EXPORT_COLUMNS}
    header: dict[str, int] = {}
    for i, name in enumerate(names):
        if name not in known:
            shown = quote(cells[i].strip(), 40)
            hint = " (is the header line missing?)" if "@" in name else ""
            raise ValidationError(f"{where}: unknown column {shown}{hint}; the first line must "
                                  "be a header of email and, optionally, scope and reason")
        if name in header:
            raise ValidationError(f"{where}: column {quote(known[name])} appears twice")
        header[name] = i
    if "email" not in header:
        raise ValidationError(f"{where}: the header has no email column")
    return header


# -- export -------------------------------------------------------------------------------------

def guard(value: str) -> str:
    """A cell no spreadsheet reads as a formula."""
    return "'" + value if _formula_like(value) else value


def _time(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def csv_header() -> str:
    return csv_lines([EXPORT_COLUMNS], raw=True)


def csv_lines(rows: Iterable[Sequence[Any]], *, raw: bool = False) -> str:
    """CSV text of (email, scope, reason, event, created_at ms) rows, each cell guarded."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in rows:
        if raw:
            writer.writerow(row)
            continue
        email, scope_value, reason, event, created = row
        writer.writerow([guard(str(email)), guard(str(scope_value)), guard(str(reason)),
                         guard(str(event)) if event is not None else "", _time(int(created))])
    return out.getvalue()

