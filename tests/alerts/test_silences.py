"""pipeline.alerts.silences: every caller gets the same limits, and a silence round-trips the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.engine import Engine

from pipeline.alerts.silences import (
    MAX_SILENCE,
    SilenceError,
    add_silence,
    check_silence,
    expire_silence,
    list_silences,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_a_silence_needs_a_matcher() -> None:
    with pytest.raises(SilenceError, match="at least one matcher"):
        check_silence(None, None, None, NOW, NOW + timedelta(hours=1))


def test_a_silence_must_end_after_it_starts() -> None:
    with pytest.raises(SilenceError, match="before it starts"):
        check_silence("ticker-1h", None, None, NOW, NOW)


def test_a_silence_lasts_at_most_a_year() -> None:
    assert check_silence(None, None, "ACME", NOW, NOW + MAX_SILENCE) == NOW
    with pytest.raises(SilenceError, match="at most a year"):
        check_silence(None, None, "ACME", NOW, NOW + MAX_SILENCE + timedelta(seconds=1))


def test_the_start_is_returned_in_utc() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=2)))
    assert check_silence(None, "ticker", None, local, NOW + timedelta(hours=2)) == NOW


def test_the_library_refuses_what_the_cli_refuses(engine: Engine) -> None:
    """The dashboard form and DAG tasks call add_silence directly: the one-year limit holds there too."""
    with pytest.raises(SilenceError, match="at most a year"):
        add_silence(value="ACME", ends_at=datetime.now(UTC) + timedelta(days=800), engine=engine)
    assert list_silences(include_expired=True, engine=engine) == []


def test_add_list_expire(engine: Engine) -> None:
    now = datetime.now(UTC)
    silence_id = add_silence(value="ACME", ends_at=now + timedelta(hours=2), comment="call", engine=engine)
    [row] = list_silences(engine=engine)
    assert (row["id"], row["value"], row["state"]) == (silence_id, "ACME", "active")
    expire_silence(silence_id, engine=engine)
    assert list_silences(engine=engine) == []
    with pytest.raises(SilenceError, match="no silence"):
        expire_silence(silence_id, engine=engine)
