"""What the sender does about SES's answers: pure policies with an injected clock (like bucket.py).

- `Backoff`: how long a retryable failure waits, and when a job has had enough attempts.
- `Breaker`: consecutive transient failures mean SES (or the way to it) is down: stop calling for
  a growing interval, then let one probe through at a time; a success closes it.
- `Holds`: account-level problems hold mail instead of failing it — the whole account (sending
  paused, suspended, no valid credentials) or one From identity (not verified in SES). A hold is
  probed now and then with a single message; a success lifts it.

None of them does I/O or knows about asyncio: the actor asks them what to do and when.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
# After this many consecutive retryable failures SES looks down: stop calling it and probe with
# one call at a time instead of burning every job's attempts in a retry storm.
CIRCUIT_THRESHOLD = 5
CIRCUIT_CAP = 30.0
# Defaults of how often a hold lets one message try again (SES_HOLD_PROBE sets both).
ACCOUNT_PROBE = 30.0  # sending paused by AWS, credentials refused
IDENTITY_PROBE = 30.0  # an unverified From identity


class Backoff:
    """Exponential backoff with jitter, capped; None once a job has used its attempts."""

    def __init__(self, max_attempts: int, *, base: float | None = None,
                 cap: float | None = None, rng: Callable[[], float] = random.random) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        # The module's values are read now, not at import: tests shorten them with monkeypatch.
        self.base = BACKOFF_BASE if base is None else base
        self.cap = BACKOFF_CAP if cap is None else cap
        self._rng = rng

    def delay(self, attempts: int) -> float | None:
        """Seconds before attempt `attempts + 1`, or None when `attempts` is the last allowed."""
        if attempts >= self.max_attempts:
            return None
        delay = min(self.cap, self.base * 2 ** max(0, attempts - 1))
        # Jitter in [0.5, 1) of the delay: calls that failed together must not return together.
        return delay * (0.5 + 0.5 * self._rng())


class Breaker:
    """A circuit breaker over consecutive retryable failures."""

    def __init__(self, clock: Callable[[], float], *, threshold: int = CIRCUIT_THRESHOLD,
                 cap: float = CIRCUIT_CAP) -> None:
        self._clock = clock
        self.threshold = threshold
        self.cap = cap
        self.streak = 0
        self.delay = 0.0  # the current open interval; 0 while closed
        self.until = 0.0  # no calls before this (clock time)
        self.reason = ""

    @property
    def probing(self) -> bool:
        """SES looks down: at most one call in flight, and no bulk calls (a probe risks one job)."""
        return self.streak >= self.threshold

    def wait(self) -> float:
        """Seconds until a call may start (0.0: now)."""
        return max(0.0, self.until - self._clock())

    def failure(self, reason: str) -> float | None:
        """Count a retryable failure; returns the open interval when this one opened the
        circuit (for the log line), else None."""
        self.streak += 1
        if self.streak < self.threshold:
            return None
        now = self._clock()
        if now < self.until:
            return None  # already open: the other failures were in flight when it opened
        self.delay = min(self.cap, max(1.0, self.delay * 2))
        self.until = now + self.delay
        self.reason = reason
        return self.delay

    def success(self) -> bool:
        """A call succeeded; True if that closed an open circuit."""
        was_open = self.delay > 0
        self.streak = 0
        self.delay = 0.0
        self.until = 0.0
        self.reason = ""
        return was_open

    def held_reason(self) -> str | None:
        """Why sending is held now, for /health; None when calls flow."""
        if self.probing:
            return f"SES unreachable: {self.reason}" if self.reason else "SES unreachable"
        return None


@dataclass
class Hold:
    reason: str
    probe_at: float  # clock time the next probe may start
    probing: bool = False  # a probe is in flight: no second one until it answers


class Holds:
    """Account-level holds: one for the whole account, one per From identity."""

    ACCOUNT = ""  # the key of the account-wide hold

    def __init__(self, clock: Callable[[], float], *, account_probe: float = ACCOUNT_PROBE,
                 identity_probe: float = IDENTITY_PROBE) -> None:
        self._clock = clock
        self.account_probe = account_probe
        self.identity_probe = identity_probe
        self._holds: dict[str, Hold] = {}

    def hold(self, identity: str, reason: str) -> bool:
        """Hold the account (identity == ACCOUNT) or one From identity after a failed call (a
        probe or not); True when the hold is new (log it once)."""
        key = identity.lower()
        interval = self.account_probe if key == self.ACCOUNT else self.identity_probe
        probe_at = self._clock() + interval
        existing = self._holds.get(key)
        if existing is not None:
            existing.reason = reason
            existing.probing = False
            existing.probe_at = max(existing.probe_at, probe_at)
            return False
        self._holds[key] = Hold(reason, probe_at)
        return True

    def release(self, identity: str) -> list[str]:
        """A call from `identity` succeeded: lift its hold and the account's (a success proves
        the account can send); returns the keys lifted."""
        lifted = [k for k in (self.ACCOUNT, identity.lower()) if self._holds.pop(k, None)]
        return lifted

    def blocked(self, identity: str) -> Hold | None:
        """The hold that stops mail from `identity` now, if any (the account's first)."""
        return self._holds.get(self.ACCOUNT) or self._holds.get(identity.lower())

    def held(self, identity: str) -> bool:
        return identity.lower() in self._holds

    def may_probe(self, identity: str) -> bool:
        """Whether the hold on `identity` (or the account) lets one probe start now."""
        hold = self.blocked(identity)
        return hold is not None and not hold.probing and self._clock() >= hold.probe_at

    def start_probe(self, identity: str) -> None:
        hold = self.blocked(identity)
        if hold is not None:
            hold.probing = True

    def end_probe(self, identity: str) -> None:
        """A probe was abandoned (cancelled, or an answer that says nothing about the hold)."""
        hold = self.blocked(identity)
        if hold is not None:
            hold.probing = False

    def wait(self, identity: str = ACCOUNT) -> float:
        """Seconds until the next probe of the hold on `identity` (or the account) may start."""
        hold = self.blocked(identity)
        if hold is None:
            return 0.0
        return max(0.0, hold.probe_at - self._clock())

    @property
    def account_held(self) -> bool:
        return self.ACCOUNT in self._holds

    def identities(self) -> list[str]:
        return [k for k in self._holds if k != self.ACCOUNT]

    def next_probe(self) -> float | None:
        """Seconds until the earliest probe of any hold; None when nothing is held."""
        if not self._holds:
            return None
        now = self._clock()
        return max(0.0, min(h.probe_at for h in self._holds.values()) - now)

    def held_reason(self) -> str | None:
        """Why mail is held, for /health; None when nothing is."""
        if not self._holds:
            return None
        account = self._holds.get(self.ACCOUNT)
        if account is not None:
            return account.reason
        return "; ".join(f"{k}: {h.reason}" for k, h in sorted(self._holds.items()))


def effective_rate(configured: float, quota: float | None) -> float:
    """The rate to send at: EMAIL_RATE (0: unlimited), but never above the account's quota (SES
    throttles past it) when the quota is known."""
    if quota is None or quota <= 0:
        return configured
    return quota if not configured else min(configured, quota)
