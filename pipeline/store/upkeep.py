"""Maintenance queries: retention deletes, rollup consistency, table statistics."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def articles_before(conn: Connection, cutoff: datetime) -> tuple[int, datetime | None]:
    """Return how many articles were published before ``cutoff``, and the oldest one's time."""
    row = conn.execute(
        sa.text("SELECT count(*), min(published_at) FROM articles WHERE published_at < :cutoff"),
        {"cutoff": cutoff},
    ).one()
    return int(row[0]), row[1]


def delete_articles_before(conn: Connection, cutoff: datetime, limit: int) -> int:
    """Return how many articles from before ``cutoff`` were deleted (at most ``limit``, scores cascade)."""
    result = conn.execute(
        sa.text(
            "DELETE FROM articles WHERE id IN ("
            " SELECT id FROM articles WHERE published_at < :cutoff ORDER BY published_at LIMIT :limit)"
        ),
        {"cutoff": cutoff, "limit": limit},
    )
    return result.rowcount


def delete_fetch_log_before(conn: Connection, cutoff: datetime) -> int:
    """Return how many fetch log rows of fetches started before ``cutoff`` were deleted."""
    result = conn.execute(sa.text("DELETE FROM fetch_log WHERE started_at < :cutoff"), {"cutoff": cutoff})
    return result.rowcount


def rollup_mismatches(conn: Connection, since: datetime, limit: int) -> list[sa.Row]:
    """Return up to ``limit`` rollup rows from ``since`` on whose counts differ from a recount of the scores.

    Each row has the key (model_version, dimension, value, bucket) and the expected (recounted) and
    stored ``articles``, ``stories``, ``negative``, ``neutral``, ``positive``; a missing side is NULL.
    ``since`` should be on the hour so no bucket is half counted.
    """
    rows = conn.execute(
        sa.text(
            """
            WITH expected AS (
                SELECT model_version, dimension, value, bucket,
                       count(*) AS articles,
                       count(DISTINCT story_id) AS stories,
                       count(*) FILTER (WHERE sentiment = 'negative') AS negative,
                       count(*) FILTER (WHERE sentiment = 'neutral') AS neutral,
                       count(*) FILTER (WHERE sentiment = 'positive') AS positive
                FROM score_facts
                WHERE published_at >= :since
                GROUP BY model_version, dimension, value, bucket
            ), stored AS (
                SELECT model_version, dimension, value, bucket, articles, stories, negative, neutral, positive
                FROM rollups_hourly
                WHERE bucket >= :since
            )
            SELECT model_version, dimension, value, bucket,
                   e.articles AS expected_articles, s.articles AS stored_articles,
                   e.stories AS expected_stories, s.stories AS stored_stories,
                   e.negative AS expected_negative, s.negative AS stored_negative,
                   e.neutral AS expected_neutral, s.neutral AS stored_neutral,
                   e.positive AS expected_positive, s.positive AS stored_positive
            FROM expected e
            FULL JOIN stored s USING (model_version, dimension, value, bucket)
            WHERE (e.articles, e.stories, e.negative, e.neutral, e.positive)
                  IS DISTINCT FROM (s.articles, s.stories, s.negative, s.neutral, s.positive)
              -- an emptied bucket left at zero is consistent with no scores at all
              AND NOT (e.articles IS NULL AND s.articles = 0)
            ORDER BY bucket, model_version, dimension, value
            LIMIT :limit
            """
        ),
        {"since": since, "limit": limit},
    )
    return list(rows)


def analyze_tables(conn: Connection) -> list[str]:
    """Refresh the planner statistics of the tables the dashboard and alerts query; return their names."""
    tables = ["sources", "articles", "fetch_log", "scores", "rollups_hourly"]
    # ANALYZE takes no bound parameters; the names are this module's constants, not input.
    conn.exec_driver_sql(f"ANALYZE {', '.join(tables)}")
    return tables
