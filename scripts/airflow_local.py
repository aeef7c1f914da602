"""Run finsent's DAGs in Airflow 3 on this machine (``make airflow``; ``make airflow-stop``).

Airflow's metadata goes to a database called ``airflow`` on the same PostgreSQL finsent uses: the
embedded server under FINSENT_HOME, or the server of DATABASE_URL. AIRFLOW_HOME is FINSENT_HOME/airflow,
the DAG folder is this repository's ``dags/``, the UI and API listen on 127.0.0.1 only, and the
LocalExecutor runs at most AIRFLOW__CORE__PARALLELISM tasks at once (default 2: the model is CPU-heavy).

It runs the four components itself (what ``airflow standalone`` would, but every one on loopback: the
scheduler and triggerer without their task-log servers, which bind every interface and which a
single-host LocalExecutor does not need, as the api-server reads the log files directly).

Stopping cleanly: Ctrl-C in the terminal running it, or ``make airflow-stop`` from another one; both send
SIGINT, and this process then stops the scheduler, dag-processor, triggerer and api-server and waits for
them. ``--stop`` says it stopped only once the processes are gone (SIGTERM, then SIGKILL, if SIGINT did
not do it).

``make airflow-cli ARGS="dags unpause finsent_ingest"`` runs any ``airflow`` command against the same
metadata database, DAG folder and home, where a plain ``airflow`` in a shell would read its own defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from pipeline.config import REPO_DIR, Settings, get_settings
from pipeline.store import db

METADATA_DATABASE = "airflow"
PID_FILE = "standalone.pid"
STOP_GRACE_S = 30.0
# The components and their loopback-only flags; {port} is the api-server's.
COMPONENTS = (
    ("scheduler", "--skip-serve-logs"),
    ("dag-processor",),
    ("triggerer", "--skip-serve-logs"),
    ("api-server", "--host", "127.0.0.1", "--port", "{port}"),
)


def metadata_url(settings: Settings) -> str:
    """Return the URL of the ``airflow`` metadata database beside finsent's, creating it if missing."""
    return db.ensure_database(db.database_url(settings), METADATA_DATABASE)


def airflow_env(settings: Settings, sql_alchemy_conn: str, port: int) -> dict[str, str]:
    """Return the environment for the Airflow processes; variables already set by the user win."""
    defaults = {
        "AIRFLOW_HOME": str(settings.home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_DIR / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
    }
    env = {**defaults, **os.environ}
    # Each component may start further `airflow` processes: it must be on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def start(port: int) -> int:
    """Prepare the metadata database and the model pool, then run the components until stopped."""
    settings = get_settings()
    env = airflow_env(settings, metadata_url(settings), port)
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True)
    pool = [airflow, "pools", "set", settings.gpu_pool, "1", "finsent model tasks (scoring, training)"]
    subprocess.run(pool, env=env, check=True, stdout=subprocess.DEVNULL)
    db.migrate(db.get_engine())
    (home / PID_FILE).write_text(str(os.getpid()))
    print(
        f"Airflow UI: http://127.0.0.1:{port}  (user admin, password in "
        f"{home / 'simple_auth_manager_passwords.json.generated'}; stop: Ctrl-C or `make airflow-stop`)",
        flush=True,
    )
    commands = [[airflow, *(arg.format(port=port) for arg in component)] for component in COMPONENTS]
    try:
        return supervise(commands, env)
    finally:
        (home / PID_FILE).unlink(missing_ok=True)


def supervise(commands: list[list[str]], env: dict[str, str]) -> int:
    """Run every command until SIGINT or SIGTERM arrives (return 0) or one of them exits (return 1); then
    stop the rest, SIGTERM first and SIGKILL after ``STOP_GRACE_S``, and wait for them."""
    stop = threading.Event()
    # Handlers, not the inherited dispositions: started in the background by a script, this process
    # inherits an ignored SIGINT and would otherwise never hear `make airflow-stop`.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    processes = [subprocess.Popen(command, env=env) for command in commands]
    died: subprocess.Popen[bytes] | None = None
    try:
        while not stop.is_set() and died is None:
            died = next((p for p in processes if p.poll() is not None), None)
            stop.wait(0.5)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if died is None:
        return 0
    command = commands[processes.index(died)]
    print(f"{' '.join(command)} exited ({died.returncode}); stopped the others", file=sys.stderr)
    return 1


def run_cli(args: list[str], port: int) -> int:
    """Run ``airflow ARGS`` with the environment ``make airflow`` uses; return its exit status."""
    settings = get_settings()
    env = airflow_env(settings, metadata_url(settings), port)
    return subprocess.run([str(Path(sys.executable).parent / "airflow"), *args], env=env).returncode


def stop(grace_s: float = 30.0) -> int:
    """Stop a running ``make airflow`` and every process it started; return 0 once they are gone, 1 when
    none was running. SIGINT first (it stops its components); SIGTERM, then SIGKILL, for what remains."""
    pid_file = get_settings().home / "airflow" / PID_FILE
    try:
        leader = psutil.Process(int(pid_file.read_text()))
        group = [leader, *leader.children(recursive=True)]
    except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
        print(f"no `make airflow` running (pid file {pid_file})", file=sys.stderr)
        pid_file.unlink(missing_ok=True)
        return 1
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        targets = [leader] if sig == signal.SIGINT else [p for p in group if p.is_running()]
        for process in targets:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(sig)
        _, alive = psutil.wait_procs(group, timeout=wait_s)
        if not alive:
            break
        print(f"Airflow (pid {leader.pid}) did not stop on {signal.Signals(sig).name}", file=sys.stderr)
    still = [p.pid for p in group if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    if still:
        print(f"Airflow processes still running: {still}", file=sys.stderr)
        return 2
    pid_file.unlink(missing_ok=True)
    print(f"stopped Airflow (pid {leader.pid}) and its {len(group) - 1} processes")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop", action="store_true", help="stop a running `make airflow`")
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_PORT", "8080")))
    parser.add_argument("--cli", nargs=argparse.REMAINDER, help="run `airflow ARGS...` with this environment")
    args = parser.parse_args()
    if args.stop:
        return stop()
    if args.cli is not None:
        return run_cli(args.cli, args.port)
    return start(args.port)


if __name__ == "__main__":
    sys.exit(main())
