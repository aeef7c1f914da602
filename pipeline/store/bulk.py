"""COPY loading for seeded history (demo, benchmarks, dashboard tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.store.session import dbapi_cursor

# Seeding synthetic history (tests, the dashboard benchmark): bulk loads through COPY.
_COPY_TABLES = {
    "articles": (
        "id",
        "source_id",
        "guid",
        "url",
        "canonical_url",
        "title",
        "summary",
        "published_at",
        "fetched_at",
        "language",
        "content_hash",
        "title_hash",
        "story_id",
        "tickers",
    ),
    "scores": (
        "article_id",
        "model_version",
        "topic",
        "topic_probs",
        "sentiment",
        "sentiment_probs",
        "score",
        "scored_at",
        "published_at",
    ),
}


def copy_rows(conn: Connection, table: str, stream: Any) -> int:
    """Return the rows COPYed into ``table`` (articles or scores) from a CSV stream of its seed columns."""
    if table not in _COPY_TABLES:
        raise ValueError(f"copy_rows loads {sorted(_COPY_TABLES)}, not {table!r}")
    columns = ", ".join(_COPY_TABLES[table])
    cursor = dbapi_cursor(conn)
    try:
        cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)", stream)
        return int(cursor.rowcount)
    finally:
        cursor.close()


def seed_columns(table: str) -> tuple[str, ...]:
    """Return the column order ``copy_rows`` expects for ``table``."""
    return _COPY_TABLES[table]


def vacuum_analyze(conn: Connection, tables: Sequence[str]) -> None:
    """VACUUM ANALYZE ``tables`` after a bulk load (needs an AUTOCOMMIT connection).

    Sets the visibility map, so the dashboard's covering indexes answer with index-only scans at once
    instead of after the next autovacuum.
    """
    for table in tables:
        if table not in ("articles", "scores", "rollups_hourly", "sources"):
            raise ValueError(f"vacuum_analyze: {table!r} is not a seeded table")
        conn.exec_driver_sql(f"VACUUM ANALYZE {table}")


def sync_article_ids(conn: Connection) -> None:
    """Move the article id sequence past the highest stored id (after COPY with explicit ids)."""
    conn.execute(
        sa.text(
            "SELECT setval(pg_get_serial_sequence('articles', 'id'),"
            " GREATEST((SELECT max(id) FROM articles), 1))"
        )
    )
