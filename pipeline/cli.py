"""The ``finsent`` command line: thin wrappers over pipeline/ and models/ functions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from pipeline.ingest import IngestReport

app = typer.Typer(help="finsent: financial news sentiment monitor.", no_args_is_help=True)
db_app = typer.Typer(help="Database commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")

# --- database and ingestion commands (pipeline) ---------------------------------------------


def ingest_table(report: IngestReport) -> Table:
    """Return a per-source table of an ingest run: status, HTTP code, items and bytes, and any error."""
    table = Table(title=f"ingest run {report.run_id[:8]}", show_lines=False)
    for column, justify in (("source", "left"), ("status", "left"), ("http", "right"), ("seen", "right"),
                            ("new", "right"), ("dup", "right"), ("invalid", "right"), ("filtered", "right"),
                            ("bytes", "right"), ("ms", "right"), ("error / warning", "left")):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    styles = {"ok": "green", "not_modified": "cyan", "error": "red"}
    for s in report.sources:
        table.add_row(
            s.name, f"[{styles.get(s.status, 'white')}]{s.status}[/]", str(s.http_status or "-"),
            str(s.items_seen), str(s.items_new), str(s.duplicates), str(s.invalid), str(s.filtered),
            f"{s.bytes:,}", str(s.duration_ms), escape(s.error or s.warning or ""),
        )
    table.caption = (
        f"{report.sources_ok} ok ({report.not_modified} unchanged), {report.sources_failed} failed; "
        f"{report.items_seen} items seen, {report.items_new} new, {report.duplicates} duplicates, "
        f"{report.invalid} invalid, {report.filtered} filtered; "
        f"{report.bytes:,} bytes in {report.seconds:.2f} s"
    )
    return table


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending sql/NNN_*.sql migrations, each once, in order."""
    from pipeline import db

    applied = db.migrate()
    typer.echo(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied else "up to date")


@app.command("ingest")
def ingest(
    sources: Annotated[
        Path | None, typer.Option("--sources", help="YAML file of feeds (default: the shipped list).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of totals.")] = False,
) -> None:
    """Poll the feeds once: fetch, parse, deduplicate and store new articles; print a per-source table."""
    from pipeline import db
    from pipeline.ingest import run_ingest
    from pipeline.sources import SourcesError, load_sources

    try:
        chosen = load_sources(sources) if sources is not None else None
        report = run_ingest(chosen, engine=db.get_engine())
    except SourcesError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    Console(width=max(Console().width, 140)).print(ingest_table(report))
    if as_json:
        # Plain echo: a rich console would wrap a long line and break the JSON.
        typer.echo(json.dumps(report.totals()))
    if report.sources and report.sources_failed == len(report.sources):
        raise typer.Exit(1)



# --- model commands: train / eval / classify (models) --------------------------------------


if __name__ == "__main__":
    app()
