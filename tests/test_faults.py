"""SES faults end to end: an outage (connection refused), hung calls, a paused account."""

from __future__ import annotations

import concurrent.futures
import time
from collections import Counter
from collections.abc import Callable

import pytest

from sesd.store import FAILED, SENT
from sesd.testing.harness import Service, Standin, free_port, messages

pytestmark = pytest.mark.slow


def test_ses_down_then_back_everything_sent_once(spawn_standin: Callable[..., Standin],
                                                 spawn_sesd: Callable[..., Service]) -> None:
    port = free_port()
    standin = spawn_standin("--port", str(port))
    service = spawn_sesd({**standin.env(), "EMAIL_RATE": "0", "EMAIL_BULK": "false",
                          "MAX_CONCURRENT": "10"})
    status, _ = service.request("POST", "/v1/messages",
                                messages("outage", [f"o{i}@example.com" for i in range(50)]))
    assert status == 200
    service.wait_terminal(50, timeout=30)
    sent_before = Counter(int(s["request_id"]) for s in standin.log()["sends"])
    standin.close()  # SES is down: connection refused
    status, _ = service.request("POST", "/v1/messages",
                                messages("during", [f"d{i}@example.com" for i in range(100)]))
    assert status == 200
    time.sleep(12)
    assert FAILED not in service.statuses()  # nothing burnt into failures while SES was away
    standin = spawn_standin("--port", str(port))  # back, with an empty log
    counts = service.wait_terminal(150, timeout=90)
    assert counts == {SENT: 150}
    sent_after = Counter(int(s["request_id"]) for s in standin.log()["sends"])
    assert len(sent_after) == 100 and set(sent_after.values()) == {1}
    assert not set(sent_after) & set(sent_before)
    events = service.log_events()
    retries = [e for e in events if e.get("event") == "retrying"]
    # The circuit opens after a few failures: a probe at a time, not a retry storm.
    assert 0 < len(retries) < 100, len(retries)
    assert max(e["attempt"] for e in retries) < 8


def test_hung_calls_time_out_and_are_retried(spawn_standin: Callable[..., Standin],
                                             spawn_sesd: Callable[..., Service]) -> None:
    standin = spawn_standin("--hang-rate", "0.2", "--hang-seconds", "30", "--seed", "5")
    service = spawn_sesd({**standin.env(), "EMAIL_RATE": "0", "EMAIL_BULK": "false",
                          "SES_TIMEOUT": "1", "MAX_ATTEMPTS": "20"})
    status, _ = service.request("POST", "/v1/messages",
                                messages("hang", [f"h{i}@example.com" for i in range(40)]))
    assert status == 200
    assert service.wait_terminal(40, timeout=90) == {SENT: 40}
    # The stand-in accepts a hung call before hanging (as SES may): only those can repeat.
    per_request = Counter(int(s["request_id"]) for s in standin.log()["sends"])
    assert len(per_request) == 40
    timeouts = [e for e in service.log_events() if e.get("event") == "retrying"]
    assert timeouts
    assert sum(n - 1 for n in per_request.values()) <= len(timeouts)


def test_ingest_while_sending_at_full_speed_never_reports_a_locked_database(
        spawn_standin: Callable[..., Standin], spawn_sesd: Callable[..., Service]) -> None:
    standin = spawn_standin()
    service = spawn_sesd({**standin.env(), "EMAIL_RATE": "0"})
    status, _ = service.request("POST", "/v1/messages",
                                messages("fast", [f"f{i}@example.com" for i in range(20000)]))
    assert status == 200

    def post(k: int) -> tuple[int, float]:
        started = time.monotonic()
        status, _ = service.request(
            "POST", "/v1/messages",
            messages(f"big{k}", [f"b{k}-{i}@example.com" for i in range(20000)],
                     scheduledAt="2099-01-01T00:00:00Z"))
        return status, time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(post, range(8)))
    assert [status for status, _ in answers] == [200] * 8
    service.wait_terminal(20000, timeout=60)
    logs = service.logs().lower()
    assert "database is locked" not in logs and "busyerror" not in logs
    assert '"level":"error"' not in logs
