"""Shared pieces of the load scripts: process metrics (CPU seconds, RSS per role), percentiles,
plots, result files and the flags most scripts take. sesd and the SES stand-in run as subprocesses
through sesd.testing.harness, the same harness the tests use."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
from tqdm import tqdm

from sesd.testing.harness import API_KEY, Service, Standin, free_port, role_of

__all__ = ["API_KEY", "Service", "Standin", "free_port"]  # the harness, for the scripts

RESULTS = Path(__file__).resolve().parent / "results"
FAR_FUTURE = "2099-01-01T00:00:00Z"
HTML = "<html><body><p>Hello from the bench</p></body></html>"


def wait_terminal(svc: Service, total: int, timeout: float,
                  desc: str = "terminal") -> dict[int, int]:
    """Service.wait_terminal with a progress bar on stderr."""
    with progress(total, desc) as bar:
        return svc.wait_terminal(total, timeout, progress=lambda done: bar.update(done - bar.n))


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
                role = role or role_of(proc.cmdline())
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

    @property
    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds per role (every pid a role ever had, restarts included)."""
        out: dict[str, float] = {}
        for pid, used in self.cpu_last.items():
            role = self.procs[pid][1] if pid in self.procs else None
            name = role or "starting"
            out[name] = out.get(name, 0.0) + used - self.cpu_base.get(pid, 0.0)
        return out


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
    fig, ax = pyplot().subplots(figsize=(10, 4.5))
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
    return save_figure(fig, path)


def pyplot() -> Any:
    """matplotlib.pyplot drawing to files only (Agg); imported late, as most runs plot nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lays `fig` out, writes it to `path` as a PNG and closes it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
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


def post(svc: Service, path: str, body: Any, timeout: float = 60.0) -> Any:
    """POST `body` to the API; its JSON answer, or RuntimeError for anything but a 200."""
    status, answer = svc.request("POST", path, body, timeout=timeout)
    if status != 200:
        raise RuntimeError(f"POST {path} answered {status}: {answer!r}")
    return answer


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


def add_common(p: argparse.ArgumentParser, runs: int | None = 1, plot: bool = True) -> None:
    """--env and --keep (every script that starts sesd); --runs unless `runs` is None; --no-plot
    where the script draws one."""
    if runs is not None:
        p.add_argument("--runs", type=int, default=runs, help="repeat and report medians "
                       "(default: %(default)s)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for sesd (repeatable), e.g. LOG_LEVEL=warning")
    p.add_argument("--keep", action="store_true", help="keep sesd's temporary directories")
    if plot:
        p.add_argument("--no-plot", action="store_true", help="skip the PNG")
