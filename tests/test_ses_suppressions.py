"""`python run.py import-ses-suppressions`: the SES account-level list, paged, into sesd's
suppressions (scope all), against the SES stand-in's ListSuppressedDestinations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sesd import ses_suppressions
from sesd.store import PROCESSING, NewMessage, Store, now_ms
from sesd.testing.harness import RUN_PY, Standin


def test_rows_of_a_page_key_every_address_and_skip_what_is_not_one() -> None:
    rows, skipped = ses_suppressions.rows_of([
        {"EmailAddress": "Ann@Bücher.DE", "Reason": "BOUNCE"},
        {"EmailAddress": "b@example.com", "Reason": "COMPLAINT"},
        {"EmailAddress": "not an address", "Reason": "BOUNCE"},
        {"Reason": "BOUNCE"},
    ])
    assert rows == [
        ("ann@xn--bcher-kva.de", "all", "Ann@Bücher.DE", "SES account suppression list (BOUNCE)"),
        ("b@example.com", "all", "b@example.com", "SES account suppression list (COMPLAINT)")]
    assert skipped == 2


class FakeSes:
    def __init__(self, pages: list[list[str]]) -> None:
        self.pages = pages
        self.calls: list[dict[str, Any]] = []

    async def list_suppressed_destinations(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        index = int(kwargs.get("NextToken", "0"))
        answer: dict[str, Any] = {"SuppressedDestinationSummaries": [
            {"EmailAddress": e, "Reason": "BOUNCE"} for e in self.pages[index]]}
        if index + 1 < len(self.pages):
            answer["NextToken"] = str(index + 1)
        return answer


async def test_pages_follow_next_token_to_the_end() -> None:
    ses = FakeSes([["a@x.io", "b@x.io"], [], ["c@x.io"]])
    got = [page async for page in ses_suppressions.pages(ses, page_size=2)]
    assert [[s["EmailAddress"] for s in page] for page in got] == [["a@x.io", "b@x.io"], [],
                                                                  ["c@x.io"]]
    assert ses.calls == [{"PageSize": 2}, {"PageSize": 2, "NextToken": "1"},
                         {"PageSize": 2, "NextToken": "2"}]


# -- through run.py -------------------------------------------------------------------------------

LISTED = [{"email": f"user{i}@example.com", "reason": "BOUNCE" if i % 3 else "COMPLAINT"}
          for i in range(2_500)] + [{"email": "not an address", "reason": "BOUNCE"}]


@pytest.fixture
def listing_standin(tmp_path: Path) -> Iterator[Standin]:
    listing = tmp_path / "suppressed.json"
    listing.write_text(json.dumps(LISTED))
    stand = Standin("--suppressed", f"@{listing}")
    yield stand
    stand.close()


def command(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
            "DB_PATH": str(tmp_path / "app.db"), "AWS_EC2_METADATA_DISABLED": "true"}
    return subprocess.run([sys.executable, str(RUN_PY), "import-ses-suppressions", *args],
                          cwd=tmp_path, env={**base, **env}, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.slow
def test_the_account_list_is_imported_once_in_pages(tmp_path: Path,
                                                    listing_standin: Standin) -> None:
    store = Store(tmp_path / "app.db")
    store.insert_messages([NewMessage("t", ["user3@example.com", "someone@example.com"], "S",
                                      "H", now_ms())])
    store.db.execute(f"UPDATE requests SET status = {PROCESSING}")  # held by a sender
    store.close()
    done = command(tmp_path, listing_standin.env())
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("importing the SES account suppression list (us-east-1)")
    assert lines[1:4] == ["  1,000 read, 1,000 added", "  2,000 read, 2,000 added",
                          "  2,501 read, 2,500 added"]
    assert lines[-1] == ("done: 2,501 read, 2,500 added, 0 already suppressed, 1 skipped (not "
                         "valid addresses), 1 held requests stopped")
    assert listing_standin.counters()["list_suppressed_calls"] == 3
    store = Store(tmp_path / "app.db")
    assert store.db.execute("SELECT COUNT(*), MIN(scope), MAX(scope) FROM suppressions"
                            ).fetchone() == (2_500, "all", "all")
    assert store.db.execute("SELECT reason FROM suppressions WHERE key = 'user3@example.com'"
                            ).fetchone() == ("SES account suppression list (COMPLAINT)",)
    assert store.db.execute("SELECT email, status, error FROM requests ORDER BY id").fetchall() \
        == [("user3@example.com", 4, "suppressed: SES account suppression list (COMPLAINT)"),
            ("someone@example.com", 1, None)]
    store.close()
    again = command(tmp_path, listing_standin.env(), "--page-size", "1000")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1].startswith("done: 2,501 read, 0 added, 2,500 already")


@pytest.mark.slow
def test_without_credentials_it_stops_with_one_line(tmp_path: Path) -> None:
    done = command(tmp_path, {})
    assert done.returncode == 2
    assert done.stderr.startswith("sesd: configuration error: AWS credentials")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "app.db").exists()
    unknown = subprocess.run([sys.executable, str(RUN_PY), "frobnicate"], cwd=tmp_path,
                             env={"PATH": os.environ.get("PATH", "")}, capture_output=True,
                             text=True, timeout=60, check=False)
    assert unknown.returncode == 2
    assert "unknown command 'frobnicate'; commands: import-ses-suppressions" in unknown.stderr
