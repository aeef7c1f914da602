"""The distributed path: finsent_score's task runs on a real Celery worker that listens on queue ``gpu``,
with the machine's Redis (127.0.0.1:6379) as broker and CeleryExecutor sending the work, and the scores
land in PostgreSQL.

Processes: this test (executor + dag loop), ``airflow api-server --apps execution`` (the API workers
report to) and ``airflow celery worker --queues gpu``, all on loopback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.fixtures.airflow import AIRFLOW_BIN, REDIS_URL, run_dag
from tests.fixtures.scoring import add_articles, varied_articles

STARTUP_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def redis_broker(airflow_env: dict[str, str]) -> Iterator[None]:
    """Return with this session's Redis database empty; empty it again afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if os.environ.get("CI"):
            raise RuntimeError(f"CI needs Redis at {REDIS_URL}: {exc}") from exc
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    client.flushdb()
    yield
    client.flushdb()
    client.close()


@pytest.fixture
def execution_api(airflow_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """Return the URL of a running execution API server (the part of api-server that workers call)."""
    port = _free_port()
    log = (tmp_path / "api-server.log").open("wb")
    command = [AIRFLOW_BIN, "api-server", "--apps", "execution", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(command, env={**os.environ, "AIRFLOW__API__WORKERS": "1"}, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/execution/"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert proc.poll() is None, (tmp_path / "api-server.log").read_text()
            try:
                if httpx.get(url + "health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "execution API did not come up"
            time.sleep(0.5)
        yield url
    finally:
        _stop(proc)
        log.close()


@pytest.fixture
def gpu_worker(
    execution_api: str, redis_broker: None, db_url: str, tiny_model_dir: Path, tmp_path: Path
) -> Iterator[Path]:
    """Return the log path of a Celery worker consuming only queue ``gpu``, once it answers a ping."""
    from airflow.providers.celery.executors.celery_executor_utils import app

    name = f"gpu-{uuid.uuid4().hex[:8]}@127.0.0.1"
    log_path = tmp_path / "worker.log"
    log = log_path.open("wb")
    env = {
        **os.environ,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": execution_api,
        "DATABASE_URL": db_url,
        "FINSENT_MODEL_DIR": str(tiny_model_dir),
    }
    command = [AIRFLOW_BIN, "celery", "worker", "--queues", "gpu", "--concurrency", "1", "--skip-serve-logs"]
    command += ["--celery-hostname", name]
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not app.control.ping(destination=[name], timeout=1.0):
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"worker {name} never answered:\n{log_path.read_text()}"
        yield log_path
    finally:
        _stop(proc)
        log.close()


@pytest.mark.timeout(300)
# One PostgreSQL backend is enough here: the database tests cover both; this covers Airflow.
@pytest.mark.parametrize("pg_admin_url", ["embedded"], indirect=True)
def test_scoring_task_runs_on_a_celery_worker_listening_on_the_gpu_queue(
    gpu_worker: Path, engine: Engine
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.session import create_session

    from pipeline.config import REPO_DIR

    ids = add_articles(engine, varied_articles(12))
    dag = DagBag(dag_folder=str(REPO_DIR / "dags" / "finsent_score.py")).dags["finsent_score"]

    run = run_dag(dag, 240, use_executor=True)

    with create_session() as session:
        (ti,) = run.get_task_instances(session=session)
        assert (ti.task_id, ti.queue, ti.state) == ("score_articles", "gpu", "success")
        report = ti.xcom_pull(task_ids="score_articles", session=session)
    assert run.state == "success"
    assert report["scored"] == len(ids)
    with engine.connect() as conn:
        scored = conn.execute(sa.text("SELECT article_id FROM scores ORDER BY article_id")).scalars().all()
    assert scored == ids
    # The worker, not this process, ran it: its log shows the workload Celery handed it.
    assert "score_articles" in gpu_worker.read_text()
