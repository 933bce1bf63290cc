"""Self-pipe wake-ups: a signal handler or another process writes a byte, a select() wakes."""

from __future__ import annotations

import os


def drain(fd: int) -> None:
    """Read everything waiting on a wake-up pipe without blocking: one wake-up however many
    bytes were written."""
    os.set_blocking(fd, False)
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
