"""The sender's record in the store: calls marked as started before they go, outcomes written
back in batches. Nothing the sender learned is dropped: a failed write is kept and tried again."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from ..database import Database
from ..store import Outcome, now_ms

log = structlog.get_logger()

FLUSH_INTERVAL = 0.025  # seconds between outcome write-backs (what a crash can forget)
FLUSH_ROWS = 2_000  # or sooner, when this many outcomes wait


class Ledger:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.outcomes: list[Outcome] = []
        self._starts: list[tuple[list[int], asyncio.Future[set[int]]]] = []
        self._starting: asyncio.Task[None] | None = None

    # -- before a call ------------------------------------------------------------------------

    async def start(self, request_ids: Sequence[int]) -> set[int]:
        """Commit that these requests are being handed to SES; returns the ones that may go
        (still processing: not stopped or suppressed since they were claimed).

        Concurrent callers share one transaction (a group commit): the single path starts a
        call per recipient, and a commit each would cost more than the call."""
        future: asyncio.Future[set[int]] = asyncio.get_running_loop().create_future()
        self._starts.append((list(request_ids), future))
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(self._run_starts())
        return await future

    async def _run_starts(self) -> None:
        while self._starts:
            batch, self._starts = self._starts, []
            ids = [rid for group, _ in batch for rid in group]
            try:
                # Shielded: a caller cancelled at shutdown must not cut a commit in half-use.
                allowed = await asyncio.shield(self.db.run(self.db.store.begin_sending, ids,
                                                           now_ms()))
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for group, future in batch:
                if not future.done():
                    future.set_result({rid for rid in group if rid in allowed})

    # -- after a call -------------------------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    @property
    def backlog(self) -> int:
        return len(self.outcomes)

    async def flush(self) -> None:
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

    async def flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self.flush()
