"""Maintenance on a real PostgreSQL: retention deletes only old rows, the rollup check catches drift."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline import maintenance, store
from pipeline.scoring.score import score_pending
from tests.fixtures.scoring import CLOCK, ArticleSpec, add_articles, varied_articles

NOW = CLOCK + timedelta(days=1)


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar_one()


def _log_fetch(engine: Engine, started_at) -> None:
    row = store.FetchLogRow(
        run_id=str(uuid.uuid4()),
        source_id=None,
        started_at=started_at,
        status="ok",
        http_status=200,
        bytes=10,
        items_seen=1,
        items_new=1,
        duplicates=0,
        invalid=0,
        filtered=0,
        duration_ms=5,
        error=None,
    )
    with engine.begin() as conn:
        store.insert_fetch_log(conn, row)


def test_retention_deletes_old_articles_with_their_scores_and_old_fetch_log_only(
    engine: Engine, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    add_articles(
        engine,
        [
            ArticleSpec("Old story one", published_at=CLOCK - timedelta(days=40)),
            ArticleSpec("Old story two", published_at=CLOCK - timedelta(days=31)),
        ],
    )
    recent = add_articles(engine, [ArticleSpec("Recent story", published_at=CLOCK)])
    score_pending(engine, model_dir=tiny_model_dir)
    _log_fetch(engine, CLOCK - timedelta(days=45))
    _log_fetch(engine, CLOCK)

    with caplog.at_level(logging.WARNING, logger="pipeline.maintenance"):
        report = maintenance.apply_retention(engine, days=30, now=NOW)

    # It says what it is about to delete before it deletes it.
    [said] = [r.getMessage() for r in caplog.records if r.name == "pipeline.maintenance"]
    assert "deleting 2 articles published before" in said and "FINSENT_RETENTION_DAYS=30" in said
    assert (report.articles_deleted, report.fetch_log_deleted) == (2, 1)
    assert report.cutoff == NOW - timedelta(days=30)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM articles")).scalars().all() == recent
    assert _count(engine, "SELECT count(*) FROM scores") == len(recent)
    assert _count(engine, "SELECT count(*) FROM fetch_log") == 1
    assert maintenance.apply_retention(engine, days=30, now=NOW).articles_deleted == 0  # idempotent


def test_rollup_check_passes_after_scoring_and_names_the_bucket_that_drifted(
    engine: Engine, tiny_model_dir: Path
) -> None:
    add_articles(engine, varied_articles(30))
    score_pending(engine, model_dir=tiny_model_dir)
    assert maintenance.check_rollups(engine, days=3, now=NOW).consistent

    with engine.begin() as conn:
        bucket = conn.execute(
            sa.text(
                "UPDATE rollups_hourly SET negative = negative + 1 WHERE dimension = 'all'"
                " AND bucket = (SELECT min(bucket) FROM rollups_hourly) RETURNING bucket"
            )
        ).scalar_one()

    report = maintenance.check_rollups(engine, days=3, now=NOW)
    assert [(m["dimension"], m["bucket"]) for m in report.mismatches] == [("all", bucket.isoformat())]
    mismatch = report.mismatches[0]
    assert mismatch["stored_negative"] == mismatch["expected_negative"] + 1
    with pytest.raises(maintenance.RollupInconsistencyError, match=r"all=\*"):
        maintenance.verify_rollups(engine, days=3, now=NOW)


def test_rollup_check_ignores_buckets_older_than_its_window(engine: Engine, tiny_model_dir: Path) -> None:
    add_articles(engine, [ArticleSpec("Ancient headline", published_at=CLOCK - timedelta(days=20))])
    score_pending(engine, model_dir=tiny_model_dir)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE rollups_hourly SET articles = articles + 5"))
    assert maintenance.check_rollups(engine, days=7, now=NOW).consistent
    assert not maintenance.check_rollups(engine, days=30, now=NOW).consistent


def test_analyze_refreshes_planner_statistics(engine: Engine) -> None:
    add_articles(engine, varied_articles(5))
    tables = maintenance.analyze(engine)
    with engine.connect() as conn:
        analyzed = conn.execute(
            sa.text("SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL")
        ).scalars()
        assert set(tables) <= set(analyzed)
