"""Crash matrix: SIGKILL any process, the supervisor included, at random moments, repeatedly.

Checked as invariants over the database and the stand-in's log, not as fixed counts: every
request ends terminal, none is lost, and duplicates are bounded by the calls in flight at each
kill."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable

import pytest

from sesd.store import SENT
from sesd.testing.harness import Service, Standin, messages

pytestmark = pytest.mark.slow

CONCURRENCY = 16
RATE = 600
TOTAL = 3000
# A kill can repeat the calls in flight, and those answered but not yet written back (the
# sender writes outcomes every 25 ms): allow both, with slack for a busy machine.
REPEATABLE_PER_KILL = CONCURRENCY + int(RATE * 0.1)


def wait_back(service: Service, role: str, old_pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, health = service.request("GET", "/health", timeout=2)
            proc = health["processes"][role]
            if status == 200 and proc["alive"] and proc["pid"] != old_pid:
                return
        except (OSError, KeyError, TypeError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{role} did not come back\n{service.logs()[-3000:]}")


@pytest.mark.parametrize("seed", [1, 2])
def test_random_kills_lose_nothing(spawn_standin: Callable[..., Standin],
                                   spawn_sesd: Callable[..., Service], seed: int) -> None:
    rng = random.Random(seed)
    standin = spawn_standin("--latency-ms", "15")
    service = spawn_sesd({**standin.env(), "EMAIL_RATE": str(RATE),
                          "MAX_CONCURRENT": str(CONCURRENCY), "EMAIL_BULK": "false"})
    kills = 0
    emails = [f"c{i}@example.com" for i in range(TOTAL)]
    for start in range(0, TOTAL, 500):
        status, body = service.request("POST", "/v1/messages",
                                       messages(f"t{start}", emails[start:start + 500]))
        assert status == 200, body
    for role in rng.sample(["api", "scheduler", "sender", "supervisor"], 4):
        time.sleep(rng.uniform(0.2, 0.8))
        kills += 1
        if role == "supervisor":
            assert service.proc is not None
            os.kill(service.proc.pid, signal.SIGKILL)
            service.proc.wait(10)
            time.sleep(0.3)  # children follow their parent (PDEATHSIG)
            service.start()
        else:
            pid = service.pids()[role]
            os.kill(pid, signal.SIGKILL)
            wait_back(service, role, pid)
    counts = service.wait_terminal(TOTAL, timeout=120)
    assert counts == {SENT: TOTAL}, counts
    per_request = Counter(int(s["request_id"]) for s in standin.log()["sends"])
    assert len(per_request) == TOTAL  # nobody skipped
    duplicates = sum(n - 1 for n in per_request.values())
    assert duplicates <= kills * REPEATABLE_PER_KILL, duplicates
