"""The ``finsent`` command line: thin wrappers over pipeline/ and models/ functions."""

from __future__ import annotations

import typer

app = typer.Typer(help="finsent: financial news sentiment monitor.", no_args_is_help=True)
db_app = typer.Typer(help="Database commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")

# --- database and ingestion commands (pipeline) ---------------------------------------------


# --- model commands: train / eval / classify (models) --------------------------------------


if __name__ == "__main__":
    app()
