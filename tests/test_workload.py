"""A seeded randomized workload through `run.py` and the faulty stand-in, checked by invariants
(see sesd.testing.workload); `bench/workload.py` runs a longer one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sesd.store import SENT, STOPPED
from sesd.testing.harness import Service, Standin
from sesd.testing.workload import REJECT_PREFIX, Shape, Workload

pytestmark = pytest.mark.slow


@pytest.fixture
def standin() -> Iterator[Standin]:
    s = Standin()
    yield s
    s.close()


@pytest.mark.parametrize("seed", [11, 12])
def test_randomized_workload_keeps_every_invariant(tmp_path: Path, standin: Standin,
                                                   seed: int) -> None:
    standin.configure(error_rate=0.05, throttle_rate=0.03, seed=seed,
                      reject_pattern=f"^{REJECT_PREFIX}")
    service = Service(tmp_path, {**standin.env(), "EMAIL_RATE": "400", "MAX_ATTEMPTS": "30"}
                      ).start()
    try:
        report = Workload(service, standin, seed, Shape(posts=30)).run(settle_timeout=90)
        assert report.ok, "\n".join(report.violations[:20])
        assert report.requests > 300 and report.stops > 0 and report.spellings > 0
        assert report.statuses.get(SENT, 0) > 0 and report.statuses.get(STOPPED, 0) >= 0
    finally:
        service.kill()
