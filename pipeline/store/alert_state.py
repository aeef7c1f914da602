"""What alert evaluation reads and writes: window counts, alert state and alert events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# Arbitrary constant naming "alert evaluation" for an advisory lock: one evaluator at a time.
_ALERT_LOCK_ID = 0x616C7274


def lock_alert_evaluation(conn: Connection) -> None:
    """Serialise alert evaluations until this transaction ends (two schedulers must not both transition)."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ALERT_LOCK_ID})


def alert_model_version(conn: Connection) -> str | None:
    """Return the model version whose rollups alerts read: the active one, else the latest rolled up."""
    return conn.execute(
        sa.text(
            "SELECT COALESCE("
            " (SELECT version FROM model_versions WHERE active),"
            " (SELECT model_version FROM rollups_hourly ORDER BY bucket DESC LIMIT 1))"
        )
    ).scalar_one_or_none()


def window_counts(
    conn: Connection,
    version: str,
    dimension: str,
    base_start: datetime,
    base_end: datetime,
    win_start: datetime,
    end: datetime,
) -> list[sa.Row[Any]]:
    """Return per value of ``dimension``: stories, negative stories and expected negatives (summed
    p(negative)) in [win_start, end) and in the baseline [base_start, base_end) as ``stories, neg_stories,
    neg_expected, base_stories, base_neg, base_neg_expected, base_neg_expected_sq`` (the sum of squared
    story probabilities; a gap between window and baseline is skipped)."""
    rows = conn.execute(
        sa.text(
            "SELECT value,"
            " COALESCE(sum(stories) FILTER (WHERE bucket >= :win_start), 0)::int AS stories,"
            " COALESCE(sum(neg_stories) FILTER (WHERE bucket >= :win_start), 0)::int AS neg_stories,"
            " COALESCE(sum(neg_expected) FILTER (WHERE bucket >= :win_start), 0) AS neg_expected,"
            " COALESCE(sum(stories) FILTER (WHERE bucket < :base_end), 0)::int AS base_stories,"
            " COALESCE(sum(neg_stories) FILTER (WHERE bucket < :base_end), 0)::int AS base_neg,"
            " COALESCE(sum(neg_expected) FILTER (WHERE bucket < :base_end), 0) AS base_neg_expected,"
            " COALESCE(sum(neg_expected_sq) FILTER (WHERE bucket < :base_end), 0) AS base_neg_expected_sq"
            " FROM rollups_hourly"
            " WHERE model_version = :version AND dimension = :dimension"
            "   AND bucket >= :base_start AND bucket < :end"
            "   AND (bucket < :base_end OR bucket >= :win_start)"
            " GROUP BY value"
        ),
        {
            "version": version,
            "dimension": dimension,
            "base_start": base_start,
            "base_end": base_end,
            "win_start": win_start,
            "end": end,
        },
    )
    return list(rows)


def write_story_counts(
    conn: Connection,
    version: str,
    rows: Sequence[tuple[str, str, datetime, int, int]],
) -> int:
    """Write ``(dimension, value, bucket, stories, neg_stories)`` straight into rollups_hourly; return rows.

    For recorded or synthetic histories (backtests, benchmarks): each story counts as one article,
    negative or neutral, called with certainty (expected negatives = negative stories). Existing buckets
    are replaced.
    """
    if not rows:
        return 0
    return conn.execute(
        sa.text(
            "INSERT INTO rollups_hourly (model_version, dimension, value, bucket, articles, stories,"
            " negative, neutral, positive, neg_stories, score_sum, neg_expected, neg_expected_sq)"
            " SELECT :version, t.dimension, t.value, t.bucket, t.stories, t.stories, t.neg,"
            "   t.stories - t.neg, 0, t.neg, -t.neg::double precision, t.neg, t.neg"
            " FROM unnest(CAST(:dimensions AS text[]), CAST(:values AS text[]),"
            "             CAST(:buckets AS timestamptz[]), CAST(:stories AS int[]), CAST(:negs AS int[]))"
            "   AS t(dimension, value, bucket, stories, neg)"
            " ON CONFLICT (model_version, dimension, value, bucket) DO UPDATE SET"
            "   articles = EXCLUDED.articles, stories = EXCLUDED.stories, negative = EXCLUDED.negative,"
            "   neutral = EXCLUDED.neutral, positive = 0, neg_stories = EXCLUDED.neg_stories,"
            "   score_sum = EXCLUDED.score_sum, neg_expected = EXCLUDED.neg_expected,"
            "   neg_expected_sq = EXCLUDED.neg_expected_sq"
        ),
        {
            "version": version,
            "dimensions": [r[0] for r in rows],
            "values": [r[1] for r in rows],
            "buckets": [r[2] for r in rows],
            "stories": [int(r[3]) for r in rows],
            "negs": [int(r[4]) for r in rows],
        },
    ).rowcount


def guid_prefix_last_published(conn: Connection, prefix: str) -> datetime | None:
    """Return the latest published_at of articles whose GUID starts with ``prefix`` (None: none)."""
    return conn.execute(
        sa.text("SELECT max(published_at) FROM articles WHERE starts_with(guid, :prefix)"), {"prefix": prefix}
    ).scalar_one()


def rollup_story_series(
    conn: Connection, version: str, dimension: str, start: datetime, end: datetime
) -> list[sa.Row[Any]]:
    """Return ``value, bucket, stories, neg_stories, neg_expected, neg_expected_sq`` rows of ``dimension``
    with start <= bucket < end."""
    rows = conn.execute(
        sa.text(
            "SELECT value, bucket, stories, neg_stories, neg_expected, neg_expected_sq FROM rollups_hourly"
            " WHERE model_version = :version AND dimension = :dimension"
            "   AND bucket >= :start AND bucket < :end AND stories > 0"
        ),
        {"version": version, "dimension": dimension, "start": start, "end": end},
    )
    return list(rows)


def negative_headlines(
    conn: Connection, version: str, dimension: str, value: str, start: datetime, end: datetime, limit: int
) -> list[sa.Row[Any]]:
    """Return the most negative stories of one dimension value published in [start, end), one row per
    story (its most negative copy): ``title, url, source, published_at, score, copies``.

    A story qualifies when it is called negative or merely leans negative (score < 0): an alert on
    expected negatives can fire on stories the model calls neutral with a high p(negative)."""
    rows = conn.execute(
        sa.text(
            "SELECT title, url, source, published_at, score, copies FROM ("
            "  SELECT DISTINCT ON (f.story_id) a.title, COALESCE(a.canonical_url, a.url) AS url,"
            "    src.name AS source, a.published_at, f.score,"
            "    count(*) OVER (PARTITION BY f.story_id) AS copies"
            "  FROM score_facts f"
            "  JOIN articles a ON a.id = f.article_id"
            "  JOIN sources src ON src.id = a.source_id"
            "  WHERE f.model_version = :version AND f.dimension = :dimension AND f.value = :value"
            "    AND (f.sentiment = 'negative' OR f.score < 0)"
            "    AND f.published_at >= :start AND f.published_at < :end"
            "  ORDER BY f.story_id, f.score, a.published_at"
            ") AS per_story ORDER BY score, published_at DESC LIMIT :limit"
        ),
        {
            "version": version,
            "dimension": dimension,
            "value": value,
            "start": start,
            "end": end,
            "limit": limit,
        },
    )
    return list(rows)


_ALERT_STATE_COLUMNS = (
    "fingerprint",
    "rule",
    "dimension",
    "value",
    "status",
    "severity",
    "pending_since",
    "firing_since",
    "last_breach_at",
    "resolved_at",
    "notified",
    "neg_share",
    "baseline",
    "stories",
    "neg_stories",
    "base_stories",
    "p_value",
    "evaluated_at",
    "inhibited_by",
    "expected_negatives",
)


def alert_states(conn: Connection, rules: Sequence[str]) -> list[sa.Row[Any]]:
    """Return the stored alert states of ``rules`` (every column of ``alert_state``)."""
    rows = conn.execute(
        sa.text(f"SELECT {', '.join(_ALERT_STATE_COLUMNS)} FROM alert_state WHERE rule = ANY(:rules)"),
        {"rules": list(rules)},
    )
    return list(rows)


def open_alerts(conn: Connection) -> list[sa.Row[Any]]:
    """Return the pending and firing alert states, firing first."""
    rows = conn.execute(
        sa.text(
            f"SELECT {', '.join(_ALERT_STATE_COLUMNS)} FROM alert_state WHERE status <> 'inactive'"
            " ORDER BY status = 'firing' DESC, rule, dimension, value"
        )
    )
    return list(rows)


def save_alert_state(conn: Connection, state: dict[str, Any]) -> None:
    """Insert or update one ``alert_state`` row; ``state`` has every column of the table."""
    columns = ", ".join(_ALERT_STATE_COLUMNS)
    values = ", ".join(f":{c}" for c in _ALERT_STATE_COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _ALERT_STATE_COLUMNS if c != "fingerprint")
    conn.execute(
        sa.text(
            f"INSERT INTO alert_state ({columns}) VALUES ({values})"
            f" ON CONFLICT (fingerprint) DO UPDATE SET {updates}"
        ),
        {c: state[c] for c in _ALERT_STATE_COLUMNS},
    )


def window_counts_without_tickers(
    conn: Connection,
    version: str,
    dimension: str,
    value: str,
    start: datetime,
    end: datetime,
    tickers: Sequence[str],
) -> tuple[int, int, float, list[str]]:
    """Return ``(stories, neg_stories, neg_expected, tickers found)`` of one dimension value in
    [start, end), counted as the rollups count them, after dropping every article that names one of
    ``tickers``; the last item lists the ``tickers`` that the dropped articles named.
    """
    row = conn.execute(
        sa.text(
            # One read of the window's articles; "named" marks those that the count leaves out.
            "WITH facts AS MATERIALIZED ("
            "  SELECT f.bucket, f.story_id, f.sentiment, f.p_negative, a.tickers,"
            "   a.tickers && CAST(:tickers AS text[]) AS named"
            "  FROM score_facts f JOIN articles a ON a.id = f.article_id"
            "  WHERE f.model_version = :version AND f.dimension = :dimension AND f.value = :value"
            "    AND f.published_at >= :start AND f.published_at < :end"
            "), per_story AS ("
            "  SELECT count(*) FILTER (WHERE NOT named) AS n,"
            "   count(*) FILTER (WHERE NOT named AND sentiment = 'negative') AS neg,"
            "   avg(p_negative) FILTER (WHERE NOT named) AS p_negative"
            "  FROM facts GROUP BY bucket, story_id"
            ")"
            " SELECT (SELECT count(*) FROM per_story WHERE n > 0) AS stories,"
            "  (SELECT count(*) FROM per_story WHERE n > 0 AND 2 * neg > n) AS neg_stories,"
            "  (SELECT COALESCE(sum(p_negative), 0) FROM per_story WHERE n > 0) AS neg_expected,"
            "  ARRAY(SELECT DISTINCT t FROM facts, unnest(facts.tickers) AS t"
            "   WHERE named AND t = ANY(CAST(:tickers AS text[])) ORDER BY t) AS found"
        ),
        {
            "version": version,
            "dimension": dimension,
            "value": value,
            "start": start,
            "end": end,
            "tickers": list(tickers),
        },
    ).one()
    return int(row.stories), int(row.neg_stories), float(row.neg_expected), list(row.found)


def insert_alert_event(conn: Connection, event: dict[str, Any]) -> int | None:
    """Record one transition; return its id, or None when this (fingerprint, transition, at) exists."""
    return conn.execute(
        sa.text(
            "INSERT INTO alert_events (fingerprint, transition, at, rule, dimension, value, severity,"
            " neg_share, baseline, stories, neg_stories, base_stories, p_value, expected_negatives,"
            " silenced, inhibited_by)"
            " VALUES (:fingerprint, :transition, :at, :rule, :dimension, :value, :severity, :neg_share,"
            " :baseline, :stories, :neg_stories, :base_stories, :p_value, :expected_negatives,"
            " :silenced, :inhibited_by)"
            " ON CONFLICT (fingerprint, transition, at) DO NOTHING RETURNING id"
        ),
        event,
    ).scalar_one_or_none()


def release_alert_event(conn: Connection, fingerprint: str, fired_at: datetime, at: datetime) -> int | None:
    """Mark the held-back (inhibited or silenced) firing event of ``fingerprint`` at ``fired_at`` released
    at ``at``; return its id, or None when it was released already (a rerun) or does not exist."""
    return conn.execute(
        sa.text(
            "UPDATE alert_events SET released_at = :at"
            " WHERE fingerprint = :fingerprint AND transition = 'firing' AND at = :fired_at"
            "   AND released_at IS NULL RETURNING id"
        ),
        {"fingerprint": fingerprint, "fired_at": fired_at, "at": at},
    ).scalar_one_or_none()


def alert_events(conn: Connection, since: datetime | None = None) -> list[sa.Row[Any]]:
    """Return the recorded transitions at or after ``since`` (all by default), oldest first."""
    rows = conn.execute(
        sa.text(
            "SELECT id, fingerprint, transition, at, rule, dimension, value, severity, neg_share, baseline,"
            " stories, neg_stories, base_stories, p_value, silenced, inhibited_by, released_at, outbox_id"
            " FROM alert_events"
            " WHERE CAST(:since AS timestamptz) IS NULL OR at >= :since ORDER BY at, id"
        ),
        {"since": since},
    )
    return list(rows)
