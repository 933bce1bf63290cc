"""Topic statistics on a large table: GET /v1/topics/{id} and counts/sent queries, timed.

    .venv/bin/python bench/stats.py --rows 1000000

Builds a throwaway database with --rows requests over --topics topics (a quarter sent, with a
Delivery result each, some opens), then times the store queries behind the stats routes
(median of --runs), and prints their query plans, which must not scan the table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import write_results

from sesd.store import SENT, NewMessage, Store, now_ms
from sesd.testing import dbview


def build(store: Store, rows: int, topics: int) -> None:
    per_topic = rows // topics
    started = time.perf_counter()
    for t in range(topics):
        for start in range(0, per_topic, 50_000):
            n = min(50_000, per_topic - start)
            store.insert_messages([NewMessage(f"topic-{t}", [f"u{start + i}@example.com"
                                                            for i in range(n)], "S", "<p>x</p>",
                                              now_ms())])
        print(f"\rbuilding: {(t + 1) * per_topic:,}/{rows:,} rows", end="", file=sys.stderr)
    db = store.db
    at = now_ms()
    with store._write() as cur:
        cur.execute(f"UPDATE requests SET status = {SENT}, sent_at = ?, message_id = 'm-' || id "
                    "WHERE id % 4 = 0", (at,))
        cur.execute("INSERT INTO results (request_id, status, raw, sns_message_id, created_at) "
                    "SELECT id, 'Delivery', '{}', 'sns-' || id, ? FROM requests "
                    f"WHERE status = {SENT}",
                    (at,))
        cur.execute("INSERT INTO results (request_id, status, created_at) "
                    "SELECT id, 'Open', ? FROM requests WHERE id % 20 = 0", (at,))
    db.execute("ANALYZE")
    print(f"\nbuilt in {time.perf_counter() - started:.1f}s", file=sys.stderr)


def timed(fn, runs: int) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--topics", type=int, default=20)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "stats.db")
        build(store, args.rows, args.topics)
        topic = "topic-3"
        results = {
            "rows": args.rows,
            "topic_rows": args.rows // args.topics,
            "topic_stats_ms": timed(lambda: store.topic_stats(topic), args.runs),
            "sent_24h_ms": timed(lambda: store.sent_since(now_ms() - 86_400_000), args.runs),
            "sent_1h_ms": timed(lambda: store.sent_since(now_ms() - 3_600_000), args.runs),
            "unknown_topic_ms": timed(lambda: store.topic_stats("nope"), args.runs),
        }
        plans = {name: dbview.query_plan(store, sql, params) for name, sql, params in [
            ("topic requests", store.TOPIC_REQUESTS, (topic,)),
            ("topic results", store.TOPIC_RESULTS, (topic,)),
            ("sent since", store.SENT_SINCE, (0,))]}
        store.close()
    print(f"{'query':<22}{'median ms':>12}")
    for key, value in results.items():
        if key.endswith("_ms"):
            print(f"{key[:-3]:<22}{value:>12.2f}")
    for name, plan in plans.items():
        print(f"plan {name}: {' | '.join(plan)}")
    print(f"results: {write_results('stats', {**results, 'plans': plans})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
