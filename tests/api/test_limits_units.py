"""The pure pieces behind the public limits, without a loop: deadlines, throttle, open counts."""

from __future__ import annotations

from sesd.api.base import LogThrottle, clip
from sesd.api.guard import Limits, Phase, deadline, evictable
from sesd.api.opens import OpenCounter


def test_each_phase_has_its_deadline() -> None:
    limits = Limits(header_timeout=2, body_timeout=7, idle_timeout=30)
    assert deadline(Phase.HEAD, 100.0, limits) == 102.0
    assert deadline(Phase.BODY, 100.0, limits) == 107.0
    # Idle is aiohttp's keepalive timer; the handler's own work is bounded where it is done.
    assert deadline(Phase.IDLE, 100.0, limits) is None
    assert deadline(Phase.HANDLER, 100.0, limits) is None
    assert [p for p in Phase if evictable(p)] == [Phase.IDLE, Phase.HEAD]


def test_log_throttle_lets_a_burst_through_then_reports_what_it_held() -> None:
    now = [0.0]
    throttle = LogThrottle(burst=3, window=10, clock=lambda: now[0])
    assert [throttle.admit() for _ in range(5)] == [0, 0, 0, None, None]
    now[0] = 10.0
    assert throttle.admit() == 2  # the first line of the next window counts the two dropped
    assert throttle.admit() == 0


def test_clip_keeps_short_values_and_cuts_long_ones() -> None:
    assert clip("short") == "short"
    assert clip(None) == "None"
    long = clip("x" * 10_000)
    assert len(long) < 250 and long.endswith("(10000 characters)")


def test_open_counter_writes_once_then_counts_within_bounds() -> None:
    opens = OpenCounter(known=2, pending=2)
    assert not opens.seen(1)
    opens.remember(1)
    for _ in range(5):
        assert opens.seen(1)
        opens.count(1)
    opens.count(2)
    opens.count(3)  # over the pending bound: dropped, not grown
    assert opens.drain() == {1: 5, 2: 1}
    assert opens.drain() == {}
    opens.remember(2)
    opens.remember(3)  # more ids than it keeps: the oldest is forgotten, the newest kept
    assert (opens.seen(1), opens.seen(2), opens.seen(3)) == (False, True, True)
