"""The sender's one rate limiter: a sliding-window log of recipients handed to SES.

The original service's token bucket let a full second's burst ride on top of the steady rate (up
to 2x the rate in one second, which SES throttles). A log of what went out during the last window
bounds *every* sliding second instead, and still sustains the full rate: each slot frees exactly
one window after it was used, so a waiting sender reuses it at once.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Callable

# Adaptive slowdown when SES throttles anyway (another sender on the account, a lower quota).
THROTTLE_FACTOR = 0.8  # one cut keeps this share of the current rate
THROTTLE_FLOOR = 0.1  # share of the configured rate below which cuts stop...
MIN_FLOOR_RATE = 1.0  # ...but never below 1/s: SES grants every account at least that
RECOVER_STEP = 0.01  # share of the configured rate won back by one climb
# Pacing (GCRA): calls leave evenly spaced at the rate, with at most this much of a burst.
# Without it the window refills all at once and the whole second's calls leave together each
# second; their queueing then delays SES's answers, and held calls (see hold()) cost throughput.
PACING_BURST = 0.02
RECOVER_INTERVAL = 0.1  # seconds of clock between two climbs, however many successes arrive

# What an unlimited bucket reports as its capacity: callers take min(their batch, capacity).
UNLIMITED_CAPACITY = sys.maxsize


class SlidingWindowBucket:
    """At most `capacity` recipients within any `window` seconds, hence at most `rate` per second.

    `rate == 0` means unlimited. Single-threaded by design: the sender's event loop owns it.
    Every call costs O(1) amortised: pruning pops each entry once, and `delay(n)` walks at most
    as many entries as the n recipients it waits for.
    """

    def __init__(
        self,
        rate: float,
        *,
        guard: float = 0.003,
        pacing: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(rate) and rate >= 0):
            raise ValueError(f"rate must be a finite number >= 0, not {rate!r}")
        if not (math.isfinite(guard) and guard >= 0):
            raise ValueError(f"guard must be a finite number >= 0, not {guard!r}")
        self.rate = float(rate)
        self.guard = guard
        self._clock = clock
        # (time taken, recipients) per call, oldest first: a bulk call of 50 is one entry.
        self._log: deque[tuple[float, int]] = deque()
        self._used = 0  # recipients in the log
        self._held = 0  # recipients taken by calls SES has not answered yet (see hold())
        self._tat = -math.inf  # GCRA's theoretical arrival time of the next recipient
        self.pacing = pacing
        self._effective = self.rate
        self._max_capacity = max(1, math.floor(rate)) if rate else UNLIMITED_CAPACITY
        self._last_cut = -math.inf
        self._last_climb = -math.inf
        self._capacity = self._max_capacity
        self._window = 0.0
        self._resize()

    @property
    def capacity(self) -> int:
        """Most recipients one call should take at once; callers split bulk calls to this."""
        return self._capacity

    @property
    def window(self) -> float:
        """Seconds a taken recipient stays in the log (0.0 when unlimited)."""
        return self._window

    @property
    def effective_rate(self) -> float:
        """The rate currently aimed at: the configured one unless SES throttled (0.0: unlimited)."""
        return self._effective

    def delay(self, n: int = 1) -> float:
        """Seconds until n more recipients may be taken without breaking the window; 0.0 if now."""
        self._check(n)
        return self._wait(self._clock(), n) if self.rate else 0.0

    def take(self, n: int = 1) -> None:
        """Record n recipients sent now. Callers must have waited `delay(n)` first."""
        self._check(n)
        if not self.rate:
            return
        now = self._clock()
        if self._wait(now, n) > 0:
            raise RuntimeError(f"taking {n} now would exceed {self.rate:g} recipients/s")
        self._pace(now, n)
        self._record(now, n)

    def try_take(self, n: int = 1) -> float:
        """Take n and return 0.0 if they fit now, else return the delay and take nothing."""
        return self._admit(n, hold=False)

    def hold(self, n: int = 1) -> float:
        """Like try_take, for a call whose arrival time at SES is not known yet: the n
        recipients count against every window until `settle(n)` logs them at the time SES
        answered. Whatever happened between our clock and SES's (a cold connection, a busy
        loop), the call reached SES before it answered, so the bound holds at SES's end too;
        it costs a window only the call's round trip."""
        return self._admit(n, hold=True)

    def _admit(self, n: int, *, hold: bool) -> float:
        self._check(n)
        if not self.rate:
            return 0.0
        now = self._clock()
        wait = self._wait(now, n)
        if wait == 0:
            self._pace(now, n)
            if hold:
                self._held += n
            else:
                self._record(now, n)
        return wait

    def settle(self, n: int = 1) -> None:
        """The held call with n recipients has been answered (or abandoned): log it now."""
        if not self.rate:
            return
        self._held = max(0, self._held - n)
        self._record(self._clock(), n)

    def set_rate(self, rate: float) -> None:
        """Aim at a new ceiling from now on (the account's quota changed). What was sent stays
        in the log, so the new bound holds over the windows that straddle the change too."""
        if not (math.isfinite(rate) and rate >= 0):
            raise ValueError(f"rate must be a finite number >= 0, not {rate!r}")
        if rate == self.rate:
            return
        self.rate = float(rate)
        self._effective = self.rate
        self._max_capacity = max(1, math.floor(rate)) if rate else UNLIMITED_CAPACITY
        self._last_cut = self._last_climb = -math.inf
        if not rate:
            self._log.clear()
            self._used = self._held = 0
            self._tat = -math.inf
        self._resize()

    def release(self, n: int = 1) -> None:
        """Held recipients that never went to SES (stopped just before the call): free them
        without logging them."""
        if self.rate:
            self._held = max(0, self._held - n)

    def available(self) -> int:
        """How many recipients fit right now: lets a caller size a bulk call to what is free,
        instead of waiting for room for a fixed size that may not divide the capacity."""
        if not self.rate:
            return UNLIMITED_CAPACITY
        self._prune(self._clock())
        return max(0, self._capacity - self._used - self._held)

    def throttled(self) -> None:
        """SES said slow down: cut the effective rate to 80% (down to a floor)."""
        if not self.rate:
            return
        now = self._clock()
        # One overload comes back as a run of throttled calls (all that was in flight). Cut once
        # per window, the time a cut needs to show in what SES sees, or one bad moment would
        # collapse the rate straight to the floor.
        if now - self._last_cut < self._window:
            return
        floor = min(self.rate, max(THROTTLE_FLOOR * self.rate, MIN_FLOOR_RATE))
        self._effective = max(floor, self._effective * THROTTLE_FACTOR)
        self._last_cut = self._last_climb = now
        self._resize()

    def recover(self) -> None:
        """A call succeeded: climb back toward the configured rate, one small step at a time."""
        if not self.rate or self._effective >= self.rate:
            return
        now = self._clock()
        if now - self._last_climb < RECOVER_INTERVAL:
            return
        self._effective = min(self.rate, self._effective + RECOVER_STEP * self.rate)
        self._last_climb = now
        self._resize()

    # -- internals ---------------------------------------------------------------------------

    def _check(self, n: int) -> None:
        if n < 1 or n > self._max_capacity:
            raise ValueError(f"n must be between 1 and {self._max_capacity}, not {n}")

    def _resize(self) -> None:
        if not self.rate:
            self._capacity, self._window = UNLIMITED_CAPACITY, 0.0
            return
        self._capacity = max(1, math.floor(self._effective))
        # Never shorter than one second, even for a fractional rate like 2.5 (capacity 2 per
        # 0.8 s would put 4 into one second): the ceiling over any second is the contract, so
        # such a rate runs at its floor. Below 1/s the window stretches (0.5/s: 1 per 2 s).
        self._window = max(1.0, self._capacity / self._effective) + self.guard

    def _prune(self, now: float) -> None:
        # `ts + window` is spelled the same here and in `_wait`, so a caller that advances its
        # clock by exactly the delay finds the entry gone (no float rounding in between).
        log, window = self._log, self._window
        while log and log[0][0] + window <= now:
            self._used -= log.popleft()[1]

    def _pace(self, now: float, n: int) -> None:
        if self.pacing:
            self._tat = max(self._tat, now) + n / self._effective

    def _wait(self, now: float, n: int) -> float:
        pace = 0.0
        # Spelled like _until's expiry, so waiting exactly the returned delay is enough.
        if self.pacing and now < self._tat - PACING_BURST:
            pace = _until(now, self._tat - PACING_BURST)
        return max(pace, self._window_wait(now, n))

    def _window_wait(self, now: float, n: int) -> float:
        self._prune(now)
        # A call bigger than the current (throttled) capacity was sized before the cut; it still
        # fits the configured ceiling, so let it go once the window is empty rather than fail it.
        excess = self._used + self._held + n - max(self._capacity, n)
        if excess <= 0:
            return 0.0
        freed = 0
        for ts, count in self._log:  # the oldest entries leave first
            freed += count
            if freed >= excess:
                return _until(now, ts + self._window)
        # Held calls block: they free a window after they settle, which is not before now.
        return _until(now, now + self._window)

    def _record(self, now: float, n: int) -> None:
        self._log.append((now, n))
        self._used += n


def _until(now: float, expiry: float) -> float:
    """Seconds from now to expiry, rounded so that `now + result >= expiry` holds in floats.

    Near a small clock value fl(now + fl(expiry - now)) can fall one ulp short; a caller that
    slept exactly that long would be refused.
    """
    wait = expiry - now
    while now + wait < expiry:
        wait = math.nextafter(wait, math.inf)
    return wait
