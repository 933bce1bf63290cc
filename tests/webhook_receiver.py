"""A webhook endpoint for black-box tests and the bench: a real aiohttp server on 127.0.0.1 in
a thread of its own, verifying every delivery's signature with the third-party
`standardwebhooks` package (not sesd's own code), and misbehaving on demand."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from sesd.testing.harness import free_port


@dataclass
class Delivery:
    webhook_id: str
    type: str
    data: dict[str, Any]
    received: float  # epoch seconds
    timestamp: str  # the event's own


@dataclass
class Receiver:
    """mode: "ok" answers 204; "error" 500; "slow" answers only after `slow_for` seconds (the
    notifier has timed out by then: not counted as delivered). stop_listening() closes the port
    (connections are refused); listen() opens it again, on the same port."""

    secret: str = ""
    mode: str = "ok"
    slow_for: float = 5.0
    delay: float = 0.0  # seconds every answer waits, in every mode (keeps attempts in flight)
    port: int = field(default_factory=free_port)
    delivered: list[Delivery] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)  # webhook-id -> requests seen
    bad_signatures: int = 0
    answered_ok: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _ids: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._open())
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        assert ready.wait(10)
        return self

    async def _open(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def _close(self) -> None:
        """Down: the listener and every open (keep-alive) connection are closed."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._site = None

    def _call(self, coro: Any) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(15)

    def stop_listening(self) -> None:
        self._call(self._close())

    def listen(self) -> None:
        self._call(self._open())

    def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._call(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        try:
            event = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            with self._lock:
                self.bad_signatures += 1
            return web.Response(status=400, text="bad signature")
        msg_id = request.headers["webhook-id"]
        with self._lock:
            self.attempts[msg_id] += 1
        mode = self.mode
        if self.delay:
            await asyncio.sleep(self.delay)
        if mode == "error":
            return web.Response(status=500, text="receiver failing on purpose")
        if mode == "slow":
            await asyncio.sleep(self.slow_for)
            return web.Response(status=200)
        with self._lock:
            self.answered_ok += 1
            self.delivered.append(Delivery(msg_id, event["type"], event["data"], time.time(),
                                           event["timestamp"]))
            self._ids.add(msg_id)
        return web.Response(status=204)

    # -- views for assertions -----------------------------------------------------------------

    def unique(self) -> int:
        """Distinct events delivered so far (cheap: for polling)."""
        with self._lock:
            return len(self._ids)

    def by_id(self) -> dict[str, Delivery]:
        with self._lock:
            return {d.webhook_id: d for d in self.delivered}

    def of_type(self, kind: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.delivered if d.type == kind]

    def wait_for(self, count: int, kind: str | None = None, timeout: float = 30.0
                 ) -> list[Delivery]:
        """Until `count` distinct events (of `kind`) are delivered; returns one per id."""
        deadline = time.monotonic() + timeout
        while True:
            unique = [d for d in self.by_id().values() if kind is None or d.type == kind]
            if len(unique) >= count or time.monotonic() > deadline:
                return unique
            time.sleep(0.05)


def body(raw: bytes) -> Any:
    return orjson.loads(raw)
