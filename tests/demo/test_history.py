"""pipeline.demo.history: the recorded history's shape, storing it once, and the demo's alert step end to end.

Scores here come from the tone each headline was written with (not from a model), so the test checks the
alert path, not model accuracy.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from rich.console import Console
from sqlalchemy.engine import Engine

from pipeline import store
from pipeline.config import Settings
from pipeline.demo import history as demo_history
from pipeline.demo.history import STORM_HOURS, STORM_TICKER, history_articles, seed_history
from pipeline.scoring import rollups

END = datetime(2026, 11, 20, demo_history.END_HOUR, tzinfo=UTC)


def test_history_is_calm_then_storms_for_one_ticker() -> None:
    articles = history_articles(END)
    stories = {a.story: a for a in articles}
    calm = [a for a in stories.values() if a.published_at < END - timedelta(hours=STORM_HOURS)]
    share = Counter(a.tone for a in calm)["negative"] / len(calm)
    assert 0.15 < share < 0.35
    storm_start = END - timedelta(hours=STORM_HOURS)
    last = [a for a in stories.values() if a.published_at >= storm_start and STORM_TICKER in a.tickers]
    assert len(last) >= 30
    assert Counter(a.tone for a in last)["negative"] / len(last) > 0.8
    assert all(a.published_at < END for a in articles)
    # Syndication: more copies than stories, and copies of a story share its title.
    assert len(articles) > len(stories)
    by_story: dict[str, set[str]] = {}
    for a in articles:
        by_story.setdefault(a.story, set()).add(a.title)
    assert all(len(titles) == 1 for titles in by_story.values())


def test_history_is_deterministic() -> None:
    assert history_articles(END) == history_articles(END)


def test_history_is_the_same_whichever_day_it_ends() -> None:
    def shape(end: datetime) -> list[tuple[str, timedelta, str]]:
        return [(a.title, a.published_at - end, a.outlet) for a in history_articles(end)]

    assert shape(END + timedelta(days=3)) == shape(END) == shape(END - timedelta(days=1))


def _oracle_scores(engine: Engine, version: str) -> None:
    """Score every stored article with the tone it was written with."""
    tones = {f"{demo_history.GUID_PREFIX}{END:%Y%m%d%H}:{a.key}": a.tone for a in history_articles(END)}
    with engine.begin() as conn:
        store.register_model_version(conn, version, "tone oracle", None, None)
        store.activate_model_version(conn, version)
        rows = conn.execute(sa.text("SELECT id, guid FROM articles")).all()
        scores = []
        for r in rows:
            tone = tones[r.guid]
            probs = {"negative": 0.05, "neutral": 0.05, "positive": 0.05} | {tone: 0.9}
            scores.append(
                store.ScoreRow(
                    r.id, "news", {"news": 1.0}, tone, probs, probs["positive"] - probs["negative"]
                )
            )
        store.insert_scores(conn, version, scores)
    rollups.rebuild_rollups(engine, version)


def test_history_ends_at_the_last_end_hour() -> None:
    assert demo_history.history_end(END + timedelta(hours=3, minutes=25)) == END
    assert demo_history.history_end(END) == END
    assert demo_history.history_end(END - timedelta(minutes=1)) == END - timedelta(days=1)


def test_seed_history_stores_once_and_is_reused(engine: Engine) -> None:
    first = seed_history(engine, END + timedelta(hours=5, minutes=25))
    assert first["end"] == END and first["new"] == len(history_articles(END)) and not first["reused"]
    again = seed_history(engine, END + timedelta(days=3))
    assert again == {"end": END, "new": 0, "reused": True}


@dataclass
class _Ctx:
    settings: Settings
    console: Console
    engine: Any
    results: dict[str, Any] = field(default_factory=dict)


def test_alert_step_fires_for_the_storm_and_mails_it(engine: Engine, tmp_path: Any) -> None:
    seed_history(engine, END)
    _oracle_scores(engine, "oracle")
    out = io.StringIO()
    ctx = _Ctx(Settings(home=tmp_path), Console(file=out, width=160), engine)
    ctx.results["history"] = {"end": END, "reused": False}
    demo_history.step_alerts(ctx)
    result = ctx.results["alerts"]
    tickers = {value for _, rule, value in result["fired"] if rule.startswith("ticker-")}
    assert tickers == {STORM_TICKER}
    first_fire = min(
        datetime.fromisoformat(at) for at, rule, value in result["fired"] if value == STORM_TICKER
    )
    assert (
        END - timedelta(hours=STORM_HOURS)
        < first_fire
        <= END - timedelta(hours=STORM_HOURS) + timedelta(hours=6)
    )
    assert result["emails_sent"] >= 1 and result["emails_pending"] == 0
    # The storm lifts the topic, source and all rules too; NWND explains them: shown, not mailed.
    lifted = {(rule, value) for _, rule, value in result["fired"] if not rule.startswith("ticker-")}
    assert lifted and {(rule, value) for _, rule, value in result["inhibited"]} == lifted
    printed = out.getvalue()
    assert "FIRING critical: ticker NWND" in printed
    assert "Northwind Energy" in printed and "https://" in printed
    # The ticker rules count: the email says how many negative stories the window expected.
    assert "negative stories at its usual rate" in printed

    # A second run replays the same hours: nothing new fires, nothing is mailed twice.
    ctx2 = _Ctx(
        ctx.settings,
        Console(file=io.StringIO(), width=160),
        engine,
        {"history": {"end": END, "reused": True}},
    )
    demo_history.step_alerts(ctx2)
    assert ctx2.results["alerts"]["fired"] == [] and ctx2.results["alerts"]["emails_sent"] == 0


@pytest.mark.parametrize("hours_before_end", [24 * 7, 24 * 3])
def test_calm_part_of_the_history_fires_nothing_for_tickers(engine: Engine, hours_before_end: int) -> None:
    from pipeline.alerts.backtest import backtest
    from pipeline.alerts.rules import load_rules

    seed_history(engine, END)
    _oracle_scores(engine, "oracle")
    calm_end = END - timedelta(hours=STORM_HOURS + 1)
    report = backtest(
        calm_end - timedelta(hours=hours_before_end), calm_end, engine=engine, rules=load_rules()
    )
    assert [e for e in report.episodes if e.dimension == "ticker"] == []


def test_the_shipped_model_catches_the_storm_and_nothing_else(engine: Engine, tmp_path: Any) -> None:
    """The demo as users run it: the shipped model scores the history, the default rules judge it."""
    from pipeline.scoring.score import score_pending

    seed_history(engine, END)
    report = score_pending(engine)
    assert report.scored == len(history_articles(END))
    ctx = _Ctx(Settings(home=tmp_path), Console(file=io.StringIO(), width=160), engine)
    ctx.results["history"] = {"end": END, "reused": False}
    demo_history.step_alerts(ctx)
    fired = ctx.results["alerts"]["fired"]
    assert {value for _, rule, value in fired if rule.startswith("ticker-")} == {STORM_TICKER}
    first_fire = min(datetime.fromisoformat(at) for at, _, value in fired if value == STORM_TICKER)
    assert first_fire <= END - timedelta(hours=STORM_HOURS) + timedelta(hours=6)
    # Whatever topic, source or all alert the storm lifts is explained by NWND: shown, not mailed. Only
    # the ticker alerts' transitions are emailed (each evaluation's firings of one value share an email).
    results = ctx.results["alerts"]
    lifted = {(rule, value) for _, rule, value in fired if not rule.startswith("ticker-")}
    assert {(rule, value) for _, rule, value in results["inhibited"]} == lifted
    ticker_mails = {
        (at, kind)
        for kind in ("fired", "resolved")
        for at, rule, _ in results[kind]
        if rule.startswith("ticker-")
    }
    # An inhibited alert that outlives the ticker alerts explaining it is emailed when released.
    released_mails = {(at, value) for at, _, value in results["released"]}
    assert results["emails_sent"] == len(ticker_mails) + len(released_mails)
