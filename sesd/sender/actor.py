"""The sender's actor: wires the bucket, the semaphore, the policies and the ledger together.

One `Sender` owns all concurrency in the process (arq-style): jobs arrive in batches from the
scheduler and wait (`waiting.py`), pass the semaphore and then the token bucket, are marked as
started in the store (so a topic stop never counts a request about to reach SES), go out through
the transport, and their outcomes are written back in batches (`ledger.py`). What each SES answer
means for a job is decided by the pure policies of `policy.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from typing import Any

import structlog

from .. import telemetry
from ..config import Settings
from ..database import Database
from ..errors import (
    BulkUnsupportedError,
    IdentityNotVerifiedError,
    PermanentSendError,
    SendError,
    SendingPausedError,
    ThrottledError,
)
from ..messages import Batch, Content, Credit, Job
from ..store import CREATED, FAILED, PROCESSING, SENT, Outcome, now_ms
from ..transports import MAX_BULK_ENTRIES, BulkEntry, BulkTemplate, Transport
from .bucket import SlidingWindowBucket
from .compose import PASSTHROUGH, Composer, Prepared
from .ledger import FLUSH_ROWS, Ledger
from .policy import Backoff, Breaker, Holds, effective_rate
from .waiting import BULK, TRANSACTIONAL, Held, Waiting

log = structlog.get_logger()

CREDIT_INTERVAL = 0.05
METRICS_INTERVAL = 5.0
STOP_POLL = 0.2  # how often held jobs are checked against topic stops while idle
MAX_ERROR = 2000  # characters of SES's text kept per request
CALL_HORIZON = 0.2  # seconds of sending one bulk call may take at the current rate


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


SINGLE, SHARED, PASSTHROUGH_CALL = "single", "shared", "passthrough"


@dataclass(slots=True)
class Call:
    """One SES call about to be made: a SendEmail, or a bulk call of one content (`shared`) or
    of different messages with the same envelope (`passthrough`)."""

    content_id: int  # the first job's
    jobs: list[Held]
    identity: str  # the From address: what an unverified-identity hold is about
    mode: str = SINGLE
    probe: bool = False  # lets a held identity or account try one message


class Contents:
    """The contents the held jobs need, prepared once and counted by job: a content leaves with
    its last job, never before (a cache that forgot by size dropped contents a new batch still
    needed)."""

    def __init__(self, composer: Composer) -> None:
        self.composer = composer
        self.by_id: dict[int, Content] = {}
        self._prepared: dict[int, Prepared] = {}
        self._refs: Counter[int] = Counter()

    def add(self, contents: dict[int, Content]) -> None:
        self.by_id.update(contents)

    def prepared(self, content_id: int) -> Prepared:
        found = self._prepared.get(content_id)
        if found is None:
            found = self._prepared[content_id] = self.composer.prepare(self.by_id[content_id])
        return found

    def hold(self, content_id: int) -> None:
        self._refs[content_id] += 1

    def release(self, content_id: int) -> None:
        self._refs[content_id] -= 1
        if self._refs[content_id] <= 0:
            del self._refs[content_id]
            self.by_id.pop(content_id, None)
            self._prepared.pop(content_id, None)

    def __len__(self) -> int:
        return len(self.by_id)


class Sender:
    def __init__(self, settings: Settings, db: Database, transport: Transport,
                 *, work: Queue[Any] | None, credits: Connection | None,
                 stop_epoch: Any = None, tracking_key: str,
                 report_held: Callable[[str | None], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.db = db
        self.transport = transport
        self.work = work
        self.credits = credits
        self.stop_epoch = stop_epoch
        self.tracking_key = tracking_key
        self.report_held = report_held
        self.clock = clock
        self.bucket = SlidingWindowBucket(settings.email_rate, pacing=True, clock=clock)
        self.semaphore = asyncio.Semaphore(settings.max_concurrent)
        self.backoff = Backoff(settings.max_attempts)
        self.breaker = Breaker(clock)
        self.holds = Holds(clock, account_probe=settings.ses_hold_probe,
                           identity_probe=settings.ses_hold_probe)
        self.ledger = Ledger(db)
        self.waiting = Waiting()
        self.composer = Composer(settings, tracking_key)
        self.contents = Contents(self.composer)
        self.inflight: set[asyncio.Task[None]] = set()
        self.counters = Counters()
        self.bulk_supported = True  # False once SES said it has no SendBulkEmail
        self.accepting = True  # False once draining: no new SES calls start
        self.input_closed = False  # the scheduler's queue closed
        self._credit_owed = 0
        self._quota: float | None = None
        self._reported: str | None = None
        self._seen_epoch = stop_epoch.value if stop_epoch is not None else 0
        self._wakeup = asyncio.Event()
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

    def receive(self, item: Batch | None) -> None:
        """Called on the loop for each message from the scheduler (None: the queue closed)."""
        if isinstance(item, Batch):
            # Jobs are registered before anything is forgotten: a batch's own contents stay.
            self.contents.add(item.contents)
            for job in item.jobs:
                self.contents.hold(job.content_id)
            fault = self.settings.fault_crash_email
            if fault and any(job.email == fault for job in item.jobs):
                # Test hook (SESD_FAULT_CRASH_EMAIL): die as a crashing sender would.
                log.error("fault injection: sender crashing on purpose", email=fault)
                os._exit(1)
            for job in item.jobs:
                held = Held(job, 0, self._priority(job))
                if not self.accepting:
                    self._finish(held, CREATED)
                elif job.content_id not in self.contents.by_id:
                    self._internal_failure(held, KeyError(f"content {job.content_id} missing"))
                else:
                    self.waiting.add(held)
        else:
            self.input_closed = True
            self._stop_requested.set()
        self._wakeup.set()

    def _priority(self, job: Job) -> int:
        content = self.contents.by_id.get(job.content_id)
        return BULK if content is None or content.bulk else TRANSACTIONAL

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
                except Exception as exc:
                    # A batch that cannot even be unpickled: its jobs are unknown here, so only
                    # the supervisor's crash accounting can isolate them. Die as a crash does.
                    log.exception("unreadable batch from the scheduler; exiting", error=str(exc))
                    os._exit(1)
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

    async def follow_quota(self) -> None:
        """Send at min(EMAIL_RATE, the account's MaxSendRate): read it now, and again every
        SES_QUOTA_REFRESH seconds (accounts are raised and lowered); log every change."""
        quota = await self.transport.max_send_rate()
        if quota is None:
            if self._quota is None:
                log.warning("could not read the SES account's MaxSendRate (GetAccount failed); "
                            "sending at EMAIL_RATE", email_rate=self.settings.email_rate or
                            "unlimited")
            return
        rate = effective_rate(self.settings.email_rate, quota)
        if quota != self._quota:
            log.info("SES account send quota", max_send_rate=quota,
                     email_rate=self.settings.email_rate or "unlimited", sending_at=rate)
        self._quota = quota
        if rate != self.bucket.rate:
            log.info("effective send rate changed", rate=rate, was=self.bucket.rate or
                     "unlimited", max_send_rate=quota)
            self.bucket.set_rate(rate)

    async def _quota_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ses_quota_refresh)
            try:
                await self.follow_quota()
            except Exception as exc:  # never let a quota read take sending down
                log.warning("could not refresh the SES quota", error=str(exc)[:300])

    async def run(self) -> None:
        background = [asyncio.create_task(self.ledger.flush_loop()),
                      asyncio.create_task(self._credit_loop()),
                      asyncio.create_task(self._metrics_loop())]
        if self.transport.name == "ses":
            background.append(asyncio.create_task(self._quota_loop()))
        started = self.clock()
        try:
            await self._dispatch_until_stopped()
            await self._drain()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.ledger.flush()
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
            call = None if self._stop_requested.is_set() else self._next_call()
            if call is None:
                self.semaphore.release()
                continue
            self._fit_to_bucket(call)
            await self._take_tokens(len(call.jobs))
            task = asyncio.create_task(self._send(call))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)

    def _ready(self) -> bool:
        """Whether `_next_call` may have a call to make now."""
        now = self.clock()
        has_work = self.waiting.has_ready() or self.waiting.retries_due(now)
        if self.holds.account_held:
            return has_work and self.holds.may_probe("")
        if self.breaker.wait() > 0 or (self.breaker.probing and self.inflight):
            return False  # SES looks down: one probe at a time
        return has_work or any(self.holds.may_probe(i)
                               for i in self.waiting.parked_identities())

    async def _wait_for_work(self) -> None:
        now = self.clock()
        times = [t - now for t in (self.waiting.next_retry(),) if t is not None]
        if (probe := self.holds.next_probe()) is not None:
            times.append(probe)
        if (circuit := self.breaker.wait()) > 0:
            times.append(circuit)
        if self.stop_epoch is not None:
            times.append(STOP_POLL)
        timeout = max(0.0, min(times)) if times else None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _next_call(self) -> Call | None:
        """The next call to make, or None. Jobs of a held identity are parked on the way."""
        if not self._ready():
            return None
        if self.holds.account_held:
            held = self.waiting.pop(self.clock())
            if held is None:
                return None
            return self._probe_call(held, "")
        for identity in self.waiting.parked_identities():
            if self.holds.may_probe(identity):
                held = self.waiting.pop_parked(identity)
                if held is not None:
                    return self._probe_call(held, identity)
        while (held := self.waiting.pop(self.clock())) is not None:
            try:
                identity = self.contents.prepared(held.job.content_id).identity
                if self.holds.held(identity):
                    self.waiting.park(identity, held)
                    continue
                return self._group(held, identity)
            except Exception as exc:  # a bug about this one job: fail it, keep the others going
                self._internal_failure(held, exc)
        return None

    def _probe_call(self, held: Held, identity: str) -> Call:
        self.holds.start_probe(identity)
        return Call(held.job.content_id, [held], identity or self.composer.default_sender,
                    probe=True)

    def _group(self, held: Held, identity: str) -> Call:
        """The call this job goes out in, with the jobs that may share it: a bulk call when bulk
        is usable (configured, SES has it, SES answered well since the last failure). Jobs of
        one content share its template; different messages with the same envelope share a
        pass-through call."""
        call = Call(held.job.content_id, [held], identity)
        if not (self.settings.bulk and self.bulk_supported and self.breaker.streak == 0):
            return call
        limit = min(MAX_BULK_ENTRIES, max(1, self.bucket.available()), self._call_size()) - 1
        if limit <= 0:
            return call
        contents = self.contents
        content_id = held.job.content_id
        prepared = contents.prepared(content_id)
        if prepared.shared is not None:
            same = self.waiting.take_following(
                held.priority, lambda h: h.job.content_id == content_id, limit)
            if same:
                call.jobs += same
                call.mode = SHARED
                return call
        envelope = prepared.envelope

        def alike(other: Held) -> bool:
            return (other.job.content_id in contents.by_id
                    and contents.prepared(other.job.content_id).envelope == envelope)

        others = self.waiting.take_following(held.priority, alike, limit)
        if others:
            call.jobs += others
            call.mode = PASSTHROUGH_CALL
        return call

    def _call_size(self) -> int:
        """Most recipients one bulk call takes: the bucket paces calls by their size, so a call
        of n delays the next by n / rate; at low rates, smaller calls keep the wait of the next
        call (a transactional message) under CALL_HORIZON."""
        rate = self.bucket.effective_rate
        return MAX_BULK_ENTRIES if not rate else max(1, int(rate * CALL_HORIZON))

    def _fit_to_bucket(self, call: Call) -> None:
        """A throttle may have shrunk the bucket while we waited for a slot: put back what no
        longer fits in one call."""
        capacity = self.bucket.capacity
        if len(call.jobs) > capacity:
            self.waiting.add_front(call.jobs[capacity:])
            del call.jobs[capacity:]

    async def _take_tokens(self, n: int) -> None:
        while (delay := self.bucket.hold(n)) > 0:
            await asyncio.sleep(delay)

    # -- one call -----------------------------------------------------------------------------

    async def _send(self, call: Call) -> None:
        taken = len(call.jobs)
        started = False
        try:
            if not await self._start(call):
                return
            started = True
            self.counters.calls += 1
            for held in call.jobs:
                held.attempts += 1
            if len(call.jobs) == 1:
                await self._send_one(call)
            else:
                await self._send_bulk(call)
        except asyncio.CancelledError:
            # Cut off at the end of the grace period: SES may or may not have it. Hand it back;
            # a duplicate is possible only for exactly these in-flight calls (SPEC allows it).
            for held in call.jobs:
                self._finish(held, CREATED)
            raise
        except Exception as exc:  # a bug, not an SES answer: never lose the jobs over it
            log.exception("send failed unexpectedly", error=str(exc))
            telemetry.capture(exc)
            for held in call.jobs:
                self._retry(held, call, SendError(f"internal error: {exc}"))
        finally:
            if call.probe and self.holds.blocked(call.identity) is not None:
                self.holds.end_probe(call.identity)
            if started:
                self.bucket.settle(taken)
            else:
                self.bucket.release(taken)
            self.semaphore.release()
            self._report()
            self._wakeup.set()

    async def _start(self, call: Call) -> bool:
        """Commit the call's requests as started; drop the ones stopped since they were claimed.
        False when nothing is left to send (the tokens are given back)."""
        try:
            allowed = await self.ledger.start([h.job.request_id for h in call.jobs])
        except Exception as exc:
            # The store could not say (busy, full): send nothing, try these again shortly.
            log.warning("could not mark a call as started; will try again", error=str(exc))
            for held in call.jobs:
                self.waiting.retry(held, self.clock() + 1.0)
            return False
        stopped = [h for h in call.jobs if h.job.request_id not in allowed]
        if stopped:
            call.jobs = [h for h in call.jobs if h.job.request_id in allowed]
            self.counters.stopped += len(stopped)
            for held in stopped:
                self._leave(held)
            self.bucket.release(len(stopped))
        return bool(call.jobs)

    async def _send_one(self, call: Call) -> None:
        await self._send_email(call.jobs[0], call)

    async def _send_email(self, held: Held, call: Call) -> None:
        email = self.composer.email(self.contents.prepared(held.job.content_id), held.job)
        try:
            message_id = await self.transport.send(email)
        except SendError as exc:
            self._failed(held, call, exc)
        else:
            self._succeeded(held, call, message_id)

    async def _send_bulk(self, call: Call) -> None:
        prepared = self.contents.prepared(call.content_id)
        alone: list[Held] = []  # too large for a bulk entry: each goes as a SendEmail
        if call.mode == SHARED:
            assert prepared.shared is not None
            template = prepared.shared
            entries = [self.composer.shared_entry(prepared, h.job) for h in call.jobs]
            jobs = call.jobs
        else:
            template = PASSTHROUGH
            entries, jobs = [], []
            for held in call.jobs:
                entry = self.composer.passthrough_entry(
                    self.contents.prepared(held.job.content_id), held.job)
                if entry is None:
                    alone.append(held)
                else:
                    entries.append(entry)
                    jobs.append(held)
        if len(entries) == 1 and not alone:
            await self._send_email(jobs[0], call)  # a bulk call of one is a SendEmail
        elif entries:
            await self._bulk_call(call, prepared, template, entries, jobs)
        for held in alone:
            await self._send_email(held, call)

    async def _bulk_call(self, call: Call, prepared: Prepared, template: BulkTemplate,
                         entries: list[BulkEntry], jobs: list[Held]) -> None:
        try:
            results = await self.transport.send_bulk(prepared.envelope, template, entries)
        except BulkUnsupportedError as exc:
            self._bulk_unsupported(jobs, exc)
            return
        except SendError as exc:
            for held in jobs:
                self._failed(held, call, exc)
            return
        for held, result in zip(jobs, results, strict=True):
            if result.error is None and result.message_id:
                self._succeeded(held, call, result.message_id)
            else:
                self._failed(held, call, result.error or SendError("SES returned no message id"))

    # -- what an answer means -----------------------------------------------------------------

    def _succeeded(self, held: Held, call: Call, message_id: str) -> None:
        if self.breaker.success():
            log.info("SES reachable again; resuming")
        for lifted in self.holds.release(call.identity):
            log.info("hold lifted: sending again", identity=lifted or "account",
                     resumed=self.waiting.unpark(lifted) if lifted else 0)
        self.bucket.recover()
        self.counters.sent += 1
        self._finish(held, SENT, message_id=message_id)

    def _failed(self, held: Held, call: Call, exc: SendError) -> None:
        if isinstance(exc, PermanentSendError):
            self._fail(held, exc)
            return
        if isinstance(exc, SendingPausedError):
            # Not this message's fault: hold everything, burn no attempt, probe later.
            held.attempts -= 1
            if self.holds.hold("", str(exc)):
                log.error("SES sending is paused for this account (or its credentials are "
                          "refused); holding all mail",
                          error=str(exc)[:300], probe_every=self.holds.account_probe)
            self._requeue(held, exc)
            self.waiting.add(held, front=True)
            return
        if isinstance(exc, IdentityNotVerifiedError):
            held.attempts -= 1
            if self.holds.hold(exc.identity, str(exc)):
                log.error("the From identity is not verified in SES; holding its mail",
                          identity=exc.identity, error=str(exc)[:300],
                          probe_every=self.holds.identity_probe)
            self._requeue(held, exc)
            self.waiting.park(exc.identity, held)
            return
        if isinstance(exc, ThrottledError):
            self.counters.throttled += 1
            self.bucket.throttled()
        elif (opened := self.breaker.failure(str(exc)[:300])) is not None:
            log.warning("SES unreachable; pausing sending", retry_in=opened,
                        consecutive_failures=self.breaker.streak, error=str(exc)[:300])
        self._retry(held, call, exc)

    def _bulk_unsupported(self, jobs: list[Held], exc: BulkUnsupportedError) -> None:
        """The endpoint has no SendBulkEmail: not the recipients' fault. Switch this process to
        SendEmail for good and send the jobs again, burning no attempts."""
        if self.bulk_supported:
            log.warning("SES endpoint does not implement SendBulkEmail; sending one message per "
                        "call from now on", error=str(exc)[:300])
            self.bulk_supported = False
        for held in jobs:
            held.attempts -= 1
            self._requeue(held, exc)
        self.waiting.add_front(jobs)

    def _retry(self, held: Held, call: Call, exc: Exception) -> None:
        delay = self.backoff.delay(held.attempts)
        if delay is None:
            self._fail(held, exc, prefix=f"gave up after {held.attempts} attempts: ")
            return
        self.counters.retried += 1
        log.info("retrying", request_id=held.job.request_id, attempt=held.attempts,
                 backoff=round(delay, 2), error=str(exc)[:300])
        self._requeue(held, exc)
        self.waiting.retry(held, self.clock() + delay)

    def _fail(self, held: Held, exc: Exception, prefix: str = "") -> None:
        """A final failure: stored with SES's text and logged once, with what finds it again."""
        self.counters.failed += 1
        error = f"{prefix}{exc}"[:MAX_ERROR]
        content = self.contents.by_id.get(held.job.content_id)
        log.warning("request failed", request_id=held.job.request_id,
                    topic=content.topic_id if content else None,
                    code=getattr(exc, "code", "") or type(exc).__name__,
                    error=error[:500], attempts=held.attempts)
        self._finish(held, FAILED, error=error)

    def _internal_failure(self, held: Held, exc: Exception) -> None:
        """A bug while preparing this job (not an SES answer): fail it alone, loudly, instead of
        letting it take the sender (and, restarted, the sender again) down."""
        log.exception("cannot prepare job; failing it", request_id=held.job.request_id,
                      error=str(exc))
        telemetry.capture(exc)
        self._fail(held, SendError(f"internal error preparing the message: {exc!r}",
                                   code="InternalError"))

    # -- bookkeeping --------------------------------------------------------------------------

    def _requeue(self, held: Held, exc: Exception) -> None:
        """The job's call is over but the job stays: clear its started mark in the store (a topic
        stop may take it now) and keep the error and attempts for the requests route."""
        self.ledger.record(Outcome(held.job.request_id, PROCESSING, None, str(exc)[:MAX_ERROR],
                                   held.attempts, now_ms()))

    def _finish(self, held: Held, status: int, *, message_id: str | None = None,
                error: str | None = None) -> None:
        """The job leaves the sender's hands with this outcome."""
        self.ledger.record(Outcome(held.job.request_id, status, message_id, error, held.attempts,
                                   now_ms()))
        self._leave(held)

    def _leave(self, held: Held) -> None:
        self._credit_owed += 1
        self.contents.release(held.job.content_id)

    def _report(self) -> None:
        """Publish why sending is held (for /health) when that changes."""
        reason = self.holds.held_reason() or self.breaker.held_reason()
        if reason != self._reported:
            self._reported = reason
            if self.report_held is not None:
                self.report_held(reason)

    async def _check_stopped_topics(self) -> None:
        """When the API stopped a topic, drop the jobs of it we hold (they are status 4)."""
        if self.stop_epoch is None or self.stop_epoch.value == self._seen_epoch:
            return
        self._seen_epoch = self.stop_epoch.value
        held_ids = [h.job.request_id for h in self.waiting]
        if not held_ids:
            return
        stopped = await self.db.run(self.db.store.stopped_among, held_ids)
        if not stopped:
            return
        removed = self.waiting.remove(stopped)
        for held in removed:
            self._leave(held)
        self.counters.stopped += len(removed)
        log.info("dropped jobs of stopped topics", count=len(removed))

    # -- drain, credit, metrics ---------------------------------------------------------------

    async def _drain(self) -> None:
        """Stop starting calls, hand back what has not started, let in-flight calls finish
        within the grace period, then cancel the rest."""
        self.accepting = False
        handed_back = self.waiting.drain()
        for held in handed_back:
            self._finish(held, CREATED)
        log.info("draining", in_flight=len(self.inflight), handed_back=len(handed_back))
        if self.inflight:
            _, late = await asyncio.wait(set(self.inflight), timeout=self.settings.shutdown_grace)
            for task in late:
                task.cancel()
            if late:
                log.warning("grace period over; cancelled in-flight calls", count=len(late))
                await asyncio.gather(*late, return_exceptions=True)

    async def _credit_loop(self) -> None:
        while True:
            await asyncio.sleep(CREDIT_INTERVAL)
            if self.ledger.backlog >= FLUSH_ROWS:
                await self.ledger.flush()
            self._send_credit()
            self._report()

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
            if sent != last or len(self.waiting) or self.inflight:
                log.info("metrics", **self.counters.snapshot(),
                         rate=round((sent - last) / METRICS_INTERVAL, 1),
                         waiting=len(self.waiting), in_flight=len(self.inflight),
                         contents=len(self.contents), bucket_rate=self.bucket.effective_rate)
            last = sent
