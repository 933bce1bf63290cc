"""The API process's entry point: serves the aiohttp app and wires its hooks to the others."""

from __future__ import annotations

import asyncio
import os
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

log = structlog.get_logger()
LISTEN_BACKLOG = 2048  # aiohttp's default of 128 drops connections under bursts of clients


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


async def _serve(settings: Settings, channels: ApiChannels) -> int:
    app = create_app(settings, hooks_for(channels))
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=settings.shutdown_grace)
    await runner.setup()
    site = web.TCPSite(runner, settings.server_bind, settings.server_port,
                       backlog=LISTEN_BACKLOG, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen", host=settings.server_bind, port=settings.server_port,
                  error=exc.strerror or str(exc))
        await runner.cleanup()
        return EX_CONFIG
    log.info("api listening", host=settings.server_bind, port=settings.server_port)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    # Close the listener first, then let in-flight requests finish (bounded by shutdown_timeout).
    log.info("api stopping")
    await runner.cleanup()
    return 0
