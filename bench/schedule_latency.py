"""Schedule latency: K batches posted over a few seconds, each with its own scheduledAt a few
seconds ahead; reports (stand-in arrival - scheduledAt) per recipient and how many left early.
The contract: never before scheduledAt, and within one second after it.

    .venv/bin/python bench/schedule_latency.py --batches 20 --batch-size 5 --max-ahead 6
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    Service,
    Standin,
    add_common,
    emails,
    median,
    message,
    parse_env,
    percentile,
    png_path,
    post,
    pyplot,
    rfc3339,
    save_figure,
    stamp,
    table,
    wait_terminal,
    write_results,
)


def one_run(args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    standin = Standin("--latency-ms", str(args.latency_ms))
    env = {**standin.env(), "EMAIL_RATE": str(args.rate), **parse_env(args.env)}
    svc = Service(env=env, keep=args.keep)
    try:
        svc.start()
        due: dict[str, float] = {}  # topic -> scheduledAt (epoch s, ms precision)
        start = time.time()
        for i in range(args.batches):
            pause = start + i * args.spread / args.batches - time.time()
            if pause > 0:
                time.sleep(pause)
            at = round(time.time() + rng.uniform(args.min_ahead, args.max_ahead), 3)
            topic = f"sched-{i}"
            post(svc, "/v1/messages", {"messages": [
                message(topic, emails(args.batch_size, f"s{i}x"), rfc3339(at))]})
            due[topic] = at
        total = args.batches * args.batch_size
        wait_terminal(svc, total, args.max_ahead + args.spread + 60, "sent")
        counters = standin.fetch()
        rows = svc.query("SELECT id, topic_id FROM requests")
        topic_of = {str(rid): topic for rid, topic in rows}
        points = [(due[topic_of[rid]], t - due[topic_of[rid]])
                  for t, _, rid in standin.arrivals if rid in topic_of]
        late = [d for _, d in points]
        return {"sent": len(points), "expected": total, "p50_s": percentile(late, 50),
                "p99_s": percentile(late, 99), "max_s": max(late), "min_s": min(late),
                "early": sum(d < 0 for d in late), "over_1s": sum(d > 1.0 for d in late),
                "duplicates": counters["accepted"] - len(set(r for _, _, r in standin.arrivals)),
                "points": points, "t0": start}
    finally:
        svc.close()
        standin.close()


def plot(path: Path, runs: list[dict[str, Any]]) -> str:
    fig, ax = pyplot().subplots(figsize=(9, 4))
    for i, r in enumerate(runs):
        ax.scatter([s - r["t0"] for s, _ in r["points"]], [d * 1000 for _, d in r["points"]],
                   s=8, label=f"run {i + 1}")
    ax.axhline(0, color="red", linewidth=0.8)
    ax.axhline(1000, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("scheduledAt, seconds after the first POST")
    ax.set_ylabel("arrival - scheduledAt (ms)")
    ax.set_title("sesd schedule latency (red: early, dashed: 1 s limit)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return str(save_figure(fig, path))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batches", type=int, default=20, help="K batches (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=5, help="recipients per batch")
    p.add_argument("--min-ahead", type=float, default=1.0, help="scheduledAt - post, lowest (s)")
    p.add_argument("--max-ahead", type=float, default=6.0, help="scheduledAt - post, highest (s)")
    p.add_argument("--spread", type=float, default=4.0, help="posts spread over this many s")
    p.add_argument("--rate", type=float, default=200, help="EMAIL_RATE (default: %(default)s)")
    p.add_argument("--latency-ms", type=float, default=0, help="stand-in latency")
    p.add_argument("--seed", type=int, default=1, help="random seed for the offsets")
    add_common(p)
    args = p.parse_args()
    rng, ts, runs = random.Random(args.seed), stamp(), []
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}", file=sys.stderr)
        runs.append(one_run(args, rng))
    keys = ("p50_s", "p99_s", "max_s", "min_s")
    row: dict[str, Any] = {"runs": args.runs, "sent": sum(r["sent"] for r in runs)}
    row.update({k.replace("_s", "_ms"): median([r[k] for r in runs]) * 1000 for k in keys})
    row["worst_max_ms"] = max(r["max_s"] for r in runs) * 1000
    row["early"] = sum(r["early"] for r in runs)
    row["over_1s"] = sum(r["over_1s"] for r in runs)
    row["duplicates"] = sum(r["duplicates"] for r in runs)
    missing = sum(r["expected"] - r["sent"] for r in runs)
    row["missing"] = missing
    out: dict[str, Any] = {"args": vars(args), "summary": row, "runs": runs}
    if not args.no_plot:
        out["plot"] = plot(png_path("schedule_latency", ts), runs)
    path = write_results("schedule_latency", out, ts)
    print(table([row]))
    print(f"\nlateness = stand-in arrival - scheduledAt, per recipient; medians over runs "
          f"(worst_max over all).\nresults: {path}")
    if "plot" in out:
        print(f"plot: {out['plot']}")
    ok = row["early"] == 0 and row["over_1s"] == 0 and missing == 0
    print("verdict:", "ok" if ok else "FAIL (early sends, > 1 s late, or missing)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
