"""``make airflow`` (scripts/airflow_local.py): Airflow's environment, metadata database and clean stop."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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


def test_stop_interrupts_the_recorded_standalone_and_forgets_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.config import get_settings

    monkeypatch.setenv("FINSENT_HOME", str(tmp_path))
    get_settings.cache_clear()
    # A stand-in process that exits 0 on SIGINT, as standalone does after stopping its components.
    code = (
        "import signal, sys, time; signal.signal(signal.SIGINT, lambda *a: sys.exit(0)); "
        "print('ready', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        (tmp_path / "airflow").mkdir()
        (tmp_path / "airflow" / airflow_local.PID_FILE).write_text(str(proc.pid))
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"  # handler installed
        assert airflow_local.stop() == 0
        assert proc.wait(timeout=10) == 0
        assert not (tmp_path / "airflow" / airflow_local.PID_FILE).exists()
        assert airflow_local.stop() == 1  # nothing left to stop
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        get_settings.cache_clear()
