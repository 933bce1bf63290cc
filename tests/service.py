"""Run `python run.py` as a real subprocess for black-box tests and benches."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import apsw

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "test-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """One sesd instance with its own database, port and log file."""

    def __init__(self, workdir: Path, env: Mapping[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.db_path = workdir / "app.db"
        self.log_path = workdir / "sesd.log"
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", str(workdir)),
            "API_KEY": API_KEY,
            "DB_PATH": str(self.db_path),
            "SERVER_PORT": str(self.port),
            "SERVER_BIND": "127.0.0.1",
            "SERVER_HOST": f"http://127.0.0.1:{self.port}",
            "LOG_FORMAT": "json",
            "EMAIL_TRANSPORT": "outbox",
            "SHUTDOWN_GRACE": "5",
        }
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Service:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it
        self.proc = subprocess.Popen([sys.executable, "run.py"], cwd=ROOT, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"sesd exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                status, body = self.request("GET", "/health")
                last = body
                if status == 200:
                    return body
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"sesd not healthy after {timeout}s: {last}\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.logs().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def request(self, method: str, path: str, body: Any = None, *, key: str | None = API_KEY,
                headers: Mapping[str, str] | None = None,
                timeout: float = 30.0) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if key is not None:
            req.add_header("x-api-key", key)
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, _decode(resp.read(), resp.headers.get("Content-Type"))
        except urllib.error.HTTPError as err:
            return err.code, _decode(err.read(), err.headers.get("Content-Type"))

    def pids(self) -> dict[str, int]:
        _, health = self.request("GET", "/health")
        return {role: p["pid"] for role, p in health["processes"].items()}

    @contextlib.contextmanager
    def db(self) -> Iterator[apsw.Connection]:
        conn = apsw.Connection(str(self.db_path), flags=apsw.SQLITE_OPEN_READONLY)
        conn.set_busy_timeout(10_000)
        try:
            yield conn
        finally:
            conn.close()

    def statuses(self) -> dict[int, int]:
        with self.db() as conn:
            return dict(conn.execute("SELECT status, COUNT(*) FROM requests GROUP BY status"))

    def wait_terminal(self, total: int, timeout: float = 60.0) -> dict[int, int]:
        """Wait until `total` requests are sent, failed or stopped; returns status counts."""
        deadline = time.monotonic() + timeout
        counts: dict[int, int] = {}
        while time.monotonic() < deadline:
            counts = self.statuses()
            if sum(counts.get(s, 0) for s in (2, 3, 4)) >= total:
                return counts
            time.sleep(0.1)
        raise TimeoutError(f"not terminal after {timeout}s: {counts}\n{self.logs()[-4000:]}")


def _decode(raw: bytes, content_type: str | None) -> Any:
    if content_type and "json" in content_type:
        return json.loads(raw)
    return raw


def messages(topic: str, emails: list[str], **extra: Any) -> dict[str, Any]:
    return {"messages": [{"topicId": topic, "emails": emails, "subject": "Hello",
                          "content": "<p>Hi there</p>", **extra}]}


class Standin:
    """The SES v2 stand-in (sesd.testing.ses_standin) as a subprocess on loopback."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sesd.testing.ses_standin", "--port", "0", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening "):
            self.proc.kill()
            raise RuntimeError(f"stand-in did not start: {line}")
        self.url = line.split()[1]

    def env(self) -> dict[str, str]:
        """What points sesd's SES client at this stand-in."""
        return {"EMAIL_TRANSPORT": "ses", "AWS_ENDPOINT_URL_SESV2": self.url,
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_REGION": "us-east-1", "EMAIL_SENDER": "sender@example.com"}

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def configure(self, **changes: Any) -> Any:
        return self._call("POST", "/_standin/config", changes)

    def log(self) -> dict[str, Any]:
        """Every accepted send so far, and the counters."""
        sends: list[dict[str, Any]] = []
        since = 0
        while True:
            page = self._call("GET", f"/_standin/log?since={since}")
            sends.extend(page["sends"])
            if page["next"] == since or not page["sends"]:
                return {"sends": sends, "counters": page["counters"]}
            since = page["next"]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
