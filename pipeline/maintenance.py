"""Database upkeep for long unattended runs: retention, a rollup consistency check, planner statistics.

The ``finsent_maintenance`` DAG runs these daily; each is idempotent and safe next to live ingestion.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from pipeline import store
from pipeline.config import get_settings
from pipeline.store import db

log = logging.getLogger(__name__)

# Deleting in slices keeps each transaction (and the row locks it holds) short.
DELETE_SLICE = 5_000


class RollupInconsistencyError(RuntimeError):
    """Stored hourly rollups disagree with a recount of the scores they summarise."""


@dataclass(frozen=True)
class RetentionReport:
    cutoff: datetime
    articles_deleted: int
    fetch_log_deleted: int

    def as_dict(self) -> dict:
        return {**asdict(self), "cutoff": self.cutoff.isoformat()}


@dataclass(frozen=True)
class RollupCheckReport:
    since: datetime
    mismatches: list[dict] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not self.mismatches

    def as_dict(self) -> dict:
        return {"since": self.since.isoformat(), "consistent": self.consistent, "mismatches": self.mismatches}


def hour_floor(moment: datetime) -> datetime:
    """Return ``moment`` truncated to the start of its UTC hour."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def apply_retention(
    engine: Engine | None = None, *, days: int | None = None, now: datetime | None = None
) -> RetentionReport:
    """Return what was deleted: articles (with their scores) and fetch log rows older than ``days``.

    Hourly rollups are kept: trends outlive the raw articles behind them.
    """
    engine = engine or db.get_engine()
    days = get_settings().retention_days if days is None else days
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    with engine.connect() as conn:
        due, oldest = store.articles_before(conn, cutoff)
    # Said before anything goes: the first run after enabling retention may delete years of history.
    log.warning(
        "retention (FINSENT_RETENTION_DAYS=%d): deleting %d articles published before %s%s, with their "
        "scores; hourly rollups are kept",
        days,
        due,
        cutoff.isoformat(timespec="minutes"),
        f" (the oldest from {oldest.isoformat(timespec='minutes')})" if oldest else "",
    )
    articles = 0
    while True:
        with engine.begin() as conn:
            deleted = store.delete_articles_before(conn, cutoff, DELETE_SLICE)
        articles += deleted
        if deleted < DELETE_SLICE:
            break
    with engine.begin() as conn:
        fetch_log = store.delete_fetch_log_before(conn, cutoff)
    return RetentionReport(cutoff=cutoff, articles_deleted=articles, fetch_log_deleted=fetch_log)


def check_rollups(
    engine: Engine | None = None, *, days: int = 7, now: datetime | None = None, limit: int = 20
) -> RollupCheckReport:
    """Return the rollup buckets of the last ``days`` whose counts differ from a recount (up to ``limit``)."""
    engine = engine or db.get_engine()
    since = hour_floor((now or datetime.now(UTC)) - timedelta(days=days))
    with engine.connect() as conn:
        rows = store.rollup_mismatches(conn, since, limit)
    mismatches = [{**row._asdict(), "bucket": row.bucket.isoformat()} for row in rows]
    return RollupCheckReport(since=since, mismatches=mismatches)


def verify_rollups(engine: Engine | None = None, *, days: int = 7, now: datetime | None = None) -> dict:
    """Return the check report as a dict; raise RollupInconsistencyError naming the first bad bucket."""
    report = check_rollups(engine, days=days, now=now)
    if not report.consistent:
        first = report.mismatches[0]
        raise RollupInconsistencyError(
            f"{len(report.mismatches)}+ rollup buckets since {report.since.isoformat()} disagree with the "
            f"scores, first: {first['model_version']}/{first['dimension']}={first['value']} at "
            f"{first['bucket']} (articles stored {first['stored_articles']}, "
            f"recounted {first['expected_articles']})"
        )
    return report.as_dict()


def analyze(engine: Engine | None = None) -> list[str]:
    """Return the tables whose planner statistics were refreshed."""
    engine = engine or db.get_engine()
    with engine.begin() as conn:
        return store.analyze_tables(conn)
