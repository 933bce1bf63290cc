"""Fixtures shared by the test modules: AWS settings that point botocore at a local SES, the SES
stand-in in-process or as a subprocess, and sesd itself as a subprocess (sesd.testing.harness)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sesd.testing.harness import Service, Standin
from sesd.testing.ses_standin import SesStandin, StandinConfig, start_standin

pytest_plugins = ["tests.spawn_guard", "pytester"]

PointAt = Callable[[str], None]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> PointAt:
    """Dummy credentials and none of the developer's AWS configuration; returns a setter for the
    SES endpoint, which botocore reads from AWS_ENDPOINT_URL_SESV2 as an operator would set it."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    def point_at(url: str) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", url)

    return point_at


@pytest_asyncio.fixture
async def standin(aws_env: PointAt) -> AsyncIterator[SesStandin]:
    """The SES stand-in in this process, on loopback, with botocore pointed at it."""
    server, runner, url = await start_standin(StandinConfig(seed=1))
    aws_env(url)
    yield server
    await runner.cleanup()


@pytest.fixture
def spawn_standin() -> Iterator[Callable[..., Standin]]:
    """Start SES stand-in subprocesses: `spawn_standin("--latency-ms", "15")` takes its CLI
    flags. All are stopped after the test."""
    started: list[Standin] = []

    def spawn(*flags: str) -> Standin:
        started.append(Standin(*flags))
        return started[-1]

    yield spawn
    for s in started:
        s.close()


@pytest.fixture
def spawn_sesd(tmp_path: Path, request: pytest.FixtureRequest,
               ) -> Iterator[Callable[..., Service]]:
    """Start sesd (`python run.py`) subprocesses, each in its own folder under tmp_path:
    `spawn_sesd(env)` answers once /health does; `spawn_sesd(env, start=False)` for a Service
    to start (or `.run()`) later; other keywords go to Service. Every one is SIGKILLed after the
    test, passed or failed; a failed test shows the end of their logs."""
    made: list[Service] = []
    numbers = itertools.count(1)

    def spawn(env: Mapping[str, str] | None = None, *, start: bool = True,
              **options: Any) -> Service:
        svc = Service(tmp_path / f"sesd-{next(numbers)}", env, **options)
        made.append(svc)
        return svc.start() if start else svc

    yield spawn
    for svc in made:
        svc.kill()
    report = request.node.stash.get(CALL_REPORT, None)
    if report is not None and report.failed:
        for svc in made:
            print(f"----- {svc.log_path} (end)\n{svc.tail(3000)}")


CALL_REPORT = pytest.StashKey[pytest.TestReport]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None],
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[CALL_REPORT] = report
    return report
