"""The shipped feed list and the sources file format."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pipeline.config import DEFAULT_SOURCES
from pipeline.ingest.sources import SourcesError, load_sources


def test_shipped_sources_are_forty_or_more_real_financial_feeds() -> None:
    sources = load_sources(DEFAULT_SOURCES)
    assert len(sources) >= 40
    hosts = {urlsplit(s.url).hostname for s in sources}
    # Central banks, regulators, SEC EDGAR, exchanges and business news are all represented.
    for host in (
        "www.federalreserve.gov",
        "www.ecb.europa.eu",
        "www.bankofengland.co.uk",
        "www.bankofcanada.ca",
        "www.boj.or.jp",
        "www.sec.gov",
        "www.cftc.gov",
        "www.fca.org.uk",
        "www.nasdaq.com",
    ):
        assert host in hosts, host
    assert any("finra" in (h or "") for h in hosts)
    assert any("action=getcurrent" in s.url and "output=atom" in s.url for s in sources)
    assert all(s.url.startswith(("https://", "http://")) and s.tags for s in sources)
    assert any(s.fulltext for s in sources)


def test_shipped_sources_have_unique_names_and_urls() -> None:
    sources = load_sources(DEFAULT_SOURCES)
    assert len({s.name for s in sources}) == len(sources)
    assert len({s.url for s in sources}) == len(sources)


def test_a_plain_list_without_the_sources_key_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("- {name: mine, url: 'https://example.com/rss', fulltext: true}\n")
    (source,) = load_sources(path)
    assert (source.name, source.tags, source.fulltext) == ("mine", [], True)


def test_duplicate_names_are_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("- {name: a, url: 'https://a.example/rss'}\n- {name: a, url: 'https://b.example/rss'}\n")
    with pytest.raises(SourcesError, match=r"dup\.yaml: entry 2: duplicate source name 'a'"):
        load_sources(path)


def test_a_missing_field_is_named_with_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text("- {name: ok, url: 'https://a.example/rss'}\n- {name: nourl, tags: [x]}\n")
    with pytest.raises(SourcesError) as caught:
        load_sources(path)
    assert str(caught.value) == f"{path}: entry 2 (nourl): field 'url': Field required"
