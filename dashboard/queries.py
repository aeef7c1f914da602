"""Cached reads for the dashboard pages: each wraps one store function on a read-only connection.

Results are cached per database URL and arguments for ``TTL_S`` seconds (``st.cache_data``), so a page
rerun or a second viewer costs no query; callers round "now" to the minute to share cache entries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
import streamlit as st
from sqlalchemy.engine import Engine

from pipeline import store
from pipeline.config import get_settings
from pipeline.store import db

TTL_S = 60


@st.cache_resource(show_spinner=False)
def _resolved_url(dashboard_url: str | None, database_url: str | None) -> str:
    # Cached: without DATABASE_URL, resolving starts (or finds) the embedded server, a slow call.
    if dashboard_url:
        return db.sqlalchemy_url(dashboard_url, setting="FINSENT_DASHBOARD_DATABASE_URL")
    return db.database_url()


def database_url() -> str:
    """Return the URL the dashboard reads: FINSENT_DASHBOARD_DATABASE_URL, else DATABASE_URL/embedded."""
    settings = get_settings()
    return _resolved_url(settings.dashboard_database_url, settings.database_url)


def database_problem() -> str | None:
    """Return one line saying why the dashboard cannot read its database, or None when it can."""
    try:
        with db.one_line_errors(dashboard=True), read_only_engine(database_url()).connect():
            return None
    except db.DatabaseUnavailable as exc:
        return str(exc)


def read_only_engine(url: str) -> Engine:
    """Return the dashboard's pooled engine on ``url``: every connection is read-only (see store)."""
    return _read_only_engine(url)


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    store.prepare_read_only_session(dbapi_connection)


@st.cache_resource(show_spinner=False)
def _read_only_engine(url: str) -> Engine:
    engine = sa.create_engine(db.sqlalchemy_url(url), pool_pre_ping=True, pool_size=4, max_overflow=4)
    sa.event.listen(engine, "connect", _on_connect)
    return engine


def now_minute() -> datetime:
    """Return the current UTC time floored to the minute (so cache keys repeat within a minute)."""
    return datetime.now(UTC).replace(second=0, microsecond=0)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def model_version(url: str) -> str | None:
    """Return the model version the dashboard shows (active, else latest rolled up)."""
    with read_only_engine(url).connect() as conn:
        return store.dashboard_version(conn)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def filter_values(url: str, version: str, since: datetime) -> dict[str, list[str]]:
    """Return the topics, tickers and sources seen since ``since``, busiest first."""
    with read_only_engine(url).connect() as conn:
        return store.dashboard_filter_values(conn, version, since)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def series(
    url: str,
    version: str,
    dimension: str,
    values: tuple[str, ...] | None,
    start: datetime,
    end: datetime,
    grain: str,
) -> pd.DataFrame:
    """Return summed rollup counts per value and period, with ``sentiment_index`` and ``negative_share``."""
    with read_only_engine(url).connect() as conn:
        rows = store.rollup_series(conn, version, dimension, values, start, end, grain)
    frame = pd.DataFrame(
        rows,
        columns=[
            "value",
            "period",
            "articles",
            "stories",
            "negative",
            "neutral",
            "positive",
            "neg_stories",
            "score_sum",
        ],
    )
    frame["sentiment_index"] = frame["score_sum"] / frame["articles"].where(frame["articles"] > 0)
    frame["negative_share"] = frame["neg_stories"] / frame["stories"].where(frame["stories"] > 0)
    return frame


@st.cache_data(ttl=TTL_S, show_spinner=False)
def headline_figures(
    url: str, version: str, day_start: datetime, window_start: datetime, base_start: datetime, end: datetime
) -> dict[str, Any]:
    """Return the Overview's metric-row counts (see ``store.headline_figures``)."""
    with read_only_engine(url).connect() as conn:
        return store.headline_figures(conn, version, day_start, window_start, base_start, end)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def alert_status_counts(url: str) -> dict[str, int]:
    """Return ``{status: alerts}`` of the open (pending, firing) alerts."""
    with read_only_engine(url).connect() as conn:
        return store.alert_status_counts(conn)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def alert_timeline(url: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Return the firing periods overlapping [start, end), newest first."""
    with read_only_engine(url).connect() as conn:
        rows = store.alert_timeline(conn, start, end)
    return pd.DataFrame(
        rows,
        columns=[
            "fingerprint",
            "rule",
            "dimension",
            "value",
            "severity",
            "fired_at",
            "resolved_at",
            "status",
            "neg_share",
            "baseline",
            "stories",
            "neg_stories",
            "base_stories",
            "p_value",
            "expected_negatives",
            "silenced",
            "inhibited_by",
            "released_at",
        ],
    )


@st.cache_data(ttl=TTL_S, show_spinner=False)
def negative_headlines(
    url: str, version: str, dimension: str, value: str, start: datetime, end: datetime, limit: int
) -> pd.DataFrame:
    """Return the most negative stories of one dimension value in [start, end), one row per story."""
    with read_only_engine(url).connect() as conn:
        rows = store.negative_headlines(conn, version, dimension, value, start, end, limit)
    return pd.DataFrame(
        [dict(r._mapping) for r in rows],
        columns=["title", "url", "source", "published_at", "score", "copies"],
    )


@st.cache_data(ttl=TTL_S, show_spinner=False)
def silences(url: str, now: datetime) -> pd.DataFrame:
    """Return the silences in force or scheduled at ``now``."""
    with read_only_engine(url).connect() as conn:
        rows = store.list_silences(conn, now, include_expired=False)
    return pd.DataFrame(
        [dict(r._mapping) for r in rows],
        columns=[
            "id",
            "rule",
            "dimension",
            "value",
            "starts_at",
            "ends_at",
            "comment",
            "created_by",
            "created_at",
            "expired_at",
        ],
    )


@st.cache_data(ttl=TTL_S, show_spinner=False)
def search_stories(
    url: str,
    version: str,
    start: datetime,
    end: datetime,
    text: str,
    tickers: tuple[str, ...],
    topics: tuple[str, ...],
    sentiments: tuple[str, ...],
    sources: tuple[str, ...],
    limit: int,
) -> pd.DataFrame:
    """Return the scored articles matching the Explorer's filters, newest first."""
    with read_only_engine(url).connect() as conn:
        rows = store.search_stories(
            conn,
            version,
            start=start,
            end=end,
            text=text,
            tickers=tickers,
            topics=topics,
            sentiments=sentiments,
            sources=sources,
            limit=limit,
        )
    frame = pd.DataFrame(
        rows,
        columns=[
            "id",
            "story_id",
            "published_at",
            "source",
            "title",
            "url",
            "tickers",
            "topic",
            "sentiment",
            "score",
        ],
    )
    frame["tickers"] = frame["tickers"].map(lambda t: " ".join(t or []))
    return frame


@st.cache_data(ttl=TTL_S, show_spinner=False)
def model_versions(url: str) -> pd.DataFrame:
    """Return every model version (active first) with the articles its rollups count."""
    with read_only_engine(url).connect() as conn:
        rows = store.model_version_history(conn)
    return pd.DataFrame(
        rows,
        columns=[
            "version",
            "name",
            "path",
            "metrics",
            "created_at",
            "active",
            "articles",
            "first_bucket",
            "last_bucket",
        ],
    )


@st.cache_data(ttl=TTL_S, show_spinner=False)
def sentiment_totals(url: str, version: str) -> dict[str, Any]:
    """Return the articles per sentiment class and the score sum over all of ``version``'s rollups."""
    with read_only_engine(url).connect() as conn:
        return store.sentiment_totals(conn, version)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def score_histogram(url: str, version: str, bins: int, max_rows: int) -> dict[str, Any]:
    """Return a (possibly sampled) histogram of ``version``'s scores over [-1, 1]."""
    with read_only_engine(url).connect() as conn:
        return store.score_histogram(conn, version, bins, max_rows)
