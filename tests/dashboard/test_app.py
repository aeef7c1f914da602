"""Every dashboard page rendered by Streamlit's AppTest against a seeded PostgreSQL (both servers).

Expected numbers are counted here straight from the base tables (articles, scores, alert tables), so a
page that shows a wrong rollup, filter or join fails.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from dashboard import queries
from dashboard.markdown import escape_markdown
from models.labels import TOPIC_NAMES
from pipeline import store
from tests.fixtures.dashboard import HOSTILE_TITLE, SeededDashboard

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


def run_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def scalar(seeded: SeededDashboard, sql: str, **params: object) -> object:
    with seeded.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_overview_metrics_and_volume_equal_database_counts(seeded_dashboard: SeededDashboard) -> None:
    at = run_page()
    today = datetime.combine(datetime.now(UTC).date(), time(), UTC)
    version = seeded_dashboard.plan.version
    articles_today = scalar(
        seeded_dashboard,
        "SELECT count(*) FROM articles a JOIN scores s ON s.article_id = a.id AND s.model_version = :v"
        " WHERE a.published_at >= :today",
        v=version,
        today=today,
    )
    assert metric(at, "Articles today (UTC)") == f"{articles_today:,}"
    firing = scalar(seeded_dashboard, "SELECT count(*) FROM alert_state WHERE status = 'firing'")
    assert firing >= 1  # the seeded Nvidia storm
    assert metric(at, "Firing alerts") == str(firing)

    now = queries.now_minute()
    share = scalar(
        seeded_dashboard,
        "SELECT sum(neg_stories)::float / sum(stories) FROM rollups_hourly"
        " WHERE model_version = :v AND dimension = 'all' AND bucket >= :since AND bucket < :now",
        v=version,
        since=now - timedelta(hours=24),
        now=now,
    )
    assert metric(at, "Negative share, last 24 h") == f"{share:.1%}"

    # Default range: the last 14 UTC days including today; bars count every scored article in it.
    start = today - timedelta(days=13)
    in_range = scalar(
        seeded_dashboard,
        "SELECT count(*) FROM articles a JOIN scores s ON s.article_id = a.id AND s.model_version = :v"
        " WHERE a.published_at >= :start",
        v=version,
        start=start,
    )
    volume = at.dataframe[2].value
    assert int(volume[["negative", "neutral", "positive"]].to_numpy().sum()) == in_range


def test_overview_heatmap_shows_the_topic_storm_day(seeded_dashboard: SeededDashboard) -> None:
    at = run_page()
    heat = at.dataframe[1].value
    storm = seeded_dashboard.plan.spikes[1]
    day = datetime.combine(storm.start.date(), time(), UTC)
    cell = heat[(heat["value"] == storm.value) & (heat["period"] == day)].iloc[0]
    with seeded_dashboard.engine.connect() as conn:
        stories, negative = conn.execute(
            sa.text(
                "SELECT sum(stories), sum(neg_stories) FROM rollups_hourly WHERE model_version = :v"
                " AND dimension = 'topic' AND value = :topic AND bucket >= :day"
                " AND bucket < :day + interval '1 day'"
            ),
            {"v": seeded_dashboard.plan.version, "topic": storm.value, "day": day},
        ).one()
    assert (int(cell["stories"]), int(cell["neg_stories"])) == (stories, negative)
    assert cell["negative_share"] == pytest.approx(negative / stories)
    assert cell["negative_share"] > heat[heat["value"] != storm.value]["negative_share"].median()


def test_overview_ticker_filter_draws_the_ticker_index_and_refreshes(
    seeded_dashboard: SeededDashboard,
) -> None:
    at = run_page()
    at.multiselect(key="overview_tickers").set_value(["NVDA"])
    at.selectbox(key="overview_refresh").set_value("every minute").run()
    assert not at.exception
    assert any("refreshing every 1 min" in c.value for c in at.caption)
    index = at.dataframe[0].value
    assert set(index["value"]) == {"NVDA"}
    start = datetime.combine(datetime.now(UTC).date() - timedelta(days=13), time(), UTC)
    nvda = scalar(
        seeded_dashboard,
        "SELECT count(*) FROM articles a JOIN scores s ON s.article_id = a.id AND s.model_version = :v"
        " WHERE 'NVDA' = ANY(a.tickers) AND a.published_at >= :start",
        v=seeded_dashboard.plan.version,
        start=start,
    )
    assert int(index["articles"].sum()) == nvda


def test_alerts_page_lists_transitions_and_escapes_evidence_headlines(
    seeded_dashboard: SeededDashboard,
) -> None:
    at = run_page("pages/alerts.py")
    firing = scalar(seeded_dashboard, "SELECT count(*) FROM alert_state WHERE status = 'firing'")
    resolved = scalar(
        seeded_dashboard,
        "SELECT count(*) FROM alert_events WHERE transition = 'resolved' AND at >= :start",
        start=datetime.combine(datetime.now(UTC).date() - timedelta(days=13), time(), UTC),
    )
    assert resolved >= 1  # the seeded oil storm ended
    assert metric(at, "Firing now") == str(firing)
    assert metric(at, "Resolved, last 14 days") == str(resolved)
    table = at.dataframe[0].value
    assert len(table) == firing + resolved
    # Pick the firing Nvidia alert: the hostile headline leads its top negative stories, as text.
    labels = at.selectbox(key="alerts_pick").options
    pick = next(i for i, label in enumerate(labels) if "ticker=NVDA" in label and "firing" in label)
    at.selectbox(key="alerts_pick").set_value(pick).run()
    evidence = next(m.value for m in at.markdown if m.value.startswith("- ["))
    assert evidence.startswith(f"- [{escape_markdown(HOSTILE_TITLE)}](")
    assert "<script>" not in evidence and "<img" not in evidence


def test_a_resolved_alert_says_when_it_resolved_and_shows_only_stories_until_then(
    seeded_dashboard: SeededDashboard,
) -> None:
    at = run_page("pages/alerts.py")
    labels = at.selectbox(key="alerts_pick").options
    pick = next(i for i, label in enumerate(labels) if ", resolved " in label)
    rule, dimension_value, when = labels[pick].split(" · ")
    assert when.startswith("fired ")  # not "resolved since <the time it fired>"
    dimension, value = dimension_value.split("=", 1)
    resolved_at = scalar(
        seeded_dashboard,
        "SELECT max(resolved_at) FROM alert_state WHERE rule = :r AND dimension = :d AND value = :v",
        r=rule,
        d=dimension,
        v=value,
    )
    assert resolved_at is not None and f"resolved {resolved_at:%b %d %H:%M}" in when
    at.selectbox(key="alerts_pick").set_value(pick).run()
    lines = "\n".join(m.value for m in at.markdown if m.value.startswith("- [")).splitlines()
    assert lines, "the resolved alert shows its negative stories"
    for stamp in (re.search(r"(\d\d)\\?-(\d\d) (\d\d:\d\d) UTC, score", line) for line in lines):
        assert stamp is not None  # escaped Markdown: "12\-05 14:00 UTC"
        month, day, clock = stamp.groups()
        published = datetime.strptime(f"{resolved_at.year}-{month}-{day} {clock}", "%Y-%m-%d %H:%M")
        assert published.replace(tzinfo=UTC) <= resolved_at, stamp.group(0)


def test_silence_form_adds_a_silence_for_the_selected_alert(seeded_dashboard: SeededDashboard) -> None:
    at = run_page("pages/alerts.py")
    at.text_input[2].input("ops on it")  # comment
    at.button[0].click().run()
    assert not at.exception
    assert at.success and "Silence" in at.success[0].value
    with seeded_dashboard.engine.connect() as conn:
        rows = store.list_silences(conn, datetime.now(UTC), include_expired=False)
    assert [(r.comment, r.rule is not None) for r in rows] == [("ops on it", True)]
    shown = at.dataframe[-1].value
    assert list(shown["id"]) == [rows[0].id]


def test_explorer_text_and_ticker_search_matches_the_database(seeded_dashboard: SeededDashboard) -> None:
    at = run_page("pages/explorer.py")
    at.text_input(key="explorer_text").input("buyback")
    at.multiselect(key="explorer_tickers").set_value(["AAPL", "MSFT"])
    at.button[0].click().run()
    assert not at.exception
    shown = at.dataframe[0].value
    start = datetime.combine(datetime.now(UTC).date() - timedelta(days=6), time(), UTC)
    with seeded_dashboard.engine.connect() as conn:
        expected = set(
            conn.execute(
                sa.text(
                    "SELECT a.canonical_url FROM articles a"
                    " JOIN scores s ON s.article_id = a.id AND s.model_version = :v"
                    " WHERE a.published_at >= :start AND a.tickers && ARRAY['AAPL', 'MSFT']"
                    " AND (a.title ILIKE '%buyback%' OR a.summary ILIKE '%buyback%')"
                ),
                {"v": seeded_dashboard.plan.version, "start": start},
            ).scalars()
        )
    assert expected and set(shown["url"]) == expected
    assert all("buyback" in title.lower() for title in shown["title"])
    assert at.get("download_button")[0].label == "Download CSV"


def test_explorer_sentiment_filter_and_default_listing(seeded_dashboard: SeededDashboard) -> None:
    at = run_page("pages/explorer.py")
    newest = at.dataframe[0].value
    assert HOSTILE_TITLE in set(newest["title"])  # raw text in the grid, which draws text only
    assert newest["published_at"].is_monotonic_decreasing
    at.multiselect(key="explorer_sentiments").set_value(["positive"])
    at.multiselect(key="explorer_topics").set_value(["Earnings"])
    at.button[0].click().run()
    shown = at.dataframe[0].value
    start = datetime.combine(datetime.now(UTC).date() - timedelta(days=6), time(), UTC)
    expected = scalar(
        seeded_dashboard,
        "SELECT count(*) FROM articles a JOIN scores s ON s.article_id = a.id AND s.model_version = :v"
        " WHERE a.published_at >= :start AND s.sentiment = 'positive' AND s.topic = 'Earnings'",
        v=seeded_dashboard.plan.version,
        start=start,
    )
    assert 0 < len(shown) == expected
    assert set(shown["sentiment"]) == {"positive"} and (shown["score"] > 0).all()


def test_model_page_shows_recorded_metrics_class_totals_and_history(
    seeded_dashboard: SeededDashboard,
) -> None:
    at = run_page("pages/model.py")
    with seeded_dashboard.engine.connect() as conn:
        recorded = conn.execute(
            sa.text("SELECT metrics FROM model_versions WHERE version = :v"),
            {"v": seeded_dashboard.plan.version},
        ).scalar_one()
        classes = dict(
            conn.execute(
                sa.text("SELECT sentiment, count(*) FROM scores WHERE model_version = :v GROUP BY sentiment"),
                {"v": seeded_dashboard.plan.version},
            ).all()
        )
    assert metric(at, "sentiment.accuracy") == f"{recorded['sentiment']['accuracy']:.3f}"
    assert metric(at, "topic.macro_f1") == f"{recorded['topic']['macro_f1']:.3f}"
    gain = recorded["sentiment"]["accuracy"] - recorded["baseline"]["sentiment"]["accuracy"]
    delta = next(m.delta for m in at.metric if m.label == "sentiment.accuracy")
    assert delta == f"{gain:+.3f} vs baseline"
    for label in ("negative", "neutral", "positive"):
        assert metric(at, label.capitalize()) == f"{classes[label]:,}"
    # The news table: one row per labeled news set, negative recall beside the baseline's.
    news = next(d.value for d in at.dataframe if "negative recall" in d.value.columns)
    assert len(news) == len(recorded["news"]) == 2
    first = recorded["news"]["sentfin_heldout"]
    row = news[news["news set"] == "SEntFiN headlines (held out)"].iloc[0]
    assert row["negative recall"] == first["per_class"]["negative"]["recall"]
    assert row["baseline weighted F1"] == first["baseline"]["weighted_f1"]
    # What to expect, in words: of 100 negative headlines, how many are called negative.
    negative = recorded["confusion"]["news/sentfin_heldout"][0]
    expect = next(m.value for m in at.markdown if m.value.startswith("- Of 100 negative news headlines"))
    assert f"it calls **{100 * negative[0] / sum(negative):.0f} negative**" in expect
    assert any(m.value.startswith("**How sure is it") for m in at.markdown)  # the reliability diagram
    # Per class for the tweets too, from their confusion matrix: negative recall = diagonal / row sum.
    per_class = next(d.value for d in at.dataframe if {"class", "recall"} <= set(d.value.columns))
    tweets = recorded["confusion"]["sentiment"]
    row = per_class[(per_class["set"] == "tweets (valid split)") & (per_class["class"] == "negative")].iloc[0]
    assert row["recall"] == tweets[0][0] / sum(tweets[0])
    # Per topic, weakest recall first, from the topic confusion matrix.
    per_topic = next(
        d.value for d in at.dataframe if "class" in d.value.columns and "set" not in d.value.columns
    )
    topics = recorded["confusion"]["topic"]
    assert len(per_topic) == len(TOPIC_NAMES) == len(topics)
    assert per_topic["recall"].is_monotonic_increasing
    row = per_topic[per_topic["class"] == TOPIC_NAMES[3]].iloc[0]
    assert row["recall"] == topics[3][3] / sum(topics[3]) and row["texts"] == sum(topics[3])
    assert not [m.label for m in at.metric if m.label.startswith("news.")]  # no tiles of raw keys
    assert any("Confusion matrix — sentiment" in m.value for m in at.markdown)
    assert any("Confusion matrix — topic" in m.value for m in at.markdown)
    history = at.dataframe[-1].value
    assert list(history["version"]) == [seeded_dashboard.plan.version]
    assert int(history["articles"].iloc[0]) == sum(classes.values())


def test_read_only_connection_cannot_write(seeded_dashboard: SeededDashboard) -> None:
    engine = queries.read_only_engine(seeded_dashboard.url)
    with engine.connect() as conn:
        role, read_only = store.session_is_read_only(conn)
        assert (role, read_only) == (store.DASHBOARD_ROLE, True)
        assert store.dashboard_version(conn) == seeded_dashboard.plan.version
        with pytest.raises(sa.exc.DBAPIError) as caught:
            conn.execute(sa.text("DELETE FROM alert_silences"))
    assert "read-only" in str(caught.value) or "permission denied" in str(caught.value)
    # Without the transaction-level guard the role itself still has no write privilege.
    with engine.connect() as conn:
        conn.exec_driver_sql("SET TRANSACTION READ WRITE")
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text("DELETE FROM alert_silences"))


def test_read_only_session_gets_the_dashboard_work_mem(seeded_dashboard: SeededDashboard) -> None:
    # At the server's default (4 MB) a common word's match bitmap turns lossy at 10M articles and the
    # search re-reads every article on those pages; the session setting survives SET ROLE.
    with queries.read_only_engine(seeded_dashboard.url).connect() as conn:
        assert conn.execute(sa.text("SHOW work_mem")).scalar_one() == store.DASHBOARD_WORK_MEM
        assert store.session_is_read_only(conn) == (store.DASHBOARD_ROLE, True)


def test_dashboard_login_in_the_read_only_role_reads_every_page(
    seeded_dashboard: SeededDashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.config import get_settings

    login = f"finsent_dash_{uuid.uuid4().hex[:8]}"
    with seeded_dashboard.engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {login} LOGIN IN ROLE {store.DASHBOARD_ROLE}")
        conn.commit()
    dashboard_url = sa.make_url(seeded_dashboard.url).set(username=login).render_as_string(False)
    monkeypatch.setenv("FINSENT_DASHBOARD_DATABASE_URL", dashboard_url)
    get_settings.cache_clear()
    try:
        for page in (None, "pages/alerts.py", "pages/explorer.py", "pages/model.py"):
            at = run_page(page)
            assert not at.error, [e.value for e in at.error]
        with queries.read_only_engine(dashboard_url).connect() as conn:
            assert store.session_is_read_only(conn) == (store.DASHBOARD_ROLE, True)
        assert metric(run_page(), "Firing alerts") == str(
            scalar(seeded_dashboard, "SELECT count(*) FROM alert_state WHERE status = 'firing'")
        )
    finally:
        queries.read_only_engine(dashboard_url).dispose()
        get_settings.cache_clear()
        with seeded_dashboard.engine.connect() as conn:
            conn.exec_driver_sql(f"DROP ROLE {login}")
            conn.commit()


def test_every_page_explains_an_empty_database_instead_of_failing(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FINSENT_DASHBOARD_DATABASE_URL", raising=False)
    try:
        notes = {}
        for page in (None, "pages/alerts.py", "pages/explorer.py", "pages/model.py"):
            at = run_page(page)
            notes[page] = [i.value for i in at.info]
        assert "No scored articles yet" in notes[None][0]
        assert notes["pages/alerts.py"] == ["No alerts in this range."]
        assert "No scored articles yet" in notes["pages/explorer.py"][0]
        assert "No model version registered yet" in notes["pages/model.py"][0]
    finally:
        queries.read_only_engine(db_url).dispose()


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"DATABASE_URL": "postgresql://nobody:s3cret@127.0.0.1:1/x"},
            "Cannot use the database at 127.0.0.1:1/x",
        ),
        ({"DATABASE_URL": "not-a-url"}, "DATABASE_URL is not a database URL"),
        ({"DATABASE_URL": "mysql://u:s3cret@db.example/f"}, "DATABASE_URL names a mysql database"),
        (
            {"FINSENT_DASHBOARD_DATABASE_URL": "postgresql://reader:s3cret@127.0.0.1:1/x"},
            "(FINSENT_DASHBOARD_DATABASE_URL)",
        ),
    ],
)
def test_an_unusable_database_is_one_line_on_the_page(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    from pipeline.config import get_settings

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        at = AppTest.from_file(APP, default_timeout=60).run()
    finally:
        get_settings.cache_clear()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] and says in at.error[0].value, [e.value for e in at.error]
    assert "s3cret" not in at.error[0].value and "\n" not in at.error[0].value
