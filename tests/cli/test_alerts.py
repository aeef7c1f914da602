"""`finsent alerts`, `backtest` and `silence` end to end: real database, real SMTP server on loopback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from pipeline import store
from pipeline.cli import app
from pipeline.config import get_settings
from tests.fixtures.smtp_server import SmtpCatcher

VERSION = "cli-test"
START = datetime(2026, 10, 1, tzinfo=UTC)
STORM = START + timedelta(days=3)
H = timedelta(hours=1)
RULES = """
rules:
  - {name: ticker-1h, dimension: ticker, window: 1h, baseline: 3d, for: 1h, keep_firing_for: 2h,
     cooldown: 6h, min_stories: 5, min_rise: 0.2, alpha: 0.001, severity: critical}
"""

runner = CliRunner()


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def _seed(engine: Engine, start: datetime) -> None:
    """Three calm days for ACME and GLBX from ``start``, then a three-hour negative storm for ACME."""
    rows = []
    t = start
    storm = start + (STORM - START)
    while t < storm + 12 * H:
        in_storm = storm <= t < storm + 3 * H
        rows.append(("ticker", "ACME", t, 8 if in_storm else 4, 8 if in_storm else 1))
        rows.append(("ticker", "GLBX", t, 4, 1))
        t += H
    with engine.begin() as conn:
        store.register_model_version(conn, VERSION, "test", None, None)
        store.activate_model_version(conn, VERSION)
        store.write_story_counts(conn, VERSION, rows)


@pytest.fixture
def rules_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    monkeypatch.setenv("FINSENT_ALERT_RULES", str(rules))
    get_settings.cache_clear()
    return rules


@pytest.fixture
def seeded(engine: Engine, rules_file: Path) -> Engine:
    """Three calm days for ACME and GLBX, then a three-hour negative storm for ACME (October 2026)."""
    _seed(engine, START)
    return engine


def _smtp_env(monkeypatch: pytest.MonkeyPatch, catcher: SmtpCatcher) -> None:
    monkeypatch.setenv("FINSENT_SMTP_HOST", catcher.host)
    monkeypatch.setenv("FINSENT_SMTP_PORT", str(catcher.port))
    monkeypatch.setenv("FINSENT_ALERT_TO", "desk@example.com")
    get_settings.cache_clear()


def test_alerts_json_reports_firing_and_sends_one_email(
    seeded: Engine, smtp_catcher: SmtpCatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    _smtp_env(monkeypatch, smtp_catcher)
    first = runner.invoke(app, ["alerts", "--now", (STORM + H).isoformat(), "--json"])
    assert first.exit_code == 0, first.output
    data = _last_json(first.output)
    assert (data["firing"], data["new_firing"], data["emails_sent"]) == (0, 0, 0)
    assert [(a["value"], a["status"]) for a in data["alerts"]] == [("ACME", "pending")]

    second = _last_json(runner.invoke(app, ["alerts", "--now", (STORM + 2 * H).isoformat(), "--json"]).output)
    assert (second["firing"], second["new_firing"], second["emails_sent"], second["emails_pending"]) == (
        1,
        1,
        1,
        0,
    )
    alert = second["alerts"][0]
    assert alert["rule"] == "ticker-1h" and alert["dimension"] == "ticker" and alert["value"] == "ACME"
    assert alert["status"] == "firing" and alert["neg_share"] == 1.0 and alert["stories"] == 8
    assert alert["baseline"] < 0.3

    again = _last_json(runner.invoke(app, ["alerts", "--now", (STORM + 2 * H).isoformat(), "--json"]).output)
    assert again["new_firing"] == 0 and again["emails_sent"] == 0
    (msg,) = smtp_catcher.messages()
    assert "FIRING critical: ticker ACME" in msg["Subject"]


def test_alerts_evaluated_at_a_future_time_send_its_email_only_when_that_time_comes(
    engine: Engine, rules_file: Path, smtp_catcher: SmtpCatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--now moves the evaluation, not the mail: the email is due at the evaluated time, by the real
    clock, so a rehearsal of next month's storm sends nothing today."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=30)
    _seed(engine, start)
    _smtp_env(monkeypatch, smtp_catcher)
    storm = start + (STORM - START)
    runner.invoke(app, ["alerts", "--now", (storm + H).isoformat()])
    fired = _last_json(runner.invoke(app, ["alerts", "--now", (storm + 2 * H).isoformat(), "--json"]).output)
    assert (fired["new_firing"], fired["emails_sent"], fired["emails_pending"]) == (1, 0, 1)
    today = _last_json(runner.invoke(app, ["alerts", "--json"]).output)  # the real clock: not due yet
    assert today["emails_sent"] == 0 and today["emails_pending"] == 1
    assert smtp_catcher.messages() == []
    (waiting,) = _last_json(runner.invoke(app, ["outbox", "list", "--json"]).output)
    assert waiting["status"] == "pending"
    assert datetime.fromisoformat(waiting["next_attempt_at"]) == storm + 2 * H


def test_alerts_without_smtp_keep_the_email_waiting(seeded: Engine) -> None:
    runner.invoke(app, ["alerts", "--now", (STORM + H).isoformat()])
    result = runner.invoke(app, ["alerts", "--now", (STORM + 2 * H).isoformat(), "--json"])
    data = _last_json(result.output)
    assert data["emails_sent"] == 0 and data["emails_pending"] == 1
    assert "1 waiting" in result.output


def test_outbox_list_shows_the_waiting_email_and_requeue_refuses_it(seeded: Engine) -> None:
    runner.invoke(app, ["alerts", "--now", (STORM + H).isoformat()])
    runner.invoke(app, ["alerts", "--now", (STORM + 2 * H).isoformat()])
    (email,) = _last_json(runner.invoke(app, ["outbox", "list", "--json"]).output)
    assert email["status"] == "pending" and "FIRING critical: ticker ACME" in email["subject"]
    listed = runner.invoke(app, ["outbox", "list", "--status", "unconfirmed"])
    assert listed.exit_code == 0 and "no unconfirmed emails" in listed.output
    refused = runner.invoke(app, ["outbox", "requeue", str(email["id"])])
    assert refused.exit_code != 0 and "only failed or unconfirmed" in refused.output


def test_backtest_lists_what_would_have_fired_without_touching_live_state(seeded: Engine) -> None:
    result = runner.invoke(
        app,
        ["backtest", "--from", (STORM - 24 * H).isoformat(), "--to", (STORM + 10 * H).isoformat(), "--json"],
    )
    assert result.exit_code == 0, result.output
    data = _last_json(result.output)
    assert data["evaluations"] == 35
    assert data["fired"] == 1
    (episode,) = data["episodes"]
    assert episode["value"] == "ACME"
    assert episode["fired_at"] == (STORM + 2 * H).isoformat()
    assert episode["resolved_at"] == (STORM + 5 * H).isoformat()
    with seeded.connect() as conn:
        assert store.alert_states(conn, ["ticker-1h"]) == []
        assert store.outbox_emails(conn) == []


def test_backtest_rejects_a_reversed_range(seeded: Engine) -> None:
    result = runner.invoke(app, ["backtest", "--from", STORM.isoformat(), "--to", START.isoformat()])
    assert result.exit_code == 2


def test_silence_add_list_expire(seeded: Engine) -> None:
    added = runner.invoke(
        app, ["silence", "add", "--value", "ACME", "--for", "2h", "--comment", "earnings call"]
    )
    assert added.exit_code == 0, added.output
    silence_id = int(added.output.split()[1].rstrip(":"))
    listed = runner.invoke(app, ["silence", "list", "--json"])
    (row,) = json.loads(listed.output.strip().splitlines()[-1])
    assert row["id"] == silence_id and row["value"] == "ACME" and row["state"] == "active"
    assert runner.invoke(app, ["silence", "expire", str(silence_id)]).exit_code == 0
    assert runner.invoke(app, ["silence", "list"]).output.strip() == "no silences"
    assert "expired" in runner.invoke(app, ["silence", "list", "--all"]).output
    assert runner.invoke(app, ["silence", "expire", str(silence_id)]).exit_code == 2


def test_silence_needs_a_matcher_and_an_end(seeded: Engine) -> None:
    assert runner.invoke(app, ["silence", "add", "--for", "1h"]).exit_code == 2
    assert runner.invoke(app, ["silence", "add", "--value", "ACME"]).exit_code == 2


def test_silenced_alert_sends_nothing_through_the_cli(
    seeded: Engine, smtp_catcher: SmtpCatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    _smtp_env(monkeypatch, smtp_catcher)
    starts = START.isoformat()
    ends = (STORM + 24 * H).isoformat()
    assert (
        runner.invoke(
            app, ["silence", "add", "--rule", "ticker-*", "--starts", starts, "--ends", ends]
        ).exit_code
        == 0
    )
    runner.invoke(app, ["alerts", "--now", (STORM + H).isoformat()])
    data = _last_json(runner.invoke(app, ["alerts", "--now", (STORM + 2 * H).isoformat(), "--json"]).output)
    assert data["firing"] == 1 and data["emails_sent"] == 0 and data["emails_pending"] == 0
    assert smtp_catcher.received == []


def test_bad_rules_file_exits_with_the_reason(seeded: Engine, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {name: x, dimension: planet, window: 1h}\n", encoding="utf-8")
    result = runner.invoke(app, ["alerts", "--rules", str(bad)])
    assert result.exit_code == 2
    assert "rule x" in result.output
