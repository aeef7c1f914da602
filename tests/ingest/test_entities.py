"""Ticker tagging from cashtags and the shipped watchlist."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.ingest.entities import EntityTagger, WatchEntity, WatchlistError, load_watchlist, tag_tickers


def test_cashtags_are_tickers_including_class_shares() -> None:
    assert tag_tickers("$AAPL and $BRK.B rallied; $TSLA's slide continued") == ["AAPL", "BRK.B", "TSLA"]


def test_dollar_amounts_and_lower_case_are_not_cashtags() -> None:
    assert tag_tickers("Shares cost $5 and US$12bn changed hands, $aapl said nobody") == []


def test_watchlist_names_and_aliases_become_tickers() -> None:
    text = "Goldman Sachs and J.P. Morgan cut their S&P 500 targets as the Federal Reserve meets"
    assert tag_tickers(text) == ["FED", "GS", "JPM", "SPX"]


def test_multi_word_aliases_match_in_any_case_single_words_do_not() -> None:
    assert tag_tickers("BANK OF ENGLAND holds rates") == ["BOE"]
    # "fed" in lower case is the verb, not the Federal Reserve.
    assert tag_tickers("Investors fed up with volatility") == []


def test_aliases_match_whole_words_only() -> None:
    assert tag_tickers("FedEx results beat estimates") == ["FDX"]
    assert tag_tickers("Metallica tour dates announced") == []
    assert tag_tickers("Intelligence agencies warn") == []


@pytest.mark.parametrize(
    "text",
    [
        "Grandma's Apple pie recipe wins the county fair",
        "How to bake the perfect apple pie",
        "The ECB sees inflation back at target next year",  # "target" the word
        "Target practice at the range",  # no company context
        "Goldman Raises Price Target On Nvidia Shares",  # "Price Target" in title case
        "Deforestation in the Amazon rainforest hits record",
        "A shell company was used to move the funds",
    ],
)
def test_common_words_are_not_companies(text: str) -> None:
    assert not {"AAPL", "TGT", "AMZN", "SHEL"} & set(tag_tickers(text))


@pytest.mark.parametrize(
    ("text", "ticker"),
    [
        ("Apple shares fall after iPhone sales miss forecasts", "AAPL"),
        ("Target cuts its annual outlook as shoppers pull back", "TGT"),
        ("Amazon to invest $10 billion in data centres", "AMZN"),
        ("Shell profit beats estimates on strong LNG trading", "SHEL"),
    ],
)
def test_common_word_aliases_count_in_company_news(text: str, ticker: str) -> None:
    assert ticker in tag_tickers(text)


def test_shipped_watchlist_has_over_a_hundred_entities_of_each_kind() -> None:
    entities = load_watchlist()
    assert len(entities) >= 100
    assert {"company", "index", "central_bank", "commodity"} <= {e.kind for e in entities}
    tickers = [e.ticker for e in entities]
    assert len(tickers) == len(set(tickers))


def test_tagger_built_from_entities_without_a_file() -> None:
    tagger = EntityTagger([WatchEntity(name="Acme Corp", ticker="ACME", aliases=["Acme"])])
    assert tagger.tickers("Acme Corp and acme") == ["ACME"]


def test_bad_watchlist_names_file_and_entry(tmp_path: Path) -> None:
    path = tmp_path / "watch.yaml"
    path.write_text("- {name: Acme}\n")
    with pytest.raises(WatchlistError, match=r"watch\.yaml: entry 0"):
        load_watchlist(path)
