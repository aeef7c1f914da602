"""``finsent db status`` and ``finsent db stop``: the embedded server can be seen and stopped, and the next
command starts it again. Each command runs in its own process, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.store.db import embedded_server_pid


def finsent(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"FINSENT_HOME": str(home)}
    code = "from pipeline.cli import app; app()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals the server by pid")
def test_the_embedded_server_is_reported_stopped_and_started_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home)
    assert "not running" in finsent(home, "db", "status").stdout
    started = finsent(home, "db", "migrate")
    assert started.returncode == 0, started.stderr
    assert "XDG_RUNTIME_DIR" not in started.stderr  # the warning is not the user's business
    pid = embedded_server_pid(settings)
    assert pid is not None and f"running (pid {pid})" in finsent(home, "db", "status").stdout
    stopped = finsent(home, "db", "stop")
    assert stopped.returncode == 0 and f"stopped the embedded PostgreSQL (pid {pid})" in stopped.stdout
    assert embedded_server_pid(settings) is None
    assert "is not running" in finsent(home, "db", "stop").stdout
    # The next command starts it again, with the data it had.
    again = finsent(home, "db", "migrate")
    assert again.returncode == 0 and "up to date" in again.stdout, again.stderr
    finsent(home, "db", "stop")


def test_status_names_the_configured_server_without_its_password() -> None:
    env = dict(os.environ, DATABASE_URL="postgresql://finsent:s3cret@db.internal:5433/finsent")
    code = "from pipeline.cli import app; app()"
    done = subprocess.run(
        [sys.executable, "-c", code, "db", "status"], env=env, capture_output=True, text=True, check=False
    )
    assert done.stdout.strip() == "DATABASE_URL is set: db.internal:5433/finsent (no embedded server used)"
    assert "s3cret" not in done.stdout + done.stderr
