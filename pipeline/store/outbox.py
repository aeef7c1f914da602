"""The email outbox: enqueue, claim with a lease, mark sent/unsent/unconfirmed, list, requeue."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def enqueue_email(conn: Connection, email: dict[str, Any]) -> int:
    """Queue one email (idempotent on ``group_key``); return its outbox id, new or existing."""
    new_id = conn.execute(
        sa.text(
            "INSERT INTO alert_outbox (group_key, message_id, transition, recipients, subject, body_text,"
            " body_html, next_attempt_at)"
            " VALUES (:group_key, :message_id, :transition, :recipients, :subject, :body_text, :body_html,"
            " :next_attempt_at)"
            " ON CONFLICT (group_key) DO NOTHING RETURNING id"
        ),
        email,
    ).scalar_one_or_none()
    if new_id is not None:
        return int(new_id)
    return int(
        conn.execute(
            sa.text("SELECT id FROM alert_outbox WHERE group_key = :group_key"),
            {"group_key": email["group_key"]},
        ).scalar_one()
    )


def link_events_to_email(conn: Connection, event_ids: Sequence[int], outbox_id: int) -> None:
    """Record which outbox email announces the transitions ``event_ids``."""
    conn.execute(
        sa.text("UPDATE alert_events SET outbox_id = :outbox_id WHERE id = ANY(:ids)"),
        {"outbox_id": outbox_id, "ids": list(event_ids)},
    )


def release_stale_claims(conn: Connection, claimed_before: datetime) -> int:
    """Mark emails claimed before ``claimed_before`` and never recorded as ``unconfirmed``; return how many.

    Their sender stopped (crashed) after claiming; the server may or may not have the message, so they
    are not resent automatically (a duplicate alert email is the failure this outbox exists to prevent).
    """
    return conn.execute(
        sa.text(
            "UPDATE alert_outbox SET status = 'unconfirmed',"
            " last_error = COALESCE(last_error || '; ', '') || 'sender stopped after claiming at '"
            "   || claimed_at::text || '; delivery not confirmed, not resent'"
            " WHERE status = 'sending' AND claimed_at < :claimed_before"
        ),
        {"claimed_before": claimed_before},
    ).rowcount


def claim_due_email(conn: Connection, now: datetime) -> sa.Row[Any] | None:
    """Claim the oldest pending email due at ``now`` (status ``sending``, one more attempt); return it."""
    return conn.execute(
        sa.text(
            "UPDATE alert_outbox SET status = 'sending', claimed_at = :now, attempts = attempts + 1"
            " WHERE id = (SELECT id FROM alert_outbox WHERE status = 'pending' AND next_attempt_at <= :now"
            "             ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, message_id, transition, recipients, subject, body_text, body_html, attempts,"
            "   created_at"
        ),
        {"now": now},
    ).one_or_none()


def mark_email_sent(conn: Connection, outbox_id: int, now: datetime) -> None:
    """Record that the SMTP server accepted email ``outbox_id``."""
    conn.execute(
        sa.text(
            "UPDATE alert_outbox SET status = 'sent', sent_at = :now, last_error = NULL"
            " WHERE id = :id AND status = 'sending'"
        ),
        {"id": outbox_id, "now": now},
    )


def mark_email_unsent(conn: Connection, outbox_id: int, error: str, next_attempt_at: datetime | None) -> None:
    """Record an attempt that surely did not deliver: retry at ``next_attempt_at`` (None: give up)."""
    conn.execute(
        sa.text(
            "UPDATE alert_outbox SET last_error = :error, claimed_at = NULL,"
            " status = CASE WHEN CAST(:next AS timestamptz) IS NULL THEN 'failed' ELSE 'pending' END,"
            " next_attempt_at = COALESCE(CAST(:next AS timestamptz), next_attempt_at)"
            " WHERE id = :id AND status = 'sending'"
        ),
        {"id": outbox_id, "error": error, "next": next_attempt_at},
    )


def mark_email_unconfirmed(conn: Connection, outbox_id: int, error: str) -> None:
    """Record an attempt that failed after the message was handed over: it is not resent automatically."""
    conn.execute(
        sa.text(
            "UPDATE alert_outbox SET status = 'unconfirmed', last_error = :error"
            " WHERE id = :id AND status = 'sending'"
        ),
        {"id": outbox_id, "error": error},
    )


def outbox_counts(conn: Connection) -> dict[str, int]:
    """Return ``{status: emails}`` over the whole outbox."""
    rows = conn.execute(sa.text("SELECT status, count(*) FROM alert_outbox GROUP BY status"))
    return {status: int(n) for status, n in rows}


def outbox_emails(conn: Connection, status: str | None = None) -> list[sa.Row[Any]]:
    """Return every outbox email (or those in ``status``) with its delivery bookkeeping, oldest first."""
    rows = conn.execute(
        sa.text(
            "SELECT id, group_key, message_id, transition, recipients, subject, body_text, body_html, status,"
            " attempts, next_attempt_at, claimed_at, sent_at, last_error, created_at"
            " FROM alert_outbox WHERE CAST(:status AS text) IS NULL OR status = :status ORDER BY id"
        ),
        {"status": status},
    )
    return list(rows)


def requeue_email(conn: Connection, outbox_id: int, now: datetime) -> str | None:
    """Return the status email ``outbox_id`` had (None: no such email); a ``failed`` or ``unconfirmed``
    one goes back to ``pending`` with its attempts reset, any other is left as it is."""
    return conn.execute(
        sa.text(
            "WITH old AS (SELECT id, status FROM alert_outbox WHERE id = :id FOR UPDATE),"
            " requeued AS ("
            "   UPDATE alert_outbox AS o SET status = 'pending', attempts = 0, next_attempt_at = :now,"
            "   claimed_at = NULL,"
            "   last_error = COALESCE(o.last_error || '; ', '') || 'requeued by an operator at ' || :now_text"
            "   FROM old WHERE o.id = old.id AND old.status IN ('failed', 'unconfirmed') RETURNING o.id)"
            " SELECT status FROM old"
        ),
        {"id": outbox_id, "now": now, "now_text": now.isoformat(timespec="seconds")},
    ).scalar_one_or_none()
