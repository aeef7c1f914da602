"""Canonical URLs, clean text, UTC dates and language detection."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from pipeline.ingest.normalise import (
    LANGUAGE_SAMPLE_CHARS,
    canonical_url,
    clean_text,
    detect_language,
    fix_mojibake,
    to_utc,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "HTTPS://WWW.Reuters.COM/markets/?utm_source=rss&utm_medium=feed#top",
            "https://www.reuters.com/markets/",
        ),
        ("http://example.com:80/a?b=2&a=1&fbclid=xyz", "http://example.com/a?a=1&b=2"),
        ("https://example.com:443", "https://example.com/"),
        ("https://example.com:8443/x?gclid=1&id=7", "https://example.com:8443/x?id=7"),
        (
            "https://www.ecb.europa.eu//press/pr/date/2026/html/x.en.html",
            "https://www.ecb.europa.eu/press/pr/date/2026/html/x.en.html",
        ),
        ("https://example.com/p?q=a+b&empty=", "https://example.com/p?empty=&q=a+b"),
        ("  https://Example.com./path  ", "https://example.com/path"),
    ],
)
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


def test_canonical_url_makes_tracking_variants_equal() -> None:
    a = canonical_url("https://www.cnbc.com/2019/07/29/story.html?__source=sharebar|twitter&par=sharebar")
    b = canonical_url(
        "https://www.cnbc.com/2019/07/29/story.html?par=sharebar&__source=sharebar|twitter#comments"
    )
    assert a == b


def test_clean_text_strips_html_and_unescapes_entities() -> None:
    html = "<p>Fed <b>holds</b> rates&nbsp;steady &amp; signals&#8230;</p><script>track()</script><p>cuts</p>"
    assert clean_text(html) == "Fed holds rates steady & signals… cuts"


def test_clean_text_handles_double_escaped_markup_and_comments() -> None:
    assert clean_text("&lt;a href=&quot;x&quot;&gt;Buy&lt;/a&gt; now <!-- ad -->") == "Buy now"
    assert clean_text("AT&amp;amp;T beats") == "AT&T beats"


def test_clean_text_leaves_plain_text_alone_apart_from_whitespace() -> None:
    assert clean_text("  S&P 500 <  4,000 \n\t as yields rise ") == "S&P 500 < 4,000 as yields rise"


def test_fix_mojibake_repairs_utf8_read_as_latin1_and_keeps_real_text() -> None:
    assert fix_mojibake("Income gaps are growing inexorablyâ€”arenâ€™t they?") == (
        "Income gaps are growing inexorably—aren’t they?"
    )
    assert fix_mojibake("Société Générale") == "Société Générale"
    assert fix_mojibake("Ã©conomie") == "économie"


def test_detect_language() -> None:
    assert detect_language("The central bank raised interest rates by a quarter point on Wednesday.") == "en"
    assert detect_language("Die Europäische Zentralbank hat die Leitzinsen erneut angehoben.") == "de"
    assert detect_language("中国支持的瑞典电动汽车制造商表示，该公司正准备将生产转移到美国工厂。") == "zh"
    assert detect_language("Q3") is None
    assert detect_language("") is None


def test_detect_language_reads_the_opening_only() -> None:
    english = "The central bank raised interest rates by a quarter point on Wednesday. " * 3
    german = "Die Europäische Zentralbank hat die Leitzinsen erneut angehoben. " * 40
    assert len(english) >= LANGUAGE_SAMPLE_CHARS
    assert detect_language(english + german) == "en"  # the German tail is ten times longer
    assert detect_language(german[:LANGUAGE_SAMPLE_CHARS] + english * 10) == "de"
    assert detect_language("12345 " * 100 + english) is None  # the opening holds no letters


def test_to_utc_accepts_the_shapes_feeds_use() -> None:
    expected = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)
    assert to_utc("Tue, 03 Mar 2026 09:00:00 -0500") == expected
    assert to_utc("2026-03-03T15:00:00+01:00") == expected
    assert to_utc("2026-03-03T14:00:00Z") == expected
    assert to_utc(time.strptime("2026-03-03 14:00:00", "%Y-%m-%d %H:%M:%S")) == expected
    assert to_utc(datetime(2026, 3, 3, 14, 0)) == expected  # naive → taken as UTC
    assert to_utc(datetime(2026, 3, 3, 16, 0, tzinfo=timezone(timedelta(hours=2)))) == expected
    assert to_utc(expected.timestamp()) == expected
    assert to_utc(date(2026, 3, 3)) == datetime(2026, 3, 3, tzinfo=UTC)


@pytest.mark.parametrize("value", [None, "", "not a date", "yesterday-ish", object(), True])
def test_to_utc_returns_none_for_unparsable(value: object) -> None:
    assert to_utc(value) is None
