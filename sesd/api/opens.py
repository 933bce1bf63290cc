"""Which pixel hits cost a database write: the first per request, and a batch now and then.

A genuine pixel link can be replayed without end (a mail client that reloads it, or anyone who
has the message). Its first hit writes the request's one Open row at once; later hits of a
request this process already recorded are only counted here and added to that row in one
transaction every few seconds. So one client replaying one link causes O(1) memory and no
fsync per hit. Both maps are bounded: past them, the oldest ids are forgotten (their next hit
writes once more) and extra counts are dropped (a count is a nicety, the row is the fact).
"""

from __future__ import annotations

from collections import OrderedDict


class OpenCounter:
    def __init__(self, known: int = 50_000, pending: int = 10_000) -> None:
        self._known: OrderedDict[int, None] = OrderedDict()
        self._pending: dict[int, int] = {}
        self._known_size = known
        self._pending_size = pending

    def seen(self, request_id: int) -> bool:
        """Whether this request's Open row is already written: then count the hit instead."""
        return request_id in self._known

    def remember(self, request_id: int) -> None:
        self._known[request_id] = None
        self._known.move_to_end(request_id)
        while len(self._known) > self._known_size:  # prune after registering
            self._known.popitem(last=False)

    def count(self, request_id: int) -> None:
        if request_id in self._pending or len(self._pending) < self._pending_size:
            self._pending[request_id] = self._pending.get(request_id, 0) + 1

    def drain(self) -> dict[int, int]:
        """The counts held since the last drain (to add to the database), and forget them."""
        pending, self._pending = self._pending, {}
        return pending
