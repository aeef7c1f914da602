"""The fast RSS 2.0 reader gives exactly feedparser's result, and hands feedparser what it cannot promise."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.ingest.fastrss import read_plain_rss
from pipeline.ingest.parse import ParsedFeed, _to_feedparser_bytes, decode_feed, parse_feed
from tests.shared_data import shared_data_dir

FETCHED_AT = datetime(2026, 11, 1, tzinfo=UTC)
NAMESPACES = (
    'xmlns:atom="http://www.w3.org/2005/Atom" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:media="http://search.yahoo.com/mrss/" '
    'xmlns:metadata="http://www.w3.org/Metadata"'
)


def rss(
    items: str, channel: str = "<title>Desk</title><link>https://news.example/</link>", root: str = ""
) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0" {NAMESPACES}{root}><channel>{channel}'
        f"{items}</channel></rss>"
    ).encode()


def both(body: bytes) -> tuple[ParsedFeed, ParsedFeed]:
    kwargs = {"source_name": "desk", "url": "https://news.example/feed", "fetched_at": FETCHED_AT}
    return parse_feed(body, fast=True, **kwargs), parse_feed(body, fast=False, **kwargs)


# Documents the fast reader takes: each corner below is one where feedparser transforms the text.
TAKEN = {
    "escaped and double-escaped markup": "<item><title>Stocks &lt;b&gt;rally&lt;/b&gt; &amp;amp; more</title>"
    "<link>https://news.example/a</link><description>&amp;lt;p&amp;gt;S&amp;amp;P up&amp;lt;/p&amp;gt;"
    "</description></item>",
    "CDATA HTML": "<item><title><![CDATA[Fed <i>holds</i>]]></title><link>https://news.example/b</link>"
    '<description><![CDATA[<p>Rates <a href="/x">unchanged</a>.</p>]]></description></item>',
    "query link with &amp;": "<item><title>Q</title><link>https://news.example/c?a=1&amp;amp;b=2&amp;c;</link></item>",
    "permalink guid, no link": "<item><title>G</title><guid>https://news.example/g</guid></item>"
    "<item><title>G2</title><guid>http:///news.example/slashed-guid</guid></item>",
    "guid not a permalink": '<item><title>N</title><guid isPermaLink="false">id-1</guid></item>',
    "guid before link": "<item><title>O</title><guid>https://news.example/guid</guid>"
    "<link>https://news.example/link</link></item>",
    "content only": "<item><title>C</title><link>https://news.example/d</link>"
    "<content:encoded><![CDATA[<p>Body text here.</p>]]></content:encoded></item>",
    "content before description": "<item><title>D</title><link>https://news.example/e</link>"
    "<content:encoded>full text</content:encoded><description>short text</description></item>",
    "empty description and content": "<item><title>E</title><link>https://news.example/f</link>"
    "<description></description><content:encoded>the content</content:encoded></item>",
    "UTF-8 read as Latin-1, C1 quotes": "<item><title>CafÃ© \u0093quoted\u0094</title>"
    "<link>https://news.example/h</link></item>",
    "dates of every kind": "".join(
        f"<item><title>T{i}</title><link>https://news.example/t{i}</link><pubDate>{d}</pubDate></item>"
        for i, d in enumerate(
            ["Mon, 30 Nov 2026 11:02:01 +0530", "2026-11-29T10:00:00Z", "2026-W48", "someday", ""]
        )
    ),
    "padding and newlines": "<item><title>\n   Padded   title \n</title>"
    "<link>\n https://news.example/p \n</link><guid>\n p-1 \n</guid></item>",
    "relative and slashed links": "<item><title>R</title><link>/relative/path</link></item>"
    "<item><title>S</title><link>http:///news.example/slashes</link></item>",
    "unknown namespace, dc:creator, media:content": "<item><title>M</title><link>https://news.example/m</link>"
    '<metadata:id>123</metadata:id><dc:creator>Desk</dc:creator><media:content url="https://i.example/1.jpg"/>'
    "<category>Markets</category><author>a@news.example</author></item>",
    "neither title nor link": "<item><description>orphan</description></item>",
}
# Documents it hands to feedparser: the result must still be the same, through feedparser.
DECLINED = {
    "dc:date": "<item><title>A</title><link>https://news.example/a</link><dc:date>2026-11-01</dc:date></item>",
    "media:description": "<item><title>B</title><link>https://news.example/b</link>"
    "<media:description>other summary</media:description></item>",
    "nested media title": "<item><title>B</title><link>https://news.example/b</link>"
    '<media:content url="https://i.example/1.jpg"><media:title>x</media:title></media:content></item>',
    "markup nested in a field": "<item><title>C</title><link>https://news.example/c</link>"
    "<description><p>unescaped</p></description></item>",
    "two titles": "<item><title>D</title><title>E</title><link>https://news.example/d</link></item>",
    "empty link and a guid": "<item><title>F</title><guid>https://news.example/g</guid><link></link></item>",
    "a differently cased field": "<item><title>G</title><Link>https://news.example/g</Link></item>",
    "an unusual field": "<item><title>H</title><link>https://news.example/h</link><summary>s</summary></item>",
    "a typed description": '<item><title>I</title><description type="text/plain">x &lt;b&gt;</description>'
    "</item>",
}


@pytest.mark.parametrize("name", sorted(TAKEN))
def test_fast_reader_gives_feedparsers_result(name: str) -> None:
    body = rss(TAKEN[name])
    assert read_plain_rss(body) is not None, "the fast reader should take this document"
    fast, slow = both(body)
    assert fast == slow


@pytest.mark.parametrize("name", sorted(DECLINED))
def test_fast_reader_hands_feedparser_what_it_cannot_promise(name: str) -> None:
    body = rss(DECLINED[name])
    assert read_plain_rss(body) is None
    fast, slow = both(body)
    assert fast == slow


@pytest.mark.parametrize(
    ("channel", "root", "taken"),
    [
        (
            '<title>T</title><atom:link rel="self" href="https://news.example/feed"/><language>de</language>',
            "",
            True,
        ),
        ('<title>T</title><atom:link href="https://news.example/alt"/>', "", False),
        ("<title>T</title><dc:language>fr</dc:language>", "", False),
        ("<title>T</title><link>https://news.example/</link>", ' xml:lang="fr"', False),
        (
            "<title>T</title><link>https://news.example/base/</link>",
            ' xml:base="https://other.example/"',
            False,
        ),
    ],
)
def test_channel_fields_match_or_go_to_feedparser(channel: str, root: str, taken: bool) -> None:
    body = rss("<item><title>Shares rise</title><link>rel/a</link></item>", channel, root)
    assert (read_plain_rss(body) is not None) is taken
    fast, slow = both(body)
    assert fast == slow


def test_other_formats_go_to_feedparser() -> None:
    rss091 = (
        b'<?xml version="1.0"?><rss version="0.91"><channel><item><title>x</title></item></channel></rss>'
    )
    atom = b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>T</title></feed>'
    broken = rss("<item><title>cut off")
    assert read_plain_rss(rss091) is None and read_plain_rss(atom) is None and read_plain_rss(broken) is None


def test_every_recorded_rss2_feed_reads_the_same_either_way() -> None:
    taken = 0
    for path in sorted(shared_data_dir("feeds").iterdir()):
        if not path.name.endswith((".xml", ".rss")):
            continue
        try:
            fast, slow = both(path.read_bytes())
        except ValueError:
            continue  # the broken ones: test_shared_feeds checks their errors
        assert fast == slow, path.name
        taken += read_plain_rss(_to_feedparser_bytes(decode_feed(path.read_bytes(), None)[0])) is not None
    assert taken >= 8  # CNBC, WSJ, the Fed, the ECB, Reuters: the well-formed RSS 2.0 files
