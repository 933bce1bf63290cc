"""Black-box tests: `python run.py` as a real subprocess, real HTTP, real signals."""

from __future__ import annotations

import email.parser
import email.policy
import os
import signal
import time
from collections.abc import Callable

import pytest

from sesd.store import SENT
from sesd.testing.harness import API_KEY, Service, messages

pytestmark = pytest.mark.slow


@pytest.fixture
def service(spawn_sesd: Callable[..., Service]) -> Service:
    return spawn_sesd({"EMAIL_RATE": "0"})


def test_outbox_end_to_end(service: Service) -> None:
    emails = [f"user{i}@example.com" for i in range(25)]
    status, body = service.request("POST", "/v1/messages", messages("welcome", emails))
    assert status == 200, body
    assert body["count"] == 25
    service.wait_terminal(25, timeout=30)
    status, stats = service.request("GET", "/v1/topics/welcome")
    assert status == 200
    assert stats["request"] == {"total": 25, "created": 0, "processing": 0, "sent": 25,
                                "failed": 0, "stopped": 0}
    files = sorted((service.workdir / "outbox").glob("*.eml"))
    assert len(files) == 25
    with files[0].open("rb") as f:
        parsed = email.parser.BytesParser(policy=email.policy.default).parse(f)
    assert parsed["Subject"] == "Hello"
    assert parsed["To"] in emails
    request_id = int(parsed["X-Request-ID"])
    html = parsed.get_body(("html",)).get_content()
    assert "Hi there" in html
    assert f"/v1/events/open?requestId={request_id}&amp;token=" in html
    status, counts = service.request("GET", "/v1/events/counts/sent?hours=1")
    assert status == 200 and counts["count"] == 25


def test_health_reports_every_process(service: Service) -> None:
    status, health = service.request("GET", "/health", key=None)
    assert status == 200
    assert health["status"] == "ok"
    assert health["transport"] == "outbox"
    assert set(health["processes"]) == {"api", "scheduler", "sender", "notifier"}
    for proc in health["processes"].values():
        assert proc["alive"] is True and proc["pid"] > 0 and proc["restarts"] == 0


def test_sigterm_exits_zero(service: Service) -> None:
    assert service.stop(signal.SIGTERM, timeout=20) == 0
    events = [e.get("event") for e in service.log_events()]
    assert "shutting down" in events and "stopped" in events


def test_sigint_exits_zero(service: Service) -> None:
    assert service.stop(signal.SIGINT, timeout=20) == 0


@pytest.mark.parametrize("role", ["api", "scheduler", "sender", "notifier"])
def test_killed_child_comes_back_and_work_continues(service: Service, role: str) -> None:
    before = service.pids()
    os.kill(before[role], signal.SIGKILL)
    deadline = time.monotonic() + 15
    health: dict = {}
    while time.monotonic() < deadline:
        try:
            status, health = service.request("GET", "/health", timeout=2)
        except OSError:
            time.sleep(0.1)
            continue
        proc = health["processes"][role]
        if status == 200 and proc["alive"] and proc["pid"] != before[role]:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"{role} not back: {health}")
    assert health["processes"][role]["restarts"] == 1
    status, body = service.request("POST", "/v1/messages",
                                   messages("after-kill", ["a@example.com", "b@example.com"]))
    assert status == 200, body
    service.wait_terminal(2, timeout=20)
    assert service.statuses() == {SENT: 2}


def test_stop_topic_before_due(service: Service) -> None:
    later = "2999-01-01T00:00:00+00:00"
    status, body = service.request("POST", "/v1/messages",
                                   messages("later", ["x@example.com", "y@example.com"],
                                            scheduledAt=later))
    assert status == 200 and body["count"] == 2
    status, body = service.request("DELETE", "/v1/topics/later")
    assert status == 200 and body["count"] == 2
    _, stats = service.request("GET", "/v1/topics/later")
    assert stats["request"]["stopped"] == 2 and stats["request"]["sent"] == 0


def test_second_instance_on_same_database_refuses(service: Service,
                                                  spawn_sesd: Callable[..., Service]) -> None:
    # Same database; the port does not matter, the lock is taken first.
    other = spawn_sesd({"DB_PATH": str(service.db_path)}, start=False)
    result = other.run(timeout=30)
    assert result.returncode == 3
    assert "already running" in result.stderr
    assert "Traceback" not in result.stderr


def test_protected_routes_need_the_key(service: Service) -> None:
    for method, path in [("POST", "/v1/messages"), ("GET", "/v1/topics/t"),
                         ("DELETE", "/v1/topics/t"), ("GET", "/v1/events/counts/sent")]:
        for key in (None, "wrong", API_KEY + "x"):
            status, body = service.request(method, path, {} if method == "POST" else None,
                                           key=key)
            assert status == 401, (method, path, key)
            assert set(body) == {"error", "path", "method", "timestamp"}
            assert body["path"] == path and body["method"] == method


def test_port_in_use_is_a_clear_error(service: Service,
                                      spawn_sesd: Callable[..., Service]) -> None:
    other = spawn_sesd({"SERVER_PORT": str(service.port)}, start=False)
    result = other.run(timeout=60)
    assert result.returncode == 4
    assert "cannot listen" in result.stdout + result.stderr
