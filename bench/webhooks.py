"""Webhook delivery: events per second to a local receiver, and the delay from fact to delivery.

    .venv/bin/python bench/webhooks.py --n 20000

Two phases on one sesd (outbox transport, EMAIL_RATE=0) with one endpoint on 127.0.0.1 whose
receiver verifies every signature (standardwebhooks):
- live: N recipients are sent while the notifier delivers; delay = arrival at the receiver
  minus the event's own timestamp (the commit of the send), p50/p99;
- backlog: the notifier is paused (SIGSTOP) while N more are sent, then resumed; throughput =
  events delivered per second from the first arrival after the resume to the last.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' receiver

from common import (
    Service,
    add_common,
    emails,
    message,
    parse_env,
    percentile,
    post,
    table,
    write_results,
)

from tests.webhook_receiver import Receiver


def _epoch(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def wait_unique(receiver: Receiver, total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while receiver.unique() < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {receiver.unique()}/{total} events delivered")
        time.sleep(0.05)


def run(args: argparse.Namespace) -> dict[str, Any]:
    receiver = Receiver().start()
    env = {"EMAIL_RATE": "0", "WEBHOOK_ALLOW_PRIVATE": "true", "LOG_LEVEL": "warning",
           **parse_env(args.env)}
    svc = Service(env=env, keep=args.keep).start()
    try:
        receiver.secret = post(svc, "/v1/webhooks", {"url": receiver.url})["secret"]
        # live
        status, _ = svc.request("POST", "/v1/messages",
                                {"messages": [message("live", emails(args.n, "l"))]})
        assert status == 200
        wait_unique(receiver, args.n, args.timeout)
        live = list(receiver.by_id().values())
        delays = [d.received - _epoch(d.timestamp) for d in live]
        live_rate = len(live) / (max(d.received for d in live) - min(d.received for d in live))
        # backlog
        notifier = svc.pids()["notifier"]
        os.kill(notifier, signal.SIGSTOP)
        try:
            status, _ = svc.request("POST", "/v1/messages",
                                    {"messages": [message("backlog", emails(args.n, "b"))]})
            assert status == 200
            svc.wait_terminal(2 * args.n, args.timeout, "sent")
            before = receiver.unique()
        finally:
            os.kill(notifier, signal.SIGCONT)
        resumed = time.time()
        wait_unique(receiver, 2 * args.n, args.timeout)
        backlog = [d for d in receiver.by_id().values() if d.received >= resumed]
        first = min(d.received for d in backlog)
        last = max(d.received for d in backlog)
        return {"n": args.n, "live_events_s": live_rate,
                "delay_p50_ms": percentile(delays, 50) * 1000,
                "delay_p99_ms": percentile(delays, 99) * 1000,
                "delay_max_ms": max(delays) * 1000,
                "backlog_events_s": len(backlog) / (last - first),
                "backlog_start_s": first - resumed, "delivered_before_resume": before - args.n,
                "copies": len(receiver.delivered) - len(receiver.by_id()),
                "bad_signatures": receiver.bad_signatures}
    finally:
        svc.close()
        receiver.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=20_000, help="events per phase (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=600, help="per phase, seconds")
    add_common(p)
    args = p.parse_args()
    rows = []
    for i in range(args.runs):
        print(f"webhooks, run {i + 1}/{args.runs}", file=sys.stderr)
        rows.append(run(args))
    path = write_results("webhooks", {"args": vars(args), "runs": rows})
    print(table(rows, ["n", "live_events_s", "delay_p50_ms", "delay_p99_ms", "delay_max_ms",
                       "backlog_events_s", "copies", "bad_signatures"]))
    print(f"\nlive = while sending at EMAIL_RATE=0 (outbox); backlog = a paused notifier's "
          f"backlog after SIGCONT.\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
