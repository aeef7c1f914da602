"""The DAGs on real Airflow 3: they parse fast and cleanly, declare owners, retries, tags and queues, and
ingest → score → alerts runs end to end against PostgreSQL, a loopback feed server and an SMTP server.

Airflow is imported inside tests only: the ``airflow_env`` fixture must configure it first.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from pipeline.config import REPO_DIR

if TYPE_CHECKING:
    from airflow.dag_processing.dagbag import DagBag

DAG_IDS = {"finsent_ingest", "finsent_score", "finsent_alerts", "finsent_train", "finsent_maintenance"}
MODEL_DAGS = {"finsent_score", "finsent_train"}


@pytest.fixture(scope="module")
def dagbag(airflow_env: dict[str, str]) -> DagBag:
    """Return the dags/ folder parsed the way the dag-processor parses it."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO_DIR / "dags"))


def test_every_dag_file_imports_without_errors_in_under_two_seconds(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == DAG_IDS
    durations = {stat.file: stat.duration for stat in dagbag.dagbag_stats}
    assert set(durations) == {f"{dag_id}.py" for dag_id in DAG_IDS}
    slow = {file: d.total_seconds() for file, d in durations.items() if d >= timedelta(seconds=2)}
    assert slow == {}


def test_dag_files_keep_heavy_imports_inside_tasks() -> None:
    for path in (REPO_DIR / "dags").glob("*.py"):
        top_level = [line for line in path.read_text().splitlines() if line.startswith(("import ", "from "))]
        heavy = [line for line in top_level if any(m in line for m in ("torch", "pipeline.ingest", "models"))]
        assert heavy == [], path.name
        assert len(path.read_text().splitlines()) <= 90, f"{path.name} is no longer thin"


def test_dags_have_no_cycles_and_every_task_an_owner_retries_and_tags(dagbag: DagBag) -> None:
    for dag in dagbag.dags.values():
        dag.check_cycle()
        assert "finsent" in dag.tags, dag.dag_id
        for task in dag.tasks:
            assert task.owner == "finsent", (dag.dag_id, task.task_id)
            assert task.retries >= 1, (dag.dag_id, task.task_id)
            assert task.retry_delay > timedelta(0), (dag.dag_id, task.task_id)


def test_model_tasks_run_on_the_gpu_queue_in_the_pool_and_the_rest_on_default(dagbag: DagBag) -> None:
    from pipeline.config import get_settings

    for dag in dagbag.dags.values():
        for task in dag.tasks:
            where = (dag.dag_id, task.task_id)
            if task.queue == "gpu":
                assert dag.dag_id in MODEL_DAGS, where
                assert task.pool == get_settings().gpu_pool, where
            else:
                assert task.queue == "default", where
    assert dagbag.dags["finsent_score"].get_task("score_articles").queue == "gpu"


def test_scoring_follows_new_articles_and_alerts_follow_new_scores(dagbag: DagBag) -> None:
    def outlets(dag_id: str) -> set[str]:
        return {o.name for task in dagbag.dags[dag_id].tasks for o in task.outlets}

    def schedule(dag_id: str) -> set[str]:
        return {asset.name for asset in dagbag.dags[dag_id].timetable.asset_condition.objects}

    assert outlets("finsent_ingest") == {"finsent_articles"} == schedule("finsent_score")
    assert outlets("finsent_score") == {"finsent_scores"} == schedule("finsent_alerts")


def test_ingest_maps_over_source_batches_and_backs_off_between_retries(dagbag: DagBag) -> None:
    ingest = dagbag.dags["finsent_ingest"]
    batch = ingest.get_task("ingest_batch")
    assert batch.is_mapped
    assert batch.partial_kwargs["retry_exponential_backoff"] > 1
    assert ingest.timetable.expression == "0 0 * * *"  # the ingest_schedule setting's default, @daily
    assert dagbag.dags["finsent_maintenance"].timetable.expression == "0 0 * * *"
