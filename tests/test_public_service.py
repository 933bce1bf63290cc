"""The public surface of a running sesd (`python run.py`): what a stranger on the internet can do.

SNS messages are signed with a throwaway key whose certificate a real local HTTP server hands
out, under an SNS_CERT_URL_PATTERN naming that server.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sesd.testing.harness import Service, messages

from .test_sns import FIXTURES, TOPIC, _make_cert, notification, sign

pytestmark = pytest.mark.slow


class CertServer:
    """Serves one PEM at any path ending in .pem, on loopback, in a thread."""

    def __init__(self, pem: bytes) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = self.path.endswith(".pem")
                self.send_response(200 if ok else 404)
                self.send_header("Content-Length", str(len(pem) if ok else 0))
                self.end_headers()
                if ok:
                    self.wfile.write(pem)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def cert_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/SimpleNotificationService-test.pem"

    def env(self, topics: str = TOPIC) -> dict[str, str]:
        return {"SNS_CERT_URL_PATTERN": rf"^http://127\.0\.0\.1:{self.port}/",
                "SNS_TOPIC_ARNS": topics}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def certs(key: rsa.RSAPrivateKey) -> Iterator[CertServer]:
    now = dt.datetime.now(dt.UTC)
    server = CertServer(_make_cert(key, not_before=now - dt.timedelta(days=1),
                                   not_after=now + dt.timedelta(days=1)))
    yield server
    server.close()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for svc in started:
        svc.kill()


def start(services: list[Service], workdir: Path, env: dict[str, str]) -> Service:
    svc = Service(workdir, {"EMAIL_RATE": "0", **env})
    services.append(svc)
    return svc.start()


def event(name: str, request_id: int) -> str:
    data = json.loads((FIXTURES / name).read_text())
    data["mail"]["headers"].append({"name": "X-Request-ID", "value": str(request_id)})
    return json.dumps(data)


def post_sns(svc: Service, message: dict[str, Any] | bytes) -> tuple[int, Any]:
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    return svc.request("POST", "/v1/events/results", body, key=None,
                       headers={"x-amz-sns-message-type": "Notification"})


def api_pid(svc: Service) -> int:
    return svc.pids()["api"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_empty_topic_list_refuses_genuine_sns(tmp_path: Path, services: list[Service],
                                              certs: CertServer, key) -> None:
    svc = start(services, tmp_path, certs.env(topics=""))
    status, _ = svc.request("POST", "/v1/messages", messages("t", ["recipient@example.com"]))
    assert status == 200
    svc.wait_terminal(1)
    signed = sign({**notification(message=event("event-bounce.json", 1)), "MessageId": "m1"},
                  key, cert_url=certs.cert_url)
    status, body = post_sns(svc, signed)
    assert status == 403 and "SNS_TOPIC_ARNS" in body["error"]
    with svc.db() as conn:
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM suppressions").fetchone()[0] == 0
    events = [e.get("event", "") for e in svc.log_events()]
    assert sum("SNS_TOPIC_ARNS is empty" in e for e in events) == 1
    assert any(e.startswith("SNS message refused: topic") for e in events)


def test_event_for_a_foreign_recipient_is_not_applied(tmp_path: Path, services: list[Service],
                                                      certs: CertServer, key) -> None:
    svc = start(services, tmp_path, certs.env())
    status, _ = svc.request("POST", "/v1/messages", messages("t", ["victim@example.com"]))
    assert status == 200
    svc.wait_terminal(1)
    # A genuine, allowed event (recipient@example.com) naming the victim's request id.
    signed = sign({**notification(message=event("event-delivery.json", 1)), "MessageId": "m1"},
                  key, cert_url=certs.cert_url)
    status, body = post_sns(svc, signed)
    assert (status, body) == (200, {"status": "stored", "requestId": None})
    status, stats = svc.request("GET", "/v1/topics/t")
    assert stats["result"]["statuses"] == {}


def test_large_sns_body_is_413_without_memory_growth(tmp_path: Path,
                                                     services: list[Service]) -> None:
    svc = start(services, tmp_path, {})
    pid = api_pid(svc)
    before = rss_mb(pid)
    big = b'{"Message": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    for _ in range(5):
        status, body = post_sns(svc, big)
        assert status == 413, body
        # The same body without a Content-Length, chunked.
        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=30)
        try:
            conn.request("POST", "/v1/events/results", body=iter([big[i:i + 65536] for i in
                                                                  range(0, len(big), 65536)]),
                         headers={"x-amz-sns-message-type": "Notification"},
                         encode_chunked=True)
            assert conn.getresponse().status == 413
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered 413 and closed while we were still sending
        finally:
            conn.close()
    growth = rss_mb(pid) - before
    print(f"API RSS {before:.1f} MB -> {before + growth:.1f} MB after 10 x 2 MB SNS bodies")
    assert growth < 50
    assert svc.request("GET", "/health")[0] == 200


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes | None) -> float:
    """Seconds until the server closes `sock`, sending `trickle` every 0.2 s meanwhile."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < seconds:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - started
        if trickle is not None:
            try:
                sock.sendall(trickle)
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
    raise AssertionError(f"still open after {seconds} s")


def test_slow_and_idle_connections_are_closed_by_their_deadlines(
        tmp_path: Path, services: list[Service]) -> None:
    svc = start(services, tmp_path, {"HTTP_HEADER_TIMEOUT": "1", "HTTP_IDLE_TIMEOUT": "2",
                                     "HTTP_BODY_TIMEOUT": "1"})
    # Slowloris: a header line every 0.2 s, never the blank line that ends them.
    slow = socket.create_connection(("127.0.0.1", svc.port))
    slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    assert 0.8 < _closed_within(slow, 5, b"X-Slow: 1\r\n") < 2.5
    # A body that never finishes arriving.
    body = socket.create_connection(("127.0.0.1", svc.port))
    body.sendall(b"POST /v1/events/results HTTP/1.1\r\nHost: x\r\n"
                 b"x-amz-sns-message-type: Notification\r\nContent-Length: 1000\r\n\r\n{")
    assert 0.8 < _closed_within(body, 5, b" ") < 2.5
    # A connection that never sends anything.
    idle = socket.create_connection(("127.0.0.1", svc.port))
    assert 1.5 < _closed_within(idle, 6, None) < 4
    for sock in (slow, body, idle):
        sock.close()
    assert svc.request("GET", "/health")[0] == 200


def test_many_idle_sockets_neither_exhaust_descriptors_nor_block_health(
        tmp_path: Path, services: list[Service]) -> None:
    svc = start(services, tmp_path, {"HTTP_MAX_CONNECTIONS": "50"})
    pid = api_pid(svc)
    socks = [socket.create_connection(("127.0.0.1", svc.port)) for _ in range(300)]
    try:
        time.sleep(0.5)
        for _ in range(5):
            assert svc.request("GET", "/health", timeout=5)[0] == 200
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        assert fds < 50 + 64, fds
    finally:
        for sock in socks:
            sock.close()


def test_data_files_are_private(tmp_path: Path, services: list[Service]) -> None:
    data = tmp_path / "data"
    svc = start(services, tmp_path, {"DB_PATH": str(data / "app.db")})
    svc.db_path = data / "app.db"
    status, _ = svc.request("POST", "/v1/messages", messages("t", ["a@example.com"]))
    assert status == 200
    svc.wait_terminal(1)
    paths = [data, data / "app.db", data / "app.db-wal", data / "app.db.lock", data / "outbox",
             *(data / "outbox").glob("*.eml")]
    assert len(paths) > 5  # the outbox file was written
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in paths if p.exists()}
    assert {name: mode & 0o077 for name, mode in modes.items()} == dict.fromkeys(modes, 0), modes


def test_pixel_replays_add_one_row_and_count(tmp_path: Path, services: list[Service]) -> None:
    svc = start(services, tmp_path, {"TRACKING_KEY": "k" * 32})
    status, _ = svc.request("POST", "/v1/messages", messages("t", ["a@example.com"]))
    assert status == 200
    svc.wait_terminal(1)
    from sesd import tracking

    path = tracking.pixel_url("", "k" * 32, 1)
    for _ in range(300):
        assert svc.request("GET", path, key=None)[0] == 200
    assert svc.stop() == 0  # the counted replays are written at shutdown
    with svc.db() as conn:
        assert conn.execute("SELECT request_id, status, hits FROM results").fetchall() == [
            (1, "Open", 300)]


def test_reflected_input_is_truncated(tmp_path: Path, services: list[Service],
                                      certs: CertServer, key) -> None:
    svc = start(services, tmp_path, certs.env())
    url = "https://evil.example/" + "a" * 400_000 + ".pem"
    signed = sign({**notification(), "MessageId": "m1"}, key, cert_url=url)
    status, body = post_sns(svc, signed)
    assert status == 403
    assert len(json.dumps(body)) < 2000
    status, body = svc.request("GET", "/" + "x" * 6000)
    assert status == 404 and len(json.dumps(body)) < 2000
    time.sleep(0.2)
    assert max(len(line) for line in svc.logs().splitlines()) < 4000
