"""POST /v1/messages with the options beyond the Go API: streams, lists, sender fields, headers,
tags, recipients with data and templates, tracking switches, the text part. Every refusal is a
400 that names the place, and stores nothing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sesd.messages import Content
from sesd.store import BULK_PRIORITY, TRANSACTIONAL_PRIORITY
from tests.api.helpers import EMPTY, Env, MakeEnv, assert_error, msg


@pytest.fixture
async def env(make_env: MakeEnv) -> Env:
    return await make_env(email_sender="News <news@example.com>",
                          allowed_senders=frozenset({"news@example.com", "@team.example.com"}))


def stored(env: Env) -> tuple[Content, list[tuple[str, int, str | None]]]:
    """The one stored message's options and its requests (email, priority, data)."""
    [(topic, subject, html, text, options)] = env.rows(
        "SELECT topic_id, subject, html, text, options FROM contents")
    content = Content.from_stored(topic, subject, html, text,
                                  orjson.loads(options) if options else None)
    rows = env.rows("SELECT email, priority, data FROM requests ORDER BY id")
    return content, [(r[0], r[1], r[2]) for r in rows]


async def test_every_option_is_stored_with_the_content(env: Env) -> None:
    resp = await env.post([msg(
        stream="transactional", list="receipts", **{"from": "Billing <billing@team.example.com>"},
        replyTo="help@example.com", headers={"X-Campaign": "spring", "Precedence": "bulk"},
        tags={"kind": "receipt"}, configurationSet="events-2", trackOpens=False,
        trackClicks=True, text="Thanks!",
        content='<p>Paid. <a href="https://shop.example/o?id=1&amp;x=2">Order</a></p>')])
    assert resp.status == 200, await resp.text()
    content, requests = stored(env)
    assert content.stream == "transactional" and content.list_id == "receipts"
    assert content.sender == "Billing <billing@team.example.com>"
    assert content.reply_to == ("help@example.com",)
    assert content.headers == (("X-Campaign", "spring"), ("Precedence", "bulk"))
    assert content.tags == (("kind", "receipt"),) and content.config_set == "events-2"
    assert (content.track_opens, content.track_clicks) == (False, True)
    assert content.text == "Thanks!"
    assert content.links == ("https://shop.example/o?id=1&x=2",)
    assert requests == [("a@example.com", TRANSACTIONAL_PRIORITY, None)]


async def test_defaults_are_bulk_default_list_and_a_generated_text_part(env: Env) -> None:
    html = '<h1>News</h1><p>Read <a href="https://example.com/n">more</a></p><img src="p.png">'
    assert (await env.post([msg(content=html)])).status == 200
    content, requests = stored(env)
    assert (content.stream, content.list_id, content.sender) == ("bulk", "default", "")
    assert content.text is not None and "News" in content.text
    assert "more (https://example.com/n)" in content.text
    assert content.links == ("https://example.com/n",)
    assert requests[0][1] == BULK_PRIORITY


REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "stream": ({"stream": "marketing"}, "messages[0].stream"),
    "list-chars": ({"list": "no spaces"}, "messages[0].list"),
    "list-long": ({"list": "x" * 65}, "messages[0].list"),
    "list-all": ({"list": "All"}, 'must not be "all"'),
    "from-not-allowed": ({"from": "ceo@example.com"}, "is not an allowed sender"),
    "from-other-domain": ({"from": "a@other.example.com"}, "is not an allowed sender"),
    "from-garbage": ({"from": "not an address"}, "messages[0].from"),
    "from-crlf": ({"from": "a@team.example.com\r\nBcc: x@example.com"}, "messages[0].from"),
    "reply-to-bad": ({"replyTo": ["ok@example.com", "nope"]}, "messages[0].replyTo[1]"),
    "reply-to-many": ({"replyTo": [f"r{i}@example.com" for i in range(11)]},
                      "messages[0].replyTo"),
    "header-reserved": ({"headers": {"Subject": "x"}}, "is set by sesd"),
    "header-reserved-case": ({"headers": {"x-request-id": "1"}}, "is set by sesd"),
    "header-content": ({"headers": {"Content-Type": "text/plain"}}, "is set by sesd"),
    "header-list-unsub": ({"headers": {"List-Unsubscribe-Post": "x"}}, "is set by sesd"),
    "header-crlf": ({"headers": {"X-A": "1\r\nBcc: x@example.com"}}, "line breaks"),
    "header-name": ({"headers": {"X A": "1"}}, "header name"),
    "header-colon": ({"headers": {"X:A": "1"}}, "header name"),
    "header-long": ({"headers": {"X-A": "y" * 871}}, "longer than 870"),
    "header-many": ({"headers": {f"X-{i}": "1" for i in range(11)}}, "at most 10"),
    "tag-chars": ({"tags": {"kind": "a b"}}, "SES tag names"),
    "tag-name": ({"tags": {"k!": "v"}}, "SES tag names"),
    "tag-empty": ({"tags": {"k": ""}}, "SES tag names"),
    "config-set": ({"configurationSet": "a b"}, "configurationSet"),
    "track": ({"trackClicks": "yes"}, "trackClicks"),
    "text-empty": ({"text": "  "}, "messages[0].text"),
    "noncharacter": ({"content": "<p>\ufdd0</p>"}, "noncharacters"),
    "template-broken": ({"template": True, "content": "<p>{{#if x}}never closed</p>"},
                        "messages[0].content is not a valid template"),
    "template-subject": ({"template": True, "subject": "Hi {{name"},
                         "messages[0].subject is not a valid template"),
    "missing-variable": ({"data": {"team": "x"}, "content": "<p>{{name}} from {{team}}</p>"},
                         'recipient "a@example.com" has no data for {{name}}'),
    "data-not-object": ({"data": ["x"]}, "messages[0].data must be an object"),
    "recipients-bad": ({"emails": None, "recipients": [{"mail": "a@example.com"}]},
                       "messages[0].recipients[0]"),
    "recipient-data": ({"emails": None, "recipients": [{"email": "a@example.com", "data": 5}]},
                       "messages[0].recipients[0].data must be an object"),
    "recipient-address": ({"emails": None, "recipients": [{"email": "zoë@example.com"}]},
                          "messages[0].recipients[0].email"),
    "data-oversized": ({"emails": None, "recipients": [
        {"email": "a@example.com", "data": {"blob": "x" * 262_144}}]}, "at most 262,144"),
}


@pytest.mark.parametrize("case", REFUSED)
async def test_refused_options_answer_400_naming_the_field_and_store_nothing(
        env: Env, case: str) -> None:
    overrides, expected = REFUSED[case]
    fields = {**overrides}
    first = msg(topicId="ok")  # a valid message first: all or nothing
    bad = msg(**fields)
    if fields.get("emails", ...) is None:
        bad.pop("emails")
    resp = await env.post([first, bad] if "messages[0]" not in expected else [bad])
    body = await assert_error(resp, 400, "POST", "/v1/messages")
    assert expected in body["error"], body["error"]
    assert env.counts() == EMPTY


async def test_missing_data_is_named_for_the_recipient_that_lacks_it(env: Env) -> None:
    resp = await env.post([msg(topicId="first"), msg(
        emails=None, content="<p>Hi {{name}}</p>", recipients=[
            {"email": "ann@example.com", "data": {"name": "Ann"}},
            {"email": "bob@example.com", "data": {"nom": "Bob"}}])])
    body = await assert_error(resp, 400, "POST", "/v1/messages")
    assert body["error"].startswith('messages[1]: recipient "bob@example.com" has no data for '
                                    "{{name}} in its content")
    assert env.counts() == EMPTY


async def test_recipients_with_data_and_message_defaults(env: Env) -> None:
    resp = await env.post([{
        "topicId": "t", "subject": "Hi {{name}}", "content": "<p>{{greeting}}, {{name}}</p>",
        "data": {"greeting": "Hello"}, "emails": ["zed@example.com"],
        "recipients": [{"email": "Ann@Example.COM", "data": {"name": "Ann"}},
                       {"email": "bob@example.com", "data": {"name": "Bob", "greeting": "Hey"}},
                       {"email": "ann@example.com", "data": {"name": "second spelling"}}]}])
    # zed has no name: every recipient must render, so this is refused...
    body = await assert_error(resp, 400, "POST", "/v1/messages")
    assert "zed@example.com" in body["error"]
    resp = await env.post([{
        "topicId": "t", "subject": "Hi {{name}}", "content": "<p>{{greeting}}, {{name}}</p>",
        "data": {"greeting": "Hello", "name": "friend"}, "emails": ["zed@example.com"],
        "recipients": [{"email": "Ann@Example.COM", "data": {"name": "Ann"}},
                       {"email": "bob@example.com", "data": {"name": "Bob", "greeting": "Hey"}},
                       {"email": "ann@example.com", "data": {"name": "second spelling"}}]}])
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["count"] == 3  # one mailbox once: the first spelling wins
    content, requests = stored(env)
    assert content.template and orjson.loads(content.data or "{}") == {
        "greeting": "Hello", "name": "friend"}
    assert [(e, orjson.loads(d) if d else None) for e, _, d in requests] == [
        ("zed@example.com", None), ("Ann@example.com", {"name": "Ann"}),
        ("bob@example.com", {"name": "Bob", "greeting": "Hey"})]
    # The text part of a template is a template too, its outputs raw.
    assert content.text is not None and "{{{greeting}}}" in content.text


async def test_unsubscribe_url_is_a_variable_of_bulk_templates_only(env: Env) -> None:
    template = {"template": True, "content": '<a href="{{unsubscribeUrl}}">unsubscribe</a>'}
    assert (await env.post([msg(**template)])).status == 200
    resp = await env.post([msg(stream="transactional", **template)])
    body = await assert_error(resp, 400, "POST", "/v1/messages")
    assert "{{unsubscribeUrl}}" in body["error"]


async def test_a_go_client_message_is_unchanged(env: Env) -> None:
    """The original API's fields alone: content verbatim (braces and all), no template."""
    html = "<p>{{not a template}} }}}</p>"
    assert (await env.post([msg(content=html, unknownField=1)])).status == 200
    content, _ = stored(env)
    assert content.html == html and not content.template and content.links == ()
