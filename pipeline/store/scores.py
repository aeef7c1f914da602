"""Model versions and scores: registering and activating versions, pending articles, inserting scores."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection


@dataclass(frozen=True)
class ScoreRow:
    """One article's classification by one model version, as stored in ``scores``."""

    article_id: int
    topic: str
    topic_probs: dict[str, float]
    sentiment: str
    sentiment_probs: dict[str, float]
    score: float


def register_model_version(
    conn: Connection, version: str, name: str | None, path: str | None, metrics: dict[str, Any] | None
) -> bool:
    """Insert model version ``version`` (inactive); return whether it is new.

    A known version keeps its row but takes the new path (the model directory moved) and, when given,
    the new metrics.
    """
    row = conn.execute(
        sa.text(
            "INSERT INTO model_versions (version, name, path, metrics)"
            " VALUES (:version, :name, :path, CAST(:metrics AS jsonb))"
            " ON CONFLICT (version) DO UPDATE SET path = COALESCE(EXCLUDED.path, model_versions.path),"
            "   name = COALESCE(EXCLUDED.name, model_versions.name),"
            "   metrics = COALESCE(EXCLUDED.metrics, model_versions.metrics)"
            " RETURNING (xmax = 0) AS inserted"
        ),
        {
            "version": version,
            "name": name,
            "path": path,
            "metrics": None if metrics is None else json.dumps(metrics, sort_keys=True),
        },
    )
    return bool(row.scalar_one())


def model_version(conn: Connection, version: str) -> sa.Row[Any] | None:
    """Return the ``model_versions`` row of ``version``, or None."""
    return conn.execute(
        sa.text(
            "SELECT version, name, path, metrics, created_at, active FROM model_versions WHERE version = :v"
        ),
        {"v": version},
    ).one_or_none()


def active_model_version(conn: Connection) -> str | None:
    """Return the active model version, or None when no version is active yet."""
    return conn.execute(sa.text("SELECT version FROM model_versions WHERE active")).scalar_one_or_none()


def model_versions(conn: Connection) -> list[sa.Row[Any]]:
    """Return every model version with its ``scored`` count, newest first."""
    rows = conn.execute(
        sa.text(
            "SELECT mv.version, mv.name, mv.path, mv.metrics, mv.created_at, mv.active,"
            " (SELECT count(*) FROM scores s WHERE s.model_version = mv.version) AS scored"
            " FROM model_versions mv ORDER BY mv.created_at DESC, mv.version"
        )
    )
    return list(rows)


def activate_model_version(conn: Connection, version: str) -> bool:
    """Make ``version`` the only active model version; return False (changing nothing) if it is unknown."""
    exists = conn.execute(
        sa.text("SELECT 1 FROM model_versions WHERE version = :version FOR UPDATE"), {"version": version}
    ).scalar()
    if exists is None:
        return False
    # Two statements: the partial unique index is checked row by row, so one UPDATE flipping both rows
    # could briefly see two active versions.
    params = {"version": version}
    conn.execute(
        sa.text("UPDATE model_versions SET active = false WHERE active AND version <> :version"), params
    )
    conn.execute(sa.text("UPDATE model_versions SET active = true WHERE version = :version"), params)
    return True


def pending_articles(
    conn: Connection, version: str, after_id: int, limit: int, lead_chars: int
) -> list[sa.Row[Any]]:
    """Return up to ``limit`` articles with id > ``after_id`` that ``version`` has not scored, by id.

    Rows carry ``id``, ``title``, ``summary`` and ``lead`` (the body's first ``lead_chars`` characters).
    """
    rows = conn.execute(
        sa.text(
            "SELECT a.id, a.title, a.summary, left(a.body, :lead_chars) AS lead FROM articles a"
            " WHERE a.id > :after_id AND NOT EXISTS ("
            "   SELECT 1 FROM scores s WHERE s.article_id = a.id AND s.model_version = :version)"
            " ORDER BY a.id LIMIT :limit"
        ),
        {"version": version, "after_id": after_id, "limit": limit, "lead_chars": lead_chars},
    )
    return list(rows)


def count_pending_articles(conn: Connection, version: str) -> int:
    """Return how many articles ``version`` has not scored yet."""
    return conn.execute(
        sa.text(
            "SELECT count(*) FROM articles a WHERE NOT EXISTS ("
            " SELECT 1 FROM scores s WHERE s.article_id = a.id AND s.model_version = :version)"
        ),
        {"version": version},
    ).scalar_one()


def insert_scores(conn: Connection, version: str, rows: Sequence[ScoreRow]) -> list[int]:
    """Insert ``rows`` as ``version``'s scores; return the article ids actually inserted.

    Articles already scored by ``version`` (a rerun, a concurrent scorer) or deleted since they were
    read are skipped, not errors.
    """
    if not rows:
        return []
    result = conn.execute(
        sa.text(
            "INSERT INTO scores (article_id, model_version, topic, topic_probs, sentiment, sentiment_probs,"
            " score, published_at)"
            " SELECT t.article_id, :version, t.topic, CAST(t.topic_probs AS jsonb), t.sentiment,"
            "   CAST(t.sentiment_probs AS jsonb), t.score, a.published_at"
            " FROM unnest(CAST(:ids AS bigint[]), CAST(:topics AS text[]), CAST(:topic_probs AS text[]),"
            "             CAST(:sentiments AS text[]), CAST(:sentiment_probs AS text[]),"
            "             CAST(:scores AS real[]))"
            "   AS t(article_id, topic, topic_probs, sentiment, sentiment_probs, score)"
            " JOIN articles a ON a.id = t.article_id"
            " ON CONFLICT (article_id, model_version) DO NOTHING"
            " RETURNING article_id"
        ),
        {
            "version": version,
            "ids": [r.article_id for r in rows],
            "topics": [r.topic for r in rows],
            "topic_probs": [json.dumps(r.topic_probs, sort_keys=True) for r in rows],
            "sentiments": [r.sentiment for r in rows],
            "sentiment_probs": [json.dumps(r.sentiment_probs, sort_keys=True) for r in rows],
            "scores": [float(r.score) for r in rows],
        },
    )
    return sorted(result.scalars())
