"""The DAGs on real Airflow 3: they parse fast and cleanly, declare owners, retries, tags and queues, and
ingest → score → alerts runs end to end against PostgreSQL, a loopback feed server and an SMTP server.

Airflow is imported inside tests only: the ``airflow_env`` fixture must configure it first.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import Engine

from pipeline.config import REPO_DIR
from pipeline.demo.feeds import FeedItem, rss_document
from pipeline.demo.feedserver import FeedServer
from tests.fixtures.airflow import run_dag
from tests.fixtures.postgres import end_sessions
from tests.fixtures.scoring import varied_articles
from tests.fixtures.smtp_server import SmtpCatcher
from tests.ingest.test_run import ARTICLE_PAGE
from tests.reliability.test_faults import GatedFeedServer

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


# --- ingest → score → alerts, end to end ------------------------------------------------------------

VOCABULARY = """
acme globex initech umbrella hooli stark wayne cyberdyne soylent vandelay tyrell wonka oscorp shares
bonds yields credit rates dollar euro yen gold oil copper wheat lithium chips banks insurers miners
airlines retailers carmakers brewers utilities telecoms refiners shippers builders lenders plunge
slide soar climb stall rebound tumble surge slump rally sink jump dip spike fade recover profit
warning guidance dividend buyback probe lawsuit recall merger takeover default downgrade upgrade
layoffs strike outage fraud audit fine settlement approval launch record forecast outlook quarter
annual weekly overnight tuesday march europe asia texas ohio canada brazil india japan
"""


def _candidate_titles(count: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    words = VOCABULARY.split()
    return [" ".join(rng.sample(words, 7)).capitalize() for _ in range(count)]


def _titles_by_sentiment(model_dir: Path, negative: int, calm: int) -> tuple[list[str], list[str]]:
    """Return ``negative`` titles the model reads as negative and ``calm`` titles it does not."""
    from models.inference import load
    from pipeline.scoring.score import article_text

    titles = _candidate_titles(400, seed=7)
    predictions = load(model_dir).predict([article_text(t, "", None) for t in titles])
    neg = [t for t, p in zip(titles, predictions, strict=True) if p.sentiment == "negative"]
    other = [t for t, p in zip(titles, predictions, strict=True) if p.sentiment != "negative"]
    assert len(neg) >= negative and len(other) >= calm, "the test model must give both kinds of titles"
    return neg[:negative], other[:calm]


RULES = """
rules:
  - name: e2e-storm
    dimension: all
    window: 2h
    baseline: 48h
    test: binomial
    alpha: 0.01
    min_stories: 4
    min_rise: 0.3
    prior_stories: 0
    for: 0h
    recipients: [risk-desk@example.com]
"""


@pytest.fixture
def pipeline_env(
    db_url: str,
    feed_server: FeedServer,
    smtp_catcher: SmtpCatcher,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, list[str]]:
    """Serve two feeds (a calm two days, then a negative storm in the last hour), point finsent at them,
    at the SMTP server and at rules that fire on that storm; return the calm and the storm titles."""
    from pipeline.config import get_settings
    from pipeline.demo.feeds import FeedItem, rss_document

    storm, calm = _titles_by_sentiment(tiny_model_dir, negative=6, calm=16)
    now = datetime.now(UTC)

    def items(titles: list[str], ages: list[timedelta], name: str) -> list[FeedItem]:
        return [
            FeedItem(title, f"{feed_server.url}/{name}/{i}", "", age)
            for i, (title, age) in enumerate(zip(titles, ages, strict=True))
        ]

    calm_ages = [timedelta(hours=4 + 2 * i) for i in range(len(calm))]
    storm_ages = [timedelta(minutes=5 + i) for i in range(len(storm))]
    wire = items(calm[:8], calm_ages[:8], "wire") + items(storm[:3], storm_ages[:3], "wire-storm")
    daily = items(calm[8:], calm_ages[8:], "daily") + items(storm[3:], storm_ages[3:], "daily-storm")
    feeds = {"wire": wire, "daily": daily}
    urls = {
        name: feed_server.add(f"/{name}.xml", rss_document(name, feed_server.url, feed, now))
        for name, feed in feeds.items()
    }
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump({"sources": [{"name": n, "url": u} for n, u in urls.items()]}))
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    for key, value in {
        "FINSENT_SOURCES": str(sources),
        "FINSENT_SOURCE_BATCH_SIZE": "1",
        "FINSENT_ALLOWED_HOSTS": "127.0.0.1",
        "FINSENT_MODEL_DIR": str(tiny_model_dir),
        "FINSENT_ALERT_RULES": str(rules),
        "FINSENT_SMTP_HOST": smtp_catcher.host,
        "FINSENT_SMTP_PORT": str(smtp_catcher.port),
        "FINSENT_ALERT_TO": "fallback@example.com",
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return {"calm": calm, "storm": storm}


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar_one()


def _states(run) -> dict[str, list[str]]:
    from airflow.utils.session import create_session

    with create_session() as session:
        states: dict[str, list[str]] = {}
        for ti in run.get_task_instances(session=session):
            states.setdefault(ti.task_id, []).append(str(ti.state))
        return states


def _asset_events_and_queue() -> tuple[dict[str, int], set[str]]:
    """Return the Asset events per asset name, and the DAGs queued to run on them."""
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = session.execute(
            sa.select(AssetModel.name, sa.func.count(AssetEvent.id))
            .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
            .group_by(AssetModel.name)
        ).all()
        queued = session.scalars(sa.select(AssetDagRunQueue.target_dag_id)).all()
    return dict(events), set(queued)


@pytest.mark.timeout(600)
# One PostgreSQL backend is enough here: the database tests cover both; this covers Airflow.
@pytest.mark.parametrize("pg_admin_url", ["embedded"], indirect=True)
def test_ingest_score_and_alert_dags_store_articles_scores_and_email_the_storm(
    dagbag: DagBag, pipeline_env: dict[str, list[str]], engine: Engine, smtp_catcher: SmtpCatcher
) -> None:
    total = len(pipeline_env["calm"]) + len(pipeline_env["storm"])
    # The Airflow metadata database lives for the whole test session: count only this test's events.
    before = _asset_events_and_queue()[0]

    def new_events(asset: str) -> int:
        return _asset_events_and_queue()[0].get(asset, 0) - before.get(asset, 0)

    ingest = run_dag(dagbag.dags["finsent_ingest"], 240)
    assert _states(ingest) == {
        "batches": ["success"],
        "ingest_batch": ["success", "success"],
        "announce_new_articles": ["success"],
    }
    assert _count(engine, "SELECT count(*) FROM articles") == total
    assert new_events("finsent_articles") == 1
    queued = _asset_events_and_queue()[1]
    assert "finsent_score" in queued  # the scheduler would start scoring now

    score = run_dag(dagbag.dags["finsent_score"], 240)
    assert _states(score) == {"score_articles": ["success"]}
    assert _count(engine, "SELECT count(*) FROM scores") == total
    assert new_events("finsent_scores") == 1

    alerts = run_dag(dagbag.dags["finsent_alerts"], 240)
    assert _states(alerts) == {"evaluate_rules": ["success"], "send_emails": ["success"]}
    with engine.connect() as conn:
        firing = conn.execute(sa.text("SELECT rule, status FROM alert_state")).all()
        outbox = conn.execute(sa.text("SELECT recipients, status FROM alert_outbox")).all()
    assert [(r.rule, r.status) for r in firing] == [("e2e-storm", "firing")]
    assert [(list(o.recipients), o.status) for o in outbox] == [(["risk-desk@example.com"], "sent")]
    (received,) = smtp_catcher.received
    assert received.rcpt_tos == ["risk-desk@example.com"]
    assert received.message["Subject"].startswith("[finsent] FIRING")
    body = received.message.get_body(preferencelist=("plain",)).get_content()
    assert any(title in body for title in pipeline_env["storm"])  # the headlines behind the alert

    # A second ingest finds nothing new: no Asset event, so scoring and alerts stay idle.
    again = run_dag(dagbag.dags["finsent_ingest"], 240)
    assert _states(again)["announce_new_articles"] == ["skipped"]
    assert new_events("finsent_articles") == 1
    assert _count(engine, "SELECT count(*) FROM articles") == total


# --- a retried ingest task ---------------------------------------------------------------------------------

QUICK_FEEDS = 3
QUICK_ITEMS = 3
PAGES = 2


def _retry_sources(server: GatedFeedServer, path: Path) -> Path:
    """Write three quick feeds and a full-text source whose article pages the server holds back; in
    batches of two, the second mapped task gets ``quick2`` and ``pages``."""
    now = datetime.now(UTC).replace(microsecond=0)
    entries = []
    for i in range(QUICK_FEEDS):
        items = [
            FeedItem(
                f"Quick {i} story {j}: shares move after results {i}{j}",
                f"https://q{i}.example/{j}",
                f"Details {i}.{j}.",
                timedelta(hours=j + 1),
            )
            for j in range(QUICK_ITEMS)
        ]
        url = server.add(f"/q{i}.xml", rss_document(f"Quick {i}", f"https://q{i}.example/", items, now))
        entries.append({"name": f"quick{i}", "url": url, "allowed_hosts": ["127.0.0.1"]})
    pages = []
    for j in range(PAGES):
        page = server.add(f"/pages/{j}.html", ARTICLE_PAGE.encode(), "text/html; charset=utf-8")
        server.gated.add(f"/pages/{j}.html")
        pages.append(
            FeedItem(
                f"Markets wrap {j}: stocks slip as investors weigh signals",
                page,
                "Teaser.",
                timedelta(hours=1),
            )
        )
    url = server.add("/pages.xml", rss_document("Pages", server.url, pages, now))
    entries.append({"name": "pages", "url": url, "fulltext": True, "allowed_hosts": ["127.0.0.1"]})
    path.write_text(yaml.safe_dump({"sources": entries}))
    return path


def _terminate_when_stored(
    db_url: str, admin_url: str, source: str, articles: int, gate: threading.Event
) -> threading.Thread:
    """Start a thread that, once ``source`` has ``articles`` stored, ends every session of the database
    (what a server restart or a failover does to the task's connection), then lets the held pages go."""

    def fault() -> None:
        engine = sa.create_engine(db_url)
        count = sa.text(
            "SELECT count(*) FROM articles a JOIN sources s ON s.id = a.source_id WHERE s.name = :n"
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    if conn.execute(count, {"n": source}).scalar_one() >= articles:
                        break
                time.sleep(0.05)
            engine.dispose()
            end_sessions(admin_url, str(sa.make_url(db_url).database))
        finally:
            gate.set()

    thread = threading.Thread(target=fault, daemon=True)
    thread.start()
    return thread


def _tries(run, task_id: str) -> dict[int, tuple[str, int]]:
    """Return each instance of ``task_id`` in ``run``: its final state and try number, by map index
    (-1 for a task that is not mapped)."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return {
            ti.map_index: (str(ti.state), ti.try_number)
            for ti in run.get_task_instances(session=session)
            if ti.task_id == task_id
        }


@pytest.mark.timeout(600)
@pytest.mark.parametrize("pg_admin_url", ["embedded"], indirect=True)
def test_an_ingest_task_that_loses_its_database_midway_is_retried_and_converges_to_a_clean_run(
    dagbag: DagBag,
    db_url: str,
    pg_admin_url: str,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second mapped ingest task stores ``quick2``, then loses its connection (every session of the
    database ended) while it waits for the article pages of ``pages``: that try fails with a one-line
    database error, after storing part of its batch. Airflow retries it.

    ``dag.test()`` runs the retry itself, in process, as the scheduler would: a try that fails with
    retries left is set ``up_for_retry``; its loop finds the instance schedulable again once the retry
    delay has passed, raises its try number and runs it again for the same run. Only the delay is cut
    here (1 s instead of the DAG's minutes). The retry must leave exactly what a clean run leaves: the
    part stored by the failed try is not stored twice (quick2 answers 304 to its stored validators), the
    part it lost is stored now.
    """
    from pipeline.config import get_settings
    from pipeline.ingest import load_sources, run_ingest
    from pipeline.store import db
    from tests.reliability.test_faults import duplicate_rows, scratch_database, stored_keys

    batch = dagbag.dags["finsent_ingest"].get_task("ingest_batch")
    monkeypatch.setitem(batch.partial_kwargs, "retry_delay", timedelta(seconds=1))
    with GatedFeedServer() as server:
        sources = _retry_sources(server, tmp_path / "sources.yaml")
        monkeypatch.setenv("FINSENT_SOURCES", str(sources))
        monkeypatch.setenv("FINSENT_SOURCE_BATCH_SIZE", "2")
        monkeypatch.setenv("FINSENT_RETRIES", "0")
        get_settings.cache_clear()
        fault = _terminate_when_stored(db_url, pg_admin_url, "quick2", QUICK_ITEMS, server.gate)

        run = run_dag(dagbag.dags["finsent_ingest"], 240)
        fault.join(timeout=10)
        quick2_requests = server.stats("/q2.xml").statuses
        with scratch_database(pg_admin_url) as clean_url:  # the same feeds into an empty database
            clean_engine = sa.create_engine(clean_url)
            try:
                db.migrate(clean_engine)
                run_ingest(load_sources(sources), engine=clean_engine, settings=get_settings())
            finally:
                clean_engine.dispose()
            clean_rows, clean_keys = stored_keys(clean_url)

    assert _states(run) == {
        "batches": ["success"],
        "ingest_batch": ["success", "success"],
        "announce_new_articles": ["success"],
    }
    # The second batch took two tries.
    assert _tries(run, "ingest_batch") == {0: ("success", 1), 1: ("success", 2)}
    assert quick2_requests == [200, 304]  # stored by the failed try; unchanged for the retry
    assert clean_rows == QUICK_FEEDS * QUICK_ITEMS + PAGES
    assert stored_keys(db_url) == (clean_rows, clean_keys)
    assert duplicate_rows(db_url) == 0
    assert _count(engine, "SELECT count(*) FROM articles WHERE body IS NOT NULL") == PAGES


# --- a retried score task ----------------------------------------------------------------------------------

SCORE_ARTICLES = 4_000


def _refuse_connections_until_retry(db_url: str, admin_url: str, after_scores: int) -> threading.Thread:
    """Start a thread that, once ``after_scores`` scores are stored, makes the database refuse every
    connection and ends its sessions (a failover in progress), then lets connections in again once
    Airflow has set the score task up for retry."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    database = str(sa.make_url(db_url).database)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")

    def allow(yes: bool) -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(yes).lower()}')

    def up_for_retry() -> bool:
        with create_session() as session:
            query = sa.select(sa.func.count()).where(
                TaskInstance.dag_id == "finsent_score",
                TaskInstance.state == TaskInstanceState.UP_FOR_RETRY,
            )
            return bool(session.scalar(query))

    def fault() -> None:
        engine = sa.create_engine(db_url)
        try:
            deadline = time.monotonic() + 120
            while (
                time.monotonic() < deadline and _count(engine, "SELECT count(*) FROM scores") < after_scores
            ):
                time.sleep(0.02)
            engine.dispose()
            allow(False)
            end_sessions(admin_url, database)
            while time.monotonic() < deadline and not up_for_retry():
                time.sleep(0.05)
        finally:
            allow(True)
            admin.dispose()

    thread = threading.Thread(target=fault, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(600)
@pytest.mark.parametrize("pg_admin_url", ["embedded"], indirect=True)
def test_a_score_task_that_loses_its_database_midway_is_retried_and_scores_each_article_once(
    dagbag: DagBag,
    db_url: str,
    pg_admin_url: str,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The score task has committed some batches when its database refuses connections and ends its
    sessions: that try fails with a one-line database error. ``dag.test()`` retries it (delay cut to
    1 s) once connections are let in again; the retry scores only what the failed try left, so every
    article ends with exactly one score and the rollups equal a recount from the scores."""
    from pipeline.config import get_settings
    from pipeline.store import db
    from tests.fixtures.scoring import add_articles, assert_rollups_match, expected_rollups, stored_rollups

    monkeypatch.setattr(
        dagbag.dags["finsent_score"].get_task("score_articles"), "retry_delay", timedelta(seconds=1)
    )
    monkeypatch.setenv("FINSENT_MODEL_DIR", str(tiny_model_dir))
    monkeypatch.setenv("FINSENT_BATCH_SIZE", "8")
    get_settings.cache_clear()
    db.dispose_engines()
    setup = sa.create_engine(db_url)
    db.migrate(setup)
    add_articles(setup, varied_articles(SCORE_ARTICLES))
    setup.dispose()
    fault = _refuse_connections_until_retry(db_url, pg_admin_url, after_scores=200)

    run = run_dag(dagbag.dags["finsent_score"], 300)
    fault.join(timeout=10)

    assert _tries(run, "score_articles") == {-1: ("success", 2)}  # the first try failed midway
    engine = sa.create_engine(db_url)
    try:
        assert _count(engine, "SELECT count(*) FROM scores") == SCORE_ARTICLES
        assert _count(engine, "SELECT count(DISTINCT article_id) FROM scores") == SCORE_ARTICLES
        assert_rollups_match(stored_rollups(engine, "tiny-a"), expected_rollups(engine, "tiny-a"))
    finally:
        engine.dispose()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("pg_admin_url", ["embedded"], indirect=True)
def test_train_dag_trains_evaluates_and_promotes_a_candidate_that_does_not_regress(
    dagbag: DagBag,
    engine: Engine,
    tiny_model_dir: Path,
    tiny_data_dir: Path,
    tiny_gpt2_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.config import get_settings
    from pipeline.scoring.score import score_pending
    from tests.fixtures.models import tiny_recipe_dict
    from tests.fixtures.scoring import add_articles, varied_articles

    ids = add_articles(engine, varied_articles(5))
    for key, value in {
        "FINSENT_HOME": str(tmp_path / "home"),
        "FINSENT_DATA_DIR": str(tiny_data_dir),
        "FINSENT_MODEL_DIR": str(tiny_model_dir),
        # Any candidate passes the gate: this test is about the DAG's wiring, the gate has its own tests.
        "FINSENT_PROMOTE_TOLERANCE": "1.0",
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    score_pending(engine)  # the shipped-model stand-in is active and has scored everything
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict()), encoding="utf-8")

    run = run_dag(
        dagbag.dags["finsent_train"], 300, run_conf={"recipe": str(recipe), "base": str(tiny_gpt2_dir)}
    )

    assert _states(run) == {
        "train_candidate": ["success"],
        "evaluate_candidate": ["success"],
        "promote": ["success"],
    }
    (candidate_dir,) = (tmp_path / "home" / "models").iterdir()
    assert (candidate_dir / "training_summary.json").is_file()
    with engine.connect() as conn:
        active = conn.execute(sa.text("SELECT version, path FROM model_versions WHERE active")).one()
        scored = conn.execute(
            sa.text("SELECT count(*) FROM scores WHERE model_version = :v"), {"v": active.version}
        ).scalar_one()
    assert active.version != "tiny-a" and Path(active.path) == candidate_dir.resolve()
    assert scored == len(ids)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("pg_admin_url", ["embedded"], indirect=True)
def test_maintenance_dag_deletes_expired_articles_and_passes_the_rollup_check(
    dagbag: DagBag, engine: Engine, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.config import get_settings
    from pipeline.scoring.score import score_pending
    from tests.fixtures.scoring import ArticleSpec, add_articles

    now = datetime.now(UTC)
    add_articles(engine, [ArticleSpec("Expired headline", published_at=now - timedelta(days=40))])
    kept = add_articles(engine, [ArticleSpec("Fresh headline", published_at=now - timedelta(hours=3))])
    monkeypatch.setenv("FINSENT_RETENTION_DAYS", "30")
    get_settings.cache_clear()
    score_pending(engine, model_dir=tiny_model_dir)

    run = run_dag(dagbag.dags["finsent_maintenance"], 120)

    tasks = ("apply_retention", "verify_rollups", "analyze")
    assert _states(run) == {task: ["success"] for task in tasks}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM articles")).scalars().all() == kept


@pytest.mark.parametrize(
    ("dag_id", "task_id"),
    [
        ("finsent_alerts", "evaluate_rules"),
        ("finsent_alerts", "send_emails"),
        ("finsent_ingest", "batches"),
        ("finsent_score", "score_articles"),
        ("finsent_maintenance", "apply_retention"),
    ],
)
def test_an_unreachable_database_fails_a_task_with_one_line_naming_it(
    dagbag: DagBag, dag_id: str, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task log shows one line naming the setting and the server, never the password, and no
    chained driver traceback."""
    from pipeline.config import get_settings
    from pipeline.store.db import DatabaseUnavailable, dispose_engines

    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody:s3cret-pw@127.0.0.1:1/x")
    get_settings.cache_clear()
    dispose_engines()
    task = dagbag.dags[dag_id].get_task(task_id)
    try:
        with pytest.raises(DatabaseUnavailable) as failed:
            task.python_callable()  # type: ignore[attr-defined]
    finally:
        get_settings.cache_clear()
    message = str(failed.value)
    assert "\n" not in message and "s3cret" not in message
    assert message.startswith("cannot use the database at 127.0.0.1:1/x (DATABASE_URL): ")
    assert failed.value.__suppress_context__  # `from None`: the driver's traceback is not chained
