"""The dashboard's read-only role and every read it makes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from models.labels import SENTIMENT_NAMES
from pipeline.store.alert_state import alert_model_version

DASHBOARD_ROLE = "finsent_readonly"

# Memory per sort or bitmap in a dashboard session. A text search for a common word collects every match
# in a bitmap before the time sort (~300k at 10M articles); at PostgreSQL's 4 MB default the bitmap
# turns lossy and every article on those pages is re-read and re-parsed (6.4 s instead of 0.16 s).
DASHBOARD_WORK_MEM = "64MB"

_GRAINS = ("hour", "day")

# websearch_to_tsquery accepts what people type into a search box: words, "quoted phrases", or, -not.
_TEXT_MATCH = (
    "to_tsvector('english'::regconfig, a.title || ' ' || a.summary)"
    " @@ websearch_to_tsquery('english'::regconfig, :q)"
)


def prepare_read_only_session(dbapi_connection: Any) -> bool:
    """Return whether a new DB-API connection took the read-only role; its transactions are read-only
    and its sorts and bitmaps get ``DASHBOARD_WORK_MEM``.

    Called once per pooled connection. A user who is not a member of ``finsent_readonly`` (or a server
    where the role could not be created) keeps its own role but still cannot write.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cursor.execute("SELECT set_config('work_mem', %(mem)s, false)", {"mem": DASHBOARD_WORK_MEM})
        cursor.execute(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(role)s)"
            " THEN pg_has_role(current_user, %(role)s, 'MEMBER') ELSE false END",
            {"role": DASHBOARD_ROLE},
        )
        member = bool(cursor.fetchone()[0])
        if member:
            # A role name is an identifier, not a value: this module's constant, never input.
            cursor.execute(f"SET ROLE {DASHBOARD_ROLE}")
    finally:
        cursor.close()
    dbapi_connection.commit()
    return member


def session_is_read_only(conn: Connection) -> tuple[str, bool]:
    """Return ``(current role, whether transactions default to read-only)`` of this session."""
    row = conn.execute(
        sa.text("SELECT current_user, current_setting('default_transaction_read_only') = 'on'")
    ).one()
    return str(row[0]), bool(row[1])


def dashboard_version(conn: Connection) -> str | None:
    """Return the model version the dashboard shows: the active one, else the latest rolled up."""
    return alert_model_version(conn)


def dashboard_filter_values(conn: Connection, version: str, since: datetime) -> dict[str, list[str]]:
    """Return ``{dimension: values}`` for the filters: topics and tickers seen since ``since`` (busiest
    first, from the rollups) and every configured source (by name)."""
    rows = conn.execute(
        sa.text(
            "SELECT dimension, value, sum(articles) AS n FROM rollups_hourly"
            " WHERE model_version = :version AND dimension IN ('topic', 'ticker') AND bucket >= :since"
            " GROUP BY dimension, value ORDER BY dimension, n DESC, value"
        ),
        {"version": version, "since": since},
    )
    values: dict[str, list[str]] = {"topic": [], "ticker": [], "source": []}
    for r in rows:
        values[r.dimension].append(r.value)
    values["source"] = list(conn.execute(sa.text("SELECT name FROM sources ORDER BY name")).scalars())
    return values


def rollup_series(
    conn: Connection,
    version: str,
    dimension: str,
    values: Sequence[str] | None,
    start: datetime,
    end: datetime,
    grain: str,
) -> list[dict[str, Any]]:
    """Return per value and period (``grain`` hour or day, UTC) of [start, end) the summed rollup counts.

    Rows: ``value, period, articles, stories, negative, neutral, positive, neg_stories, score_sum``.
    ``values`` None means every value of the dimension.
    """
    if grain not in _GRAINS:
        raise ValueError(f"grain must be one of {_GRAINS}, got {grain!r}")
    rows = conn.execute(
        sa.text(
            "SELECT value, date_trunc(:grain, bucket, 'UTC') AS period,"
            " sum(articles)::int AS articles, sum(stories)::int AS stories,"
            " sum(negative)::int AS negative, sum(neutral)::int AS neutral,"
            " sum(positive)::int AS positive, sum(neg_stories)::int AS neg_stories,"
            " sum(score_sum) AS score_sum"
            " FROM rollups_hourly"
            " WHERE model_version = :version AND dimension = :dimension"
            "   AND bucket >= :start AND bucket < :end"
            "   AND (CAST(:values AS text[]) IS NULL OR value = ANY(CAST(:values AS text[])))"
            " GROUP BY value, period ORDER BY period, value"
        ),
        {
            "grain": grain,
            "version": version,
            "dimension": dimension,
            "start": start,
            "end": end,
            "values": None if values is None else list(values),
        },
    )
    return [dict(r._mapping) for r in rows]


def headline_figures(
    conn: Connection,
    version: str,
    day_start: datetime,
    window_start: datetime,
    base_start: datetime,
    end: datetime,
) -> dict[str, Any]:
    """Return the Overview's metric row from the ``all`` rollups.

    ``articles_today`` and ``stories_today`` count [day_start, end); ``stories``/``neg_stories`` the
    window [window_start, end) and ``base_stories``/``base_neg`` the baseline [base_start, window_start).
    """
    row = conn.execute(
        sa.text(
            "SELECT"
            " COALESCE(sum(articles) FILTER (WHERE bucket >= :day_start), 0)::int AS articles_today,"
            " COALESCE(sum(stories) FILTER (WHERE bucket >= :day_start), 0)::int AS stories_today,"
            " COALESCE(sum(stories) FILTER (WHERE bucket >= :window_start), 0)::int AS stories,"
            " COALESCE(sum(neg_stories) FILTER (WHERE bucket >= :window_start), 0)::int AS neg_stories,"
            " COALESCE(sum(stories) FILTER (WHERE bucket < :window_start), 0)::int AS base_stories,"
            " COALESCE(sum(neg_stories) FILTER (WHERE bucket < :window_start), 0)::int AS base_neg"
            " FROM rollups_hourly"
            " WHERE model_version = :version AND dimension = 'all'"
            "   AND bucket >= LEAST(:base_start, :day_start) AND bucket < :end"
        ),
        {
            "version": version,
            "day_start": day_start,
            "window_start": window_start,
            "base_start": base_start,
            "end": end,
        },
    ).one()
    return dict(row._mapping)


def alert_status_counts(conn: Connection) -> dict[str, int]:
    """Return ``{status: alerts}`` of the pending and firing alerts."""
    rows = conn.execute(
        sa.text("SELECT status, count(*) FROM alert_state WHERE status <> 'inactive' GROUP BY status")
    )
    return {status: int(n) for status, n in rows}


def alert_timeline(conn: Connection, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Return every firing period that overlaps [start, end), newest first.

    Rows: ``fingerprint, rule, dimension, value, severity, fired_at, resolved_at`` (None while still
    firing), ``status`` (firing/resolved), the figures at firing (``neg_share, baseline, stories,
    neg_stories, base_stories, p_value, expected_negatives``: what a count rule expected), whether its
    email was ``silenced`` (by a silence or an
    inhibition), ``inhibited_by``: the tickers whose firing alerts explained it, comma-joined ('' if
    none), and ``released_at``: when a held-back (inhibited or silenced) firing was emailed after all.
    """
    rows = conn.execute(
        sa.text(
            "SELECT fingerprint, rule, dimension, value, severity, at AS fired_at,"
            " CASE WHEN next_transition = 'resolved' THEN next_at END AS resolved_at,"
            " CASE WHEN next_transition = 'resolved' THEN 'resolved' ELSE 'firing' END AS status,"
            " neg_share, baseline, stories, neg_stories, base_stories, p_value, expected_negatives, silenced,"
            " array_to_string(inhibited_by, ', ') AS inhibited_by, released_at"
            " FROM ("
            "  SELECT e.*, lead(e.at) OVER w AS next_at, lead(e.transition) OVER w AS next_transition"
            "  FROM alert_events e WHERE e.at < :end"
            "  WINDOW w AS (PARTITION BY e.fingerprint ORDER BY e.at, e.id)"
            " ) AS paired"
            " WHERE transition = 'firing'"
            "   AND (next_transition IS DISTINCT FROM 'resolved' OR next_at >= :start)"
            " ORDER BY fired_at DESC, fingerprint"
        ),
        {"start": start, "end": end},
    )
    return [dict(r._mapping) for r in rows]


# The Explorer's columns; {t} is the table whose published_at (the same value) the query orders by.
_STORY_COLUMNS = (
    "a.id, a.story_id, {t}.published_at, src.name AS source, a.title,"
    " COALESCE(a.canonical_url, a.url) AS url, a.tickers, s.topic, s.sentiment, s.score"
)


def search_stories(
    conn: Connection,
    version: str,
    *,
    start: datetime,
    end: datetime,
    text: str | None = None,
    tickers: Sequence[str] = (),
    topics: Sequence[str] = (),
    sentiments: Sequence[str] = (),
    sources: Sequence[str] = (),
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Return up to ``limit`` scored articles published in [start, end) that match every given filter,
    newest first.

    ``text`` matches words of the title and summary (web-search syntax); each list matches any of its
    items (``tickers``: articles naming any of them). Rows: ``id, story_id, published_at, source, title,
    url, tickers, topic, sentiment, score``.
    """
    q = text.strip() if text and text.strip() else None
    if topics and not (q or tickers or sources):
        return _search_by_topic(conn, version, start, end, topics, sentiments, limit)
    rows = conn.execute(
        sa.text(
            f"SELECT {_STORY_COLUMNS.format(t='a')}"
            " FROM articles a"
            " JOIN scores s ON s.article_id = a.id AND s.model_version = :version"
            " JOIN sources src ON src.id = a.source_id"
            " WHERE a.published_at >= :start AND a.published_at < :end"
            f"  AND (CAST(:q AS text) IS NULL OR {_TEXT_MATCH})"
            "   AND (CAST(:tickers AS text[]) IS NULL OR a.tickers && CAST(:tickers AS text[]))"
            "   AND (CAST(:topics AS text[]) IS NULL OR s.topic = ANY(CAST(:topics AS text[])))"
            "   AND (CAST(:sentiments AS text[]) IS NULL OR s.sentiment = ANY(CAST(:sentiments AS text[])))"
            "   AND (CAST(:sources AS text[]) IS NULL OR src.name = ANY(CAST(:sources AS text[])))"
            " ORDER BY a.published_at DESC, a.id DESC LIMIT :limit"
        ),
        {
            "version": version,
            "start": start,
            "end": end,
            "q": q,
            "tickers": list(tickers) or None,
            "topics": list(topics) or None,
            "sentiments": list(sentiments) or None,
            "sources": list(sources) or None,
            "limit": limit,
        },
    )
    return [dict(r._mapping) for r in rows]


def _search_by_topic(
    conn: Connection,
    version: str,
    start: datetime,
    end: datetime,
    topics: Sequence[str],
    sentiments: Sequence[str],
    limit: int,
) -> list[dict[str, Any]]:
    """``search_stories`` filtered by topic (and sentiment) only: newest first from the scores' index.

    The index on (version, topic, sentiment, published_at) reads each (topic, sentiment) pair newest
    first, so one branch per pair, merged, stops after ``limit`` rows, however rare the topic or long the
    range. (One query with ``topic = ANY(...)`` would have to collect every match before sorting.)
    """
    pairs = [(t, snt) for t in dict.fromkeys(topics) for snt in dict.fromkeys(sentiments or SENTIMENT_NAMES)]
    params: dict[str, Any] = {"version": version, "start": start, "end": end, "limit": limit}
    branches = []
    for i, (topic, sentiment) in enumerate(pairs):
        params[f"topic_{i}"], params[f"sentiment_{i}"] = topic, sentiment
        branches.append(
            f"(SELECT {_STORY_COLUMNS.format(t='s')}"
            " FROM scores s"
            " JOIN articles a ON a.id = s.article_id"
            " JOIN sources src ON src.id = a.source_id"
            f" WHERE s.model_version = :version AND s.topic = :topic_{i} AND s.sentiment = :sentiment_{i}"
            "   AND s.published_at >= :start AND s.published_at < :end"
            " ORDER BY s.published_at DESC, s.article_id DESC LIMIT :limit)"
        )
    rows = conn.execute(
        sa.text(
            "SELECT * FROM (" + " UNION ALL ".join(branches) + ") AS newest"
            " ORDER BY published_at DESC, id DESC LIMIT :limit"
        ),
        params,
    )
    return [dict(r._mapping) for r in rows]


def model_version_history(conn: Connection) -> list[dict[str, Any]]:
    """Return every model version, newest first, with the articles its rollups count (``articles``).

    Rows: ``version, name, path, metrics, created_at, active, articles, first_bucket, last_bucket``.
    """
    rows = conn.execute(
        sa.text(
            "SELECT mv.version, mv.name, mv.path, mv.metrics, mv.created_at, mv.active,"
            " COALESCE(r.articles, 0)::bigint AS articles, r.first_bucket, r.last_bucket"
            " FROM model_versions mv LEFT JOIN ("
            "   SELECT model_version, sum(articles) AS articles, min(bucket) AS first_bucket,"
            "          max(bucket) AS last_bucket"
            "   FROM rollups_hourly WHERE dimension = 'all' GROUP BY model_version"
            " ) r ON r.model_version = mv.version"
            " ORDER BY mv.active DESC, mv.created_at DESC, mv.version"
        )
    )
    return [dict(r._mapping) for r in rows]


def sentiment_totals(conn: Connection, version: str) -> dict[str, Any]:
    """Return ``articles, negative, neutral, positive, score_sum`` over all of ``version``'s rollups."""
    row = conn.execute(
        sa.text(
            "SELECT COALESCE(sum(articles), 0)::bigint AS articles,"
            " COALESCE(sum(negative), 0)::bigint AS negative, COALESCE(sum(neutral), 0)::bigint AS neutral,"
            " COALESCE(sum(positive), 0)::bigint AS positive, COALESCE(sum(score_sum), 0) AS score_sum"
            " FROM rollups_hourly WHERE model_version = :version AND dimension = 'all'"
        ),
        {"version": version},
    ).one()
    return dict(row._mapping)


def score_histogram(conn: Connection, version: str, bins: int, max_rows: int) -> dict[str, Any]:
    """Return a histogram of ``version``'s scores over [-1, 1] in ``bins`` equal bins.

    Counts come from a block sample of about ``max_rows`` score rows (all rows when the table is smaller),
    so the page stays fast at any size: ``{"sample_percent": p, "counts": [n per bin]}``.
    """
    estimate = conn.execute(
        sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST('scores' AS regclass)")
    ).scalar_one()
    percent = 100.0 if estimate <= max_rows else max(0.01, 100.0 * max_rows / float(estimate))
    rows = conn.execute(
        sa.text(
            "SELECT LEAST(width_bucket(score, -1, 1, :bins), :bins) AS bin, count(*) AS n"
            " FROM scores TABLESAMPLE SYSTEM (:percent) REPEATABLE (7)"
            " WHERE model_version = :version GROUP BY 1"
        ),
        {"bins": bins, "percent": percent, "version": version},
    )
    counts = [0] * bins
    for r in rows:
        counts[max(1, int(r.bin)) - 1] += int(r.n)
    return {"sample_percent": percent, "counts": counts}
