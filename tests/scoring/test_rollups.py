"""Hourly rollups against real PostgreSQL: incremental updates equal a from-scratch count over the scores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline import store
from pipeline.scoring import rollups
from pipeline.scoring.score import score_pending
from tests.fixtures.scoring import (
    CLOCK,
    ArticleSpec,
    add_articles,
    assert_rollups_match,
    expected_rollups,
    stored_rollups,
    varied_articles,
)

MANUAL = "manual-v1"
KOLKATA = ZoneInfo("Asia/Kolkata")


def _score_by_hand(engine: Engine, labels: dict[int, str]) -> None:
    """Store scores with chosen sentiments for ``labels`` {article id: sentiment} and update rollups."""
    probs = {"negative": 0.0, "neutral": 0.0, "positive": 0.0}
    signed = {"negative": -1.0, "neutral": 0.0, "positive": 1.0}
    rows = [
        store.ScoreRow(i, "Markets", {"Markets": 1.0}, s, {**probs, s: 1.0}, signed[s])
        for i, s in labels.items()
    ]
    with engine.begin() as conn:
        store.register_model_version(conn, MANUAL, "manual", None, None)
        inserted = store.insert_scores(conn, MANUAL, rows)
        rollups.refresh_buckets(conn, MANUAL, inserted)


def _row(engine: Engine, dimension: str, value: str, bucket: datetime, version: str = MANUAL) -> dict:
    return stored_rollups(engine, version)[(dimension, value, bucket)]


def test_incremental_rollups_equal_a_count_over_all_scores(engine: Engine, tiny_model_dir: Path) -> None:
    specs = varied_articles(36)
    # Three arrivals whose hours overlap, each scored in small batches: buckets are revisited many times.
    for chunk in (specs[:10], specs[10:25], specs[25:]):
        add_articles(engine, chunk)
        score_pending(engine, model_dir=tiny_model_dir, batch_size=4)

    expected = expected_rollups(engine, "tiny-a")
    assert {k[0] for k in expected} == {"all", "topic", "ticker", "source"}
    everything = [v for k, v in expected.items() if k[0] == "all"]
    # The counts below are only a real check if the model put articles in every class and stories split.
    assert all(sum(v[c] for v in everything) > 0 for c in ("negative", "neutral", "positive", "neg_stories"))
    assert sum(v["stories"] for v in everything) < 36
    assert_rollups_match(stored_rollups(engine, "tiny-a"), expected)
    with engine.connect() as conn:
        by_topic = conn.execute(
            sa.text(
                "SELECT s.topic, date_trunc('hour', a.published_at, 'UTC') AS hour, count(*),"
                " count(DISTINCT a.story_id), count(*) FILTER (WHERE s.sentiment = 'negative')"
                " FROM scores s JOIN articles a ON a.id = s.article_id GROUP BY 1, 2"
            )
        ).all()
        rolled = conn.execute(
            sa.text(
                "SELECT value, bucket, articles, stories, negative FROM rollups_hourly"
                " WHERE model_version = 'tiny-a' AND dimension = 'topic'"
            )
        ).all()
    assert sorted(map(tuple, by_topic)) == sorted(map(tuple, rolled))
    with engine.connect() as conn:
        total = conn.execute(
            sa.text(
                "SELECT sum(articles) FROM rollups_hourly WHERE dimension = 'all' AND model_version = :v"
            ),
            {"v": "tiny-a"},
        ).scalar()
    assert total == 36


def test_rebuild_from_scratch_equals_the_incremental_result(engine: Engine, tiny_model_dir: Path) -> None:
    add_articles(engine, varied_articles(20))
    score_pending(engine, model_dir=tiny_model_dir, batch_size=3)
    incremental = stored_rollups(engine, "tiny-a")

    assert rollups.rebuild_rollups(engine) == {"tiny-a": len(incremental)}
    assert_rollups_match(stored_rollups(engine, "tiny-a"), incremental)
    assert rollups.rebuild_rollups(engine, model_version="tiny-a") == {"tiny-a": len(incremental)}
    assert_rollups_match(stored_rollups(engine, "tiny-a"), incremental)


def test_syndicated_copies_count_as_one_story(engine: Engine) -> None:
    copies = [
        ArticleSpec(
            "Acme recalls flagship product",
            source=src,
            story="recall",
            tickers=["ACME"],
            published_at=CLOCK + timedelta(minutes=m),
        )
        for src, m in (("wire", 1), ("daily", 5), ("blog", 40))
    ]
    other = ArticleSpec("Globex opens new plant", source="wire", published_at=CLOCK + timedelta(minutes=20))
    ids = add_articles(engine, [*copies, other])
    _score_by_hand(engine, dict(zip(ids, ["negative", "negative", "neutral", "positive"], strict=True)))

    everything = _row(engine, "all", "*", CLOCK)
    assert (everything["articles"], everything["stories"]) == (4, 2)
    assert (everything["negative"], everything["neutral"], everything["positive"]) == (2, 1, 1)
    assert everything["neg_stories"] == 1  # two of the recall's three copies are negative
    ticker = _row(engine, "ticker", "ACME", CLOCK)
    assert (ticker["articles"], ticker["stories"], ticker["neg_stories"]) == (3, 1, 1)
    # Expected negatives: the story adds the mean p(negative) of its copies, once.
    assert ticker["neg_expected"] == pytest.approx(2 / 3)
    assert _row(engine, "source", "wire", CLOCK)["stories"] == 2
    assert _row(engine, "source", "blog", CLOCK)["neg_stories"] == 0  # its only copy is neutral


def test_a_story_split_evenly_is_not_negative(engine: Engine) -> None:
    copies = [ArticleSpec("Mixed views on Acme", source=s, story="mixed") for s in ("a", "b")]
    ids = add_articles(engine, copies)
    _score_by_hand(engine, {ids[0]: "negative", ids[1]: "positive"})

    row = _row(engine, "all", "*", CLOCK)
    assert (row["stories"], row["negative"], row["neg_stories"]) == (1, 1, 0)
    assert row["score_sum"] == 0.0


def test_buckets_are_utc_hours_of_publication(engine: Engine) -> None:
    ids = add_articles(
        engine,
        [
            # 22:15 in Kolkata (UTC+05:30) is 16:45 UTC: the half-hour offset must not shift the bucket.
            ArticleSpec("Sensex closes higher", published_at=datetime(2026, 11, 2, 22, 15, tzinfo=KOLKATA)),
            ArticleSpec("Late session slide", published_at=datetime(2026, 11, 2, 16, 59, 59, tzinfo=UTC)),
            ArticleSpec("Next hour opens", published_at=datetime(2026, 11, 2, 17, 0, tzinfo=UTC)),
        ],
    )
    _score_by_hand(engine, dict.fromkeys(ids, "neutral"))

    counts = {k[2]: v["articles"] for k, v in stored_rollups(engine, MANUAL).items() if k[0] == "all"}
    assert counts == {datetime(2026, 11, 2, 16, tzinfo=UTC): 2, datetime(2026, 11, 2, 17, tzinfo=UTC): 1}


def test_a_ticker_listed_twice_counts_once_and_untagged_articles_have_no_ticker_row(engine: Engine) -> None:
    ids = add_articles(
        engine, [ArticleSpec("Acme and Acme again", tickers=["ACME", "ACME"]), ArticleSpec("No tickers here")]
    )
    _score_by_hand(engine, dict.fromkeys(ids, "negative"))

    keys = stored_rollups(engine, MANUAL)
    assert [k[1] for k in keys if k[0] == "ticker"] == ["ACME"]
    assert keys[("ticker", "ACME", CLOCK)]["articles"] == 1


def test_rebuild_drops_buckets_whose_articles_were_deleted(engine: Engine) -> None:
    ids = add_articles(
        engine,
        [ArticleSpec("Kept", source="wire"), ArticleSpec("Removed", source="gone", tickers=["GONE"])],
    )
    _score_by_hand(engine, dict.fromkeys(ids, "negative"))
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM articles WHERE id = :id"), {"id": ids[1]})  # scores cascade

    rollups.rebuild_rollups(engine, MANUAL)

    keys = stored_rollups(engine, MANUAL)
    assert ("source", "gone", CLOCK) not in keys
    assert ("ticker", "GONE", CLOCK) not in keys
    assert keys[("all", "*", CLOCK)]["articles"] == 1
    assert_rollups_match(keys, expected_rollups(engine, MANUAL))


def test_replaying_a_batch_does_not_double_count(engine: Engine) -> None:
    ids = add_articles(engine, [ArticleSpec(f"Story {i}") for i in range(3)])
    _score_by_hand(engine, dict.fromkeys(ids, "negative"))
    # The same scores again (a retried batch): nothing is inserted, refreshing the buckets changes nothing.
    _score_by_hand(engine, dict.fromkeys(ids, "negative"))
    with engine.begin() as conn:
        rollups.refresh_buckets(conn, MANUAL, ids)

    assert _row(engine, "all", "*", CLOCK)["articles"] == 3
    assert_rollups_match(stored_rollups(engine, MANUAL), expected_rollups(engine, MANUAL))


def test_rebuild_keeps_hours_older_than_every_stored_article(engine: Engine) -> None:
    old_hour = CLOCK - timedelta(days=40)
    ids = add_articles(engine, [ArticleSpec("Old news", published_at=old_hour), ArticleSpec("Fresh news")])
    _score_by_hand(engine, dict.fromkeys(ids, "positive"))
    with engine.begin() as conn:  # what retention does: old articles go, their rollups stay
        conn.execute(sa.text("DELETE FROM articles WHERE id = :id"), {"id": ids[0]})

    rollups.rebuild_rollups(engine)
    assert _row(engine, "all", "*", old_hour)["articles"] == 1
    assert _row(engine, "all", "*", CLOCK)["articles"] == 1

    rollups.rebuild_rollups(engine, since=old_hour)  # an explicit start recounts those hours too
    assert ("all", "*", old_hour) not in stored_rollups(engine, MANUAL)
