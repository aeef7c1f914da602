"""finsent_score: score every unscored article when new articles land, on the ``gpu`` queue in a pool."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

from pipeline.config import get_settings

ARTICLES = Asset("finsent_articles")
SCORES = Asset("finsent_scores")
settings = get_settings()


@dag(
    dag_id="finsent_score",
    schedule=[ARTICLES],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["finsent", "score", "gpu"],
    default_args={
        "owner": "finsent",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": 2.0,
    },
)
def finsent_score() -> None:
    @task(queue="gpu", pool=settings.gpu_pool, outlets=[SCORES])
    def score_articles(*, outlet_events=None) -> dict:
        """Return the scoring report; skip (no Asset event) when nothing was waiting to be scored."""
        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.scoring import score_pending
        from pipeline.store import db

        with db.one_line_errors():
            report = score_pending().as_dict()
        if not report.get("scored"):
            raise AirflowSkipException("no unscored articles: alerts are not re-evaluated")
        outlet_events[SCORES].extra = {"scored": report["scored"]}
        return report

    score_articles()


finsent_score()
