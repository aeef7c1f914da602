# finsent — the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export FINSENT_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: demo test lint bench dashboard airflow airflow-stop airflow-cli services browser clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and exactly pinned: the CPU build; an open range would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## demo: install, migrate, ingest a recorded feed set from a local server, print what happened.
demo: $(STAMP)
	$(BIN)/python -m pipeline.demo

## test: install, make sure the services the tests use run, then pytest.
test: $(STAMP) services browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

## services: start the local PostgreSQL and Redis if this machine has them and they are down.
services:
	@if command -v pg_ctlcluster >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start || true; fi
	@# Redis: the Celery broker of the Airflow worker test.
	@if command -v redis-server >/dev/null && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then \
		redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null || true; fi

## browser: Debian chromium + chromedriver for the dashboard's browser test, and a Compose client for the
## docker-compose.yml check, installed when missing (as root).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y chromium chromium-driver; \
		else echo "chromium/chromium-driver missing: the browser test skips (CI installs them as root)"; fi; fi
	@if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y docker-compose; \
		else echo "no Compose client: the docker-compose.yml check skips"; fi; fi

## dashboard: migrate, then the Streamlit dashboard on http://127.0.0.1:$(DASHBOARD_PORT) (Ctrl-C stops it).
DASHBOARD_PORT ?= 8501
dashboard: $(STAMP)
	$(BIN)/finsent db migrate
	$(BIN)/streamlit run dashboard/app.py --server.address=127.0.0.1 --server.port=$(DASHBOARD_PORT) \
		--server.headless=true --browser.gatherUsageStats=false

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## bench: every benchmark, each printing JSON (the dashboard one at 1M rows; add `--rows 1000000,10000000` by hand).
bench: $(STAMP)
	$(BIN)/python bench/ingest.py --json
	$(BIN)/python bench/parse.py --json
	$(BIN)/python bench/parse_pool.py --json
	$(BIN)/python bench/classify.py --json
	$(BIN)/python bench/pretrain_stream.py --json
	$(BIN)/python bench/scoring.py --json
	$(BIN)/python bench/alerts.py --json
	$(BIN)/python bench/storms.py --json
	$(BIN)/python bench/soak.py --json
	$(BIN)/python bench/dashboard.py --rows 1000000

## airflow: Airflow 3 (scheduler, dag-processor, triggerer, api-server, all on loopback) on http://127.0.0.1:8080,
## metadata in PostgreSQL, DAGs from dags/. Stop with Ctrl-C, or `make airflow-stop` from another terminal.
airflow: $(STAMP)
	$(BIN)/python scripts/airflow_local.py

airflow-stop:
	$(BIN)/python scripts/airflow_local.py --stop

## airflow-cli: any airflow command against make airflow's database and DAGs, e.g. ARGS="dags list".
airflow-cli: $(STAMP)
	$(BIN)/python scripts/airflow_local.py --cli $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
