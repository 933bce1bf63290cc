"""The scheduler process: claims due requests and feeds them to the sender in batches.

It sleeps exactly until the earliest `scheduledAt` that is due (or a nudge from the API saying
work was stored for now), and claims only as many rows as the sender has room for: the sender
hands out credit as jobs leave its hands, so the queue between them stays bounded and nothing
waits in memory that a crash could strand for long.
"""

from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from typing import Any

import structlog

from .config import Settings
from .messages import Batch, Credit, Job
from .store import Store, now_ms
from .wakeup import drain

# One claim transaction never takes more than this many rows: keeps the write lock short.
CLAIM_CHUNK = 5_000
# Requests held by a sender that crashed go out apart from everything else, this many at a
# time after one crash and one by one after more: a message that kills the sender then takes
# only itself down, and is failed at MAX_CRASHES (see Store.release_processing).
SUSPECT_BATCH = 50
# Even with nothing scheduled we look again now and then, in case a nudge was lost.
IDLE_RECHECK = 5.0

log = structlog.get_logger()


@dataclass
class SchedulerChannels:
    nudges: Connection  # read end of the API's nudge pipe (raw bytes, see api.process)
    credits: Connection  # Credit messages from the sender
    work: Queue[Any]  # Batch messages to the sender
    window: int  # how many jobs the sender takes at most


class Scheduler:
    def __init__(self, settings: Settings, store: Store, channels: SchedulerChannels) -> None:
        self.settings = settings
        self.store = store
        self.ch = channels
        self.credit = channels.window
        self.stopping = False
        self.claimed = 0
        self.suppressed = 0
        self._isolating = False  # suspects wait: claim nothing until the sender holds nothing
        # A signal only records itself; the wake-up fd gets the select() below out of its sleep.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self.ch.nudges.fileno(), False)

    def install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def run(self) -> None:
        # Nothing else holds claimed rows while we start (the supervisor starts us only after
        # any previous sender is gone), so whatever is still "processing" was stranded by a
        # crash: give it back now rather than after a lease timeout.
        released = self.store.release_processing().released
        log.info("scheduler started", released=released, window=self.ch.window)
        while not self.stopping:
            self._take_credit(block_for=0.0)
            if self.credit > 0 and self._claim_and_send():
                continue
            self._sleep(self._timeout())
        log.info("scheduler stopped", claimed=self.claimed, suppressed=self.suppressed)

    def _claim_and_send(self) -> bool:
        """Claim up to the available credit; True if anything was claimed."""
        level = self.store.suspect_level()
        self._isolating = level > 0
        if level:
            if self.credit < self.ch.window:
                return False  # wait until the sender's hands are empty
            size = 1 if level >= 2 else SUSPECT_BATCH
            claimed = self.store.claim_suspects(level, size)
            if claimed.jobs:
                log.warning("sending requests held at a sender crash apart from other work",
                            count=len(claimed.jobs), crashes=level)
        else:
            claimed = self.store.claim_due(min(self.credit, CLAIM_CHUNK))
        self.suppressed += claimed.suppressed
        if claimed.suppressed:
            log.info("suppressed recipients stopped", count=claimed.suppressed)
        if not claimed.jobs:
            return claimed.suppressed > 0
        contents = self.store.contents({job[2] for job in claimed.jobs})
        self.ch.work.put(Batch([Job(*job) for job in claimed.jobs], contents))
        self.credit -= len(claimed.jobs)
        self.claimed += len(claimed.jobs)
        return True

    def _timeout(self) -> float | None:
        if self.credit <= 0 or (self._isolating and self.credit < self.ch.window):
            return None  # only new credit (or a signal) can let us do anything
        due = self.store.next_due()
        if due is None:
            return IDLE_RECHECK
        # Claims compare scheduled_at <= now in whole ms; wake just after the due ms, never before.
        return min(max(0.0, (due - now_ms() + 1) / 1000), IDLE_RECHECK)

    def _sleep(self, timeout: float | None) -> None:
        fds = [self._wake_r, self.ch.nudges.fileno(), self.ch.credits.fileno()]
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            return
        if self._wake_r in ready:
            drain(self._wake_r)
        if self.ch.nudges.fileno() in ready:
            drain(self.ch.nudges.fileno())
        if self.ch.credits.fileno() in ready:
            self._take_credit(block_for=0.0)

    def _take_credit(self, block_for: float) -> None:
        try:
            while self.ch.credits.poll(block_for):
                message = self.ch.credits.recv()
                if isinstance(message, Credit):
                    self.credit = min(self.ch.window, self.credit + message.n)
                block_for = 0.0
        except (EOFError, OSError):
            # The sender is gone; the supervisor restarts the pipeline. Stop claiming.
            log.warning("sender channel closed; scheduler stopping")
            self.stopping = True


def main(settings: Settings, channels: SchedulerChannels) -> int:
    store = Store(settings.db_path, max_page_count=settings.sqlite_max_pages or None)
    scheduler = Scheduler(settings, store, channels)
    scheduler.install_signals()
    started = time.monotonic()
    try:
        scheduler.run()
    finally:
        # Batches still in the queue's feeder thread when we exit are not waited for: their rows
        # are "processing" in the store, and the next scheduler releases them. Waiting could
        # hang forever if the sender is gone and the pipe is full.
        channels.work.cancel_join_thread()
        store.close()
        log.debug("scheduler exiting", uptime=round(time.monotonic() - started, 1))
    return 0
