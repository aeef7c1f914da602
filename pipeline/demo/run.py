"""The offline demo (``make demo``): one pass through finsent on a recorded feed set served from loopback.

Steps, in order; each prints what it did:
  1. migrate the database (embedded PostgreSQL unless DATABASE_URL is set);
  2. serve the recorded feeds on 127.0.0.1 and ingest them (one source is down on purpose);
  3. poll again: unchanged feeds answer 304 and nothing is stored twice;
  4. show the newest stored articles with their story clusters and tickers.
Later stages (scoring, rollups, alerts) add their steps at the marked place in :func:`main`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from pipeline import store
from pipeline.cli.render import ingest_table
from pipeline.config import Settings, get_settings
from pipeline.demo import history as demo_history
from pipeline.demo.feeds import serve_demo_feeds
from pipeline.demo.feedserver import FeedServer
from pipeline.ingest import IngestReport, run_ingest
from pipeline.store import db


@dataclass
class DemoContext:
    """What the steps share: settings, the engine, the console, and each step's results by name."""

    settings: Settings
    console: Console
    engine: Any = None
    results: dict[str, Any] = field(default_factory=dict)


def step_migrate(ctx: DemoContext) -> None:
    """Create or upgrade the schema."""
    ctx.engine = db.get_engine()
    applied = db.migrate(ctx.engine)
    ctx.console.print(f"migrations applied: {', '.join(applied) if applied else 'none (schema up to date)'}")


def step_ingest(ctx: DemoContext) -> None:
    """Serve the recorded feeds on loopback and ingest them twice (the second poll should be all 304s)."""
    with FeedServer() as server:
        # Loopback is not public, so the fetcher refuses it unless allowed: allow exactly this server's
        # host for this run, on top of whatever FINSENT_ALLOWED_HOSTS already allows.
        allowed = ", ".join(h for h in (ctx.settings.allowed_hosts.strip(), server.host) if h)
        settings = ctx.settings.model_copy(update={"allowed_hosts": allowed, "retries": 1})
        sources = serve_demo_feeds(server)
        ctx.console.print(f"serving {len(sources)} recorded feeds at {server.url}")
        first: IngestReport = run_ingest(sources, engine=ctx.engine, settings=settings)
        ctx.console.print(ingest_table(first))
        second: IngestReport = run_ingest(sources, engine=ctx.engine, settings=settings)
        ctx.console.print(
            f"second poll: {second.not_modified} of {len(second.sources)} feeds unchanged (HTTP 304), "
            f"{second.items_new} new articles, {second.bytes:,} bytes (first poll: {first.bytes:,})"
        )
    ctx.results["ingest"] = first.totals()
    ctx.results["second_poll"] = second.totals()


def step_show_articles(ctx: DemoContext) -> None:
    """Print the newest articles with their story ids and tickers."""
    with ctx.engine.connect() as conn:
        articles, stories = store.article_totals(conn)
        latest = store.latest_articles(conn, limit=12)
    table = Table(title=f"{articles} articles in {stories} stories (newest first)")
    for column in ("id", "story", "source", "published (UTC)", "tickers", "title"):
        table.add_column(column, overflow="fold")
    for row in latest:
        published = f"{row['published_at']:%m-%d %H:%M}"
        table.add_row(
            str(row["id"]),
            str(row["story_id"]),
            row["source"],
            published,
            " ".join(row["tickers"]),
            row["title"],
        )
    ctx.console.print(table)
    ctx.results["articles"] = {"articles": articles, "stories": stories}


def main() -> dict[str, Any]:
    """Run the demo steps in order; return what each produced."""
    ctx = DemoContext(settings=get_settings(), console=Console(width=160))
    steps = [
        step_migrate,
        step_ingest,
        step_show_articles,
        # Alerts: the recorded history with a storm goes in before scoring, so that it is scored too.
        demo_history.step_seed_history,
        # Later stages (score, roll up, detect alerts, send email) append their steps here.
        # Alerts: replay the storm hour by hour, mail the alert to a local SMTP catcher, print it.
        demo_history.step_alerts,
    ]
    for number, step in enumerate(steps, start=1):
        ctx.console.rule(f"{number}. {(step.__doc__ or step.__name__).splitlines()[0]}")
        step(ctx)
    ingest = ctx.results.get("ingest", {})
    with ctx.engine.connect() as conn:
        articles, stories = store.article_totals(conn)  # counted at the end: the same on every rerun
    ctx.console.rule("summary")
    ctx.console.print(
        f"ingested {ingest.get('items_new', 0)} new articles from {ingest.get('sources_ok', 0)} feeds "
        f"({ingest.get('sources_failed', 0)} failed, {ingest.get('duplicates', 0)} duplicates dropped); "
        f"the database now holds {articles:,} articles in {stories:,} stories, the seeded history included"
    )
    ctx.console.print("see the trends, alerts and stories: make dashboard  (then open http://127.0.0.1:8501)")
    if not ctx.settings.database_url:
        ctx.console.print(
            f"the embedded PostgreSQL in {ctx.settings.embedded_pgdata} keeps running for the next command; "
            "stop it with: .venv/bin/finsent db stop"
        )
    return ctx.results


if __name__ == "__main__":
    main()
