"""Connection deadlines and a connection cap, so the API can face the internet without a proxy.

aiohttp bounds line and header sizes and closes a connection that sits idle between requests
(`keepalive_timeout`), but a client that trickles its headers or its body one byte at a time
holds a socket (a file descriptor) for as long as it likes, and enough of them starve every
other client, /health included. Each connection here carries a deadline for the phase it is in:

- head: from the first byte of a request until its headers are parsed (``header_timeout``);
- body: from the headers until the body is read (``body_timeout``);
- idle (no request yet, or between requests): aiohttp's keepalive timer (``idle_timeout``);
- handler: the request is being answered; its own work (database, certificate fetch) is bounded
  where it is done.

Past ``max_connections``, a new connection closes the one that has made no progress longest
(idle or still sending headers) rather than being refused: held-open sockets cannot lock out a
genuine client. Only when every connection is mid-request is the new one turned away.
"""

from __future__ import annotations

import asyncio
import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .base import LogThrottle

log = structlog.get_logger()


class Phase(enum.Enum):
    IDLE = "idle"
    HEAD = "head"
    BODY = "body"
    HANDLER = "handler"


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    idle_timeout: float = 30.0
    max_connections: int = 1000


def deadline(phase: Phase, since: float, limits: Limits) -> float | None:
    """When a connection that entered `phase` at `since` must have left it (None: never, by
    this guard; aiohttp's keepalive timer closes idle ones)."""
    if phase is Phase.HEAD:
        return since + limits.header_timeout
    if phase is Phase.BODY:
        return since + limits.body_timeout
    return None


def evictable(phase: Phase) -> bool:
    """Connections making no progress on a request may be closed to admit a new one."""
    return phase in (Phase.IDLE, Phase.HEAD)


class ConnectionGuard:
    """Every live connection of one listening socket, least recently active first."""

    def __init__(self, limits: Limits, loop: asyncio.AbstractEventLoop) -> None:
        self.limits = limits
        self._loop = loop
        self._live: OrderedDict[GuardedRequestHandler, None] = OrderedDict()
        self._closed_log = LogThrottle(clock=loop.time)

    def __len__(self) -> int:
        return len(self._live)

    def factory(self, server: web.Server, **handler_kwargs: Any
                ) -> Callable[[], GuardedRequestHandler]:
        """The protocol factory for loop.create_server: aiohttp's handler, guarded."""
        kwargs = {"keepalive_timeout": self.limits.idle_timeout, **handler_kwargs}

        def make() -> GuardedRequestHandler:
            return GuardedRequestHandler(server, loop=self._loop, guard=self, **kwargs)

        return make

    def admit(self, conn: GuardedRequestHandler) -> bool:
        if len(self._live) >= self.limits.max_connections:
            victim = next((c for c in self._live if evictable(c.phase)), None)
            if victim is None:
                self.closed("connection cap reached, every connection busy")
                return False
            self.closed("connection cap reached: closed the longest idle connection")
            self.forget(victim)
            victim.force_close()
        self._live[conn] = None
        return True

    def active(self, conn: GuardedRequestHandler) -> None:
        if conn in self._live:
            self._live.move_to_end(conn)

    def forget(self, conn: GuardedRequestHandler) -> None:
        self._live.pop(conn, None)

    def closed(self, reason: str) -> None:
        # One line per reason at most every few seconds: a flood must not flood the log.
        held_back = self._closed_log.admit()
        if held_back is not None:
            log.warning("connection closed", reason=reason, similar_lines_held_back=held_back)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol with a deadline for the phase it is in."""

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.phase = Phase.IDLE
        self._request: web.BaseRequest | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.guard.admit(self):
            self._refused = True
            cast(asyncio.Transport, transport).abort()  # before aiohttp starts anything
            return
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self.guard.forget(self)
        self._disarm()
        self._request = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self.phase is Phase.IDLE and data:
            self._enter(Phase.HEAD)
        super().data_received(data)

    # -- called by the app's middleware around each request ------------------------------

    def request_started(self, request: web.BaseRequest) -> None:
        self.guard.active(self)
        self._request = request
        reading = request.body_exists and not request.content.is_eof()
        self._enter(Phase.BODY if reading else Phase.HANDLER)

    def request_finished(self) -> None:
        self._request = None
        self._enter(Phase.IDLE)

    # -- deadlines -----------------------------------------------------------------------------

    def _enter(self, phase: Phase) -> None:
        self._disarm()
        self.phase = phase
        due = deadline(phase, self._loop.time(), self.guard.limits)
        if due is not None:
            self._timer = self._loop.call_at(due, self._overdue)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _overdue(self) -> None:
        self._timer = None
        if self.phase is Phase.BODY and self._request is not None \
                and self._request.content.is_eof():
            self.phase = Phase.HANDLER  # the body arrived in time; the handler is at work
            return
        self.guard.closed(f"{self.phase.value} deadline passed")
        self.guard.forget(self)
        self.force_close()
