"""The delivery loop: fan events out, keep each endpoint's slots busy, write attempts back.

One coroutine scans now and then (new events into deliveries, due deliveries into per-endpoint
buffers, attempts back to the store in one transaction per batch); attempts run as tasks, at
most the endpoint's gate allows at a time, and each one that ends starts the next from its
endpoint's buffer without waiting for a scan. Nothing here is shared with another process: a
slow or dead endpoint only ever holds this process's slots for it.

A delivery is fetched again only once its attempt is written back (`held`), and delivery is at
least once: a crash between an attempt and its write-back repeats that attempt, with the same
webhook-id, so receivers can tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import apsw
import structlog

from ..config import Settings
from ..database import Database
from ..errors import StorageFullError
from ..events import webhook_id
from ..store import DELIVERED, GAVE_UP, PENDING, Attempt, DueDelivery, Endpoint, now_ms
from . import payload, signing
from .client import TargetRefused, WebhookClient
from .policy import GATE_CAP, EndpointGate, RetrySchedule

SCAN_INTERVAL = 0.05  # seconds between scans at most: the fact-to-delivery delay's floor
FAN_OUT_CHUNK = 2_000  # events per fan-out transaction: keeps the write lock short
BUFFER = 256  # due deliveries fetched per endpoint at a time
FLUSH_AT = 500  # attempts written back at once at most (and sooner, at every scan)
ENDPOINT_REFRESH = 1.0  # seconds: how soon a new or deleted endpoint is noticed
EXPIRE_EVERY = 60.0  # seconds between sweeps for deliveries past their retry window
ERROR_CHARS = 500

log = structlog.get_logger()


@dataclass
class EndpointState:
    endpoint: Endpoint
    key: bytes
    gate: EndpointGate
    buffer: deque[DueDelivery] = field(default_factory=deque)
    held: set[int] = field(default_factory=set)  # fetched, not yet written back
    in_flight: int = 0
    hurry: bool = False  # reopened after being shut: pull its backed-off backlog forward
    gone: bool = False

    @property
    def id(self) -> int:
        return self.endpoint.id


class Notifier:
    def __init__(self, settings: Settings, db: Database, client: WebhookClient, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall_ms: Callable[[], int] = now_ms,
                 rng: Callable[[], float] = random.random) -> None:
        self.settings = settings
        self.db = db
        self.client = client
        self.clock = clock
        self.wall_ms = wall_ms
        self.schedule = RetrySchedule(base=settings.webhook_retry_base,
                                      cap=settings.webhook_retry_max,
                                      window=settings.webhook_retry_window, rng=rng)
        self.endpoints: dict[int, EndpointState] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.results: list[tuple[EndpointState, Attempt]] = []
        self.stopping = False
        self.cursor = 0
        self.counts = {"delivered": 0, "retried": 0, "failed": 0, "fanned_out": 0}
        self._wake = asyncio.Event()
        self._next_refresh = 0.0
        self._next_expire = clock() + EXPIRE_EVERY

    def request_stop(self) -> None:
        self.stopping = True
        self._wake.set()

    async def run(self) -> None:
        self.cursor = await self.db.run(self.db.store.event_cursor)
        try:
            while not self.stopping:
                try:
                    await self._scan()
                except (apsw.BusyError, StorageFullError) as exc:
                    log.warning("webhook scan skipped: the database is busy or full",
                                error=str(exc))
                for ep in list(self.endpoints.values()):
                    self._pump(ep)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), SCAN_INTERVAL)
                self._wake.clear()
        finally:
            await self._drain()
            log.info("notifier stopped", **self.counts)

    # -- scanning ---------------------------------------------------------------------------

    async def _scan(self) -> None:
        store = self.db.store
        await self._flush()
        now = self.clock()
        if now >= self._next_refresh:
            await self._refresh()
        latest = await self.db.run(store.latest_event)
        while latest > self.cursor and not self.stopping:
            events, made = await self.db.run(store.fan_out, FAN_OUT_CHUNK)
            self.cursor = await self.db.run(store.event_cursor)
            self.counts["fanned_out"] += events
            if made and self.clock() >= self._next_refresh - ENDPOINT_REFRESH + 0.2:
                await self._refresh()  # deliveries may name an endpoint we have not seen
        for ep in list(self.endpoints.values()):
            if ep.hurry:
                ep.hurry = False
                await self.db.run(store.hurry_deliveries, ep.id, self.wall_ms())
            if ep.gate.slots() and len(ep.buffer) < ep.gate.concurrency:
                await self._refill(ep)
        if now >= self._next_expire:
            self._next_expire = now + EXPIRE_EVERY
            window_ms = int(self.settings.webhook_retry_window * 1000)
            for ep in list(self.endpoints.values()):
                expired = await self.db.run(store.expire_deliveries, ep.id, window_ms,
                                            self.wall_ms())
                if expired:
                    self.counts["failed"] += expired
                    log.warning("webhook deliveries failed: not delivered within the retry "
                                "window", webhook=ep.id, count=expired)

    async def _refresh(self) -> None:
        self._next_refresh = self.clock() + ENDPOINT_REFRESH
        found = {e.id: e for e in await self.db.run(self.db.store.endpoints)}
        for wid, ep in list(self.endpoints.items()):
            if wid not in found:
                ep.gone = True
                ep.buffer.clear()
                del self.endpoints[wid]
        for wid, endpoint in found.items():
            if wid not in self.endpoints:
                # Never held shut longer than the longest retry delay the operator allows.
                gate = EndpointGate(self.clock, concurrency=self.settings.webhook_concurrency,
                                    cap=min(GATE_CAP, self.settings.webhook_retry_max))
                self.endpoints[wid] = EndpointState(endpoint, signing.secret_key(endpoint.secret),
                                                    gate)

    async def _refill(self, ep: EndpointState) -> None:
        rows = await self.db.run(self.db.store.due_deliveries, ep.id, self.wall_ms(),
                                 BUFFER + len(ep.held))
        for row in rows:
            if row.delivery_id not in ep.held:
                ep.held.add(row.delivery_id)
                ep.buffer.append(row)

    async def _flush(self) -> None:
        if not self.results:
            return
        batch, self.results = self.results, []
        try:
            await self.db.run(self.db.store.record_attempts, [a for _, a in batch])
        except (apsw.BusyError, StorageFullError) as exc:
            # Kept (and still held, so not attempted again): written at a later scan.
            log.warning("could not record webhook attempts; retrying", error=str(exc),
                        count=len(batch))
            self.results = batch + self.results
            return
        for ep, attempt in batch:
            ep.held.discard(attempt.delivery_id)
            key = {DELIVERED: "delivered", PENDING: "retried", GAVE_UP: "failed"}[attempt.status]
            self.counts[key] += 1

    # -- attempts ---------------------------------------------------------------------------

    def _pump(self, ep: EndpointState) -> None:
        """Start attempts from the endpoint's buffer while its gate has slots for them."""
        while (not self.stopping and not ep.gone and ep.buffer
               and ep.in_flight < ep.gate.slots()):
            delivery = ep.buffer.popleft()
            ep.in_flight += 1
            task = asyncio.create_task(self._attempt(ep, delivery))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _attempt(self, ep: EndpointState, d: DueDelivery) -> None:
        try:
            attempt = await self._deliver(ep, d)
        finally:
            ep.in_flight -= 1
        self.results.append((ep, attempt))
        if attempt.status == DELIVERED:
            if ep.gate.success():
                ep.hurry = True
                log.info("webhook endpoint answers again", webhook=ep.id)
        else:
            shut_for = ep.gate.failure()
            if shut_for is not None:
                log.warning("webhook endpoint failing; holding its deliveries", webhook=ep.id,
                            seconds=round(shut_for, 1), error=attempt.error)
                for held in ep.buffer:  # back to the store's care until the next probe
                    ep.held.discard(held.delivery_id)
                ep.buffer.clear()
        if len(self.results) >= FLUSH_AT or len(ep.buffer) < ep.gate.concurrency:
            self._wake.set()
        self._pump(ep)

    async def _deliver(self, ep: EndpointState, d: DueDelivery) -> Attempt:
        body = payload.render(d)
        headers = signing.headers(ep.key, webhook_id(d.event_id), int(time.time()), body)
        headers["Content-Type"] = "application/json"
        status: int | None = None
        try:
            status, answer = await self.client.post(ep.endpoint.url, body, headers)
        except TargetRefused as exc:
            error = str(exc)
        except TimeoutError:
            error = f"no answer within {self.settings.webhook_timeout:g} s"
        except Exception as exc:  # aiohttp.ClientError, OSError, a malformed answer ...
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            if 200 <= status < 300:
                return Attempt(d.delivery_id, DELIVERED, self.wall_ms(), status)
            if 300 <= status < 400:
                error = f"answered {status}; redirects are not followed"
            else:
                error = f"answered {status}: {answer.strip()}" if answer.strip() else \
                    f"answered {status}"
        at = self.wall_ms()
        retry = self.schedule.next_at(d.attempts + 1, d.first_at / 1000, at / 1000)
        error = error[:ERROR_CHARS]
        if retry is None:
            return Attempt(d.delivery_id, GAVE_UP, at, status, error)
        return Attempt(d.delivery_id, PENDING, at, status, error, int(retry * 1000))

    async def _drain(self) -> None:
        """In-flight attempts get a bounded grace; the rest stay pending for the next start."""
        if self.tasks:
            grace = min(self.settings.shutdown_grace, self.settings.webhook_timeout) + 0.5
            _, late = await asyncio.wait(set(self.tasks), timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        with contextlib.suppress(apsw.BusyError, StorageFullError):
            await self._flush()
