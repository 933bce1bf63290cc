"""The sliding-window bucket: exact delays on a fake clock, and the rate contract as properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sesd.sender.bucket import UNLIMITED_CAPACITY, SlidingWindowBucket

GUARD = 0.004


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def bucket(rate: float, start: float = 0.0, pacing: bool = False
           ) -> tuple[SlidingWindowBucket, FakeClock]:
    clock = FakeClock(start)
    return SlidingWindowBucket(rate, guard=GUARD, pacing=pacing, clock=clock), clock


def most_in_any_second(sends: list[tuple[float, int]]) -> int:
    """Brute force over the record: the most recipients in any closed one-second interval."""
    best = 0
    for i, (start, _) in enumerate(sends):
        best = max(best, sum(n for t, n in sends[i:] if t <= start + 1.0))
    return best


# -- unit tests on a fake clock ---------------------------------------------------------------


def test_first_rate_go_at_once_then_the_next_waits_for_the_first_to_leave() -> None:
    b, clock = bucket(5)
    for _ in range(5):
        assert b.delay() == 0.0
        b.take()
    assert b.delay() == pytest.approx(1.0 + GUARD)
    clock.now = 0.5
    assert b.delay() == pytest.approx(0.5 + GUARD)
    clock.now = 1.0 + GUARD
    assert b.delay() == 0.0
    b.take()


def test_delay_is_exact_for_staggered_sends() -> None:
    b, clock = bucket(3, start=100.0)
    for t in (100.0, 100.25, 100.5):
        clock.now = t
        b.take()
    clock.now = 100.75
    assert b.delay() == pytest.approx(100.0 + 1 + GUARD - 100.75)
    # Two slots: the second-oldest entry has to leave too.
    assert b.delay(2) == pytest.approx(100.25 + 1 + GUARD - 100.75)
    assert b.delay(3) == pytest.approx(100.5 + 1 + GUARD - 100.75)


def test_waiting_exactly_the_delay_is_enough() -> None:
    b, clock = bucket(7, start=12345.678)
    b.take(7)
    clock.now += b.delay()
    b.take()  # no float rounding makes the entry linger


def test_the_delay_rounds_up_when_the_subtraction_rounds_down() -> None:
    # Found by a random search: here fl(now + fl(expiry - now)) < expiry, so a caller waking
    # after the unrounded delay would still find the slot taken.
    b, clock = bucket(0.01, start=2.499260203755962)
    b.take()
    clock.now = 26.31386358646015
    clock.now += b.delay()
    b.take()


def test_try_take_takes_only_when_free() -> None:
    b, clock = bucket(2)
    assert b.try_take(2) == 0.0
    wait = b.try_take()
    assert wait == pytest.approx(1.0 + GUARD)
    assert b.available() == 0  # the refused call took nothing
    clock.now += wait
    assert b.try_take() == 0.0


def test_bulk_take_is_one_entry_of_n() -> None:
    b, clock = bucket(100)
    b.take(50)
    assert b.available() == 50
    assert b.delay(50) == 0.0
    assert b.delay(51) == pytest.approx(1.0 + GUARD)
    clock.now = 0.3
    b.take(30)
    assert b.available() == 20
    assert b.delay(21) == pytest.approx(1.0 + GUARD - 0.3)  # the 50 leave together
    clock.now = 1.0 + GUARD
    assert b.available() == 70


def test_take_without_room_raises() -> None:
    b, _ = bucket(2)
    b.take(2)
    with pytest.raises(RuntimeError):
        b.take()


@pytest.mark.parametrize("n", [0, -1, 15])
def test_n_outside_one_to_capacity_is_a_value_error(n: int) -> None:
    b, _ = bucket(14)
    for call in (b.delay, b.take, b.try_take):
        with pytest.raises(ValueError):
            call(n)


def test_invalid_rate_or_guard() -> None:
    for rate in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            SlidingWindowBucket(rate)
    with pytest.raises(ValueError):
        SlidingWindowBucket(1, guard=-0.1)


def test_unlimited() -> None:
    b, _ = bucket(0)
    assert b.capacity == UNLIMITED_CAPACITY
    assert b.effective_rate == 0.0
    for _ in range(10_000):
        assert b.try_take(50) == 0.0
    b.take(10**9)
    assert b.delay(10**9) == 0.0
    assert b.available() == UNLIMITED_CAPACITY
    b.throttled()
    b.recover()
    assert b.capacity == UNLIMITED_CAPACITY
    assert b.effective_rate == 0.0


def test_fractional_rate_below_one_sends_one_per_period() -> None:
    b, clock = bucket(0.5)
    assert b.capacity == 1
    assert b.window == pytest.approx(2.0 + GUARD)
    b.take()
    assert b.delay() == pytest.approx(2.0 + GUARD)
    clock.now = 2.0
    assert b.delay() == pytest.approx(GUARD)
    with pytest.raises(ValueError):
        b.delay(2)


def test_fractional_rate_above_one_keeps_the_one_second_ceiling() -> None:
    # 2 per 0.8 s would average 2.5/s but put 4 into one second; the ceiling wins.
    b, _ = bucket(2.5)
    assert b.capacity == 2
    assert b.window == pytest.approx(1.0 + GUARD)


def test_integer_rate_window_is_one_second_plus_guard() -> None:
    b, _ = bucket(14)
    assert (b.capacity, b.window, b.effective_rate) == (14, 1.0 + GUARD, 14.0)


def test_throttled_cuts_to_80_percent_once_per_window() -> None:
    b, clock = bucket(100)
    b.throttled()
    assert b.effective_rate == pytest.approx(80)
    assert b.capacity == 80
    b.throttled()  # the rest of the same overload: no second cut
    assert b.effective_rate == pytest.approx(80)
    clock.now += b.window
    b.throttled()
    assert b.effective_rate == pytest.approx(64)


@pytest.mark.parametrize(("rate", "floor"), [(100, 10), (14, 1.4), (5, 1), (1, 1), (0.5, 0.5)])
def test_throttling_stops_at_the_floor(rate: float, floor: float) -> None:
    b, clock = bucket(rate)
    for _ in range(100):
        b.throttled()
        clock.now += 10
    assert b.effective_rate == pytest.approx(floor)
    assert b.capacity == max(1, math.floor(floor))


def test_recover_climbs_one_percent_per_100ms_up_to_the_rate() -> None:
    b, clock = bucket(100)
    b.throttled()
    b.recover()  # right after the cut: no climb yet
    assert b.effective_rate == pytest.approx(80)
    clock.now = 0.125
    for _ in range(50):  # a burst of successes counts once
        b.recover()
    assert b.effective_rate == pytest.approx(81)
    for step in range(2, 100):
        clock.now = 0.125 * step
        b.recover()
    assert b.effective_rate == 100
    assert b.capacity == 100


def test_recover_without_a_throttle_does_nothing() -> None:
    b, _ = bucket(14)
    b.recover()
    assert b.effective_rate == 14


def test_a_call_sized_before_a_cut_waits_for_an_empty_window() -> None:
    b, clock = bucket(50)
    b.throttled()
    assert b.capacity == 40
    clock.now = 0.5
    b.take(10)
    # 45 no longer fits beside anything, but 50 may still be sent into an empty window.
    assert b.delay(45) == pytest.approx(1.0 + GUARD)
    clock.now = 1.5 + GUARD
    b.take(45)
    with pytest.raises(ValueError):
        b.delay(51)


def test_available_sizes_a_bulk_call_to_what_is_free() -> None:
    b, clock = bucket(120)
    taken = []
    while (free := b.available()) > 0:
        taken.append(min(50, free))
        b.take(taken[-1])
    assert taken == [50, 50, 20]
    clock.now = 1.0 + GUARD
    assert b.available() == 120


# -- the contract, as properties --------------------------------------------------------------

requests = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=0.5),  # gap before the request arrives
        st.integers(min_value=1, max_value=60),  # recipients
        st.sampled_from(["send", "send", "send", "throttled", "recover"]),
    ),
    min_size=1,
    max_size=150,
)


@settings(max_examples=150, deadline=None)
@given(
    rate=st.one_of(st.integers(1, 2000), st.floats(1, 2000)),
    start=st.floats(0, 1e6),
    reqs=requests,
    pacing=st.booleans(),
)
def test_greedy_client_never_exceeds_the_rate_in_any_second(
    rate: float, start: float, reqs: list[tuple[float, int, str]], pacing: bool
) -> None:
    b, clock = bucket(rate, start, pacing)
    sends: list[tuple[float, int]] = []
    for gap, n, action in reqs:
        clock.now += gap
        if action == "throttled":
            b.throttled()
        elif action == "recover":
            b.recover()
        else:
            n = min(n, math.floor(rate))
            clock.now += b.delay(n)
            b.take(n)
            sends.append((clock.now, n))
    assert most_in_any_second(sends) <= math.floor(rate)


@settings(max_examples=40, deadline=None)
@given(rate=st.integers(1, 2000), chunk=st.integers(1, 50), start=st.floats(0, 1e6),
       pacing=st.booleans())
def test_a_backlog_sustains_99_percent_of_the_rate(rate: int, chunk: int, start: float,
                                                    pacing: bool) -> None:
    """Work always waiting for 20 s; each call is sized to what the window has free."""
    b, clock = bucket(rate, start, pacing)
    end = start + 20.0
    sent = 0
    while True:
        clock.now += b.delay()
        if clock.now >= end:
            break
        n = min(chunk, b.available())
        b.take(n)
        sent += n
    assert sent >= 0.99 * rate * 20


@settings(max_examples=30, deadline=None)
@given(rate=st.integers(1, 200), start=st.floats(0, 1e6), pacing=st.booleans())
def test_single_sends_sustain_99_percent_of_the_rate(rate: int, start: float,
                                                     pacing: bool) -> None:
    b, clock = bucket(rate, start, pacing)
    end = start + 20.0
    sent = 0
    while (now := clock.now + b.delay()) < end:
        clock.now = now
        b.take()
        sent += 1
    assert sent >= 0.99 * rate * 20


@settings(max_examples=100, deadline=None)
@given(
    rate=st.one_of(st.integers(1, 2000), st.floats(0.01, 2000)),
    start=st.floats(0, 1e6),
    sizes=st.lists(st.integers(1, 2000), min_size=1, max_size=30),
    gaps=st.lists(st.floats(0, 2), min_size=30, max_size=30),
)
def test_take_after_a_positive_delay_raises(
    rate: float, start: float, sizes: list[int], gaps: list[float]
) -> None:
    b, clock = bucket(rate, start)
    for n, gap in zip(sizes, gaps, strict=False):
        clock.now += gap
        n = min(n, b.capacity)
        if b.delay(n) > 0:
            with pytest.raises(RuntimeError):
                b.take(n)
            assert b.try_take(n) > 0
        else:
            b.take(n)


def test_held_calls_count_until_answered_then_a_full_window() -> None:
    clock = FakeClock()
    bucket = SlidingWindowBucket(2, guard=0.0, clock=clock)
    assert bucket.hold(2) == 0.0
    assert bucket.available() == 0
    clock.now += 5.0  # SES takes its time: the recipients still count
    assert bucket.delay(1) == pytest.approx(1.0)
    bucket.settle(2)  # answered now: logged now, free one window later
    clock.now += 0.999
    assert bucket.hold(1) > 0
    clock.now += 0.001
    assert bucket.hold(1) == 0.0


# -- the account's quota changes (set_rate) -----------------------------------------------


def test_lowering_the_rate_holds_over_the_windows_that_straddle_the_change() -> None:
    b, clock = bucket(10)
    sends: list[tuple[float, int]] = []
    for _ in range(10):
        b.take(1)
        sends.append((clock.now, 1))
        clock.now += 0.05
    b.set_rate(4)
    assert (b.rate, b.capacity, b.effective_rate) == (4, 4, 4)
    # Ten went out in the last half second: nothing more until enough of them age out.
    assert b.delay(1) > 0
    later = []
    for _ in range(12):
        clock.now += b.delay(1)
        b.take(1)
        later.append((clock.now, 1))
    assert most_in_any_second(later) <= 4  # the new ceiling from the change on
    assert all(t - sends[-1][0] > 0.5 for t, _ in later[:1])  # the old sends counted


def test_raising_the_rate_and_going_unlimited_and_back() -> None:
    b, _ = bucket(2)
    b.take(2)
    assert b.delay(1) > 0
    b.set_rate(5)
    assert b.delay(3) == 0.0 and b.capacity == 5
    b.set_rate(0)
    assert b.capacity == UNLIMITED_CAPACITY and b.delay(1000) == 0.0
    b.set_rate(3)
    assert b.capacity == 3 and b.delay(3) == 0.0
    with pytest.raises(ValueError):
        b.set_rate(float("nan"))
