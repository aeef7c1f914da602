"""docker-compose.yml: the Compose client accepts it, and it wires the services production needs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.config import REPO_DIR

COMPOSE_FILE = REPO_DIR / "docker-compose.yml"
SECRETS = {
    "POSTGRES_PASSWORD": "pw",
    "REDIS_PASSWORD": "rpw",
    "AIRFLOW_JWT_SECRET": "jwt",
    "AIRFLOW_FERNET_KEY": "fernet",
}
AIRFLOW_SERVICES = {"api-server", "scheduler", "dag-processor", "triggerer", "worker-default", "worker-gpu"}


def _compose_command() -> list[str]:
    """Return the Compose client to use: the docker plugin, else the standalone ``docker-compose``."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if os.environ.get("CI"):
        raise RuntimeError("CI needs a Compose client: `make test` installs Debian's docker-compose")
    pytest.skip("no Compose client (docker compose plugin or docker-compose) is installed")


def _compose(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Return the finished Compose run on the repository's docker-compose.yml."""
    command = [*_compose_command(), "-f", str(COMPOSE_FILE), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)


def _clean_env() -> dict[str, str]:
    # Only PATH and HOME: a developer's own .env or exported secrets must not make the test pass.
    return {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}


@pytest.fixture(scope="module")
def compose() -> dict:
    """Return docker-compose.yml parsed as YAML (anchors and merge keys resolved)."""
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def test_compose_config_validates_with_the_secrets_set(tmp_path: Path) -> None:
    result = _compose("config", env={**_clean_env(), **SECRETS}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert AIRFLOW_SERVICES | {"postgres", "redis", "airflow-init", "dashboard", "mailpit"} <= services.keys()
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]


def test_the_database_and_broker_are_published_on_loopback_unless_an_address_is_given(tmp_path: Path) -> None:
    """GPU workers on other hosts reach PostgreSQL and Redis; by default nothing leaves this host."""
    for env, address in (({}, "127.0.0.1"), ({"PUBLISH_ADDRESS": "10.1.2.3"}, "10.1.2.3")):
        result = _compose("config", env={**_clean_env(), **SECRETS, **env}, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        services = yaml.safe_load(result.stdout)["services"]
        for name, port in (("postgres", 5432), ("redis", 6379)):
            [published] = services[name]["ports"]
            if isinstance(published, str):  # Compose v1 renders "127.0.0.1:6379:6379/tcp"
                host_ip, _, target = published.split("/")[0].rsplit(":", 2)
                published = {"host_ip": host_ip, "target": target}
            assert (published["host_ip"], int(published["target"])) == (address, port)
    # The broker asks for its password, and Airflow's broker URL carries it.
    assert "--requirepass" in services["redis"]["command"]
    assert services["scheduler"]["environment"]["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:rpw@")


def test_compose_config_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    result = _compose("config", "-q", env=_clean_env(), cwd=tmp_path)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr or "AIRFLOW_" in result.stderr


def test_every_long_running_service_has_a_healthcheck(compose: dict) -> None:
    services = compose["services"]
    unchecked = {name for name, svc in services.items() if "healthcheck" not in svc}
    assert unchecked == {"airflow-init"}  # a one-shot job: completion is its health


def test_workers_listen_on_the_default_and_gpu_queues_and_only_gpu_reserves_devices(compose: dict) -> None:
    services = compose["services"]
    assert services["worker-default"]["command"][3:5] == ["--queues", "default"]
    assert services["worker-gpu"]["command"][3:5] == ["--queues", "gpu"]
    reserving = {name for name, svc in services.items() if "deploy" in svc}
    assert reserving == {"worker-gpu"}


def test_airflow_services_share_one_image_built_from_the_repo_and_wait_for_migrations(compose: dict) -> None:
    services = compose["services"]
    for name in AIRFLOW_SERVICES - {"worker-gpu"}:
        assert services[name]["build"]["context"] == ".", name
        assert services[name]["image"] == services["scheduler"]["image"], name
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert (REPO_DIR / "Dockerfile").read_text(encoding="utf-8").startswith("#")
    assert "FROM python:3.11-slim" in (REPO_DIR / "Dockerfile").read_text(encoding="utf-8")
    init = " ".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in init and "finsent db migrate" in init


def test_every_component_reaches_the_execution_api_and_signs_with_one_secret(compose: dict) -> None:
    for name in AIRFLOW_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith(":8080/execution/"), name
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "${AIRFLOW_JWT_SECRET:?set AIRFLOW_JWT_SECRET}", name
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
