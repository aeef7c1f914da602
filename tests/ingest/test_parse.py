"""Parsing feed bytes of every common flavour into normalised entries, and refusing what is not a feed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.ingest.parse import FeedError, decode_feed, parse_feed

FETCHED_AT = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def parse(body: bytes, content_type: str | None = None):
    return parse_feed(
        body,
        source_name="test-source",
        url="https://news.example/feed",
        fetched_at=FETCHED_AT,
        content_type=content_type,
    )


RSS20 = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Markets &amp; Money</title><link>https://news.example/</link>
<language>en-us</language>
<item><title>Stocks &lt;b&gt;rally&lt;/b&gt; as inflation cools</title>
  <link>https://news.example/a?utm_source=rss#x</link><guid isPermaLink="false">id-a</guid>
  <description><![CDATA[<p>The S&amp;P 500 rose <a href="/x">1.2%</a> on Tuesday.</p>]]></description>
  <pubDate>Tue, 03 Mar 2026 09:00:00 -0500</pubDate></item>
<item><title>No date here, but a relative link</title><link>/b</link></item>
<item><description>neither title nor link</description></item>
<item><title>Bad date</title><link>https://news.example/c</link><pubDate>someday soon</pubDate></item>
</channel></rss>
"""


def test_rss20_entries_are_normalised() -> None:
    feed = parse(RSS20)
    assert feed.feed_title == "Markets & Money" and feed.warning is None
    assert [e.title for e in feed.entries] == [
        "Stocks rally as inflation cools",
        "No date here, but a relative link",
        "Bad date",
    ]
    first = feed.entries[0]
    assert first.guid == "id-a"
    assert first.url == "https://news.example/a?utm_source=rss#x"
    assert first.canonical_url == "https://news.example/a"
    assert first.summary == "The S&P 500 rose 1.2% on Tuesday."
    assert first.published_at == datetime(2026, 3, 3, 14, 0, tzinfo=UTC) and not first.date_missing
    assert first.language == "en"


def test_missing_or_unparsable_date_falls_back_to_fetch_time_and_is_flagged() -> None:
    feed = parse(RSS20)
    undated, bad_date = feed.entries[1], feed.entries[2]
    for entry in (undated, bad_date):
        assert entry.published_at == FETCHED_AT and entry.date_missing
        assert entry.published_at.tzinfo is not None


def test_relative_links_are_resolved_against_the_feed() -> None:
    assert parse(RSS20).entries[1].canonical_url == "https://news.example/b"


def test_entry_with_neither_title_nor_link_is_invalid_with_a_reason() -> None:
    feed = parse(RSS20)
    assert feed.invalid == [(2, "entry has neither a title nor a link")]


ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Filings</title><id>urn:x</id>
<updated>2026-03-03T10:00:00Z</updated>
<entry><title type="html">8-K &amp;amp; exhibits</title><id>urn:filing:1</id>
<link rel="alternate" href="https://sec.example/f/1"/><updated>2026-03-03T10:00:00-05:00</updated>
<summary type="html">&lt;b&gt;Filed:&lt;/b&gt; 2026-03-03</summary></entry>
</feed>"""

RDF = b"""<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
 xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel rdf:about="https://bank.example/feed"><title>Rates</title><link>https://bank.example/</link>
<description>d</description><items><rdf:Seq><rdf:li rdf:resource="https://bank.example/r1"/></rdf:Seq></items>
</channel>
<item rdf:about="https://bank.example/r1"><title>Rate decision</title><link>https://bank.example/r1</link>
<dc:date>2026-03-03T15:00:00+01:00</dc:date><description>Policy rate unchanged.</description></item>
</rdf:RDF>"""

RSS091 = b"""<?xml version="1.0"?><rss version="0.91"><channel><title>Old</title>
<link>http://old.example/</link><description>d</description>
<item><title>Legacy headline</title><link>http://old.example/1</link><description>text</description></item>
</channel></rss>"""


@pytest.mark.parametrize(
    ("body", "title", "url", "published"),
    [
        (ATOM, "8-K & exhibits", "https://sec.example/f/1", datetime(2026, 3, 3, 15, 0, tzinfo=UTC)),
        (RDF, "Rate decision", "https://bank.example/r1", datetime(2026, 3, 3, 14, 0, tzinfo=UTC)),
        (RSS091, "Legacy headline", "http://old.example/1", FETCHED_AT),
    ],
    ids=["atom", "rdf", "rss091"],
)
def test_other_feed_formats(body: bytes, title: str, url: str, published: datetime) -> None:
    (entry,) = parse(body).entries
    assert entry.title == title and entry.url == url and entry.published_at == published
    assert entry.date_missing == (published == FETCHED_AT)


def test_atom_html_summary_is_stripped() -> None:
    assert parse(ATOM).entries[0].summary == "Filed: 2026-03-03"


def test_html_page_instead_of_a_feed_is_a_feed_error_naming_source_and_url() -> None:
    page = b"<!DOCTYPE html><html><head><title>Document Moved</title></head><body>Moved</body></html>"
    with pytest.raises(
        FeedError, match=r"test-source: https://news.example/feed: got an HTML page.*Document Moved"
    ):
        parse(page, content_type="text/html; charset=utf-8")


@pytest.mark.parametrize("body", [b"", b"   \n", b"just some text, not xml", b'{"items": []}'])
def test_empty_or_non_xml_body_is_a_feed_error(body: bytes) -> None:
    with pytest.raises(FeedError, match="test-source"):
        parse(body)


def test_feed_truncated_before_its_items_is_a_feed_error() -> None:
    with pytest.raises(FeedError, match="not well-formed and no items could be recovered"):
        parse(b'<?xml version="1.0"?><rss version="2.0"><channel><title>Most read</title><link>https://x')


def test_feed_truncated_inside_an_item_keeps_what_was_read_and_warns() -> None:
    feed = parse(
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>x</title><item><title>Cut off</title><link>https://news.example/1'
    )
    assert [e.title for e in feed.entries] == ["Cut off"]
    assert feed.warning and "not well-formed" in feed.warning


def test_broken_feed_with_recoverable_items_warns() -> None:
    body = RSS20.replace(b"</channel></rss>", b"<item><title>unclosed & broken</title></channel></rss>")
    feed = parse(body)
    assert len(feed.entries) >= 3
    assert feed.warning and "not well-formed" in feed.warning


def test_feed_without_items_warns() -> None:
    feed = parse(b'<?xml version="1.0"?><rss version="2.0"><channel><title>Empty</title></channel></rss>')
    assert feed.entries == [] and feed.warning == "feed has no items"


UTF8_FEED = """<?xml version="1.0" encoding="ISO-8859-1"?>
<rss version="2.0"><channel><title>Börse</title><link>https://boerse.example/</link>
<item><title>Zentralbank erhöht Zinsen — Märkte fallen</title><link>https://boerse.example/1</link>
<description>Die Europäische Zentralbank hat die Leitzinsen überraschend angehoben.</description></item>
</channel></rss>
"""


def test_utf8_body_declared_as_latin1_is_read_as_utf8_with_a_warning() -> None:
    feed = parse(UTF8_FEED.encode("utf-8"), content_type="application/rss+xml; charset=iso-8859-1")
    (entry,) = feed.entries
    assert entry.title == "Zentralbank erhöht Zinsen — Märkte fallen"
    assert entry.language == "de"
    assert feed.warning and "UTF-8" in feed.warning


def test_latin1_body_declared_as_utf8_falls_back_to_its_real_encoding() -> None:
    body = UTF8_FEED.replace("ISO-8859-1", "utf-8").replace(" — ", " - ").encode("latin-1")
    feed = parse(body, content_type="application/rss+xml; charset=utf-8")
    assert feed.entries[0].title == "Zentralbank erhöht Zinsen - Märkte fallen"


def test_correctly_declared_latin1_is_decoded_without_warning() -> None:
    body = UTF8_FEED.replace(" — ", " - ").encode("latin-1")
    feed = parse(body, content_type="text/xml")
    assert feed.entries[0].title == "Zentralbank erhöht Zinsen - Märkte fallen" and feed.warning is None


def test_decode_feed_honours_a_byte_order_mark() -> None:
    text, warning = decode_feed("\ufeff<rss/>".encode("utf-16"), "application/xml; charset=latin-1")
    assert text.lstrip("\ufeff") == "<rss/>" and warning is None


def test_utf16_feed_without_a_byte_order_mark_is_decoded() -> None:
    body = UTF8_FEED.replace("ISO-8859-1", "UTF-16").encode("utf-16-le")
    assert parse(body).entries[0].title == "Zentralbank erhöht Zinsen — Märkte fallen"


def test_mojibake_in_titles_is_repaired() -> None:
    body = RSS20.replace(b"Bad date", "Bad date â€” arenâ€™t they".encode())
    assert parse(body).entries[2].title == "Bad date — aren’t they"


def test_python_repr_wrapped_feed_is_unwrapped() -> None:
    inner = RSS20.decode().replace("\n", "\\n\n").replace("Bad date", "Bad date\\xe2\\x80\\x94really")
    feed = parse(("'" + inner + "'").encode())
    assert [e.title for e in feed.entries][-1] == "Bad date—really"
    assert feed.warning and "repr" in feed.warning
