"""Schema bookkeeping for ``db.migrate``: databases, the migration lock and the applied-migrations table."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.store.session import dbapi_cursor


def database_exists(conn: Connection, name: str) -> bool:
    """Return whether a database called ``name`` exists on the server."""
    row = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name})
    return row.scalar() is not None


def create_database(conn: Connection, name: str) -> None:
    """Create database ``name`` (an identifier, so quoted, not bound; needs an AUTOCOMMIT connection)."""
    quoted = conn.dialect.identifier_preparer.quote(name)
    conn.exec_driver_sql(f"CREATE DATABASE {quoted}")


def drop_database(conn: Connection, name: str) -> None:
    """Drop database ``name``, ending its sessions (PostgreSQL ≥ 13; needs an AUTOCOMMIT connection)."""
    quoted = conn.dialect.identifier_preparer.quote(name)
    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")


def lock_migrations(conn: Connection, lock_id: int) -> None:
    """Take the session-level advisory lock that serialises concurrent migrators."""
    conn.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})


def unlock_migrations(conn: Connection, lock_id: int) -> None:
    conn.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})


def ensure_migrations_table(conn: Connection) -> None:
    conn.execute(
        sa.text(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
    )


def applied_migrations(conn: Connection) -> dict[str, str]:
    """Return ``{version: checksum}`` of the migrations already applied."""
    rows = conn.execute(sa.text("SELECT version, checksum FROM schema_migrations"))
    return {row.version: row.checksum for row in rows}


def apply_migration_sql(conn: Connection, sql: str) -> None:
    """Run a whole migration file (many statements) on the current transaction."""
    # The raw DB-API cursor without parameters sends the text as is: '%' is no placeholder there.
    dbapi_cursor(conn).execute(sql)


def record_migration(conn: Connection, version: str, name: str, checksum: str) -> None:
    conn.execute(
        sa.text("INSERT INTO schema_migrations (version, name, checksum) VALUES (:v, :n, :c)"),
        {"v": version, "n": name, "c": checksum},
    )
