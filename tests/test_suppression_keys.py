"""Suppressions match by addresses.suppression_key in every store path: no spelling dodges them.

Real SQLite files; the property test drives intake (schemas.parse_messages) into the store and
the scheduler's claim, as the service does, for generated spellings of suppressed addresses.
"""

from __future__ import annotations

import tempfile
import unicodedata
from pathlib import Path

import idna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sesd.api import schemas
from sesd.store import PROCESSING, STOPPED, NewMessage, Store, now_ms
from sesd.testing import dbview

# (local part, Unicode domain) of suppressed mailboxes; the domains need IDNA, NFC/NFD care, or
# are plain ASCII.
# are plain ASCII. A non-ASCII local part cannot be sent at all: intake refuses every spelling.
MAILBOXES = [("ann", "bücher.de"), ("bob", "example.com"), ("lea.X", "exämple.com"),
             ("info", "例子.广告"), ("z", "xn--fa-hia.de"), ("Léa", "example.com")]


def _cased(draw: st.DrawFn, text: str) -> str:
    """Flip the case of some characters, where that keeps one character (ß has no upper case
    of its own: "SS" would name another domain)."""
    out = []
    for ch in text:
        upper = ch.upper()
        flip = len(upper) == 1 and upper.lower() == ch and draw(st.booleans())
        out.append(upper if flip else ch)
    return "".join(out)


@st.composite
def spellings(draw: st.DrawFn, mailbox: tuple[str, str]) -> str:
    local, domain = mailbox
    unicode_domain = idna.decode(domain) if domain.startswith("xn--") else domain
    form = draw(st.sampled_from(["unicode", "punycode", "nfd"]))
    if form == "punycode":
        shown = idna.encode(unicode_domain, uts46=True).decode()
    elif form == "nfd":
        shown = unicodedata.normalize("NFD", unicode_domain)
    else:
        shown = unicode_domain
    pad = draw(st.sampled_from(["", " ", "\t"]))
    return f"{pad}{_cased(draw, local)}@{_cased(draw, shown)}{pad}"


def _body(emails: list[str]) -> dict[str, object]:
    return {"messages": [{"topicId": "t", "emails": emails, "subject": "s", "content": "c"}]}


@st.composite
def case(draw: st.DrawFn) -> tuple[bool, str, list[str], str, bool]:
    mailbox = draw(st.sampled_from(MAILBOXES))
    suppressed = draw(spellings(mailbox))
    sent = draw(st.lists(spellings(mailbox), min_size=1, max_size=4))
    return (mailbox[0].isascii(), suppressed, sent, draw(st.sampled_from(["manual", "sns"])),
            draw(st.booleans()))


def _suppress(store: Store, address: str, via: str) -> None:
    if via == "manual":
        store.add_suppression(address.strip(), "manual")
    else:  # an SNS permanent bounce, as sns.parse_ses_event reports it
        store.record_result(request_id=None, status="Bounce", raw=None, sns_message_id="sns-1",
                            suppress=[(address.strip(), "Bounce/Permanent/General")])


@settings(max_examples=250, deadline=None)
@given(case())
def test_no_spelling_of_a_suppressed_address_is_ever_handed_to_the_sender(
        example: tuple[bool, str, list[str], str, bool]) -> None:
    sendable, suppressed, sent, via, held = example
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "app.db")
        try:
            if not held:
                _suppress(store, suppressed, via)
            try:
                messages = schemas.parse_messages(_body([*sent, "other@example.com"]),
                                                  now_ms=now_ms(), max_recipients=10)
            except schemas.ValidationError as exc:
                assert not sendable and "non-ASCII characters before the @" in str(exc)
                return
            assert sendable
            store.insert_messages(messages)
            # Every spelling of one mailbox is one request: one to stop, one to send.
            assert [len(m.emails) for m in messages] == [2]
            claimed = store.claim_due(100)
            if held:  # suppressed while the sender holds it: stopped on the spot
                _suppress(store, suppressed, via)
                assert store.stop_suppressed_held([(suppressed.strip(), "x")]) == 1
                jobs = [j for j in claimed.jobs
                        if (dbview.request_row(store, j[0]) or {})["status"] == PROCESSING]
            else:
                assert claimed.suppressed == 1
                jobs = claimed.jobs
            assert [email for _, email, _, _ in jobs] == ["other@example.com"]
            assert store.db.execute("SELECT COUNT(*) FROM requests WHERE status = ?",
                                    (STOPPED,)).fetchone()[0] == 1
        finally:
            store.close()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "app.db")


def test_every_store_path_uses_the_key(store: Store) -> None:
    store.add_suppression("Ann@Bücher.DE", "manual")
    store.record_result(request_id=None, status="Complaint", raw=None, sns_message_id="sns-1",
                        suppress=[("ANN@XN--BCHER-KVA.DE", "Complaint/abuse")])
    # One entry: the address as first given, the latest reason.
    page, cursor = store.list_suppressions()
    assert [(s["email"], s["reason"], s["event"]) for s in page] == [
        ("Ann@Bücher.DE", "Complaint/abuse", "sns-1")]
    assert cursor is None
    assert store.db.execute("SELECT key, scope FROM suppressions").fetchall() == [
        ("ann@xn--bcher-kva.de", "all")]
    assert store.is_suppressed("ann@bu\u0308cher.de")
    assert not store.is_suppressed("ann@bucher.de")
    assert store.remove_suppression("aNN@bücher.de")
    assert not store.is_suppressed("Ann@Bücher.DE")
    assert not store.remove_suppression("ann@bücher.de")


def test_suppressions_page_in_key_order(store: Store) -> None:
    for email in ["b@example.com", "C@Example.com", "a@bücher.de", "Émile@example.com"]:
        store.add_suppression(email, "manual")
    seen: list[str] = []
    after: tuple[str, str] | None = None
    pages = 0
    while True:
        page, cursor = store.list_suppressions(limit=2, after=after)
        pages += 1
        seen += [s["email"] for s in page]
        if cursor is None:
            break
        after = cursor
    # Key order: a@xn--bcher-kva.de, b@…, c@…, émile@… (non-ASCII sorts last).
    assert seen == ["a@bücher.de", "b@example.com", "C@Example.com", "Émile@example.com"]
    assert pages == 3  # a full last page still offers a cursor; the next is empty


def test_a_non_ascii_local_part_can_be_suppressed_and_stays_apart(store: Store) -> None:
    """Not sendable (intake refuses it), but a bounce report may name it: it gets its own key
    and stops nothing else."""
    store.record_result(request_id=None, status="Bounce", raw=None, sns_message_id="sns-1",
                        suppress=[("Émile@Example.COM", "Bounce/Permanent/General")])
    assert store.is_suppressed("e\u0301mile@example.com")
    store.insert_messages([NewMessage("t", ["emile@example.com"], "s", "h", now_ms())])
    assert store.claim_due(10).suppressed == 0
