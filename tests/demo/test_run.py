"""The offline demo: recorded feeds served on loopback, ingested into a real database."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import sqlalchemy as sa
from rich.console import Console
from sqlalchemy.engine import Engine

from pipeline.config import get_settings
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
