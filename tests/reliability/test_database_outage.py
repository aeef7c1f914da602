"""PostgreSQL stops in the middle of `finsent score` (its fast shutdown, as on a host reboot or a failover),
or the shared server ends its sessions: the run ends with one line naming the database, and the next run,
once the server is back, finishes the work with no score, rollup or article lost or doubled. Real
processes against a real embedded server and the server on 127.0.0.1:5432."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline import maintenance
from pipeline.config import Settings
from pipeline.store import db
from tests.fixtures.postgres import end_sessions, local_server_stopped, require_local_cluster
from tests.fixtures.scoring import add_articles, varied_articles

ARTICLES = 20_000


def finsent(home: Path, *args: str, database_url: str | None = None) -> subprocess.Popen[str]:
    """Start ``finsent ARGS`` on the embedded server under ``home``, or on ``database_url``."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"FINSENT_HOME": str(home)}
    if database_url:
        env["DATABASE_URL"] = database_url
    code = "from pipeline.cli import app; app()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def embedded_url(home: Path) -> str:
    """Return the embedded server's URL, asked of a child process: importing the embedded server here
    would leave an exit hook in the test process that logs after pytest has closed its output."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"FINSENT_HOME": str(home)}
    code = "from pipeline.store import db; print(db.database_url())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def wait_for_scores(engine: sa.Engine, run: subprocess.Popen[str], wanted: int = 200) -> None:
    """Wait until ``run`` has committed ``wanted`` scores and is still going: mid-run."""
    deadline = time.monotonic() + 120
    while count(engine, "SELECT count(*) FROM scores") < wanted and time.monotonic() < deadline:
        assert run.poll() is None, run.communicate()
        time.sleep(0.05)
    engine.dispose()


def assert_one_line_database_error(returncode: int, out: str, err: str) -> None:
    lines = err.strip().splitlines()
    assert returncode == 1 and len(lines) == 1, (out, err)
    assert lines[0].startswith("error: cannot use the database at "), err
    assert "Traceback" not in out + err


def assert_rerun_scores_the_rest(home: Path, model: Path, database_url: str | None = None) -> None:
    """Rerun ``finsent score`` on ``database_url`` (default: the embedded server under ``home``); then
    every article has exactly one score, and the rollups match the scores."""
    rerun = finsent(home, "score", "--model", str(model), database_url=database_url)
    _out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    engine = sa.create_engine(database_url or embedded_url(home), pool_pre_ping=True)
    try:
        assert count(engine, "SELECT count(*) FROM scores") == ARTICLES
        assert count(engine, "SELECT count(DISTINCT (article_id, model_version)) FROM scores") == ARTICLES
        assert count(engine, "SELECT count(*) FROM articles") == ARTICLES
        assert maintenance.check_rollups(engine, days=3650).consistent  # rollups match the scores
    finally:
        engine.dispose()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="stops the server by pid")
def test_score_stopped_by_a_database_shutdown_reruns_to_exactly_one_score_per_article(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home)
    migrated = finsent(home, "db", "migrate")
    assert migrated.wait(timeout=180) == 0, migrated.communicate()[1]
    engine = sa.create_engine(embedded_url(home), pool_pre_ping=True)
    try:
        add_articles(engine, varied_articles(ARTICLES))
        run = finsent(home, "score", "--model", str(tiny_model_dir), "--batch-size", "8")
        wait_for_scores(engine, run)
        assert db.stop_embedded_server(settings) is not None  # mid-run: scores are being written
        out, err = run.communicate(timeout=120)
        assert_one_line_database_error(run.returncode, out, err)
        # The next command starts the server again; the rerun scores what is left, nothing twice.
        assert_rerun_scores_the_rest(home, tiny_model_dir)
    finally:
        engine.dispose()
        db.stop_embedded_server(settings)


@contextmanager
def scoring_midway(home: Path, model: Path, db_url: str) -> Iterator[tuple[sa.Engine, subprocess.Popen[str]]]:
    """Store ARTICLES articles at ``db_url``, start ``finsent score`` in batches of 8, and yield (engine,
    run) once 200 scores are committed; a run still going on the way out is killed."""
    engine = sa.create_engine(db_url, pool_pre_ping=True)  # it outlives the outages the tests cause
    add_articles(engine, varied_articles(ARTICLES))
    run = finsent(home, "score", "--model", str(model), "--batch-size", "8", database_url=db_url)
    try:
        wait_for_scores(engine, run)
        yield engine, run
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        engine.dispose()


@pytest.mark.parametrize("pg_admin_url", ["local"], indirect=True)
def test_score_whose_sessions_the_shared_server_ends_goes_on_or_fails_in_one_line_and_converges(
    tmp_path: Path, tiny_model_dir: Path, pg_admin_url: str, db_url: str
) -> None:
    """The server on 127.0.0.1:5432 is shared and stays up: an administrator or a pooler ends the run's
    sessions (pg_terminate_backend) while batches are being written."""
    home = tmp_path / "home"
    with scoring_midway(home, tiny_model_dir, db_url) as (_engine, run):
        assert end_sessions(pg_admin_url, str(sa.make_url(db_url).database)) >= 1
        out, err = run.communicate(timeout=120)
    # Ended while idle between batches, a session is replaced at the next checkout (pre-ping) and the
    # run goes on; ended inside a batch, that batch fails and the run stops in one line. Either way the
    # rerun converges.
    if run.returncode == 0:
        assert out.startswith(f"scored {ARTICLES} articles"), (out, err)
    else:
        assert_one_line_database_error(run.returncode, out, err)
    assert_rerun_scores_the_rest(home, tiny_model_dir, database_url=db_url)


@pytest.mark.parametrize("pg_admin_url", ["local"], indirect=True)
def test_score_on_the_shared_server_stopped_midway_fails_in_one_line_and_the_rerun_converges(
    tmp_path: Path, tiny_model_dir: Path, pg_admin_url: str, db_url: str
) -> None:
    """The server on 127.0.0.1:5432 itself stopped (fast shutdown) mid-run, then started again."""
    require_local_cluster()
    home = tmp_path / "home"
    with scoring_midway(home, tiny_model_dir, db_url) as (engine, run):
        with local_server_stopped():
            out, err = run.communicate(timeout=120)
        assert_one_line_database_error(run.returncode, out, err)
        assert 200 <= count(engine, "SELECT count(*) FROM scores") < ARTICLES
    assert_rerun_scores_the_rest(home, tiny_model_dir, database_url=db_url)


@pytest.mark.parametrize("pg_admin_url", ["local"], indirect=True)
def test_score_sigkilled_mid_batch_leaves_nothing_half_written_and_the_rerun_converges(
    tmp_path: Path, tiny_model_dir: Path, db_url: str
) -> None:
    """SIGKILL (the OOM killer, a node lost): no handler runs, the open batch's transaction dies with the
    connection, and the next run scores exactly what is left."""
    home = tmp_path / "home"
    with scoring_midway(home, tiny_model_dir, db_url) as (engine, run):
        os.kill(run.pid, signal.SIGKILL)
        assert run.wait(timeout=30) == -signal.SIGKILL
        scored = count(engine, "SELECT count(*) FROM scores")
    assert 200 <= scored < ARTICLES and scored % 8 == 0  # whole batches only
    assert_rerun_scores_the_rest(home, tiny_model_dir, database_url=db_url)
