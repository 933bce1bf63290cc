"""CI (.ci/run) runs what the README tells developers to run: its test command, to the letter,
and the linters its Development section names."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CI = (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def _first_block_after(heading: str) -> str:
    match = re.search(re.escape(heading) + r".*?```sh\n(.*?)```", README, flags=re.DOTALL)
    assert match, f"no sh block after {heading!r} in README.md"
    return match.group(1)


def _commands(script: str) -> list[str]:
    """The command lines of a shell text, comments and blank lines dropped."""
    lines = (line.split(" #", 1)[0].strip() for line in script.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_ci_runs_the_readme_test_command_exactly() -> None:
    [command] = _commands(_first_block_after("Set up and run the tests:"))
    assert command.endswith("&& pytest"), command
    assert command in _commands(CI)


def test_ci_runs_the_linters_the_readme_names_with_the_dev_extra() -> None:
    development = _commands(_first_block_after("## Development"))
    linters = [line for line in development if "ruff" in line]
    assert linters == ["ruff check . && mypy sesd"]
    ci = _commands(CI)
    assert linters[0] in ci
    installs = [line for line in ci if "pip install" in line]
    assert any("'.[dev]'" in line for line in installs)
    assert ci.index(linters[0]) > min(ci.index(line) for line in installs if "'.[dev]'" in line)


def test_ci_stops_at_the_first_failure() -> None:
    assert "set -euo pipefail" in _commands(CI)
    assert (ROOT / ".ci" / "run").stat().st_mode & 0o111, ".ci/run must be executable"
