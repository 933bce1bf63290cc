"""The subprocess harness itself (sesd.testing.harness) and the guard that keeps subprocesses out
of `pytest -m 'not slow'` (tests/spawn_guard.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import botocore.session
import psutil
import pytest

from sesd.messages import ROLES
from sesd.testing.harness import RUN_PY, Service, Standin, role_of
from tests.spawn_guard import GUARD, SpawnInFastTest

ROOT = Path(__file__).resolve().parent.parent
# Were it read, sesd would refuse to start, naming the variable.
POISON = "EMAIL_RATE=not-a-number\n"


# ------------------------------------------------------------------ the working directory


@pytest.mark.slow
def test_a_dotenv_in_the_checkout_does_not_reach_sesd(
        tmp_path: Path, spawn_sesd: Callable[..., Service]) -> None:
    # A checkout of our own (the real run.py, linked) with a .env in its root, so the real
    # checkout gets no file and parallel runs do not see each other's.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "run.py").symlink_to(RUN_PY)
    (checkout / ".env").write_text(POISON)

    sesd = spawn_sesd(run_py=checkout / "run.py")  # healthy: the .env was not read
    assert sesd.proc is not None
    cwd = Path(psutil.Process(sesd.proc.pid).cwd())
    assert cwd == sesd.workdir.resolve()
    assert cwd not in (checkout.resolve(), ROOT)

    # The same file where sesd does look for it is read: the poison is a working probe.
    control = spawn_sesd(start=False, run_py=checkout / "run.py")
    (control.workdir / ".env").write_text(POISON)
    with pytest.raises(RuntimeError, match="exited with 2") as info:
        control.start()
    assert "configuration error: EMAIL_RATE" in str(info.value)


def test_close_removes_only_the_folder_it_made(tmp_path: Path) -> None:
    made = Service()
    assert made.workdir.is_dir() and made.db_path.parent == made.workdir
    made.close()
    assert not made.workdir.exists()

    kept = Service(keep=True)
    kept.close()
    assert kept.workdir.is_dir()
    kept.workdir.rmdir()

    given = Service(tmp_path / "given")
    given.close()
    assert given.workdir.is_dir()


def test_settings_given_win_and_follow() -> None:
    svc = Service(env={"SERVER_PORT": "4567", "DB_PATH": "/nowhere/x.db"})
    try:
        assert svc.port == 4567 and svc.url == "http://127.0.0.1:4567"
        assert svc.env["SERVER_HOST"] == "http://127.0.0.1:4567"
        assert svc.db_path == Path("/nowhere/x.db")
        assert svc.env["HOME"] == str(svc.workdir)  # no ~/.aws of the developer's
        assert set(svc.env) >= {"PATH", "API_KEY", "EMAIL_TRANSPORT", "LOG_FORMAT"}
    finally:
        svc.close()


# ------------------------------------------------------------------ processes


@pytest.mark.parametrize(("cmdline", "role"), [
    (["sesd: api"], "api"),
    (["sesd: scheduler", "", ""], "scheduler"),
    (["sesd: supervisor"], "supervisor"),
    ([sys.executable, "/repo/run.py"], "supervisor"),
    ([sys.executable, "-c", "from multiprocessing.resource_tracker import main;main(5)"],
     "resource_tracker"),
    ([sys.executable, "-m", "pytest"], None),
    ([], None),
])
def test_role_of_reads_process_titles(cmdline: list[str], role: str | None) -> None:
    assert role_of(cmdline) == role


@pytest.mark.slow
def test_children_by_title_are_the_ones_health_reports(
        spawn_sesd: Callable[..., Service]) -> None:
    sesd = spawn_sesd()
    health = sesd.pids()
    assert set(health) == set(ROLES)
    deadline = time.monotonic() + 10
    while not health.keys() <= (titled := sesd.children()).keys() and time.monotonic() < deadline:
        time.sleep(0.05)  # titles are set as each child starts
    assert {role: pid for role, pid in titled.items() if role in health} == health
    assert sesd.stop(signal.SIGTERM, timeout=30) == 0
    assert sesd.children() == {}


@pytest.mark.slow
def test_stop_past_its_timeout_kills(spawn_sesd: Callable[..., Service]) -> None:
    sesd = spawn_sesd()
    assert sesd.proc is not None
    sesd.proc.send_signal(signal.SIGSTOP)  # it cannot act on the SIGTERM
    started = time.monotonic()
    assert sesd.stop(signal.SIGTERM, timeout=1) == -signal.SIGKILL
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_standin_arrivals_are_a_compact_copy_of_its_log(
        spawn_standin: Callable[..., Standin]) -> None:
    standin = spawn_standin()
    client = botocore.session.get_session().create_client(
        "sesv2", region_name="us-east-1", endpoint_url=standin.url,
        aws_access_key_id="testing", aws_secret_access_key="testing")
    content = {"Simple": {"Subject": {"Data": "s"}, "Body": {"Html": {"Data": "<p>h</p>"}},
                          "Headers": [{"Name": "X-Request-ID", "Value": "7"}]}}
    client.send_email(FromEmailAddress="sender@example.com", Content=content,
                      Destination={"ToAddresses": ["a@example.com"]})
    client.send_email(FromEmailAddress="sender@example.com",
                      Content={"Simple": {**content["Simple"], "Headers": []}},
                      Destination={"ToAddresses": ["b@example.com"],
                                   "CcAddresses": ["c@example.com"]})
    counters = standin.fetch()
    assert counters["accepted"] == 2 and counters["accepted_recipients"] == 3
    assert [(n, rid) for _, n, rid in standin.arrivals] == [(1, "7"), (2, None)]
    assert all(abs(t - time.time()) < 60 for t, _, _ in standin.arrivals)
    assert standin.fetch() == counters and len(standin.arrivals) == 2  # nothing new
    assert standin.counters() == counters
    assert [s["to"] for s in standin.log()["sends"]] == [["a@example.com"], ["b@example.com"]]

    standin.reset()
    assert standin.arrivals == [] and standin.log()["sends"] == []
    assert standin.counters()["accepted"] == 0
    client.close()


@pytest.mark.slow
def test_a_standin_that_cannot_start_says_why() -> None:
    with pytest.raises(RuntimeError, match="error_rate"):
        Standin("--error-rate", "2")


# ------------------------------------------------------------------ the guard


def test_a_fast_test_may_not_start_python() -> None:
    with pytest.raises(SpawnInFastTest, match=r"mark it @pytest.mark.slow"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert GUARD.attempts == [f"{sys.executable} -c pass"]
    GUARD.attempts.clear()  # this test meant it; otherwise it would fail after its call
    subprocess.run(["true"], check=True)  # other programs are not the guard's business


@pytest.mark.slow
def test_the_guard_in_a_real_run(pytester: pytest.Pytester,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_inner="""
        import subprocess, sys, pytest

        def test_fast_that_swallows_the_refusal():
            try:
                subprocess.run([sys.executable, "run.py"])
            except Exception:
                pass

        @pytest.mark.slow
        def test_slow_may():
            subprocess.run([sys.executable, "-c", "pass"], check=True)

        def test_fast_runs_another_program():
            subprocess.run(["true"], check=True)
    """)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = pytester.runpytest_subprocess("-p", "tests.spawn_guard", "-p", "no:cacheprovider",
                                           "-W", "ignore::pytest.PytestUnknownMarkWarning")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*test_fast_that_swallows_the_refusal tried to start a Python process*run.py*"])
