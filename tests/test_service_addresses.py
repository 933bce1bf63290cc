"""Black-box: addresses through `python run.py`, the SES stand-in and the outbox.

Suppressed mailboxes stay unmailed whatever their spelling; SES receives Punycode domains; what
SES cannot deliver answers 400 and stores nothing; validating a large IDN list never freezes
/health; an Idempotency-Key that is not UTF-8 is a 400, not a 500.
"""

from __future__ import annotations

import email.parser
import email.policy
import http.client
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sesd.testing.harness import API_KEY, Service, Standin, messages

pytestmark = pytest.mark.slow

SUPPRESSED = ["ann@bücher.de", "bob@example.com"]
SPELLINGS = ["ann@BÜCHER.de", "ann@xn--bcher-kva.de", "Ann@Bücher.DE", "BOB@Example.COM"]


def suppression_path(address: str) -> str:
    return "/v1/suppressions/" + urllib.parse.quote(address, safe="@")


def request_count(service: Service) -> int:
    with service.db() as conn:
        return int(conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0])


@pytest.fixture
def standin() -> Iterator[Standin]:
    stand = Standin()
    yield stand
    stand.close()


@pytest.fixture
def ses_service(tmp_path: Path, standin: Standin) -> Iterator[Service]:
    svc = Service(tmp_path, {**standin.env(), "EMAIL_RATE": "50"}).start()
    yield svc
    svc.kill()


@pytest.fixture
def outbox_service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path, {"EMAIL_RATE": "0"}).start()
    yield svc
    svc.kill()


def test_no_spelling_of_a_suppressed_address_reaches_ses(ses_service: Service,
                                                         standin: Standin) -> None:
    for address in SUPPRESSED:
        status, body = ses_service.request("PUT", suppression_path(address))
        assert status == 200, body
    # One message per spelling: within one message they would be one recipient.
    body = {"messages": [messages(f"t{i}", [address])["messages"][0]
                         for i, address in enumerate([*SPELLINGS, "user@bücher.de"])]}
    status, answer = ses_service.request("POST", "/v1/messages", body)
    assert status == 200, answer
    assert answer["count"] == 5
    ses_service.wait_terminal(5, timeout=30)
    with ses_service.db() as conn:
        rows = conn.execute("SELECT topic_id, email, status, error FROM requests ORDER BY id")
        outcome = [(topic, email, status, error) for topic, email, status, error in rows]
    assert outcome == [
        ("t0", "ann@xn--bcher-kva.de", 4, "suppressed: manual"),
        ("t1", "ann@xn--bcher-kva.de", 4, "suppressed: manual"),
        ("t2", "Ann@xn--bcher-kva.de", 4, "suppressed: manual"),
        ("t3", "BOB@example.com", 4, "suppressed: manual"),
        ("t4", "user@xn--bcher-kva.de", 2, None),
    ]
    sends = standin.log()["sends"]
    assert [send["to"] for send in sends] == [["user@xn--bcher-kva.de"]]


def test_undeliverable_addresses_answer_400_and_store_nothing(ses_service: Service,
                                                              standin: Standin) -> None:
    for address, says in [("zoë@example.com", "SES cannot deliver"),
                          ("=?utf-8?q?victim=40target.example=2C?=@attacker.example",
                           "RFC 2047 encoded word")]:
        body = messages("t", ["fine@example.com", address])
        status, answer = ses_service.request("POST", "/v1/messages", body)
        assert status == 400, answer
        assert address in answer["error"] and says in answer["error"]
    assert request_count(ses_service) == 0
    time.sleep(0.5)  # nothing was nudged into the pipeline either
    assert standin.log()["sends"] == []


def test_the_outbox_writes_the_punycode_address(outbox_service: Service) -> None:
    status, answer = outbox_service.request("POST", "/v1/messages",
                                            messages("t", ["user@Bücher.DE"]))
    assert status == 200, answer
    outbox_service.wait_terminal(1, timeout=30)
    (eml,) = (outbox_service.workdir / "outbox").glob("*.eml")
    with eml.open("rb") as f:
        parsed = email.parser.BytesParser(policy=email.policy.default).parse(f)
    assert parsed["To"] == "user@xn--bcher-kva.de"


def test_health_answers_while_a_large_idn_list_is_validated(outbox_service: Service) -> None:
    # Distinct domains: no cache helps, so validation takes seconds (about 4 s on the event loop
    # before; the API froze for as long).
    emails = [f"user{i}@bücher-{i}.de" for i in range(20_000)]
    body = messages("big", emails, scheduledAt="2999-01-01T00:00:00Z")
    answer: dict[str, Any] = {}

    def post() -> None:
        answer["result"] = outbox_service.request("POST", "/v1/messages", body, timeout=120)

    poster = threading.Thread(target=post)
    started = time.monotonic()
    poster.start()
    latencies: list[float] = []
    while poster.is_alive():
        before = time.monotonic()
        status, _ = outbox_service.request("GET", "/health", key=None, timeout=30)
        latencies.append(time.monotonic() - before)
        assert status == 200
        time.sleep(0.02)
    poster.join()
    took = time.monotonic() - started
    status, result = answer["result"]
    assert status == 200, result
    assert result["count"] == 20_000
    assert took > 1.0, "validation too quick to show anything; use more or slower addresses"
    assert max(latencies) < 1.0, (max(latencies), took)
    assert len(latencies) >= 10


def test_idempotency_key_that_is_not_utf8_is_400(outbox_service: Service) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", outbox_service.port, timeout=10)
    try:
        conn.putrequest("POST", "/v1/messages")
        conn.putheader("x-api-key", API_KEY)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Idempotency-Key", b"batch-\xff\xfe")
        payload = (b'{"messages":[{"topicId":"t","emails":["a@example.com"],'
                   b'"subject":"s","content":"c"}]}')
        conn.putheader("Content-Length", str(len(payload)))
        conn.endheaders(payload)
        resp = conn.getresponse()
        text = resp.read().decode()
    finally:
        conn.close()
    assert resp.status == 400, text
    assert "Idempotency-Key must be valid UTF-8" in text
    assert request_count(outbox_service) == 0
    # The service is fine afterwards, and a UTF-8 key works.
    status, _ = outbox_service.request("POST", "/v1/messages", messages("t", ["a@example.com"]),
                                       headers={"Idempotency-Key": "batch-1"})
    assert status == 200
