"""The randomized workload of the test suite (sesd.testing.workload), long: many seeds, many
posts, faults from the stand-in, and its invariants checked at the end of each seed.

    .venv/bin/python bench/workload.py --seeds 5 --posts 200 --rate 300

Each seed starts a fresh stand-in (with --error-rate / --throttle-rate faults and rejected
recipients) and a fresh sesd; the workload mixes transactional bursts of distinct messages,
bulk messages, content with Handlebars-looking text, scheduled sends and topic stops. Exit 1
if any seed breaks an invariant; the violations are printed.
"""

from __future__ import annotations

import argparse
import sys
import time

from common import Service, Standin, add_common, parse_env, table, write_results

from sesd.testing.workload import REJECT_PREFIX, Shape, Workload


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="workloads, one seed each (default: "
                   "%(default)s)")
    p.add_argument("--first-seed", type=int, default=100)
    p.add_argument("--posts", type=int, default=150, help="POSTs per seed (default: %(default)s)")
    p.add_argument("--rate", default="300", help="EMAIL_RATE (default: %(default)s)")
    p.add_argument("--error-rate", type=float, default=0.05)
    p.add_argument("--throttle-rate", type=float, default=0.03)
    p.add_argument("--settle", type=float, default=600, help="seconds for a seed's requests to "
                   "become terminal (default: %(default)s)")
    add_common(p, runs=None, plot=False)
    args = p.parse_args()
    rows, reports, failed = [], [], False
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        standin = Standin("--error-rate", str(args.error_rate), "--throttle-rate",
                          str(args.throttle_rate), "--seed", str(seed), "--reject-pattern",
                          f"^{REJECT_PREFIX}")
        service = Service(env={**standin.env(), "EMAIL_RATE": args.rate, "MAX_ATTEMPTS": "30",
                               **parse_env(args.env)}, keep=args.keep).start()
        started = time.monotonic()
        try:
            report = Workload(service, standin, seed, Shape(posts=args.posts)).run(
                settle_timeout=args.settle)
        finally:
            service.close()
            standin.close()
        elapsed = time.monotonic() - started
        failed |= not report.ok
        reports.append(report)
        rows.append({"seed": seed, "posts": report.posts, "requests": report.requests,
                     "sent": report.statuses.get(2, 0), "failed": report.statuses.get(3, 0),
                     "stopped": report.statuses.get(4, 0), "stops": report.stops,
                     "duplicates": report.duplicates, "seconds": round(elapsed, 1),
                     "ok": report.ok})
        for violation in report.violations[:20]:
            print(f"seed {seed}: {violation}", file=sys.stderr)
    path = write_results("workload", {"args": vars(args), "runs": rows,
                                      "violations": {r.seed: r.violations for r in reports}})
    print(table(rows))
    print(f"\ninvariants: every request terminal, each sent at most once, the store equal to the "
          f"stand-in's log, no stopped request at SES, every stop's count exact, nothing early, "
          f"failures only for rejected recipients.\nresults: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
