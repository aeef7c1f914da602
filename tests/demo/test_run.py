"""The offline demo: recorded feeds served on loopback, ingested into a real database."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from rich.console import Console
from sqlalchemy.engine import Engine

from pipeline.config import Settings, get_settings
from pipeline.demo import run as demo
from pipeline.demo.feeds import demo_documents
from pipeline.ingest.parse import FeedError, parse_feed

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_recorded_feeds_parse_except_the_outage_page() -> None:
    docs = demo_documents(NOW)
    counts = {}
    for path, (body, content_type) in docs.items():
        try:
            feed = parse_feed(
                body,
                source_name=path,
                url=f"http://127.0.0.1{path}",
                fetched_at=NOW,
                content_type=content_type,
            )
        except FeedError:
            counts[path] = None
            continue
        counts[path] = len(feed.entries)
        assert not feed.invalid
        assert all(not e.date_missing and e.published_at < NOW for e in feed.entries)
    assert counts == {
        "/centralbank/press.xml": 3,
        "/wire/business.rss": 8,
        "/markets/latest.rss": 5,
        "/filings/current.atom": 3,
        "/outage/feed.xml": None,
    }


def test_demo_ingests_the_recorded_feeds_and_clusters_syndicated_copies(engine: Engine) -> None:
    ctx = demo.DemoContext(settings=get_settings(), console=Console(file=io.StringIO(), width=160))
    for step in (demo.step_migrate, demo.step_ingest, demo.step_show_articles):
        step(ctx)
    results = ctx.results

    assert results["ingest"]["items_new"] == 19
    assert (results["ingest"]["sources_ok"], results["ingest"]["sources_failed"]) == (4, 1)
    # The second poll is all 304s for the working feeds and stores nothing.
    assert results["second_poll"]["items_new"] == 0
    assert results["second_poll"]["not_modified"] == 4
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT s.name, a.title, a.story_id, a.id"
                " FROM articles a JOIN sources s ON s.id = a.source_id"
            )
        ).all()
    by_title = {r.title: r for r in rows}
    original = by_title["Apple shares slide after iPhone sales miss forecasts in China"]
    copy = by_title["Apple shares slide after iPhone sales miss forecasts in China - Demo Wire"]
    assert copy.story_id == original.id and copy.name == "demo-markets-desk"
    banks = by_title["Regional bank shares tumble as deposit outflows accelerate"]
    assert by_title["Regional bank stocks tumble as deposit outflows speed up"].story_id == banks.id
    # Distinct filings of the same template stay distinct stories.
    filings = [r for r in rows if r.name == "demo-filings"]
    assert len({r.story_id for r in filings}) == 3
    assert results["articles"] == {"articles": 19, "stories": 17}


def test_demo_ingest_step_prints_the_per_source_table(engine: Engine) -> None:
    out = io.StringIO()
    ctx = demo.DemoContext(settings=get_settings(), console=Console(file=out, width=160))
    demo.step_migrate(ctx)
    demo.step_ingest(ctx)
    text = out.getvalue()
    for name in ("demo-central-bank", "demo-wire", "demo-markets-desk", "demo-filings", "demo-outage"):
        assert name in text
    assert "HTML" in text  # the outage page, named in the error column
    assert "second poll: 4 of 5 feeds unchanged (HTTP 304), 0 new articles" in text


def test_demo_allows_its_loopback_server_on_top_of_the_users_allowlist(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's feed server is the one host it adds: nothing else private is opened for it."""
    seen: list[str] = []
    real_run_ingest = demo.run_ingest

    def recording_run_ingest(*args: Any, settings: Settings, **kwargs: Any) -> Any:
        seen.append(settings.allowed_hosts)
        return real_run_ingest(*args, settings=settings, **kwargs)

    monkeypatch.setattr(demo, "run_ingest", recording_run_ingest)
    for users in ("", "feeds.internal, 10.20.0.0/16"):
        settings = get_settings().model_copy(update={"allowed_hosts": users})
        ctx = demo.DemoContext(settings=settings, console=Console(file=io.StringIO(), width=160))
        demo.step_migrate(ctx)
        demo.step_ingest(ctx)
        assert ctx.results["ingest"]["sources_ok"] == 4
        expected = f"{users}, 127.0.0.1" if users else "127.0.0.1"
        assert seen == [expected, expected]
        seen.clear()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "DATABASE_URL",
            "postgresql://nobody:pw@127.0.0.1:1/x",
            "error: cannot use the database at 127.0.0.1:1/x",
        ),
        (
            "FINSENT_ALLOW_PRIVATE_HOSTS",
            "true",
            "error: invalid settings: FINSENT_ALLOW_PRIVATE_HOSTS was replaced",
        ),
    ],
)
def test_make_demo_says_what_is_wrong_in_one_line(
    variable: str, value: str, expected: str, tmp_path: Path
) -> None:
    env = {**os.environ, "FINSENT_HOME": str(tmp_path), variable: value}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.demo"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), done.stderr
    assert "pw@" not in done.stdout + done.stderr
