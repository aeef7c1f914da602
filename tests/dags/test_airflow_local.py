"""``make airflow`` (scripts/airflow_local.py): Airflow's environment, metadata database and clean stop."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import psutil
import pytest
import sqlalchemy as sa

from pipeline.config import REPO_DIR, Settings


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("airflow_local", REPO_DIR / "scripts" / "airflow_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


airflow_local = _load_script()


@pytest.fixture
def clean_airflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove AIRFLOW_* variables of this session so the script's own defaults show."""
    for key in list(os.environ):
        if key.startswith("AIRFLOW"):
            monkeypatch.delenv(key)


def test_airflow_runs_on_loopback_with_bounded_parallelism_and_the_repo_dags(
    tmp_path: Path, clean_airflow_env: None
) -> None:
    env = airflow_local.airflow_env(Settings(home=tmp_path), "postgresql+psycopg2://h/airflow", 18080)

    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO_DIR / "dags")
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert int(env["AIRFLOW__CORE__PARALLELISM"]) <= 4
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://h/airflow"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_airflow_variables_the_user_exported_win(
    tmp_path: Path, clean_airflow_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__PARALLELISM", "8")
    env = airflow_local.airflow_env(Settings(home=tmp_path), "postgresql+psycopg2://h/airflow", 8080)
    assert env["AIRFLOW__CORE__PARALLELISM"] == "8"


def test_metadata_lives_in_an_airflow_database_beside_finsents(embedded_server_url: str) -> None:
    finsent = sa.make_url(embedded_server_url).set(database="postgres").render_as_string(hide_password=False)
    settings = Settings(database_url=finsent)
    admin = sa.create_engine(embedded_server_url, isolation_level="AUTOCOMMIT")
    try:
        url = airflow_local.metadata_url(settings)
        assert airflow_local.metadata_url(settings) == url  # idempotent
        assert sa.make_url(url).database == "airflow"
        with sa.create_engine(url).connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == "airflow"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql('DROP DATABASE IF EXISTS "airflow" WITH (FORCE)')
        admin.dispose()


def test_the_cli_wrapper_runs_airflow_with_make_airflows_settings(
    embedded_server_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A plain `airflow` in a shell reads its own defaults (SQLite, example DAGs); the wrapper does not."""
    from pipeline.config import REPO_DIR, get_settings

    finsent = sa.make_url(embedded_server_url).set(database="postgres").render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", finsent)
    monkeypatch.setenv("FINSENT_HOME", str(tmp_path))
    get_settings.cache_clear()
    admin = sa.create_engine(embedded_server_url, isolation_level="AUTOCOMMIT")
    try:
        assert airflow_local.run_cli(["config", "get-value", "core", "dags_folder"], 8080) == 0
        assert airflow_local.run_cli(["config", "get-value", "core", "load_examples"], 8080) == 0
        out = capfd.readouterr().out.split()
        assert out[-2:] == [str(REPO_DIR / "dags"), "False"]
    finally:
        get_settings.cache_clear()
        with admin.connect() as conn:
            conn.exec_driver_sql('DROP DATABASE IF EXISTS "airflow" WITH (FORCE)')
        admin.dispose()


def _stand_in(tmp_path: Path, code: str) -> subprocess.Popen[str]:
    """Start a process recorded as the running standalone; it prints 'ready' once its handlers are set."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    (tmp_path / "airflow").mkdir(exist_ok=True)
    (tmp_path / "airflow" / airflow_local.PID_FILE).write_text(str(proc.pid))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_stop_interrupts_the_recorded_standalone_and_forgets_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.config import get_settings

    monkeypatch.setenv("FINSENT_HOME", str(tmp_path))
    get_settings.cache_clear()
    # Exits 0 on SIGINT, as standalone does after stopping its components.
    code = (
        "import signal, sys, time; signal.signal(signal.SIGINT, lambda *a: sys.exit(0)); "
        "print('ready', flush=True); time.sleep(60)"
    )
    proc = _stand_in(tmp_path, code)
    try:
        assert airflow_local.stop() == 0
        assert proc.wait(timeout=10) == 0
        assert not (tmp_path / "airflow" / airflow_local.PID_FILE).exists()
        assert airflow_local.stop() == 1  # nothing left to stop
    finally:
        if proc.poll() is None:
            proc.kill()


def test_stop_says_stopped_only_when_everything_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A standalone that ignores SIGINT (started from a script) and has a child: stop escalates to
    SIGTERM and reports success only once both are gone."""
    from pipeline.config import get_settings

    monkeypatch.setenv("FINSENT_HOME", str(tmp_path))
    get_settings.cache_clear()
    code = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print('ready', flush=True); time.sleep(60)"
    )
    proc = _stand_in(tmp_path, code)
    child = psutil.Process(proc.pid).children()[0]
    try:
        assert airflow_local.stop(grace_s=1.0) == 0
        assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
        out = capsys.readouterr()
        assert "did not stop on SIGINT" in out.err and "stopped Airflow (pid" in out.out
    finally:
        if proc.poll() is None:
            proc.kill()


SUPERVISOR = """
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("airflow_local", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
dies = [sys.executable, "-c", "import sys; sys.exit(3)"]
commands = [sleep, sleep] + ([dies] if sys.argv[2] == "dies" else [])
print("ready", flush=True)
sys.exit(module.supervise(commands, dict(os.environ)))
"""


def _supervisor(how: str) -> tuple[subprocess.Popen[str], list[psutil.Process]]:
    script = str(REPO_DIR / "scripts" / "airflow_local.py")
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, script, how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 20
    children: list[psutil.Process] = []
    while len(children) < 2 and time.monotonic() < deadline:
        children = psutil.Process(proc.pid).children()
        time.sleep(0.05)
    return proc, children


def test_the_supervisor_stops_every_component_on_sigint_even_if_started_with_it_ignored() -> None:
    proc, children = _supervisor("runs")
    assert len(children) == 2
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=40) == 0
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_one_component_exiting_stops_the_others() -> None:
    proc, children = _supervisor("dies")
    assert proc.wait(timeout=40) == 1
    assert "exited (3); stopped the others" in proc.communicate()[1]
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_every_component_stays_on_loopback() -> None:
    commands = [" ".join(c) for c in airflow_local.COMPONENTS]
    assert "scheduler --skip-serve-logs" in commands and "triggerer --skip-serve-logs" in commands
    assert "api-server --host 127.0.0.1 --port {port}" in commands
