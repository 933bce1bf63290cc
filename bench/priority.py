"""Transactional mail under a bulk backlog: how long a password reset waits while a newsletter is
being sent at the limit.

    .venv/bin/python bench/priority.py --backlog 100000 --rate 100 --messages 60

sesd runs at EMAIL_RATE=--rate against a stand-in that enforces the same rate; one POST queues
--backlog bulk recipients; once they flow, --messages transactional one-recipient messages are
posted one by one (every --interval s). Reported: the latency from each POST's answer to its
arrival at the stand-in (p50, p99, max), how much of the backlog was still waiting, the peak
sliding second and 429s (must stay 0: priority never buys rate).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from common import (
    Service,
    Standin,
    add_common,
    emails,
    median,
    message,
    parse_env,
    percentile,
    post,
    table,
    write_results,
)


def run(args: argparse.Namespace) -> dict[str, object]:
    standin = Standin("--max-rate", str(args.rate))
    service = Service(env={**standin.env(), "EMAIL_RATE": str(args.rate),
                           **parse_env(args.env)}, keep=args.keep).start()
    try:
        body = json.dumps({"messages": [message("newsletter", emails(args.backlog))]}).encode()
        post(service, "/v1/messages", body, timeout=600)
        while standin.counters()["accepted_recipients"] < args.rate * 2:
            time.sleep(0.1)
        posted: dict[str, float] = {}
        for i in range(args.messages):
            address = f"urgent{i}@example.com"
            post(service, "/v1/messages", {"messages": [{
                "topicId": "reset", "emails": [address], "subject": "Your code",
                "content": f"<p>{i:06d}</p>", "stream": "transactional"}]})
            posted[address] = time.time()
            print(f"\rtransactional {i + 1}/{args.messages}", end="", file=sys.stderr)
            time.sleep(args.interval)
        deadline = time.monotonic() + 30
        arrived: dict[str, float] = {}
        while len(arrived) < len(posted) and time.monotonic() < deadline:
            standin.fetch()
            log = standin.log()
            arrived = {s["to"][0]: s["t"] for s in log["sends"] if s["to"][0] in posted}
            time.sleep(0.2)
        latencies = [arrived[a] - posted[a] for a in posted if a in arrived]
        counters = standin.counters()
        waiting = service.statuses()
        return {"latency_p50_s": median(latencies), "latency_p99_s": percentile(latencies, 99),
                "latency_max_s": max(latencies) if latencies else float("nan"),
                "arrived": len(latencies), "posted": len(posted),
                "backlog_waiting": waiting.get(0, 0) + waiting.get(1, 0),
                "peak_1s": counters["peak_window"], "throttled": counters["throttled"]}
    finally:
        service.close()
        standin.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backlog", type=int, default=100_000)
    p.add_argument("--rate", type=int, default=100)
    p.add_argument("--messages", type=int, default=60)
    p.add_argument("--interval", type=float, default=0.5)
    add_common(p, runs=None, plot=False)
    args = p.parse_args()
    row = run(args)
    path = write_results("priority", {"args": vars(args), "result": row})
    print(table([{"backlog": args.backlog, "rate": args.rate, **row}]))
    print(f"\nlatency = transactional POST answered -> arrival at the stand-in.\nresults: {path}")
    ok = row["arrived"] == row["posted"] and row["throttled"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
