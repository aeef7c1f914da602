"""Shared pytest set-up: offline model hubs, and the fixture plugins each part of the code base owns."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = [
    "tests.fixtures.airflow",
    "tests.fixtures.dashboard",
    "tests.fixtures.postgres",
    "tests.fixtures.http_server",
    "tests.fixtures.smtp_server",
    "tests.fixtures.scoring",
    "tests.fixtures.models",
]
