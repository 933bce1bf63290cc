"""Rate accuracy: sesd at EMAIL_RATE=R against a stand-in that throttles above R per sliding
second. Sustained rate = (N - 1) / (t_last - t_first) over the stand-in's arrival times (sesd
paces its calls, with no first-second burst); peak = most recipients in any sliding second.

    .venv/bin/python bench/rate_accuracy.py --rates 14,200,1000 --seconds 10
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from common import (
    Service,
    Standin,
    add_common,
    emails,
    median,
    message,
    parse_env,
    peak_window,
    plot_rate,
    png_path,
    post,
    progress,
    stamp,
    table,
    wait_terminal,
    write_results,
)


def one_run(rate: float, n: int, args: argparse.Namespace) -> dict[str, Any]:
    standin = Standin("--max-rate", str(rate), "--latency-ms", str(args.latency_ms),
                      "--max-send-rate-reported", str(rate))
    env = {**standin.env(), "EMAIL_RATE": str(rate), "EMAIL_BULK": args.bulk,
           **parse_env(args.env)}
    svc = Service(env=env, keep=args.keep)
    try:
        svc.start()
        t0 = time.time()
        post(svc, "/v1/messages", {"messages": [message("rate", emails(n))]})
        deadline = time.monotonic() + n / rate * 3 + 60
        with progress(n, f"{rate:g}/s") as bar:
            while True:
                counters = standin.fetch()
                bar.update(counters["accepted_recipients"] - bar.n)
                if counters["accepted_recipients"] >= n:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{bar.n}/{n} sent at {rate}/s\n{svc.tail()}")
                time.sleep(0.25)
        counts = wait_terminal(svc, n, 60, "recorded")
        counters = standin.fetch()
        times = sorted(t for t, _, _ in standin.arrivals)
        span = times[-1] - times[0]
        # sesd paces its calls evenly (no first-second burst), so every recipient after the
        # first cost 1/rate: the sustained rate is the whole run's.
        sustained = (n - 1) / span if span > 0 else float("nan")
        peak = peak_window(standin.arrivals)
        return {"rate": rate, "n": n, "sustained": sustained, "ratio": sustained / rate,
                "peak_1s": peak, "standin_peak_1s": counters["peak_window"],
                "throttled_429": counters["throttled"], "ses_calls": counters["requests"],
                "first_send_after_post_s": times[0] - t0, "statuses": counts,
                "arrivals": list(standin.arrivals), "t0": t0}
    finally:
        svc.close()
        standin.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rates", default="14,200,1000", help="comma-separated EMAIL_RATE values "
                   "(default: %(default)s)")
    p.add_argument("--seconds", type=float, default=10,
                   help="work per run in seconds at the rate: N = max(100, rate x seconds), "
                   "rounded up to whole seconds")
    p.add_argument("--n", type=int, default=None, help="fixed N instead of --seconds")
    p.add_argument("--bulk", choices=("true", "false"), default="true",
                   help="EMAIL_BULK (default: %(default)s, the service default)")
    p.add_argument("--latency-ms", type=float, default=0, help="stand-in latency")
    add_common(p)
    args = p.parse_args()
    ts, rows, detail, series, limits = stamp(), [], [], {}, {}
    for rate in [float(x) for x in args.rates.split(",")]:
        # A whole number of seconds' worth: a bulk sender moves a second's tokens per call, so a
        # last partial call would wait a full second and skew (N - 1) / (t_last - t_first).
        n = args.n or int(math.ceil(max(100, rate * args.seconds) / rate) * rate)
        runs = []
        for i in range(args.runs):
            print(f"rate {rate:g}/s, N={n}, run {i + 1}/{args.runs}", file=sys.stderr)
            runs.append(one_run(rate, n, args))
        label = f"{rate:g}/s"
        series[label], limits[label] = (runs[-1]["arrivals"], runs[-1]["t0"]), rate
        for r in runs:
            r.pop("arrivals")
        sustained = median([r["sustained"] for r in runs])
        peak = max(r["peak_1s"] for r in runs)
        throttled = sum(r["throttled_429"] for r in runs)
        ok = sustained >= 0.99 * rate and peak <= rate and throttled == 0
        rows.append({"rate": rate, "n": n, "sustained": sustained, "sustained/rate":
                     sustained / rate, "peak_1s_max": peak,
                     "429s_total": throttled,
                     "first_send_s": median([r["first_send_after_post_s"] for r in runs]),
                     "verdict": "ok" if ok else "FAIL"})
        detail.append({"rate": rate, "runs": runs})
    out: dict[str, Any] = {"args": vars(args), "summary": rows, "runs": detail}
    if not args.no_plot:
        out["plot"] = str(plot_rate(png_path("rate_accuracy", ts), series,
                                    f"sesd rate accuracy (EMAIL_BULK={args.bulk}; dashed = "
                                    "EMAIL_RATE)", limits=limits))
    path = write_results("rate_accuracy", out, ts)
    print(table(rows))
    print("\nverdict ok = sustained >= 99% of the rate, no sliding second above it, and no 429 "
          "(the stand-in throttles exactly above the rate, by arrival time).\nShort runs: "
          "(N - 1) / span assumes even pacing; a bulk call that takes a second's recipients at "
          "once can show a little above R on short runs, the peak is the ceiling check.")
    print(f"results: {path}")
    if "plot" in out:
        print(f"plot: {out['plot']}")
    return 0 if all(r["verdict"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
