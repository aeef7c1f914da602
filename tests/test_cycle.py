"""One full cycle against real servers: a loopback feed server, PostgreSQL, and a tiny real classifier."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import Settings, get_settings
from pipeline.cycle import run_cycle
from pipeline.ingest.sources import Source
from tests.fixtures.http_server import FaultyFeedServer
from tests.fixtures.scoring import HEADLINES


def _rss(count: int, start: datetime) -> bytes:
    items = "".join(
        f"<item><title>{HEADLINES[i % len(HEADLINES)]} (item {i})</title>"
        f"<link>https://news.example.com/story/{i}</link><guid>story-{i}</guid>"
        f"<pubDate>{format_datetime(start + timedelta(minutes=7 * i), usegmt=True)}</pubDate></item>"
        for i in range(count)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Markets</title>'
        f"<link>https://news.example.com/</link>{items}</channel></rss>"
    ).encode()


@pytest.fixture
def feed_sources(feed_server: FaultyFeedServer) -> list[Source]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    return [
        Source(name="markets", url=feed_server.add("/markets.xml", _rss(12, start))),
        Source(name="economy", url=feed_server.add("/economy.xml", _rss(5, start + timedelta(minutes=3)))),
    ]


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar_one()


def test_one_cycle_ingests_scores_and_evaluates_alerts(
    engine: Engine, feed_sources: list[Source], fetch_settings: Settings, tiny_model_dir: Path
) -> None:
    report = run_cycle(engine, sources=feed_sources, model_dir=tiny_model_dir, settings=fetch_settings)

    assert report.ok, report.errors
    articles = _count(engine, "SELECT count(*) FROM articles")
    assert report.ingest["items_new"] == articles > 0
    assert report.score["scored"] == articles
    assert report.score["model_version"] == "tiny-a"
    assert report.alerts["model_version"] == "tiny-a"
    assert {
        "firing",
        "new_firing",
        "resolved",
        "emails_sent",
        "emails_pending",
        "alerts",
    } <= report.alerts.keys()
    assert _count(engine, "SELECT sum(articles) FROM rollups_hourly WHERE dimension = 'all'") == articles

    again = run_cycle(engine, sources=feed_sources, model_dir=tiny_model_dir, settings=fetch_settings)

    assert again.ok, again.errors
    assert (again.ingest["items_new"], again.score["scored"]) == (0, 0)
    assert _count(engine, "SELECT count(*) FROM scores") == articles


def test_a_failing_stage_is_reported_and_the_others_still_run(
    engine: Engine, feed_sources: list[Source], fetch_settings: Settings, tmp_path: Path
) -> None:
    report = run_cycle(engine, sources=feed_sources, model_dir=tmp_path / "no-model", settings=fetch_settings)

    assert not report.ok
    assert set(report.errors) == {"score"} and "no-model" in report.errors["score"]
    assert report.ingest["items_new"] > 0  # stored, waiting for a model to score them
    assert report.alerts is not None and report.alerts["firing"] == 0
    assert report.as_dict()["ok"] is False


def test_run_command_prints_the_cycle_as_json_last(
    db_url: str,
    engine: Engine,
    feed_sources: list[Source],
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sources_file = tmp_path / "sources.yaml"
    sources_file.write_text(yaml.safe_dump([s.model_dump() for s in feed_sources]), encoding="utf-8")
    monkeypatch.setenv("FINSENT_ALLOWED_HOSTS", "127.0.0.1")
    get_settings.cache_clear()

    result = CliRunner().invoke(
        app, ["run", "--sources", str(sources_file), "--model", str(tiny_model_dir), "--json"]
    )

    assert result.exit_code == 0, result.output
    data = json.loads(result.output.strip().splitlines()[-1])
    assert data["ok"] is True
    assert (
        data["score"]["scored"]
        == data["ingest"]["items_new"]
        == _count(engine, "SELECT count(*) FROM scores")
    )
    assert data["alerts"]["model_version"] == "tiny-a"
