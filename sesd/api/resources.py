"""What the API holds while it runs, opened at start and closed after the last request: its
database connection, the HTTP client that fetches SNS certificates, the tracking key, and the
pixel replays counted in memory (written every few seconds, and once more at the end)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import aiohttp
import structlog
from aiohttp import web

from .. import sns, tracking
from ..store import Store
from .base import (
    CERTS,
    DB,
    HTTP,
    OPENS,
    REFUSALS,
    SETTINGS,
    TRACKING_KEY,
    Database,
    LogThrottle,
    add_hits,
    every,
)
from .opens import OpenCounter

log = structlog.get_logger()
CERT_FETCH_TIMEOUT = 5.0  # seconds, total; SNS itself waits 15 s for our answer
MAX_CERT_BYTES = 64 * 1024  # SNS certificates are about 2 KB
OPEN_FLUSH_INTERVAL = 5.0  # seconds between writes of counted pixel replays


async def fetch_pem(http: aiohttp.ClientSession, url: str) -> bytes:
    """The whole body at a certificate URL, read to its end: a part of one never passes for a
    certificate. Larger than MAX_CERT_BYTES is refused; redirects are not followed."""
    async with http.get(url, allow_redirects=False) as resp:
        if resp.status != 200:
            raise sns.SnsCertFetchError(f"certificate fetch answered {resp.status}")
        if (resp.content_length or 0) > MAX_CERT_BYTES:
            raise sns.SnsVerificationError(f"certificate is larger than {MAX_CERT_BYTES} bytes")
        body = bytearray()
        async for chunk in resp.content.iter_chunked(16 * 1024):
            body += chunk
            if len(body) > MAX_CERT_BYTES:
                raise sns.SnsVerificationError(
                    f"certificate is larger than {MAX_CERT_BYTES} bytes")
    return bytes(body)


async def _flush_opens(app: web.Application) -> None:
    db = app[DB]
    await add_hits(db, db.store.add_open_hits, app[OPENS].drain(), "could not add pixel hits",
                   "requests")


async def resources(app: web.Application) -> AsyncIterator[None]:
    """The app's cleanup context: opened before the first request, closed after the last."""
    settings = app[SETTINGS]
    if not settings.sns_topic_arns:
        log.warning("SNS_TOPIC_ARNS is empty: every SNS message and subscription will be "
                    "refused (403) until it lists your SES event topics")
    db = await Database.open(functools.partial(
        Store, settings.db_path, durable=True, max_page_count=settings.sqlite_max_pages or None),
        name="sesd-api-db")
    try:
        app[DB] = db
        app[TRACKING_KEY] = settings.tracking_key or await db.run(
            db.store.get_or_create_setting, "tracking_key", tracking.new_key)
        app[OPENS] = OpenCounter()
        app[REFUSALS] = LogThrottle()
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=CERT_FETCH_TIMEOUT),
                headers={"User-Agent": "sesd"}) as http:
            app[HTTP] = http
            app[CERTS] = sns.CertificateCache(functools.partial(fetch_pem, http))
            async with every(OPEN_FLUSH_INTERVAL, functools.partial(_flush_opens, app)):
                yield
    finally:
        await db.close()
