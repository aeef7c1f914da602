"""The ``finsent db migrate`` and ``finsent ingest`` commands, run in-process against real servers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import get_settings
from pipeline.demo.feeds import FeedItem, rss_document
from pipeline.demo.feedserver import FeedServer

NOW = datetime.now(UTC).replace(microsecond=0)
ITEMS = [
    FeedItem(
        "Copper climbs to two-year high on supply disruptions in Chile",
        "https://metals.example/copper-high",
        "Copper futures rose 2% as strikes hit two mines.",
        timedelta(hours=1),
    ),
    FeedItem(
        "Yen weakens past 155 per dollar as BOJ holds policy steady",
        "https://metals.example/yen-boj",
        "The Bank of Japan kept rates unchanged on Friday.",
        timedelta(hours=2),
    ),
]


@pytest.fixture
def private_hosts(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    monkeypatch.setenv("FINSENT_ALLOWED_HOSTS", "127.0.0.1")  # the loopback feed server
    monkeypatch.setenv("FINSENT_RETRIES", "0")
    get_settings.cache_clear()


def test_db_migrate_reports_an_up_to_date_schema(db_url: str) -> None:
    result = CliRunner().invoke(app, ["db", "migrate"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_ingest_json_last_line_has_the_totals(private_hosts: None, engine: Engine, tmp_path: Path) -> None:
    with FeedServer() as server:
        good = server.add("/metals.rss", rss_document("Metals", "https://metals.example/", ITEMS, NOW))
        bad = server.add("/broken.rss", b"<html><title>Oops</title></html>", "text/html")
        path = tmp_path / "feeds.yaml"
        path.write_text(
            f"- {{name: metals, url: '{good}', tags: [commodities]}}\n- {{name: broken, url: '{bad}'}}\n"
        )
        result = CliRunner().invoke(app, ["ingest", "--sources", str(path), "--json"])

    assert result.exit_code == 0, result.output
    totals = json.loads(result.output.strip().splitlines()[-1])
    keys = ("sources_ok", "sources_failed", "items_seen", "items_new", "duplicates")
    assert [totals[k] for k in keys] == [1, 1, 2, 2, 0]
    assert totals["bytes"] > 0
    # The readable table names both sources and the broken one's error (possibly wrapped over lines).
    assert "metals" in result.output and "broken" in result.output and "HTML" in result.output
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM articles")).scalar_one() == 2
        error = conn.execute(sa.text("SELECT error FROM fetch_log WHERE status = 'error'")).scalar_one()
    assert error.startswith(f"broken: {bad}: got an HTML page")


def test_ingest_with_a_bad_sources_file_exits_2_naming_it(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text("- {name: x, url: 'ftp://example.com/feed'}\n")
    result = CliRunner().invoke(app, ["ingest", "--sources", str(path)])
    assert result.exit_code == 2
    assert "feeds.yaml" in result.output and "entry 1 (x): field 'url': only http(s)" in result.output


def test_ingest_exits_1_when_every_source_failed(private_hosts: None, tmp_path: Path) -> None:
    with FeedServer() as server:
        url = server.add("/gone.rss", b"", status=500)
        path = tmp_path / "feeds.yaml"
        path.write_text(f"- {{name: gone, url: '{url}'}}\n")
        result = CliRunner().invoke(app, ["ingest", "--sources", str(path), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output.strip().splitlines()[-1])["sources_failed"] == 1


def test_ingest_on_a_fresh_database_creates_the_schema_first(
    empty_db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_db_url)
    monkeypatch.setenv("FINSENT_ALLOWED_HOSTS", "127.0.0.1")
    get_settings.cache_clear()
    try:
        with FeedServer() as server:
            url = server.add("/metals.rss", rss_document("Metals", "https://metals.example/", ITEMS, NOW))
            path = tmp_path / "feeds.yaml"
            path.write_text(f"- {{name: metals, url: '{url}'}}\n")
            result = CliRunner().invoke(app, ["ingest", "--sources", str(path), "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["items_new"] == 2
