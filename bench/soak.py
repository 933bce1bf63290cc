"""Soak: a steady feed at EMAIL_RATE (shared-content bulk posts and, `--distinct-share` of them,
bursts of one-recipient messages each with its own content) against a stand-in with random
faults, SIGKILLing a random sesd child now and then (optionally the supervisor, then starting
run.py again), sampling RSS per process. At the end: stop feeding, wait until every request is
terminal, check the invariants over the database and the stand-in log, plot RSS and sends/s.
Exit 1 if an invariant fails.

    .venv/bin/python bench/soak.py --duration 3600 --rate 50 --kill-interval 60 --kill-supervisor
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import (
    ProcMonitor,
    Service,
    Standin,
    add_common,
    median,
    message,
    parse_env,
    peak_window_at,
    png_path,
    pyplot,
    rfc3339,
    save_figure,
    stamp,
    table,
    write_results,
)
from tqdm import tqdm


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.rng = args, random.Random(args.seed)
        self.standin = Standin("--error-rate", str(args.error_rate), "--throttle-rate",
                               str(args.throttle_rate), "--latency-ms", str(args.latency_ms),
                               "--seed", str(args.seed), "--max-send-rate-reported", str(args.rate))
        self.svc = Service(env={**self.standin.env(), "EMAIL_RATE": str(args.rate),
                                "SHUTDOWN_GRACE": "5", **parse_env(args.env)}, keep=args.keep)
        self.posts: list[tuple[str, int, str]] = []  # (topic, size, "ok" | "refused" | "error")
        self.kills: list[tuple[float, str, int]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()  # held while run.py is being restarted

    def feed(self) -> None:
        a, k = self.args, 0
        while not self.stop.wait(a.feed_interval):
            size = self.rng.randint(1, max(1, int(2 * a.rate * a.load * a.feed_interval)))
            at = rfc3339(time.time() + self.rng.uniform(0, 5)) if self.rng.random() < 0.2 else None
            topic = f"soak-{k}"
            k += 1
            emails = [f"{topic}-{i}@example.com" for i in range(size)]
            if self.rng.random() < a.distinct_share:  # a transactional burst: one content each
                messages = [{**message(topic, [e], at, self.distinct_html(topic, i)),
                             "stream": "transactional"} for i, e in enumerate(emails)]
            else:
                messages = [message(topic, emails, at)]
            try:
                status, _ = self.svc.request("POST", "/v1/messages", {"messages": messages},
                                             timeout=30)
                self.posts.append((topic, size, "ok" if status == 200 else "refused"))
            except OSError:
                self.posts.append((topic, size, "error"))  # maybe stored: all or nothing

    @staticmethod
    def distinct_html(topic: str, i: int) -> str:
        return (f"<html><body><p>Receipt {i} of {topic}: caf\u00e9 {{{{ not a variable }}}}</p>"
                f'<p><a href="https://shop.example/orders/{topic}/{i}">your order</a></p>'
                + "<p>Thank you for your order.</p>" * 40 + "</body></html>")

    def kill_loop(self) -> None:
        a = self.args
        while not self.stop.wait(a.kill_interval * self.rng.uniform(0.5, 1.5)):
            assert self.svc.proc is not None
            if a.kill_supervisor and self.rng.random() < 0.25:
                self.kills.append((time.time(), "supervisor", self.svc.proc.pid))
                with self.lock:
                    self.svc.proc.kill()
                    self.svc.proc.wait()
                    self.restart()
                continue
            kids = self.svc.children()  # by process title: /health may be down
            role = self.rng.choice([r for r in ("api", "scheduler", "sender") if r in kids]
                                   or ["none"])
            if role == "none":
                continue
            at = time.time()
            try:
                os.kill(kids[role], signal.SIGKILL)
            except ProcessLookupError:
                continue  # it died meanwhile: not a kill of ours
            self.kills.append((at, role, kids[role]))

    def restart(self) -> None:
        for _ in range(20):
            try:
                self.svc.start()
                return
            except (RuntimeError, TimeoutError):
                time.sleep(0.5)  # the dead supervisor's children may still hold the lock
        raise RuntimeError("sesd did not come back after a supervisor kill")

    def run(self) -> dict[str, Any]:
        a = self.args
        self.svc.start()
        mon = ProcMonitor(lambda: self.svc.proc.pid if self.svc.proc else None,
                          interval=a.sample_interval, series=True)
        mon.start()
        t0 = time.time()
        threads = [threading.Thread(target=self.feed, daemon=True)]
        if a.kill_interval > 0:
            threads.append(threading.Thread(target=self.kill_loop, daemon=True))
        for t in threads:
            t.start()
        with tqdm(total=int(a.duration), desc="soak", unit="s", file=sys.stderr) as bar:
            while (now := time.time()) < t0 + a.duration:
                self.standin.fetch()
                bar.set_postfix(sent=len(self.standin.arrivals), kills=len(self.kills))
                bar.update(int(now - t0) - bar.n)
                time.sleep(2)
        self.stop.set()
        for t in threads:
            t.join()
        with self.lock:
            deadline, left = time.monotonic() + a.drain_timeout, -1
            while time.monotonic() < deadline:
                st = self.svc.statuses()
                left = st.get(0, 0) + st.get(1, 0)
                if left == 0:
                    break
                time.sleep(0.5)
        mon.stop()
        self.standin.fetch()
        code = self.svc.stop()
        return {"t0": t0, "statuses": self.svc.statuses(), "left": left, "exit_code": code,
                "monitor": mon}

    def check(self, res: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        a, svc = self.args, self.svc
        status_of = dict(svc.query("SELECT id, status FROM requests"))
        by_topic = dict(svc.query("SELECT topic_id, COUNT(*) FROM requests GROUP BY topic_id"))
        logged = Counter(rid for _, _, rid in self.standin.arrivals)
        sent = {rid for rid, s in status_of.items() if s == 2}
        dups = sum(n - 1 for n in logged.values() if n > 1)
        crash_kills = sum(1 for _, role, _ in self.kills if role in ("sender", "supervisor"))
        per_call = 50 if parse_env(a.env).get("EMAIL_BULK", "true") != "false" else 1
        conc = int(parse_env(a.env).get("MAX_CONCURRENT", min(1000, max(1, int(2 * a.rate)))))
        st = res["statuses"]
        peak, peak_at = peak_window_at(self.standin.arrivals)
        checks = [
            ("no request left created/processing", res["left"], 0),
            ("sent (DB) but not in stand-in log", len({str(r) for r in sent} - set(logged)), 0),
            ("in stand-in log but not sent in DB",
             sum(1 for r in logged if r is None or status_of.get(int(r)) != 2), 0),
            ("acknowledged POST not fully stored",
             sum(1 for t, n, s in self.posts if s == "ok" and by_topic.get(t) != n), 0),
            ("failed POST partially stored",
             sum(1 for t, n, s in self.posts if s != "ok" and by_topic.get(t, 0) not in (0, n)),
             0),
            ("duplicate sends", dups, crash_kills * conc * per_call),
            ("failed requests", st.get(3, 0), a.max_failed),
            ("peak sliding second", peak, int(a.rate)),
            ("graceful stop exit code (abs)", abs(res["exit_code"] or 0), 0),
            ("samples with two live senders", sum(1 for n in Counter(
                t for t, r, _, _ in res["monitor"].series if r == "sender").values() if n > 1), 0),
        ]
        rows = [{"invariant": name, "value": v, "limit": lim, "ok": v <= lim}
                for name, v, lim in checks]
        mon = res["monitor"]
        growth: dict[str, float] = {}
        for role in ("supervisor", "api", "scheduler", "sender"):
            pts = [(t - res["t0"], rss) for t, r, _, rss in mon.series if r == role]
            early = [x for t, x in pts if 0.1 * a.duration <= t < 0.2 * a.duration]
            late = [x for t, x in pts if t >= 0.9 * a.duration]
            if early and late:
                growth[role] = (median(late) - median(early)) / 2**20
        if a.max_rss_growth_mb is not None:
            rows += [{"invariant": f"RSS growth MB, {r}", "value": round(g, 1),
                      "limit": a.max_rss_growth_mb, "ok": g <= a.max_rss_growth_mb}
                     for r, g in growth.items()]
        return rows, {"statuses": st, "posts": Counter(s for _, _, s in self.posts),
                      "kills": Counter(r for _, r, _ in self.kills), "rss_growth_mb": growth,
                      "sends_logged": len(self.standin.arrivals), "duplicates": dups,
                      "peak_second_ends_at_s": round(peak_at - res["t0"], 3),
                      "kill_times_s": [(round(t - res["t0"], 3), r) for t, r, _ in self.kills],
                      "rss_series": [(round(t - res["t0"], 2), r, pid, rss)
                                     for t, r, pid, rss in mon.series]}

    def plot(self, path: Path, res: dict[str, Any]) -> str:
        t0 = res["t0"]
        fig, (top, bottom) = pyplot().subplots(2, 1, figsize=(11, 7), sharex=True)
        for role in ("supervisor", "api", "scheduler", "sender"):
            pts = [(t - t0, rss / 2**20) for t, r, _, rss in res["monitor"].series if r == role]
            top.plot([p[0] for p in pts], [p[1] for p in pts], ".", ms=2, label=role)
        for t, role, _ in self.kills:
            top.axvline(t - t0, color="red" if role == "supervisor" else "grey", lw=0.5)
        top.set_ylabel("RSS (MB)")
        top.set_title("sesd soak: RSS per process (vertical lines: SIGKILLs)")
        top.legend(fontsize="small")
        bins = Counter(int(t - t0) for t, _, _ in self.standin.arrivals)
        xs = range(0, max(bins, default=0) + 1)
        bottom.step(list(xs), [bins.get(x, 0) for x in xs], where="post", lw=0.7)
        bottom.axhline(self.args.rate, color="grey", ls="--", lw=0.8)
        bottom.set_ylabel("sends/s (stand-in)")
        bottom.set_xlabel("seconds")
        return str(save_figure(fig, path))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=3600, help="seconds of feeding")
    p.add_argument("--rate", type=float, default=50, help="EMAIL_RATE (default: %(default)s)")
    p.add_argument("--load", type=float, default=0.8, help="feed, as a fraction of the rate")
    p.add_argument("--distinct-share", type=float, default=0.3,
                   help="share of posts that are one-recipient messages, each its own content")
    p.add_argument("--feed-interval", type=float, default=1.0, help="seconds between batches")
    p.add_argument("--error-rate", type=float, default=0.01, help="stand-in 500 probability")
    p.add_argument("--throttle-rate", type=float, default=0.01, help="stand-in 429 probability")
    p.add_argument("--latency-ms", type=float, default=20, help="stand-in latency")
    p.add_argument("--kill-interval", type=float, default=60,
                   help="mean seconds between SIGKILLs (0: none)")
    p.add_argument("--kill-supervisor", action="store_true",
                   help="a quarter of the kills hit the supervisor; run.py is started again")
    p.add_argument("--sample-interval", type=float, default=2.0, help="RSS sampling period")
    p.add_argument("--drain-timeout", type=float, default=600, help="wait for terminal, s")
    p.add_argument("--max-failed", type=int, default=0, help="failed requests tolerated")
    p.add_argument("--max-rss-growth-mb", type=float, default=None,
                   help="also fail if a role's RSS grew more than this (late vs early)")
    p.add_argument("--seed", type=int, default=1)
    add_common(p, runs=None)
    args = p.parse_args()
    soak, ts = Soak(args), stamp()
    try:
        res = soak.run()
        rows, info = soak.check(res)
        if not args.no_plot:
            info["plot"] = soak.plot(png_path("soak", ts), res)
    finally:
        soak.svc.close()
        soak.standin.close()
    path = write_results("soak", {"args": vars(args), "invariants": rows, **info,
                                  "kill_log": soak.kills, "workdir": str(soak.svc.workdir)}, ts)
    print(table(rows))
    print(f"\nstatuses {dict(info['statuses'])}; posts {dict(info['posts'])}; kills "
          f"{dict(info['kills'])}; sends logged {info['sends_logged']}; RSS growth MB "
          f"{ {k: round(v, 1) for k, v in info['rss_growth_mb'].items()} }\npeak second ends at "
          f"{info['peak_second_ends_at_s']} s; kills at (s, role) {info['kill_times_s']}\n"
          f"results: {path}")
    if "plot" in info:
        print(f"plot: {info['plot']}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
