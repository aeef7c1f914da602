"""Scoring commands: `score`, `rescore`, `models list|activate`, `rebuild-rollups`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli.render import JsonOption, ModelDirOption, echo_json, fail, iso_time

if TYPE_CHECKING:
    from pipeline.scoring.score import BatchReport

app = typer.Typer()
models_app = typer.Typer(help="Model versions: list them and choose the active one.", no_args_is_help=True)
app.add_typer(models_app, name="models")

BatchSizeOption = Annotated[int | None, typer.Option("--batch-size", min=1, help="Articles per batch.")]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="Score at most this many articles.")]


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
    from pipeline.store import db

    engine = db.get_engine()
    db.migrate(engine)  # idempotent; scoring right after a fresh install needs no separate step
    # The model (torch: seconds) loads only once the database answered.
    from pipeline.scoring import ScoringError, score_pending

    try:
        progress = _batch_progress(as_json)
        done = score_pending(engine, model_dir=model, batch_size=batch_size, limit=limit, on_batch=progress)
        report = done.as_dict()
    except ScoringError as exc:
        raise fail(str(exc)) from exc
    if progress is not None:
        typer.echo(err=True)
    if as_json:
        echo_json(report)
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
    from pipeline.store import db

    engine = db.get_engine()
    db.migrate(engine)
    from pipeline.scoring import ScoringError, activate_version, pending_count, rescore

    try:
        progress = _batch_progress(as_json)
        done = rescore(engine, model_dir=model, batch_size=batch_size, limit=limit, on_batch=progress)
        report = done.as_dict()
        version = report["model_version"]
        report["pending"] = pending_count(version)
        report["activated"] = activate and report["pending"] == 0
        if report["activated"]:
            activate_version(version)
    except ScoringError as exc:
        raise fail(str(exc)) from exc
    if progress is not None:
        typer.echo(err=True)
    if as_json:
        echo_json(report)
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
        echo_json(versions)
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
        raise fail(str(exc)) from exc
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
    from pipeline.scoring import rebuild_rollups

    written = rebuild_rollups(model_version=model_version, since=iso_time(since))
    if as_json:
        echo_json({"rows": written})
        return
    for version, rows in written.items():
        typer.echo(f"{version}: {rows} rollup rows")
