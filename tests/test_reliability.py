"""The shapes real users send, through `python run.py` and the SES stand-in: bursts of distinct
messages, stops racing the sender, failures that must be visible, a message that kills the
sender, and configuration mistakes that must stop sesd at start."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sesd.store import FAILED, SENT
from sesd.testing.harness import ROOT, Service, Standin

pytestmark = pytest.mark.slow


@pytest.fixture
def standin() -> Iterator[Standin]:
    s = Standin()
    yield s
    s.close()


def distinct(topic: str, n: int, start: int = 0) -> dict[str, Any]:
    """n one-recipient messages, each with its own subject and body: a transactional burst."""
    return {"messages": [{"topicId": topic, "emails": [f"{topic}-{i}@example.com"],
                          "subject": f"Receipt {i}", "content": f"<p>Order {i} is paid.</p>"}
                         for i in range(start, start + n)]}


def sends(standin: Standin) -> Counter[int]:
    return Counter(int(s["request_id"]) for s in standin.log()["sends"])


def test_a_burst_of_distinct_messages_is_sent_once_without_a_restart(
        tmp_path: Path, standin: Standin) -> None:
    service = Service(tmp_path, {**standin.env(), "EMAIL_RATE": "0"}).start()
    try:
        for part in range(3):
            status, body = service.request("POST", "/v1/messages",
                                           distinct("burst", 1000, part * 1000))
            assert status == 200 and body["count"] == 1000, body
        assert service.wait_terminal(3000, timeout=120) == {SENT: 3000}
        per_request = sends(standin)
        assert len(per_request) == 3000 and set(per_request.values()) == {1}
        health = service.wait_healthy()
        assert all(p["restarts"] == 0 for p in health["processes"].values()), health
        by_subject = {s["subject"]: s["html"] for s in standin.log()["sends"]}
        assert "<p>Order 2345 is paid.</p>" in by_subject["Receipt 2345"]
    finally:
        service.kill()


def test_a_stop_answers_exactly_what_ends_stopped_and_none_of_it_is_sent(
        tmp_path: Path, standin: Standin) -> None:
    # A slow SES widens the window in which a call is in flight when the stop arrives.
    standin.configure(latency_ms=150)
    service = Service(tmp_path, {**standin.env(), "EMAIL_RATE": "8",
                                 "EMAIL_BULK": "false"}).start()
    try:
        for round_ in range(5):
            topic = f"stop-{round_}"
            emails = [f"{topic}-{i}@example.com" for i in range(30)]
            status, _ = service.request("POST", "/v1/messages", {"messages": [
                {"topicId": topic, "emails": emails, "subject": "S", "content": "<p>c</p>"}]})
            assert status == 200
            while service.request("GET", f"/v1/topics/{topic}")[1]["request"]["sent"] < 3:
                time.sleep(0.02)
            status, body = service.request("DELETE", f"/v1/topics/{topic}")
            assert status == 200
            answered = body["count"]
            assert 0 < answered < 30
            time.sleep(1.0)  # whatever was in flight has answered by now
            _, stats = service.request("GET", f"/v1/topics/{topic}")
            counts = stats["request"]
            assert counts["stopped"] == answered, (round_, counts, answered)
            assert counts["created"] == counts["processing"] == 0, counts
            with service.db() as db:
                rows = dict(db.execute("SELECT id, status FROM requests WHERE topic_id = ?",
                                       (topic,)))
            stopped = {rid for rid, st in rows.items() if st == 4}
            logged = set(sends(standin)) & set(rows)
            assert not stopped & logged, "a stopped request reached SES"
            assert logged == {rid for rid, st in rows.items() if st == 2}
            assert len(stopped) + len(logged) == 30
    finally:
        service.kill()


def test_failures_are_logged_once_and_listed_with_ses_text(tmp_path: Path,
                                                          standin: Standin) -> None:
    standin.configure(reject_pattern=r"^bad-")
    service = Service(tmp_path, {**standin.env(), "EMAIL_RATE": "0"}).start()
    try:
        emails = [f"bad-{i}@example.com" for i in range(3)] + ["good@example.com"]
        status, _ = service.request("POST", "/v1/messages", {"messages": [
            {"topicId": "mixed", "emails": emails, "subject": "S", "content": "<p>c</p>"}]})
        assert status == 200
        assert service.wait_terminal(4, timeout=30) == {SENT: 1, FAILED: 3}
        status, page = service.request("GET", "/v1/topics/mixed/requests?status=failed")
        assert status == 200 and page["next"] is None
        assert sorted(r["email"] for r in page["requests"]) == sorted(emails[:3])
        for row in page["requests"]:
            assert row["status"] == "failed" and row["attempts"] == 1
            assert row["error"].startswith("MESSAGE_REJECTED: Email address is not verified")
            assert "<" not in row["error"]
        warnings = [e for e in service.log_events() if e.get("event") == "request failed"]
        assert sorted(e["request_id"] for e in warnings) == sorted(
            r["id"] for r in page["requests"])
        assert all(e["topic"] == "mixed" and e["code"] == "MESSAGE_REJECTED" for e in warnings)
        status, body = service.request("GET", "/v1/topics/mixed/requests?status=nope")
        assert status == 400 and "status must be" in body["error"]
    finally:
        service.kill()


def test_a_message_that_kills_the_sender_is_isolated_and_failed(tmp_path: Path,
                                                               standin: Standin) -> None:
    poison = "poison@example.com"
    service = Service(tmp_path, {**standin.env(), "EMAIL_RATE": "0",
                                 "SESD_FAULT_CRASH_EMAIL": poison}).start()
    try:
        emails = [f"ok-{i}@example.com" for i in range(60)]
        emails.insert(30, poison)
        status, _ = service.request("POST", "/v1/messages", {"messages": [
            {"topicId": "poison", "emails": emails, "subject": "S", "content": "<p>c</p>"}]})
        assert status == 200
        assert service.wait_terminal(61, timeout=90) == {SENT: 60, FAILED: 1}
        with service.db() as db:
            [(email, error)] = db.execute(
                f"SELECT email, error FROM requests WHERE status = {FAILED}")
        assert email == poison and "crashed 3 times" in error
        per_request = sends(standin)
        assert len(per_request) == 60
        health = service.wait_healthy()
        assert health["processes"]["sender"]["restarts"] == 3
        events = [e.get("event") for e in service.log_events()]
        assert "requests failed: the sender crashed repeatedly while holding them" in events
    finally:
        service.kill()


def test_sending_paused_is_held_and_health_says_why(tmp_path: Path, standin: Standin) -> None:
    standin.configure(paused=True)
    service = Service(tmp_path, {**standin.env(), "EMAIL_RATE": "0"}).start()
    try:
        status, _ = service.request("POST", "/v1/messages", {"messages": [
            {"topicId": "held", "emails": ["a@example.com", "b@example.com"], "subject": "S",
             "content": "<p>c</p>"}]})
        assert status == 200
        deadline = time.monotonic() + 20
        while True:
            status, health = service.request("GET", "/health")
            if health.get("status") == "degraded" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 200, health
        assert health["status"] == "degraded"
        assert health["sending"]["state"] == "held"
        assert "SendingPaused" in health["sending"]["reason"]
        assert FAILED not in service.statuses()
    finally:
        service.kill()


def run_once(tmp_path: Path, env: dict[str, str], timeout: float = 10
             ) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DB_PATH": str(tmp_path / "a.db"),
            "SERVER_PORT": "0", "LOG_FORMAT": "json", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    return subprocess.run([sys.executable, str(ROOT / "run.py")], cwd=tmp_path,
                          env={**base, **env}, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(("env", "named"), [
    ({"EMAIL_TRANSPORT": "ses", "EMAIL_SENDER": "a@example.com"}, "AWS credentials"),
    ({"EMAIL_TRANSPORT": "ses", "EMAIL_SENDER": "a@example.com", "AWS_ACCESS_KEY_ID": "k",
      "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": "localhost:5055"}, "AWS_ENDPOINT_URL"),
    ({"EMAIL_TRANSPORT": "ses", "EMAIL_SENDER": "a@example.com", "AWS_ACCESS_KEY_ID": "k",
      "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL_SESV2": "ftp://x"}, "AWS_ENDPOINT_URL_SESV2"),
    ({"EMAIL_TRANSPORT": "ses", "EMAIL_SENDER": "a@example.com", "AWS_PROFILE": "nope"},
     "AWS_PROFILE"),
])
def test_configuration_mistakes_stop_sesd_at_start_with_one_line(
        tmp_path: Path, env: dict[str, str], named: str) -> None:
    started = time.monotonic()
    done = run_once(tmp_path, env)
    assert time.monotonic() - started < 10
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"sesd: configuration error: {named}"), lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "a.db").exists()  # nothing created on the way out


def test_start_logs_transport_region_and_endpoint(tmp_path: Path, standin: Standin) -> None:
    service = Service(tmp_path, standin.env()).start()
    try:
        [start] = [e for e in service.log_events() if e.get("event") == "sesd starting"]
        assert (start["transport"], start["region"], start["endpoint"]) == (
            "ses", "us-east-1", standin.url)
        assert start["credentials"] == "env"
    finally:
        service.kill()


def test_an_endpoint_without_send_bulk_email_still_sends_everyone_once(
        tmp_path: Path, standin: Standin) -> None:
    standin.configure(bulk_unsupported=True)  # SendBulkEmail answers 404 with an HTML page
    service = Service(tmp_path, {**standin.env(), "EMAIL_RATE": "0"}).start()
    try:
        emails = [f"n{i}@example.com" for i in range(120)]
        status, _ = service.request("POST", "/v1/messages", {"messages": [
            {"topicId": "news", "emails": emails, "subject": "S", "content": "<p>c</p>"}]})
        assert status == 200
        assert service.wait_terminal(120, timeout=60) == {SENT: 120}
        per_request = sends(standin)
        assert len(per_request) == 120 and set(per_request.values()) == {1}
        assert not any(s["bulk"] for s in standin.log()["sends"])
        with service.db() as db:
            assert db.execute("SELECT MAX(attempts) FROM requests").fetchone()[0] == 1
        warnings = [e for e in service.log_events()
                    if "does not implement SendBulkEmail" in str(e.get("event"))]
        assert len(warnings) == 1 and "<" not in warnings[0]["error"]
    finally:
        service.kill()


def test_an_unverified_from_holds_its_mail_says_why_and_resumes_when_fixed(
        tmp_path: Path, standin: Standin) -> None:
    standin.configure(unverified_senders="^sender@example.com$")
    service = Service(tmp_path, {**standin.env(), "EMAIL_RATE": "0",
                                 "SES_HOLD_PROBE": "1"}).start()
    try:
        status, _ = service.request("POST", "/v1/messages", {"messages": [
            {"topicId": "held", "emails": [f"h{i}@example.com" for i in range(30)],
             "subject": "S", "content": "<p>c</p>"}]})
        assert status == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, health = service.request("GET", "/health")
            if health.get("status") == "degraded":
                break
            time.sleep(0.1)
        assert status == 200 and health["sending"]["state"] == "held", health
        assert "sender@example.com" in health["sending"]["reason"]
        time.sleep(2.5)  # a few probes go, and fail the same way
        statuses = service.statuses()
        assert 3 not in statuses and 2 not in statuses, statuses  # nothing failed, none sent
        with service.db() as db:
            assert db.execute("SELECT MAX(attempts) FROM requests").fetchone()[0] == 0
        standin.configure(unverified_senders=None)  # the operator verifies the identity
        assert service.wait_terminal(30, timeout=30) == {SENT: 30}
        assert service.request("GET", "/health")[1]["status"] == "ok"
        assert len(sends(standin)) == 30
        events = [e.get("event") for e in service.log_events()]
        assert events.count("the From identity is not verified in SES; holding its mail") == 1
        assert "hold lifted: sending again" in events
    finally:
        service.kill()
