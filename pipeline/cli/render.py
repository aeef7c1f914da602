"""What every command group shares: option types, usage errors, ISO times, JSON lines, the ingest table."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from pipeline.ingest import IngestReport

JsonOption = Annotated[bool, typer.Option("--json", help="End with one JSON line.")]
ModelDirOption = Annotated[
    Path | None, typer.Option("--model", help="Model dir; becomes the active version if none is active yet.")
]


def echo_json(data: object) -> None:
    """Echo ``data`` as one JSON line: the last line of a --json command's output is machine-read."""
    typer.echo(json.dumps(data, default=str, sort_keys=True))


def iso_time(text: str | None) -> datetime | None:
    """Return ``text`` (ISO 8601) as an aware datetime, UTC when it names no zone."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO 8601 time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def fail(message: str) -> typer.Exit:
    """Return the exit of a usage error (status 2) after printing ``message`` on stderr."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


def ingest_table(report: IngestReport) -> Table:
    """Return a per-source table of an ingest run: status, HTTP code, items and bytes, and any error."""
    table = Table(title=f"ingest run {report.run_id[:8]}", show_lines=False)
    for column, justify in (
        ("source", "left"),
        ("status", "left"),
        ("http", "right"),
        ("seen", "right"),
        ("new", "right"),
        ("dup", "right"),
        ("invalid", "right"),
        ("filtered", "right"),
        ("bytes", "right"),
        ("ms", "right"),
        ("error / warning", "left"),
    ):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    styles = {"ok": "green", "not_modified": "cyan", "error": "red"}
    for s in report.sources:
        table.add_row(
            s.name,
            f"[{styles.get(s.status, 'white')}]{s.status}[/]",
            str(s.http_status or "-"),
            str(s.items_seen),
            str(s.items_new),
            str(s.duplicates),
            str(s.invalid),
            str(s.filtered),
            f"{s.bytes:,}",
            str(s.duration_ms),
            escape(s.error or s.warning or ""),
        )
    table.caption = (
        f"{report.sources_ok} ok ({report.not_modified} unchanged), {report.sources_failed} failed; "
        f"{report.items_seen} items seen, {report.items_new} new, {report.duplicates} duplicates, "
        f"{report.invalid} invalid, {report.filtered} filtered; "
        f"{report.bytes:,} bytes in {report.seconds:.2f} s"
    )
    return table
