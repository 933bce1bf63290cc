"""The notifier process's entry point: its own database connection and HTTP client, after spawn.

It shares no queue with the other processes: it reads events from the store and writes its
attempts back there, so the supervisor restarts it alone, like the API.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from ..child import drain_on_sigterm
from ..config import Settings
from ..database import Database
from ..store import Store
from .client import WebhookClient
from .loop import Notifier

log = structlog.get_logger()


def main(settings: Settings, channels: Any = None) -> int:
    return asyncio.run(_run(settings))


async def _run(settings: Settings) -> int:
    db = await Database.open(lambda: Store(settings.db_path,
                                           max_page_count=settings.sqlite_max_pages or None),
                             name="sesd-notifier-db")
    client = WebhookClient(timeout=settings.webhook_timeout,
                           allow_private=settings.webhook_allow_private)
    notifier = Notifier(settings, db, client)
    # A second SIGTERM leaves pending deliveries pending: the next notifier attempts them.
    drain_on_sigterm(notifier.request_stop, "stop requested; finishing in-flight deliveries")
    log.info("notifier started", concurrency=settings.webhook_concurrency,
             timeout=settings.webhook_timeout, allow_private=settings.webhook_allow_private)
    try:
        await notifier.run()
    finally:
        await client.close()
        await db.close()
    return 0
