"""Black-box: the recipients' routes through `python run.py` and the SES stand-in.

Every link is taken from the mail as SES received it (the stand-in records headers and the
rendered HTML), so what is tested is what a reader's mail client would follow: the
List-Unsubscribe header of each recipient on both sending paths, its page and one-click POST,
and the click links of the HTML.
"""

from __future__ import annotations

import http.client
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sesd import tracking
from sesd.testing.harness import Service, Standin

pytestmark = pytest.mark.slow

ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NEWSLETTER = ('<html><body><p>News for you. <a href="https://shop.example/p?id=7&amp;ref=news">'
              'Shop</a> <a href="https://example.com/about">About</a> '
              '<a href="mailto:help@example.com">Help</a></p>'
              '<p><a href="{{unsubscribeUrl}}">Unsubscribe</a></p></body></html>')
SHOP, ABOUT = "https://shop.example/p?id=7&ref=news", "https://example.com/about"


@pytest.fixture
def standin() -> Iterator[Standin]:
    stand = Standin()
    yield stand
    stand.close()


def start(tmp_path: Path, standin: Standin, bulk: bool) -> Service:
    return Service(tmp_path, {**standin.env(), "EMAIL_RATE": "0",
                              "EMAIL_BULK": "true" if bulk else "false"}).start()


def message(topic: str, emails: list[str], **fields: Any) -> dict[str, Any]:
    return {"topicId": topic, "emails": emails, "subject": "Hello", "content": NEWSLETTER,
            **fields}


def post(service: Service, *messages: dict[str, Any]) -> int:
    status, answer = service.request("POST", "/v1/messages", {"messages": list(messages)})
    assert status == 200, answer
    return int(answer["count"])


def raw(service: Service, method: str, url: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One call that follows no redirect: (status, headers, body)."""
    parts = urllib.parse.urlsplit(url)
    assert parts.port == service.port, url
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body,
                     headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def header(send: dict[str, Any], name: str) -> str | None:
    values = [v for n, v in send["headers"] if n.lower() == name.lower()]
    assert len(values) <= 1, send["headers"]
    return values[0] if values else None


def recorded(service: Service) -> dict[str, Any]:
    return {"suppressions": service.query("SELECT key, scope, reason FROM suppressions "
                                          "ORDER BY 1, 2"),
            "results": service.query("SELECT request_id, status FROM results ORDER BY id")}


def tracking_key(service: Service) -> str:
    return str(service.query("SELECT value FROM settings WHERE key = 'tracking_key'")[0][0])


def altered(url: str) -> str:
    return url[:-1] + ("A" if url[-1] != "A" else "B")


@pytest.mark.parametrize("bulk", [True, False], ids=["SendBulkEmail", "SendEmail"])
def test_one_click_unsubscribe_from_the_mail_itself(tmp_path: Path, standin: Standin,
                                                    bulk: bool) -> None:
    service = start(tmp_path, standin, bulk)
    try:
        readers = ["ann@example.com", "bob@example.com", "cy@example.com"]
        assert post(service, message("news-1", readers, list="news"),
                    message("receipt", ["ann@example.com"], stream="transactional",
                            content="<p>Your receipt</p>")) == 4
        service.wait_terminal(4, timeout=30)
        sends = standin.log()["sends"]
        assert {s["bulk"] for s in sends} == ({True, False} if bulk else {False})
        by_request = {int(s["request_id"]): s for s in sends}
        key = tracking_key(service)
        ids = dict(service.query("SELECT email, id FROM requests WHERE topic_id = 'news-1'"))
        urls = {}
        for email, rid in ids.items():
            send = by_request[rid]
            assert send["to"] == [email]
            target = header(send, "List-Unsubscribe")
            assert target is not None and target.startswith(f"<{service.url}/v1/unsubscribe/")
            url = target[1:-1]
            token = url.rsplit("/", 1)[1]
            assert tracking.read_unsubscribe_token(key, token) == rid  # this recipient's own
            assert header(send, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
            assert header(send, "List-Id") == "<news.example.com>"
            assert f'href="{url}"' in send["html"]  # the visible link beside the header
            urls[email] = url
        receipt = next(s for s in sends if s["subject"] == "Hello" and s["to"] ==
                       ["ann@example.com"] and int(s["request_id"]) not in ids.values())
        assert header(receipt, "List-Unsubscribe") is None and header(receipt, "List-Id") is None

        # Scanners and previews fetch the link: the page changes nothing.
        before = recorded(service)
        for _ in range(3):
            status, headers, body = raw(service, "GET", urls["ann@example.com"])
            assert status == 200 and headers["Cache-Control"] == "no-store"
            assert b"a***@example.com" in body and b"<strong>news</strong>" in body
        assert recorded(service) == before

        # A forged or altered token: 404, on the page and the POST, nothing recorded.
        for forged in (altered(urls["ann@example.com"]),
                       urls["ann@example.com"].replace(f"/{ids['ann@example.com']}.",
                                                       f"/{ids['bob@example.com']}.")):
            for method in ("GET", "POST"):
                status, _, body = raw(service, method, forged, ONE_CLICK, FORM)
                assert status == 404, (method, forged, body)
        assert recorded(service) == before

        # The one-click POST, as Gmail sends it: that address, that list, once.
        for _ in range(2):
            status, _, body = raw(service, "POST", urls["ann@example.com"], ONE_CLICK, FORM)
            assert status == 200 and b"You are unsubscribed" in body
        assert recorded(service) == {
            "suppressions": [("ann@example.com", "news", "unsubscribe")],
            "results": [(ids["ann@example.com"], "Unsubscribe")]}

        # Later: a bulk send to that list is stopped; transactional and another list are sent.
        standin.reset()
        assert post(service, message("news-2", ["ann@example.com", "bob@example.com"],
                                     list="news"),
                    message("offers", ["ann@example.com"], list="offers"),
                    message("reset", ["ann@example.com"], stream="transactional")) == 4
        service.wait_terminal(8, timeout=30)
        outcome = service.query("SELECT topic_id, email, status, error FROM requests "
                                "WHERE id > ? ORDER BY id", (max(ids.values()) + 1,))
        assert outcome == [
            ("news-2", "ann@example.com", 4, "suppressed: unsubscribe (list news)"),
            ("news-2", "bob@example.com", 2, None),
            ("offers", "ann@example.com", 2, None),
            ("reset", "ann@example.com", 2, None)]
        assert sorted(tuple(s["to"]) for s in standin.log()["sends"]) == [
            ("ann@example.com",), ("ann@example.com",), ("bob@example.com",)]
        status, stats = service.request("GET", "/v1/topics/news-1")
        assert stats["result"]["statuses"] == {"Unsubscribe": 1}
    finally:
        service.close()


def test_click_links_redirect_to_the_original_and_are_counted(tmp_path: Path,
                                                              standin: Standin) -> None:
    service = start(tmp_path, standin, bulk=True)
    try:
        assert post(service, message("news", ["ann@example.com", "bob@example.com"]),
                    message("plain", ["cy@example.com"], trackClicks=False)) == 3
        service.wait_terminal(3, timeout=30)
        sends = {s["to"][0]: s for s in standin.log()["sends"]}
        unsubscribe = re.escape(f"{service.url}/v1/unsubscribe/")
        links: dict[str, list[str]] = {}
        for email in ("ann@example.com", "bob@example.com"):
            hrefs = re.findall(r'href="([^"]*)"', sends[email]["html"])
            # No original http(s) link is left, but the unsubscribe link and mailto.
            originals = [h for h in hrefs if h.startswith("http")
                         and not h.startswith(f"{service.url}/v1/events/click/")
                         and not re.match(unsubscribe, h)]
            assert originals == [], hrefs
            assert "mailto:help@example.com" in hrefs
            links[email] = [h for h in hrefs if h.startswith(f"{service.url}/v1/events/click/")]
            assert len(links[email]) == 2
        assert links["ann@example.com"] != links["bob@example.com"]  # signed per recipient
        # trackClicks: false keeps the links as they were.
        assert 'href="https://shop.example/p?id=7&amp;ref=news"' in sends["cy@example.com"][
            "html"]
        assert "/v1/events/click/" not in sends["cy@example.com"]["html"]

        # The redirect goes to the URL as the reader's client reads it (&amp; decoded).
        for email, index, target in [("ann@example.com", 0, SHOP), ("ann@example.com", 0, SHOP),
                                     ("ann@example.com", 1, ABOUT), ("bob@example.com", 0, SHOP)]:
            status, headers, _ = raw(service, "GET", links[email][index],
                                     headers={"User-Agent": "MailClient/2.0"})
            assert status == 302 and headers["Location"] == target
            assert headers["Cache-Control"] == "no-store"
        # A forged click token redirects nowhere and records nothing.
        before = service.query("SELECT COUNT(*) FROM results")
        base, _, token = links["ann@example.com"][0].rpartition("/")
        ident, number, mac = token.split(".")
        for forged in (altered(links["ann@example.com"][0]),
                       f"{base}/{ident}.{int(number) + 1}.{mac}"):  # the MAC of another link
            status, headers, body = raw(service, "GET", forged)
            assert status == 404 and "Location" not in headers, body
        assert service.query("SELECT COUNT(*) FROM results") == before
        status, stats = service.request("GET", "/v1/topics/news")
        assert status == 200
        assert stats["result"] == {"statuses": {"Click": 2}, "clicks": {SHOP: 2, ABOUT: 1}}
        assert service.query("SELECT DISTINCT user_agent FROM results") == [("MailClient/2.0",)]
    finally:
        service.close()
