"""Webhooks through `python run.py`: a real receiver on 127.0.0.1 verifies every signature
with the standardwebhooks package; faults of the receiver and SIGKILLs of the notifier and of
the supervisor lose no event (duplicates only as retries of the same webhook-id)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sesd import events, tracking
from sesd.store import SENT
from sesd.testing.harness import Service, messages
from tests.test_public_service import CertServer, post_sns
from tests.test_sns import FIXTURES, TOPIC, _make_cert, notification, sign
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.slow

FAST_RETRIES = {"WEBHOOK_ALLOW_PRIVATE": "true", "WEBHOOK_RETRY_BASE": "0.2",
                "WEBHOOK_RETRY_MAX": "1", "EMAIL_RATE": "0"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.close()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for svc in started:
        svc.kill()


def start(services: list[Service], workdir: Path, env: dict[str, str]) -> Service:
    svc = Service(workdir, {**FAST_RETRIES, **env})
    services.append(svc)
    return svc.start()


def subscribe(svc: Service, receiver: Receiver, **extra: Any) -> int:
    status, body = svc.request("POST", "/v1/webhooks", {"url": receiver.url, **extra})
    assert status == 200, body
    receiver.secret = body["secret"]
    return int(body["id"])


def post(svc: Service, topic: str, emails: list[str]) -> None:
    status, body = svc.request("POST", "/v1/messages", messages(topic, emails))
    assert status == 200, body


def sent_requests(svc: Service) -> dict[int, tuple[str, str, str]]:
    with svc.db() as conn:
        return {rid: (topic, email, mid) for rid, topic, email, mid in conn.execute(
            f"SELECT id, topic_id, email, message_id FROM requests WHERE status = {SENT}")}


def assert_none_lost(receiver: Receiver, svc: Service, total: int, timeout: float) -> None:
    """Every sent request's message.sent arrived under one webhook-id; copies only repeat it."""
    got = receiver.wait_for(total, events.SENT, timeout=timeout)
    sent = sent_requests(svc)
    assert len(sent) == total
    assert sorted(d.data["requestId"] for d in got) == sorted(sent), "events lost"
    for d in got:
        topic, email, message_id = sent[d.data["requestId"]]
        assert (d.data["topicId"], d.data["email"], d.data["messageId"]) == (
            topic, email, message_id)
    by_id: dict[str, set[str]] = {}
    for d in receiver.delivered:
        by_id.setdefault(d.webhook_id, set()).add(json.dumps([d.type, d.data], sort_keys=True))
    assert all(len(bodies) == 1 for bodies in by_id.values()), "an id carried two events"
    assert receiver.bad_signatures == 0


def test_every_sent_request_yields_one_signed_sent_event(tmp_path: Path, services: list[Service],
                                                         receiver: Receiver) -> None:
    svc = start(services, tmp_path, {})
    subscribe(svc, receiver)
    post(svc, "news", [f"n{i}@example.com" for i in range(150)])
    post(svc, "receipts", [f"r{i}@example.com" for i in range(150)])
    svc.wait_terminal(300)
    assert_none_lost(receiver, svc, 300, timeout=30)
    time.sleep(0.5)
    assert len(receiver.delivered) == 300  # no faults: no copies at all
    assert set(receiver.attempts.values()) == {1}
    _, hook = svc.request("GET", "/v1/webhooks/1")
    assert hook["deliveries"] == {"pending": 0, "delivered": 300, "failed": 0}


def test_filters_and_events_before_registration(tmp_path: Path, services: list[Service],
                                                receiver: Receiver) -> None:
    svc = start(services, tmp_path, {})
    post(svc, "before", ["early@example.com"])  # no webhook yet: no event is even stored
    svc.wait_terminal(1)
    subscribe(svc, receiver, events=[events.FAILED])
    post(svc, "after", ["late@example.com"])
    svc.wait_terminal(2)
    time.sleep(1.0)
    assert receiver.delivered == []
    with svc.db() as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1  # the late send
        assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 0


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ses_event(name: str, request_id: int, email: str) -> str:
    data = json.loads((FIXTURES / name).read_text())
    data["mail"]["headers"].append({"name": "X-Request-ID", "value": str(request_id)})
    data["mail"]["destination"] = [email]
    if "bounce" in data:
        data["bounce"]["bouncedRecipients"][0]["emailAddress"] = email
    return json.dumps(data)


def test_sns_results_and_opens_yield_their_events(tmp_path: Path, services: list[Service],
                                                  receiver: Receiver,
                                                  key: rsa.RSAPrivateKey) -> None:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    certs = CertServer(_make_cert(key, not_before=now - dt.timedelta(days=1),
                                  not_after=now + dt.timedelta(days=1)))
    try:
        svc = start(services, tmp_path, {**certs.env(), "TRACKING_KEY": "k" * 32})
        subscribe(svc, receiver)
        post(svc, "t", ["d@example.com", "b@example.com", "o@example.com"])
        svc.wait_terminal(3)
        receiver.wait_for(3, events.SENT)
        ids = {email: rid for rid, (_, email, _) in sent_requests(svc).items()}
        for n, (name, email) in enumerate([("event-delivery.json", "d@example.com"),
                                           ("event-bounce.json", "b@example.com")]):
            msg = sign({**notification(message=ses_event(name, ids[email], email)),
                        "MessageId": f"sns-{n}", "TopicArn": TOPIC}, key,
                       cert_url=certs.cert_url)
            for _ in range(2):  # SNS retries: the second is a duplicate, no second event
                status, body = post_sns(svc, msg)
                assert status == 200, body
        pixel = tracking.pixel_url("", "k" * 32, ids["o@example.com"])
        for _ in range(3):
            assert svc.request("GET", pixel, key=None)[0] == 200
        delivered = receiver.wait_for(1, events.DELIVERED)
        bounced = receiver.wait_for(1, events.BOUNCED)
        opened = receiver.wait_for(1, events.OPENED)
        time.sleep(0.5)
        assert [d.data["requestId"] for d in delivered] == [ids["d@example.com"]]
        assert delivered[0].data["delivery"]["smtpResponse"].startswith("250")
        assert [d.data["requestId"] for d in bounced] == [ids["b@example.com"]]
        assert bounced[0].data["bounce"]["bounceType"] == "Permanent"
        assert bounced[0].data["email"] == "b@example.com"
        assert [d.data["requestId"] for d in opened] == [ids["o@example.com"]]
        assert len(receiver.of_type(events.OPENED)) == 1  # replays of the pixel: one event
        # The bounce suppressed the address: a new request to it is stopped, with its event.
        post(svc, "t", ["b@example.com"])
        svc.wait_terminal(4)
        (stopped,) = receiver.wait_for(1, events.SUPPRESSED)
        assert stopped.data["email"] == "b@example.com"
        assert stopped.data["error"].startswith("suppressed:")
        assert receiver.bad_signatures == 0
    finally:
        certs.close()


def test_failing_slow_then_down_endpoint_loses_nothing(tmp_path: Path, services: list[Service],
                                                       receiver: Receiver) -> None:
    svc = start(services, tmp_path, {"WEBHOOK_TIMEOUT": "1"})
    wid = subscribe(svc, receiver)
    receiver.mode = "error"
    post(svc, "faults", [f"e{i}@example.com" for i in range(60)])
    svc.wait_terminal(60)
    time.sleep(3)
    assert receiver.attempts and not receiver.delivered  # tried, refused with 500s
    _, page = svc.request("GET", f"/v1/webhooks/{wid}/deliveries?status=pending&limit=5")
    assert page["deliveries"][0]["lastError"].startswith("answered 500")
    receiver.slow_for, receiver.mode = 3.0, "slow"
    post(svc, "faults", [f"s{i}@example.com" for i in range(60)])
    svc.wait_terminal(120)
    time.sleep(3)
    receiver.stop_listening()
    receiver.mode = "ok"
    post(svc, "faults", [f"d{i}@example.com" for i in range(60)])
    svc.wait_terminal(180)
    time.sleep(20)
    _, page = svc.request("GET", f"/v1/webhooks/{wid}/deliveries?status=pending&limit=1000")
    errors = {d["lastError"].split(":")[0] for d in page["deliveries"] if d["lastError"]}
    assert any("no answer within 1 s" in e for e in errors) or any(
        "Connect" in e for e in errors), errors
    assert len(page["deliveries"]) == 180  # nothing delivered, nothing given up
    receiver.listen()
    assert_none_lost(receiver, svc, 180, timeout=30)
    assert max(receiver.attempts.values()) > 1  # retried under the same webhook-id
    _, hook = svc.request("GET", f"/v1/webhooks/{wid}")
    deadline = time.monotonic() + 10
    while hook["deliveries"]["delivered"] < 180 and time.monotonic() < deadline:
        time.sleep(0.2)
        _, hook = svc.request("GET", f"/v1/webhooks/{wid}")
    assert hook["deliveries"] == {"pending": 0, "delivered": 180, "failed": 0}


def test_sigkill_of_the_notifier_then_the_supervisor_loses_nothing(
        tmp_path: Path, services: list[Service], receiver: Receiver) -> None:
    svc = start(services, tmp_path, {"WEBHOOK_CONCURRENCY": "4"})
    subscribe(svc, receiver)
    receiver.delay = 0.01  # ~400 deliveries/s at most: the kills land mid-delivery
    post(svc, "kills", [f"k{i}@example.com" for i in range(1500)])
    while len(receiver.delivered) < 200:
        time.sleep(0.01)
    os.kill(svc.pids()["notifier"], signal.SIGKILL)
    deadline = time.monotonic() + 15
    while svc.request("GET", "/health")[1]["processes"]["notifier"]["restarts"] < 1:
        assert time.monotonic() < deadline, "notifier not restarted"
        time.sleep(0.1)
    while len(receiver.delivered) < 700:
        time.sleep(0.01)
    assert svc.proc is not None
    svc.proc.send_signal(signal.SIGKILL)  # the children die with it (PDEATHSIG)
    svc.proc.wait(10)
    time.sleep(1)
    arrived = len(receiver.by_id())
    assert arrived < 1500, "nothing was left to deliver after the kill: no test"
    svc.start()  # the same database: the pending deliveries and unfanned events remain
    svc.wait_terminal(1500)
    assert_none_lost(receiver, svc, 1500, timeout=60)


def test_connect_time_guard_refuses_a_host_that_now_resolves_to_loopback(
        tmp_path: Path, services: list[Service], receiver: Receiver) -> None:
    svc = start(services, tmp_path, {"WEBHOOK_ALLOW_PRIVATE": "false"})
    status, body = svc.request("POST", "/v1/webhooks", {"url": receiver.url})
    assert status == 400 and "loopback" in body["error"]
    # As if the name had resolved to a public address at registration and to 127.0.0.1 since
    # (DNS rebinding): the row is planted, the registration check is not on this path.
    conn = apsw.Connection(str(svc.db_path))
    conn.set_busy_timeout(10_000)
    conn.execute("INSERT INTO webhooks (url, events, secret, after_event, created_at) "
                 "VALUES (?, NULL, 'whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=', 0, 0)",
                 (f"http://localhost:{receiver.port}/hook",))
    conn.close()
    post(svc, "rebind", ["a@example.com"])
    svc.wait_terminal(1)
    deadline = time.monotonic() + 15
    while True:
        _, page = svc.request("GET", "/v1/webhooks/1/deliveries")
        rows = page["deliveries"]
        if rows and rows[0]["attempts"] >= 2:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)
    assert "localhost resolves to 127.0.0.1" in rows[0]["lastError"]
    assert "loopback" in rows[0]["lastError"] and rows[0]["lastStatus"] is None
    assert receiver.attempts == {}  # not one connection reached it
