"""What every child process does first after spawn, whatever its role."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import structlog

from . import telemetry
from .config import Settings

PR_SET_PDEATHSIG = 1
EX_CONFIG = 78  # a child could not start because of configuration (port taken, bad path…)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL us if the supervisor dies, so no orphan keeps sending."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not fatal, just less tidy
        pass


def bootstrap(role: str, settings: Settings, parent_pid: int,
              entry: Callable[[Settings, Any], int], channels: Any) -> None:
    """Process target: title, signals, environment, telemetry; then the role's main."""
    _die_with_parent()
    if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
        os._exit(1)
    try:
        from setproctitle import setproctitle

        setproctitle(f"sesd: {role}")
    except ImportError:  # pragma: no cover
        pass
    # Ctrl-C reaches the whole process group; only the supervisor decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # botocore reads its endpoint and credentials from os.environ; .env values live only in
    # settings, so put them where botocore looks.
    for name, value in settings.aws_env:
        os.environ.setdefault(name, value)
    log = telemetry.setup(settings, role)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - optional speed-up
        pass
    try:
        code = entry(settings, channels)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        log.exception("process crashed", error=str(exc))
        telemetry.capture(exc)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def drain_on_sigterm(drain: Callable[[], None], event: str, **fields: Any) -> None:
    """On the running loop: the first SIGTERM logs `event` and calls `drain`; a second exits at
    once (code 1) without draining, as the operator wants out now. What was in hand is taken up
    again by the next process (claimed rows are recovered, pending deliveries attempted)."""
    stops = 0

    def on_term() -> None:
        nonlocal stops
        stops += 1
        log = structlog.get_logger()
        if stops == 1:
            log.info(event, **fields)
            drain()
        else:
            log.warning("second stop signal; exiting without draining")
            raise SystemExit(1)

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_term)
