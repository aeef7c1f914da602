"""Synthetic but realistic history for the dashboard's tests and benchmark: sources, articles, scores.

Articles come from the shipped feed list and name the shipped watchlist's companies; headlines follow
templates per sentiment; a share of articles are syndicated copies of an earlier story (same title,
another source, same story id); volume follows the trading day. Spikes add bursts of mostly negative
stories for one ticker, topic or source. Rows are bulk-loaded with COPY, then the real rollup rebuild
and, when asked, the real alert evaluation run over them, so every table the dashboard reads is filled
the way the pipeline fills it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sqlalchemy.engine import Engine

from models.labels import SENTIMENT_NAMES, TOPIC_NAMES
from pipeline import store
from pipeline.config import DEFAULT_SOURCES, DEFAULT_WATCHLIST
from pipeline.ingest.sources import Source, load_sources
from pipeline.scoring import rollups

SEED_VERSION = "seed-synthetic-1"
CHUNK_ROWS = 100_000
# Share of articles that are another outlet's copy of a story published in the hours before.
COPY_SHARE = 0.2
# Base mix of sentiment classes (negative, neutral, positive) outside spikes.
BASE_SENTIMENT = (0.28, 0.47, 0.25)
# Relative article volume per UTC hour: quiet nights, busy US and European trading hours.
HOURLY_WEIGHTS = np.array(
    [2, 2, 2, 2, 2, 3, 5, 7, 9, 10, 10, 10, 12, 14, 15, 15, 14, 12, 10, 8, 6, 4, 3, 2], dtype=float
)
# Topics are not equally common in financial news.
TOPIC_WEIGHTS = np.array([5, 3, 9, 3, 2, 9, 4, 5, 3, 8, 3, 2, 4, 5, 6, 9, 3, 2, 7, 8], dtype=float)

TEMPLATES: dict[str, tuple[str, ...]] = {
    "negative": (
        "{co} shares slide after profit warning",
        "{co} cuts full-year outlook as demand weakens",
        "Regulators open probe into {co} accounting",
        "{co} misses quarterly revenue estimates",
        "{co} recalls products, shares tumble",
        "Downgrade hits {co} as margins shrink",
        "{co} faces lawsuit over data breach",
        "{co} suspends dividend amid cash squeeze",
    ),
    "neutral": (
        "{co} to present at investor conference",
        "{co} names new chief financial officer",
        "What to watch as {co} reports results",
        "{co} files quarterly report with SEC",
        "{co} schedules annual shareholder meeting",
        "{co} shares little changed in early trading",
    ),
    "positive": (
        "{co} beats earnings estimates, raises guidance",
        "{co} shares jump on record quarterly sales",
        "Analysts upgrade {co} to buy on margin recovery",
        "{co} announces $2 billion share buyback",
        "{co} wins major government contract",
        "{co} raises dividend by 10%",
    ),
}
MARKET_TEMPLATES: dict[str, tuple[str, ...]] = {
    "negative": (
        "Stocks fall as Treasury yields climb after hot inflation data",
        "Oil prices slide as inventories swell",
        "Retail sales fall more than expected",
        "Factory orders drop for a third month",
    ),
    "neutral": (
        "Fed holds rates steady, signals patience",
        "Dollar steady ahead of jobs report",
        "Central bank minutes due this afternoon",
    ),
    "positive": (
        "Stocks rally to record as inflation cools",
        "Gold climbs on safe-haven demand",
        "Jobs growth beats forecasts",
    ),
}


@dataclass(frozen=True)
class Spike:
    """A burst of mostly negative stories for one dimension value (ticker, topic or source)."""

    dimension: str
    value: str
    start: datetime
    hours: int
    per_hour: int
    neg_share: float = 0.9


@dataclass
class SeedPlan:
    """What to seed: how many articles over how many days up to ``end``, and the spikes on top."""

    articles: int
    days: int
    end: datetime
    version: str = SEED_VERSION
    seed: int = 7
    spikes: list[Spike] = field(default_factory=list)
    # Hours at which to evaluate the alert rules after loading (real alert engine), oldest first.
    evaluate_at: list[datetime] = field(default_factory=list)


@dataclass(frozen=True)
class Company:
    name: str
    ticker: str


@dataclass
class SeedReport:
    """What was seeded: row counts and the model version, plus the alert evaluations' firing counts."""

    version: str
    sources: int
    articles: int
    scores: int
    rollup_rows: int
    firing_after: list[int] = field(default_factory=list)


def watchlist_companies(path: Path = DEFAULT_WATCHLIST) -> list[Company]:
    """Return the companies of the watchlist (name and ticker), in file order."""
    entries = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or []
    return [Company(e["name"], e["ticker"]) for e in entries if e.get("kind") == "company"]


def hour_floor(moment: datetime) -> datetime:
    """Return the start of ``moment``'s UTC hour."""
    return rollups.hour_floor(moment)


def demo_plan(articles: int, days: int, now: datetime | None = None, seed: int = 7) -> SeedPlan:
    """Return a plan with one storm still going (a ticker, the last 2 hours) and one resolved days ago
    (a topic); alerts are evaluated an hour into each storm, after the old one ended, and now.

    Storms are strong (20+ stories an hour, 95% negative) so that they fire under any sensible rules.
    """
    end = hour_floor(now or datetime.now(UTC))
    past = end - timedelta(days=min(4, max(days - 1, 1)))
    spikes = [
        Spike("ticker", "NVDA", end - timedelta(hours=2), hours=2, per_hour=20, neg_share=0.95),
        Spike("topic", "Energy | Oil", past, hours=3, per_hour=25, neg_share=0.95),
    ]
    evaluate_at = [past + timedelta(hours=1), past + timedelta(hours=9), end - timedelta(hours=1), end]
    return SeedPlan(articles, days, end, seed=seed, spikes=spikes, evaluate_at=evaluate_at)


def _published_times(rng: np.random.Generator, n: int, start: datetime, days: int) -> np.ndarray:
    """Return ``n`` epoch seconds in ``days`` days from ``start``, shaped by the trading-day profile."""
    day = rng.integers(0, days, n)
    hour = rng.choice(24, size=n, p=HOURLY_WEIGHTS / HOURLY_WEIGHTS.sum())
    second = rng.integers(0, 3600, n)
    return int(start.timestamp()) + day * 86400 + hour * 3600 + second


def _rows(
    plan: SeedPlan, source_ids: Sequence[int], source_names: Sequence[str], companies: Sequence[Company]
) -> Iterator[tuple[list[Any], list[Any]]]:
    """Yield (article row, score row) pairs in the column order of ``store.seed_columns``."""
    rng = np.random.default_rng(plan.seed)
    start = plan.end - timedelta(days=plan.days)
    end_s = int(plan.end.timestamp())
    base = _published_times(rng, plan.articles, start, plan.days)
    kinds: list[tuple[str, Spike | None]] = [("base", None)] * plan.articles
    times = [base]
    for planned in plan.spikes:
        n = planned.hours * planned.per_hour
        offsets = rng.integers(0, planned.hours * 3600, n)
        times.append(int(planned.start.timestamp()) + offsets)
        kinds += [("spike", planned)] * n
    when = np.concatenate(times)
    order = np.argsort(when, kind="stable")
    when = np.minimum(when[order], end_s - 1)
    kinds = [kinds[i] for i in order]
    n_total = len(when)

    topic_p = TOPIC_WEIGHTS / TOPIC_WEIGHTS.sum()
    topics = rng.choice(len(TOPIC_NAMES), size=n_total, p=topic_p)
    sentiments = rng.choice(3, size=n_total, p=BASE_SENTIMENT)
    # A few outlets carry most of the news (Zipf-like).
    source_p = 1.0 / np.arange(1, len(source_ids) + 1) ** 0.8
    sources = rng.choice(len(source_ids), size=n_total, p=source_p / source_p.sum())
    company_p = 1.0 / np.arange(1, len(companies) + 1) ** 0.9
    company = rng.choice(len(companies), size=n_total, p=company_p / company_p.sum())
    with_company = rng.random(n_total) < 0.7
    second_company = rng.choice(len(companies), size=n_total)
    two_companies = rng.random(n_total) < 0.1
    is_copy = rng.random(n_total) < COPY_SHARE
    magnitude = rng.uniform(0.3, 0.98, n_total)
    template_pick = rng.integers(0, 1_000, n_total)
    fetch_delay = rng.integers(30, 900, n_total)
    topic_index = {name: i for i, name in enumerate(TOPIC_NAMES)}
    ticker_index = {c.ticker: i for i, c in enumerate(companies)}
    source_index = {name: i for i, name in enumerate(source_names)}

    recent: list[tuple[int, str, int, int, list[str], int]] = []  # story rows copies may repeat
    for i in range(n_total):
        article_id = i + 1
        kind, spike = kinds[i]
        topic, sentiment, src = int(topics[i]), int(sentiments[i]), int(sources[i])
        tickers: list[str] = []
        co: Company | None = companies[company[i]] if with_company[i] else None
        if spike is not None:
            sentiment = 0 if rng.random() < spike.neg_share else int(rng.choice([1, 2]))
            if spike.dimension == "ticker":
                co = companies[ticker_index[spike.value]]
            elif spike.dimension == "topic":
                topic = topic_index[spike.value]
            elif spike.dimension == "source":
                src = source_index[spike.value]
        copy_of = None
        if kind == "base" and is_copy[i] and recent:
            copy_of = recent[int(rng.integers(0, len(recent)))]
        if copy_of is not None:
            story_id, title, topic, sentiment, tickers, _ = copy_of
        else:
            story_id = article_id
            label = SENTIMENT_NAMES[sentiment]
            if co is not None:
                options = TEMPLATES[label]
                title = options[template_pick[i] % len(options)].format(co=co.name)
                tickers = [co.ticker]
                if two_companies[i] and companies[second_company[i]].ticker != co.ticker:
                    tickers.append(companies[second_company[i]].ticker)
            else:
                options = MARKET_TEMPLATES[label]
                title = options[template_pick[i] % len(options)]
            recent.append((story_id, title, topic, sentiment, tickers, int(when[i])))
            if len(recent) > 200:
                recent.pop(0)
        published = datetime.fromtimestamp(int(when[i]), UTC)
        fetched = datetime.fromtimestamp(min(int(when[i]) + int(fetch_delay[i]), end_s), UTC)
        source_name = source_names[src]
        url = f"https://news.example.com/{source_name}/{published:%Y/%m/%d}/{article_id}"
        title_hash = hashlib.sha1(title.lower().encode()).hexdigest()
        content_hash = hashlib.sha1(f"{title}|{article_id}".encode()).hexdigest()
        summary = f"{title}. Reported by {source_name}."
        article = [
            article_id,
            source_ids[src],
            f"{source_name}-{article_id}",
            url,
            url,
            title,
            summary,
            published.isoformat(),
            fetched.isoformat(),
            "en",
            content_hash,
            title_hash,
            story_id,
            "{" + ",".join(f'"{t}"' for t in tickers) + "}",
        ]
        label = SENTIMENT_NAMES[sentiment]
        score = {"negative": -1.0, "neutral": 0.0, "positive": 1.0}[label] * float(magnitude[i])
        if label == "neutral":
            score = float(magnitude[i] - 0.64) * 0.6
        p_main = 0.5 + 0.5 * float(magnitude[i])
        rest = (1.0 - p_main) / 2
        sentiment_probs = {name: round(p_main if name == label else rest, 4) for name in SENTIMENT_NAMES}
        runner_up = TOPIC_NAMES[(topic + 1) % len(TOPIC_NAMES)]
        topic_probs = {TOPIC_NAMES[topic]: round(p_main, 4), runner_up: round(1 - p_main, 4)}
        score_row = [
            article_id,
            plan.version,
            TOPIC_NAMES[topic],
            json.dumps(topic_probs),
            label,
            json.dumps(sentiment_probs),
            round(score, 4),
            fetched.isoformat(),
            published.isoformat(),
        ]
        yield article, score_row


def simulated_metrics(seed: int = 7, examples: int = 2000) -> dict[str, Any]:
    """Return evaluation metrics of a simulated held-out set (true labels vs noisy predictions), in the
    shape ``models.evaluate`` reports: per task accuracy / macro-F1 / weighted-F1 / n, the confusion
    matrices (rows true, columns predicted) and a weaker baseline.

    The seeded model version needs metrics for the Model page; they are computed like real ones, just
    over simulated predictions.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    rng = np.random.default_rng(seed)
    metrics: dict[str, Any] = {"confusion": {}, "baseline": {}}
    for task, labels, accuracy in (("sentiment", SENTIMENT_NAMES, 0.82), ("topic", TOPIC_NAMES, 0.74)):
        truth = rng.integers(0, len(labels), examples)
        for target, skill in ((metrics, accuracy), (metrics["baseline"], accuracy - 0.08)):
            wrong = rng.random(examples) > skill
            predicted = np.where(wrong, rng.integers(0, len(labels), examples), truth)
            target[task] = {
                "accuracy": round(float(accuracy_score(truth, predicted)), 4),
                "macro_f1": round(float(f1_score(truth, predicted, average="macro")), 4),
                "weighted_f1": round(float(f1_score(truth, predicted, average="weighted")), 4),
                "n": examples,
            }
            if target is metrics:
                matrix = confusion_matrix(truth, predicted, labels=range(len(labels)))
                metrics["confusion"][task] = matrix.tolist()
    # A news section as `finsent eval` reports it: per set, metrics with per-class precision and recall.
    metrics["news"] = {}
    for name, n, skill in (("sentfin_heldout", 600, 0.8), ("sentivent_eval", 900, 0.5)):
        truth = rng.integers(0, len(SENTIMENT_NAMES), n)
        entries = []
        for s in (skill, skill - 0.05):
            predicted = np.where(rng.random(n) > s, rng.integers(0, len(SENTIMENT_NAMES), n), truth)
            if s == skill:  # as `finsent eval` records it: the model's matrix beside the tweets' ones
                matrix = confusion_matrix(truth, predicted, labels=range(len(SENTIMENT_NAMES)))
                metrics["confusion"][f"news/{name}"] = matrix.tolist()
            precision, recall, _, support = precision_recall_fscore_support(
                truth, predicted, labels=range(len(SENTIMENT_NAMES)), zero_division=0
            )
            entries.append(
                {
                    "weighted_f1": round(float(f1_score(truth, predicted, average="weighted")), 4),
                    "macro_f1": round(float(f1_score(truth, predicted, average="macro")), 4),
                    "n": n,
                    "per_class": {
                        label: {"precision": round(float(p), 4), "recall": round(float(r), 4), "n": int(k)}
                        for label, p, r, k in zip(SENTIMENT_NAMES, precision, recall, support, strict=True)
                    },
                }
            )
        metrics["news"][name] = {**entries[0], "baseline": entries[1]}
    # Reliability points as `finsent eval` records them: top-class confidence against how often it is right.
    from models.evaluate import reliability_bins

    metrics["reliability"] = {}
    for task, n, lean in (("sentiment", 2000, 0.97), ("news/sentfin_heldout", 600, 0.9)):
        confidence = rng.uniform(1 / 3, 1.0, n)
        right = rng.random(n) < confidence * lean  # slightly overconfident, as models tend to be
        probs = np.column_stack([confidence, (1 - confidence) / 2, (1 - confidence) / 2])
        truth = np.where(right, 0, 1)
        metrics["reliability"][task] = reliability_bins(probs, truth)
    metrics["note"] = "simulated evaluation of a synthetic seed model version"
    return metrics


def _copy_chunks(engine: Engine, rows: Iterator[tuple[list[Any], list[Any]]]) -> tuple[int, int]:
    """Return (articles, scores) loaded by COPY, one transaction per chunk of CHUNK_ROWS."""
    loaded = [0, 0]
    while True:
        articles, scores = io.StringIO(), io.StringIO()
        a_writer, s_writer = csv.writer(articles), csv.writer(scores)
        n = 0
        for article, score in rows:
            a_writer.writerow(article)
            s_writer.writerow(score)
            n += 1
            if n == CHUNK_ROWS:
                break
        if n == 0:
            return loaded[0], loaded[1]
        articles.seek(0)
        scores.seek(0)
        with engine.begin() as conn:
            loaded[0] += store.copy_rows(conn, "articles", articles)
            loaded[1] += store.copy_rows(conn, "scores", scores)
        if n < CHUNK_ROWS:
            return loaded[0], loaded[1]


def seed(plan: SeedPlan, engine: Engine, sources: Sequence[Source] | None = None) -> SeedReport:
    """Return what was seeded after loading ``plan`` into an empty, migrated database.

    The plan's model version is registered and made active, rollups are rebuilt from the scores, and the
    alert rules are evaluated at ``plan.evaluate_at`` (so alert states and events are real outcomes).
    """
    from pipeline.alerts import evaluate

    sources = list(sources) if sources is not None else load_sources(DEFAULT_SOURCES)
    companies = watchlist_companies()
    with engine.begin() as conn:
        states = store.upsert_sources(conn, sources)
        store.register_model_version(conn, plan.version, "synthetic seed", None, simulated_metrics(plan.seed))
        store.activate_model_version(conn, plan.version)
    names = [s.name for s in sources]
    ids = [states[name].id for name in names]
    n_articles, n_scores = _copy_chunks(engine, _rows(plan, ids, names, companies))
    with engine.begin() as conn:
        store.sync_article_ids(conn)
        store.analyze_tables(conn)
    written = rollups.rebuild_rollups(engine, plan.version)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        store.vacuum_analyze(conn, ["articles", "scores", "rollups_hourly"])
    report = SeedReport(plan.version, len(sources), n_articles, n_scores, sum(written.values()))
    for moment in plan.evaluate_at:
        report.firing_after.append(evaluate(moment, engine=engine).firing)
    return report
