"""finsent_maintenance: daily retention, a rollup consistency check and fresh planner statistics."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from pipeline.config import get_settings

settings = get_settings()


@dag(
    dag_id="finsent_maintenance",
    schedule=settings.maintenance_schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["finsent", "maintenance"],
    default_args={
        "owner": "finsent",
        "queue": "default",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": 2.0,
    },
)
def finsent_maintenance() -> None:
    @task
    def apply_retention() -> dict:
        """Return how many old articles and fetch log rows were deleted."""
        from pipeline import maintenance
        from pipeline.store import db

        with db.one_line_errors():
            return maintenance.apply_retention().as_dict()

    @task
    def verify_rollups() -> dict:
        """Return the consistency report; fail the task when rollups disagree with the scores."""
        from pipeline import maintenance
        from pipeline.store import db

        with db.one_line_errors():
            return maintenance.verify_rollups()

    @task
    def analyze() -> list[str]:
        """Return the tables whose statistics were refreshed."""
        from pipeline import maintenance
        from pipeline.store import db

        with db.one_line_errors():
            return maintenance.analyze()

    apply_retention() >> verify_rollups() >> analyze()


finsent_maintenance()
