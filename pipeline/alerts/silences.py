"""Silences: mute matching alerts for a while. Every rule about silences lives here, so the CLI, the
dashboard form and any DAG task obey the same limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from pipeline import store

MAX_SILENCE = timedelta(days=366)


class SilenceError(ValueError):
    """A silence that cannot be created or expired; the message says why."""


def check_silence(
    rule: str | None, dimension: str | None, value: str | None, starts_at: datetime, ends_at: datetime
) -> datetime:
    """Return ``starts_at`` in UTC; raise SilenceError unless the silence matches something and lasts
    from a start before its end for at most ``MAX_SILENCE``.

    Every way of adding a silence (CLI, dashboard, an Airflow task) passes through here: a silence that
    never ends would quietly switch alerting off.
    """
    if rule is None and dimension is None and value is None:
        raise SilenceError("a silence needs at least one matcher: --rule, --dimension or --value")
    starts_at, ends_at = starts_at.astimezone(UTC), ends_at.astimezone(UTC)
    if ends_at <= starts_at:
        raise SilenceError(f"silence ends ({ends_at.isoformat()}) before it starts ({starts_at.isoformat()})")
    if ends_at - starts_at > MAX_SILENCE:
        raise SilenceError(f"a silence may last at most a year ({MAX_SILENCE.days} days)")
    return starts_at


def add_silence(
    *,
    rule: str | None = None,
    dimension: str | None = None,
    value: str | None = None,
    starts_at: datetime | None = None,
    ends_at: datetime,
    comment: str = "",
    created_by: str | None = None,
    engine: Engine | None = None,
) -> int:
    """Return the id of a new silence muting alerts that match the glob patterns from starts_at to ends_at."""
    from pipeline.store.db import get_engine

    starts_at = check_silence(rule, dimension, value, starts_at or datetime.now(UTC), ends_at)
    with (engine or get_engine()).begin() as conn:
        return store.add_silence(
            conn,
            rule=rule,
            dimension=dimension,
            value=value,
            starts_at=starts_at,
            ends_at=ends_at,
            comment=comment,
            created_by=created_by,
        )


def list_silences(
    now: datetime | None = None, *, include_expired: bool = False, engine: Engine | None = None
) -> list[dict[str, Any]]:
    """Return the silences still in force or yet to start at ``now`` (or all), as dicts with a ``state``."""
    from pipeline.store.db import get_engine

    now = (now or datetime.now(UTC)).astimezone(UTC)
    with (engine or get_engine()).connect() as conn:
        rows = [dict(r._mapping) for r in store.list_silences(conn, now, include_expired)]
    for row in rows:
        over = row["ends_at"] <= now or (row["expired_at"] is not None and row["expired_at"] <= now)
        row["state"] = "expired" if over else ("active" if row["starts_at"] <= now else "scheduled")
    return rows


def expire_silence(silence_id: int, now: datetime | None = None, *, engine: Engine | None = None) -> None:
    """End silence ``silence_id`` now; raise SilenceError when there is no such silence in force."""
    from pipeline.store.db import get_engine

    now = (now or datetime.now(UTC)).astimezone(UTC)
    with (engine or get_engine()).begin() as conn:
        if not store.expire_silence(conn, silence_id, now):
            raise SilenceError(f"no silence {silence_id} in force (unknown id, or already over)")
