"""Result intake: signed SNS notifications per second the API sustains (SES Delivery events,
SignatureVersion 2, certificate served by a local HTTP server that SNS_CERT_URL_PATTERN allows),
then genuine open-pixel GETs per second, then click redirects per second: first clicks (every
one a new Click row, written by the API's FULL-synchronous connection) and replays of the same
links. EMAIL_TRANSPORT=outbox; the requests the events refer to are scheduled far in the
future, so nothing is sent meanwhile.

    .venv/bin/python bench/results_rate.py --notifications 5000 --opens 20000 --concurrency 50 \
        --click-requests 2000 --links 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import secrets
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from common import (
    FAR_FUTURE,
    Service,
    add_common,
    emails,
    free_port,
    median,
    message,
    parse_env,
    percentile,
    post,
    progress,
    table,
    write_results,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from sesd.api.recipients import CLICK_FLUSH_INTERVAL
from sesd.sns import string_to_sign
from sesd.tracking import CLICK_PATH, click_token, make_token

TOPIC = "arn:aws:sns:us-east-1:123456789012:bench-ses-events"


def key_and_cert() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=7)).sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


def notification(key: rsa.RSAPrivateKey, cert_url: str, request_id: int, to: str) -> bytes:
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event = {"notificationType": "Delivery",
             "mail": {"timestamp": now, "messageId": f"bench-{uuid.uuid4()}",
                      "source": "sender@example.com", "destination": [to],
                      "headers": [{"name": "X-Request-ID", "value": str(request_id)}]},
             "delivery": {"timestamp": now, "recipients": [to], "processingTimeMillis": 500,
                          "smtpResponse": "250 ok"}}
    msg = {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": TOPIC,
           "Subject": "Amazon SES Email Event Notification",
           "Message": orjson.dumps(event).decode(), "Timestamp": now,
           "SignatureVersion": "2", "SigningCertURL": cert_url,
           "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"}
    signature = key.sign(string_to_sign(msg), padding.PKCS1v15(), hashes.SHA256())
    msg["Signature"] = base64.b64encode(signature).decode()
    return orjson.dumps(msg)


async def hammer(n: int, concurrency: int, desc: str,
                 call: Callable[[aiohttp.ClientSession, int], Any]) -> dict[str, Any]:
    """n calls through `concurrency` workers; call(session, i) returns the response status."""
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    items = iter(range(n))
    bar = progress(n, desc, "req")
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def worker() -> None:
            for i in items:
                t0 = time.perf_counter()
                try:
                    codes[await call(session, i)] += 1
                except (aiohttp.ClientError, TimeoutError):
                    codes[-1] += 1
                latencies.append(time.perf_counter() - t0)
                bar.update(1)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    bar.close()
    return {"n": n, "per_s": n / wall, "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "status_counts": {str(k): v for k, v in codes.items()}}


async def measure(args: argparse.Namespace, svc: Service, ids: list[int],
                  tracking_key: str, key: rsa.RSAPrivateKey, cert_pem: bytes,
                  cert_port: int) -> dict[str, Any]:
    app = web.Application()
    app.router.add_get("/SimpleNotificationService-bench.pem",
                       lambda _: web.Response(body=cert_pem, content_type="text/plain"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", cert_port).start()
    cert_url = f"http://127.0.0.1:{cert_port}/SimpleNotificationService-bench.pem"
    try:
        bodies = []
        with progress(args.notifications, "signing", "msg") as bar:
            for i in range(args.notifications):
                bodies.append(notification(key, cert_url, ids[i % len(ids)],
                                           f"r{i % len(ids)}@example.com"))
                bar.update(1)
        headers = {"x-amz-sns-message-type": "Notification",
                   "Content-Type": "text/plain; charset=UTF-8"}

        async def post(session: aiohttp.ClientSession, i: int) -> int:
            async with session.post(svc.url + "/v1/events/results", data=bodies[i],
                                    headers=headers) as resp:
                await resp.read()
                return resp.status

        async def pixel(session: aiohttp.ClientSession, i: int) -> int:
            rid = ids[i % len(ids)]
            url = (f"{svc.url}/v1/events/open?requestId={rid}"
                   f"&token={make_token(tracking_key, rid)}")
            async with session.get(url) as resp:
                await resp.read()
                return resp.status

        sns = await hammer(args.notifications, args.concurrency, "notifications", post)
        opens = await hammer(args.opens, args.concurrency, "opens", pixel)
        clicks = await click_runs(args, svc, tracking_key)
        return {"sns": sns, "opens": opens, **clicks}
    finally:
        await runner.cleanup()


def click_links(n: int) -> list[str]:
    return [f"https://shop.example/item/{i}?ref=bench&amp;n={i}" for i in range(n)]


async def click_runs(args: argparse.Namespace, svc: Service,
                     tracking_key: str) -> dict[str, Any]:
    """Every (request, link) of a fresh message clicked once, then all of them again."""
    topic = f"clicks-{uuid.uuid4().hex[:8]}"
    html = "<p>" + " ".join(f'<a href="{url}">item {i}</a>'
                            for i, url in enumerate(click_links(args.links))) + "</p>"
    post(svc, "/v1/messages", {"messages": [
        message(topic, emails(args.click_requests, prefix=topic), FAR_FUTURE, content=html)]})
    ids = [int(r[0]) for r in svc.query("SELECT id FROM requests WHERE topic_id = ? "
                                        "ORDER BY id", (topic,))]
    paths = [f"{CLICK_PATH}/{click_token(tracking_key, rid, link)}"
             for rid in ids for link in range(args.links)]
    secrets.SystemRandom().shuffle(paths)
    expected = [url.replace("&amp;", "&") for url in click_links(args.links)]
    wrong: list[str] = []

    async def click(session: aiohttp.ClientSession, i: int) -> int:
        async with session.get(svc.url + paths[i], allow_redirects=False) as resp:
            await resp.read()
            if i % 97 == 0 and resp.headers.get("Location") not in expected:
                wrong.append(str(resp.headers.get("Location")))
            return resp.status

    first = await hammer(len(paths), args.concurrency, "first clicks", click)
    replays = await hammer(len(paths), args.concurrency, "click replays", click)
    rows = svc.query("SELECT COUNT(*) FROM results WHERE status = 'Click' AND request_id "
                     "IN (SELECT id FROM requests WHERE topic_id = ?)", (topic,))[0][0]
    return {"first_clicks": first, "click_replays": replays, "click_rows": rows,
            "click_pairs": len(paths), "wrong_locations": wrong}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--notifications", type=int, default=5000, help="SNS posts per run")
    p.add_argument("--opens", type=int, default=20000, help="pixel GETs per run")
    p.add_argument("--concurrency", type=int, default=50, help="client concurrency")
    p.add_argument("--requests", type=int, default=1000, help="requests the events refer to")
    p.add_argument("--click-requests", type=int, default=2000,
                   help="recipients of the clicked message (fresh per run)")
    p.add_argument("--links", type=int, default=10, help="tracked links in that message")
    add_common(p, plot=False)
    args = p.parse_args()
    cert_port = free_port()
    tracking_key = secrets.token_urlsafe(32)
    # SNS_TOPIC_ARNS: required for SNS since it became an allow-list (else every post is 403).
    env = {"EMAIL_TRANSPORT": "outbox", "TRACKING_KEY": tracking_key, "SNS_TOPIC_ARNS": TOPIC,
           "SNS_CERT_URL_PATTERN": rf"^http://127\.0\.0\.1:{cert_port}/", **parse_env(args.env)}
    print("generating an RSA key and a self-signed certificate", file=sys.stderr)
    key, cert_pem = key_and_cert()
    svc = Service(env=env, keep=args.keep).start()
    try:
        post(svc, "/v1/messages", {"messages": [
            message("results", emails(args.requests), FAR_FUTURE)]})
        ids = [int(r[0]) for r in svc.query("SELECT id FROM requests ORDER BY id")]
        runs = []
        for i in range(args.runs):
            print(f"run {i + 1}/{args.runs}", file=sys.stderr)
            runs.append(asyncio.run(measure(args, svc, ids, tracking_key, key, cert_pem,
                                            cert_port)))
        stored = dict(svc.query("SELECT status, COUNT(*) FROM results GROUP BY status"))
        # Replays are counted in memory and reach the rows every few seconds.
        time.sleep(CLICK_FLUSH_INTERVAL + 1)
        hits = svc.query("SELECT SUM(hits) FROM results WHERE status = 'Click'")[0][0] or 0
    finally:
        svc.close()
    rows = []
    pairs = sum(r["click_pairs"] for r in runs)
    for kind, label, ok_status, stored_n, expect in (
            ("sns", "SNS Delivery notifications", "200", stored.get("Delivery", 0),
             runs[0]["sns"]["n"] * args.runs),
            # One Open row per request, however often its pixel is loaded.
            ("opens", "open pixel GETs", "200", stored.get("Open", 0),
             min(args.requests, runs[0]["opens"]["n"])),
            ("first_clicks", "first clicks (a row each)", "302",
             sum(r["click_rows"] for r in runs), pairs),
            ("click_replays", "click replays (counted)", "302", hits, 2 * pairs)):
        per_kind = [r[kind] for r in runs]
        bad = sum(v for r in per_kind for k, v in r["status_counts"].items() if k != ok_status)
        rows.append({"test": label, "n/run": per_kind[0]["n"], "concurrency": args.concurrency,
                     "per_s": median([r["per_s"] for r in per_kind]),
                     "p50_ms": median([r["p50_ms"] for r in per_kind]),
                     "p99_ms": median([r["p99_ms"] for r in per_kind]),
                     "non_ok": bad, "stored": stored_n, "expected": expect})
    wrong = [w for r in runs for w in r["wrong_locations"]]
    path = write_results("results_rate", {"args": vars(args), "summary": rows, "runs": runs,
                                          "stored": stored})
    print(table(rows))
    print(f"\nmode: EMAIL_TRANSPORT=outbox, events refer to {args.requests} requests scheduled "
          f"{FAR_FUTURE}; clicks on {args.click_requests} x {args.links} links per run; "
          f"medians over {args.runs} run(s). Click replays: stored = Click hits in all.\n"
          f"results: {path}")
    # Replays are counted in a bounded memory: a count past its bound is dropped by design,
    # so their hits may fall short of every click, never exceed it nor the rows' own.
    exact = [r for r in rows if r["test"] != "click replays (counted)"]
    ok = (all(r["non_ok"] == 0 for r in rows) and not wrong
          and all(r["stored"] == r["expected"] for r in exact)
          and pairs <= rows[-1]["stored"] <= rows[-1]["expected"])
    print("verdict:", "ok" if ok else f"FAIL (error answers, stored != expected, or wrong "
                                      f"redirects: {wrong[:3]})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
