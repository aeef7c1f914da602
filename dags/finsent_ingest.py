"""finsent_ingest: fetch every configured source in mapped batches, then announce new articles as an Asset.

The scoring DAG is scheduled on that Asset, so a run that stored nothing new skips the announcement and
leaves the model idle.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

from pipeline.config import get_settings

ARTICLES = Asset("finsent_articles")
settings = get_settings()


@dag(
    dag_id="finsent_ingest",
    schedule=settings.ingest_schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["finsent", "ingest"],
    default_args={
        "owner": "finsent",
        "queue": "default",
        "retries": 3,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
    },
)
def finsent_ingest() -> None:
    @task
    def batches() -> list[list[str]]:
        """Return the configured source names in batches of ``source_batch_size`` (one mapped task each)."""
        from pipeline.ingest import load_sources, source_batches
        from pipeline.store import db

        config = get_settings()
        with db.one_line_errors():
            db.migrate()  # a fresh deployment's first run creates the schema
        return source_batches(load_sources(config.sources), max(1, config.source_batch_size))

    @task
    def ingest_batch(names: list[str]) -> dict:
        """Return the ingest report of one batch of sources."""
        from pipeline.ingest import ingest_sources
        from pipeline.store import db

        with db.one_line_errors():
            return ingest_sources(names).as_dict()

    @task(outlets=[ARTICLES])
    def announce_new_articles(reports: list[dict], *, outlet_events=None) -> int:
        """Return how many articles the run stored; skip (no Asset event) when there are none."""
        from airflow.sdk.exceptions import AirflowSkipException

        new = sum(int(report.get("items_new", 0)) for report in reports)
        if new == 0:
            raise AirflowSkipException("no new articles: scoring is not triggered")
        outlet_events[ARTICLES].extra = {"items_new": new}
        return new

    # Task calls take XComArgs, which Airflow resolves to the upstream return values at run time.
    announce_new_articles(ingest_batch.expand(names=batches()))  # type: ignore[arg-type]


finsent_ingest()
