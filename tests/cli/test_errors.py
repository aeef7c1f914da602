"""An unusable database is one line naming the setting and the server (never the password), everywhere."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import get_settings

BAD_URLS = {
    "postgresql://nobody:s3cret-pw@127.0.0.1:1/x": "cannot use the database at 127.0.0.1:1/x (DATABASE_URL)",
    "not-a-url": "DATABASE_URL is not a database URL",
    "mysql://user:s3cret-pw@db.example/finsent": "DATABASE_URL names a mysql database",
}
COMMANDS = [
    ["alerts"],
    ["db", "migrate"],
    ["outbox", "list"],
    ["silence", "list"],
    ["models", "list"],
    ["backtest", "--from", "2026-11-01T00:00:00Z", "--to", "2026-11-02T00:00:00Z"],
    ["rebuild-rollups"],
]


@pytest.mark.parametrize("url", list(BAD_URLS))
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_bad_database_url_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, url: str, command: list[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, command)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: {lines[0].removeprefix('error: ')}"] and BAD_URLS[url] in lines[0]
    assert "s3cret-pw" not in result.output and "Traceback" not in result.output


def test_an_unknown_outbox_status_is_refused_listing_the_known_ones() -> None:
    result = CliRunner().invoke(app, ["outbox", "list", "--status", "bogus"])
    assert result.exit_code == 2
    assert "--status 'bogus' is not one of: pending, sending, sent, failed, unconfirmed" in result.output


def test_flags_are_shown_as_flags_and_reject_a_value() -> None:
    """Help shows no ``<bool>`` type for on/off flags, so nobody writes ``--json true``."""
    shown = CliRunner().invoke(app, ["ingest", "--help"], terminal_width=100)
    assert shown.exit_code == 0 and "--json" in shown.output and "<bool>" not in shown.output
    assert "<path>" in shown.output  # options that take a value keep their type
    refused = CliRunner().invoke(app, ["outbox", "list", "--json", "true"])
    assert refused.exit_code == 2
