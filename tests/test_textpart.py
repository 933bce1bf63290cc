"""The text/plain part: visible words only, links with URLs, wrapped, template tokens kept."""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser

from hypothesis import given, settings
from hypothesis import strategies as st

from sesd.templating import parse
from sesd.textpart import html_to_text
from tests.test_links import NEWSLETTER


class VisibleWords(HTMLParser):
    """The words a reader sees, found independently of the converter: text outside <head>,
    <script> and <style>, entities decoded."""

    HIDDEN = frozenset({"head", "script", "style", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.words: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hidden += tag in self.HIDDEN

    def handle_endtag(self, tag: str) -> None:
        self.hidden -= tag in self.HIDDEN

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.words += data.split()


def visible_words(html: str) -> list[str]:
    parser = VisibleWords()
    parser.feed(html)
    parser.close()
    return parser.words


def fits(line: str, width: int) -> bool:
    """Within width, or a single unbreakable word (a template token counts as one)."""
    return len(line) <= width or " " not in re.sub(r"\{\{.*?\}\}\}?", "t", line.strip())


def words_without_urls(text: str) -> list[str]:
    return re.sub(r"\((?:https?|mailto|tel):[^\s)]*\)|\(\{\{\w+\}\}\)", " ", text).split()


def test_newsletter_words_urls_and_no_pixel() -> None:
    text = html_to_text(NEWSLETTER)
    logo = "https://news.example/?utm_source=mail&utm_medium=email"  # an image-only link
    assert words_without_urls(text.replace(logo, "")) == visible_words(NEWSLETTER)
    for url in [
        logo,
        "https://news.example/articles/42?ref=mail&x=1",
        "https://news.example/cta",
        "https://news.example/archive",
        "https://social.example/news",
        "mailto:help@news.example",
    ]:
        assert url in text
    assert "Read more (https://news.example/cta)" in text
    assert "sesdPixel" not in text and "logo.png" not in text
    assert "{{firstName}}" in text and "Unsubscribe ({{unsubscribeUrl}})" in text
    assert "color" not in text  # nothing of <style>


def test_layout_of_headings_paragraphs_and_lists() -> None:
    html = (
        "<h1>Weekly  news</h1><p>First\n paragraph.</p><p>Second.</p>"
        "<ul><li>one</li><li>two</li></ul><ol><li>first</li><li>second</li></ol>"
    )
    assert html_to_text(html) == (
        "Weekly news\n\nFirst paragraph.\n\nSecond.\n\n  * one\n  * two\n 1. first\n 2. second"
    )


def test_layout_tables_read_as_blocks_without_padding() -> None:
    html = '<table width="100%"><tr><td align="center">Hello</td><td>World</td></tr></table>'
    assert html_to_text(html) == "Hello\nWorld"


def test_link_forms() -> None:
    assert html_to_text('<a href="https://x.example/a">Read</a>') == "Read (https://x.example/a)"
    assert (
        html_to_text('<a href="https://x.example/a">https://x.example/a</a>')
        == "https://x.example/a"
    )
    assert html_to_text('<a href="https://x.example/a">x.example/a</a>') == "x.example/a"
    assert (
        html_to_text('<a href="https://x.example/a"><img src="b.png"></a>') == "https://x.example/a"
    )
    assert html_to_text('<a href="#top">Top</a> <a href="/rel">Rel</a>') == "Top Rel"
    assert html_to_text('<a href="mailto:a@x.example">a@x.example</a>') == "a@x.example"


def test_hidden_text_and_images_are_left_out() -> None:
    html = '<div style="display:none">preheader</div><p>Body <img src="p.gif" alt="ALT"></p>'
    assert html_to_text(html) == "Body"


def test_lines_wrap_at_width_without_breaking_words_or_urls() -> None:
    long_url = "https://example.com/" + "segment/" * 12
    html = f"<p>{'lorem ipsum dolor ' * 10}<a href='{long_url}'>link</a> end</p>"
    html += f"<ul><li>{'item ' * 30}</li></ul>"
    text = html_to_text(html, width=40)
    assert all(fits(line, 40) for line in text.split("\n"))
    assert f"({long_url})" in text.split("\n")  # alone on its line, unbroken
    assert [w for w in words_without_urls(text) if w != "*"] == visible_words(html)
    bullet_lines = [line for line in text.split("\n") if "item" in line]
    assert bullet_lines[0].startswith("  * ") and bullet_lines[1].startswith("    item")


def test_template_tokens_come_out_unchanged() -> None:
    html = (
        "<p>Hi {{ firstName }}, {{#if vip}}dear VIP{{else}}friend{{/if}}.</p>"
        "<table>{{#each rows}}<tr><td>{{name}}</td><td>{{{price}}}</td></tr>{{/each}}</table>"
        '<p>{{!-- a comment --}}<a href="{{unsubscribeUrl}}">Unsubscribe</a></p>'
    )
    text = html_to_text(html)
    tokens = re.findall(r"\{\{.*?\}\}\}?", html)
    assert re.findall(r"\{\{.*?\}\}\}?", text) == tokens
    # The loop still holds its row: stray text in a <table> would otherwise move before it.
    template = parse(text)
    assert template.missing({"firstName": "A", "rows": [{"price": 1}], "unsubscribeUrl": "u"}) == (
        "rows[0].name"
    )


def test_a_long_token_is_not_broken() -> None:
    token = "{{#if someVeryLongConditionName}}"
    text = html_to_text(f"<p>{'word ' * 14}{token}yes{{{{/if}}}}</p>", width=30)
    assert token in text
    assert all(fits(line, 30) for line in text.split("\n"))


def test_empty_and_plain_input() -> None:
    assert html_to_text("") == ""
    assert html_to_text("   ") == ""
    assert html_to_text("just text") == "just text"


WORD = st.text(alphabet="abcdefgh&<", min_size=1, max_size=12).map(
    lambda w: w.replace("&", "&amp;").replace("<", "&lt;")
)
LINK_URL = st.sampled_from(["https://a.example/x", "http://b.example/y?z=1&amp;w=2"])


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, list[str]]:
    """(HTML, the words and link URLs a reader should get, in order)."""
    html, expected = [], []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["p", "h2", "li", "td", "a", "img", "script", "token"]))
        words = draw(st.lists(WORD, min_size=1, max_size=8))
        seen = [w.replace("&amp;", "&").replace("&lt;", "<") for w in words]
        if kind == "a":
            url = draw(LINK_URL)
            html.append(f'<p><a href="{url}">{" ".join(words)}</a></p>')
            expected += [*seen[:-1], seen[-1], "(" + url.replace("&amp;", "&") + ")"]
        elif kind == "img":
            html.append('<img src="https://t.example/pixel.png" width="1" height="1">')
        elif kind == "script":
            html.append(f"<script>var a = '{' '.join(words)}';</script>")
        elif kind == "token":
            html.append("<p>{{name}}</p>")
            expected.append("{{name}}")
        elif kind in ("li", "td"):
            wrapper = "ul" if kind == "li" else "table><tr"
            closer = "ul" if kind == "li" else "tr></table"
            html.append(f"<{wrapper}><{kind}>{' '.join(words)}</{kind}></{closer}>")
            expected += ["*", *seen] if kind == "li" else seen
        else:
            html.append(f"<{kind}>{' '.join(words)}</{kind}>")
            expected += seen
    return "".join(html), expected


@given(documents(), st.integers(min_value=20, max_value=100))
@settings(max_examples=200, deadline=None)
def test_generated_documents(document: tuple[str, list[str]], width: int) -> None:
    html, expected = document
    text = html_to_text(html, width=width)
    assert text.split() == expected
    assert all(fits(line, width) for line in text.split("\n"))


def test_entities_are_decoded_once() -> None:
    # inscriptis alone would print `&amp;lt;b&amp;gt;` as `<b>` and `&copy=2` of a URL as `©=2`.
    html = '<p>Write &amp;lt;b&amp;gt; for bold, R&amp;D</p><a href="https://x.example/?a=1&amp;copy=2">x</a>'
    assert (
        html_to_text(html) == "Write &lt;b&gt; for bold, R&D\n\nx (https://x.example/?a=1&copy=2)"
    )


def test_private_use_characters_cannot_pose_as_markers() -> None:
    html = "<p>a\ue000\ue105\ue001b \ue002c\ue003d\ue004 \ue123</p>"
    assert html_to_text(html) == "a\ue105b cd \ue123"  # markers gone, other PUA kept


def test_unparsable_characters_do_not_raise() -> None:
    assert html_to_text("<p>a\x00b\x1f</p>") == "ab"
    assert html_to_text('<?xml version="1.0" encoding="utf-8"?><p>x</p>') == "x"


def test_a_large_newsletter_converts_quickly() -> None:
    story = (
        '<tr><td style="padding:16px;font-family:Arial">'
        "<h2>Story {{@index}}: what changed this week</h2>"
        "<p>Hello {{../firstName}}, here is a short summary of a story that matters, with "
        "enough words to wrap over a few lines of text.</p>"
        '<a href="https://news.example/story?id=1&amp;utm_source=mail">Read the story</a>'
        '<img src="https://img.example/story.jpg" width="600" alt="Story image"></td></tr>\n'
    )
    html = NEWSLETTER.replace(
        "<p class", "<table>{{#each stories}}" + story * 125 + "{{/each}}</table><p class"
    )
    assert 45_000 < len(html) < 55_000
    started = time.process_time()
    text = html_to_text(html)
    # ~45 ms on an idle core (~2 ms for the 2 kB newsletter); CPU time, not wall time.
    assert time.process_time() - started < 0.5
    assert text.count("Read the story (https://news.example/story?id=1&utm_source=mail)") == 125
