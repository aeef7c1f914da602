"""finsent_alerts: evaluate the alert rules whenever new scores land, then send the queued emails."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

SCORES = Asset("finsent_scores")


@dag(
    dag_id="finsent_alerts",
    schedule=[SCORES],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["finsent", "alerts"],
    default_args={
        "owner": "finsent",
        "queue": "default",
        "retries": 3,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=15),
    },
)
def finsent_alerts() -> None:
    @task
    def evaluate_rules() -> dict:
        """Return the alert report: transitions found and emails put in the outbox."""
        from pipeline.alerts import evaluate
        from pipeline.store import db

        with db.one_line_errors():
            return evaluate().as_dict()

    @task
    def send_emails() -> dict:
        """Return the delivery report of the outbox (idempotent: each email is sent once)."""
        from pipeline.alerts import deliver_outbox
        from pipeline.store import db

        with db.one_line_errors():
            return deliver_outbox().as_dict()

    evaluate_rules() >> send_emails()


finsent_alerts()
