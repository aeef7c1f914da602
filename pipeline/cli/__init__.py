"""The ``finsent`` command line (console script ``pipeline.cli:app``): one module per command group,
each a thin wrapper over the stage packages and models/."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperOption

from pipeline.cli import alerts, ingest, models, scoring

_display_type = TyperOption.display_type_rich


def _flag_aware_display_type(option: TyperOption, ctx: Any) -> str | None:  # ctx: typer's own click
    """Typer labels on/off flags ``<bool>`` in help, which reads as if they took a value (and then
    ``--json true`` fails): a flag takes none, so its type column stays empty."""
    return None if option.is_flag else _display_type(option, ctx)


# Patched on the class: Typer builds its click options anew for every invocation.
TyperOption.display_type_rich = _flag_aware_display_type  # type: ignore[method-assign, assignment]

app = typer.Typer(help="finsent: financial news sentiment monitor.", no_args_is_help=True)
for group in (ingest.app, models.app, scoring.app, alerts.app):
    app.add_typer(group)


def _database_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Wrap a command so that an unusable database or setting is one line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> None:
        from pipeline.config import SettingsError
        from pipeline.store import db

        try:
            with db.one_line_errors():
                command(*args, **kwargs)
        except (db.DatabaseUnavailable, SettingsError) as exc:
            typer.echo(f"error: {exc}", err=True)
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


__all__ = ["app"]
