"""When the notifier tries again: pure policies with an injected clock (like sender/policy.py).

- `RetrySchedule`: exponential backoff with jitter inside a retry window (24 h by default);
  the last attempt falls at the window's end, after it the delivery has failed.
- `EndpointGate`: consecutive failures of one endpoint mean it is down: deliver nothing to it
  for a growing interval, then one probe at a time; a success opens it to full concurrency.
  So a dead endpoint costs one attempt per interval, not one per pending event.
"""

from __future__ import annotations

import random
from collections.abc import Callable

GATE_THRESHOLD = 5
GATE_CAP = 300.0  # seconds: a dead endpoint is probed at least this often


class RetrySchedule:
    def __init__(self, *, base: float, cap: float, window: float,
                 rng: Callable[[], float] = random.random) -> None:
        if base <= 0 or cap < base or window <= 0:
            raise ValueError("need 0 < base <= cap and a positive window")
        self.base, self.cap, self.window = base, cap, window
        self._rng = rng

    def next_at(self, attempts: int, first_at: float, now: float) -> float | None:
        """When to try again after `attempts` failed attempts (clock seconds), or None when the
        window that opened at `first_at` is over."""
        end = first_at + self.window
        if now >= end:
            return None
        delay = min(self.cap, self.base * 2 ** max(0, attempts - 1))
        # Jitter in [0.5, 1): deliveries that failed together must not come back together.
        return min(end, now + delay * (0.5 + 0.5 * self._rng()))


class EndpointGate:
    """A circuit breaker over one endpoint's consecutive failed attempts."""

    def __init__(self, clock: Callable[[], float], *, concurrency: int,
                 threshold: int = GATE_THRESHOLD, cap: float = GATE_CAP) -> None:
        self._clock = clock
        self.concurrency = concurrency
        self.threshold = threshold
        self.cap = cap
        self.streak = 0
        self.delay = 0.0  # the current shut interval; 0 while open
        self.until = 0.0

    @property
    def shut(self) -> bool:
        return self.streak >= self.threshold

    def slots(self) -> int:
        """How many attempts may be in flight now: all, one probe, or none while shut."""
        if not self.shut:
            return self.concurrency
        return 0 if self._clock() < self.until else 1

    def wait(self) -> float:
        return max(0.0, self.until - self._clock()) if self.shut else 0.0

    def failure(self) -> float | None:
        """Count a failed attempt; the shut interval when this one shut the gate (log it)."""
        self.streak += 1
        if self.streak < self.threshold:
            return None
        now = self._clock()
        if now < self.until:
            return None  # already shut: these attempts were in flight when it shut
        self.delay = min(self.cap, max(1.0, self.delay * 2))
        self.until = now + self.delay
        return self.delay

    def success(self) -> bool:
        """An attempt was delivered; True if that reopened a shut gate."""
        was_shut = self.shut
        self.streak = 0
        self.delay = 0.0
        self.until = 0.0
        return was_shut
