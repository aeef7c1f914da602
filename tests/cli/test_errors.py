"""An unusable database is one line naming the setting and the server (never the password), everywhere;
so is an unusable setting, the removed FINSENT_ALLOW_PRIVATE_HOSTS included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from pipeline.cli import app
from pipeline.config import ALLOW_PRIVATE_HOSTS_REPLACED, Settings, get_settings

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


def invoke_with(monkeypatch: pytest.MonkeyPatch, name: str, value: str, command: list[str]) -> Result:
    """Run the CLI with ``name`` set to ``value`` in the environment, settings read afresh."""
    monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, command)
    finally:
        get_settings.cache_clear()


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    return lines[0]


@pytest.mark.parametrize("url", list(BAD_URLS))
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_bad_database_url_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, url: str, command: list[str]
) -> None:
    result = invoke_with(monkeypatch, "DATABASE_URL", url, command)
    assert result.exit_code == 1, result.output
    assert BAD_URLS[url] in one_error_line(result.output)
    assert "s3cret-pw" not in result.output


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


# What someone who still sets the removed switch reads: the replacement, and how to use it.
REPLACED = (
    "error: invalid settings: FINSENT_ALLOW_PRIVATE_HOSTS was replaced by FINSENT_ALLOWED_HOSTS: list the "
    "hosts or networks feeds may be fetched from (e.g. 127.0.0.1, feeds.internal, 10.20.0.0/16)"
)


@pytest.mark.parametrize("value", ["true", "false", ""])
@pytest.mark.parametrize("command", [["ingest"], ["db", "migrate"], ["alerts"]], ids=" ".join)
def test_the_removed_allow_private_hosts_setting_is_refused_in_one_line_naming_its_replacement(
    monkeypatch: pytest.MonkeyPatch, command: list[str], value: str
) -> None:
    """Set to anything, false and empty included: it is never silently ignored."""
    result = invoke_with(monkeypatch, "FINSENT_ALLOW_PRIVATE_HOSTS", value, command)
    assert result.exit_code == 1, result.output
    assert one_error_line(result.output) == REPLACED


def test_the_removed_setting_in_a_dotenv_file_is_refused_by_the_command_in_its_own_process(
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text("FINSENT_ALLOW_PRIVATE_HOSTS=true\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINSENT_") and k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-c", "from pipeline.cli import app; app()", "ingest"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert one_error_line(done.stderr) == REPLACED


def test_any_unusable_setting_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke_with(monkeypatch, "FINSENT_RETRIES", "several", ["ingest"])
    assert result.exit_code == 1
    line = one_error_line(result.output)
    assert line.startswith("error: invalid settings: FINSENT_RETRIES: ") and "integer" in line


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("127.0.0.1, feeds..internal", "'feeds..internal' is not a host name, an IP address or a CIDR"),
        ("10.0.0.0/33", "'10.0.0.0/33' is not a network"),
    ],
)
def test_a_bad_allowed_hosts_entry_is_refused_when_settings_load(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    """Before any feed is fetched, and by commands that fetch nothing."""
    for command in (["ingest"], ["models", "list"]):
        result = invoke_with(monkeypatch, "FINSENT_ALLOWED_HOSTS", value, command)
        assert result.exit_code == 1
        line = one_error_line(result.output)
        assert line.startswith("error: invalid settings: FINSENT_ALLOWED_HOSTS: ") and message in line


@pytest.mark.parametrize("kwargs", [{"allow_private_hosts": True}, {"FINSENT_ALLOW_PRIVATE_HOSTS": "true"}])
def test_settings_built_in_code_refuse_the_removed_switch_too(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError) as caught:
        Settings(**kwargs)
    assert ALLOW_PRIVATE_HOSTS_REPLACED in str(caught.value)
