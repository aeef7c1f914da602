"""``make airflow`` (scripts/airflow_local.py): Airflow's environment, metadata database and clean stop."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(port: int) -> bool:
    """Whether Airflow's health endpoint reports every component healthy."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as answer:
            health = json.load(answer)
    except (OSError, ValueError):
        return False
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((health.get(part) or {}).get("status") == "healthy" for part in parts)


def _listening(processes: list[psutil.Process]) -> set[tuple[str, int]]:
    """Return the (address, port) of every socket the processes listen on."""
    found = set()
    for process in processes:
        try:
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, conn.laddr.port))
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def test_make_airflow_listens_on_loopback_only_and_airflow_stop_ends_every_process(
    embedded_server_url: str, tmp_path: Path
) -> None:
    """Real Airflow, as `make airflow` starts it: once every component reports healthy, no process of it
    listens beyond loopback, and `make airflow-stop` returns only when every one of them has ended."""
    finsent = sa.make_url(embedded_server_url).set(database="postgres").render_as_string(hide_password=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(DATABASE_URL=finsent, FINSENT_HOME=str(tmp_path))
    port = _free_port()
    script = str(REPO_DIR / "scripts" / "airflow_local.py")
    log = (tmp_path / "airflow.log").open("w")
    leader = subprocess.Popen(
        [sys.executable, script, "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    admin = sa.create_engine(embedded_server_url, isolation_level="AUTOCOMMIT")
    try:
        deadline = time.monotonic() + 240
        while not _healthy(port) and leader.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        assert _healthy(port), (tmp_path / "airflow.log").read_text()[-3000:]
        tree = [psutil.Process(leader.pid), *psutil.Process(leader.pid).children(recursive=True)]
        listening = _listening(tree)
        assert ("127.0.0.1", port) in listening, listening  # the api-server, one of the tree
        assert {address for address, _ in listening} <= {"127.0.0.1", "::1"}, listening

        stopped = subprocess.run(
            [sys.executable, script, "--stop"], env=env, capture_output=True, text=True, timeout=120
        )
        assert stopped.returncode == 0 and "stopped Airflow" in stopped.stdout, stopped.stderr
        assert leader.wait(timeout=10) == 0
        assert not [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    finally:
        if leader.poll() is None:
            for process in psutil.Process(leader.pid).children(recursive=True):
                process.kill()
            leader.kill()
        log.close()
        with admin.connect() as conn:
            conn.exec_driver_sql('DROP DATABASE IF EXISTS "airflow" WITH (FORCE)')
        admin.dispose()
