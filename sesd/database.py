"""A process's apsw connection confined to one worker thread, so the event loop never blocks on
SQLite (the busy timeout, an fsync of a large ingest) and the connection is only ever used from
the thread that opened it."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .store import Store

T = TypeVar("T")


class Database:
    def __init__(self, pool: ThreadPoolExecutor, store: Store) -> None:
        self._pool = pool
        self.store = store

    @classmethod
    async def open(cls, factory: Callable[[], Store], *, name: str = "sesd-db") -> Database:
        """Open the store in its own thread (the thread it will always be used from)."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        try:
            store = await asyncio.get_running_loop().run_in_executor(pool, factory)
        except BaseException:
            pool.shutdown(wait=False)
            raise
        return cls(pool, store)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def close(self) -> None:
        try:
            await self.run(self.store.close)
        finally:
            self._pool.shutdown(wait=False)
