"""The jobs a sender holds that are not in a call: ready ones by priority, retries by due time,
and jobs parked behind a held From identity. Pure bookkeeping, no I/O and no clock of its own."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ..messages import Job

# Lower goes first: transactional mail is claimed and sent ahead of every waiting bulk job.
TRANSACTIONAL, BULK = 0, 1
PRIORITIES = (TRANSACTIONAL, BULK)


@dataclass(slots=True)
class Held:
    """A job in the sender's hands, with the SES attempts it has used."""

    job: Job
    attempts: int = 0
    priority: int = BULK


@dataclass(order=True, slots=True)
class _Retry:
    due: float
    seq: int
    held: Held = field(compare=False)


class Waiting:
    def __init__(self) -> None:
        self.ready: tuple[deque[Held], ...] = tuple(deque() for _ in PRIORITIES)
        self._retries: list[_Retry] = []
        self._parked: dict[str, deque[Held]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return (sum(len(q) for q in self.ready) + len(self._retries)
                + sum(len(q) for q in self._parked.values()))

    def __iter__(self) -> Iterator[Held]:
        for queue in self.ready:
            yield from queue
        yield from (r.held for r in self._retries)
        for queue in self._parked.values():
            yield from queue

    def add(self, held: Held, *, front: bool = False) -> None:
        queue = self.ready[held.priority]
        if front:
            queue.appendleft(held)
        else:
            queue.append(held)

    def add_front(self, items: Iterable[Held]) -> None:
        """Put jobs back ahead of the others of their priority, in their order."""
        for held in reversed(list(items)):
            self.add(held, front=True)

    def retry(self, held: Held, due: float) -> None:
        self._seq += 1
        heapq.heappush(self._retries, _Retry(due, self._seq, held))

    def retries_due(self, now: float) -> bool:
        return bool(self._retries) and self._retries[0].due <= now

    def next_retry(self) -> float | None:
        """When the earliest retry is due (clock time), if any."""
        return self._retries[0].due if self._retries else None

    def has_ready(self) -> bool:
        return any(self.ready)

    def pop(self, now: float) -> Held | None:
        """The next job to send: a due retry first (it waited longest), then the ready jobs in
        priority order."""
        if self.retries_due(now):
            return heapq.heappop(self._retries).held
        for queue in self.ready:
            if queue:
                return queue.popleft()
        return None

    def take_following(self, priority: int, like: Callable[[Held], bool],
                       limit: int) -> list[Held]:
        """Pop up to `limit` jobs from the head of one priority's queue while `like` holds:
        the companions of a bulk call."""
        queue = self.ready[priority]
        taken: list[Held] = []
        while queue and len(taken) < limit and like(queue[0]):
            taken.append(queue.popleft())
        return taken

    # -- held identities ----------------------------------------------------------------------

    def park(self, identity: str, held: Held) -> None:
        self._parked.setdefault(identity.lower(), deque()).append(held)

    def parked(self, identity: str) -> int:
        return len(self._parked.get(identity.lower(), ()))

    def pop_parked(self, identity: str) -> Held | None:
        queue = self._parked.get(identity.lower())
        return queue.popleft() if queue else None

    def unpark(self, identity: str) -> int:
        """The identity's hold is lifted: its jobs go back to the front of their queues."""
        queue = self._parked.pop(identity.lower(), None)
        if not queue:
            return 0
        for priority in PRIORITIES:
            self.add_front(h for h in queue if h.priority == priority)
        return len(queue)

    def parked_identities(self) -> list[str]:
        return [k for k, q in self._parked.items() if q]

    # -- removal ------------------------------------------------------------------------------

    def remove(self, request_ids: set[int]) -> list[Held]:
        """Take these requests out (their topic was stopped); returns what was removed."""
        removed: list[Held] = []

        def keep(held: Held) -> bool:
            if held.job.request_id in request_ids:
                removed.append(held)
                return False
            return True

        for queue in (*self.ready, *self._parked.values()):
            kept = [h for h in queue if keep(h)]
            queue.clear()
            queue.extend(kept)
        self._retries = [r for r in self._retries if keep(r.held)]
        heapq.heapify(self._retries)
        return removed

    def drain(self) -> list[Held]:
        """Everything, emptied out (shutdown hands it back)."""
        everything = list(self)
        for queue in self.ready:
            queue.clear()
        self._retries.clear()
        self._parked.clear()
        return everything
