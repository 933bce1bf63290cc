"""The SQLite store: one apsw connection per process, the schema, and every SQL statement.

Times are integer milliseconds since the epoch. Request statuses are the original service's:
0 created, 1 processing, 2 sent, 3 failed, 4 stopped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import apsw
import orjson

from . import events
from .addresses import AddressError, canonical_address, suppression_key
from .errors import StorageFullError
from .messages import DEFAULT_LIST, Content

CREATED, PROCESSING, SENT, FAILED, STOPPED = 0, 1, 2, 3, 4
# A webhook delivery's status (the deliveries table).
PENDING, DELIVERED, GAVE_UP = 0, 1, 2
ALL_SCOPE = "all"  # a suppression of every mail, as opposed to one list's bulk mail
UNSUBSCRIBE_REASON = "unsubscribe"
# The claim takes transactional requests first (lower goes first), then bulk.
TRANSACTIONAL_PRIORITY, BULK_PRIORITY = 0, 1
PRIORITIES = (TRANSACTIONAL_PRIORITY, BULK_PRIORITY)
STATUS_NAMES = ("created", "processing", "sent", "failed", "stopped")
TERMINAL = (SENT, FAILED, STOPPED)
# A request held by the sender at this many sender crashes is failed instead of claimed again.
MAX_CRASHES = 3

BUSY_TIMEOUT_MS = 10_000
IDEMPOTENCY_PURGE_BATCH = 100  # expired keys deleted per ingest: small, so ingest stays quick
_MIGRATION_CHUNK = 5_000

Migration = str | Callable[[apsw.Cursor], None]


def _address_keys(cur: apsw.Cursor) -> None:
    """v2: suppressions keyed by addresses.suppression_key and a scope; waiting requests'
    addresses in canonical form (the claim compares lower(email) with the key).

    Python, not SQL: the key needs Unicode case folding and IDNA. Two old rows whose addresses
    share a key (NOCASE told "ann@bücher.de" from "ann@xn--bcher-kva.de") become one, the earliest
    kept. A waiting request whose address SES cannot take (a non-ASCII local part, an encoded
    word) fails with the reason instead of reaching SES. The key function is part of this step's
    meaning: if it ever changes, a new migration must rewrite the keys again."""
    cur.execute("""
        CREATE TABLE suppressions_v2 (
            key        TEXT    NOT NULL,  -- addresses.suppression_key(email)
            scope      TEXT    NOT NULL,  -- 'all', or a list id (unsubscribes)
            email      TEXT    NOT NULL,  -- as first given, for display
            reason     TEXT    NOT NULL,
            event      TEXT,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (key, scope)
        ) WITHOUT ROWID;
        CREATE INDEX idempotency_created ON idempotency (created_at);
    """)
    old = cur.execute("SELECT email, reason, event, created_at FROM suppressions "
                      "ORDER BY created_at, email").fetchall()
    cur.executemany("INSERT INTO suppressions_v2 (key, scope, email, reason, event, created_at) "
                    "VALUES (?, 'all', ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [(suppression_key(str(email)), email, *rest) for email, *rest in old])
    cur.execute("DROP TABLE suppressions; ALTER TABLE suppressions_v2 RENAME TO suppressions")
    at = now_ms()
    last = 0
    while True:  # in chunks by id: never the whole table in memory, never a write mid-read
        rows: list[Any] = cur.execute(
            f"SELECT id, email FROM requests WHERE id > ? "
            f"AND status IN ({CREATED}, {PROCESSING}) ORDER BY id LIMIT ?",
            (last, _MIGRATION_CHUNK)).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        changed, refused = [], []
        for request_id, email in rows:
            try:
                canonical = canonical_address(str(email))
            except AddressError as exc:
                refused.append((f"address refused: {exc}", at, request_id))
                continue
            if canonical != email:
                changed.append((canonical, at, request_id))
        cur.executemany("UPDATE requests SET email = ?, updated_at = ? WHERE id = ?", changed)
        cur.executemany(f"UPDATE requests SET status = {FAILED}, error = ?, updated_at = ? "
                        "WHERE id = ?", refused)


# Each entry upgrades the schema by one `PRAGMA user_version`: SQL, or a Python step given the
# migration's cursor (same transaction). Never edit a released entry.
MIGRATIONS: tuple[Migration, ...] = (
    """
    CREATE TABLE contents (
        id          INTEGER PRIMARY KEY,
        subject     TEXT    NOT NULL,
        html        TEXT    NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE requests (
        id           INTEGER PRIMARY KEY,
        topic_id     TEXT    NOT NULL,
        email        TEXT    NOT NULL,
        content_id   INTEGER NOT NULL REFERENCES contents(id),
        scheduled_at INTEGER NOT NULL,
        status       INTEGER NOT NULL DEFAULT 0 CHECK (status BETWEEN 0 AND 4),
        message_id   TEXT,
        error        TEXT,
        attempts     INTEGER NOT NULL DEFAULT 0,
        created_at   INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL,
        sent_at      INTEGER
    );
    -- The scheduler's claim walks this index in (scheduled_at, id) order: no sort.
    CREATE INDEX requests_due ON requests (status, scheduled_at);
    -- Topic stats and stop-topic; covers COUNT(*) GROUP BY status.
    CREATE INDEX requests_topic ON requests (topic_id, status);
    CREATE INDEX requests_message_id ON requests (message_id) WHERE message_id IS NOT NULL;
    CREATE INDEX requests_sent_at ON requests (sent_at) WHERE sent_at IS NOT NULL;
    CREATE TABLE results (
        id             INTEGER PRIMARY KEY,
        request_id     INTEGER REFERENCES requests(id),
        status         TEXT    NOT NULL,
        raw            TEXT,
        sns_message_id TEXT    UNIQUE,
        created_at     INTEGER NOT NULL
    );
    CREATE INDEX results_request ON results (request_id, status);
    CREATE TABLE suppressions (
        email      TEXT    PRIMARY KEY COLLATE NOCASE,
        reason     TEXT    NOT NULL,
        event      TEXT,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE idempotency (
        key        TEXT    PRIMARY KEY,
        body_hash  TEXT    NOT NULL,
        response   BLOB    NOT NULL,
        created_at INTEGER NOT NULL
    );
    """,
    # v2: a request handed to SES is marked (sending_at) in a commit before the call, so a topic
    # stop never counts a request that is about to reach SES; sender crashes are counted per
    # request to isolate a message that kills the sender; contents know their topic (logs).
    """
    ALTER TABLE requests ADD COLUMN sending_at INTEGER;
    ALTER TABLE requests ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE contents ADD COLUMN topic_id TEXT;
    UPDATE contents SET topic_id = owners.topic_id
    FROM (SELECT content_id, MIN(topic_id) AS topic_id FROM requests GROUP BY content_id) AS owners
    WHERE owners.content_id = contents.id;
    -- Requests waiting again after a sender crash: claimed apart from the rest (see claim_due).
    CREATE INDEX requests_suspects ON requests (id) WHERE status = 0 AND crashes > 0;
    """,
    # One Open row per request, however often its pixel is replayed: later hits only add to
    # `hits`. Earlier duplicates fold into their request's first Open row.
    """
    ALTER TABLE results ADD COLUMN hits INTEGER NOT NULL DEFAULT 1;
    UPDATE results SET hits = (SELECT COUNT(*) FROM results AS r
                               WHERE r.request_id = results.request_id AND r.status = 'Open')
    WHERE status = 'Open' AND id = (SELECT MIN(r.id) FROM results AS r
                                    WHERE r.request_id = results.request_id
                                      AND r.status = 'Open');
    DELETE FROM results WHERE status = 'Open' AND id > (SELECT MIN(r.id) FROM results AS r
                                                        WHERE r.request_id = results.request_id
                                                          AND r.status = 'Open');
    CREATE UNIQUE INDEX results_open_once ON results (request_id) WHERE status = 'Open';
    """,
    _address_keys,
    # v5: the message options (SPEC "Message options"): a content's text part and options, its
    # unsubscribe list; a request's stream as its claim priority (transactional first) and its
    # recipient's template data; clicks and unsubscribes as results, one row each however
    # often a link is replayed.
    """
    ALTER TABLE contents ADD COLUMN text TEXT;
    ALTER TABLE contents ADD COLUMN list_id TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE contents ADD COLUMN options BLOB;
    ALTER TABLE requests ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE requests ADD COLUMN data TEXT;
    DROP INDEX requests_due;
    -- The claim walks this index per priority in (scheduled_at, id) order: no sort.
    CREATE INDEX requests_claim ON requests (status, priority, scheduled_at);
    ALTER TABLE results ADD COLUMN link TEXT;
    ALTER TABLE results ADD COLUMN user_agent TEXT;
    CREATE UNIQUE INDEX results_click_once ON results (request_id, link) WHERE status = 'Click';
    CREATE UNIQUE INDEX results_unsubscribe_once ON results (request_id)
        WHERE status = 'Unsubscribe';
    """,
    # Webhooks. An event row is the compact fact (type, request, the result row it came from, a
    # small JSON detail), written in the transaction of the fact itself; the payload is composed
    # at delivery time. AUTOINCREMENT: the notifier's fan-out cursor walks event ids, which must
    # never be handed out twice, even after the newest events are purged. `after_event`: an
    # endpoint receives the events committed after it was registered.
    """
    CREATE TABLE webhooks (
        id          INTEGER PRIMARY KEY,
        url         TEXT    NOT NULL,
        events      TEXT,
        secret      TEXT    NOT NULL,
        after_event INTEGER NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE events (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        type       TEXT    NOT NULL,
        request_id INTEGER,
        result_id  INTEGER,
        detail     TEXT,
        created_at INTEGER NOT NULL
    );
    -- status: 0 pending, 1 delivered, 2 failed. first_at starts the retry window.
    CREATE TABLE deliveries (
        id           INTEGER PRIMARY KEY,
        webhook_id   INTEGER NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
        event_id     INTEGER NOT NULL,
        status       INTEGER NOT NULL DEFAULT 0 CHECK (status BETWEEN 0 AND 2),
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_at      INTEGER NOT NULL,
        first_at     INTEGER NOT NULL,
        last_error   TEXT,
        last_status  INTEGER,
        delivered_at INTEGER,
        created_at   INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL
    );
    -- The notifier's due walk per endpoint, in next_at order without a sort.
    CREATE INDEX deliveries_due ON deliveries (webhook_id, status, next_at);
    -- The deliveries route: one endpoint's rows of one status, in id order.
    CREATE INDEX deliveries_list ON deliveries (webhook_id, status);
    """,
    # v7: one scope's suppressions (GET /v1/suppressions?scope=) in key order by an index, not a
    # walk over every other scope's rows.
    "CREATE INDEX suppressions_scope ON suppressions (scope, key);",
)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """One validated message of an ingest request."""

    topic_id: str
    emails: Sequence[str]
    subject: str
    html: str
    scheduled_at: int  # ms; already clamped so a past time means "now"
    # Per recipient, its template data (JSON object text), parallel to `emails`; None: none.
    data: Sequence[str | None] | None = None
    content: Content | None = None  # the message's options; None: every default

    @property
    def priority(self) -> int:
        content = self.content
        return TRANSACTIONAL_PRIORITY if content is not None and not content.bulk \
            else BULK_PRIORITY


@dataclass(frozen=True, slots=True)
class Claimed:
    """Rows the scheduler claimed: jobs to hand on, and how many were stopped as suppressed."""

    jobs: list[tuple[int, str, int, str | None]]  # (request_id, email, content_id, data)
    suppressed: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one job in the sender.

    status is SENT or FAILED (final), CREATED (handed back unsent), or PROCESSING: the job is
    still the sender's, waiting to be tried again (its SES call is over: `sending_at` clears, so
    a topic stop may take it; attempts and the last error are kept for the requests route)."""

    request_id: int
    status: int
    message_id: str | None = None
    error: str | None = None
    attempts: int = 0
    at: int = 0  # ms


@dataclass(frozen=True, slots=True)
class Released:
    """What the supervisor's release of a dead pipeline's rows did."""

    released: int  # put back to created
    failed: int  # failed: held at too many sender crashes


class Click(NamedTuple):
    """A genuine click link was followed: link number `link` of request `request_id`."""

    request_id: int
    link: int
    user_agent: str | None


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """What a one-click unsubscribe did."""

    email: str
    list_id: str
    recorded: bool  # this request's Unsubscribe result is new (not a repeat)
    stopped: int  # requests the sender held for the address and list, stopped


@dataclass(frozen=True, slots=True)
class Imported:
    """What a suppression import did."""

    rows: int  # rows given
    added: int  # new (key, scope) entries; the others were suppressed already and stay as they are
    stopped: int  # held requests the list now refuses, stopped


class Store:
    """One process's connection and every query sesd runs."""

    def __init__(self, path: Path | str, *, durable: bool = False,
                 max_page_count: int | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = apsw.Connection(str(path))
        self.db.set_busy_timeout(BUSY_TIMEOUT_MS)
        self._pragma("journal_mode", "WAL")
        # NORMAL loses at most the last commits on power loss, never corrupts. The API asks for
        # FULL (durable=True): a 200 for an ingest means the requests are on disk.
        self._pragma("synchronous", "FULL" if durable else "NORMAL")
        self._pragma("cache_size", "-65536")
        self._pragma("foreign_keys", "ON")
        self._pragma("temp_store", "MEMORY")
        if max_page_count:
            self._pragma("max_page_count", str(max_page_count))
        self._migrate()

    def _pragma(self, name: str, value: str) -> None:
        self.db.execute(f"PRAGMA {name}={value}").fetchall()

    def close(self) -> None:
        self.db.close()

    # -- plumbing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[apsw.Cursor]:
        """A write transaction taken up front (BEGIN IMMEDIATE) so it waits for the lock with the
        busy timeout instead of failing on a read-to-write upgrade; SQLITE_FULL becomes
        StorageFullError after rolling back, so nothing is half-written."""
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException as exc:
            if not self.db.getautocommit():
                cur.execute("ROLLBACK")
            if isinstance(exc, apsw.FullError):
                raise StorageFullError("the database is full") from exc
            raise
        else:
            try:
                cur.execute("COMMIT")
            except apsw.FullError as exc:
                if not self.db.getautocommit():
                    cur.execute("ROLLBACK")
                raise StorageFullError("the database is full") from exc

    def _migrate(self) -> None:
        if self._user_version() >= len(MIGRATIONS):
            return
        with self._write() as cur:
            version = self._user_version()  # re-read under the lock: another process may have won
            for number in range(version, len(MIGRATIONS)):
                step = MIGRATIONS[number]
                if isinstance(step, str):
                    cur.execute(step)
                else:
                    step(cur)
            cur.execute(f"PRAGMA user_version={len(MIGRATIONS)}")

    def _user_version(self) -> int:
        return self._scalar_int("PRAGMA user_version")

    def _scalar_int(self, sql: str, bindings: Sequence[Any] = ()) -> int:
        row = self.db.execute(sql, bindings).fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0

    def _scalar_text(self, sql: str, bindings: Sequence[Any] = ()) -> str:
        row = self.db.execute(sql, bindings).fetchone()
        return str(row[0]) if row is not None and row[0] is not None else ""

    # -- settings -----------------------------------------------------------------------------

    def get_or_create_setting(self, key: str, make: Callable[[], str]) -> str:
        """The stored value of `key`, creating it with `make()` the first time (race-free)."""
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        if row:
            return str(row[0])
        with self._write() as cur:
            cur.execute("INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)", (key, make()))
            row = cur.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
            assert row is not None  # inserted just above, in this transaction
            return str(row[0])

    # -- ingest (API) -------------------------------------------------------------------------

    INSERT_CONTENT = ("INSERT INTO contents (subject, html, topic_id, text, list_id, options, "
                      "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id")
    # The recipients go in as one JSON array expanded inside SQLite: no per-row Python round trip.
    INSERT_REQUESTS = """
        INSERT INTO requests (topic_id, email, content_id, scheduled_at, status, created_at,
                              updated_at, priority)
        SELECT ?1, value, ?2, ?3, 0, ?4, ?4, ?6 FROM json_each(?5)
    """
    # ...and with data, as [address, data text] pairs.
    INSERT_REQUESTS_WITH_DATA = """
        INSERT INTO requests (topic_id, email, content_id, scheduled_at, status, created_at,
                              updated_at, priority, data)
        SELECT ?1, value ->> 0, ?2, ?3, 0, ?4, ?4, ?6, value ->> 1 FROM json_each(?5)
    """

    def insert_messages(self, messages: Iterable[NewMessage], *, idempotency: tuple[str, str, bytes]
                        | None = None, keys_expire_before: int = 0) -> int:
        """Store every message of one request in one transaction; returns requests created.

        `idempotency` is (key, body hash, response body) kept with the same commit so a retried
        request can be answered without creating anything. Keys created before
        `keys_expire_before` (ms) are expired: the same key is free again, and a small batch of
        expired ones is purged with every ingest, so the table stays bounded without a sweeper."""
        created_at = now_ms()
        count = 0
        with self._write() as cur:
            for msg in messages:
                content = msg.content
                options = orjson.dumps(content.options()) if content is not None else None
                content_id = cur.execute(self.INSERT_CONTENT, (
                    msg.subject, msg.html, msg.topic_id, content.text if content else None,
                    content.list_id if content else DEFAULT_LIST, options or None,
                    created_at)).fetchall()[0][0]
                if msg.data is not None and any(d is not None for d in msg.data):
                    cur.execute(self.INSERT_REQUESTS_WITH_DATA, (
                        msg.topic_id, content_id, msg.scheduled_at, created_at,
                        orjson.dumps([[e, d] for e, d in zip(msg.emails, msg.data, strict=True)]),
                        msg.priority))
                else:
                    cur.execute(self.INSERT_REQUESTS, (msg.topic_id, content_id, msg.scheduled_at,
                                                       created_at, orjson.dumps(list(msg.emails)),
                                                       msg.priority))
                count += self.db.changes()
            if keys_expire_before:
                cur.execute(self.PURGE_IDEMPOTENCY, (keys_expire_before, IDEMPOTENCY_PURGE_BATCH))
            if idempotency is not None:
                # An expired record of this key (maybe outside the purged batch) is not a replay.
                cur.execute("DELETE FROM idempotency WHERE key = ? AND created_at < ?",
                            (idempotency[0], keys_expire_before))
                cur.execute("INSERT INTO idempotency (key, body_hash, response, created_at) "
                            "VALUES (?, ?, ?, ?)", (*idempotency, created_at))
        return count

    PURGE_IDEMPOTENCY = """
        DELETE FROM idempotency WHERE key IN (
            SELECT key FROM idempotency WHERE created_at < ? ORDER BY created_at LIMIT ?)
    """

    def idempotent_response(self, key: str) -> tuple[str, bytes, int] | None:
        """(body hash, response, created_at ms) stored for an Idempotency-Key; the caller
        ignores a record older than its TTL."""
        row = self.db.execute("SELECT body_hash, response, created_at FROM idempotency "
                              "WHERE key = ?", (key,)).fetchone()
        return (str(row[0]), bytes(row[1]), int(row[2])) if row else None

    def stop_topic(self, topic_id: str) -> int:
        """Stop every request of the topic that is not sent and not being sent; the count is
        exactly what ends stopped. A request whose SES call has started (`sending_at`, committed
        by the sender before the call) is SES's already: it ends as SES answers."""
        with self._write() as cur:
            cur.execute(f"UPDATE requests SET status = {STOPPED}, error = 'topic stopped', "
                        f"updated_at = ? WHERE topic_id = ? "
                        f"AND status IN ({CREATED}, {PROCESSING}) AND sending_at IS NULL",
                        (now_ms(), topic_id))
            return self.db.changes()

    # -- scheduler ----------------------------------------------------------------------------

    # Requests waiting again after a sender crash (crashes > 0) are left to claim_suspects.
    # A transactional request is stopped only by a suppression of all mail (bounce, complaint,
    # manual); a bulk one also by an unsubscribe from its list. lower(email) is the suppression
    # key of a canonical address (addresses.key_of_canonical): intake stores only canonical ones
    # and the v4 migration rewrote those still waiting. Each lookup is one search of the
    # (key, scope) primary key, with no per-row Python.
    _REFUSAL = f"""COALESCE(
            (SELECT reason FROM suppressions
             WHERE key = lower(requests.email) AND scope = 'all'),
            CASE WHEN requests.priority = {BULK_PRIORITY} THEN
                (SELECT reason || ' (list ' || scope || ')' FROM suppressions
                 WHERE key = lower(requests.email)
                   AND scope = (SELECT list_id FROM contents WHERE id = requests.content_id))
            END)"""
    _RETURNING = f"""
        RETURNING id, email, content_id, data, {_REFUSAL}
    """
    CLAIM = f"""
        UPDATE requests SET status = {PROCESSING}, updated_at = ?1
        WHERE id IN (SELECT id FROM requests WHERE status = {CREATED} AND priority = ?3
                     AND scheduled_at <= ?1 AND crashes = 0 ORDER BY scheduled_at, id LIMIT ?2)
    """ + _RETURNING
    CLAIM_SUSPECTS = f"""
        UPDATE requests SET status = {PROCESSING}, updated_at = ?1
        WHERE id IN (SELECT id FROM requests WHERE status = {CREATED} AND crashes > 0
                     AND crashes = ?2
                     ORDER BY id LIMIT ?3)
    """ + _RETURNING

    def claim_due(self, limit: int, now: int | None = None) -> Claimed:
        """Mark up to `limit` due requests processing, transactional ones first; suppressed
        recipients are stopped on the spot with the reason, in the same transaction, and never
        handed on."""
        now = now_ms() if now is None else now
        claimed = self._claim(self.CLAIM, (now, limit, TRANSACTIONAL_PRIORITY))
        room = limit - len(claimed.jobs) - claimed.suppressed
        if room <= 0:
            return claimed
        bulk = self._claim(self.CLAIM, (now, room, BULK_PRIORITY))
        return Claimed(claimed.jobs + bulk.jobs, claimed.suppressed + bulk.suppressed)

    def suspect_level(self) -> int:
        """The most sender crashes among requests waiting again after one (0: none waits)."""
        return self._scalar_int("SELECT MAX(crashes) FROM requests "
                                f"WHERE status = {CREATED} AND crashes > 0")

    def claim_suspects(self, crashes: int, limit: int) -> Claimed:
        """Claim up to `limit` requests that were held by the sender at `crashes` crashes: the
        scheduler hands them on alone, so a message that kills the sender takes only itself
        (and, the first times, a few neighbours) down with it."""
        return self._claim(self.CLAIM_SUSPECTS, (now_ms(), crashes, limit))

    def _claim(self, sql: str, bindings: tuple[int, ...]) -> Claimed:
        jobs: list[tuple[int, str, int, str | None]] = []
        suppressed: list[tuple[str, int]] = []
        with self._write() as cur:
            for request_id, email, content_id, data, reason in cur.execute(sql, bindings):
                if reason is None:
                    jobs.append((request_id, email, content_id, data))
                else:
                    suppressed.append((f"suppressed: {reason}", request_id))
            if suppressed:
                cur.executemany(f"UPDATE requests SET status = {STOPPED}, error = ? WHERE id = ?",
                                suppressed)
                self.emit_events(cur, events.SUPPRESSED, [rid for _, rid in suppressed])
        return Claimed(jobs, len(suppressed))

    def contents(self, ids: Iterable[int]) -> dict[int, Content]:
        ids = list(ids)
        rows = self.db.execute("SELECT id, topic_id, subject, html, text, options FROM contents "
                               "WHERE id IN (SELECT value FROM json_each(?))",
                               (orjson.dumps(ids),))
        return {cid: Content.from_stored(topic or "", subject, html, text,
                                         orjson.loads(options) if options else None)
                for cid, topic, subject, html, text, options in rows}

    NEXT_DUE = f"SELECT MIN(scheduled_at) FROM requests WHERE status = {CREATED} AND priority = ?"

    def next_due(self) -> int | None:
        """The earliest scheduled time among created requests (ms), or None when there are none.
        One index lookup per priority (a MIN over both would walk the index)."""
        rows = [self.db.execute(self.NEXT_DUE, (p,)).fetchone() for p in PRIORITIES]
        known = [int(row[0]) for row in rows if row is not None and row[0] is not None]
        return min(known) if known else None

    def release_processing(self, *, crashed: bool = False) -> Released:
        """Put every processing request back to created. Only safe while no sender holds work:
        the supervisor calls it at start and after a sender is gone, never concurrently.

        `crashed`: the sender died of its own fault (an exception, a fatal signal) while holding
        these rows. Each counts one more crash; at MAX_CRASHES a request is failed with the reason
        instead of being claimed again, so one poisonous message cannot crash-loop the sender."""
        at = now_ms()
        with self._write() as cur:
            failed = 0
            if crashed:
                cur.execute(f"UPDATE requests SET crashes = crashes + 1 "
                            f"WHERE status = {PROCESSING}")
                rows = cur.execute(
                    f"UPDATE requests SET status = {FAILED}, sending_at = NULL, updated_at = ?, "
                    "error = 'the sender process crashed ' || crashes || "
                    "' times while holding this request; not tried again' "
                    f"WHERE status = {PROCESSING} AND crashes >= ? RETURNING id", (at, MAX_CRASHES))
                failed_ids = [row[0] for row in rows]
                failed = len(failed_ids)
                self.emit_events(cur, events.FAILED, failed_ids, at=at)
            cur.execute(f"UPDATE requests SET status = {CREATED}, sending_at = NULL, "
                        f"updated_at = ? WHERE status = {PROCESSING}", (at,))
            return Released(self.db.changes(), failed)

    # -- sender -------------------------------------------------------------------------------

    def begin_sending(self, request_ids: Sequence[int], at: int | None = None) -> set[int]:
        """Mark these requests as handed to SES, in a commit before the call; returns those that
        may be sent — the ones still processing (a topic stop or a suppression may have taken the
        others since they were claimed). A stop skips marked rows, so what it counts as stopped
        never reaches SES."""
        at = now_ms() if at is None else at
        with self._write() as cur:
            rows = cur.execute(f"UPDATE requests SET sending_at = ? WHERE status = {PROCESSING} "
                               "AND id IN (SELECT value FROM json_each(?)) RETURNING id",
                               (at, orjson.dumps(list(request_ids))))
            return {row[0] for row in rows}

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Write a batch of outcomes in one transaction.

        A send that happened is always recorded, even if the request was stopped meanwhile
        (status 4): hiding a real send would be a lie (begin_sending makes it impossible, but the
        record must not depend on that). A failure, a retry or a hand-back only touches rows still
        processing, so a stop wins over them."""
        sent, failed, retry, released = [], [], [], []
        for o in outcomes:
            if o.status == SENT:
                sent.append((o.message_id, o.attempts, o.at, o.at, o.request_id))
            elif o.status == FAILED:
                failed.append((o.error, o.attempts, o.at, o.request_id))
            elif o.status == PROCESSING:
                retry.append((o.error, o.attempts, o.at, o.request_id))
            else:
                released.append((o.at, o.request_id))
        with self._write() as cur:
            # Events only for the rows these updates change (RETURNING), and only while a
            # webhook is registered: otherwise the statements are exactly as cheap as before.
            hooked = self._has_webhooks(cur)
            returning = " RETURNING id" if hooked else ""
            if sent:
                rows = cur.executemany(
                    f"UPDATE requests SET status = {SENT}, message_id = ?, error = NULL, "
                    "attempts = ?, sent_at = ?, updated_at = ?, sending_at = NULL "
                    f"WHERE id = ? AND status IN ({PROCESSING}, {STOPPED})" + returning, sent)
                if hooked:
                    self._emit(cur, events.SENT, [row[0] for row in rows])
            if failed:
                rows = cur.executemany(
                    f"UPDATE requests SET status = {FAILED}, error = ?, attempts = ?, "
                    f"updated_at = ?, sending_at = NULL WHERE id = ? AND status = {PROCESSING}"
                    + returning, failed)
                if hooked:
                    self._emit(cur, events.FAILED, [row[0] for row in rows])
            if retry:
                cur.executemany("UPDATE requests SET error = ?, attempts = ?, updated_at = ?, "
                                f"sending_at = NULL WHERE id = ? AND status = {PROCESSING}", retry)
            if released:
                cur.executemany(f"UPDATE requests SET status = {CREATED}, sending_at = NULL, "
                                f"updated_at = ? WHERE id = ? AND status = {PROCESSING}", released)

    def stopped_among(self, request_ids: Sequence[int]) -> set[int]:
        """Which of these requests have been stopped (topic stopped) since they were claimed."""
        found: set[int] = set()
        for start in range(0, len(request_ids), 30_000):
            chunk = list(request_ids[start:start + 30_000])
            rows = self.db.execute(
                "SELECT value FROM json_each(?) JOIN requests ON requests.id = value "
                f"WHERE requests.status = {STOPPED}", (orjson.dumps(chunk),))
            found.update(row[0] for row in rows)
        return found

    # -- results (SNS, pixel) -----------------------------------------------------------------

    def record_result(self, *, request_id: int | None, status: str, raw: str | None,
                      sns_message_id: str | None,
                      suppress: Sequence[tuple[str, str]] = ()) -> bool:
        """Store one result (and the suppressions it implies); False if the SNS message was
        already stored (SNS delivers at least once)."""
        at = now_ms()
        with self._write() as cur:
            # SNS repeats a message: nothing. SES's own Open event (configuration-set event
            # publishing) for a request whose pixel already opened it: one more hit on its one
            # Open row (the row per request that bounds replays), never a constraint error
            # that would answer 503 to SNS and have it retry the message for ever.
            cur.execute("INSERT INTO results (request_id, status, raw, sns_message_id, created_at) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (sns_message_id) DO NOTHING "
                        "ON CONFLICT (request_id) WHERE status = 'Open' "
                        "DO UPDATE SET hits = hits + 1, sns_message_id = "
                        "COALESCE(results.sns_message_id, excluded.sns_message_id)",
                        (request_id, status, raw, sns_message_id, at))
            if not self.db.changes():
                return False
            kind = events.FROM_SES.get(status)
            if kind is not None and request_id is not None:
                self.emit_events(cur, kind, [request_id], at=at,
                                 result_id=self.db.last_insert_rowid())
            if suppress:
                cur.executemany(self.SUPPRESS,
                                [(suppression_key(email), ALL_SCOPE, email, reason,
                                  sns_message_id, at) for email, reason in suppress])
        return True

    def request_candidates(self, request_id: int | None, message_id: str | None
                           ) -> list[tuple[int, str]]:
        """(id, email) of the requests an SES event may belong to, best first: the one our
        X-Request-ID names, then the one with that SES message id."""
        found: list[tuple[Any, ...]] = []
        if request_id is not None:
            found += self.db.execute("SELECT id, email FROM requests WHERE id = ?",
                                     (request_id,)).fetchall()
        if message_id:
            found += [row for row in self.db.execute(
                "SELECT id, email FROM requests WHERE message_id = ?", (message_id,))
                if row[0] != request_id]
        return [(int(rid), str(email)) for rid, email in found]

    OPEN = """
        INSERT INTO results (request_id, status, created_at) SELECT id, 'Open', ?
        FROM requests WHERE id = ?
        ON CONFLICT (request_id) WHERE status = 'Open' DO UPDATE SET hits = hits + 1
        RETURNING id, hits
    """

    def record_open(self, request_id: int) -> bool:
        """The request's Open result: its one row, or one more hit on it; False if there is
        no such request. The first open only is a `message.opened` event."""
        with self._write() as cur:
            row: Any = cur.execute(self.OPEN, (now_ms(), request_id)).fetchone()
            if row is not None and row[1] == 1:
                self.emit_events(cur, events.OPENED, [request_id], result_id=row[0])
            return row is not None

    def add_open_hits(self, hits: dict[int, int]) -> None:
        """Later pixel hits counted in memory, added to each request's Open row at once."""
        with self._write() as cur:
            cur.executemany("UPDATE results SET hits = hits + ? WHERE request_id = ? "
                            "AND status = 'Open'", [(n, rid) for rid, n in hits.items()])

    # -- suppression list ---------------------------------------------------------------------
    # Every statement goes through addresses.suppression_key: no spelling of an address (case,
    # Unicode or Punycode domain, NFC or NFD) reaches another row. A scope is 'all' (bounces,
    # complaints, manual entries: no mail at all) or a list id (unsubscribes: no bulk mail of
    # that list). The address is kept as first given, for display.

    SUPPRESSION_COLUMNS = "key, scope, email, reason, event, created_at"
    SUPPRESS = f"""
        INSERT INTO suppressions ({SUPPRESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
        ON CONFLICT (key, scope) DO UPDATE SET
            reason = excluded.reason, event = excluded.event, created_at = excluded.created_at
    """
    # An unsubscribe keeps an entry that exists (its first time and reason).
    SUPPRESS_KEEP = f"""
        INSERT INTO suppressions ({SUPPRESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, NULL, ?5)
        ON CONFLICT (key, scope) DO NOTHING
    """
    # Keyset pages: after (key, scope) in primary-key order, or within one scope by its index.
    SUPPRESSION_PAGE = f"""
        SELECT {SUPPRESSION_COLUMNS} FROM suppressions
        WHERE (key, scope) > (?1, ?2) ORDER BY key, scope LIMIT ?3
    """
    SCOPE_PAGE = f"""
        SELECT {SUPPRESSION_COLUMNS} FROM suppressions
        WHERE scope = ?4 AND (key, scope) > (?1, ?2) ORDER BY scope, key LIMIT ?3
    """

    def list_suppressions(self, *, limit: int = 100, after: tuple[str, str] | None = None,
                          scope: str | None = None
                          ) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
        """One page in (key, scope) order after the cursor `after`, of one scope or all, and
        the cursor of the next page (None on the last)."""
        key, after_scope = after or ("", "")
        if scope is None:
            rows = self.db.execute(self.SUPPRESSION_PAGE, (key, after_scope, limit)).fetchall()
        else:
            rows = self.db.execute(self.SCOPE_PAGE, (key, after_scope, limit, scope)).fetchall()
        page = [{"email": e, "scope": sc, "reason": r, "event": ev, "createdAt": c}
                for _, sc, e, r, ev, c in rows]
        cursor = (str(rows[-1][0]), str(rows[-1][1])) if len(rows) == limit else None
        return page, cursor

    def is_suppressed(self, email: str, scope: str = ALL_SCOPE) -> bool:
        return self.db.execute("SELECT 1 FROM suppressions WHERE key = ? AND scope = ?",
                               (suppression_key(email), scope)).fetchone() is not None

    def add_suppression(self, email: str, reason: str, event: str | None = None, *,
                        scope: str = ALL_SCOPE) -> None:
        with self._write() as cur:
            cur.execute(self.SUPPRESS, (suppression_key(email), scope, email, reason, event,
                                        now_ms()))

    # Not a request whose call has started (sending_at): SES has it, it ends as SES answers.
    STOP_HELD = (f"UPDATE requests SET status = {STOPPED}, error = ?, updated_at = ? "
                 f"WHERE status = {PROCESSING} AND sending_at IS NULL AND lower(email) = ? "
                 "RETURNING id")
    # ...and for a list: bulk requests only, of a content of that list.
    STOP_HELD_LIST = f"""
        UPDATE requests SET status = {STOPPED}, error = ?1, updated_at = ?2
        WHERE status = {PROCESSING} AND priority = {BULK_PRIORITY} AND sending_at IS NULL
          AND lower(email) = ?3
          AND (SELECT list_id FROM contents WHERE id = requests.content_id) = ?4
        RETURNING id
    """
    # ...and every held request the list now refuses, as the claim would (after an import).
    STOP_HELD_REFUSED = f"""
        UPDATE requests SET status = {STOPPED}, error = 'suppressed: ' || {_REFUSAL},
            updated_at = ?1
        WHERE status = {PROCESSING} AND sending_at IS NULL AND {_REFUSAL} IS NOT NULL
        RETURNING id
    """

    def stop_suppressed_held(self, suppress: Sequence[tuple[str, str]], *,
                             scope: str = ALL_SCOPE) -> int:
        """Stop processing (claimed, unsent) requests to newly suppressed addresses, with the
        reason; the claim already refuses created ones. For a list `scope`, only bulk requests
        of that list. Walks the status index: only the few rows the sender holds are read,
        compared by key as the claim does. Returns how many were stopped."""
        at = now_ms()
        with self._write() as cur:
            if scope == ALL_SCOPE:
                rows = cur.executemany(self.STOP_HELD, [(f"suppressed: {reason}", at,
                                                         suppression_key(email))
                                                        for email, reason in suppress])
            else:
                rows = cur.executemany(self.STOP_HELD_LIST, [
                    (f"suppressed: {reason} (list {scope})", at, suppression_key(email), scope)
                    for email, reason in suppress])
            stopped = [row[0] for row in rows]
            self.emit_events(cur, events.SUPPRESSED, stopped, at=at)
            return len(stopped)

    def remove_suppression(self, email: str, scope: str = ALL_SCOPE) -> bool:
        with self._write() as cur:
            cur.execute("DELETE FROM suppressions WHERE key = ? AND scope = ?",
                        (suppression_key(email), scope))
            return self.db.changes() > 0

    # Set-based: the rows go in as one JSON array of [key, scope, email, reason], expanded by
    # SQLite. An entry that exists already keeps its reason and time (a bounce says more than a
    # re-imported list); within the import, the first row of a (key, scope) wins. `WHERE true`:
    # SQLite's upsert needs it after a SELECT (else ON reads as a join's).
    IMPORT = f"""
        INSERT INTO suppressions ({SUPPRESSION_COLUMNS})
        SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, NULL, ?2
        FROM json_each(?1) WHERE true
        ON CONFLICT (key, scope) DO NOTHING
    """

    def import_suppressions(self, rows: Sequence[tuple[str, str, str, str]]) -> Imported:
        """Add (key, scope, email, reason) rows, keys made by addresses.suppression_key, in one
        transaction, and stop what the sender holds that the list now refuses."""
        at = now_ms()
        # In primary-key order, the B-tree takes them as appends rather than random inserts; a
        # stable sort, so the first of a repeated (key, scope) still comes first.
        ordered = sorted(rows, key=lambda row: (row[0], row[1]))
        with self._write() as cur:
            cur.execute(self.IMPORT, (orjson.dumps(ordered), at))
            added = self.db.changes()
            stopped = [row[0] for row in cur.execute(self.STOP_HELD_REFUSED, (at,))]
            self.emit_events(cur, events.SUPPRESSED, stopped, at=at)
        return Imported(len(rows), added, len(stopped))

    # -- the recipients' routes: clicks and unsubscribes ----------------------------------------

    # The URL of link number ?2 of the request's content, as stored at intake; JSON path in C.
    CLICK_LINK = """
        SELECT CAST(contents.options AS TEXT) ->> ('$.links[' || ?2 || ']')
        FROM requests JOIN contents ON contents.id = requests.content_id WHERE requests.id = ?1
    """
    CLICK = """
        INSERT INTO results (request_id, status, link, user_agent, created_at)
        VALUES (?1, 'Click', ?2, ?3, ?4)
        ON CONFLICT (request_id, link) WHERE status = 'Click' DO UPDATE SET hits = hits + 1
        RETURNING id, hits
    """

    def record_clicks(self, clicks: Sequence[Click]) -> list[str | None]:
        """Each click's URL (None: no such request, or no such link in its message), in one
        transaction for the whole batch: the (request, link)'s one Click row, or one more hit
        on it. Only a first click is a `message.clicked` event."""
        at = now_ms()
        urls: list[str | None] = []
        with self._write() as cur:
            hooked = self._has_webhooks(cur)
            for click in clicks:
                url = self.click_url(click.request_id, click.link)
                urls.append(url)
                if url is None:
                    continue
                written: Any = cur.execute(self.CLICK, (click.request_id, url,
                                                        click.user_agent, at)).fetchone()
                result_id, hits = written
                if hooked and hits == 1:
                    self._emit(cur, events.CLICKED, [click.request_id], at=at,
                               result_id=result_id, detail={"link": url})
        return urls

    def click_url(self, request_id: int, link: int) -> str | None:
        """The URL of link number `link` of the request's message, reading only."""
        row = self.db.execute(self.CLICK_LINK, (request_id, link)).fetchone()
        return row[0] if row is not None and isinstance(row[0], str) else None

    def add_click_hits(self, hits: Mapping[tuple[int, str], int]) -> None:
        """Later clicks counted in memory, added to each (request, URL)'s Click row at once."""
        with self._write() as cur:
            cur.executemany("UPDATE results SET hits = hits + ? WHERE request_id = ? "
                            "AND link = ? AND status = 'Click'",
                            [(n, rid, url) for (rid, url), n in hits.items()])

    UNSUBSCRIBE_TARGET = f"""
        SELECT requests.email, contents.list_id
        FROM requests JOIN contents ON contents.id = requests.content_id
        WHERE requests.id = ? AND requests.priority = {BULK_PRIORITY}
    """

    def unsubscribe_target(self, request_id: int) -> tuple[str, str, bool] | None:
        """(address, list, already unsubscribed) of a bulk request; None if there is none."""
        row = self.db.execute(self.UNSUBSCRIBE_TARGET, (request_id,)).fetchone()
        if row is None:
            return None
        email, list_id = str(row[0]), str(row[1])
        return email, list_id, self.is_suppressed(email, list_id)

    UNSUBSCRIBE = """
        INSERT INTO results (request_id, status, created_at) VALUES (?, 'Unsubscribe', ?)
        ON CONFLICT (request_id) WHERE status = 'Unsubscribe' DO NOTHING
        RETURNING id
    """

    def unsubscribe(self, request_id: int) -> Unsubscribed | None:
        """The one-click unsubscribe of a bulk request's recipient from its list, in one
        transaction: the suppression (scope: the list, reason `unsubscribe`; one that exists
        stays as it is), the request's one Unsubscribe result and its `message.unsubscribed`
        event, and the stop of what the sender holds for that address and list. Idempotent.
        None if there is no such bulk request."""
        at = now_ms()
        with self._write() as cur:
            row = cur.execute(self.UNSUBSCRIBE_TARGET, (request_id,)).fetchone()
            if row is None:
                return None
            email, list_id = str(row[0]), str(row[1])
            key = suppression_key(email)
            cur.execute(self.SUPPRESS_KEEP, (key, list_id, email, UNSUBSCRIBE_REASON, at))
            reason = self._scalar_text("SELECT reason FROM suppressions WHERE key = ? AND "
                                       "scope = ?", (key, list_id))
            result = cur.execute(self.UNSUBSCRIBE, (request_id, at)).fetchone()
            if result is not None:
                self.emit_events(cur, events.UNSUBSCRIBED, [request_id], at=at,
                                 result_id=result[0])
            stopped = [r[0] for r in cur.execute(self.STOP_HELD_LIST, (
                f"suppressed: {reason} (list {list_id})", at, key, list_id))]
            self.emit_events(cur, events.SUPPRESSED, stopped, at=at)
        return Unsubscribed(email, list_id, result is not None, len(stopped))

    # -- stats --------------------------------------------------------------------------------

    TOPIC_REQUESTS = "SELECT status, COUNT(*) FROM requests WHERE topic_id = ? GROUP BY status"
    TOPIC_RESULTS = """
        SELECT results.status, COUNT(DISTINCT results.request_id)
        FROM requests JOIN results ON results.request_id = requests.id
        WHERE requests.topic_id = ? GROUP BY results.status
    """
    # sesd's clicks have one row per (request, link), so COUNT(*) counts distinct requests per
    # link. SES's own Click events (SES click tracking, if a configuration set has it) have no
    # `link`: they count in the statuses only.
    TOPIC_CLICKS = """
        SELECT results.link, COUNT(*)
        FROM requests JOIN results ON results.request_id = requests.id
        WHERE requests.topic_id = ? AND results.status = 'Click' AND results.link IS NOT NULL
        GROUP BY results.link
    """
    SENT_SINCE = "SELECT COUNT(*) FROM requests WHERE sent_at >= ?"

    def topic_stats(self, topic_id: str) -> dict[str, Any]:
        counts = dict.fromkeys(STATUS_NAMES, 0)
        for status, n in self.db.execute(self.TOPIC_REQUESTS, (topic_id,)):
            counts[STATUS_NAMES[status]] = n
        statuses = {status: n for status, n in self.db.execute(self.TOPIC_RESULTS, (topic_id,))}
        clicks = ({url: n for url, n in self.db.execute(self.TOPIC_CLICKS, (topic_id,))}
                  if "Click" in statuses else {})
        return {"request": {"total": sum(counts.values()), **counts},
                "result": {"statuses": statuses, "clicks": clicks}}

    TOPIC_PAGE = """
        SELECT id, email, status, error, attempts, message_id, created_at, updated_at
        FROM requests WHERE topic_id = ? AND status = ? AND id > ? ORDER BY id LIMIT ?
    """

    def topic_requests(self, topic_id: str, statuses: Sequence[int], *, after: int = 0,
                       limit: int = 100) -> list[dict[str, Any]]:
        """One page of a topic's requests in id order, after request id `after`.

        One walk of the (topic_id, status) index per status, merged: index-only ordering for any
        set of statuses, without a sort over the whole topic."""
        rows: list[tuple[Any, ...]] = []
        for status in statuses:
            rows.extend(self.db.execute(self.TOPIC_PAGE, (topic_id, status, after, limit)))
        rows.sort(key=lambda row: row[0])
        return [{"id": rid, "email": email, "status": STATUS_NAMES[status], "error": error,
                 "attempts": attempts, "messageId": message_id, "createdAt": created,
                 "updatedAt": updated}
                for rid, email, status, error, attempts, message_id, created, updated
                in rows[:limit]]

    def sent_since(self, since_ms: int) -> int:
        return self._scalar_int(self.SENT_SINCE, (since_ms,))

    def last_sent_at(self) -> int | None:
        """When the most recent send was recorded (ms), by the sent_at index."""
        row = self.db.execute("SELECT MAX(sent_at) FROM requests").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # -- webhook events: written inside the transaction of their fact ---------------------------

    EMIT = """
        INSERT INTO events (type, request_id, result_id, detail, created_at)
        SELECT ?1, value, ?2, ?3, ?4 FROM json_each(?5)
    """

    def emit_events(self, cur: apsw.Cursor, event_type: str, request_ids: Sequence[int], *,
                    at: int | None = None, result_id: int | None = None,
                    detail: Mapping[str, Any] | None = None) -> int:
        """Record that `event_type` (see sesd.events) happened to each of `request_ids`, on
        the cursor of the caller's open write transaction — the one that records the fact — so
        a crash keeps both or neither. Writes nothing while no webhook is registered. `detail`
        is a small JSON object the payload carries under data; `result_id` names the results
        row whose SES event details the payload shows. Returns the events written."""
        if not request_ids or not self._has_webhooks(cur):
            return 0
        return self._emit(cur, event_type, request_ids, at=at, result_id=result_id,
                          detail=detail)

    def _emit(self, cur: apsw.Cursor, event_type: str, request_ids: Sequence[int], *,
              at: int | None = None, result_id: int | None = None,
              detail: Mapping[str, Any] | None = None) -> int:
        """emit_events once the caller knows a webhook is registered."""
        if not request_ids:
            return 0
        cur.execute(self.EMIT, (event_type, result_id,
                                orjson.dumps(detail).decode() if detail else None,
                                now_ms() if at is None else at, orjson.dumps(list(request_ids))))
        return self.db.changes()

    def _has_webhooks(self, cur: apsw.Cursor) -> bool:
        row = cur.execute("SELECT EXISTS (SELECT 1 FROM webhooks)").fetchone()
        return row is not None and row[0] == 1

    # -- webhook endpoints (API) ----------------------------------------------------------------

    def add_webhook(self, url: str, event_types: Sequence[str] | None, secret: str, *,
                    limit: int) -> dict[str, Any] | None:
        """Register an endpoint for the events committed from now on; None when `limit`
        endpoints exist already."""
        at = now_ms()
        with self._write() as cur:
            if self._scalar_int("SELECT COUNT(*) FROM webhooks") >= limit:
                return None
            after = self._scalar_int("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
            filter_json = None if event_types is None else orjson.dumps(list(event_types)).decode()
            webhook_id = cur.execute(
                "INSERT INTO webhooks (url, events, secret, after_event, created_at) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                (url, filter_json, secret, after, at)).fetchall()[0][0]
        return {"id": webhook_id, "url": url, "events": event_types, "createdAt": at}

    WEBHOOK_COLUMNS = "id, url, events, created_at"

    @staticmethod
    def _webhook_dict(row: Sequence[Any]) -> dict[str, Any]:
        wid, url, filter_json, created = row
        return {"id": wid, "url": url,
                "events": None if filter_json is None else orjson.loads(filter_json),
                "createdAt": created}

    def list_webhooks(self) -> list[dict[str, Any]]:
        rows = self.db.execute(f"SELECT {self.WEBHOOK_COLUMNS} FROM webhooks ORDER BY id")
        return [self._webhook_dict(row) for row in rows]

    def get_webhook(self, webhook_id: int) -> dict[str, Any] | None:
        """One endpoint (never its secret) with its deliveries counted by status."""
        row = self.db.execute(f"SELECT {self.WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?",
                              (webhook_id,)).fetchone()
        if row is None:
            return None
        counts = dict.fromkeys(DELIVERY_STATUS_NAMES, 0)
        for status, n in self.db.execute("SELECT status, COUNT(*) FROM deliveries "
                                         "WHERE webhook_id = ? GROUP BY status", (webhook_id,)):
            counts[DELIVERY_STATUS_NAMES[status]] = n
        return {**self._webhook_dict(row), "deliveries": counts}

    def delete_webhook(self, webhook_id: int) -> bool:
        """Remove an endpoint and its deliveries (the events stay for the others)."""
        with self._write() as cur:
            cur.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))
            return self.db.changes() > 0

    DELIVERY_PAGE = """
        SELECT d.id, d.event_id, e.type, e.request_id, d.status, d.attempts, d.last_error,
               d.last_status, d.next_at, d.delivered_at, d.created_at, d.updated_at
        FROM deliveries AS d JOIN events AS e ON e.id = d.event_id
        WHERE d.webhook_id = ? AND d.status = ? AND d.id > ? ORDER BY d.id LIMIT ?
    """

    def list_deliveries(self, webhook_id: int, statuses: Sequence[int], *, after: int = 0,
                        limit: int = 100) -> list[dict[str, Any]]:
        """One page of an endpoint's deliveries in id order (one index walk per status, merged,
        as topic_requests does)."""
        rows: list[tuple[Any, ...]] = []
        for status in statuses:
            rows.extend(self.db.execute(self.DELIVERY_PAGE, (webhook_id, status, after, limit)))
        rows.sort(key=lambda row: row[0])
        return [self._delivery_dict(row) for row in rows[:limit]]

    @staticmethod
    def _delivery_dict(row: Sequence[Any]) -> dict[str, Any]:
        (did, event_id, kind, request_id, status, attempts, error, http_status, next_at,
         delivered_at, created, updated) = row
        return {"id": did, "eventId": events.webhook_id(event_id), "type": kind,
                "requestId": request_id, "status": DELIVERY_STATUS_NAMES[status],
                "attempts": attempts, "lastError": error, "lastStatus": http_status,
                "nextAt": next_at if status == PENDING else None, "deliveredAt": delivered_at,
                "createdAt": created, "updatedAt": updated}

    def retry_delivery(self, webhook_id: int, delivery_id: int) -> dict[str, Any] | None:
        """Queue one delivery again now, with a fresh retry window (failed or delivered alike:
        a receiver that lost an event asks for it again); None if the endpoint has no such
        delivery."""
        at = now_ms()
        with self._write() as cur:
            cur.execute(f"UPDATE deliveries SET status = {PENDING}, attempts = 0, next_at = ?, "
                        "first_at = ?, updated_at = ? WHERE id = ? AND webhook_id = ?",
                        (at, at, at, delivery_id, webhook_id))
            if not self.db.changes():
                return None
            row = cur.execute(self.DELIVERY_PAGE.replace("d.status = ? AND d.id > ?",
                                                         "d.id = ?"),
                              (webhook_id, delivery_id, 1)).fetchone()
        assert row is not None  # updated just above, in this transaction
        return self._delivery_dict(row)

    # -- webhook delivery (notifier) --------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint(*row) for row in self.db.execute(
            "SELECT id, url, secret FROM webhooks ORDER BY id")]

    def latest_event(self) -> int:
        """The newest event id (0: none yet); by the primary key, without a scan."""
        return self._scalar_int("SELECT MAX(id) FROM events")

    def event_cursor(self) -> int:
        """The last event fanned out to the endpoints' deliveries."""
        return self._scalar_int("SELECT CAST(value AS INTEGER) FROM settings WHERE key = ?",
                                (EVENT_CURSOR,))

    FAN_OUT = """
        INSERT INTO deliveries (webhook_id, event_id, next_at, first_at, created_at, updated_at)
        SELECT w.id, e.id, ?3, ?3, ?3, ?3 FROM events AS e JOIN webhooks AS w
        WHERE e.id > ?1 AND e.id <= ?2 AND e.id > w.after_event
          AND (w.events IS NULL OR e.type IN (SELECT value FROM json_each(w.events)))
        ORDER BY e.id, w.id
    """

    def fan_out(self, limit: int) -> tuple[int, int]:
        """Turn the next `limit` events into one pending delivery per matching endpoint, and
        advance the cursor past them in the same transaction: each event is fanned out exactly
        once, whatever crashes. Returns (events, deliveries) made."""
        at = now_ms()
        with self._write() as cur:
            cursor = self.event_cursor()
            upto = self._scalar_int("SELECT MAX(id) FROM (SELECT id FROM events WHERE id > ? "
                                    "ORDER BY id LIMIT ?)", (cursor, limit))
            if upto <= cursor:
                return 0, 0
            cur.execute(self.FAN_OUT, (cursor, upto, at))
            made = self.db.changes()
            cur.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) "
                        "DO UPDATE SET value = excluded.value", (EVENT_CURSOR, str(upto)))
            seen = self._scalar_int("SELECT COUNT(*) FROM events WHERE id > ? AND id <= ?",
                                    (cursor, upto))
        return seen, made

    # The message's stream and tags: only what differs from the defaults is in `options`.
    DUE = f"""
        SELECT d.id, d.event_id, d.attempts, d.first_at, e.type, e.created_at, e.request_id,
               e.detail, r.topic_id, r.email, r.message_id, r.error, res.status, res.raw,
               c.list_id, CAST(c.options AS TEXT) ->> '$.stream',
               CAST(c.options AS TEXT) -> '$.tags'
        FROM deliveries AS d JOIN events AS e ON e.id = d.event_id
        LEFT JOIN requests AS r ON r.id = e.request_id
        LEFT JOIN contents AS c ON c.id = r.content_id
        LEFT JOIN results AS res ON res.id = e.result_id
        WHERE d.webhook_id = ? AND d.status = {PENDING} AND d.next_at <= ?
        ORDER BY d.next_at, d.id LIMIT ?
    """

    def due_deliveries(self, webhook_id: int, now: int, limit: int) -> list[DueDelivery]:
        """An endpoint's pending deliveries whose time has come, oldest first, with what their
        payload is made of (the request row as it is now, the SES event if any)."""
        return [DueDelivery(*row) for row in self.db.execute(self.DUE, (webhook_id, now, limit))]

    def record_attempts(self, attempts: Sequence[Attempt]) -> None:
        """Write a batch of delivery attempts in one transaction. A retry or a failure only
        touches a pending delivery: one delivered meanwhile (by another attempt) stays so."""
        done, retry, failed = [], [], []
        for a in attempts:
            if a.status == DELIVERED:
                done.append((a.http_status, a.at, a.at, a.delivery_id))
            elif a.status == PENDING:
                retry.append((a.next_at, a.error, a.http_status, a.at, a.delivery_id))
            else:
                failed.append((a.error, a.http_status, a.at, a.delivery_id))
        with self._write() as cur:
            if done:
                cur.executemany(f"UPDATE deliveries SET status = {DELIVERED}, attempts = "
                                "attempts + 1, "
                                "last_error = NULL, last_status = ?, delivered_at = ?, "
                                "updated_at = ? WHERE id = ?", done)
            if retry:
                cur.executemany("UPDATE deliveries SET attempts = attempts + 1, next_at = ?, "
                                "last_error = ?, last_status = ?, updated_at = ? "
                                f"WHERE id = ? AND status = {PENDING}", retry)
            if failed:
                cur.executemany(f"UPDATE deliveries SET status = {GAVE_UP}, "
                                "attempts = attempts + 1, last_error = ?, last_status = ?, "
                                f"updated_at = ? WHERE id = ? AND status = {PENDING}", failed)

    def hurry_deliveries(self, webhook_id: int, at: int | None = None) -> int:
        """The endpoint answers again: its backed-off pending deliveries are due now rather
        than at the end of their (by now long) backoff."""
        at = now_ms() if at is None else at
        with self._write() as cur:
            cur.execute(f"UPDATE deliveries SET next_at = ? WHERE webhook_id = ? "
                        f"AND status = {PENDING} AND next_at > ?", (at, webhook_id, at))
            return self.db.changes()

    def expire_deliveries(self, webhook_id: int, window_ms: int, at: int | None = None) -> int:
        """Fail the endpoint's pending deliveries whose retry window has passed (they waited on
        an endpoint held shut, so no attempt of theirs could end them)."""
        at = now_ms() if at is None else at
        with self._write() as cur:
            cur.execute(f"UPDATE deliveries SET status = {GAVE_UP}, updated_at = ?1, "
                        "last_error = COALESCE(last_error, 'the endpoint was unreachable') || "
                        "' (gave up: not delivered within the retry window)' "
                        f"WHERE webhook_id = ?2 AND status = {PENDING} AND first_at < ?3",
                        (at, webhook_id, at - window_ms))
            return self.db.changes()


EVENT_CURSOR = "webhook_event_cursor"
DELIVERY_STATUS_NAMES = ("pending", "delivered", "failed")


class Endpoint(NamedTuple):
    id: int
    url: str
    secret: str


class DueDelivery(NamedTuple):
    """A delivery to attempt, with the rows its payload is composed of."""

    delivery_id: int
    event_id: int
    attempts: int
    first_at: int  # ms: start of its retry window
    type: str
    created_at: int  # ms: when the fact happened
    request_id: int | None
    detail: str | None  # the event's small JSON detail
    topic_id: str | None
    email: str | None
    message_id: str | None
    error: str | None
    result_status: str | None  # the SES event type of the result the event came from
    result_raw: str | None  # and its full JSON
    list_id: str | None = None  # the message's list; None: no request (or content) row
    stream: str | None = None  # "transactional"; None: the default, bulk
    tags: str | None = None  # JSON [[name, value], ...]; None: no tags


class Attempt(NamedTuple):
    """What one delivery attempt ended in: DELIVERED, PENDING (retry at next_at) or GAVE_UP."""

    delivery_id: int
    status: int
    at: int
    http_status: int | None = None
    error: str | None = None
    next_at: int = 0
