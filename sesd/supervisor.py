"""`python run.py`: spawns the API, scheduler, sender and notifier, restarts what dies, stops
in order.

Signal handlers only record the signal; the main loop acts on it (uvicorn's pattern). A child
that dies is restarted; if it was the scheduler or the sender, the whole pipeline between them is
restarted on *fresh* queues, because a process killed while holding a multiprocessing.Queue lock
leaves that queue unusable. The store's claimed rows are the truth: the new scheduler releases
whatever the dead pipeline held before it claims anything.
"""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any, TextIO

import structlog

from . import config, preflight, telemetry
from .api.process import ApiChannels
from .api.process import main as api_main
from .child import EX_CONFIG, bootstrap
from .errors import ConfigError, StorageFullError
from .health import HealthTable
from .messages import ROLES
from .notifier.process import main as notifier_main
from .scheduler import SchedulerChannels
from .scheduler import main as scheduler_main
from .sender.process import SenderChannels
from .sender.process import main as sender_main
from .store import Store
from .wakeup import drain

# Exit codes (dramatiq-style names): what the operator should look at.
RET_OK, RET_CONFIG, RET_LOCKED, RET_CHILD_CONFIG, RET_STORAGE_FULL = 0, 2, 3, 4, 5
RESTART_WINDOW = 60.0  # restarts within this many seconds count as a crash loop
MAX_BACKOFF = 30.0
# A child that ends this way was stopped from outside (an operator, a test, the OOM killer's
# SIGKILL): what it held is released as it is. Any other end of the sender is its own crash.
_EXTERNAL_ENDS = frozenset({-signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT})

log = structlog.get_logger()


class Supervisor:
    def __init__(self, settings: config.Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.ctx = mp.get_context("spawn")
        # pid, alive, restarts per role, and whether sending is held; the API reads it for
        # /health without asking us.
        self.health = HealthTable(self.ctx, ROLES)
        self.stop_epoch: Any = self.ctx.RawValue("q", 0)
        self.nudges_r, self.nudges_w = self.ctx.Pipe(duplex=False)
        self.procs: dict[str, BaseProcess] = {}
        self.recent: dict[str, deque[float]] = {role: deque() for role in ROLES}
        self.signals: list[int] = []
        self._pipeline_ends: list[Any] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    # -- children -----------------------------------------------------------------------------

    def _spawn(self, role: str, entry: Any, channels: Any) -> None:
        proc = self.ctx.Process(target=bootstrap, name=f"sesd-{role}",
                                args=(role, self.settings, os.getpid(), entry, channels))
        proc.start()
        self.procs[role] = proc
        self.health.started(role, proc.pid or 0)
        log.info("process started", process=role, pid=proc.pid)

    def _start_api(self) -> None:
        self._spawn("api", api_main, ApiChannels(self.nudges_w, self.health, self.stop_epoch))

    def _start_notifier(self) -> None:
        self._spawn("notifier", notifier_main, None)  # it talks to the others only via the store

    def _start_pipeline(self) -> None:
        work = self.ctx.Queue()
        credits_r, credits_w = self.ctx.Pipe(duplex=False)
        self._pipeline_ends = [work, credits_r, credits_w]
        s = self.settings
        # Enough jobs in the sender's hands to keep the bucket busy for ~2 s and every call
        # slot full, but bounded: a crash can strand no more than this, and only briefly.
        rate_window = int(2 * s.email_rate) if s.email_rate else 20_000
        window = min(50_000, max(256, 2 * s.max_concurrent, rate_window))
        self._spawn("scheduler", scheduler_main,
                    SchedulerChannels(self.nudges_r, credits_r, work, window))
        self.health.set_held(None)  # a new sender finds out afresh
        self._spawn("sender", sender_main,
                    SenderChannels(work, credits_w, self.stop_epoch, self.health))

    def _stop(self, role: str, timeout: float) -> None:
        proc = self.procs.get(role)
        if proc is None:
            return
        if proc.is_alive():
            proc.terminate()
            deadline = time.monotonic() + timeout
            while proc.is_alive() and time.monotonic() < deadline and len(self.signals) < 2:
                proc.join(0.1)
            if proc.is_alive():
                log.warning("process did not stop in time; killing it", process=role,
                            pid=proc.pid)
                proc.kill()
                proc.join()
        self.health.stopped(role)

    # -- the loop -----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)

    def run(self) -> int:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self._start_api()
        self._start_pipeline()
        self._start_notifier()
        code = RET_OK
        while not self.signals:
            wait([p.sentinel for p in self.procs.values()] + [self._wake_r], timeout=1.0)
            drain(self._wake_r)
            for role, proc in list(self.procs.items()):
                if proc.is_alive() or self.signals:
                    continue
                if proc.exitcode == EX_CONFIG:
                    log.error("process cannot start; stopping sesd", process=role)
                    code = RET_CHILD_CONFIG
                    self.signals.append(signal.SIGTERM)
                    break
                self._recover(role, proc)
                # A recovery replaces processes (a pipeline restart stops the survivor too):
                # look again at the new table rather than at this stale snapshot.
                break
        self._shutdown()
        return code

    def _recover(self, role: str, proc: BaseProcess) -> None:
        restarts = self.health.died(role)
        crashed = role == "sender" and proc.exitcode not in _EXTERNAL_ENDS
        log.error("process died", process=role, pid=proc.pid, exitcode=proc.exitcode,
                  restarts=restarts, crashed=crashed)
        if not self._backoff(role):
            return
        if role == "api":
            self._start_api()
            return
        if role == "notifier":
            self._start_notifier()
            return
        # Scheduler or sender: the other one goes too (a sender drains and hands back), then
        # both start on new queues. The new scheduler starts only once no sender holds rows.
        self._stop("scheduler", 5)
        self._stop("sender", self.settings.shutdown_grace + 5)
        for end in self._pipeline_ends:
            end.close()
        released = self.store.release_processing(crashed=crashed)
        if released.failed:
            log.error("requests failed: the sender crashed repeatedly while holding them",
                      count=released.failed)
        log.info("restarting the pipeline on fresh queues", released=released.released)
        self._start_pipeline()

    def _backoff(self, role: str) -> bool:
        """Sleep before a restart when a child keeps dying; False if a signal came meanwhile."""
        now = time.monotonic()
        recent = self.recent[role]
        while recent and now - recent[0] > RESTART_WINDOW:
            recent.popleft()
        recent.append(now)
        if len(recent) == 1:
            return True
        delay = min(MAX_BACKOFF, 0.5 * 2 ** (len(recent) - 2))
        log.error("process is crash-looping; backing off", process=role,
                  restarts_last_minute=len(recent), delay=delay)
        deadline = now + delay
        while not self.signals and time.monotonic() < deadline:
            wait([self._wake_r], timeout=deadline - time.monotonic())
            drain(self._wake_r)
        return not self.signals

    def _shutdown(self) -> None:
        """Intake first, then the scheduler, then the sender drains within its grace; the
        notifier last, so the events of the sender's last sends are on their way too."""
        log.info("shutting down")
        grace = self.settings.shutdown_grace
        self._stop("api", grace + 5)
        self._stop("scheduler", 5)
        self._stop("sender", grace + 5)
        self._stop("notifier", min(grace, self.settings.webhook_timeout) + 5)
        released = self.store.release_processing().released
        log.info("stopped", returned_to_created=released)


def _command(args: list[str]) -> int:
    """`python run.py <command>`: one-off tasks beside the service (it may be running)."""
    if args[0] == "import-ses-suppressions":
        from . import ses_suppressions

        return ses_suppressions.main(args[1:])
    _fail(f"unknown command {args[0][:60]!r}; commands: {', '.join(COMMANDS)} "
          "(none: start the service)")
    return RET_CONFIG


def _fail(message: str, stream: TextIO = sys.stderr) -> None:
    print(f"sesd: {message}", file=stream, flush=True)


COMMANDS = ("import-ses-suppressions",)


def main(argv: list[str] | None = None) -> int:
    # Before anything is created: the database (tracking key, every recipient), its WAL, the
    # lock and the outbox files are for this service's user alone, as are their folders.
    os.umask(0o077)
    args = sys.argv[1:] if argv is None else argv
    if args:
        return _command(args)
    try:
        settings = config.load()
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")
        return RET_CONFIG
    target: preflight.SesTarget | None = None
    try:
        if settings.email_transport == "ses":
            target = preflight.check_ses(settings)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")
        return RET_CONFIG
    telemetry.setup(settings, "supervisor")
    try:
        from setproctitle import setproctitle

        setproctitle("sesd: supervisor")
    except ImportError:  # pragma: no cover
        pass
    try:
        settings.db_path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(f"{settings.db_path}.lock", "a")  # noqa: SIM115 - held for our lifetime
    except OSError as exc:
        _fail(f"configuration error: DB_PATH: cannot use {settings.db_path}: {exc.strerror}")
        return RET_CONFIG
    try:
        # One sesd per database: two schedulers would each think the other's rows stranded.
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _fail(f"another sesd is already running on {settings.db_path}")
        return RET_LOCKED
    try:
        store = Store(settings.db_path, max_page_count=settings.sqlite_max_pages or None)
    except StorageFullError:
        _fail(f"the database {settings.db_path} is full: its schema cannot be upgraded; free "
              "disk space (or raise SQLITE_MAX_PAGES) and start again")
        lock.close()
        return RET_STORAGE_FULL
    except Exception as exc:
        _fail(f"configuration error: DB_PATH: cannot open {settings.db_path}: {exc}")
        lock.close()
        return RET_CONFIG
    try:
        released = store.release_processing().released
    except StorageFullError:
        released = 0  # nothing to release can't be written; sending can still proceed
    where = {"outbox": str(settings.outbox_dir)} if target is None else {
        "region": target.region, "endpoint": target.endpoint, "credentials": target.credentials}
    log.info("sesd starting", transport=settings.email_transport, **where,
             port=settings.server_port, rate=settings.email_rate or "unlimited",
             db=str(settings.db_path), released=released)
    try:
        return Supervisor(settings, store).run()
    finally:
        store.close()
        lock.close()
