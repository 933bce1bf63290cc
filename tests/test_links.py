"""Click-tracking links: which hrefs are tracked, and that a rewrite touches nothing else."""

from __future__ import annotations

from html import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sesd.links import links, rewrite


def placeholder(index: int, url: str) -> str:
    return f"{{{{{{sesdClick{index}}}}}}}"


def test_query_strings_are_read_unescaped_and_written_escaped() -> None:
    html = '<a href="https://shop.example/p?id=7&amp;utm_source=mail">Buy</a>'
    assert links(html) == ["https://shop.example/p?id=7&utm_source=mail"]
    out = rewrite(html, lambda i, url: f"https://t.example/c?to={url}")
    assert (
        out
        == '<a href="https://t.example/c?to=https://shop.example/p?id=7&amp;utm_source=mail">Buy</a>'
    )


def test_identity_rewrite_keeps_amp_entities_intact() -> None:
    html = "<a href='https://x.example/?a=1&amp;b=2&amp;c=%20'>x</a>"
    assert (
        rewrite(html, lambda i, url: url)
        == '<a href="https://x.example/?a=1&amp;b=2&amp;c=%20">x</a>'
    )


def test_placeholders_keep_their_braces() -> None:
    html = '<p><a href="https://a.example">a</a> <a href="https://b.example">b</a></p>'
    assert rewrite(html, placeholder) == (
        '<p><a href="{{{sesdClick0}}}">a</a> <a href="{{{sesdClick1}}}">b</a></p>'
    )


@pytest.mark.parametrize(
    ("tag", "url"),
    [
        ('<a href="https://q.example/x">', "https://q.example/x"),
        ("<a href='https://q.example/x'>", "https://q.example/x"),
        ("<a href=https://q.example/x?a=b>", "https://q.example/x?a=b"),
        ('<A HREF="HTTP://Q.example/X">', "HTTP://Q.example/X"),
        ('<a href = "  https://q.example/x \n">', "https://q.example/x"),
        (
            '<a id="h" class="btn" style="color:red" href="https://q.example/x" target="_blank">',
            "https://q.example/x",
        ),
        (
            '<area shape="rect" coords="0,0,9,9" href="https://q.example/map">',
            "https://q.example/map",
        ),
        ('<a href="https://q.example/x"/>', "https://q.example/x"),
        ('<a title="a > b" href="https://q.example/x">', "https://q.example/x"),
    ],
)
def test_tracked_forms(tag: str, url: str) -> None:
    html = f"<p>{tag}text</a></p>"
    assert links(html) == [url]
    out = rewrite(html, placeholder)
    assert out.count("{{{sesdClick0}}}") == 1
    start = tag.lower().index("href")
    assert out.startswith("<p>" + tag[:start])  # everything before the attribute unchanged
    assert out.endswith("text</a></p>")


@pytest.mark.parametrize(
    "html",
    [
        '<a href="mailto:news@example.com">mail</a>',
        '<a href="tel:+4712345678">call</a>',
        '<a href="#top">top</a>',
        '<a href="/relative/page">rel</a>',
        '<a href="page.html">rel</a>',
        '<a href="//example.com/no-scheme">proto-relative</a>',
        '<a href="https://">no host</a>',
        '<a href="javascript:alert(1)">js</a>',
        '<a href="ftp://files.example/x">ftp</a>',
        '<a href="{{unsubscribeUrl}}">unsubscribe</a>',
        '<a href="https://x.example/u?id={{id}}">templated</a>',
        "<a href>empty</a>",
        '<a name="anchor">no href</a>',
        '<!-- <a href="https://comment.example">x</a> -->',
        '<!--[if mso]><a href="https://mso.example">x</a><![endif]-->',
        "<script>document.write('<a href=\"https://script.example\">')</script>",
        '<style>/* <a href="https://style.example"> */</style>',
        '<link rel="stylesheet" href="https://fonts.example/css">',
        '<img src="https://img.example/pixel.png" alt="">',
        '<a href="http://[::1">bad ipv6</a>',
    ],
)
def test_untracked_links_are_left_alone(html: str) -> None:
    assert links(html) == []
    assert rewrite(html, placeholder) == html


def test_skip_by_url_or_predicate() -> None:
    html = '<a href="https://x.example/unsub?t=1">u</a><a href="https://x.example/read">r</a>'
    assert links(html, skip={"https://x.example/unsub?t=1"}) == ["https://x.example/read"]
    predicate = rewrite(html, placeholder, skip=lambda url: "/unsub" in url)
    assert (
        predicate == '<a href="https://x.example/unsub?t=1">u</a><a href="{{{sesdClick0}}}">r</a>'
    )


def test_repeated_links_share_their_number() -> None:
    html = '<a href="https://a.example">1</a><a href="https://b.example">2</a><a href="https://a.example">3</a>'
    assert links(html) == ["https://a.example", "https://b.example"]
    seen: list[tuple[int, str]] = []
    rewrite(html, lambda i, url: seen.append((i, url)) or "x")
    assert seen == [(0, "https://a.example"), (1, "https://b.example"), (0, "https://a.example")]


def test_first_href_wins_as_in_browsers() -> None:
    html = '<a href="https://first.example" href="https://second.example">x</a>'
    assert links(html) == ["https://first.example"]


@pytest.mark.parametrize(
    ("html", "found"),
    [
        ('<a href="https://x.example', []),  # cut off inside the value
        ("<a href=", []),
        ("<<<>>><a <a href='https://x.example'", []),
        ('<!DOCTYPE html><html><body><a href="https://x.example">x</a', ["https://x.example"]),
        ("<![CDATA[ <a href='https://x.example'> ]]>", []),
        ('</a></a><a href="https://ok.example">ok</a><p', ["https://ok.example"]),
        ("\x00\ufffd<a href='https://ok.example'>", ["https://ok.example"]),
        ("<a href='https://ok.example'><!-- unclosed", ["https://ok.example"]),
    ],
)
def test_malformed_html_never_raises(html: str, found: list[str]) -> None:
    assert links(html) == found
    out = rewrite(html, placeholder)
    for url in found:
        html = html.replace(f"'{url}'", '"{{{sesdClick0}}}"').replace(
            f'"{url}"', '"{{{sesdClick0}}}"'
        )
    assert out == html


NEWSLETTER = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Weekly news</title>
<style>a { color: #0a66c2; } .cta a:hover { color: red; }</style>
<!--[if mso]><style>td { font-family: Arial; }</style><![endif]-->
</head>
<body style="margin:0">
<table role="presentation" width="100%"><tr><td align="center">
  <a href="https://news.example/?utm_source=mail&amp;utm_medium=email"
     ><img src="https://news.example/logo.png" alt="News"></a>
  <h1>Hello {{firstName}}</h1>
  <p>Our <a href="https://news.example/articles/42?ref=mail&amp;x=1" class="inline"
     >top story</a> this week.</p>
  <div class="cta"><!--[if mso]><v:roundrect href="https://news.example/cta"><![endif]-->
    <a href='https://news.example/cta' style="background:#0a66c2;color:#fff">Read more</a>
  <!--[if mso]></v:roundrect><![endif]--></div>
  <p>Questions? <a href="mailto:help@news.example">Write to us</a>
     or <a href="tel:+4700000000">call</a>.</p>
  <p><a href="{{accountUrl}}">Your account</a> · <a href=https://news.example/archive>Archive</a></p>
  <p class="social"><a href="https://social.example/news">Follow</a>
     <a href="#top">Back to top</a></p>
  <p style="font-size:11px"><a href="{{unsubscribeUrl}}">Unsubscribe</a></p>
  <img src="{{sesdPixel}}" width="1" height="1" alt="">
</td></tr></table>
</body></html>
"""


def test_a_realistic_newsletter() -> None:
    assert links(NEWSLETTER) == [
        "https://news.example/?utm_source=mail&utm_medium=email",
        "https://news.example/articles/42?ref=mail&x=1",
        "https://news.example/cta",
        "https://news.example/archive",
        "https://social.example/news",
    ]
    out = rewrite(NEWSLETTER, placeholder)
    for i in range(5):
        assert out.count(f'href="{{{{{{sesdClick{i}}}}}}}"') == 1
    for kept in [
        "mailto:help@news.example",
        "tel:+4700000000",
        "{{accountUrl}}",
        "{{unsubscribeUrl}}",
        "#top",
    ]:
        assert f'href="{kept}"' in out
    assert '<v:roundrect href="https://news.example/cta">' in out  # inside a conditional comment
    assert out.count("\n") == NEWSLETTER.count("\n")


# --- byte-identical outside the rewritten values, over generated documents ---------------------

URL = st.builds(
    lambda scheme, host, query: f"{scheme}://{host}.example/p{query}",
    st.sampled_from(["http", "https", "HTTPS"]),
    st.sampled_from(["a", "b", "shop"]),
    st.sampled_from(["", "?x=1", "?x=1&y=2", "?q=a b", "#frag"]),
)


@st.composite
def tracked_tag(draw: st.DrawFn) -> tuple[str, str, str, str]:
    """(text before the value, the value as written, text after, the URL it means)."""
    url = draw(URL)
    name = draw(st.sampled_from(["a", "A", "area"]))
    attr = draw(st.sampled_from(["href", "HREF", "Href"]))
    before = draw(st.sampled_from(["", ' class="x"', " id=y", " title='a>b'"]))
    after = draw(st.sampled_from(["", ' target="_blank"', " data-x=1", " /"]))
    space = draw(st.sampled_from(["", " ", "  "]))
    style = draw(st.sampled_from(['"', "'", ""] if " " not in url else ['"', "'"]))
    written = escape(url, quote=False) if draw(st.booleans()) else url
    if style == "'":
        written = written.replace("'", "&#x27;")
    pad = draw(st.sampled_from(["", " ", "\n"])) if style else ""
    value = f"{style}{pad}{written}{pad}{style}"
    return f"<{name}{before} {attr}{space}={space}", value, f"{after}>", url


UNTRACKED = st.sampled_from(
    [
        "plain text ",
        "<p>para</p>",
        '<a href="mailto:x@example.com">m</a>',
        '<a href="/rel">r</a>',
        '<a href="#top">t</a>',
        '<a href="{{url}}">v</a>',
        '<!-- <a href="https://c.example">c</a> -->',
        "<script>x = \"<a href='https://s.example'>\";</script>",
        '<style>.a{background:url("https://st.example/x.png")}</style>',
        '<img src="https://i.example/x.png">',
        "&amp; &lt;b&gt; ",
        "\n",
        "</a>",
    ]
)


@given(st.lists(st.one_of(UNTRACKED, tracked_tag()), max_size=12))
@settings(max_examples=400)
def test_rewrite_changes_only_tracked_values(parts: list[str | tuple[str, str, str, str]]) -> None:
    html = expected = ""
    urls: list[str] = []
    for part in parts:
        if isinstance(part, str):
            html += part
            expected += part
            continue
        head, value, tail, url = part
        if url not in urls:
            urls.append(url)
        html += head + value + tail
        expected += head + '"' + escape(f"<{urls.index(url)}|{url}>") + '"' + tail
    assert links(html) == urls
    assert rewrite(html, lambda i, url: f"<{i}|{url}>") == expected


HOSTILE = st.sampled_from([*"<>a href='\"=/!-x: \n", "https://h.example", "<!--", "-->", "<a "])


@given(st.lists(HOSTILE, max_size=40).map("".join))
@settings(max_examples=400)
def test_hostile_markup_never_raises_and_round_trips(html: str) -> None:
    found = links(html)
    assert rewrite(html, lambda i, url: url) is not None
    # Rewriting every link to its own URL finds the same links again.
    assert links(rewrite(html, lambda i, url: url)) == found
