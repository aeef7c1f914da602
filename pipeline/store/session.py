"""Per-session settings (a long ingest run sets them on its connection) and the raw DB-API cursor."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def relax_commit_durability(conn: Connection) -> None:
    """Let this session's COMMITs return before their WAL reaches disk (no risk of corruption).

    For ingest batches: articles and the validators that vouch for them commit together, so a batch lost
    in a crash takes its validators with it and is simply fetched again on the next poll.
    """
    conn.execute(sa.text("SET synchronous_commit TO OFF"))


def guard_session(conn: Connection, idle_in_transaction_s: float, lock_timeout_s: float) -> None:
    """Bound what a dead or stuck client of this session can hold: the server ends a transaction left
    idle for ``idle_in_transaction_s``; a statement gives up after ``lock_timeout_s`` waiting for a lock."""
    conn.execute(
        sa.text(
            "SELECT set_config('idle_in_transaction_session_timeout', :idle, false),"
            " set_config('lock_timeout', :lock, false)"
        ),
        {"idle": f"{round(idle_in_transaction_s * 1000)}ms", "lock": f"{round(lock_timeout_s * 1000)}ms"},
    )


def restore_commit_durability(conn: Connection) -> None:
    """Undo :func:`relax_commit_durability` and :func:`guard_session` before the connection goes back to
    the pool."""
    conn.execute(sa.text("RESET synchronous_commit"))
    conn.execute(sa.text("RESET idle_in_transaction_session_timeout"))
    conn.execute(sa.text("RESET lock_timeout"))


def dbapi_cursor(conn: Connection) -> Any:
    """Return a raw DB-API cursor on ``conn``'s transaction, for what SQLAlchemy text cannot send:
    many-statement scripts and COPY."""
    raw = conn.connection.dbapi_connection
    if raw is None:
        raise RuntimeError("the connection has been closed")
    return raw.cursor()
