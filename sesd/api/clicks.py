"""Click redirects: where a click goes, which clicks cost a database write, and how the writes
that do happen share their commits.

- `location`: a stored link as a `Location` header value, changed only where HTTP demands it.
- `ClickMemory`: like opens.OpenCounter for the pixel. The first click on a (request, link)
  writes its one Click row; a replay of a link this process has recorded (the reader clicking
  again, a mail scanner, anyone who has the message) is answered from memory and only counted,
  the counts added to the rows every few seconds. Bounded: past its size the oldest links are
  forgotten (their next click looks them up once more) and extra counts dropped.
- `GroupCommit`: first clicks arriving while a write is in flight wait for the next one, and
  share it. The API's connection commits with synchronous=FULL, so one transaction per click
  would cap clicks at the disk's fsync rate; one per batch does not.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_USER_AGENT = 300  # characters of the User-Agent header kept with a click

# What a header value cannot hold (controls, space, non-ASCII); tab, CR and LF are dropped, as
# a browser's URL parser drops them from a link, the rest percent-encoded as UTF-8.
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\U0010ffff]")
_DROPPED = frozenset("\t\n\r")


def location(url: str) -> str:
    """`url` as a Location header: identical for every ordinary link (query string, `&`,
    `%`-escapes and all), with only what HTTP cannot carry encoded."""
    if not _UNSAFE.search(url):
        return url

    def fix(match: re.Match[str]) -> str:
        char = match[0]
        if char in _DROPPED:
            return ""
        return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))

    return _UNSAFE.sub(fix, url)


def user_agent(header: str | None) -> str | None:
    """A User-Agent as stored: valid text (aiohttp keeps undecodable bytes as surrogates, which
    SQLite cannot take), cut short; None when absent or empty."""
    if not header:
        return None
    text = header.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text[:MAX_USER_AGENT] or None


class ClickMemory:
    """The links whose Click row this process has written, with their URLs, and the replays
    counted since the last flush."""

    def __init__(self, known: int = 50_000, pending: int = 50_000) -> None:
        self._known: OrderedDict[tuple[int, int], str] = OrderedDict()
        self._pending: dict[tuple[int, str], int] = {}
        self._known_size = known
        self._pending_size = pending

    def url(self, request_id: int, link: int) -> str | None:
        """The URL of a link already recorded; None: look it up (and record the click)."""
        url = self._known.get((request_id, link))
        if url is not None:
            self._known.move_to_end((request_id, link))
        return url

    def remember(self, request_id: int, link: int, url: str) -> None:
        self._known[(request_id, link)] = url
        self._known.move_to_end((request_id, link))
        while len(self._known) > self._known_size:  # prune after registering
            self._known.popitem(last=False)

    def count(self, request_id: int, url: str) -> None:
        key = (request_id, url)
        if key in self._pending or len(self._pending) < self._pending_size:
            self._pending[key] = self._pending.get(key, 0) + 1

    def drain(self) -> dict[tuple[int, str], int]:
        """The counts held since the last drain (to add to the database), and forget them."""
        pending, self._pending = self._pending, {}
        return pending


class GroupCommit(Generic[T, R]):
    """Items submitted while a `write` is in flight go together into the next one.

    `write` takes a batch and returns one result per item, in order; if it raises, every item
    of that batch gets the exception. A waiter that goes away (a client that hung up) does not
    cancel the write its item is part of."""

    def __init__(self, write: Callable[[list[T]], Awaitable[list[R]]],
                 max_batch: int = 500) -> None:
        self._write = write
        self._max_batch = max_batch
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:self._max_batch]
                del self._waiting[:self._max_batch]
                try:
                    results = await self._write([item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._task = None

    async def close(self) -> None:
        """Wait for the writes already asked for."""
        if self._task is not None:
            await asyncio.shield(self._task)
