"""Alert commands: `alerts`, `backtest`, `silence add|list|expire`, `outbox list|requeue`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.alerts.stats import count_text
from pipeline.cli.render import JsonOption, echo_json, fail, iso_time, pct

app = typer.Typer()
silence_app = typer.Typer(help="Silences: mute matching alerts for a time range.", no_args_is_help=True)
app.add_typer(silence_app, name="silence")
RulesOption = Annotated[
    Path | None, typer.Option("--rules", help="Rules YAML (default: FINSENT_ALERT_RULES, else shipped).")
]


def _load_rules_or_fail(path: Path | None) -> list:
    from pipeline.alerts import RulesError, load_rules

    try:
        return load_rules(path)
    except RulesError as exc:
        raise fail(str(exc)) from exc


@app.command("alerts")
def alerts_command(
    now: Annotated[
        str | None,
        typer.Option("--now", help="Evaluate at this ISO 8601 time; mail is sent by the real clock."),
    ] = None,
    rules: RulesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Evaluate every alert rule, then send the emails due in the outbox."""
    from pipeline.alerts import run_alerts

    report = run_alerts(iso_time(now), rules=_load_rules_or_fail(rules))
    table = Table(title=f"alerts at {report.now:%Y-%m-%d %H:%M} UTC (model {report.model_version or '-'})")
    columns = ("status", "rule", "dimension", "value", "negative", "baseline", "stories", "neg. vs expected")
    for column in (*columns, "since"):
        table.add_column(column)
    styles = {"firing": "red", "pending": "yellow", "resolved": "green"}
    for a in report.alerts:
        was = "released, was " if a.transition == "released" else ""
        held = f" [dim]({was}inhibited by {escape(', '.join(a.inhibited_by))})[/]" if a.inhibited_by else ""
        table.add_row(
            f"[{styles.get(a.status, 'white')}]{a.status}[/]{held}",
            a.rule,
            a.dimension,
            escape(a.value),
            pct(a.neg_share),
            pct(a.baseline),
            str(a.stories if a.stories is not None else "-"),
            _versus(a.neg_stories, a.expected_negatives),
            (a.since or "-")[:16],
        )
    Console(width=max(Console().width, 120)).print(table)
    typer.echo(
        f"{report.firing} firing ({report.new_firing} new), {report.resolved} resolved; emails: "
        f"{report.emails_sent} sent, {report.emails_pending} waiting, {report.emails_failed} failed, "
        f"{report.emails_unconfirmed} unconfirmed"
    )
    if as_json:
        echo_json(report.as_dict())


def _versus(negative: float | None, expected: float | None) -> str:
    """Return a count rule's explanation, "4 vs 0.21" negative stories against those expected, else "-"."""
    return "-" if expected is None or negative is None else f"{count_text(negative)} vs {expected:.2f}"


@app.command("backtest")
def backtest_command(
    start: Annotated[str, typer.Option("--from", help="First evaluation time, ISO 8601.")],
    end: Annotated[str, typer.Option("--to", help="Last evaluation time, ISO 8601.")],
    rules: RulesOption = None,
    model_version: Annotated[
        str | None, typer.Option("--model-version", help="Replay this version's scores (default: active).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Replay hourly evaluation over stored history and list what would have fired (sends nothing)."""
    from pipeline.alerts import backtest

    begin, finish = iso_time(start), iso_time(end)
    assert begin is not None and finish is not None
    if finish < begin:
        raise fail(f"--to {end} is before --from {start}")
    report = backtest(begin, finish, rules=_load_rules_or_fail(rules), model_version=model_version)
    table = Table(title=f"backtest {start} → {end}: {report.evaluations} hourly evaluations")
    for column in ("fired", "resolved", "rule", "dimension", "value", "peak negative", "baseline", "stories"):
        table.add_column(column)
    for e in report.episodes:
        table.add_row(
            e.fired_at[:16],
            (e.resolved_at or "still firing")[:16],
            e.rule,
            e.dimension,
            escape(e.value),
            pct(e.peak_neg_share),
            pct(e.baseline),
            str(e.stories),
        )
    Console(width=max(Console().width, 120)).print(table)
    typer.echo(f"{report.fired} alerts would have fired")
    if as_json:
        echo_json(report.as_dict())


@silence_app.command("add")
def silence_add(
    rule: Annotated[str | None, typer.Option("--rule", help="Rule name (glob).")] = None,
    dimension: Annotated[str | None, typer.Option("--dimension", help="Dimension (glob).")] = None,
    value: Annotated[str | None, typer.Option("--value", help="Dimension value (glob), e.g. ACME.")] = None,
    starts: Annotated[str | None, typer.Option("--starts", help="ISO 8601 start (default: now).")] = None,
    ends: Annotated[str | None, typer.Option("--ends", help="ISO 8601 end.")] = None,
    duration: Annotated[str | None, typer.Option("--for", help="Length instead of --ends: 2h, 3d.")] = None,
    comment: Annotated[str, typer.Option("--comment", help="Why (shown in lists).")] = "",
    created_by: Annotated[str | None, typer.Option("--by", help="Who set it.")] = None,
) -> None:
    """Mute alerts matching --rule/--dimension/--value (globs) from --starts to --ends (or --for)."""
    from pipeline.alerts import SilenceError, add_silence
    from pipeline.alerts.rules import parse_duration

    begin = iso_time(starts) or datetime.now(UTC)
    if (ends is None) == (duration is None):
        raise fail("give exactly one of --ends and --for")
    try:
        finish = iso_time(ends) if ends else begin + parse_duration(duration or "0")
        assert finish is not None
        silence_id = add_silence(
            rule=rule,
            dimension=dimension,
            value=value,
            starts_at=begin,
            ends_at=finish,
            comment=comment,
            created_by=created_by,
        )
    except (SilenceError, ValueError) as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"silence {silence_id}: until {finish.isoformat()}")


@silence_app.command("list")
def silence_list(
    include_expired: Annotated[bool, typer.Option("--all", help="Include expired silences.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List the silences in force or scheduled (with --all: every silence)."""
    from pipeline.alerts import list_silences

    rows = list_silences(include_expired=include_expired)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        typer.echo("no silences")
    for s in rows:
        matcher = " ".join(f"{k}={s[k]}" for k in ("rule", "dimension", "value") if s[k] is not None)
        typer.echo(
            f"{s['id']}  {s['state']:<9}  {matcher}  {s['starts_at']:%Y-%m-%d %H:%M} → "
            f"{s['ends_at']:%Y-%m-%d %H:%M}  {s['comment']}"
        )


@silence_app.command("expire")
def silence_expire(silence_id: Annotated[int, typer.Argument(help="Id from `silence list`.")]) -> None:
    """End a silence now."""
    from pipeline.alerts import SilenceError, expire_silence

    try:
        expire_silence(silence_id)
    except SilenceError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"silence {silence_id} expired")


outbox_app = typer.Typer(help="The alert email outbox: what was sent, what waits, what needs a look.")
app.add_typer(outbox_app, name="outbox")


@outbox_app.command("list")
def outbox_list(
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only this status: pending, sending, sent, failed, unconfirmed."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List the alert emails in the outbox with their delivery state and last error."""
    from pipeline.alerts import list_outbox

    statuses = ("pending", "sending", "sent", "failed", "unconfirmed")
    if status is not None and status not in statuses:
        raise fail(f"--status {status!r} is not one of: {', '.join(statuses)}")
    rows = list_outbox(status=status)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        typer.echo("the outbox is empty" if status is None else f"no {status} emails")
    for r in rows:
        typer.echo(f"{r['id']}  {r['status']:<11}  {r['attempts']} attempts  {r['subject']}")
        if r["last_error"] and r["status"] != "sent":
            typer.echo(f"    {r['last_error']}")


@outbox_app.command("requeue")
def outbox_requeue(outbox_id: Annotated[int, typer.Argument(help="Id from `outbox list`.")]) -> None:
    """Send a failed or unconfirmed email again (same Message-ID) at the next delivery."""
    from pipeline.alerts import OutboxError, requeue

    try:
        old = requeue(outbox_id)
    except OutboxError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"outbox email {outbox_id} ({old}) is pending again; `finsent alerts` or the DAG sends it")
