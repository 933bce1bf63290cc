"""The pipeline against a local SES stand-in that enforces a sliding-second rate limit."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from sesd.store import FAILED, PROCESSING, SENT
from sesd.testing.harness import Service, Standin, messages

pytestmark = pytest.mark.slow


@pytest.fixture
def standin(spawn_standin: Callable[..., Standin]) -> Standin:
    """Here the stand-in runs as a subprocess, as sesd's SES."""
    return spawn_standin()


@pytest.fixture
def start(standin: Standin, spawn_sesd: Callable[..., Service]) -> Callable[..., Service]:
    """Start sesd pointed at the stand-in, with extra settings as keywords."""
    return lambda **env: spawn_sesd({**standin.env(), **env})


def post(service: Service, topic: str, n: int, **extra: Any) -> list[str]:
    emails = [f"{topic}-{i}@example.com" for i in range(n)]
    status, body = service.request("POST", "/v1/messages", messages(topic, emails, **extra))
    assert status == 200, body
    assert body["count"] == n
    return emails


def sends_per_request(log: dict[str, Any]) -> Counter[int]:
    return Counter(int(s["request_id"]) for s in log["sends"])


def sustained_rate(log: dict[str, Any]) -> float:
    """Recipients/s from the first arrival to the last, on the stand-in's clock. The sender
    paces sends evenly (no first-second burst), so every send after the first cost 1/rate."""
    times = sorted(s["t"] for s in log["sends"])
    return (len(times) - 1) / (times[-1] - times[0])


@pytest.mark.parametrize(("rate", "total", "bulk"), [(14, 70, "true"), (200, 1000, "true"),
                                                      (200, 1000, "false"),
                                                      (1000, 4000, "true")])
def test_exact_rate_no_throttles(standin: Standin, start: Callable[..., Service], rate: int,
                                 total: int, bulk: str) -> None:
    standin.configure(max_rate=rate)
    service = start(EMAIL_RATE=str(rate), EMAIL_BULK=bulk)
    post(service, "rate", total)
    assert service.wait_terminal(total, timeout=total / rate + 30) == {SENT: total}
    log = standin.log()
    assert log["counters"]["throttled"] == 0
    assert log["counters"]["peak_window"] <= rate
    per_request = sends_per_request(log)
    assert len(per_request) == total and set(per_request.values()) == {1}
    assert sustained_rate(log) >= 0.99 * rate


def test_faults_retried_and_rejections_failed(standin: Standin,
                                              start: Callable[..., Service]) -> None:
    standin.configure(error_rate=0.1, throttle_rate=0.05, reject_pattern=r"^faults-1\d@",
                      seed=7)
    service = start(EMAIL_RATE="0", MAX_ATTEMPTS="12")
    post(service, "faults", 200)
    counts = service.wait_terminal(200, timeout=150)
    assert counts == {SENT: 190, FAILED: 10}
    per_request = sends_per_request(standin.log())
    assert set(per_request.values()) == {1}  # failed attempts were never accepted
    errors = [row[0] for row in service.query(f"SELECT error FROM requests WHERE status={FAILED}")]
    assert all(e.startswith(("MessageRejected", "MESSAGE_REJECTED")) for e in errors), errors
    assert any(e.get("event") == "retrying" for e in service.log_events())


def test_scheduled_batch_leaves_on_time(standin: Standin, start: Callable[..., Service]) -> None:
    service = start(EMAIL_RATE="0")
    at = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=3)
    post(service, "later", 50, scheduledAt=at.isoformat())
    service.wait_terminal(50, timeout=20)
    times = sorted(s["t"] for s in standin.log()["sends"])
    assert times[0] >= at.timestamp()
    assert times[-1] <= at.timestamp() + 1.0


@pytest.mark.parametrize("role", ["sender", "scheduler"])
def test_sigkill_mid_run_loses_nothing(standin: Standin, start: Callable[..., Service],
                                       role: str) -> None:
    concurrency = 20
    standin.configure(latency_ms=20)
    service = start(EMAIL_RATE="500", MAX_CONCURRENT=str(concurrency), EMAIL_BULK="false")
    post(service, "crash", 3000)
    while service.statuses().get(SENT, 0) < 800:
        time.sleep(0.05)
    os.kill(service.pids()[role], signal.SIGKILL)
    assert service.wait_terminal(3000, timeout=90) == {SENT: 3000}
    per_request = sends_per_request(standin.log())
    assert len(per_request) == 3000
    duplicates = sum(n - 1 for n in per_request.values())
    # Only calls in flight when the process died, or answered but not yet written back
    # (outcomes are written every 25 ms; 50 ms of sends at 500/s allows for a busy box),
    # can have gone out twice.
    assert duplicates <= concurrency + 25
    health = service.wait_healthy()
    assert health["processes"][role]["restarts"] == 1


def test_sigterm_mid_run_then_restart_no_duplicates(standin: Standin,
                                                    start: Callable[..., Service]) -> None:
    service = start(EMAIL_RATE="300", EMAIL_BULK="false")
    post(service, "term", 1500)
    while service.statuses().get(SENT, 0) < 300:
        time.sleep(0.05)
    started = time.monotonic()
    assert service.stop(signal.SIGTERM, timeout=30) == 0
    assert time.monotonic() - started < 5 + 5
    # Nothing left processing:
    assert SENT in service.statuses() and PROCESSING not in service.statuses()
    service.start()
    assert service.wait_terminal(1500, timeout=60) == {SENT: 1500}
    per_request = sends_per_request(standin.log())
    assert len(per_request) == 1500 and set(per_request.values()) == {1}


def test_sending_paused_holds_everything(standin: Standin, start: Callable[..., Service]) -> None:
    standin.configure(paused=True)
    service = start(EMAIL_RATE="0")
    post(service, "paused", 20)
    time.sleep(2)
    assert FAILED not in service.statuses()  # nothing burnt into failures
    assert any("paused" in str(e.get("event")) for e in service.log_events())
