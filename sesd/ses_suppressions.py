"""`python run.py import-ses-suppressions`: the SES account-level suppression list into sesd's.

SES keeps a list of its own for the account (addresses that bounced or complained, for any
sender of the account), and drops mail to them after accepting the call: sesd would count such
a request as sent. Imported as scope `all`, they end *stopped* with the reason instead, before
any call. The list is read page by page (ListSuppressedDestinations, 1,000 per page) and each
page stored in its own transaction, so a long list shows progress and an interrupted run keeps
what it read; a run again adds only what is new. Requests the sender holds for imported
addresses are stopped (the sender re-checks every request before its call).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from . import config, preflight
from .api import suppression_rows
from .errors import ConfigError
from .store import ALL_SCOPE, Store

PAGE_SIZE = 1000  # SES's largest page
# ListSuppressedDestinations is rate-limited (about one call a second): botocore's standard
# retry mode backs off on its throttling answers.
MAX_ATTEMPTS = 10
EX_OK, EX_CONFIG, EX_FAILED = 0, 2, 1


@dataclass
class Tally:
    read: int = 0
    added: int = 0
    skipped: int = 0  # not valid addresses
    stopped: int = 0

    def line(self) -> str:
        kept = self.read - self.added - self.skipped
        return (f"{self.read:,} read, {self.added:,} added, {kept:,} already suppressed, "
                f"{self.skipped:,} skipped (not valid addresses), "
                f"{self.stopped:,} held requests stopped")


def rows_of(summaries: Sequence[dict[str, Any]]) -> tuple[list[suppression_rows.Row], int]:
    """A page's SuppressedDestinationSummaries as suppression rows, and how many were not
    addresses sesd can key (kept out)."""
    rows: list[suppression_rows.Row] = []
    skipped = 0
    for summary in summaries:
        email = str(summary.get("EmailAddress", "")).strip()
        key = suppression_rows.key(email) if email else None
        if key is None:
            skipped += 1
            continue
        reason = str(summary.get("Reason", "")) or "unknown reason"
        rows.append((key, ALL_SCOPE, email, f"SES account suppression list ({reason})"))
    return rows, skipped


async def pages(client: Any, page_size: int = PAGE_SIZE) -> AsyncIterator[list[dict[str, Any]]]:
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"PageSize": page_size}
        if token:
            kwargs["NextToken"] = token
        answer = await client.list_suppressed_destinations(**kwargs)
        yield list(answer.get("SuppressedDestinationSummaries") or [])
        token = answer.get("NextToken")
        if not token:
            return


async def run(settings: config.Settings, tally: Tally, out: TextIO,
              page_size: int = PAGE_SIZE) -> None:
    """Read every page into the store, counting in `tally` (kept when a page fails)."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession

    # One progress line rewritten in place on a terminal; a line per page in a log.
    tty = out.isatty()
    start = "\r" if tty else ""
    store = Store(settings.db_path, durable=True,
                  max_page_count=settings.sqlite_max_pages or None)
    try:
        client_config = AioConfig(retries={"total_max_attempts": MAX_ATTEMPTS,
                                           "mode": "standard"})
        # No endpoint_url: botocore honours AWS_ENDPOINT_URL(_SESV2), as for sending.
        async with AioSession().create_client("sesv2", region_name=settings.aws_region,
                                              config=client_config) as client:
            async for summaries in pages(client, page_size):
                rows, skipped = rows_of(summaries)
                done = await asyncio.to_thread(store.import_suppressions, rows)
                tally.read += len(summaries)
                tally.skipped += skipped
                tally.added += done.added
                tally.stopped += done.stopped
                print(f"{start}  {tally.read:,} read, {tally.added:,} added",
                      end="" if tty else "\n", file=out, flush=True)
    finally:
        store.close()
        if tty:
            print(file=out)


def main(argv: Sequence[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(
        prog="run.py import-ses-suppressions",
        description="Import the SES account-level suppression list as suppressions of all "
                    "mail (scope all). Uses sesd's configuration (.env, AWS_*, DB_PATH).")
    parser.add_argument("--page-size", type=int, default=PAGE_SIZE,
                        choices=range(1, PAGE_SIZE + 1), metavar=f"1..{PAGE_SIZE}")
    args = parser.parse_args(argv)
    try:
        settings = config.load()
        preflight.check_ses(settings)  # whatever EMAIL_TRANSPORT is: this talks to SES
    except ConfigError as exc:
        print(f"sesd: configuration error: {exc}", file=err, flush=True)
        return EX_CONFIG
    print(f"importing the SES account suppression list ({settings.aws_region}) into "
          f"{settings.db_path}", file=out, flush=True)
    tally = Tally()
    try:
        asyncio.run(run(settings, tally, out, args.page_size))
    except Exception as exc:
        print(f"sesd: import-ses-suppressions failed: {type(exc).__name__}: {exc}; kept so "
              f"far: {tally.line()}", file=err, flush=True)
        return EX_FAILED
    print(f"done: {tally.line()}", file=out, flush=True)
    return EX_OK
