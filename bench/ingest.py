"""Ingest: POST /v1/messages latency for large requests, and throughput of many concurrent small
requests. sesd runs with EMAIL_TRANSPORT=outbox and every message is scheduled far in the future
(2099), so nothing is sent while measuring: this is the API and SQLite path alone.

    .venv/bin/python bench/ingest.py --sizes 10000,100000 --runs 5 --clients 200 --per-request 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
from common import (
    API_KEY,
    FAR_FUTURE,
    ProcMonitor,
    Service,
    add_common,
    emails,
    median,
    message,
    parse_env,
    percentile,
    progress,
    table,
    write_results,
)


def big_posts(svc: Service, size: int, runs: int) -> dict[str, Any]:
    latencies = []
    for i in range(runs):
        body = json.dumps({"messages": [message(f"big-{size}-{i}", emails(size, f"b{i}x"),
                                                FAR_FUTURE)]}).encode()
        t0 = time.perf_counter()
        status, resp = svc.request("POST", "/v1/messages", body)
        latencies.append(time.perf_counter() - t0)
        if status != 200 or resp.get("count") != size:
            raise RuntimeError(f"POST of {size} answered {status}: {resp!r}")
        print(f"  {size} recipients: {latencies[-1]:.3f} s", file=sys.stderr)
    return {"size": size, "body_mb": len(body) / 2**20, "latencies_s": latencies,
            "p50_s": median(latencies), "p90_s": percentile(latencies, 90),
            "rcpt_s": size / median(latencies)}


async def many_small(url: str, clients: int, per_request: int, each: int) -> dict[str, Any]:
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    bar = progress(clients * each * per_request, "small posts")
    headers = {"x-api-key": API_KEY, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client(c: int) -> None:
            for j in range(each):
                body = json.dumps({"messages": [message(
                    f"small-{c}", emails(per_request, f"c{c}r{j}x"), FAR_FUTURE)]})
                t0 = time.perf_counter()
                try:
                    async with session.post(url + "/v1/messages", data=body,
                                            headers=headers) as resp:
                        await resp.read()
                        codes[resp.status] += 1
                except (aiohttp.ClientError, TimeoutError):
                    codes[-1] += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                bar.update(per_request)

        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        wall = time.perf_counter() - t0
    bar.close()
    accepted = codes.get(200, 0) * per_request
    return {"clients": clients, "per_request": per_request, "requests_per_client": each,
            "wall_s": wall, "rcpt_s": accepted / wall, "requests_s": codes.get(200, 0) / wall,
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000,
            "status_counts": {str(k): v for k, v in codes.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="10000,100000",
                   help="recipients per large request (default: %(default)s)")
    p.add_argument("--clients", type=int, default=200, help="concurrent small-request clients")
    p.add_argument("--per-request", type=int, default=10, help="recipients per small request")
    p.add_argument("--requests-per-client", type=int, default=20,
                   help="small requests each client sends one after another")
    add_common(p, runs=5, plot=False)
    args = p.parse_args()
    env = {"EMAIL_TRANSPORT": "outbox", **parse_env(args.env)}
    svc = Service(env=env, keep=args.keep).start()
    rows: list[dict[str, Any]] = []
    try:
        assert svc.proc is not None
        mon = ProcMonitor(lambda: svc.proc.pid if svc.proc else None)
        mon.start()
        bigs = []
        for size in [int(x) for x in args.sizes.split(",")]:
            print(f"large requests of {size} recipients x {args.runs}", file=sys.stderr)
            big = big_posts(svc, size, args.runs)
            bigs.append(big)
            rows.append({"test": f"1 POST x {size} rcpt", "runs": args.runs,
                         "p50_ms": big["p50_s"] * 1000, "p90_ms": big["p90_s"] * 1000, "p99_ms": "",
                         "rcpt_s": big["rcpt_s"], "errors": 0})
        smalls = []
        for _ in range(args.runs):
            smalls.append(asyncio.run(many_small(svc.url, args.clients, args.per_request,
                                                 args.requests_per_client)))
        errors = sum(v for r in smalls for k, v in r["status_counts"].items() if k != "200")
        rows.append({"test": f"{args.clients} clients x {args.per_request} rcpt",
                     "runs": args.runs, "p50_ms": median([r["p50_ms"] for r in smalls]),
                     "p90_ms": "", "p99_ms": median([r["p99_ms"] for r in smalls]),
                     "rcpt_s": median([r["rcpt_s"] for r in smalls]), "errors": errors})
        mon.stop()
        stored = sum(svc.statuses().values())
    finally:
        svc.close()
    out = {"args": vars(args), "mode": "EMAIL_TRANSPORT=outbox, scheduledAt=" + FAR_FUTURE,
           "summary": rows, "large": bigs, "small": smalls, "requests_stored": stored,
           "api_peak_rss_mb": mon.peak_rss.get("api", 0) / 2**20,
           "sesd_cpu_s": mon.cpu_seconds}
    path = write_results("ingest", out)
    print(table(rows))
    print(f"\nmode: {out['mode']} (nothing is sent while measuring). Large requests: p50 and "
          f"p90 of {args.runs} runs; small requests: p50 and p99 of all requests, median over "
          f"runs.\nrequests stored: {stored}; API peak RSS {out['api_peak_rss_mb']:.0f} MB; "
          f"sesd CPU {mon.cpu_seconds:.1f} s\nresults: {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
