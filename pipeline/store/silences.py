"""The silences table (the rules about silences live in ``pipeline.alerts.silences``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def add_silence(
    conn: Connection,
    *,
    rule: str | None,
    dimension: str | None,
    value: str | None,
    starts_at: datetime,
    ends_at: datetime,
    comment: str,
    created_by: str | None,
) -> int:
    """Insert a silence; return its id."""
    return int(
        conn.execute(
            sa.text(
                "INSERT INTO alert_silences (rule, dimension, value, starts_at, ends_at, comment, created_by)"
                " VALUES (:rule, :dimension, :value, :starts_at, :ends_at, :comment, :created_by)"
                " RETURNING id"
            ),
            {
                "rule": rule,
                "dimension": dimension,
                "value": value,
                "starts_at": starts_at,
                "ends_at": ends_at,
                "comment": comment,
                "created_by": created_by,
            },
        ).scalar_one()
    )


_SILENCE_COLUMNS = (
    "id, rule, dimension, value, starts_at, ends_at, comment, created_by, created_at, expired_at"
)


def active_silences(conn: Connection, at: datetime) -> list[sa.Row[Any]]:
    """Return the silences in force at ``at``."""
    rows = conn.execute(
        sa.text(
            f"SELECT {_SILENCE_COLUMNS} FROM alert_silences"
            " WHERE starts_at <= :at AND ends_at > :at AND (expired_at IS NULL OR expired_at > :at)"
            " ORDER BY id"
        ),
        {"at": at},
    )
    return list(rows)


def list_silences(conn: Connection, now: datetime, include_expired: bool) -> list[sa.Row[Any]]:
    """Return silences not yet over at ``now`` (or all of them), by start."""
    rows = conn.execute(
        sa.text(
            f"SELECT {_SILENCE_COLUMNS} FROM alert_silences"
            " WHERE :all OR (ends_at > :now AND (expired_at IS NULL OR expired_at > :now))"
            " ORDER BY starts_at, id"
        ),
        {"now": now, "all": include_expired},
    )
    return list(rows)


def expire_silence(conn: Connection, silence_id: int, now: datetime) -> bool:
    """End silence ``silence_id`` at ``now``; return False when there is no such silence still in force."""
    return (
        conn.execute(
            sa.text(
                "UPDATE alert_silences SET expired_at = :now"
                " WHERE id = :id AND ends_at > :now AND (expired_at IS NULL OR expired_at > :now)"
            ),
            {"id": silence_id, "now": now},
        ).rowcount
        == 1
    )
