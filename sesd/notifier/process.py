"""The notifier process's entry point: its own database connection and HTTP client, after spawn.

It shares no queue with the other processes: it reads events from the store and writes its
attempts back there, so the supervisor restarts it alone, like the API.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import structlog

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
    loop = asyncio.get_running_loop()
    stops = 0

    def on_term() -> None:
        nonlocal stops
        stops += 1
        if stops == 1:
            log.info("stop requested; finishing in-flight deliveries")
            notifier.request_stop()
        else:  # pending deliveries stay pending: the next notifier attempts them again
            log.warning("second stop signal; exiting without draining")
            raise SystemExit(1)

    loop.add_signal_handler(signal.SIGTERM, on_term)
    log.info("notifier started", concurrency=settings.webhook_concurrency,
             timeout=settings.webhook_timeout, allow_private=settings.webhook_allow_private)
    try:
        await notifier.run()
    finally:
        await client.close()
        await db.close()
    return 0
