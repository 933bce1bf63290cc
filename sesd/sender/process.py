"""The sender process's entry point: builds its resources after spawn and runs the Sender."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from typing import Any

import structlog

from .. import tracking
from ..child import drain_on_sigterm
from ..config import Settings
from ..database import Database
from ..health import HealthTable
from ..store import Store
from ..transports import create_transport
from .actor import Sender

log = structlog.get_logger()


@dataclass
class SenderChannels:
    work: Queue[Any]  # Batch messages from the scheduler
    credits: Connection  # Credit messages back to it
    stop_epoch: Any  # shared counter the API bumps when a topic is stopped
    health: HealthTable  # where the sender says whether sending is held, for /health


def main(settings: Settings, channels: SenderChannels) -> int:
    return asyncio.run(_run(settings, channels))


async def _run(settings: Settings, channels: SenderChannels) -> int:
    db = await Database.open(lambda: Store(settings.db_path,
                                           max_page_count=settings.sqlite_max_pages or None),
                             name="sesd-sender-db")
    key = settings.tracking_key or await db.run(db.store.get_or_create_setting, "tracking_key",
                                                tracking.new_key)
    transport = create_transport(settings)
    await transport.start()
    sender = Sender(settings, db, transport, work=channels.work, credits=channels.credits,
                    stop_epoch=channels.stop_epoch, tracking_key=key,
                    report_held=channels.health.set_held)
    last_sent = await db.run(db.store.last_sent_at)
    if sender.assume_recent_sends(last_sent):
        log.info("recent sends by a previous sender; waiting one window before sending",
                 window=round(sender.bucket.window, 3))
    loop = asyncio.get_running_loop()
    # A second SIGTERM exits at once: the rows this sender claimed are recovered later.
    drain_on_sigterm(sender.request_stop, "stop requested; draining",
                     grace=settings.shutdown_grace)
    try:
        if settings.email_transport == "ses":
            await sender.follow_quota()
        log.info("sender started", transport=transport.name,
                 rate=sender.bucket.rate or "unlimited",
                 max_concurrent=settings.max_concurrent, bulk=settings.bulk)
        sender.start_reader(loop)
        await sender.run()
    finally:
        await transport.close()
        await db.close()
    return 0
