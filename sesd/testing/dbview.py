"""What tests and benches read of a store to check it: query plans, rows, hit counters.

The service's own SQL lives in `sesd.store`; these are the observers' questions, kept out of it
so the store holds only what sesd runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apsw


def _conn(store_or_conn: Any) -> apsw.Connection:
    return store_or_conn.db if hasattr(store_or_conn, "db") else store_or_conn


def query_plan(store: Any, sql: str, bindings: Sequence[Any] = ()) -> list[str]:
    """EXPLAIN QUERY PLAN details of one statement (the plans must stay on their indexes)."""
    return [row[3] for row in _conn(store).execute(f"EXPLAIN QUERY PLAN {sql}", bindings)]


def request_row(store: Any, request_id: int) -> dict[str, Any] | None:
    """One request as a dict of its columns."""
    cur = _conn(store).execute("SELECT * FROM requests WHERE id = ?", (request_id,))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.getdescription()], row, strict=True))


def hits(store: Any, request_id: int, status: str, link: str | None = None) -> int:
    """How often a request's Open (or Click on `link`) was recorded: 0 for never."""
    sql = "SELECT hits FROM results WHERE request_id = ? AND status = ?"
    args: list[Any] = [request_id, status]
    if link is not None:
        sql += " AND link = ?"
        args.append(link)
    row = _conn(store).execute(sql, args).fetchone()
    return int(row[0]) if row else 0
