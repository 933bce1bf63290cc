"""The Sender in-process: real SQLite, the real SES transport, the stand-in on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sesd.config import Settings
from sesd.database import Database
from sesd.messages import Batch, Content, Job
from sesd.sender.actor import Sender
from sesd.store import FAILED, PROCESSING, SENT, NewMessage, Store, now_ms
from sesd.testing.ses_standin import SesStandin
from sesd.transports.ses import SesTransport


def settings(tmp_path: Path, **changes: object) -> Settings:
    base = Settings(email_transport="ses", email_sender="from@example.com", aws_region="us-east-1",
                    db_path=tmp_path / "app.db", email_rate=0, max_concurrent=20,
                    shutdown_grace=2)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_sender(s: Settings, n: int,
                         html: str = "<p>hi</p>") -> AsyncIterator[tuple[Sender, Store]]:
    """A Sender running on n claimed recipients of one message; stopped (drained, its outcomes
    written) when the block ends."""
    store = Store(s.db_path)
    store.insert_messages([NewMessage("t", [f"u{i}@example.com" for i in range(n)], "Subj", html,
                                      now_ms())])
    claimed = store.claim_due(n)
    db = await Database.open(lambda: Store(s.db_path))
    transport = SesTransport(s)
    await transport.start()
    sender = Sender(s, db, transport, work=None, credits=None, tracking_key="k" * 32)
    sender.receive(Batch([Job(*j) for j in claimed.jobs], store.contents({claimed.jobs[0][2]})))
    task = asyncio.create_task(sender.run())
    try:
        yield sender, store
    finally:
        sender.request_stop()
        await task
        await transport.close()
        await db.close()


async def run_sender(s: Settings, n: int, html: str = "<p>hi</p>") -> tuple[Sender, Store]:
    """Run a Sender until it has nothing left to do."""
    async with running_sender(s, n, html) as (sender, store):
        for _ in range(600):
            await asyncio.sleep(0.05)
            if not len(sender.waiting) and not sender.inflight:
                break
    return sender, store


def statuses(store: Store) -> dict[int, int]:
    return dict(store.db.execute("SELECT status, COUNT(*) FROM requests GROUP BY status"))


@pytest.mark.parametrize("bulk", [True, False])
async def test_all_sent_once_with_pixel_and_request_id(tmp_path: Path, standin: SesStandin,
                                                       bulk: bool) -> None:
    sender, store = await run_sender(settings(tmp_path, bulk=bulk), 120)
    assert statuses(store) == {SENT: 120}
    per_request = Counter(int(s["request_id"]) for s in standin.sends)
    assert len(per_request) == 120 and set(per_request.values()) == {1}
    assert all(("bulk" in s and s["bulk"]) == bulk for s in standin.sends)
    one = standin.sends[0]
    # SES renders the bulk template itself, HTML-escaping the value in the attribute.
    assert re.search(rf"requestId={one['request_id']}&(amp;)?token=[\w-]{{22}}\"", one["html"])
    assert sender.counters.calls == (3 if bulk else 120)  # 50 + 50 + 20 entries


async def test_template_syntax_goes_out_verbatim_in_one_pass_through_call(
        tmp_path: Path, standin: SesStandin) -> None:
    sender, _ = await run_sender(settings(tmp_path), 5, html="<p>Hi {{name}} }}}</p>")
    assert len(standin.sends) == 5
    assert sender.counters.calls == 1 and all(s["bulk"] for s in standin.sends)
    assert all("<p>Hi {{name}} }}}</p>" in s["html"] for s in standin.sends)


async def test_rejections_fail_with_text_and_faults_are_retried(tmp_path: Path,
                                                                 standin: SesStandin) -> None:
    standin.config = dataclasses.replace(standin.config, reject_pattern=r"^u1\d@",
                                         error_rate=0.3, throttle_rate=0.1, seed=3)
    sender, store = await run_sender(settings(tmp_path, bulk=False, max_attempts=20), 60)
    assert statuses(store) == {SENT: 50, FAILED: 10}
    errors = [r[0] for r in store.db.execute(f"SELECT error FROM requests WHERE status = {FAILED}")]
    assert all(e.startswith("MessageRejected") for e in errors)
    assert sender.counters.retried > 0 and sender.counters.throttled > 0
    assert set(Counter(s["request_id"] for s in standin.sends).values()) == {1}


async def test_gives_up_after_max_attempts(tmp_path: Path, standin: SesStandin,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sesd.sender.policy.BACKOFF_BASE", 0.01)
    standin.config = dataclasses.replace(standin.config, error_rate=1.0)
    _, store = await run_sender(settings(tmp_path, bulk=False, max_attempts=3), 3)
    assert statuses(store) == {FAILED: 3}
    error = store.db.execute("SELECT error FROM requests LIMIT 1").fetchone()[0]
    assert error.startswith("gave up after 3 attempts")


async def test_stop_hands_back_unstarted_work(tmp_path: Path, standin: SesStandin) -> None:
    s = settings(tmp_path, email_rate=10, max_concurrent=2)
    async with running_sender(s, 100) as (_, store):
        await asyncio.sleep(0.5)
    counts = statuses(store)
    assert counts.get(PROCESSING, 0) == 0  # nothing left processing
    assert counts[2] == len(standin.sends) and counts[0] == 100 - counts[2]


async def test_a_new_sender_waits_a_window_after_recent_sends(tmp_path: Path) -> None:
    s = settings(tmp_path, email_rate=50)
    db = await Database.open(lambda: Store(s.db_path))
    sender = Sender(s, db, SesTransport(s), work=None, credits=None, tracking_key="k" * 32)
    assert not sender.assume_recent_sends(None)  # nothing ever sent: start at once
    assert not sender.assume_recent_sends(now_ms() - 60_000)
    assert sender.bucket.delay(1) == 0.0
    assert sender.assume_recent_sends(now_ms() - 300)  # a previous sender was just busy
    assert 0.9 < sender.bucket.delay(1) <= sender.bucket.window
    await db.close()


async def test_contents_leave_with_their_last_job_and_never_before(tmp_path: Path) -> None:
    s = settings(tmp_path)
    db = await Database.open(lambda: Store(s.db_path))
    sender = Sender(s, db, SesTransport(s), work=None, credits=None, tracking_key="k" * 32)
    sender.receive(Batch([Job(1, "held@example.com", 0)], {0: Content("t", "S", "H")}))
    # A burst of one-recipient messages, each with its own content, far more than any cache:
    # every job's content must still be there when its job comes up.
    jobs = [Job(1000 + cid, f"r{cid}@example.com", cid) for cid in range(1, 1001)]
    sender.receive(Batch(jobs, {cid: Content("t", "S", f"H{cid}") for cid in range(1, 1001)}))
    assert all(h.job.content_id in sender.contents.by_id for h in sender.waiting)
    assert len(sender.contents) == 1001
    # Jobs leave (sent, failed, stopped, handed back): their contents go with the last of them.
    for held in sender.waiting.drain():
        if held.job.content_id:
            sender._leave(held)
    assert set(sender.contents.by_id) == {0}
    await db.close()
