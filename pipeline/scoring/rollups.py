"""Hourly rollups per dimension (all, topic, ticker, source): updated by scoring, rebuildable from scratch.

A rollup row counts, for one model version, dimension value and hour of ``published_at`` (UTC): articles,
distinct stories, articles per sentiment class, stories that are mostly negative, and the sum of scores
(mean score = ``score_sum / articles``). The alerts and the dashboard read these rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.engine import Connection, Engine

from pipeline import store
from pipeline.store.db import get_engine

log = logging.getLogger(__name__)

DIMENSIONS: tuple[str, ...] = ("all", "topic", "ticker", "source")
ALL_VALUE = "*"


def refresh_buckets(conn: Connection, model_version: str, article_ids: Sequence[int]) -> int:
    """Return the number of rollup buckets recomputed for newly scored ``article_ids``.

    Runs in the caller's transaction, the one that inserted those scores, so scores and rollups commit
    together; the lock keeps a concurrent scorer from recomputing the same bucket from a stale view.
    """
    if not article_ids:
        return 0
    store.lock_rollups(conn, model_version)
    return store.refresh_rollups(conn, model_version, article_ids)


def rebuild_rollups(
    engine: Engine | None = None, model_version: str | None = None, *, since: datetime | None = None
) -> dict[str, int]:
    """Return ``{model version: rollup rows}`` after recounting rollups from scores (all versions by default).

    Buckets from hour ``since`` on are replaced; by default that is the hour of the oldest stored article,
    so older buckets, whose articles retention has deleted, keep the only record of those hours. Each
    version is rebuilt in its own transaction; readers see the old rows until it commits.
    """
    engine = engine or get_engine()
    with engine.connect() as conn:
        versions = [model_version] if model_version else store.rollup_versions(conn)
        start = hour_floor(since) if since else store.first_article_hour(conn)
    written: dict[str, int] = {}
    if start is None:
        return dict.fromkeys(versions, 0)
    for version in versions:
        with engine.begin() as conn:
            store.lock_rollups(conn, version)
            written[version] = store.rebuild_rollups(conn, version, start)
        log.info("rebuilt %d rollup rows of model version %s from %s", written[version], version, start)
    return written


def hour_floor(moment: datetime) -> datetime:
    """Return the start of ``moment``'s UTC hour (naive times are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
