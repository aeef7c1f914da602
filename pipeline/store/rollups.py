"""Hourly rollups: their advisory lock, incremental refresh and full rebuild."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# Arbitrary constant naming "rollup writes" for advisory locks (paired with the model version's hash).
_ROLLUP_LOCK_CLASS = 0x726F6C6C


def lock_rollups(conn: Connection, version: str) -> None:
    """Serialise writers of ``version``'s scores and rollups until this transaction ends.

    Rollup buckets are recomputed from the scores a transaction can see; two writers recomputing the
    same bucket at once would each miss the other's uncommitted scores.
    """
    conn.execute(
        sa.text("SELECT pg_advisory_xact_lock(:cls, hashtext(:version))"),
        {"cls": _ROLLUP_LOCK_CLASS, "version": version},
    )


# Aggregates the ``score_facts`` rows that {source} selects into rollup rows. Counting happens per
# story first so that ``stories`` and ``neg_stories`` count each near-duplicate cluster once, and
# ``neg_expected`` adds each story's mean p(negative) once (``neg_expected_sq`` its square).
_ROLLUP_AGGREGATE = """
INSERT INTO rollups_hourly (model_version, dimension, value, bucket, articles, stories, negative, neutral,
                            positive, neg_stories, score_sum, neg_expected, neg_expected_sq)
SELECT model_version, dimension, value, bucket, sum(n), count(*), sum(neg), sum(neu), sum(pos),
       -- A story is negative when more of its scored copies in the bucket are negative than not.
       count(*) FILTER (WHERE 2 * neg > n), sum(score_sum), sum(p_negative),
       sum(p_negative * p_negative)
FROM (
    SELECT f.model_version, f.dimension, f.value, f.bucket, f.story_id,
           count(*) AS n,
           count(*) FILTER (WHERE f.sentiment = 'negative') AS neg,
           count(*) FILTER (WHERE f.sentiment = 'neutral') AS neu,
           count(*) FILTER (WHERE f.sentiment = 'positive') AS pos,
           sum(f.score) AS score_sum,
           avg(f.p_negative) AS p_negative
    {source}
    GROUP BY f.model_version, f.dimension, f.value, f.bucket, f.story_id
) AS per_story
GROUP BY model_version, dimension, value, bucket
ON CONFLICT (model_version, dimension, value, bucket) DO UPDATE SET
    articles = EXCLUDED.articles, stories = EXCLUDED.stories, negative = EXCLUDED.negative,
    neutral = EXCLUDED.neutral, positive = EXCLUDED.positive, neg_stories = EXCLUDED.neg_stories,
    score_sum = EXCLUDED.score_sum, neg_expected = EXCLUDED.neg_expected,
    neg_expected_sq = EXCLUDED.neg_expected_sq
"""


# The (dimension, value, hour) buckets the given articles fall in, recomputed from all of their scores.
# The articles of the touched hours are found by published_at (indexed) and handed over as an array, so
# the scores are then looked up by primary key: the cost follows the touched hours, not the history.
_REFRESH_BUCKETS = sa.text(
    "WITH touched AS ("
    "  SELECT DISTINCT dimension, value, bucket FROM score_facts"
    "  WHERE model_version = :version AND article_id = ANY(CAST(:ids AS bigint[]))"
    ")"
    + _ROLLUP_AGGREGATE.format(
        source="FROM score_facts f"
        " JOIN touched t ON t.dimension = f.dimension AND t.value = f.value AND t.bucket = f.bucket"
        " WHERE f.model_version = :version AND f.article_id = ANY(ARRAY("
        "   SELECT a.id FROM (SELECT DISTINCT bucket FROM touched) AS h"
        "   JOIN articles a ON a.published_at >= h.bucket AND a.published_at < h.bucket + interval '1 hour'))"
    )
)


_REBUILD_VERSION = sa.text(
    _ROLLUP_AGGREGATE.format(
        source="FROM score_facts f WHERE f.model_version = :version AND f.published_at >= :since"
    )
)


def refresh_rollups(conn: Connection, version: str, article_ids: Sequence[int]) -> int:
    """Recompute ``version``'s rollup buckets that ``article_ids`` fall in; return the buckets written.

    Buckets are recomputed from the stored scores, not incremented, so replaying a batch never counts
    an article twice. Call under ``lock_rollups`` in the transaction that inserted the scores.
    """
    if not article_ids:
        return 0
    # The planner cannot know how few articles an hour holds; its pessimistic estimate would trigger JIT
    # compilation, which costs several times what this small recount does.
    conn.execute(sa.text("SET LOCAL jit = off"))
    return conn.execute(_REFRESH_BUCKETS, {"version": version, "ids": list(article_ids)}).rowcount


def rebuild_rollups(conn: Connection, version: str, since: datetime) -> int:
    """Replace ``version``'s rollup rows from hour ``since`` on with a recount of its scores; return rows."""
    params = {"version": version, "since": since}
    conn.execute(
        sa.text("DELETE FROM rollups_hourly WHERE model_version = :version AND bucket >= :since"), params
    )
    return conn.execute(_REBUILD_VERSION, params).rowcount


def first_article_hour(conn: Connection) -> datetime | None:
    """Return the UTC hour of the oldest stored article's publication, or None when there are none."""
    return conn.execute(sa.text("SELECT date_trunc('hour', min(published_at), 'UTC') FROM articles")).scalar()


def rollup_versions(conn: Connection) -> list[str]:
    """Return every model version that has scores, rollups or a registration."""
    rows = conn.execute(
        sa.text(
            "SELECT version FROM model_versions"
            " UNION SELECT DISTINCT model_version FROM rollups_hourly ORDER BY 1"
        )
    )
    return list(rows.scalars())
