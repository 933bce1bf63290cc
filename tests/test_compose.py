"""The composer, pure: what each recipient's message holds, for every shape of SES call."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sesd import tracking
from sesd.config import Settings
from sesd.messages import TRANSACTIONAL, Content, Job
from sesd.sender.compose import MAX_ENTRY_DATA, PASSTHROUGH, Composer
from sesd.testing.ses_standin import render_template

KEY = tracking.new_key()
HOST = "https://mail.example.com"
NEWSLETTER = ('<html><body><h1>Spring</h1><p>Read <a href="https://example.com/a?x=1&amp;y=2">'
              'the news</a> or <a href="mailto:help@example.com">write</a>.</p>'
              '<p><a href="{{unsubscribeUrl}}">Unsubscribe</a></p></body></html>')


def composer(**changes: object) -> Composer:
    base: dict[str, object] = {"email_sender": "News <news@example.com>",
                               "server_host": HOST, "ses_config_set": "events"}
    base.update(changes)
    return Composer(Settings(**base), KEY)  # type: ignore[arg-type]


def content(html: str = NEWSLETTER, **changes: object) -> Content:
    fields: dict[str, object] = {"topic_id": "t", "subject": "Hello", "html": html,
                                 "text": "Spring. Read the news (https://example.com/a?x=1&y=2)",
                                 "links": ("https://example.com/a?x=1&y=2",)}
    fields.update(changes)
    return Content(**fields)  # type: ignore[arg-type]


def test_bulk_mail_is_tracked_and_carries_one_click_unsubscribe() -> None:
    c = composer(unsubscribe_mailto="unsubscribe@example.com")
    prepared = c.prepare(content())
    email = c.email(prepared, Job(7, "ann@example.com", 1))
    headers = dict(email.headers)
    unsubscribe = tracking.unsubscribe_url(HOST, KEY, 7)
    assert email.headers[0] == ("X-Request-ID", "7")
    assert headers["List-Unsubscribe"] == (
        f"<{unsubscribe}>, <mailto:unsubscribe@example.com?subject=unsubscribe%20"
        f"{tracking.unsubscribe_token(KEY, 7)}>")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Id"] == "<default.example.com>"
    # The http link is a signed click link; mailto and the unsubscribe link are left alone.
    assert f'href="{tracking.click_url(HOST, KEY, 7, 0)}"' in email.html
    assert "example.com/a?x=1" not in email.html
    assert 'href="mailto:help@example.com"' in email.html
    assert f'href="{unsubscribe}"' in email.html
    pixel = tracking.pixel_url(HOST, KEY, 7).replace("&", "&amp;")
    assert f'src="{pixel}"' in email.html and email.html.index(pixel) < email.html.index("</body>")
    assert email.text == "Spring. Read the news (https://example.com/a?x=1&y=2)"
    assert email.envelope.sender == "News <news@example.com>"
    assert email.envelope.config_set == "events"


def test_transactional_mail_has_no_unsubscribe_and_switches_are_honoured() -> None:
    c = composer()
    plain = content(stream=TRANSACTIONAL, track_opens=False, track_clicks=False)
    email = c.email(c.prepare(plain), Job(3, "a@example.com", 1))
    names = [name for name, _ in email.headers]
    assert names == ["X-Request-ID"]
    assert 'href="https://example.com/a?x=1&amp;y=2"' in email.html  # not rewritten
    assert "/v1/events/open" not in email.html
    assert "{{unsubscribeUrl}}" in email.html  # no unsubscribe link in transactional mail


def test_sender_fields_and_headers_are_encoded_for_ses() -> None:
    c = composer()
    options = content(sender="Grüße Team <team@example.com>", reply_to=("r@example.com",),
                      headers=(("X-Campaign", "Frühling"),), tags=(("kind", "news"),),
                      config_set="override")
    prepared = c.prepare(options)
    assert prepared.envelope.sender.startswith("=?utf-8?")
    assert prepared.envelope.sender.endswith(" <team@example.com>")
    assert prepared.envelope.reply_to == ("r@example.com",)
    assert prepared.envelope.config_set == "override"
    assert prepared.identity == "team@example.com"
    email = c.email(prepared, Job(1, "a@example.com", 1))
    assert ("X-Campaign", "=?utf-8?b?RnLDvGhsaW5n?=") in email.headers
    assert all(value.isascii() for _, value in email.headers)
    assert dict(email.headers)["List-Id"] == "<default.example.com>"
    assert email.tags == (("kind", "news"),)


def test_templates_are_rendered_per_recipient_with_defaults_and_escaping() -> None:
    c = composer()
    tpl = content(subject="Hi {{name}}", template=True, data='{"team": "Sesd", "name": "you"}',
                  html='<p>{{name}} &amp; {{{raw}}} from {{team}}</p>'
                       '{{#each items}}<a href="https://shop.example/{{this}}">{{this}}</a>'
                       '{{/each}}<a href="{{unsubscribeUrl}}">out</a>',
                  text="Hi {{{name}}}, {{#each items}}{{{this}}} {{/each}}{{{unsubscribeUrl}}}",
                  links=())
    prepared = c.prepare(tpl)
    job = Job(9, "a@example.com", 1, json.dumps({"name": "<Ann>", "raw": "<b>x</b>",
                                                  "items": ["a", "b"]}))
    subject, html, text = c.render(prepared, job, c.urls(prepared, 9))
    assert subject == "Hi &lt;Ann&gt;"
    assert "<p>&lt;Ann&gt; &amp; <b>x</b> from Sesd</p>" in html
    assert 'href="https://shop.example/a">a</a><a href="https://shop.example/b">b</a>' in html
    unsubscribe = tracking.unsubscribe_url(HOST, KEY, 9)
    assert f'href="{unsubscribe}"' in html
    assert text == f"Hi <Ann>, a b {unsubscribe}"
    # A template never goes as a shared SES template: SES takes simple substitutions only.
    assert prepared.shared is None


def test_shared_template_filled_by_ses_equals_the_composed_message() -> None:
    """The shared shape (SES fills the URLs in) and the single shape give the same message."""
    c = composer()
    prepared = c.prepare(content())
    assert prepared.shared is not None
    job = Job(11, "b@example.com", 1)
    entry = c.shared_entry(prepared, job)
    data = json.loads(entry.data)
    filled = render_template(prepared.shared.html, data)
    email = c.email(prepared, job)
    assert filled == email.html
    assert render_template(prepared.shared.text, data) == email.text
    assert entry.headers == email.headers


def test_content_with_braces_is_not_shared_but_passes_through_verbatim() -> None:
    c = composer()
    odd = content(html="<p>{{name}} and }}} and {{{x}}} stay</p>", links=())
    prepared = c.prepare(odd)
    assert prepared.shared is None
    entry = c.passthrough_entry(prepared, Job(4, "a@example.com", 1))
    assert entry is not None
    data = json.loads(entry.data)
    assert render_template(PASSTHROUGH.html, data).startswith(
        "<p>{{name}} and }}} and {{{x}}} stay</p>")
    assert render_template(PASSTHROUGH.subject, data) == "Hello"


def test_a_message_larger_than_an_entry_takes_send_email() -> None:
    c = composer()
    big = content(html="<p>" + "x" * MAX_ENTRY_DATA + "</p>", links=())
    assert c.passthrough_entry(c.prepare(big), Job(1, "a@example.com", 1)) is None


@given(st.text(alphabet=st.characters(blacklist_characters="\ufdd0\ufdd1",
                                       blacklist_categories=("Cs",)), max_size=300))
def test_passthrough_keeps_any_content_byte_for_byte(body: str) -> None:
    c = composer()
    prepared = c.prepare(content(html=body, links=(), track_opens=False, text=body))
    entry = c.passthrough_entry(prepared, Job(1, "a@example.com", 1))
    assert entry is not None
    data = json.loads(entry.data)
    unsubscribe = tracking.unsubscribe_url(HOST, KEY, 1)
    expected = re.sub(r"\{\{\{?\s*unsubscribeUrl\s*\}?\}\}", lambda m: unsubscribe, body)
    assert render_template(PASSTHROUGH.html, data) == expected
    assert render_template(PASSTHROUGH.text, data) == expected


@pytest.mark.parametrize("sender", ["", "plain@example.com"])
def test_the_envelope_falls_back_to_the_service_sender(sender: str) -> None:
    c = composer(email_sender=sender, ses_config_set="")
    envelope = c.prepare(content()).envelope
    assert envelope.sender == (sender or "sesd@localhost")
    assert envelope.config_set == ""
