"""Every recorded real-world feed in ``$FINSENT_DATA_DIR/feeds``: good ones give their items, broken ones
a clear error or warning, and none of them stops a run.

The expected counts were checked by reading each file (items/entries counted with xml.etree for the
well-formed ones, ``<item>`` tags for the repr-corrupted one).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.ingest.fetch import fetch_all
from pipeline.ingest.normalise import MOJIBAKE
from pipeline.ingest.parse import FeedError, ParsedFeed, parse_feed
from pipeline.ingest.sources import Source
from tests.fixtures.http_server import FaultyFeedServer
from tests.shared_data import shared_data_dir

FETCHED_AT = datetime(2026, 11, 1, tzinfo=UTC)

# file -> (items, entries without a usable date, dominant language)
WELL_FORMED = {
    "boc_mpr_rss-cb_2026-08-15.rdf.xml": (3, 0, "en"),
    "cnbc_finance_2019-07-24.xml": (30, 0, "en"),
    "cnbc_finance_2019-07-29.xml": (30, 0, "en"),
    "ecb_press_2026-10-05.xml": (15, 0, "en"),
    "fed_press_monetary_excerpt_2026-09.xml": (5, 0, "en"),
    "fed_speeches_excerpt_2026-10.xml": (6, 0, "en"),
    "forbes_news_newsisfree_rss091_2008-08-13.xml": (10, 10, "en"),  # RSS 0.91 items carry no dates
    "reuters_business_zh_regenerated_2024-04-24.xml": (30, 0, "zh"),
    "reuters_direct_via_gnews_2026-08-22.xml": (500, 0, "en"),
    "sec_edgar_getcurrent_all_2025-12-12.atom.xml": (100, 0, None),  # "4 - Name (CIK)": no language
    "sec_edgar_getcurrent_form4.atom.xml": (100, 0, None),
    "wsj_world_news_2021-09-18.xml": (6, 0, "en"),
}
# file -> what must be said about it (FeedError message, or warning with the recovered item count)
BROKEN_ERRORS = {
    "marketwatch_pf_document_moved.rss": "got an HTML page, not a feed (title: 'Document Moved')",
    "reuters_most_read_2020-03-21_invalid.xml": "not well-formed and no items could be recovered",
}
BROKEN_WARNINGS = {
    "reuters_investigations_empty_channel.xml": (0, "feed has no items"),
    "economist_finance_economics_2023-11_repr_mojibake.xml": (100, "Python string repr"),
}


def feeds_dir() -> Path:
    return shared_data_dir("feeds")


def parse_file(path: Path) -> ParsedFeed:
    return parse_feed(
        path.read_bytes(),
        source_name=path.stem,
        url=f"https://recorded.example/{path.name}",
        fetched_at=FETCHED_AT,
    )


def test_every_shared_feed_is_known_to_this_test() -> None:
    names = {p.name for p in feeds_dir().iterdir() if p.is_file()}
    assert names == set(WELL_FORMED) | set(BROKEN_ERRORS) | set(BROKEN_WARNINGS)


@pytest.mark.parametrize("name", sorted(WELL_FORMED))
def test_well_formed_feed_gives_all_its_items(name: str) -> None:
    items, undated, language = WELL_FORMED[name]
    feed = parse_file(feeds_dir() / name)
    assert len(feed.entries) == items and feed.invalid == [] and feed.warning is None
    assert sum(e.date_missing for e in feed.entries) == undated
    for entry in feed.entries:
        assert entry.title and entry.canonical_url and entry.canonical_url.startswith("http")
        assert entry.published_at.tzinfo is not None and entry.published_at.utcoffset().total_seconds() == 0
        assert "<" not in entry.title and not MOJIBAKE.search(entry.title + entry.summary)
    languages = [e.language for e in feed.entries]
    assert max(set(languages), key=languages.count) == language


@pytest.mark.parametrize("name", sorted(BROKEN_ERRORS))
def test_broken_feed_is_a_clear_feed_error(name: str) -> None:
    with pytest.raises(FeedError) as raised:
        parse_file(feeds_dir() / name)
    message = str(raised.value)
    assert BROKEN_ERRORS[name] in message
    assert message.startswith(f"{Path(name).stem}: https://recorded.example/{name}: ")


@pytest.mark.parametrize("name", sorted(BROKEN_WARNINGS))
def test_damaged_or_empty_feed_gives_a_warning(name: str) -> None:
    items, warning = BROKEN_WARNINGS[name]
    feed = parse_file(feeds_dir() / name)
    assert len(feed.entries) == items
    assert feed.warning is not None and warning in feed.warning


def test_repaired_economist_feed_has_clean_text() -> None:
    feed = parse_file(feeds_dir() / "economist_finance_economics_2023-11_repr_mojibake.xml")
    first = feed.entries[0]
    assert first.title == "Why economists are at war over inequality"
    assert first.summary == "Income gaps are growing inexorably—aren’t they?"
    assert not any(MOJIBAKE.search(e.title + e.summary) or "\\n" in e.summary for e in feed.entries)


def test_all_shared_feeds_served_and_fetched_in_one_run(fetch_settings: Settings) -> None:
    """Fetch every file from a loopback server in one fetch_all, then parse: bad ones never stop the run."""
    directory = feeds_dir()
    with FaultyFeedServer() as server:
        sources = [
            Source(name=p.stem, url=server.add(f"/{p.name}", p.read_bytes(), content_type="application/xml"))
            for p in sorted(directory.iterdir())
        ]
        results = asyncio.run(
            fetch_all(sources, {}, fetch_settings.model_copy(update={"max_body_bytes": 2**21}))
        )
    assert all(r.status == "ok" for r in results)
    counts: dict[str, int] = {}
    errors: dict[str, str] = {}
    for result in results:
        name = result.url.rsplit("/", 1)[1]
        try:
            feed = parse_feed(
                result.body,
                source_name=result.source.name,
                url=result.url,
                fetched_at=FETCHED_AT,
                content_type=result.content_type,
            )
        except FeedError as exc:
            errors[name] = str(exc)
            continue
        counts[name] = len(feed.entries)
    assert set(errors) == set(BROKEN_ERRORS)
    expected = {n: v[0] for n, v in WELL_FORMED.items()} | {n: v[0] for n, v in BROKEN_WARNINGS.items()}
    assert counts == expected
