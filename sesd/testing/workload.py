"""A seeded, randomized workload of the shapes real users send, and the invariants it must keep.

It drives a running sesd (black box: HTTP, its SQLite file read-only) against the SES stand-in:
transactional bursts of distinct one-recipient messages, bulk messages sharing one content,
content with Handlebars-looking text, scheduled sends, topic stops while sending, rejected
recipients and stand-in faults. At the end every request must be terminal and the books must
balance: each request sent at most once, what the store says was sent is exactly what SES
received, no stopped request reached SES, every stop answered exactly what ended stopped, no
scheduled request left early, and every failure is a recipient SES rejected.

Used by the test suite (short) and by `bench/workload.py` (long); the service and stand-in are
duck-typed (`request`, `db`, `statuses` / `log`) so any harness that offers them will do.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..store import CREATED, FAILED, PROCESSING, SENT, STOPPED

REJECT_PREFIX = "reject-"  # the stand-in is configured to reject these recipients
# Suppressed before the workload starts; posts then use other spellings of them (case, Punycode
# or Unicode domain, NFD), which must all end stopped and never reach SES.
SUPPRESSED = ("ann@bücher.de", "bob@example.com", "lea@münchen.example", "Tom@Example.org")


class ServiceLike(Protocol):
    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]: ...

    def db(self) -> Any: ...


class StandinLike(Protocol):
    def log(self) -> dict[str, Any]: ...


@dataclass
class Shape:
    """How the workload is mixed (shares are probabilities per POST)."""

    posts: int = 40
    distinct_share: float = 0.4  # a burst of distinct one-recipient messages
    braces_share: float = 0.1  # content that looks like a template ("{{name}}", "}}}")
    schedule_share: float = 0.2  # scheduled 0.5-3 s ahead
    stop_share: float = 0.15  # after a POST, stop an earlier topic (each topic at most once)
    reject_share: float = 0.03  # a recipient the stand-in rejects
    spelling_share: float = 0.15  # a post that includes a spelling of a suppressed address
    max_burst: int = 40
    max_recipients: int = 150
    pause: float = 0.05  # seconds between posts (mean)


@dataclass
class Report:
    seed: int
    posts: int = 0
    requests: int = 0
    stops: int = 0
    stopped_answered: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    sends: int = 0
    duplicates: int = 0
    spellings: int = 0  # recipients that were spellings of a suppressed mailbox
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def _rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


class Workload:
    def __init__(self, service: ServiceLike, standin: StandinLike, seed: int,
                 shape: Shape | None = None) -> None:
        self.service = service
        self.standin = standin
        self.rng = random.Random(seed)
        self.shape = shape or Shape()
        self.report = Report(seed)
        self._n = 0
        self.topics: list[str] = []
        self.stopped: dict[str, int] = {}  # topic -> count the DELETE answered
        self.scheduled: dict[str, float] = {}  # address -> scheduled epoch seconds
        self.spellings: set[str] = set()  # addresses posted that name a suppressed mailbox

    # -- generating ---------------------------------------------------------------------------

    def _address(self) -> str:
        self._n += 1
        prefix = REJECT_PREFIX if self.rng.random() < self.shape.reject_share else "r"
        return f"{prefix}{self.report.seed}-{self._n}@example.com"

    def _spelling(self) -> str:
        """Another spelling of a suppressed mailbox, as a client might type it."""
        import unicodedata

        local, _, domain = self.rng.choice(SUPPRESSED).partition("@")
        form = self.rng.randrange(4)
        if form == 0:
            domain = domain.upper()
        elif form == 1:
            domain = domain.encode("idna").decode() if not domain.isascii() else domain.title()
        elif form == 2:
            domain = unicodedata.normalize("NFD", domain)
        local = "".join(c.upper() if self.rng.random() < 0.5 else c for c in local)
        return f"{local}@{domain}"

    def _content(self, i: int) -> str:
        text = f"<p>Message {i} for you: {self.rng.getrandbits(48):x}</p>"
        if self.rng.random() < self.shape.braces_share:
            text += "<p>Literal {{name}} and }}} and {{{raw}}} stay as typed. Grüße</p>"
        return text

    def _messages(self, topic: str) -> list[dict[str, Any]]:
        rng, shape = self.rng, self.shape
        messages: list[dict[str, Any]]
        at: float | None = None
        if rng.random() < shape.schedule_share:
            at = time.time() + rng.uniform(0.5, 3.0)
        if rng.random() < shape.distinct_share:
            count = rng.randint(1, shape.max_burst)
            messages = [{"topicId": topic, "emails": [self._address()],
                         "subject": f"Receipt {self._n}", "content": self._content(self._n)}
                        for _ in range(count)]
        else:
            emails = [self._address() for _ in range(rng.randint(1, shape.max_recipients))]
            messages = [{"topicId": topic, "emails": emails, "subject": "News",
                         "content": self._content(self._n)}]
        if rng.random() < shape.spelling_share:
            spelling = self._spelling()
            if all(spelling not in m["emails"] for m in messages):
                messages[-1]["emails"].append(spelling)
                self.report.spellings += 1
        if at is not None:
            for m in messages:
                m["scheduledAt"] = _rfc3339(at)
                for address in m["emails"]:
                    self.scheduled[address] = at
        return messages

    def suppress(self) -> None:
        """Put the suppressed mailboxes on the list, through the API as an operator would."""
        from urllib.parse import quote

        for address in SUPPRESSED:
            status, _ = self.service.request("PUT", f"/v1/suppressions/{quote(address)}",
                                             {"reason": "workload"})
            if status != 200:
                self.report.violations.append(f"PUT suppression {address} answered {status}")

    def run(self, *, settle_timeout: float = 120.0) -> Report:
        shape = self.shape
        if shape.spelling_share:
            self.suppress()
        for index in range(shape.posts):
            topic = f"w{self.report.seed}-{index}"
            messages = self._messages(topic)
            status, body = self.service.request("POST", "/v1/messages", {"messages": messages})
            if status != 200:
                self.report.violations.append(f"POST {topic} answered {status}: {body}")
                continue
            expected = sum(len(m["emails"]) for m in messages)
            if body.get("count") != expected:
                self.report.violations.append(f"POST {topic} stored {body.get('count')} of "
                                              f"{expected}")
            self.report.posts += 1
            self.report.requests += expected
            self.topics.append(topic)
            candidates = [t for t in self.topics if t not in self.stopped]
            if candidates and self.rng.random() < shape.stop_share:
                victim = self.rng.choice(candidates)
                status, body = self.service.request("DELETE", f"/v1/topics/{victim}")
                if status != 200:
                    self.report.violations.append(f"DELETE {victim} answered {status}")
                else:
                    self.stopped[victim] = int(body["count"])
                    self.report.stops += 1
                    self.report.stopped_answered += int(body["count"])
            time.sleep(self.rng.expovariate(1 / shape.pause) if shape.pause else 0)
        self._settle(settle_timeout)
        self._check()
        return self.report

    # -- checking -----------------------------------------------------------------------------

    def _is_spelling(self, email: str) -> bool:
        from ..addresses import suppression_key

        keys = {suppression_key(a) for a in SUPPRESSED}
        return suppression_key(email) in keys

    def _rows(self) -> list[tuple[int, str, str, int, str | None]]:
        with self.service.db() as db:
            return list(db.execute("SELECT id, topic_id, email, status, error FROM requests"))

    def _settle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.service.db() as db:
                waiting = db.execute("SELECT COUNT(*) FROM requests "
                                     f"WHERE status IN ({CREATED}, {PROCESSING})"
                                     ).fetchone()[0]
            if not waiting:
                return
            time.sleep(0.2)
        self.report.violations.append(f"requests not terminal after {timeout:.0f} s")

    def _check(self) -> None:
        rows = self._rows()
        report = self.report
        report.statuses = dict(Counter(row[3] for row in rows))
        if len(rows) != report.requests:
            report.violations.append(f"{len(rows)} requests stored, {report.requests} accepted")
        sends = self.standin.log()["sends"]
        report.sends = len(sends)
        per_request = Counter(int(s["request_id"]) for s in sends)
        report.duplicates = sum(n - 1 for n in per_request.values())
        if report.duplicates:
            report.violations.append(f"{report.duplicates} duplicate sends")
        sent = {r[0] for r in rows if r[3] == SENT}
        if set(per_request) != sent:
            report.violations.append(
                f"store and SES disagree: {len(sent - set(per_request))} recorded as sent but "
                f"not received, {len(set(per_request) - sent)} received but not recorded")
        stopped_rows = {r[0] for r in rows if r[3] == STOPPED}
        if stopped_rows & set(per_request):
            report.violations.append(f"{len(stopped_rows & set(per_request))} stopped requests "
                                     "reached SES")
        by_topic = Counter(r[1] for r in rows if r[3] == STOPPED and r[4] == "topic stopped")
        for topic, answered in self.stopped.items():
            if by_topic.get(topic, 0) != answered:
                report.violations.append(f"DELETE {topic} answered {answered}, "
                                         f"{by_topic.get(topic, 0)} ended stopped by it")
        for topic in set(by_topic) - set(self.stopped):
            report.violations.append(f"{by_topic[topic]} requests of {topic} stopped unasked")
        for row in rows:
            spelling = self._is_spelling(row[2])
            if spelling and (row[3] != STOPPED or row[0] in per_request):
                report.violations.append(f"suppressed {row[2]} ended {row[3]} ({row[4]})")
            if row[3] == STOPPED and not spelling and row[4] != "topic stopped":
                report.violations.append(f"request {row[0]} ({row[2]}) stopped: {row[4]}")
        for row in rows:
            if row[3] == FAILED and not (row[2].startswith(REJECT_PREFIX) and (row[4] or "")
                                    .startswith(("MessageRejected", "MESSAGE_REJECTED"))):
                report.violations.append(f"request {row[0]} ({row[2]}) failed: {row[4]}")
            if row[3] == SENT and row[2].startswith(REJECT_PREFIX):
                report.violations.append(f"rejected recipient {row[2]} recorded as sent")
        arrivals = {s["to"][0]: s["t"] for s in sends}
        for address, at in self.scheduled.items():
            if address in arrivals and arrivals[address] < at:
                report.violations.append(f"{address} sent {at - arrivals[address]:.3f} s early")
