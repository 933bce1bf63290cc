"""The sender's policies on a fake clock, with no event loop: backoff, breaker, holds, waiting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sesd.messages import Job
from sesd.sender.policy import Backoff, Breaker, Holds
from sesd.sender.waiting import BULK, TRANSACTIONAL, Held, Waiting


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@given(st.integers(1, 20), st.floats(0, 1, exclude_max=True))
def test_backoff_grows_with_jitter_and_stops_at_max_attempts(max_attempts: int,
                                                              r: float) -> None:
    backoff = Backoff(max_attempts, base=0.5, cap=30.0, rng=lambda: r)
    delays = [backoff.delay(a) for a in range(1, max_attempts + 1)]
    assert delays[-1] is None  # the last allowed attempt has been made
    finite = [d for d in delays if d is not None]
    assert len(finite) == max_attempts - 1
    for attempt, delay in enumerate(finite, start=1):
        full = min(30.0, 0.5 * 2 ** (attempt - 1))
        assert 0.5 * full <= delay <= full


def test_backoff_refuses_no_attempts() -> None:
    with pytest.raises(ValueError):
        Backoff(0)


def test_breaker_opens_after_a_streak_doubles_and_closes_on_success() -> None:
    clock = Clock()
    breaker = Breaker(clock, threshold=3, cap=4.0)
    assert breaker.failure("e1") is None and breaker.failure("e2") is None
    assert not breaker.probing and breaker.wait() == 0
    assert breaker.failure("e3") == 1.0  # opened
    assert breaker.probing and breaker.wait() == 1.0
    assert breaker.held_reason() == "SES unreachable: e3"
    assert breaker.failure("in flight when it opened") is None  # already open
    clock.now += 1.0
    assert breaker.wait() == 0  # a probe may go
    assert breaker.failure("probe failed") == 2.0
    clock.now += 2.0
    assert breaker.failure("again") == 4.0
    clock.now += 4.0
    assert breaker.failure("capped") == 4.0
    assert breaker.success() is True
    assert not breaker.probing and breaker.wait() == 0 and breaker.held_reason() is None
    assert breaker.success() is False


def test_account_hold_probes_one_message_at_a_time() -> None:
    clock = Clock()
    holds = Holds(clock, account_probe=60, identity_probe=30)
    assert holds.held_reason() is None and holds.next_probe() is None
    assert holds.hold("", "SendingPausedException: paused") is True
    assert holds.hold("", "SendingPausedException: still") is False  # logged once
    assert holds.account_held and holds.blocked("anyone@example.com") is not None
    assert not holds.may_probe("") and holds.wait("") == 60
    clock.now += 60
    assert holds.may_probe("")
    holds.start_probe("")
    assert not holds.may_probe("")  # one probe in flight
    holds.hold("", "SendingPausedException: paused")  # the probe failed the same way
    assert not holds.may_probe("") and holds.wait("") == 60
    clock.now += 60
    holds.start_probe("")
    assert holds.release("noreply@example.com") == [""]  # the probe went through
    assert not holds.account_held and holds.held_reason() is None


def test_identity_holds_are_per_identity_and_case_blind() -> None:
    clock = Clock()
    holds = Holds(clock, identity_probe=30)
    holds.hold("News@Example.com", "MessageRejected: not verified")
    assert holds.held("news@example.com") and not holds.held("other@example.com")
    assert holds.blocked("other@example.com") is None
    assert holds.identities() == ["news@example.com"]
    assert holds.held_reason() == "news@example.com: MessageRejected: not verified"
    clock.now += 29.9
    assert not holds.may_probe("news@example.com")
    clock.now += 0.1
    assert holds.may_probe("NEWS@example.com")
    holds.start_probe("news@example.com")
    holds.end_probe("news@example.com")  # abandoned (cancelled): another may go
    assert holds.may_probe("news@example.com")
    assert holds.release("news@EXAMPLE.com") == ["news@example.com"]
    assert holds.blocked("news@example.com") is None


def held(rid: int, priority: int = BULK, content: int = 1) -> Held:
    return Held(Job(rid, f"r{rid}@example.com", content), 0, priority)


def test_waiting_order_retries_then_transactional_then_bulk() -> None:
    waiting = Waiting()
    waiting.add(held(1))
    waiting.add(held(2, TRANSACTIONAL))
    waiting.retry(held(3), due=10.0)
    waiting.add(held(4))
    assert waiting.next_retry() == 10.0
    order = [h.job.request_id for h in iter(lambda: waiting.pop(now=5.0), None)]
    assert order == [2, 1, 4]  # the retry is not due yet
    assert waiting.pop(now=10.0).job.request_id == 3  # type: ignore[union-attr]
    assert len(waiting) == 0


def test_waiting_companions_parking_removal_and_drain() -> None:
    waiting = Waiting()
    for rid in range(1, 6):
        waiting.add(held(rid, content=1 if rid < 4 else 2))
    first = waiting.pop(0.0)
    assert first is not None
    same = waiting.take_following(BULK, lambda h: h.job.content_id == 1, 10)
    assert [h.job.request_id for h in same] == [2, 3]  # stops at the first other content
    waiting.park("From@Example.com", held(9))
    waiting.park("from@example.com", held(10, TRANSACTIONAL))
    assert waiting.parked("FROM@example.com") == 2
    assert waiting.parked_identities() == ["from@example.com"]
    assert len(waiting) == 4
    removed = waiting.remove({4, 9})
    assert sorted(h.job.request_id for h in removed) == [4, 9]
    assert waiting.unpark("from@example.com") == 1
    assert [h.job.request_id for h in iter(lambda: waiting.pop(0.0), None)] == [10, 5]
    waiting.add(held(11))
    waiting.retry(held(12), 99.0)
    waiting.park("x@example.com", held(13))
    assert sorted(h.job.request_id for h in waiting.drain()) == [11, 12, 13]
    assert len(waiting) == 0 and waiting.next_retry() is None
