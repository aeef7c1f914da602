"""Database and ingestion commands: `db migrate|status|stop`, `ingest`, `run` (one whole cycle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline.cli.render import JsonOption, ModelDirOption, echo_json, fail, ingest_table, iso_time

app = typer.Typer()
db_app = typer.Typer(help="Database commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending sql/NNN_*.sql migrations, each once, in order."""
    from pipeline.store import db

    applied = db.migrate()
    typer.echo(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied else "up to date")


@db_app.command("status")
def db_status() -> None:
    """Say which database finsent uses, and whether the embedded server runs."""
    from pipeline.config import get_settings
    from pipeline.store import db

    settings = get_settings()
    if settings.database_url:
        typer.echo(f"DATABASE_URL is set: {db.describe_url(settings.database_url)} (no embedded server used)")
        return
    pid = db.embedded_server_pid(settings)
    state = f"running (pid {pid})" if pid else "not running (the next command starts it)"
    typer.echo(f"embedded PostgreSQL in {settings.embedded_pgdata}: {state}")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL (it keeps running between commands otherwise)."""
    from pipeline.store import db

    try:
        pid = db.stop_embedded_server()
    except TimeoutError as exc:
        raise fail(str(exc)) from exc
    typer.echo(
        f"stopped the embedded PostgreSQL (pid {pid})" if pid else "the embedded PostgreSQL is not running"
    )


@app.command("ingest")
def ingest(
    sources: Annotated[
        Path | None, typer.Option("--sources", help="YAML file of feeds (default: the shipped list).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of totals.")] = False,
) -> None:
    """Poll the feeds once: fetch, parse, deduplicate and store new articles; print a per-source table."""
    from pipeline.ingest import SourcesError, load_sources, run_ingest
    from pipeline.store import db

    try:
        chosen = load_sources(sources) if sources is not None else None
        engine = db.get_engine()
        db.migrate(engine)  # idempotent; a first ingest on a fresh database needs no separate step
        report = run_ingest(chosen, engine=engine)
    except SourcesError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    Console(width=max(Console().width, 140)).print(ingest_table(report))
    if as_json:
        # Plain echo: a rich console would wrap a long line and break the JSON.
        typer.echo(json.dumps(report.totals()))
    if report.sources and report.sources_failed == len(report.sources):
        raise typer.Exit(1)


@app.command("run")
def run(
    sources: Annotated[
        Path | None, typer.Option("--sources", help="YAML file of feeds (default: the shipped list).")
    ] = None,
    model: ModelDirOption = None,
    now: Annotated[str | None, typer.Option("--now", help="Evaluate alerts at this ISO 8601 time.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Run one full cycle: ingest → score → alerts (evaluate the rules, send due emails)."""
    from pipeline.cycle import run_cycle

    report = run_cycle(sources_path=sources, model_dir=model, now=iso_time(now))
    data = report.as_dict()
    if as_json:
        echo_json(data)
    else:
        ingested, scored, alerts = data["ingest"] or {}, data["score"] or {}, data["alerts"] or {}
        typer.echo(f"ingest: {ingested.get('items_new', '-')} new articles")
        typer.echo(f"score: {scored.get('scored', '-')} articles with {scored.get('model_version', '-')}")
        typer.echo(
            f"alerts: {alerts.get('firing', '-')} firing ({alerts.get('new_firing', '-')} new),"
            f" {alerts.get('emails_sent', '-')} emails sent, {alerts.get('emails_pending', '-')} waiting"
        )
        for stage, error in data["errors"].items():
            typer.echo(f"{stage} failed: {error}", err=True)
    if not report.ok:
        raise typer.Exit(1)
