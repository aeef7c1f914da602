"""The ``finsent`` command line: thin wrappers over pipeline/ and models/ functions."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from pipeline.ingest import IngestReport
    from pipeline.scoring import BatchReport

app = typer.Typer(help="finsent: financial news sentiment monitor.", no_args_is_help=True)
db_app = typer.Typer(help="Database commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")

# --- database and ingestion commands (pipeline) ---------------------------------------------


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


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending sql/NNN_*.sql migrations, each once, in order."""
    from pipeline import db

    applied = db.migrate()
    typer.echo(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied else "up to date")


@db_app.command("status")
def db_status() -> None:
    """Say which database finsent uses, and whether the embedded server runs."""
    from pipeline import db
    from pipeline.config import get_settings

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
    from pipeline import db

    try:
        pid = db.stop_embedded_server()
    except TimeoutError as exc:
        raise _fail(str(exc)) from exc
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
    from pipeline import db
    from pipeline.ingest import run_ingest
    from pipeline.sources import SourcesError, load_sources

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


# --- model commands: train / eval / classify (models) --------------------------------------


DataDirOption = Annotated[Path | None, typer.Option("--data", help="Labeled data dir (FINSENT_DATA_DIR).")]
ShippedModelOption = Annotated[Path | None, typer.Option("--model", help="Model dir (default: shipped).")]


def _model_usage_error(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _data_dir_or_fail(data: Path | None) -> Path:
    from pipeline.config import get_settings

    found = data or get_settings().data_dir
    if found is None:
        raise _model_usage_error("no data directory: pass --data DIR or set FINSENT_DATA_DIR")
    return Path(found)


@app.command("train")
def train_command(
    data: DataDirOption = None,
    unlabeled: Annotated[
        Path | None, typer.Option("--unlabeled", help="Unlabeled .txt.gz dir (default DATA/unlabeled).")
    ] = None,
    recipe: Annotated[Path | None, typer.Option("--recipe", help="Recipe YAML (default: built-in).")] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="Pretrained causal LM to fine-tune instead: hub name or dir.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where the trained model dir goes.")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Pre-training checkpoint dir (resumed if present).")
    ] = None,
    pretrain_minutes: Annotated[
        float | None, typer.Option("--pretrain-minutes", help="Stop pre-training after this long; resumable.")
    ] = None,
    finetune_minutes: Annotated[
        float | None, typer.Option("--finetune-minutes", help="Stop fine-tuning after this long.")
    ] = None,
    distill_minutes: Annotated[
        float | None,
        typer.Option("--distill-minutes", help="Stop distillation (if in the recipe) after this long."),
    ] = None,
) -> None:
    """Train a model: (resumable) pre-training, optional distillation, then joint fine-tuning."""
    from models.training import load_recipe, train_model
    from pipeline.config import get_settings

    data_dir = _data_dir_or_fail(data)
    spec = load_recipe(recipe)
    stem = recipe.stem if recipe else "builtin"
    home = get_settings().home
    out_dir = out or home / "models" / f"{spec.name}-{stem}"
    ckpt = checkpoint or home / "checkpoints" / f"pretrain-{stem}"
    summary = train_model(
        spec,
        data_dir,
        out_dir,
        checkpoint_dir=ckpt,
        unlabeled_dir=unlabeled or data_dir / "unlabeled",
        base=base,
        pretrain_minutes=pretrain_minutes,
        log=typer.echo,
        finetune_minutes=finetune_minutes,
        distill_minutes=distill_minutes,
    )
    lexical = summary.get("lexical")
    extra = f" + {lexical['parameters']:,} in the lexical part" if lexical else ""
    typer.echo(f"saved {summary['version']} ({summary['params']:,} GPT parameters{extra}) to {out_dir}")
    keys = ("version", "params", "pretrain_tokens")
    typer.echo(json.dumps({"out": str(out_dir), **{k: summary[k] for k in keys}}, sort_keys=True))


@app.command("calibrate")
def calibrate_command(model: ShippedModelOption = None, data: DataDirOption = None) -> None:
    """Re-fit a model's softmax temperatures on the held-out part of train (weights unchanged)."""
    from models.inference import DEFAULT_MODEL_DIR
    from models.training import calibrate_model_dir

    try:
        report = calibrate_model_dir(model or DEFAULT_MODEL_DIR, _data_dir_or_fail(data), log=typer.echo)
    except ValueError as exc:  # a re-fit model has no unseen hold-out
        raise _model_usage_error(str(exc)) from exc
    typer.echo(json.dumps(report, sort_keys=True))


@app.command("eval")
def eval_command(
    model: ShippedModelOption = None,
    data: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line.")] = False,
    baseline: Annotated[bool, typer.Option(help="Also fit and score the TF-IDF + LR baseline.")] = True,
    write_metrics: Annotated[
        bool, typer.Option("--write-metrics", help="Save the report as the model dir's metrics.json.")
    ] = False,
) -> None:
    """Evaluate a model on the tweets' valid splits and on labeled news, next to a TF-IDF + LR baseline."""
    from models.evaluate import evaluate, format_report
    from models.inference import DEFAULT_MODEL_DIR, load

    data_dir = _data_dir_or_fail(data)
    clf = load(model)
    report = evaluate(clf, data_dir, baseline=baseline)
    typer.echo(format_report(report, clf.bundle.topics, clf.bundle.sentiments))
    if write_metrics:
        path = Path(model or DEFAULT_MODEL_DIR) / "metrics.json"
        recorded = {**report.summary, "confusion": report.confusion, "gaps": report.gaps}
        path.write_text(json.dumps(recorded, sort_keys=True) + "\n", encoding="utf-8")
        typer.echo(f"wrote {path}")
    if as_json:
        typer.echo(json.dumps(report.summary, sort_keys=True))


@app.command("classify")
def classify_command(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    model: ShippedModelOption = None,
    file: Annotated[Path | None, typer.Option("--file", help="Classify each line of this file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per input.")] = False,
) -> None:
    """Classify texts (arguments, or one per line of --file) by topic and sentiment."""
    from models.inference import load

    if file is not None:
        try:
            items = file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise _model_usage_error(f"cannot read {file}: {exc}") from exc
    else:
        items = list(texts or [])
    if not items:
        raise _model_usage_error("nothing to classify: give TEXT arguments or --file PATH")
    clf = load(model)
    for text, pred in zip(items, clf.predict(items), strict=True):
        if as_json:
            typer.echo(json.dumps(pred.to_dict(), sort_keys=True))
        else:
            typer.echo(f"{pred.sentiment:>8} {pred.score:+.2f}  {pred.topic:<28} {escape(text)[:90]}")


# --- scoring commands ---------------------------------------------------------------------------

models_app = typer.Typer(help="Model versions: list them and choose the active one.", no_args_is_help=True)
app.add_typer(models_app, name="models")

ModelDirOption = Annotated[
    Path | None, typer.Option("--model", help="Model dir; becomes the active version if none is active yet.")
]
BatchSizeOption = Annotated[int | None, typer.Option("--batch-size", min=1, help="Articles per batch.")]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="Score at most this many articles.")]
JsonOption = Annotated[bool, typer.Option("--json", help="End with one JSON line.")]


def _echo_json(data: object) -> None:
    # Plain echo of one line: the last line of a --json command's output is machine-read.
    typer.echo(json.dumps(data, default=str, sort_keys=True))


def _iso_time(text: str | None) -> datetime | None:
    """Return ``text`` (ISO 8601) as an aware datetime, UTC when it names no zone."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO 8601 time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _batch_progress(as_json: bool) -> Callable[[BatchReport], None] | None:
    """Return a per-batch callback that keeps one progress line on a terminal's stderr, or None."""
    if as_json or not sys.stderr.isatty():
        return None
    done = [0]

    def show(batch: BatchReport) -> None:
        done[0] += batch.scored
        typer.echo(f"\rbatch {batch.number}: {done[0]} articles scored", err=True, nl=False)

    return show


def _score_summary(verb: str, report: dict) -> str:
    return (
        f"{verb} {report['scored']} articles with model {report['model_version']} in {report['batches']}"
        f" batches, {report['seconds']:.1f} s ({report['articles_per_s']:.0f} articles/s)"
    )


@app.command("score")
def score(
    model: ModelDirOption = None,
    batch_size: BatchSizeOption = None,
    limit: LimitOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score every article the active model version has not scored yet."""
    from pipeline import db
    from pipeline.scoring import ScoringError, score_pending

    try:
        engine = db.get_engine()
        db.migrate(engine)  # idempotent; scoring right after a fresh install needs no separate step
        progress = _batch_progress(as_json)
        done = score_pending(engine, model_dir=model, batch_size=batch_size, limit=limit, on_batch=progress)
        report = done.as_dict()
    except ScoringError as exc:
        raise _fail(str(exc)) from exc
    if progress is not None:
        typer.echo(err=True)
    if as_json:
        _echo_json(report)
    else:
        typer.echo(_score_summary("scored", report))


@app.command("rescore")
def rescore(
    model: Annotated[Path, typer.Option("--model", help="Model dir to score all history with.")],
    batch_size: BatchSizeOption = None,
    limit: LimitOption = None,
    activate: Annotated[bool, typer.Option("--activate", help="Make it active once all is scored.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Score all history with a new model version; the active version and its scores stay until activation."""
    from pipeline import db, scoring

    try:
        engine = db.get_engine()
        db.migrate(engine)
        progress = _batch_progress(as_json)
        done = scoring.rescore(engine, model_dir=model, batch_size=batch_size, limit=limit, on_batch=progress)
        report = done.as_dict()
        version = report["model_version"]
        report["pending"] = scoring.pending_count(version)
        report["activated"] = activate and report["pending"] == 0
        if report["activated"]:
            scoring.activate_version(version)
    except scoring.ScoringError as exc:
        raise _fail(str(exc)) from exc
    if progress is not None:
        typer.echo(err=True)
    if as_json:
        _echo_json(report)
        return
    typer.echo(_score_summary("rescored", report))
    if report["activated"]:
        typer.echo(f"model version {version} is now active")
    elif report["pending"]:
        typer.echo(f"{report['pending']} articles still unscored by {version}; run rescore again")
    else:
        typer.echo(f"activate it with: finsent models activate {version}")


@models_app.command("list")
def models_list(as_json: JsonOption = False) -> None:
    """List registered model versions; the active one is marked with *."""
    from pipeline.scoring import list_versions

    versions = list_versions()
    if as_json:
        _echo_json(versions)
        return
    if not versions:
        typer.echo("no model versions yet; `finsent score` registers the default model")
    for v in versions:
        created = f"{v['created_at']:%Y-%m-%d %H:%M}"
        mark = "*" if v["active"] else " "
        typer.echo(f"{mark} {v['version']}  scored={v['scored']}  created={created}  path={v['path']}")


@models_app.command("activate")
def models_activate(version: Annotated[str, typer.Argument(help="One of `finsent models list`.")]) -> None:
    """Make VERSION the model version whose scores the dashboard and the alerts read."""
    from pipeline.scoring import ScoringError, activate_version, pending_count

    try:
        activate_version(version)
    except ScoringError as exc:
        raise _fail(str(exc)) from exc
    left = pending_count(version)
    unscored = f"; {left} articles it has not scored yet" if left else ""
    typer.echo(f"model version {version} is active{unscored}")


@app.command("rebuild-rollups")
def rebuild_rollups_command(
    model_version: Annotated[
        str | None, typer.Option("--model-version", help="Only this version (default: all).")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="First hour to recount, ISO 8601 (default: oldest article).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Recount the hourly rollups from the stored scores."""
    from pipeline.rollups import rebuild_rollups

    written = rebuild_rollups(model_version=model_version, since=_iso_time(since))
    if as_json:
        _echo_json({"rows": written})
        return
    for version, rows in written.items():
        typer.echo(f"{version}: {rows} rollup rows")


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

    report = run_cycle(sources_path=sources, model_dir=model, now=_iso_time(now))
    data = report.as_dict()
    if as_json:
        _echo_json(data)
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


# --- alert commands ---------------------------------------------------------------------------

silence_app = typer.Typer(help="Silences: mute matching alerts for a time range.", no_args_is_help=True)
app.add_typer(silence_app, name="silence")
RulesOption = Annotated[
    Path | None, typer.Option("--rules", help="Rules YAML (default: FINSENT_ALERT_RULES, else shipped).")
]


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


def _load_rules_or_fail(path: Path | None) -> list:
    from pipeline.rules import RulesError, load_rules

    try:
        return load_rules(path)
    except RulesError as exc:
        raise _fail(str(exc)) from exc


@app.command("alerts")
def alerts_command(
    now: Annotated[str | None, typer.Option("--now", help="Evaluate at this ISO 8601 time.")] = None,
    rules: RulesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Evaluate every alert rule, then send the emails due in the outbox."""
    from pipeline.alerts import run_alerts

    report = run_alerts(_iso_time(now), rules=_load_rules_or_fail(rules))
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
            _pct(a.neg_share),
            _pct(a.baseline),
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
        _echo_json(report.as_dict())


def _versus(negative: int | None, expected: float | None) -> str:
    """Return a count rule's explanation, "4 vs 0.21" negative stories against those expected, else "-"."""
    return "-" if expected is None or negative is None else f"{negative} vs {expected:.2f}"


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
    from pipeline.backtest import backtest

    begin, finish = _iso_time(start), _iso_time(end)
    assert begin is not None and finish is not None
    if finish < begin:
        raise _fail(f"--to {end} is before --from {start}")
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
            _pct(e.peak_neg_share),
            _pct(e.baseline),
            str(e.stories),
        )
    Console(width=max(Console().width, 120)).print(table)
    typer.echo(f"{report.fired} alerts would have fired")
    if as_json:
        _echo_json(report.as_dict())


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
    from datetime import timedelta

    from pipeline.alerts import SilenceError, add_silence
    from pipeline.rules import parse_duration

    begin = _iso_time(starts) or datetime.now(UTC)
    if (ends is None) == (duration is None):
        raise _fail("give exactly one of --ends and --for")
    try:
        finish = _iso_time(ends) if ends else begin + parse_duration(duration or "0")
        assert finish is not None
        if finish - begin > timedelta(days=366):
            raise SilenceError("a silence may last at most a year")
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
        raise _fail(str(exc)) from exc
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
        _echo_json(rows)
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
        raise _fail(str(exc)) from exc
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
    from pipeline.notify import list_outbox

    statuses = ("pending", "sending", "sent", "failed", "unconfirmed")
    if status is not None and status not in statuses:
        raise _fail(f"--status {status!r} is not one of: {', '.join(statuses)}")
    rows = list_outbox(status=status)
    if as_json:
        _echo_json(rows)
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
    from pipeline.notify import OutboxError, requeue

    try:
        old = requeue(outbox_id)
    except OutboxError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"outbox email {outbox_id} ({old}) is pending again; `finsent alerts` or the DAG sends it")


def _database_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Wrap a command so that an unusable database is one line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> None:
        import sqlalchemy.exc

        from pipeline.db import DatabaseConfigError, database_error_message

        try:
            command(*args, **kwargs)
        except (DatabaseConfigError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
            typer.echo(f"error: {database_error_message(exc)}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def _wrap_commands(group: typer.Typer) -> None:
    for info in group.registered_commands:
        if info.callback is not None:
            info.callback = _database_errors(info.callback)
    for sub_group in group.registered_groups:
        if sub_group.typer_instance is not None:
            _wrap_commands(sub_group.typer_instance)


_wrap_commands(app)


if __name__ == "__main__":
    app()
