"""pipeline.alerts.engine on real PostgreSQL: spikes per value, the lifecycle, silences and outbox rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from pipeline import store
from pipeline.alerts import lifecycle
from pipeline.alerts.engine import evaluate
from pipeline.alerts.lifecycle import AlertState, advance, window_end
from pipeline.alerts.rules import DEFAULT_RULES, Rule, load_rules
from pipeline.scoring import rollups
from tests.fixtures.scoring import ArticleSpec, add_articles

VERSION = "alerts-test"
START = datetime(2026, 10, 1, tzinfo=UTC)
STORM = START + timedelta(days=3)
H = timedelta(hours=1)

RULE = Rule.model_validate(
    {
        "name": "ticker-1h",
        "dimension": "ticker",
        "window": "1h",
        "baseline": "3d",
        "for": "1h",
        "keep_firing_for": "2h",
        "cooldown": "6h",
        "min_stories": 5,
        "min_rise": 0.2,
        "alpha": 0.001,
        "severity": "critical",
    }
)


def _activate(engine: Engine) -> None:
    with engine.begin() as conn:
        store.register_model_version(conn, VERSION, "test", None, None)
        store.activate_model_version(conn, VERSION)


def _hours(start: datetime, end: datetime) -> list[datetime]:
    out, t = [], start
    while t < end:
        out.append(t)
        t += H
    return out


def _write(engine: Engine, rows: list[tuple[str, str, datetime, int, int]]) -> None:
    with engine.begin() as conn:
        store.write_story_counts(conn, VERSION, rows)


def _calm(engine: Engine, values: list[str], end: datetime = STORM) -> None:
    """Three calm days: 4 stories an hour per ticker, one of them negative (25%)."""
    _write(engine, [("ticker", v, t, 4, 1) for v in values for t in _hours(START, end)])


def _storm(engine: Engine, value: str, hours: list[datetime], stories: int = 8, neg: int = 8) -> None:
    _write(engine, [("ticker", value, t, stories, neg) for t in hours])


def _outbox(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return store.outbox_emails(conn)


def _events(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return store.alert_events(conn)


@pytest.fixture
def calm_db(engine: Engine) -> Engine:
    _activate(engine)
    _calm(engine, ["ACME", "GLBX", "INIT"])
    return engine


def test_window_end_rounds_up_to_the_hour() -> None:
    assert window_end(datetime(2026, 10, 1, 12, 30, tzinfo=UTC)) == datetime(2026, 10, 1, 13, tzinfo=UTC)
    assert window_end(datetime(2026, 10, 1, 13, tzinfo=UTC)) == datetime(2026, 10, 1, 13, tzinfo=UTC)


def test_a_long_storm_does_not_raise_its_own_baseline(calm_db: Engine) -> None:
    _storm(calm_db, "ACME", _hours(STORM, STORM + 12 * H))
    (gapped,) = evaluate(STORM + 12 * H, engine=calm_db, rules=[RULE]).alerts
    assert (gapped.value, gapped.status, gapped.baseline) == ("ACME", "pending", pytest.approx(0.25))
    # Without the gap, eleven storm hours sit in the trailing baseline (~45% negative): the twelfth
    # hour's 8 of 8 negative stories are no longer significant, and the storm has masked itself.
    no_gap = RULE.model_copy(update={"name": "ticker-1h-no-gap", "baseline_gap": timedelta(0)})
    assert evaluate(STORM + 12 * H, engine=calm_db, rules=[no_gap]).alerts == []


def test_pending_sends_nothing_and_firing_queues_exactly_one_email(calm_db: Engine) -> None:
    _storm(calm_db, "ACME", [STORM, STORM + H, STORM + 2 * H])

    first = evaluate(STORM + H, engine=calm_db, rules=[RULE])
    assert [(a.value, a.status) for a in first.alerts] == [("ACME", "pending")]
    assert first.new_firing == 0
    assert _outbox(calm_db) == []

    second = evaluate(STORM + 2 * H, engine=calm_db, rules=[RULE])
    assert second.new_firing == 1 and second.firing == 1
    (alert,) = second.alerts
    assert (alert.rule, alert.dimension, alert.value, alert.status) == (
        "ticker-1h",
        "ticker",
        "ACME",
        "firing",
    )
    assert alert.neg_share == 1.0
    # The baseline ends a day before the window (baseline_gap): the storm's first hour is not in it.
    assert alert.baseline == pytest.approx(0.25)
    assert alert.stories == 8
    (email,) = _outbox(calm_db)
    assert email.transition == "firing" and email.status == "pending"
    assert "critical" in email.subject and "ticker ACME" in email.subject

    # The same evaluation again, and the storm going on: still one firing email.
    assert evaluate(STORM + 2 * H, engine=calm_db, rules=[RULE]).new_firing == 0
    assert evaluate(STORM + 3 * H, engine=calm_db, rules=[RULE]).firing == 1
    assert len(_outbox(calm_db)) == 1
    assert [e.transition for e in _events(calm_db)] == ["firing"]


def test_resolved_is_sent_once_after_keep_firing_for(calm_db: Engine) -> None:
    _storm(calm_db, "ACME", [STORM, STORM + H])
    evaluate(STORM + H, engine=calm_db, rules=[RULE])
    assert evaluate(STORM + 2 * H, engine=calm_db, rules=[RULE]).new_firing == 1
    # The storm is over from STORM + 2h; keep_firing_for 2h holds the alert one more evaluation.
    assert evaluate(STORM + 3 * H, engine=calm_db, rules=[RULE]).firing == 1
    done = evaluate(STORM + 4 * H, engine=calm_db, rules=[RULE])
    assert done.resolved == 1 and done.firing == 0
    assert [(a.value, a.status) for a in done.alerts] == [("ACME", "resolved")]
    for hour in range(5, 9):
        assert evaluate(STORM + hour * H, engine=calm_db, rules=[RULE]).resolved == 0
    assert [e.transition for e in _outbox(calm_db)] == ["firing", "resolved"]


def test_a_spike_in_one_ticker_does_not_fire_for_the_others(calm_db: Engine) -> None:
    _storm(calm_db, "ACME", [STORM, STORM + H])
    evaluate(STORM + H, engine=calm_db, rules=[RULE])
    report = evaluate(STORM + 2 * H, engine=calm_db, rules=[RULE])
    assert [(a.value, a.status) for a in report.alerts] == [("ACME", "firing")]
    assert {e.value for e in _events(calm_db)} == {"ACME"}


def _silence_tickers(engine: Engine, value: str, ends_at: datetime) -> None:
    """Silence ticker alerts whose value matches ``value`` from START to ``ends_at``."""
    with engine.begin() as conn:
        store.add_silence(
            conn,
            rule=None,
            dimension="ticker",
            value=value,
            starts_at=START,
            ends_at=ends_at,
            comment="known: ACME earnings",
            created_by="test",
        )


def test_silence_suppresses_the_email_but_keeps_the_alert(calm_db: Engine) -> None:
    _silence_tickers(calm_db, "AC*", STORM + 24 * H)
    _storm(calm_db, "ACME", [STORM, STORM + H])
    evaluate(STORM + H, engine=calm_db, rules=[RULE])
    report = evaluate(STORM + 2 * H, engine=calm_db, rules=[RULE])
    assert report.firing == 1 and report.new_firing == 1
    assert _outbox(calm_db) == []
    (event,) = _events(calm_db)
    assert event.silenced and event.outbox_id is None
    # Its resolution is not mailed either: nobody was told it fired.
    assert evaluate(STORM + 4 * H, engine=calm_db, rules=[RULE]).resolved == 1
    assert _outbox(calm_db) == []


def test_expired_silence_no_longer_applies(calm_db: Engine) -> None:
    with calm_db.begin() as conn:
        sid = store.add_silence(
            conn,
            rule="ticker-*",
            dimension=None,
            value=None,
            starts_at=START,
            ends_at=STORM + 24 * H,
            comment="",
            created_by=None,
        )
        assert store.expire_silence(conn, sid, STORM)
        assert not store.expire_silence(conn, sid, STORM)
    _storm(calm_db, "ACME", [STORM, STORM + H])
    evaluate(STORM + H, engine=calm_db, rules=[RULE])
    evaluate(STORM + 2 * H, engine=calm_db, rules=[RULE])
    assert len(_outbox(calm_db)) == 1


def test_an_alert_still_firing_when_its_silence_ends_is_emailed_then(calm_db: Engine) -> None:
    _silence_tickers(calm_db, "ACME", STORM + 2 * H + timedelta(minutes=30))
    _storm(calm_db, "ACME", [STORM, STORM + H, STORM + 2 * H])
    evaluate(STORM + H, engine=calm_db, rules=[RULE])
    assert evaluate(STORM + 2 * H, engine=calm_db, rules=[RULE]).new_firing == 1 and _outbox(calm_db) == []

    report = evaluate(STORM + 3 * H, engine=calm_db, rules=[RULE])  # the silence has ended; the storm has not
    assert report.released == 1
    assert [(a.value, a.transition, a.inhibited_by) for a in report.alerts] == [("ACME", "released", [])]
    (email,) = _outbox(calm_db)
    assert email.subject.startswith("[finsent] FIRING critical: ticker ACME")
    assert "Held back by a silence that has ended" in email.body_text
    (event,) = _events(calm_db)
    assert event.silenced and event.released_at == STORM + 3 * H and event.outbox_id == email.id
    assert evaluate(STORM + 3 * H, engine=calm_db, rules=[RULE]).released == 0 and len(_outbox(calm_db)) == 1


def test_cooldown_holds_a_new_storm_back_until_it_has_passed(calm_db: Engine) -> None:
    first = [STORM, STORM + H]
    second = [STORM + 5 * H + i * H for i in range(8)]  # starts 1h after the resolve at STORM + 4h
    _storm(calm_db, "ACME", first + second)
    for hour in range(1, 5):
        evaluate(STORM + hour * H, engine=calm_db, rules=[RULE])
    assert [e.transition for e in _events(calm_db)] == ["firing", "resolved"]
    # Breaching again from STORM + 6h, but the 6h cooldown runs until STORM + 10h.
    for hour in range(5, 10):
        report = evaluate(STORM + hour * H, engine=calm_db, rules=[RULE])
        assert report.new_firing == 0, hour
    assert evaluate(STORM + 10 * H, engine=calm_db, rules=[RULE]).new_firing == 1
    assert [e.transition for e in _outbox(calm_db)] == ["firing", "resolved", "firing"]


def test_no_flapping_when_the_share_hovers_around_the_threshold(calm_db: Engine) -> None:
    # Every other hour breaches: with for=1h it never fires.
    _storm(calm_db, "ACME", [STORM + 2 * i * H for i in range(6)])
    for hour in range(1, 13):
        assert evaluate(STORM + hour * H, engine=calm_db, rules=[RULE]).new_firing == 0
    assert _events(calm_db) == []


def test_firing_alert_does_not_flap_while_the_storm_pauses_for_an_hour(calm_db: Engine) -> None:
    hours = [STORM, STORM + H, STORM + 3 * H, STORM + 5 * H]  # gaps at +2h and +4h
    _storm(calm_db, "ACME", hours)
    for hour in range(1, 7):
        evaluate(STORM + hour * H, engine=calm_db, rules=[RULE])
    assert [e.transition for e in _events(calm_db)] == ["firing"]


def test_lifecycle_is_pure_and_follows_for_and_keep_firing_for() -> None:
    state = AlertState("r", "ticker", "ACME", "warning")
    t = STORM
    state, tr = advance(state, RULE, True, t)
    assert (state.status, tr) == ("pending", None)
    state, tr = advance(state, RULE, True, t + H)
    assert (state.status, tr) == ("firing", "firing")
    state, tr = advance(state, RULE, False, t + 2 * H)
    assert (state.status, tr) == ("firing", None)
    state, tr = advance(state, RULE, False, t + 3 * H)
    assert (state.status, tr, state.resolved_at) == ("inactive", "resolved", t + 3 * H)


def test_zero_for_fires_at_the_first_breach() -> None:
    rule = RULE.model_copy(update={"for_": timedelta(0)})
    state, tr = advance(AlertState("r", "ticker", "ACME", "warning"), rule, True, STORM)
    assert (state.status, tr) == ("firing", "firing")


def test_syndicated_copies_of_one_story_do_not_inflate_a_spike(engine: Engine) -> None:
    """End to end through articles, scores and the rollup rebuild: 12 copies of one story are one story."""
    _activate(engine)
    base = STORM - 2 * 24 * H
    specs = [
        ArticleSpec(f"Calm ACME item {i}", source="wire", published_at=base + i * H, tickers=["ACME"])
        for i in range(48)
    ]
    storm_at = STORM + timedelta(minutes=5)
    syndicated = [
        ArticleSpec(
            "ACME recalls its flagship product",
            source=f"outlet{i}",
            published_at=storm_at + timedelta(minutes=i),
            tickers=["ACME"],
            story="recall",
        )
        for i in range(12)
    ]
    distinct = [
        ArticleSpec(
            f"GLBX bad news {i}",
            source="wire",
            published_at=storm_at + timedelta(minutes=i),
            tickers=["GLBX"],
        )
        for i in range(12)
    ]
    calm_glbx = [
        ArticleSpec(f"Calm GLBX item {i}", source="wire", published_at=base + i * H, tickers=["GLBX"])
        for i in range(48)
    ]
    ids = add_articles(engine, specs + syndicated + distinct + calm_glbx)
    negative = (
        set(ids[48 : 48 + 24]) | {ids[i] for i in range(0, 48, 4)} | {ids[72 + i] for i in range(0, 48, 4)}
    )
    rows = [
        store.ScoreRow(
            i,
            "markets",
            {"markets": 1.0},
            "negative" if i in negative else "neutral",
            {"negative": 0.9 if i in negative else 0.05, "neutral": 0.1, "positive": 0.0},
            -0.9 if i in negative else 0.0,
        )
        for i in ids
    ]
    with engine.begin() as conn:
        store.insert_scores(conn, VERSION, rows)
    rollups.rebuild_rollups(engine, VERSION)
    with engine.connect() as conn:
        acme = store.rollup_story_series(conn, VERSION, "ticker", STORM, STORM + H)
    assert [(r.value, r.stories, r.neg_stories) for r in acme] == [("ACME", 1, 1), ("GLBX", 12, 12)]
    rule = RULE.model_copy(update={"for_": timedelta(0), "min_stories": 5})
    report = evaluate(STORM + H, engine=engine, rules=[rule])
    firing = {a.value: a for a in report.alerts if a.status == "firing"}
    assert set(firing) == {"GLBX"}
    assert firing["GLBX"].stories == 12
    (email,) = _outbox(engine)
    assert "GLBX bad news" in email.body_text and "ACME recalls" not in email.body_text


def test_email_lists_the_negative_headlines_once_per_story(engine: Engine) -> None:
    _activate(engine)
    base = STORM - 2 * 24 * H
    calm = [ArticleSpec(f"Calm item {i}", published_at=base + i * H, tickers=["ACME"]) for i in range(48)]
    storm = [
        ArticleSpec(
            f"ACME <b>fraud</b> probe widens, part {i % 6}",
            source=f"s{i}",
            published_at=STORM + timedelta(minutes=2 * i),
            tickers=["ACME"],
            story=f"st{i % 6}",
        )
        for i in range(12)
    ]
    ids = add_articles(engine, calm + storm)
    rows = [
        store.ScoreRow(
            i,
            "markets",
            {"markets": 1.0},
            "negative" if n >= 48 or n % 4 == 0 else "neutral",
            {"negative": 0.9, "neutral": 0.1, "positive": 0.0},
            -0.9 if n >= 48 else 0.0,
        )
        for n, i in enumerate(ids)
    ]
    with engine.begin() as conn:
        store.insert_scores(conn, VERSION, rows)
    rollups.rebuild_rollups(engine, VERSION)
    rule = RULE.model_copy(update={"for_": timedelta(0)})
    assert evaluate(STORM + H, engine=engine, rules=[rule]).new_firing == 1
    (email,) = _outbox(engine)
    lines = [line for line in email.body_text.splitlines() if line.startswith("  - ")]
    assert len(lines) == 5  # top five stories, one line each
    assert len({line.split(", part ")[1][:1] for line in lines}) == 5
    assert "&lt;b&gt;fraud&lt;/b&gt;" in email.body_html and "<b>fraud</b>" not in email.body_html
    assert "http://127.0.0.1/" in email.body_html


def test_grouped_rules_of_one_value_share_one_email(calm_db: Engine) -> None:
    _storm(calm_db, "ACME", [STORM, STORM + H])
    fast = RULE.model_copy(update={"for_": timedelta(0)})
    wide = fast.model_copy(update={"name": "ticker-2h", "window": timedelta(hours=2)})
    report = evaluate(STORM + 2 * H, engine=calm_db, rules=[fast, wide])
    assert report.new_firing == 2
    (email,) = _outbox(calm_db)
    assert "ticker-1h" in email.body_text and "ticker-2h" in email.body_text
    assert {e.outbox_id for e in _events(calm_db)} == {email.id}


def test_report_lists_fields_the_cli_prints(calm_db: Engine) -> None:
    _storm(calm_db, "ACME", [STORM])
    data = evaluate(STORM + H, engine=calm_db, rules=[RULE]).as_dict()
    for key in ("firing", "new_firing", "resolved", "emails_sent", "emails_pending", "alerts"):
        assert key in data
    assert set(data["alerts"][0]) >= {
        "rule",
        "dimension",
        "value",
        "status",
        "neg_share",
        "baseline",
        "stories",
    }


def test_evaluating_an_earlier_time_leaves_live_state_alone(calm_db: Engine) -> None:
    _storm(calm_db, "ACME", [STORM, STORM + H])
    evaluate(STORM + H, engine=calm_db, rules=[RULE])
    assert evaluate(STORM + 2 * H, engine=calm_db, rules=[RULE]).new_firing == 1
    earlier = evaluate(STORM + H, engine=calm_db, rules=[RULE])
    assert earlier.new_firing == 0 and earlier.resolved == 0
    assert [(a.value, a.status, a.transition) for a in earlier.alerts] == [("ACME", "firing", None)]
    assert [e.transition for e in _events(calm_db)] == ["firing"]


def test_no_rollups_means_no_alerts(engine: Engine) -> None:
    report = evaluate(STORM, engine=engine, rules=[RULE])
    assert report.model_version is None and report.alerts == []


def test_value_globs_restrict_a_rule(calm_db: Engine) -> None:
    _storm(calm_db, "ACME", [STORM])
    only_glbx = RULE.model_copy(update={"for_": timedelta(0), "values": ("GL*",)})
    assert evaluate(STORM + H, engine=calm_db, rules=[only_glbx]).alerts == []
    assert lifecycle.value_watched(only_glbx, "GLBX") and not lifecycle.value_watched(only_glbx, "ACME")


TOPIC_RULE = Rule.model_validate(
    {
        "name": "topic-1h",
        "dimension": "topic",
        "window": "1h",
        "baseline": "2d",
        "for": "0h",
        "min_stories": 5,
        "min_rise": 0.2,
        "alpha": 0.01,
        "severity": "warning",
    }
)

TICKER_AT_ONCE = RULE.model_copy(update={"for_": timedelta(0)})
ACME_STORM = [(f"ACME bad news {i}", ["ACME"], "negative") for i in range(8)]
QUIET_EARNINGS = [(f"Quiet earnings item {i}", [], "neutral") for i in range(3)]


def _scored_history(
    engine: Engine, storm: list[tuple[str, list[str], str]], later: list[tuple[str, list[str], str]] = ()
) -> None:
    """Two calm days of Earnings news (a quarter negative, half of it about ACME), then ``storm``:
    (title, tickers, sentiment) items in the hour from STORM, then ``later`` ones in the hour after, all
    in the Earnings topic."""
    _activate(engine)
    base = STORM - 2 * 24 * H
    calm = [
        (f"Calm item {h}-{k}", ["ACME"] if k < 2 else [], "negative" if k == 3 else "neutral")
        for h in range(48)
        for k in range(4)
    ]
    specs = [
        ArticleSpec(title, published_at=base + i // 4 * H + timedelta(minutes=i % 4), tickers=tickers)
        for i, (title, tickers, _) in enumerate(calm)
    ]
    specs += [
        ArticleSpec(title, published_at=start + timedelta(minutes=5 + i), tickers=tickers)
        for start, items in ((STORM, storm), (STORM + H, later))
        for i, (title, tickers, _) in enumerate(items)
    ]
    sentiments = [s for _, _, s in [*calm, *storm, *later]]
    ids = add_articles(engine, specs)
    rows = [
        store.ScoreRow(i, "Earnings", {"Earnings": 1.0}, s, {s: 1.0}, -1.0 if s == "negative" else 0.0)
        for i, s in zip(ids, sentiments, strict=True)
    ]
    with engine.begin() as conn:
        store.insert_scores(conn, VERSION, rows)
    rollups.rebuild_rollups(engine, VERSION)


def test_a_ticker_storm_inhibits_the_topic_alert_it_explains(engine: Engine) -> None:
    _scored_history(engine, ACME_STORM + QUIET_EARNINGS)
    report = evaluate(STORM + H, engine=engine, rules=[TOPIC_RULE, TICKER_AT_ONCE])

    fired = {(a.rule, a.value): a for a in report.alerts if a.transition == "firing"}
    assert set(fired) == {("topic-1h", "Earnings"), ("ticker-1h", "ACME")}
    assert fired[("topic-1h", "Earnings")].inhibited_by == ["ACME"]
    assert fired[("ticker-1h", "ACME")].inhibited_by == []
    (email,) = _outbox(engine)
    assert "ACME" in email.subject and "Earnings" not in email.subject
    events = {e.rule: e for e in _events(engine)}
    assert events["topic-1h"].silenced and events["topic-1h"].inhibited_by == ["ACME"]
    assert events["topic-1h"].outbox_id is None and events["ticker-1h"].outbox_id == email.id
    with engine.connect() as conn:  # what the dashboard's Alerts page lists
        shown = {r["rule"]: r["inhibited_by"] for r in store.alert_timeline(conn, STORM, STORM + 2 * H)}
    assert shown == {"topic-1h": "ACME", "ticker-1h": ""}


def test_a_topic_storm_beyond_the_ticker_storm_still_emails(engine: Engine) -> None:
    # Without ACME's articles the topic still holds 8 negative stories of 11: the ticker explains nothing.
    sector = [(f"Sector bad news {i}", [], "negative") for i in range(8)]
    _scored_history(engine, ACME_STORM + sector + QUIET_EARNINGS)
    report = evaluate(STORM + H, engine=engine, rules=[TOPIC_RULE, TICKER_AT_ONCE])

    fired = {a.rule: a for a in report.alerts if a.transition == "firing"}
    assert set(fired) == {"topic-1h", "ticker-1h"} and fired["topic-1h"].inhibited_by == []
    assert sorted(e.subject.split(":")[1].strip() for e in _outbox(engine)) == [
        "ticker ACME",
        "topic Earnings",
    ]


QUICK_TICKER = TICKER_AT_ONCE.model_copy(update={"keep_firing_for": timedelta(0)})


def test_an_inhibited_alert_that_outlives_its_ticker_storm_is_emailed_then(engine: Engine) -> None:
    # Hour 1: ACME's storm explains the topic's rise. Hour 2: no ACME news, the topic's bad news goes on.
    sector = [(f"Later sector bad news {i}", [], "negative") for i in range(8)]
    _scored_history(engine, ACME_STORM + QUIET_EARNINGS, later=sector + QUIET_EARNINGS)
    rules = [TOPIC_RULE, QUICK_TICKER]
    first = evaluate(STORM + H, engine=engine, rules=rules)
    fired = {a.rule: a.inhibited_by for a in first.alerts if a.transition == "firing"}
    assert fired == {"topic-1h": ["ACME"], "ticker-1h": []} and len(_outbox(engine)) == 1

    second = evaluate(STORM + 2 * H, engine=engine, rules=rules)
    assert second.released == 1 and second.new_firing == 0
    moved = {(a.rule, a.transition): a for a in second.alerts if a.transition}
    assert set(moved) == {("topic-1h", "released"), ("ticker-1h", "resolved")}
    assert moved[("topic-1h", "released")].inhibited_by == ["ACME"]
    mails = {e.subject.split(":")[0] + ":" + e.subject.split(":")[1]: e for e in _outbox(engine)}
    assert set(mails) == {
        "[finsent] FIRING critical: ticker ACME",
        "[finsent] RESOLVED critical: ticker ACME",
        "[finsent] FIRING warning: topic Earnings",
    }
    topic_mail = mails["[finsent] FIRING warning: topic Earnings"]
    assert "Held back while firing alerts for ACME explained it" in topic_mail.body_text
    firing_event = next(e for e in _events(engine) if e.rule == "topic-1h" and e.transition == "firing")
    assert firing_event.released_at == STORM + 2 * H and firing_event.outbox_id == topic_mail.id
    with engine.connect() as conn:  # the dashboard shows it inhibited, then released
        (row,) = [r for r in store.alert_timeline(conn, STORM, STORM + 3 * H) if r["rule"] == "topic-1h"]
    assert row["inhibited_by"] == "ACME" and row["released_at"] == STORM + 2 * H

    # A rerun of the same hour sends nothing twice; the topic's resolution is emailed, as its firing was.
    assert evaluate(STORM + 2 * H, engine=engine, rules=rules).released == 0 and len(_outbox(engine)) == 3
    for hours in (3, 4):
        evaluate(STORM + hours * H, engine=engine, rules=rules)
    subjects = [e.subject for e in _outbox(engine)]
    assert len(subjects) == 4 and subjects[-1].startswith("[finsent] RESOLVED warning: topic Earnings")


def test_an_inhibited_alert_that_only_lingers_after_its_ticker_storm_resolves_quietly(engine: Engine) -> None:
    _scored_history(engine, ACME_STORM + QUIET_EARNINGS)
    rules = [TOPIC_RULE, QUICK_TICKER]
    for hours in range(1, 5):
        report = evaluate(STORM + hours * H, engine=engine, rules=rules)
        assert report.released == 0
    # The topic kept firing (keep_firing_for) after ACME's alert resolved, without breaching: no email.
    transitions = [(e.rule, e.transition) for e in _events(engine)]
    assert ("topic-1h", "resolved") in transitions
    assert sorted(e.subject.split(":")[1].strip() for e in _outbox(engine)) == ["ticker ACME", "ticker ACME"]


def test_inhibition_can_be_turned_off_per_rule(engine: Engine) -> None:
    _scored_history(engine, ACME_STORM + QUIET_EARNINGS)
    topic_rule = TOPIC_RULE.model_copy(update={"inhibit_by_tickers": False})
    evaluate(STORM + H, engine=engine, rules=[topic_rule, TICKER_AT_ONCE])
    assert len(_outbox(engine)) == 2


def test_a_burst_the_model_reads_as_neutral_fires_the_burst_rule_and_good_news_stays_quiet(
    engine: Engine,
) -> None:
    """A model that under-calls: 16 ACME stories in an hour, each neutral at p(negative) = 0.45. No story
    is called negative, so the count rule stays quiet; the burst rule counts 7.2 expected negatives on
    five times the usual volume and fires. 16 good-news GLBX stories in the same hour stay quiet."""
    _activate(engine)
    history = [
        ("ticker", v, t, 1, int(t.hour % 4 == 0)) for v in ("ACME", "GLBX") for t in _hours(START, STORM)
    ]
    _write(engine, history + [("all", "*", t, 20, 5) for t in _hours(START, STORM)])
    burst = [
        ArticleSpec(
            f"{ticker} item {i}",
            source="wire",
            published_at=STORM + timedelta(minutes=3 * i),
            tickers=[ticker],
        )
        for ticker in ("ACME", "GLBX")
        for i in range(16)
    ]
    ids = add_articles(engine, burst)
    leaning = {"negative": 0.45, "neutral": 0.5, "positive": 0.05}
    upbeat = {"negative": 0.02, "neutral": 0.18, "positive": 0.8}
    rows = [
        store.ScoreRow(
            i,
            "markets",
            {"markets": 1.0},
            "neutral" if n < 16 else "positive",
            leaning if n < 16 else upbeat,
            -0.4 if n < 16 else 0.78,
        )
        for n, i in enumerate(ids)
    ]
    with engine.begin() as conn:
        rollups.refresh_buckets(conn, VERSION, store.insert_scores(conn, VERSION, rows))
    shipped = {r.name: r for r in load_rules(DEFAULT_RULES)}
    short = {"baseline": timedelta(days=3), "baseline_gap": timedelta(0)}
    count_rule = shipped["ticker-2h"].model_copy(update=short)
    burst_rule = shipped["ticker-burst-3h"].model_copy(update=short)

    report = evaluate(STORM + H, engine=engine, rules=[count_rule, burst_rule])

    firing = {(a.rule, a.value): a for a in report.alerts if a.status == "firing"}
    assert set(firing) == {("ticker-burst-3h", "ACME")}
    acme = firing[("ticker-burst-3h", "ACME")]
    assert acme.neg_stories == pytest.approx(7.2)
    assert acme.expected_negatives is not None and acme.expected_negatives < 1.0
    (email,) = _outbox(engine)
    # Its stories lean negative (score < 0) though none is called negative: the email lists them.
    assert "7.2 negative" in email.body_text and "ACME item" in email.body_text
    assert "GLBX item" not in email.body_text
