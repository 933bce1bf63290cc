"""End-to-end send throughput of sesd against the SES stand-in (unlimited rate), beside the raw
ceiling of one aiobotocore client in one process against the same stand-in.

    .venv/bin/python bench/sends_per_sec.py --n 20000 --mode both --latency-ms 0,30
    .venv/bin/python bench/sends_per_sec.py --n 10000 --mode all --latency-ms 0

Modes (one POST of N recipients each):
  single         one message to N recipients, EMAIL_BULK=false (one SendEmail per recipient)
  bulk           one message to N recipients (bulk stream: per-recipient one-click unsubscribe)
  transactional  the same as one transactional message: no unsubscribe headers
  personal       one templated message, every recipient its own data ({{name}}, an #if, an
                 #each), click tracking of its links and the unsubscribe headers on
  distinct       N one-recipient messages, each its own subject and ~2 kB body (and, unless
                 --generated-text, its own text part): a transactional burst

--dead-webhook registers a webhook at a closed local port first: every send then stores its
event and the notifier keeps failing to deliver it, which must not slow sending.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from common import (
    HTML,
    ProcMonitor,
    Service,
    Standin,
    add_common,
    emails,
    free_port,
    median,
    message,
    parse_env,
    plot_rate,
    png_path,
    post,
    progress,
    stamp,
    table,
    wait_terminal,
    write_results,
)

ROLES = ("supervisor", "api", "scheduler", "sender")
MODES = ("single", "bulk", "transactional", "personal", "distinct")
# A receipt of ~2 kB, with links to track.
RECEIPT = ("<html><body><h1>Thank you for your order</h1>"
           + "<p>We have received your payment and your items are on their way. "
             "You can follow the parcel at any time from your account page.</p>" * 15
           + '<p><a href="https://shop.example.com/orders?id={i}&amp;ref=mail">Your order</a> · '
             '<a href="https://shop.example.com/help">Help</a></p></body></html>')
PERSONAL = ("<html><body><p>Hello {{name}},</p>{{#if vip}}<p>Thanks for being a member.</p>"
            "{{/if}}<ul>{{#each picks}}<li>{{this}}</li>{{/each}}</ul>"
            + "<p>Here is what is new this week in the shop and on the blog.</p>" * 10
            + '<p><a href="https://shop.example.com/new">See what is new</a> · '
              '<a href="{{unsubscribeUrl}}">Unsubscribe</a></p></body></html>')


def body_for(mode: str, n: int, generated_text: bool) -> bytes:
    to = emails(n)
    if mode == "distinct":
        messages = []
        for i, address in enumerate(to):
            m: dict[str, Any] = {"topicId": "bench", "emails": [address],
                                 "subject": f"Order {i} is on its way",
                                 "content": RECEIPT.replace("{i}", str(i)),
                                 "stream": "transactional"}
            if not generated_text:
                m["text"] = f"Thank you for your order {i}. Follow it: https://shop.example.com/"
            messages.append(m)
        return json.dumps({"messages": messages}).encode()
    if mode == "personal":
        return json.dumps({"messages": [{
            "topicId": "bench", "subject": "{{name}}, this week", "content": PERSONAL,
            "recipients": [{"email": address, "data": {"name": f"Reader {i}", "vip": i % 3 == 0,
                                                       "picks": ["Shoes", "Coats"]}}
                           for i, address in enumerate(to)]}]}).encode()
    msg = message("bench", to)
    if mode == "transactional":
        msg["stream"] = "transactional"
    return json.dumps({"messages": [msg]}).encode()


async def raw_phase(url: str, n: int, concurrency: int, bulk: bool) -> dict[str, Any]:
    """N recipients through one aiobotocore sesv2 client; SendEmail or SendBulkEmail x50."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession

    config = AioConfig(retries={"total_max_attempts": 1, "mode": "standard"},
                       max_pool_connections=concurrency, tcp_keepalive=True)
    html = HTML
    per_call = 50 if bulk else 1
    calls = iter(range(0, n, per_call))
    errors = 0
    async with AioSession().create_client(
            "sesv2", region_name="us-east-1", endpoint_url=url, aws_access_key_id="bench",
            aws_secret_access_key="bench", config=config) as client:

        async def one(start: int) -> None:
            if not bulk:
                await client.send_email(
                    FromEmailAddress="sender@example.com",
                    Destination={"ToAddresses": [f"raw{start}@example.com"]},
                    Content={"Simple": {
                        "Subject": {"Data": "Bench", "Charset": "UTF-8"},
                        "Body": {"Html": {"Data": html, "Charset": "UTF-8"}},
                        "Headers": [{"Name": "X-Request-ID", "Value": str(start)}]}})
                return
            await client.send_bulk_email(
                FromEmailAddress="sender@example.com",
                DefaultContent={"Template": {"TemplateContent": {"Subject": "Bench",
                                                                 "Html": html},
                                             "TemplateData": "{}"}},
                BulkEmailEntries=[{
                    "Destination": {"ToAddresses": [f"raw{i}@example.com"]},
                    "ReplacementHeaders": [{"Name": "X-Request-ID", "Value": str(i)}]}
                    for i in range(start, min(start + per_call, n))])

        async def worker() -> None:
            nonlocal errors
            for start in calls:
                try:
                    await one(start)
                except Exception:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {"rcpt_s": n / elapsed, "calls_s": -(-n // per_call) / elapsed, "errors": errors,
            "elapsed_s": elapsed}


def run_raw(url: str, n: int, concurrency: int, bulk: bool) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(raw_phase(url, n, concurrency, bulk))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(raw_phase(url, n, concurrency, bulk))


def run_sesd(standin: Standin, args: argparse.Namespace, mode: str) -> dict[str, Any]:
    standin.reset()
    env = {**standin.env(), "EMAIL_RATE": "0", "MAX_CONCURRENT": str(args.concurrency),
           "EMAIL_BULK": "false" if mode == "single" else "true", **parse_env(args.env)}
    if args.dead_webhook:
        env["WEBHOOK_ALLOW_PRIVATE"] = "true"
    svc = Service(env=env, keep=args.keep).start()
    try:
        if args.dead_webhook:
            post(svc, "/v1/webhooks", {"url": f"http://127.0.0.1:{free_port()}/closed"})
        assert svc.proc is not None
        mon = ProcMonitor(lambda: svc.proc.pid if svc.proc else None)
        body = body_for(mode, args.n, args.generated_text)
        mon.start()
        t0 = time.time()
        post(svc, "/v1/messages", body)
        post_s = time.time() - t0
        deadline = time.monotonic() + args.timeout
        with progress(args.n, "at stand-in") as bar:
            while True:
                done = standin.counters()["accepted_recipients"]
                bar.update(done - bar.n)
                if done >= args.n:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {done}/{args.n} sent\n{svc.tail()}")
                time.sleep(0.05)
        counts = wait_terminal(svc, args.n, args.timeout, "recorded")
        mon.stop()
        counters = standin.fetch()
        t_last = max(t for t, _, _ in standin.arrivals)
        rss = {r: round(mon.peak_rss.get(r, 0) / 2**20, 1) for r in ROLES}
        return {"rcpt_s": args.n / (t_last - t0), "post_s": post_s, "elapsed_s": t_last - t0,
                "cpu_s": mon.cpu_seconds, "cpu_s_per_1k": mon.cpu_seconds / args.n * 1000,
                "cpu_ms_per_rcpt": {role: round(used / args.n * 1000, 4)
                                    for role, used in sorted(mon.cpu_by_role.items())},
                "peak_1s": counters["peak_window"], "ses_calls": counters["requests"],
                "statuses": counts, "rss_mb": rss, "t0": t0,
                "arrivals": list(standin.arrivals)}
    finally:
        svc.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=20_000, help="recipients (default: %(default)s)")
    p.add_argument("--mode", choices=(*MODES, "both", "all"), default="both",
                   help="see above; both = single and bulk, all = every mode "
                   "(default: %(default)s)")
    p.add_argument("--generated-text", action="store_true",
                   help="distinct mode: no text field, so sesd generates each text part")
    p.add_argument("--latency-ms", default="0,30",
                   help="comma-separated stand-in latencies (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=100,
                   help="MAX_CONCURRENT, and the raw client's concurrency (default: %(default)s)")
    p.add_argument("--raw", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure the raw aiobotocore ceiling (default: on)")
    p.add_argument("--timeout", type=float, default=900, help="per run, seconds")
    p.add_argument("--dead-webhook", action="store_true",
                   help="register a webhook at a closed port before sending")
    add_common(p)
    args = p.parse_args()
    modes = {"both": ("single", "bulk"), "all": MODES}.get(args.mode, (args.mode,))
    ts, rows, detail, series = stamp(), [], [], {}
    for latency in [float(x) for x in args.latency_ms.split(",")]:
        standin = Standin("--latency-ms", str(latency))
        raw_done: dict[str, list[dict[str, Any]]] = {}  # the ceilings, measured once a latency
        try:
            for mode in modes:
                raw = None
                kind = "single" if mode == "single" else "bulk"
                if args.raw and kind not in raw_done:
                    standin.reset()
                    print(f"raw aiobotocore, {kind}, latency {latency:g} ms", file=sys.stderr)
                    raw_done[kind] = [run_raw(standin.url, args.n, args.concurrency,
                                              kind == "bulk") for _ in range(args.runs)]
                raw = raw_done.get(kind)
                runs = []
                for i in range(args.runs):
                    print(f"sesd, {mode}, latency {latency:g} ms, run {i + 1}/{args.runs}",
                          file=sys.stderr)
                    runs.append(run_sesd(standin, args, mode))
                label = f"{mode} {latency:g}ms"
                series[label] = (runs[-1].pop("arrivals"), runs[-1]["t0"])
                for r in runs:
                    r.pop("arrivals", None)
                rate = median([r["rcpt_s"] for r in runs])
                raw_rate = median([r["rcpt_s"] for r in raw]) if raw else float("nan")
                row: dict[str, Any] = {
                    "latency_ms": latency, "mode": mode, "n": args.n, "sesd_rcpt_s": rate,
                    "raw_rcpt_s": raw_rate, "sesd/raw": rate / raw_rate if raw else "",
                    "cpu_s_per_1k": median([r["cpu_s_per_1k"] for r in runs]),
                    "peak_1s": median([r["peak_1s"] for r in runs]),
                    "post_s": median([r["post_s"] for r in runs])}
                for role in ("api", "scheduler", "sender", "notifier"):
                    row[f"{role}_ms"] = median([r["cpu_ms_per_rcpt"].get(role, 0.0)
                                                for r in runs])
                for role in ROLES:
                    row[f"rss_{role}_mb"] = median([r["rss_mb"][role] for r in runs])
                rows.append(row)
                detail.append({"latency_ms": latency, "mode": mode, "sesd": runs, "raw": raw})
        finally:
            standin.close()
    out: dict[str, Any] = {"args": vars(args), "summary": rows, "runs": detail}
    if not args.no_plot:
        png = plot_rate(png_path("sends_per_sec", ts), series,
                        f"sesd sends/s, EMAIL_RATE=0, MAX_CONCURRENT={args.concurrency}",
                        bin_s=0.25)
        out["plot"] = str(png)
    path = write_results("sends_per_sec", out, ts)
    print(table([{k: v for k, v in row.items() if not k.startswith("rss_")} for row in rows]))
    print(f"\nsesd = first POST to last stand-in arrival; raw = one aiobotocore client, "
          f"concurrency {args.concurrency}; CPU = all sesd processes, <role>_ms = CPU ms per "
          f"recipient in that process; peak RSS per process in\nresults: {path}")
    if "plot" in out:
        print(f"plot: {out['plot']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
