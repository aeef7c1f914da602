"""Exact and near-duplicate detection (pure functions, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from datasketch import LeanMinHash, MinHashLSH

from pipeline.ingest import dedup
from pipeline.ingest.dedup import NUM_PERM, STORY_THRESHOLD, BandIndex

T0 = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)

ORIGINAL = (
    "Fed holds rates steady, signals two cuts later this year",
    "The Federal Reserve kept its benchmark rate in a range of 4.25% to 4.5% on Wednesday and "
    "policymakers pencilled in two quarter-point cuts before the end of the year, citing cooling inflation.",
)
SYNDICATED = (
    "Fed holds rates steady and signals two cuts later this year - Reuters",
    "The Federal Reserve kept its benchmark rate in a range of 4.25% to 4.5% on Wednesday, and "
    "policymakers pencilled in two quarter-point cuts before the end of the year citing cooling inflation.",
)
OTHER_STORY = (
    "Oil jumps 3% as OPEC+ extends output cuts into next year",
    "Brent crude rose above $84 a barrel after the producer group agreed to keep supply curbs in place "
    "through March, tightening a market already short of barrels.",
)
SAME_TOPIC_OTHER_STORY = (
    "ECB holds rates steady as euro zone inflation eases",
    "The European Central Bank left its deposit rate at 4% on Thursday, with President Lagarde saying "
    "it was too early to discuss cuts despite slowing price growth across the bloc.",
)


def _keys(
    title: str, summary: str = "", url: str | None = None, guid: str | None = None, when: datetime = T0
) -> dedup.EntryKeys:
    return dedup.EntryKeys(
        canonical_url=url,
        guid=guid,
        title_hash=dedup.title_hash(title),
        content_hash=dedup.content_hash(title, summary),
        distinctive_title=dedup.title_is_distinctive(title),
        published_at=when,
    )


def test_title_normalisation_ignores_case_punctuation_and_credit() -> None:
    assert dedup.normalise_title("Fed Holds Rates Steady, Signals Cuts - Reuters") == (
        dedup.normalise_title("fed holds rates steady signals cuts")
    )
    credited = dedup.title_hash("Apple’s profit rises | Financial Times")
    assert credited == dedup.title_hash("Apple's profit rises")
    assert dedup.title_hash("Fed holds rates") != dedup.title_hash("Fed cuts rates")


def test_short_generic_headline_keeps_its_credit() -> None:
    assert dedup.normalise_title("Statement - FOMC") == "statement fomc"


def test_syndicated_copy_is_near_duplicate_of_original() -> None:
    a, b = dedup.signature(*ORIGINAL), dedup.signature(*SYNDICATED)
    assert a is not None and b is not None
    assert dedup.similarity(a, b) >= dedup.STORY_THRESHOLD


def test_different_stories_on_the_same_topic_are_not_near_duplicates() -> None:
    a, b = dedup.signature(*ORIGINAL), dedup.signature(*SAME_TOPIC_OTHER_STORY)
    assert a is not None and b is not None
    assert dedup.similarity(a, b) < 0.2


def test_story_index_gives_syndicated_copies_the_first_articles_story() -> None:
    index = dedup.StoryIndex()
    index.add(101, 101, dedup.signature(*ORIGINAL))
    index.add(102, 102, dedup.signature(*OTHER_STORY))
    assert index.find_story(dedup.signature(*SYNDICATED)) == 101
    assert index.find_story(dedup.signature(*SAME_TOPIC_OTHER_STORY)) is None


def test_story_index_prefers_the_earliest_story_when_several_match() -> None:
    index = dedup.StoryIndex()
    index.add(7, 7, dedup.signature(*ORIGINAL))
    # A later copy that was (wrongly) left in its own story still points new copies to the earliest.
    index.add(9, 9, dedup.signature(*SYNDICATED))
    assert index.find_story(dedup.signature(*SYNDICATED)) == 7


def test_same_headline_in_another_source_joins_the_story_within_the_window() -> None:
    index = dedup.StoryIndex()
    key = dedup.title_hash(ORIGINAL[0])
    index.add(5, 5, None, title_key=key, published_at=T0)
    assert index.find_story(None, title_key=key, published_at=T0 + timedelta(hours=3)) == 5
    assert index.find_story(None, title_key=key, published_at=T0 + timedelta(days=10)) is None


def test_too_short_text_gets_no_signature() -> None:
    assert dedup.signature("H.4.1", "Factors affecting reserves") is None


def test_exact_duplicates_by_url_guid_title_and_content() -> None:
    taken = dedup.BatchKeys()
    entries = [
        (0, _keys(*ORIGINAL, url="https://a.example/1", guid="g1")),
        (1, _keys("Another headline entirely about bonds", url="https://a.example/1", guid="g2")),  # url
        (2, _keys("A third headline about currency markets", url="https://a.example/3", guid="g1")),  # guid
        (3, _keys(*ORIGINAL, url="https://a.example/4", guid="g4", when=T0 + timedelta(hours=1))),  # title
        (4, _keys("Untitled", "same body")),
        (5, _keys("Untitled", "same body")),  # no url, no guid: content
        (6, _keys(*ORIGINAL, url="https://a.example/7", guid="g7", when=T0 + timedelta(days=7))),
    ]
    new, dups = dedup.split_duplicates(1, entries, taken)
    assert new == [0, 4, 6]
    assert dups == {1: "canonical url", 2: "guid", 3: "title and summary", 5: "content"}


def test_templated_headlines_with_different_summaries_are_not_duplicates() -> None:
    taken = dedup.BatchKeys()
    filings = [
        (
            i,
            _keys(
                "4 - CARVANA CO. (0001690820) (Issuer)",
                f"Filed: 2025-12-12 AccNo: 0001690820-25-00{i}",
                url=f"https://sec.example/{i}",
                guid=f"acc-{i}",
            ),
        )
        for i in range(3)
    ]
    new, dups = dedup.split_duplicates(1, filings, taken)
    assert (new, dups) == ([0, 1, 2], {})


def test_guid_and_title_are_per_source_but_url_is_global() -> None:
    taken = dedup.BatchKeys()
    dedup.split_duplicates(1, [(0, _keys(*ORIGINAL, url="https://a.example/1", guid="g1"))], taken)
    new, dups = dedup.split_duplicates(
        2,
        [
            (0, _keys(*ORIGINAL, url="https://b.example/1", guid="g1")),
            (1, _keys("Different headline for the same link", url="https://a.example/1", guid="x")),
        ],
        taken,
    )
    assert new == [0]
    assert dups == {1: "canonical url"}


def test_discarded_article_is_no_longer_a_story() -> None:
    index = dedup.StoryIndex()
    key = dedup.title_hash(ORIGINAL[0])
    index.add(3, 3, dedup.signature(*ORIGINAL), title_key=key, published_at=T0)
    index.discard(3, key)
    assert index.find_story(dedup.signature(*SYNDICATED), title_key=key, published_at=T0) is None
    assert len(index) == 0


def test_near_identical_text_days_apart_is_a_new_story() -> None:
    index = dedup.StoryIndex()
    index.add(1, 1, dedup.signature(*ORIGINAL), published_at=T0)
    assert index.find_story(dedup.signature(*SYNDICATED), published_at=T0 + timedelta(hours=6)) == 1
    assert index.find_story(dedup.signature(*SYNDICATED), published_at=T0 + timedelta(days=5)) is None


def test_band_index_returns_what_datasketch_lsh_returns() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**32, size=(40, NUM_PERM), dtype=np.uint64).astype(np.uint32)
    # Copies that keep a random share of each base signature: some collide in a band, some do not.
    copies = base.copy()
    for row, keep in zip(copies, rng.uniform(0.2, 0.95, len(copies)), strict=True):
        mask = rng.uniform(size=NUM_PERM) > keep
        row[mask] = rng.integers(0, 2**32, size=int(mask.sum()), dtype=np.uint64).astype(np.uint32)
    ours, theirs = BandIndex(STORY_THRESHOLD), MinHashLSH(threshold=STORY_THRESHOLD, num_perm=NUM_PERM)
    lean = lambda sig: LeanMinHash(seed=1, hashvalues=sig, scheme="affine32")  # noqa: E731
    for key, sig in enumerate(base):
        ours.insert(key, sig)
        theirs.insert(key, lean(sig))
    for key in (3, 17):  # removal too
        ours.remove(key, base[key])
        theirs.remove(key)
    ours.remove(999, base[0])  # a key not indexed is ignored, even with an indexed key's signature
    results = [ours.query(sig) for sig in copies]
    assert results == [set(theirs.query(lean(sig))) for sig in copies]
    hits = sum(bool(r) for r in results)
    assert 5 < hits < 38  # both kinds of case occurred
