"""What `/health` reports, kept in shared memory: the supervisor writes each process's pid,
liveness and restarts, the sender writes whether sending is held and why, and the API reads both
without asking either (a dead or busy process cannot make /health hang)."""

from __future__ import annotations

from typing import Any

REASON_BYTES = 512
_PID, _ALIVE, _RESTARTS = range(3)


class HealthTable:
    def __init__(self, ctx: Any, roles: tuple[str, ...]) -> None:
        self.roles = roles
        self._cells: Any = ctx.RawArray("q", 3 * len(roles))
        # The sender's state: a seqlock (odd while a write is in progress) guards the reason text,
        # so a reader in another process never returns half of an old and half of a new reason.
        self._version: Any = ctx.RawValue("q", 0)
        self._reason: Any = ctx.RawArray("c", REASON_BYTES)

    def _at(self, role: str, field: int) -> int:
        return 3 * self.roles.index(role) + field

    # -- supervisor ---------------------------------------------------------------------------

    def started(self, role: str, pid: int) -> None:
        self._cells[self._at(role, _PID)] = pid
        self._cells[self._at(role, _ALIVE)] = 1

    def stopped(self, role: str) -> None:
        self._cells[self._at(role, _ALIVE)] = 0

    def died(self, role: str) -> int:
        """Mark the role dead and count a restart; returns the restarts so far."""
        self.stopped(role)
        self._cells[self._at(role, _RESTARTS)] += 1
        return int(self._cells[self._at(role, _RESTARTS)])

    def processes(self) -> dict[str, dict[str, Any]]:
        return {role: {"pid": int(self._cells[self._at(role, _PID)]),
                       "alive": bool(self._cells[self._at(role, _ALIVE)]),
                       "restarts": int(self._cells[self._at(role, _RESTARTS)])}
                for role in self.roles}

    # -- sender -------------------------------------------------------------------------------

    def set_held(self, reason: str | None) -> None:
        """Sending is held for `reason` (None: sending normally). Single writer: the sender (and
        the supervisor between two senders)."""
        data = (reason or "").encode("utf-8", "replace")[:REASON_BYTES - 1]
        self._version.value += 1
        self._reason.raw = data + b"\0" * (REASON_BYTES - len(data))
        self._version.value += 1

    def held(self) -> str | None:
        """Why sending is held, or None."""
        for _ in range(100):
            before = self._version.value
            if before % 2:
                continue
            raw = self._reason.raw
            if self._version.value == before:
                text = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
                return text or None
        return None  # a writer kept writing; say nothing rather than something torn
