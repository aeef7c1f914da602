"""PostgreSQL stops in the middle of `finsent score` (its fast shutdown, as on a host reboot or a failover):
the run ends with one line naming the database, and the next run, once the server is back, finishes the
work with no score, rollup or article lost or doubled. Real processes against a real embedded server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline import maintenance
from pipeline.config import Settings
from pipeline.store import db
from tests.fixtures.scoring import add_articles, varied_articles

ARTICLES = 20_000


def finsent(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"FINSENT_HOME": str(home)}
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
        deadline = time.monotonic() + 120
        while count(engine, "SELECT count(*) FROM scores") < 200 and time.monotonic() < deadline:
            assert run.poll() is None, run.communicate()
            time.sleep(0.05)
        engine.dispose()
        assert db.stop_embedded_server(settings) is not None  # mid-run: scores are being written
        out, err = run.communicate(timeout=120)
        assert run.returncode == 1, (out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: cannot use the database at "), err
        assert "Traceback" not in err

        # The next command starts the server again; the rerun scores what is left, nothing twice.
        rerun = finsent(home, "score", "--model", str(tiny_model_dir))
        out, err = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, err
        engine = sa.create_engine(embedded_url(home), pool_pre_ping=True)
        assert count(engine, "SELECT count(*) FROM scores") == ARTICLES
        assert count(engine, "SELECT count(DISTINCT (article_id, model_version)) FROM scores") == ARTICLES
        assert count(engine, "SELECT count(*) FROM articles") == ARTICLES
        assert maintenance.check_rollups(engine, days=3650).consistent  # rollups match the scores
    finally:
        engine.dispose()
        db.stop_embedded_server(settings)
