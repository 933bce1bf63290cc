"""The pure cores of the recipients' routes and of suppression management: click redirect
targets, replay memory, group commits, the unsubscribe page and one-click bodies, and the
suppression rows in (import) and out (CSV export, cursors)."""

from __future__ import annotations

import asyncio
import csv
import html.parser
import io
import re
import urllib.parse

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sesd import addresses
from sesd.api import suppression_rows as rows
from sesd.api.checks import ValidationError
from sesd.api.clicks import MAX_USER_AGENT, ClickMemory, GroupCommit, location, user_agent
from sesd.api.unsubscribe import (
    PAGE_HEADERS,
    is_one_click,
    mask,
    unsubscribe_page,
    unsubscribed_page,
)

# -- redirect targets ------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "https://example.com/",
    "https://example.com/p?a=1&b=2#frag",
    "http://example.com/%E2%82%AC?q=%20x&y=%2F",
    "https://user:pw@example.com:8443/a/b;c?d=e&f",
    "https://example.com/?u=https%3A%2F%2Fother.example%2F&x={y}|z",
])
def test_location_keeps_every_ordinary_link_exactly(url: str) -> None:
    assert location(url) == url


def test_location_encodes_only_what_a_header_cannot_carry() -> None:
    assert location("https://例え.jp/パス?q=ü") == (
        "https://%E4%BE%8B%E3%81%88.jp/%E3%83%91%E3%82%B9?q=%C3%BC")
    assert location("https://example.com/a b") == "https://example.com/a%20b"
    # Tab and line breaks inside an href are dropped, as a browser's URL parser drops them.
    assert location("https://exa\nmple.com/\r\np\ta") == "https://example.com/pa"
    assert location("https://example.com/\x00\x7f") == "https://example.com/%00%7F"


@given(st.text())
def test_location_is_always_a_safe_header_value(url: str) -> None:
    value = location(url)
    assert value.isascii()
    assert not re.search(r"[\x00-\x20\x7f]", value)
    # What was encoded decodes back to the link (less the dropped tab and line breaks).
    kept = "".join(c for c in url if c not in "\t\r\n")
    if "%" not in kept:
        assert urllib.parse.unquote(value, errors="surrogatepass") == kept


def test_user_agent_is_valid_text_cut_short() -> None:
    assert user_agent(None) is None and user_agent("") is None
    assert user_agent("Mozilla/5.0") == "Mozilla/5.0"
    assert user_agent("x" * 5000) == "x" * MAX_USER_AGENT
    # aiohttp hands undecodable header bytes on as surrogates: SQLite could not store them.
    raw = b"bot\xff\xfe/1".decode("utf-8", "surrogateescape")
    stored = user_agent(raw)
    assert stored == "bot\ufffd\ufffd/1"
    assert stored.encode("utf-8")


# -- replay memory ---------------------------------------------------------------------------------

def test_click_memory_remembers_counts_and_drains() -> None:
    memory = ClickMemory()
    assert memory.url(1, 0) is None
    memory.remember(1, 0, "https://a.example/")
    assert memory.url(1, 0) == "https://a.example/"
    for _ in range(3):
        memory.count(1, "https://a.example/")
    memory.count(2, "https://b.example/")
    assert memory.drain() == {(1, "https://a.example/"): 3, (2, "https://b.example/"): 1}
    assert memory.drain() == {}


def test_click_memory_is_bounded_and_forgets_the_oldest() -> None:
    memory = ClickMemory(known=3, pending=2)
    for rid in range(5):
        memory.remember(rid, 0, f"u{rid}")
    assert [memory.url(rid, 0) for rid in range(5)] == [None, None, "u2", "u3", "u4"]
    memory.url(2, 0)  # used: now the newest
    memory.remember(9, 0, "u9")
    assert memory.url(3, 0) is None and memory.url(2, 0) == "u2"
    for rid in range(10):
        memory.count(rid, "u")
    memory.count(0, "u")  # a link already counted keeps counting past the cap
    assert memory.drain() == {(0, "u"): 2, (1, "u"): 1}


# -- group commit ----------------------------------------------------------------------------------

async def test_group_commit_shares_a_write_among_waiting_items() -> None:
    batches: list[list[int]] = []
    gate = asyncio.Event()

    async def write(batch: list[int]) -> list[int]:
        batches.append(batch)
        await gate.wait()
        return [item * 10 for item in batch]

    commit: GroupCommit[int, int] = GroupCommit(write, max_batch=4)
    waiting = [asyncio.create_task(commit.submit(i)) for i in range(7)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [i * 10 for i in range(7)]
    # The first item went alone (nothing else waited yet), the rest in batches of at most 4.
    assert sorted(x for b in batches for x in b) == list(range(7))
    assert all(len(b) <= 4 for b in batches) and len(batches) < 7
    assert await commit.submit(8) == 80  # idle again: a new write starts


async def test_group_commit_fails_a_whole_batch_and_recovers() -> None:
    calls = 0

    async def write(batch: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("disk full")
        return batch

    commit: GroupCommit[int, int] = GroupCommit(write)
    with pytest.raises(RuntimeError, match="disk full"):
        await commit.submit(1)
    assert await commit.submit(2) == 2


async def test_a_waiter_that_goes_away_does_not_cancel_the_write() -> None:
    written: list[list[int]] = []
    gate = asyncio.Event()

    async def write(batch: list[int]) -> list[int]:
        await gate.wait()
        written.append(batch)
        return batch

    commit: GroupCommit[int, int] = GroupCommit(write)
    gone = asyncio.create_task(commit.submit(1))
    await asyncio.sleep(0)
    gone.cancel()
    stays = asyncio.create_task(commit.submit(2))
    await asyncio.sleep(0)
    gate.set()
    assert await stays == 2
    await commit.close()
    assert written == [[1], [2]]


# -- the unsubscribe page --------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "shown"), [
    ("ann@example.com", "a***@example.com"),
    ("b@example.com", "b***@example.com"),
    ("ann@xn--bcher-kva.de", "a***@bücher.de"),
    ("x@xn--invalid--punycode", "x***@xn--invalid--punycode"),
    ("no-at-sign", "***"),
])
def test_mask_shows_the_first_character_and_the_domain(address: str, shown: str) -> None:
    assert mask(address) == shown


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parsed(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    return parser


def test_page_has_one_form_posting_the_one_click_body_and_nothing_external() -> None:
    page = unsubscribe_page("news", "a***@example.com", "17.AAAAAAAAAAAAAAAAAAAAAA")
    parsed = _parsed(page)
    names = [tag for tag, _ in parsed.tags]
    assert names.count("form") == 1 and names.count("button") == 1
    assert "script" not in names and "img" not in names and "link" not in names
    (form,) = [attrs for tag, attrs in parsed.tags if tag == "form"]
    assert form == {"method": "post", "action": "17.AAAAAAAAAAAAAAAAAAAAAA"}
    (hidden,) = [attrs for tag, attrs in parsed.tags if tag == "input"]
    assert (hidden["name"], hidden["value"]) == ("List-Unsubscribe", "One-Click")
    text = " ".join(parsed.text)
    assert "news" in text and "a***@example.com" in text
    assert ("html", {"lang": "en"}) in parsed.tags
    assert ("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}) \
        in parsed.tags
    assert "http" not in page  # no external resource, no absolute link


def test_page_escapes_what_it_shows() -> None:
    page = unsubscribe_page("<b>", "<script>@x", '"><x')
    assert "<script>" not in page and "<b>" not in page
    assert '"><x' not in page
    confirmation = unsubscribed_page("<i>", "<img src=x>")
    assert "<img" not in confirmation and "<i>" not in confirmation


def test_csp_allows_only_the_inline_style_by_its_hash() -> None:
    import base64
    import hashlib

    page = unsubscribe_page("news", "a***@example.com", "t")
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    csp = PAGE_HEADERS["Content-Security-Policy"]
    assert f"style-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp and "form-action 'self'" in csp
    assert "script-src" not in csp and "unsafe" not in csp
    assert PAGE_HEADERS["Cache-Control"] == "no-store"


@pytest.mark.parametrize(("body", "content_type", "genuine"), [
    (b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded", True),
    (b"List-Unsubscribe=One-Click\r\n", "text/plain", True),
    (b"List-Unsubscribe=One-Click", "", True),
    (b"x=1&List-Unsubscribe=One-Click", "application/x-www-form-urlencoded", True),
    (b"List-Unsubscribe=One%2DClick", "application/x-www-form-urlencoded", True),
    (b"", "application/x-www-form-urlencoded", False),
    (b"List-Unsubscribe=one-click", "application/x-www-form-urlencoded", False),
    (b"List-Unsubscribe", "application/x-www-form-urlencoded", False),
    (b"\xff\xfe", "application/x-www-form-urlencoded", False),
    (b'{"List-Unsubscribe": "One-Click"}', "application/json", False),
    (b"--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
     b"One-Click\r\n--b--\r\n", "multipart/form-data; boundary=b", True),
    (b"--b\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\n"
     b"One-Click\r\n--b--\r\n", "multipart/form-data; boundary=b", False),
    (b"List-Unsubscribe=One-Click", "multipart/form-data; boundary=b", False),
    (b"--b\r\n\r\n", "multipart/form-data", False),
])
def test_one_click_body(body: bytes, content_type: str, genuine: bool) -> None:
    assert is_one_click(body, content_type) is genuine


@given(st.binary(max_size=300), st.text(max_size=80))
def test_one_click_check_never_raises(body: bytes, content_type: str) -> None:
    assert is_one_click(body, content_type) in (True, False)


# -- suppression rows ------------------------------------------------------------------------------

def test_csv_import_with_defaults_any_column_order_and_a_bom() -> None:
    body = ("\ufeffReason , EMAIL,scope\r\n"
            "gone,Ann@Bücher.DE,\r\n"
            "\r\n"
            ",b@example.com,news\r\n"
            ",c@example.com,all\r\n").encode()
    assert rows.parse_import(body, "text/csv") == [
        ("ann@xn--bcher-kva.de", "all", "Ann@Bücher.DE", "gone"),
        ("b@example.com", "news", "b@example.com", "imported"),
        ("c@example.com", "all", "c@example.com", "imported"),
    ]
    # Only an email column: every row of scope all.
    assert rows.parse_import(b"email\nx@example.com\n", "") == [
        ("x@example.com", "all", "x@example.com", "imported")]
    # A header alone is an empty import, not an error.
    assert rows.parse_import(b"email,scope,reason\n", "text/csv") == []


def test_json_import() -> None:
    body = orjson.dumps([{"email": "a@example.com"},
                         {"email": "B@Example.com", "scope": "news", "reason": " asked "},
                         {"email": "c@example.com", "scope": None, "reason": None,
                          "event": "sns-1", "createdAt": 5}])
    expected = [("a@example.com", "all", "a@example.com", "imported"),
                ("b@example.com", "news", "B@Example.com", "asked"),
                ("c@example.com", "all", "c@example.com", "imported")]
    assert rows.parse_import(body, "application/json") == expected
    assert rows.parse_import(body, "") == expected  # sniffed by its "["


@pytest.mark.parametrize(("body", "says"), [
    (b"email\na@example.com\nnot-an-address\n", 'line 3: "not-an-address" is not a valid'),
    (b"email,scope\na@example.com,all\nb@example.com,no such list\n",
     'line 3: scope must be "all" or a list id'),
    (b"email,scope\na@example.com\n", "line 2 has 1 fields; the header has 2"),
    (b"email,reason\n,x\n", "line 2: email is required"),
    (b"a@example.com\nb@example.com\n", "unknown column \"a@example.com\" (is the header"),
    (b"email,phone\na@example.com,1\n", 'unknown column "phone"'),
    (b"email,Email\n", 'column "email" appears twice'),
    (b"scope,reason\nall,x\n", "the header has no email column"),
    (b"", "the CSV is empty"),
    (b"\n\n", "the CSV is empty"),
    (b"email\n\xff@example.com\n", "not UTF-8 (byte 6)"),
    (b'email\n"a@example.com\n', "not valid CSV"),
    (b"email\na@example.com\r\nb@exa\x00mple.com\n", 'line 3: "b@exa\\u0000mple.com"'),
    (b"email\n" + b"a" * 200_000 + b"@example.com\n", "line 2: not valid CSV (field larger"),
])
def test_a_bad_csv_row_is_named(body: bytes, says: str) -> None:
    with pytest.raises(ValidationError) as info:
        rows.parse_import(body, "text/csv")
    assert says in str(info.value)
    assert len(str(info.value)) < 400  # reflected input is cut short


@pytest.mark.parametrize(("value", "says"), [
    ({"email": "a@example.com"}, "must be a JSON array"),
    ([{"email": "a@example.com"}, "b@example.com"], "[1] must be an object"),
    ([{"email": 5}], "[0]: email must be a string"),
    ([{"reason": "x"}], "[0]: email is required"),
    ([{"email": "a@example.com", "scope": 3}], "[0]: scope must be a string"),
    ([{"email": "a@example.com", "reason": ["x"]}], "[0]: reason must be a string"),
    ([{"email": "a@example.com", "list": "news"}], '[0]: unknown field "list"'),
    ([{"email": "a@example.com"}, {"email": "zoë@@example.com"}], "[1]: "),
])
def test_a_bad_json_row_is_named(value: object, says: str) -> None:
    with pytest.raises(ValidationError) as info:
        rows.parse_import(orjson.dumps(value), "application/json")
    assert says in str(info.value)


def test_invalid_json_and_too_many_rows() -> None:
    with pytest.raises(ValidationError, match="invalid JSON"):
        rows.parse_import(b"[{", "application/json")
    many = orjson.dumps([{"email": "a@example.com"}] * (rows.MAX_IMPORT_ROWS + 1))
    with pytest.raises(ValidationError, match="at most 100,000 per import"):
        rows.parse_import(many, "application/json")
    csv_body = b"email\n" + b"a@example.com\n" * (rows.MAX_IMPORT_ROWS + 1)
    with pytest.raises(ValidationError, match="at most 100,000 per import"):
        rows.parse_import(csv_body, "text/csv")
    assert len(rows.parse_import(b"email\n" + b"a@example.com\n" * rows.MAX_IMPORT_ROWS,
                                 "text/csv")) == rows.MAX_IMPORT_ROWS


@given(st.binary(max_size=400), st.sampled_from(["text/csv", "application/json", ""]))
def test_import_refuses_garbage_with_a_validation_error_only(body: bytes, kind: str) -> None:
    try:
        parsed = rows.parse_import(body, kind)
    except ValidationError:
        return
    for key, scope, email, reason in parsed:
        assert key == addresses.suppression_key(email)
        assert scope == "all" or re.fullmatch(r"[A-Za-z0-9._-]{1,64}", scope)
        assert reason and len(reason) <= rows.MAX_REASON


@pytest.mark.parametrize("address", [
    "a@example.com", "Ann.Lee+tag@Sub.Example.COM", "ann@Bücher.DE", "ann@xn--bcher-kva.de",
    "Émile@Example.COM", "zoë@bücher.de", '"quoted local"@example.com', "=cmd@example.com",
    "x@[192.0.2.1]",
])
def test_import_keys_are_the_suppression_keys(address: str) -> None:
    key = rows.key(address)
    if addresses.valid_syntax(address):
        assert key == addresses.suppression_key(address)
    else:
        assert key is None


@given(st.text())
def test_guard_round_trips_and_never_leaves_a_formula(value: str) -> None:
    guarded = rows.guard(value)
    assert guarded[:1] not in set("=+-@\t\r") and guarded.lstrip()[:1] not in set("=+-@")
    if value == value.strip():
        assert rows.unguard(guarded) == value


HOSTILE = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+1+cmd|' /C calc'!A0", "-2+3",
           "@SUM(1,2)", "'=quoted", "'plain", "\tleading tab", "plain reason, with comma",
           'quote " inside', "line\r\nbreak", " =spaced"]


def test_export_cells_are_never_formulas_and_the_export_imports_as_it_was() -> None:
    entries = [(f"{sign}user{i}@example.com", "news" if i % 2 else "all", reason, None, 0)
               for i, (sign, reason) in enumerate(zip(["=", "+", "-", "", "'", "'=", "", "", "",
                                                       "", ""], HOSTILE, strict=True))]
    entries.append(("plain@example.com", "-list", "x", "sns-1", 1_700_000_000_123))
    text = rows.csv_header() + rows.csv_lines(entries)
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed[0] == ["email", "scope", "reason", "event", "createdAt"]
    for cells in parsed[1:]:
        for cell in cells:
            assert cell[:1] not in set("=+-@\t\r"), cell
            assert cell.lstrip()[:1] not in set("=+-@"), cell
    assert parsed[-1][3:] == ["sns-1", "2023-11-14T22:13:20.123Z"]
    back = rows.parse_import(text.encode(), "text/csv")
    assert [(email, scope) for _, scope, email, _ in back] == [(e[0], e[1]) for e in entries]
    # Reasons come back as they went out (the guard's mark protects leading whitespace).
    assert [reason for *_, reason in back] == [e[2] for e in entries]


def test_cursor_round_trips_and_garbage_is_refused() -> None:
    for cursor in [("a@example.com", "all"), ("émile@example.com", "news"), ("", "")]:
        assert rows.decode_cursor(rows.encode_cursor(cursor)) == cursor
    for garbage in ["", "!!!", "eyJ9", rows.encode_cursor(("a", "b"))[:-2] + "xx",
                    "WzEsMl0", "x" * 5000]:  # WzEsMl0 is [1,2]
        with pytest.raises(ValidationError, match="cursor must be"):
            rows.decode_cursor(garbage)


@pytest.mark.parametrize(("value", "scope"), [(None, "all"), ("", "all"), ("all", "all"),
                                              ("news", "news"), ("a.b_c-d", "a.b_c-d")])
def test_scope_accepts_all_and_list_ids(value: str | None, scope: str) -> None:
    assert rows.scope(value) == scope


# "ALL" or "All" is no list: messages refuse that list name (options.list_id), so a row with it
# would match no mail.
@pytest.mark.parametrize("value", ["ALL ", "ALL", "All", "news letter", "x" * 65, "ü", "a/b",
                                   "\n"])
def test_scope_refuses_anything_else(value: str) -> None:
    with pytest.raises(ValidationError, match='scope must be "all" or a list id'):
        rows.scope(value)
