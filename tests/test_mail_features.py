"""The message options end to end, through `python run.py` and the SES stand-in: what each
recipient receives (text part, personalisation, sender fields, headers) on the single and the
bulk path, one-off messages sharing bulk calls byte for byte, transactional mail overtaking a
bulk backlog, and the account's quota capping the rate."""

from __future__ import annotations

import email.parser
import email.policy
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sesd import tracking
from sesd.store import CREATED, PROCESSING, SENT
from sesd.testing.harness import Service, Standin

pytestmark = pytest.mark.slow

KEY = "k" * 32  # TRACKING_KEY: the test computes the signed URLs sesd puts in


@pytest.fixture
def standin() -> Iterator[Standin]:
    s = Standin()
    yield s
    s.close()


def start(tmp_path: Path, standin: Standin, **env: str) -> Service:
    return Service(tmp_path, {**standin.env(), "TRACKING_KEY": KEY, "EMAIL_RATE": "0",
                              **env}).start()


def post(service: Service, messages: list[dict[str, Any]]) -> int:
    status, body = service.request("POST", "/v1/messages", {"messages": messages})
    assert status == 200, body
    return int(body["count"])


def words(html_or_text: str) -> list[str]:
    return re.findall(r"[A-Za-zÀ-ÿ]{3,}", re.sub(r"<[^>]+>|\([^)]*\)|https?://\S+", " ",
                                                 html_or_text))


@pytest.mark.parametrize("bulk", ["true", "false"])
def test_every_message_carries_a_text_part_and_its_own_text_wins(
        tmp_path: Path, standin: Standin, bulk: str) -> None:
    service = start(tmp_path, standin, EMAIL_BULK=bulk)
    try:
        html = ("<html><body><h1>Spring sale</h1><p>Everything in the shop is cheaper this "
                "week.</p><ul><li>Shoes</li><li>Coats</li></ul><p><a href='https://shop.example"
                "/sale'>Shop now</a></p></body></html>")
        total = post(service, [
            {"topicId": "news", "emails": [f"n{i}@example.com" for i in range(3)],
             "subject": "Sale", "content": html},
            {"topicId": "news", "emails": ["own@example.com"], "subject": "Sale",
             "content": html, "text": "Our own words."},
            {"topicId": "one", "emails": ["solo@example.com"], "subject": "Receipt",
             "content": "<p>Order <b>42</b> is paid.</p>"}])
        assert service.wait_terminal(total, timeout=30) == {SENT: 5}
        sends = {s["to"][0]: s for s in standin.log()["sends"]}
        for address in ("n0@example.com", "n1@example.com", "n2@example.com"):
            assert words(sends[address]["text"]) == words(html)
            assert "https://shop.example/sale" in sends[address]["text"]
            assert "/v1/events/open" not in sends[address]["text"]  # no pixel in the text
        assert sends["own@example.com"]["text"] == "Our own words."
        assert words(sends["solo@example.com"]["text"]) == ["Order", "paid"]
        assert all(s["bulk"] == (bulk == "true") for a, s in sends.items()
                   if a.startswith("n"))
    finally:
        service.kill()


def test_one_off_messages_share_bulk_calls_byte_for_byte(tmp_path: Path,
                                                         standin: Standin) -> None:
    service = start(tmp_path, standin)
    try:
        posted: dict[str, tuple[str, str]] = {}
        messages = []
        for i in range(500):
            subject = f"Receipt {i} — naïve café {{{{total}}}}" if i % 7 == 0 else f"Receipt {i}"
            html = f"<p>Order {i}: €{i}.00</p>"
            if i % 5 == 0:
                html += "<p>Literal {{name}}, }}} and {{{raw}}} and {{#if x}}</p>"
            address = f"c{i}@example.com"
            posted[address] = (subject, html)
            messages.append({"topicId": "receipts", "emails": [address], "subject": subject,
                             "content": html, "stream": "transactional"})
        assert post(service, messages) == 500
        assert service.wait_terminal(500, timeout=60) == {SENT: 500}
        log = standin.log()
        per_request = Counter(int(s["request_id"]) for s in log["sends"])
        assert len(per_request) == 500 and set(per_request.values()) == {1}
        for send in log["sends"]:
            subject, html = posted[send["to"][0]]
            assert send["subject"] == subject
            pixel = tracking.pixel_url(f"http://127.0.0.1:{service.port}", KEY,
                                       int(send["request_id"]))
            assert send["html"] == tracking.append_pixel(html, pixel)
        calls = log["counters"]["send_bulk_email_calls"] + log["counters"]["send_email_calls"]
        assert calls < 20, log["counters"]
    finally:
        service.kill()


@pytest.mark.parametrize("bulk", ["true", "false"])
def test_personalised_mail_is_rendered_per_recipient(tmp_path: Path, standin: Standin,
                                                     bulk: str) -> None:
    service = start(tmp_path, standin, EMAIL_BULK=bulk)
    try:
        post(service, [{
            "topicId": "hello", "subject": "Hi {{name}}",
            "content": "<p>{{name}} · {{{signature}}}</p>{{#if vip}}<p>VIP</p>{{/if}}"
                       "<ul>{{#each orders}}<li>{{this}}</li>{{/each}}</ul>",
            "data": {"signature": "<i>The team</i>"},
            "recipients": [
                {"email": "ann@example.com", "data": {"name": "Ann <3", "vip": True,
                                                       "orders": ["A-1", "A-2"]}},
                {"email": "bob@example.com", "data": {"name": "Bob", "orders": []}}]}])
        assert service.wait_terminal(2, timeout=30) == {SENT: 2}
        sends = {s["to"][0]: s for s in standin.log()["sends"]}
        ann, bob = sends["ann@example.com"], sends["bob@example.com"]
        assert ann["subject"] == "Hi Ann &lt;3" and bob["subject"] == "Hi Bob"
        assert "<p>Ann &lt;3 · <i>The team</i></p><p>VIP</p><ul><li>A-1</li><li>A-2</li></ul>" \
            in ann["html"]
        assert "<p>Bob · <i>The team</i></p><ul></ul>" in bob["html"]
        assert "Ann <3" in ann["text"] and "VIP" not in bob["text"]
    finally:
        service.kill()


def test_personalised_mail_in_the_outbox_reads_the_same(tmp_path: Path) -> None:
    service = Service(tmp_path, {"TRACKING_KEY": KEY, "EMAIL_RATE": "0"}).start()
    try:
        post(service, [{"topicId": "o", "subject": "Hi {{name}}",
                        "content": "<p>Hello {{name}}</p>",
                        "recipients": [{"email": "ann@bücher.de", "data": {"name": "Änne"}}]}])
        service.wait_terminal(1, timeout=30)
        [path] = (tmp_path / "outbox").glob("*.eml")
        with path.open("rb") as f:
            message = email.parser.BytesParser(policy=email.policy.default).parse(f)
        assert message["Subject"] == "Hi Änne"
        assert message["To"] == "ann@xn--bcher-kva.de"
        assert message.get_content_type() == "multipart/alternative" and not message.defects
        assert "<p>Hello Änne</p>" in message.get_body(("html",)).get_content()
        assert "Hello Änne" in message.get_body(("plain",)).get_content()
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    finally:
        service.kill()


@pytest.mark.parametrize("bulk", ["true", "false"])
def test_sender_fields_reach_ses_on_both_paths(tmp_path: Path, standin: Standin,
                                               bulk: str) -> None:
    service = start(tmp_path, standin, EMAIL_BULK=bulk, ALLOWED_SENDERS="@team.example.com",
                    UNSUBSCRIBE_MAILTO="unsubscribe@example.com")
    try:
        post(service, [{
            "topicId": "f", "emails": ["a@example.com", "b@example.com"], "subject": "S",
            "content": "<p>c</p>", "from": "Team Ünd <news@team.example.com>",
            "replyTo": ["help@example.com"], "list": "weekly",
            "headers": {"X-Campaign": "früh", "Precedence": "bulk"},
            "tags": {"campaign": "spring"}, "configurationSet": "events-2"}])
        assert service.wait_terminal(2, timeout=30) == {SENT: 2}
        for send in standin.log()["sends"]:
            assert send["from"].endswith("<news@team.example.com>")
            assert send["from"].startswith("=?utf-8?")
            assert send["reply_to"] == ["help@example.com"]
            assert send["tags"] == {"campaign": "spring"}
            assert send["config_set"] == "events-2"
            headers = {name: value for name, value in send["headers"]}
            rid = int(send["request_id"])
            unsubscribe = tracking.unsubscribe_url(f"http://127.0.0.1:{service.port}", KEY, rid)
            assert headers["List-Unsubscribe"].startswith(f"<{unsubscribe}>, <mailto:"
                                                          "unsubscribe@example.com?subject=")
            assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            assert headers["List-Id"] == "<weekly.team.example.com>"
            assert headers["X-Campaign"] == "=?utf-8?q?fr=C3=BCh?=" or headers[
                "X-Campaign"].startswith("=?utf-8?")
            assert headers["Precedence"] == "bulk"
            assert send["bulk"] == (bulk == "true")
    finally:
        service.kill()


def test_transactional_mail_overtakes_a_bulk_backlog(tmp_path: Path, standin: Standin) -> None:
    standin.configure(max_rate=100)
    service = start(tmp_path, standin, EMAIL_RATE="100")
    try:
        post(service, [{"topicId": "newsletter", "emails": [f"b{i}@example.com"
                                                             for i in range(3000)],
                        "subject": "News", "content": "<p>news</p>"}])
        while service.statuses().get(SENT, 0) < 200:
            time.sleep(0.05)
        posted = time.time()
        post(service, [{"topicId": "reset", "emails": ["urgent@example.com"],
                        "subject": "Your code", "content": "<p>123456</p>",
                        "stream": "transactional"}])
        deadline = time.monotonic() + 10
        arrived = None
        while arrived is None and time.monotonic() < deadline:
            arrived = next((s["t"] for s in standin.log()["sends"]
                            if s["to"] == ["urgent@example.com"]), None)
            time.sleep(0.05)
        assert arrived is not None, "the transactional message never arrived"
        assert arrived - posted < 1.5, arrived - posted
        waiting = service.statuses()
        assert waiting.get(CREATED, 0) + waiting.get(PROCESSING, 0) > 1000  # the backlog
        assert standin.log()["counters"]["throttled"] == 0
    finally:
        service.kill()


def sustained(times: list[float]) -> float:
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0])


def test_the_account_quota_caps_the_rate_and_is_followed_when_it_changes(
        tmp_path: Path, standin: Standin) -> None:
    standin.configure(max_rate=5)  # GetAccount reports the enforced rate as MaxSendRate
    service = start(tmp_path, standin, EMAIL_RATE="14", SES_QUOTA_REFRESH="1")
    try:
        post(service, [{"topicId": "q", "emails": [f"q{i}@example.com" for i in range(30)],
                        "subject": "S", "content": "<p>c</p>"}])
        assert service.wait_terminal(30, timeout=30) == {SENT: 30}
        first = [s["t"] for s in standin.log()["sends"]]
        assert standin.log()["counters"]["throttled"] == 0
        assert sustained(first) >= 0.99 * 5
        standin.configure(max_rate=10)  # raised: picked up within a refresh, no restart
        time.sleep(1.5)
        post(service, [{"topicId": "q2", "emails": [f"r{i}@example.com" for i in range(40)],
                        "subject": "S", "content": "<p>c</p>"}])
        assert service.wait_terminal(70, timeout=30) == {SENT: 70}
        log = standin.log()
        second = [s["t"] for s in log["sends"] if s["to"][0].startswith("r")]
        assert log["counters"]["throttled"] == 0
        assert sustained(second) >= 0.99 * 10
        changes = [e for e in service.log_events() if e.get("event") ==
                   "effective send rate changed"]
        assert [c["rate"] for c in changes] == [5.0, 10.0]
    finally:
        service.kill()
