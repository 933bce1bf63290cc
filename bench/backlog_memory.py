"""Memory with a large backlog: RSS of every sesd process while a million requests wait.

    .venv/bin/python bench/backlog_memory.py --rows 1000000 --seconds 20

Fills a database with --rows created requests due now, starts `python run.py` on it against the
SES stand-in at a steady EMAIL_RATE, samples each process's RSS every second, and prints the peak
per role. The scheduler claims only what the sender has credit for, so memory must stay flat
however large the backlog.
"""

from __future__ import annotations

import argparse
import sys
import time

from common import ProcMonitor, Service, Standin, add_common, parse_env, table, write_results

from sesd.store import NewMessage, Store, now_ms


def fill(store: Store, rows: int) -> None:
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        store.insert_messages([NewMessage("backlog", [f"u{start + i}@example.com"
                                                      for i in range(n)], "S", "<p>x</p>",
                                          now_ms())])
        print(f"\rfilled {start + n:,}/{rows:,}", end="", file=sys.stderr)
    print(file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rate", default="500", help="EMAIL_RATE (default: %(default)s)")
    add_common(parser, runs=None, plot=False)
    args = parser.parse_args()
    with Standin() as standin:
        svc = Service(env={**standin.env(), "EMAIL_RATE": args.rate, "LOG_LEVEL": "warning",
                           **parse_env(args.env)}, keep=args.keep)
        try:
            store = Store(svc.db_path)
            fill(store, args.rows)
            store.close()
            svc.start()
            mon = ProcMonitor(lambda: svc.proc.pid if svc.proc else None, interval=1.0)
            mon.start()
            for second in range(args.seconds):
                print(f"\r{second + 1}/{args.seconds} s", end="", file=sys.stderr)
                time.sleep(1)
            mon.stop()
            sent = svc.statuses().get(2, 0)
        finally:
            svc.close()
    peaks = {role: round(rss / 2**20, 1) for role, rss in sorted(mon.peak_rss.items())}
    path = write_results("backlog_memory", {"rows": args.rows, "rate": args.rate,
                                            "sent": sent, "peak_rss_mb": peaks})
    print(f"\nbacklog {args.rows:,}, EMAIL_RATE={args.rate}, sent during the run: {sent:,}")
    # "starting": a child sampled before it had set its title (its role is sampled after).
    print(table([{"process": role, "peak_rss_mb": mb} for role, mb in peaks.items()
                 if role != "starting"]))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
