"""A pytest plugin that fails every test not marked `slow` which starts a Python process.

The README promises that `pytest -m 'not slow'` runs no subprocess of ours (run.py, the SES
stand-in, moto's server): each costs an interpreter start and seconds of waiting. The check is an
audit hook on `subprocess.Popen` (asyncio's subprocesses go through it too), so it sees spawns
from fixtures, helpers and threads alike. Other programs (e.g. `git`, which sentry-sdk asks for a
release name) are not its business.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator
from typing import Any

import pytest


class SpawnInFastTest(RuntimeError):
    """Raised into the code that tried to start a Python process from a test not marked slow."""


class _Guard:
    def __init__(self) -> None:
        self.test: str | None = None  # the running test, while it is not marked slow
        self.attempts: list[str] = []

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "subprocess.Popen" or self.test is None:
            return
        executable, argv = args[0], args[1]
        program = os.fsdecode(executable or (argv if isinstance(argv, str | bytes) else argv[0]))
        if not _is_python(program):
            return
        shown = " ".join(os.fsdecode(a) for a in argv) if isinstance(argv, list | tuple) else argv
        self.attempts.append(str(shown)[:200])
        raise SpawnInFastTest(f"{self.test} starts a Python process ({str(shown)[:200]}): "
                              "mark it @pytest.mark.slow (pytest -m 'not slow' runs none)")


def _is_python(program: str) -> bool:
    name = os.path.basename(program)
    return program == sys.executable or name.startswith("python")


GUARD = _Guard()
_installed = False


def pytest_configure(config: pytest.Config) -> None:
    global _installed
    if not _installed:  # audit hooks cannot be removed: one per process
        sys.addaudithook(GUARD.audit)
        _installed = True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[
        None, object, object]:
    GUARD.test = None if item.get_closest_marker("slow") else item.nodeid
    GUARD.attempts.clear()
    try:
        return (yield)
    finally:
        GUARD.test = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    result = yield
    # Code that swallowed the exception still does not pass.
    if GUARD.attempts:
        pytest.fail(f"{item.nodeid} tried to start a Python process: {GUARD.attempts[0]}; "
                    "mark it @pytest.mark.slow", pytrace=False)
    return result
