"""The sender process: the single token bucket, the semaphore, retries, and outcome write-back.

One `Sender` owns all concurrency in the process (arq-style): jobs arrive in batches from the
scheduler, wait in `pending` (or in `retries` after a retryable failure), pass the semaphore and
then the bucket, go out through the transport, and their outcomes are written back in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from typing import Any, TypeVar

import structlog

from .. import tracking
from ..config import Settings
from ..errors import PermanentSendError, SendError, SendingPausedError, ThrottledError
from ..messages import Batch, Credit, Job, Stop
from ..store import CREATED, FAILED, SENT, Outcome, Store, now_ms
from ..transports import MAX_BULK_ENTRIES, PIXEL_PLACEHOLDER, BulkEntry, Email, Transport, bulk_safe
from .bucket import SlidingWindowBucket

T = TypeVar("T")
log = structlog.get_logger()

FLUSH_INTERVAL = 0.025  # seconds between outcome write-backs (what a crash can forget)
FLUSH_ROWS = 2_000  # or sooner, when this many outcomes wait
CREDIT_INTERVAL = 0.05
CONTENT_CACHE = 256  # distinct contents kept before unused ones are dropped
METRICS_INTERVAL = 5.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
# After this many consecutive retryable failures SES looks down: stop calling it and probe with
# one call at a time instead of burning every job's attempts in a retry storm.
CIRCUIT_THRESHOLD = 5
PAUSED_PROBE = 60.0  # sending paused by AWS: how often to try one message again


@dataclass(order=True)
class _Retry:
    due: float
    seq: int
    job: Job = field(compare=False)
    attempts: int = field(compare=False)


@dataclass
class Counters:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    throttled: int = 0
    stopped: int = 0
    calls: int = 0

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


class Database:
    """The process's apsw connection, used from one worker thread so the loop never blocks."""

    def __init__(self, store_factory: Callable[[], Store]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sesd-db")
        self.store: Store = self._pool.submit(store_factory).result()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.submit(self.store.close).result()
        self._pool.shutdown()


class Sender:
    def __init__(self, settings: Settings, db: Database, transport: Transport,
                 *, work: Queue[Any] | None, credits: Connection | None,
                 stop_epoch: Any = None, tracking_key: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.db = db
        self.transport = transport
        self.work = work
        self.credits = credits
        self.stop_epoch = stop_epoch
        self.tracking_key = tracking_key
        self.clock = clock
        self.bucket = SlidingWindowBucket(settings.email_rate, pacing=True, clock=clock)
        self.semaphore = asyncio.Semaphore(settings.max_concurrent)
        self.pending: deque[tuple[Job, int]] = deque()  # (job, attempts so far)
        self.retries: list[_Retry] = []
        self.contents: dict[int, tuple[str, str]] = {}
        self.templates: dict[int, str | None] = {}  # content id -> bulk template, None if unsafe
        self._calls_per_content: Counter[int] = Counter()  # content ids of calls in flight
        self.inflight: set[asyncio.Task[None]] = set()
        self.outcomes: list[Outcome] = []
        self.counters = Counters()
        self.accepting = True  # False once draining: no new SES calls start
        self.input_closed = False  # the scheduler's queue delivered Stop or closed
        self.paused_until = 0.0
        self.failure_streak = 0
        self.circuit_until = 0.0  # SES looks down: no calls before this (clock time)
        self.circuit_delay = 0.0
        self._credit_owed = 0
        self._seen_epoch = stop_epoch.value if stop_epoch is not None else 0
        self._seq = 0
        self._wakeup = asyncio.Event()
        self._flushed = asyncio.Event()
        self._stop_requested = asyncio.Event()

    def assume_recent_sends(self, last_sent_ms: int | None) -> bool:
        """A new sender knows nothing of what a previous one (crashed or just restarted) sent in
        the last second, and an empty bucket would let it add a full second's worth on top: up
        to twice the rate in one window. If anything was sent recently, count the window as
        full now, so the first call waits one window. (The previous sender's calls in flight at
        its death are not in the store at all, so this cannot be computed more finely.)"""
        if self.settings.unlimited_rate or last_sent_ms is None:
            return False
        if now_ms() - last_sent_ms > 2_000 * self.bucket.window:
            return False
        self.bucket.take(self.bucket.capacity)
        return True

    # -- intake -------------------------------------------------------------------------------

    def receive(self, item: Batch | Stop | None) -> None:
        """Called on the loop for each message from the scheduler."""
        if isinstance(item, Batch):
            self.contents.update(item.contents)
            if len(self.contents) > CONTENT_CACHE:
                self._forget_unused_contents()
            if self.accepting:
                self.pending.extend((job, 0) for job in item.jobs)
            else:
                self._finish_many([(j, 0) for j in item.jobs], CREATED)
        else:
            self.input_closed = True
            self._stop_requested.set()
        self._wakeup.set()

    def _forget_unused_contents(self) -> None:
        """Contents arrive with every batch; keep only those a held job or a call still needs,
        or a long run with many messages would grow the sender without bound."""
        used = {job.content_id for job, _ in self.pending}
        used.update(r.job.content_id for r in self.retries)
        used.update(self._calls_per_content)
        self.contents = {cid: c for cid, c in self.contents.items() if cid in used}
        self.templates = {cid: t for cid, t in self.templates.items() if cid in used}

    def start_reader(self, loop: asyncio.AbstractEventLoop) -> None:
        """Blocking Queue.get in a thread, handing whole batches to the loop."""
        assert self.work is not None
        work = self.work

        def read() -> None:
            while True:
                try:
                    item = work.get()
                except (EOFError, OSError):
                    item = None
                try:
                    loop.call_soon_threadsafe(self.receive, item)
                except RuntimeError:  # loop closed: we are exiting
                    return
                if not isinstance(item, Batch):
                    return

        threading.Thread(target=read, name="sesd-intake", daemon=True).start()

    def request_stop(self) -> None:
        self._stop_requested.set()
        self._wakeup.set()

    # -- the dispatch loop --------------------------------------------------------------------

    async def run(self) -> None:
        background = [asyncio.create_task(self._flush_loop()),
                      asyncio.create_task(self._credit_loop()),
                      asyncio.create_task(self._metrics_loop())]
        started = self.clock()
        try:
            await self._dispatch_until_stopped()
            await self._drain()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._flush()
            self._send_credit()
            elapsed = max(self.clock() - started, 1e-9)
            log.info("sender stopped", **self.counters.snapshot(),
                     rate=round(self.counters.sent / elapsed, 1))

    async def _dispatch_until_stopped(self) -> None:
        while not self._stop_requested.is_set():
            await self._check_stopped_topics()
            if not self._ready():
                self._wakeup.clear()
                await self._wait_for_work()
                continue
            await self.semaphore.acquire()
            # Wait for room for one recipient, *then* size the call to the room there is: a
            # call that waited for room for a fixed 50 would waste the tokens freed meanwhile.
            while (delay := self.bucket.delay(1)) > 0 and not self._stop_requested.is_set():
                await asyncio.sleep(delay)
            group = None if self._stop_requested.is_set() else self._next_group()
            if group is None:
                self.semaphore.release()
                continue
            group = self._fit_to_bucket(group)
            await self._take_tokens(len(group[1]))
            self._calls_per_content[group[0]] += 1
            task = asyncio.create_task(self._send(*group))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)

    def _ready(self) -> bool:
        """Whether `_next_group` would return a call to make now."""
        now = self.clock()
        if now < self.paused_until or now < self.circuit_until:
            return False
        if self.failure_streak >= CIRCUIT_THRESHOLD and self.inflight:
            return False  # SES looks down: one probe at a time
        if self.retries and self.retries[0].due <= now:
            return True
        return bool(self.pending)

    async def _wait_for_work(self) -> None:
        timeout: float | None = None
        now = self.clock()
        if self.retries:
            timeout = max(0.0, self.retries[0].due - now)
        held_until = max(self.paused_until, self.circuit_until)
        if held_until > now:
            timeout = max(timeout or 0.0, held_until - now)
        if self.stop_epoch is not None:
            timeout = min(timeout, 0.2) if timeout is not None else 0.2
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _next_group(self) -> tuple[int, list[tuple[Job, int]]] | None:
        """The next call to make: (content id, jobs). Several jobs only for a bulk call."""
        if not self._ready():
            return None
        if self.retries and self.retries[0].due <= self.clock():
            r = heapq.heappop(self.retries)
            return r.job.content_id, [(r.job, r.attempts)]
        # (When SES looks down, _ready lets one probe at a time through.)
        job, attempts = self.pending.popleft()
        group = [(job, attempts)]
        if self._template(job.content_id) is not None and self.failure_streak == 0:
            limit = min(MAX_BULK_ENTRIES, max(1, self.bucket.available()))
            while (self.pending and len(group) < limit
                   and self.pending[0][0].content_id == job.content_id):
                group.append(self.pending.popleft())
        return job.content_id, group

    def _template(self, content_id: int) -> str | None:
        """The SendBulkEmail template for this content, or None when bulk must not be used."""
        if content_id not in self.templates:
            subject, html = self.contents[content_id]
            template = tracking.append_pixel(html, PIXEL_PLACEHOLDER)
            usable = self.settings.bulk and bulk_safe(subject, template)
            self.templates[content_id] = template if usable else None
        return self.templates[content_id]

    def _fit_to_bucket(self, group: tuple[int, list[tuple[Job, int]]]
                       ) -> tuple[int, list[tuple[Job, int]]]:
        """A throttle may have shrunk the bucket while we waited for a slot: put back what no
        longer fits in one call."""
        content_id, jobs = group
        capacity = self.bucket.capacity
        if len(jobs) <= capacity:
            return group
        self.pending.extendleft(reversed(jobs[capacity:]))
        return content_id, jobs[:capacity]

    async def _take_tokens(self, n: int) -> None:
        while (delay := self.bucket.hold(n)) > 0:
            await asyncio.sleep(delay)

    # -- one call -----------------------------------------------------------------------------

    async def _send(self, content_id: int, group: list[tuple[Job, int]]) -> None:
        try:
            self.counters.calls += 1
            if len(group) == 1:
                await self._send_one(content_id, *group[0])
            else:
                await self._send_bulk(content_id, group)
        except asyncio.CancelledError:
            # Cut off at the end of the grace period: SES may or may not have it. Hand it back;
            # a duplicate is possible only for exactly these in-flight calls (SPEC allows it).
            self._finish_many(group, CREATED)
            raise
        except Exception as exc:  # a bug, not an SES answer: never lose the jobs over it
            log.exception("send failed unexpectedly", error=str(exc))
            for job, attempts in group:
                self._retry(job, attempts + 1, SendError(f"internal error: {exc}"))
        finally:
            self._calls_per_content[content_id] -= 1
            if not self._calls_per_content[content_id]:
                del self._calls_per_content[content_id]
            self.bucket.settle(len(group))
            self.semaphore.release()
            self._wakeup.set()

    async def _send_one(self, content_id: int, job: Job, attempts: int) -> None:
        subject, html = self.contents[content_id]
        url = tracking.pixel_url(self.settings.server_host, self.tracking_key, job.request_id)
        email = Email(job.request_id, job.email, subject, tracking.append_pixel(html, url))
        try:
            message_id = await self.transport.send(email)
        except SendError as exc:
            self._failed(job, attempts + 1, exc)
        else:
            self._succeeded(job, attempts + 1, message_id)

    async def _send_bulk(self, content_id: int, group: list[tuple[Job, int]]) -> None:
        subject, _ = self.contents[content_id]
        template = self.templates[content_id]
        assert template is not None
        entries = [BulkEntry(job.request_id, job.email,
                             tracking.pixel_url(self.settings.server_host, self.tracking_key,
                                                job.request_id)) for job, _ in group]
        try:
            results = await self.transport.send_bulk(subject, template, entries)
        except SendError as exc:
            for job, attempts in group:
                self._failed(job, attempts + 1, exc)
            return
        for (job, attempts), result in zip(group, results, strict=True):
            if result.error is None and result.message_id:
                self._succeeded(job, attempts + 1, result.message_id)
            else:
                self._failed(job, attempts + 1,
                             result.error or SendError("SES returned no message id"))

    # -- outcomes -----------------------------------------------------------------------------

    def _succeeded(self, job: Job, attempts: int, message_id: str) -> None:
        if self.circuit_delay:
            log.info("SES reachable again; resuming")
            self.circuit_delay = 0.0
        self.failure_streak = 0
        self.bucket.recover()
        self.counters.sent += 1
        self._record(Outcome(job.request_id, SENT, message_id, None, attempts, now_ms()))

    def _failed(self, job: Job, attempts: int, exc: SendError) -> None:
        if isinstance(exc, PermanentSendError):
            self.failure_streak = 0
            self.counters.failed += 1
            self._record(Outcome(job.request_id, FAILED, None, str(exc)[:2000], attempts,
                                 now_ms()))
            return
        if isinstance(exc, SendingPausedError):
            # Not this message's fault: hold everything, retry later, burn no attempt.
            if self.paused_until <= self.clock():
                log.error("SES sending is paused for this account; holding all mail",
                          error=str(exc), retry_in=PAUSED_PROBE)
            self.paused_until = self.clock() + PAUSED_PROBE
            self._schedule_retry(job, attempts - 1, PAUSED_PROBE)
            return
        if isinstance(exc, ThrottledError):
            self.counters.throttled += 1
            self.bucket.throttled()
        else:
            self.failure_streak += 1
            if self.failure_streak >= CIRCUIT_THRESHOLD:
                self._open_circuit(exc)
        self._retry(job, attempts, exc)

    def _open_circuit(self, exc: Exception) -> None:
        """Consecutive transient failures: SES (or the way to it) is down. Stop calling it for a
        growing interval, then let one probe through; a success closes the circuit."""
        now = self.clock()
        if now < self.circuit_until:
            return  # already open: the other failures were in flight when it opened
        self.circuit_delay = min(BACKOFF_CAP, max(1.0, self.circuit_delay * 2))
        self.circuit_until = now + self.circuit_delay
        log.warning("SES unreachable; pausing sending", retry_in=self.circuit_delay,
                    consecutive_failures=self.failure_streak, error=str(exc)[:300])

    def _retry(self, job: Job, attempts: int, exc: Exception) -> None:
        if attempts >= self.settings.max_attempts:
            self.counters.failed += 1
            log.warning("giving up", request_id=job.request_id, attempts=attempts, error=str(exc))
            self._record(Outcome(job.request_id, FAILED, None,
                                 f"gave up after {attempts} attempts: {exc}"[:2000], attempts,
                                 now_ms()))
            return
        self.counters.retried += 1
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempts - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: failed calls must not come back together
        log.info("retrying", request_id=job.request_id, attempt=attempts, backoff=round(delay, 2),
                 error=str(exc)[:300])
        self._schedule_retry(job, attempts, delay)

    def _schedule_retry(self, job: Job, attempts: int, delay: float) -> None:
        self._seq += 1
        heapq.heappush(self.retries, _Retry(self.clock() + delay, self._seq, job, attempts))

    def _record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self._credit_owed += 1

    def _finish_many(self, group: list[tuple[Job, int]], status: int) -> None:
        at = now_ms()
        for job, attempts in group:
            self._record(Outcome(job.request_id, status, None, None, attempts, at))

    async def _check_stopped_topics(self) -> None:
        """When the API stopped a topic, drop the jobs of it we hold (they are status 4)."""
        if self.stop_epoch is None or self.stop_epoch.value == self._seen_epoch:
            return
        self._seen_epoch = self.stop_epoch.value
        held = [job.request_id for job, _ in self.pending] + [r.job.request_id
                                                               for r in self.retries]
        if not held:
            return
        stopped = await self.db.run(self.db.store.stopped_among, held)
        if not stopped:
            return
        self.pending = deque(p for p in self.pending if p[0].request_id not in stopped)
        self.retries = [r for r in self.retries if r.job.request_id not in stopped]
        heapq.heapify(self.retries)
        self.counters.stopped += len(stopped)
        self._credit_owed += len(stopped)
        log.info("dropped jobs of stopped topics", count=len(stopped))

    # -- drain, flush, credit, metrics --------------------------------------------------------

    async def _drain(self) -> None:
        """Stop starting calls, hand back what has not started, let in-flight calls finish
        within the grace period, then cancel the rest."""
        self.accepting = False
        handed_back = list(self.pending) + [(r.job, r.attempts) for r in self.retries]
        self.pending.clear()
        self.retries.clear()
        self._finish_many(handed_back, CREATED)
        inflight = len(self.inflight)
        log.info("draining", in_flight=inflight, handed_back=len(handed_back))
        if self.inflight:
            _, late = await asyncio.wait(set(self.inflight), timeout=self.settings.shutdown_grace)
            for task in late:
                task.cancel()
            if late:
                log.warning("grace period over; cancelled in-flight calls", count=len(late))
                await asyncio.gather(*late, return_exceptions=True)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self._flush()

    async def _flush(self) -> None:
        if not self.outcomes:
            return
        batch, self.outcomes = self.outcomes, []
        try:
            # Shielded: cancelling the flush loop at shutdown must not cancel a write that has
            # taken its batch; the final flush queues behind it on the same DB thread.
            await asyncio.shield(self.db.run(self.db.store.record_outcomes, batch))
        except Exception as exc:
            # Keep them and try again: an outcome is never dropped. Rows stay "processing",
            # so even if we die now they are recovered and re-sent, not lost.
            log.error("could not write outcomes; will retry", error=str(exc), rows=len(batch))
            self.outcomes[:0] = batch

    async def _credit_loop(self) -> None:
        while True:
            await asyncio.sleep(CREDIT_INTERVAL)
            if len(self.outcomes) >= FLUSH_ROWS:
                await self._flush()
            self._send_credit()

    def _send_credit(self) -> None:
        if self._credit_owed and self.credits is not None:
            try:
                self.credits.send(Credit(self._credit_owed))
            except (BrokenPipeError, OSError):
                return
            self._credit_owed = 0

    async def _metrics_loop(self) -> None:
        last = self.counters.sent
        while True:
            await asyncio.sleep(METRICS_INTERVAL)
            sent = self.counters.sent
            if sent != last or self.pending or self.retries or self.inflight:
                log.info("metrics", **self.counters.snapshot(),
                         rate=round((sent - last) / METRICS_INTERVAL, 1),
                         pending=len(self.pending), retrying=len(self.retries),
                         in_flight=len(self.inflight), bucket_rate=self.bucket.effective_rate)
            last = sent
