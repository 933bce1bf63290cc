"""Shared pieces of the load scripts: the SES stand-in and sesd as subprocesses, process metrics
(CPU seconds, RSS per role), percentiles, plots and result files."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import service  # noqa: E402  (after the path is set: the shared subprocess wrappers)

RESULTS = ROOT / "bench" / "results"
API_KEY = "bench-key-0123456789"
FAR_FUTURE = "2099-01-01T00:00:00Z"
HTML = "<html><body><p>Hello from the bench</p></body></html>"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None,
         timeout: float = 120.0) -> tuple[int, Any]:
    """One blocking HTTP call; JSON bodies are encoded/decoded, bytes pass through."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, ctype, status = resp.read(), resp.headers.get("Content-Type", ""), resp.status
    except urllib.error.HTTPError as err:
        raw, ctype, status = err.read(), err.headers.get("Content-Type", ""), err.code
    return status, (json.loads(raw) if "json" in ctype and raw else raw)


class Standin(service.Standin):
    """The tests' stand-in wrapper, plus a compact copy of its send log: `arrivals` holds
    (t epoch seconds, recipients, request id or None), one per accepted send."""

    def __init__(self, *args: str) -> None:
        super().__init__(*args)
        assert self.proc.stdout is not None
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # drain it
        self.arrivals: list[tuple[float, int, str | None]] = []
        self._next = 0

    def reset(self) -> None:
        http("POST", self.url + "/_standin/reset", b"")
        self.arrivals.clear()
        self._next = 0

    def counters(self) -> dict[str, int]:
        return dict(http("GET", self.url + "/_standin/log?since=999999999999")[1]["counters"])

    def fetch(self) -> dict[str, int]:
        """Pull the sends logged since the last call into `arrivals`; returns the counters."""
        page = http("GET", f"{self.url}/_standin/log?since={self._next}")[1]
        for s in page["sends"]:
            n = len(s.get("to") or ()) + len(s.get("cc") or ()) + len(s.get("bcc") or ())
            self.arrivals.append((float(s["t"]), n, s.get("request_id")))
        self._next = int(page["next"])
        return dict(page["counters"])


class Sesd:
    """`python run.py` with its own temporary directory, database, port and log file."""

    def __init__(self, env: Mapping[str, str], keep: bool = False) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="sesd-bench-"))
        self.keep = keep
        self.port = free_port()
        self.db_path = self.workdir / "app.db"
        self.log_path = self.workdir / "sesd.log"
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.workdir),
                    "API_KEY": API_KEY, "DB_PATH": str(self.db_path),
                    "SERVER_PORT": str(self.port), "SERVER_BIND": "127.0.0.1",
                    "SERVER_HOST": f"http://127.0.0.1:{self.port}", "LOG_FORMAT": "json",
                    "EMAIL_TRANSPORT": "outbox", **env}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Sesd:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "run.py")], cwd=self.workdir,
                                         env={**self.env, "PYTHONPATH": str(ROOT)},
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sesd exited {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(OSError):
                if self.request("GET", "/health", timeout=2)[0] == 200:
                    return self
            time.sleep(0.05)
        raise TimeoutError(f"sesd not healthy after {timeout}s:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def request(self, method: str, path: str, body: Any = None, *, auth: bool = True,
                timeout: float = 300.0) -> tuple[int, Any]:
        return http(method, self.url + path, body, {"x-api-key": API_KEY} if auth else None,
                    timeout)

    def pids(self) -> dict[str, int]:
        health = self.request("GET", "/health", timeout=5)[1]
        return {role: int(p["pid"]) for role, p in health["processes"].items()}

    def statuses(self) -> dict[int, int]:
        import apsw

        conn = apsw.Connection(str(self.db_path), flags=apsw.SQLITE_OPEN_READONLY)
        conn.set_busy_timeout(10_000)
        try:
            return {int(s): int(n) for s, n in
                    conn.execute("SELECT status, COUNT(*) FROM requests GROUP BY status")}
        finally:
            conn.close()

    def query(self, sql: str, bindings: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        import apsw

        conn = apsw.Connection(str(self.db_path), flags=apsw.SQLITE_OPEN_READONLY)
        conn.set_busy_timeout(10_000)
        try:
            return [tuple(r) for r in conn.execute(sql, bindings)]
        finally:
            conn.close()

    def wait_terminal(self, total: int, timeout: float, desc: str = "terminal") -> dict[int, int]:
        deadline = time.monotonic() + timeout
        counts: dict[int, int] = {}
        with progress(total, desc) as bar:
            while time.monotonic() < deadline:
                counts = self.statuses()
                done = sum(counts.get(s, 0) for s in (2, 3, 4))
                bar.update(done - bar.n)
                if done >= total:
                    return counts
                time.sleep(0.2)
        raise TimeoutError(f"not terminal after {timeout}s: {counts}\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def close(self) -> None:
        self.stop()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def role_of(p: psutil.Process) -> str | None:
    """`sesd: <role>` from setproctitle; None while a child has not set its title yet."""
    cmd = " ".join(p.cmdline())
    if cmd.startswith("sesd: "):
        return cmd[6:].split()[0]
    if "resource_tracker" in cmd:
        return "resource_tracker"
    if cmd.endswith("run.py"):
        return "supervisor"
    return None


class ProcMonitor(threading.Thread):
    """Samples the supervisor and all its descendants every `interval` s: CPU (user+sys, summed
    over every pid ever seen, minus what they had used at start) and RSS per role."""

    def __init__(self, root_pid: Callable[[], int | None], interval: float = 0.1,
                 series: bool = False) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.interval, self.keep_series = root_pid, interval, series
        self.procs: dict[int, tuple[psutil.Process, str | None]] = {}
        self.cpu_base: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}
        self.peak_rss: dict[str, int] = {}
        self.series: list[tuple[float, str, int, int]] = []  # (t, role, pid, rss)
        self._halt = threading.Event()
        self._first = True

    def sample(self) -> None:
        pid = self.root_pid()
        try:
            root = psutil.Process(pid) if pid else None
            found = [root, *root.children(recursive=True)] if root else []
        except psutil.Error:
            found = []
        now = time.time()
        for p in found:
            try:
                known = self.procs.get(p.pid)
                if known is None or known[0].create_time() != p.create_time():
                    known = (p, None)
                    self.cpu_base[p.pid] = 0.0
                proc, role = known
                role = role or role_of(proc)
                self.procs[p.pid] = (proc, role)
                with proc.oneshot():
                    cpu = proc.cpu_times()
                    rss = proc.memory_info().rss
            except psutil.Error:
                continue
            used = cpu.user + cpu.system
            if self._first:
                self.cpu_base[p.pid] = used
            self.cpu_last[p.pid] = used
            name = role or "starting"
            self.peak_rss[name] = max(self.peak_rss.get(name, 0), rss)
            if self.keep_series:
                self.series.append((now, name, p.pid, rss))
        self._first = False

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def start(self) -> None:
        self.sample()
        super().start()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu_last[p] - self.cpu_base.get(p, 0.0) for p in self.cpu_last)


def peak_window(arrivals: Iterable[tuple[float, int, Any]], width: float = 1.0) -> int:
    """Most recipients in any sliding window (t - width, t]."""
    return peak_window_at(arrivals, width)[0]


def peak_window_at(arrivals: Iterable[tuple[float, int, Any]],
                   width: float = 1.0) -> tuple[int, float]:
    """(most recipients in any sliding window (t - width, t], the t where it ends)."""
    pts = sorted((t, n) for t, n, *_ in arrivals)
    best, at, total, lo = 0, 0.0, 0, 0
    for t, n in pts:
        total += n
        while pts[lo][0] <= t - width:
            total -= pts[lo][1]
            lo += 1
        if total > best:
            best, at = total, t
    return best, at


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]; nan for no values."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q / 100.0
    f = int(k)
    c = min(f + 1, len(v) - 1)
    return v[f] + (v[c] - v[f]) * (k - f)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def plot_rate(path: Path, series: Mapping[str, tuple[Sequence[tuple[float, int, Any]], float]],
              title: str, bin_s: float = 1.0, limits: Mapping[str, float] | None = None) -> Path:
    """Recipients per second over time, one line per series (arrivals, t0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for label, (arrivals, t0) in series.items():
        bins: dict[int, int] = {}
        for t, n, *_ in arrivals:
            bins[int((t - t0) // bin_s)] = bins.get(int((t - t0) // bin_s), 0) + n
        if bins:
            xs = list(range(min(bins), max(bins) + 2))  # ends at 0: one bin shows too
            ax.step([x * bin_s for x in xs], [bins.get(x, 0) / bin_s for x in xs], where="post",
                    label=label)
        if limits and label in limits:
            ax.axhline(limits[label], linestyle="--", linewidth=0.8, color="grey")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("recipients / s (stand-in arrivals)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def stamp() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def png_path(name: str, ts: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / f"{name}-{ts}.png"


def write_results(name: str, payload: Mapping[str, Any], ts: str | None = None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{ts or stamp()}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain fixed-width table; floats get 4 significant digits."""
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def progress(total: int, desc: str, unit: str = "rcpt") -> tqdm[Any]:
    return tqdm(total=total, desc=desc, file=sys.stderr, unit=unit, dynamic_ncols=True,
                leave=False)


def emails(n: int, prefix: str = "r", domain: str = "example.com") -> list[str]:
    return [f"{prefix}{i}@{domain}" for i in range(n)]


def message(topic: str, to: list[str], scheduled_at: str | None = None,
            content: str = HTML) -> dict[str, Any]:
    m: dict[str, Any] = {"topicId": topic, "emails": to, "subject": "Bench", "content": content}
    if scheduled_at is not None:
        m["scheduledAt"] = scheduled_at
    return m


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--env expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def add_common(p: argparse.ArgumentParser, runs: int = 1) -> None:
    p.add_argument("--runs", type=int, default=runs, help="repeat and report medians "
                   "(default: %(default)s)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for sesd (repeatable), e.g. LOG_LEVEL=warning")
    p.add_argument("--keep", action="store_true", help="keep sesd's temporary directories")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
