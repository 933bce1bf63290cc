"""The API process's entry point: serves the aiohttp app and wires its hooks to the others."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import structlog
from aiohttp import web

from ..child import EX_CONFIG
from ..config import Settings
from ..health import HealthTable
from .app import ApiHooks, create_app
from .guard import ConnectionGuard, Limits

log = structlog.get_logger()
LISTEN_BACKLOG = 2048  # aiohttp's default of 128 drops connections under bursts of clients
# File descriptors kept free of client connections: the database, pipes, certificate fetches.
FD_RESERVE = 64
# aiohttp's own defaults, written out: a request line or a header field longer than this, or
# more header fields, answers 400 before any handler runs.
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 128


@dataclass
class ApiChannels:
    # Write end of a pipe the scheduler selects on. A nudge is one byte written without
    # blocking and without a lock: a multiprocessing.Queue would leave its lock held if this
    # process were killed mid-put, and wedge the scheduler; a pipe write cannot.
    nudges: Connection
    health: HealthTable  # per-role pid/alive/restarts and the sender's held state
    stop_epoch: Any  # RawValue('q') the sender watches


def hooks_for(channels: ApiChannels) -> ApiHooks:
    fd = channels.nudges.fileno()
    os.set_blocking(fd, False)

    def nudge() -> None:
        try:
            os.write(fd, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of nudges the scheduler has not read yet: it will wake
        except OSError as exc:
            log.warning("could not nudge the scheduler", error=str(exc))

    def stopped() -> None:
        channels.stop_epoch.value += 1

    return ApiHooks(nudge=nudge, stopped=stopped, health=channels.health.processes,
                    held=channels.health.held)


def main(settings: Settings, channels: ApiChannels) -> int:
    return asyncio.run(_serve(settings, channels))


def connection_cap(wanted: int) -> int:
    """HTTP_MAX_CONNECTIONS, within what the file descriptor limit can hold: raise the soft
    limit toward the hard one if needed, and cap below whatever it ends up being."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(8, min(wanted, soft - FD_RESERVE))


async def _serve(settings: Settings, channels: ApiChannels) -> int:
    app = create_app(settings, hooks_for(channels))
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=settings.shutdown_grace)
    await runner.setup()
    loop = asyncio.get_running_loop()
    limits = Limits(header_timeout=settings.http_header_timeout,
                    body_timeout=settings.http_body_timeout,
                    idle_timeout=settings.http_idle_timeout,
                    max_connections=connection_cap(settings.http_max_connections))
    guard = ConnectionGuard(limits, loop)
    # Our own listener instead of web.TCPSite, so each connection gets the guarded protocol.
    assert runner.server is not None
    factory = guard.factory(runner.server, access_log=None, max_line_size=MAX_LINE_SIZE,
                            max_field_size=MAX_FIELD_SIZE, max_headers=MAX_HEADERS)
    try:
        server = await loop.create_server(factory, settings.server_bind, settings.server_port,
                                          backlog=LISTEN_BACKLOG, reuse_address=True)
    except OSError as exc:
        log.error("cannot listen", host=settings.server_bind, port=settings.server_port,
                  error=exc.strerror or str(exc))
        await runner.cleanup()
        return EX_CONFIG
    log.info("api listening", host=settings.server_bind, port=settings.server_port,
             max_connections=limits.max_connections)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    # Close the listener first, then let in-flight requests finish (bounded by shutdown_timeout).
    log.info("api stopping")
    server.close()
    await runner.cleanup()
    return 0
