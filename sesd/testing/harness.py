"""sesd and the SES stand-in as real subprocesses: one harness for the black-box tests and bench/.

sesd runs as `python <checkout>/run.py` with a temporary directory as its working directory,
never the checkout: sesd reads `.env` from its working directory, and the README tells developers
to keep one in the checkout, which must not reach tests or benches. For the same reason the
environment is built from scratch: only PATH is passed on, and HOME is the temporary directory,
so no `~/.aws` of the developer's is read either.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import apsw

from sesd.store import FAILED, SENT, STOPPED

ROOT = Path(__file__).resolve().parents[2]
RUN_PY = ROOT / "run.py"
API_KEY = "test-key-0123456789"
TERMINAL = (SENT, FAILED, STOPPED)


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS's choice, on loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None,
         timeout: float = 60.0) -> tuple[int, Any]:
    """One blocking HTTP call: (status, body). A body that is not bytes is sent as JSON; a JSON
    answer is decoded, anything else comes back as bytes. Error statuses are returned, not
    raised; a connection failure raises OSError."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None and not req.has_header("Content-type"):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, ctype, status = resp.read(), resp.headers.get("Content-Type", ""), resp.status
    except urllib.error.HTTPError as err:
        raw, ctype, status = err.read(), err.headers.get("Content-Type", ""), err.code
    return status, (json.loads(raw) if "json" in ctype and raw else raw)


def messages(topic: str, emails: list[str], **fields: Any) -> dict[str, Any]:
    """A `POST /v1/messages` body of one message; `fields` add to it or override it."""
    return {"messages": [{"topicId": topic, "emails": emails, "subject": "Hello",
                          "content": "<p>Hi there</p>", **fields}]}


def role_of(cmdline: Sequence[str]) -> str | None:
    """The sesd role a process's command line names: each process titles itself `sesd: <role>`
    (setproctitle) once it runs; run.py is the supervisor before it has. None for anything else."""
    cmd = " ".join(cmdline).strip()
    if cmd.startswith("sesd: "):
        return cmd[6:].split()[0]
    if "resource_tracker" in cmd:
        return "resource_tracker"  # multiprocessing's helper, a child of the supervisor
    if cmd.endswith("run.py"):
        return "supervisor"
    return None


class Service:
    """One sesd (`python run.py`) with its own working directory, database, port and log file.

    `workdir` None makes a temporary directory that `close()` removes (unless `keep`). `env`
    adds to or overrides the harness's own environment (outbox transport, JSON logs, loopback).
    `run_py` is the script to run; tests point it into a copy of a checkout."""

    def __init__(self, workdir: Path | None = None, env: Mapping[str, str] | None = None, *,
                 keep: bool = False, run_py: Path = RUN_PY) -> None:
        self.owns_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="sesd-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.run_py = run_py
        self.log_path = self.workdir / "sesd.log"
        port = (env or {}).get("SERVER_PORT") or str(free_port())
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.workdir),
            "API_KEY": API_KEY,
            "DB_PATH": str(self.workdir / "app.db"),
            "SERVER_PORT": port,
            "SERVER_BIND": "127.0.0.1",
            "SERVER_HOST": f"http://127.0.0.1:{port}",
            "LOG_FORMAT": "json",
            "EMAIL_TRANSPORT": "outbox",
            "SHUTDOWN_GRACE": "5",
            # A run without credentials must not ask the EC2 metadata address: tests reach only
            # loopback.
            "AWS_EC2_METADATA_DISABLED": "true",
            **(env or {}),
        }
        self.port = int(port)
        self.db_path = Path(self.env["DB_PATH"])
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        if not self.run_py.is_file():
            raise FileNotFoundError(f"{self.run_py} not found: the harness runs sesd from a "
                                    "checkout (pip install -e .)")
        return [sys.executable, str(self.run_py)]

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60.0) -> Service:
        """Start run.py and wait until /health answers 200."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"sesd already runs as pid {self.proc.pid}")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self._command(), cwd=self.workdir, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)
        self.wait_healthy(timeout)
        return self

    def run(self, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """run.py for a start that must end by itself (a bad setting, a port or a database
        already taken): its exit code and its stdout and stderr, apart."""
        return subprocess.run(self._command(), cwd=self.workdir, env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def wait_healthy(self, timeout: float = 60.0) -> dict[str, Any]:
        """The /health body once it answers 200; RuntimeError if sesd exits first."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"sesd exited with {code}:\n{self.tail()}")
            with contextlib.suppress(OSError):
                status, last = self.request("GET", "/health", key=None, timeout=5)
                if status == 200:
                    return dict(last)
            time.sleep(0.05)
        raise TimeoutError(f"sesd not healthy after {timeout}s: {last}\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        """Send `sig` and wait for the exit code; past `timeout` the process is killed and the
        kill's (negative) code returned, so nothing is left running. None if never started."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL the supervisor (its children follow it: PDEATHSIG)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        """Stop gracefully, then remove the temporary directory this harness made."""
        self.stop()
        if self.owns_workdir and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------------ what it says

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, chars: int = 4000) -> str:
        return self.logs()[-chars:]

    def log_events(self) -> list[dict[str, Any]]:
        """Every JSON log line so far, decoded (other lines, e.g. a traceback, are skipped)."""
        events = []
        for line in self.logs().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    def request(self, method: str, path: str, body: Any = None, *, key: str | None = API_KEY,
                headers: Mapping[str, str] | None = None,
                timeout: float = 60.0) -> tuple[int, Any]:
        """One call to the API, with the harness's API key unless `key` says otherwise."""
        sent = dict(headers or {})
        if key is not None:
            sent["x-api-key"] = key
        return http(method, self.url + path, body, sent, timeout)

    def pids(self) -> dict[str, int]:
        """Each child's pid as /health reports it."""
        _, health = self.request("GET", "/health", timeout=10)
        return {role: int(p["pid"]) for role, p in health["processes"].items()}

    def children(self) -> dict[str, int]:
        """Each child's pid by its process title; unlike pids() this works while the API is
        down (psutil, from the test or bench extra)."""
        import psutil

        if self.proc is None:
            return {}
        found: dict[str, int] = {}
        try:
            kids = psutil.Process(self.proc.pid).children()
        except psutil.Error:
            return {}
        for kid in kids:
            with contextlib.suppress(psutil.Error):
                role = role_of(kid.cmdline())
                if role is not None:
                    found[role] = kid.pid
        return found

    # ------------------------------------------------------------------ its database

    @contextlib.contextmanager
    def db(self) -> Iterator[apsw.Connection]:
        """A read-only connection to sesd's database, beside sesd's own."""
        conn = apsw.Connection(str(self.db_path), flags=apsw.SQLITE_OPEN_READONLY)
        conn.set_busy_timeout(10_000)
        try:
            yield conn
        finally:
            conn.close()

    def query(self, sql: str, bindings: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.db() as conn:
            return [tuple(row) for row in conn.execute(sql, bindings)]

    def statuses(self) -> dict[int, int]:
        """How many requests have each status."""
        rows = self.query("SELECT status, COUNT(*) FROM requests GROUP BY status")
        return {int(status): int(n) for status, n in rows}

    def wait_terminal(self, total: int, timeout: float = 60.0,
                      progress: Callable[[int], None] | None = None) -> dict[int, int]:
        """Wait until `total` requests are sent, failed or stopped; returns the status counts.
        `progress` is told the number done at every look."""
        deadline = time.monotonic() + timeout
        counts: dict[int, int] = {}
        while time.monotonic() < deadline:
            counts = self.statuses()
            done = sum(counts.get(s, 0) for s in TERMINAL)
            if progress is not None:
                progress(done)
            if done >= total:
                return counts
            time.sleep(0.1)
        raise TimeoutError(f"not terminal after {timeout}s: {counts}\n{self.tail()}")


class Standin:
    """The SES v2 stand-in (`python -m sesd.testing.ses_standin`) as a subprocess on loopback.

    `arrivals` is a compact copy of its send log that `fetch()` extends: one
    (t epoch seconds, recipients, request id or None) per accepted send."""

    def __init__(self, *flags: str, timeout: float = 30.0) -> None:
        # From the checkout, so `-m` finds this checkout's stand-in.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sesd.testing.ses_standin", "--port", "0", *flags],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # Its output is read all along (a full pipe would stall it); the last lines are kept
        # for error messages.
        self.output: collections.deque[str] = collections.deque(maxlen=50)
        first: queue.Queue[str] = queue.Queue()
        self._drainer = threading.Thread(target=self._drain, args=(first,), daemon=True)
        self._drainer.start()
        try:
            line = first.get(timeout=timeout)
        except queue.Empty:
            line = ""
        if not line.startswith("listening "):
            self.close()
            raise RuntimeError(f"stand-in did not start: {line!r}{''.join(self.output)}")
        self.url = line.split()[1]
        self.arrivals: list[tuple[float, int, str | None]] = []
        self._next = 0

    def _drain(self, first: queue.Queue[str]) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            if first.empty():
                first.put(line)
            self.output.append(line)
        first.put("")  # it exited: wake the constructor if it still waits

    def __enter__(self) -> Standin:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def env(self) -> dict[str, str]:
        """What points sesd's SES client at this stand-in."""
        return {"EMAIL_TRANSPORT": "ses", "AWS_ENDPOINT_URL_SESV2": self.url,
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_REGION": "us-east-1", "EMAIL_SENDER": "sender@example.com"}

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = http(method, self.url + path, body, timeout=30)
        if status != 200:
            raise RuntimeError(f"stand-in {method} {path} answered {status}: {answer!r}")
        return answer

    def configure(self, **changes: Any) -> Any:
        """Change its knobs at runtime (StandinConfig fields); returns the whole config."""
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

    def counters(self) -> dict[str, int]:
        """The counters alone (asks for sends past any there are)."""
        return dict(self._call("GET", "/_standin/log?since=999999999999")["counters"])

    def fetch(self) -> dict[str, int]:
        """Pull the sends logged since the last call into `arrivals`; returns the counters."""
        page = self._call("GET", f"/_standin/log?since={self._next}")
        for s in page["sends"]:
            n = len(s.get("to") or ()) + len(s.get("cc") or ()) + len(s.get("bcc") or ())
            self.arrivals.append((float(s["t"]), n, s.get("request_id")))
        self._next = int(page["next"])
        return dict(page["counters"])

    def reset(self) -> None:
        """Empty its log, counters and rate window, and `arrivals`."""
        self._call("POST", "/_standin/reset", b"")
        self.arrivals.clear()
        self._next = 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # The drainer ends at end of file; closing the pipe under it would raise in its thread.
        self._drainer.join(10)
        if self.proc.stdout is not None and not self._drainer.is_alive():
            self.proc.stdout.close()
