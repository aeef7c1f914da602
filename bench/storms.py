"""Storm recall, end to end: does finsent email the desk when a ticker's news turns sour, and how soon?

A seeded month of news for synthetic tickers (background at a few stories a day, ~20 % negative;
syndicated copies on other feeds; positive-volume decoys; negative storms of several sizes and
lengths, each >= 70 % negative, their stories densest at the start) is written from labeled news
sentences, served from a loopback feed server and run through the real ``finsent ingest``,
``finsent score`` and ``finsent backtest``. The same stream is then replayed with the gold labels in
place of the model's (the oracle), so what the model misses and what the rules miss are told apart.

    python bench/storms.py --json                      # 32 tickers x 30 days, SENTiVENT storm texts
    python bench/storms.py --texts train --seed 1      # texts from the training news (for tuning rules)
    python bench/storms.py --rules my_rules.yaml --model DIR --json

Texts: ``eval`` (default) writes storms from SENTiVENT's negative sentences and the background from
SENTiVENT plus the held-out SEntFiN/FinEntity rows, none of which any recipe trains on; ``train``
uses the training part of SEntFiN/FinEntity, so rules can be tuned without reading evaluation data.
The last line is one JSON object: recall, false_per_ticker_month, median_latency_h, flaps,
decoy_alerts and the same under ``oracle``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypedDict

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch_db import drop_database, fresh_database

H = timedelta(hours=1)
SOURCES = ("wire-one", "markets-daily", "street-desk", "ticker-tape", "capital-news")
ORACLE = "oracle-gold-labels"
# (stories, hours): small and large, short and long storms.
STORM_SHAPES = (
    (6, 3), (8, 6), (12, 6), (10, 12), (16, 12), (12, 24),
    (20, 24), (6, 2), (8, 4), (14, 8), (24, 24), (9, 6),
)  # fmt: skip
BACKGROUND_MIX = {"negative": 0.2, "neutral": 0.45, "positive": 0.35}
SYLLABLES = ("ar", "vo", "ni", "qu", "te", "lo", "mex", "dra", "sil", "ven", "cor", "pha", "ly", "tri", "zen")


@dataclass
class Story:
    ticker: str
    at: datetime
    label: str
    text: str
    kind: str  # background | storm | decoy
    copies: int = 0


@dataclass
class Event:
    """A storm or a decoy on one ticker."""

    ticker: str
    start: datetime
    hours: int
    stories: int
    negative: int
    baseline_per_day: float

    @property
    def end(self) -> datetime:
        return self.start + self.hours * H


class StormOutcome(TypedDict):
    """How one storm went under one set of scores: a row of the JSON's ``per_storm``."""

    ticker: str
    stories: int
    hours: int
    negative_share: float
    volume_ratio: float
    caught: bool
    latency_h: float | None
    episodes: int
    flaps: int


@dataclass
class Stream:
    now: datetime
    start: datetime
    tickers: dict[str, str]  # ticker -> company name
    rates: dict[str, float]
    stories: list[Story] = field(default_factory=list)
    storms: list[Event] = field(default_factory=list)
    decoys: list[Event] = field(default_factory=list)


def text_pools(data_dir: Path, texts: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Return (storm pools, background pools): label -> sentences."""
    from models.data import load_news_eval, news_splits
    from models.labels import SENTIMENT_NAMES

    def by_label(rows: list) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {n: [] for n in SENTIMENT_NAMES}
        for e in rows:
            out[SENTIMENT_NAMES[e.sentiment]].append(" ".join(e.text.split())[:300])
        return out

    parts = news_splits(data_dir).values()
    if texts == "eval":
        sentivent = load_news_eval(data_dir)
        return by_label(sentivent), by_label(sentivent + [e for _, held in parts for e in held])
    fit = [e for rows, _ in parts for e in rows]
    return by_label(fit), by_label(fit)


class Drawer:
    """Draws sentences of a label without replacement until a pool runs out, then with replacement."""

    def __init__(self, pools: dict[str, list[str]], rng: np.random.Generator) -> None:
        self.rng = rng
        self.pools = {k: list(rng.permutation(v)) for k, v in pools.items()}
        self.used: dict[str, int] = dict.fromkeys(pools, 0)

    def __call__(self, label: str) -> str:
        pool = self.pools[label]
        i = self.used[label]
        self.used[label] += 1
        return str(pool[i] if i < len(pool) else pool[int(self.rng.integers(len(pool)))])


def company_names(n: int, rng: np.random.Generator) -> dict[str, str]:
    names: dict[str, str] = {}
    while len(names) < n:
        name = "".join(rng.choice(SYLLABLES, size=3)).capitalize()
        ticker = ("Z" + name[:3]).upper()  # Z...: no real listing the watchlist knows
        if ticker not in names:
            names[ticker] = f"{name} Corp"
    return names


def hourly_weights(hours: int) -> np.ndarray:
    """Return how news volume is spread over hours: business hours busiest, weekends quiet.

    The week is counted from the stream's first hour (a Monday midnight of its own), not the wall
    clock, so the same seed gives the same stream whatever hour the benchmark runs.
    """
    w = np.empty(hours)
    for h in range(hours):
        hour, weekday = h % 24, (h // 24) % 7
        w[h] = (3.0 if 12 <= hour < 22 else 1.0) * (0.35 if weekday >= 5 else 1.0)
    return w / w.mean()


def build_stream(args: argparse.Namespace, data_dir: Path) -> Stream:
    rng = np.random.default_rng(args.seed)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    hours = args.days * 24
    start = now - hours * H
    tickers = company_names(args.tickers, rng)
    rates = {t: float(rng.uniform(2.0, 6.0)) for t in tickers}
    storm_pools, background_pools = text_pools(data_dir, args.texts)
    draw_storm, draw_bg = Drawer(storm_pools, rng), Drawer(background_pools, rng)
    stream = Stream(now, start, tickers, rates)
    weights = hourly_weights(hours)
    labels, mix = list(BACKGROUND_MIX), list(BACKGROUND_MIX.values())
    for ticker, per_day in rates.items():
        counts = rng.poisson(per_day / 24 * weights)
        for h in np.nonzero(counts)[0]:
            for _ in range(int(counts[h])):
                label = str(rng.choice(labels, p=mix))
                at = start + int(h) * H + timedelta(minutes=int(rng.integers(60)))
                stream.stories.append(Story(ticker, at, label, draw_bg(label), "background"))
    # Storms and decoys start after the first 16 days: the rules' baselines (14 d + 1 d gap) are full.
    order = list(rng.permutation(list(tickers)))
    first = 16 * 24
    for i, (n, length) in enumerate(STORM_SHAPES[: args.storms]):
        ticker = order[i]
        begin = start + int(rng.integers(first, hours - length - 6)) * H
        negative = round(float(n * rng.uniform(0.7, 0.9)))
        event = Event(ticker, begin, length, n, negative, rates[ticker])
        stream.storms.append(event)
        for j in range(n):
            label = "negative" if j < negative else str(rng.choice(["neutral", "positive"]))
            # News breaks, then follow-ups thin out: intensity falls linearly to the storm's end.
            at = begin + timedelta(minutes=int(rng.beta(1.0, 2.0) * length * 60))
            text = draw_storm(label) if label == "negative" else draw_bg(label)
            stream.stories.append(Story(ticker, at, label, text, "storm"))
    for i in range(args.decoys):
        ticker = order[args.storms + i]
        begin = start + int(rng.integers(first, hours - 12)) * H
        n = 8
        event = Event(ticker, begin, 6, n, 0, rates[ticker])
        stream.decoys.append(event)
        for j in range(n):
            label = "positive" if j < 7 else "neutral"
            at = begin + timedelta(minutes=int(rng.integers(6 * 60)))
            stream.stories.append(Story(ticker, at, label, draw_bg(label), "decoy"))
    for story in stream.stories:
        story.copies = int(rng.choice([0, 1, 2], p=[0.7, 0.2, 0.1]))
    stream.stories.sort(key=lambda s: s.at)
    return stream


def headline(stream: Stream, story: Story) -> str:
    """Return the title a story is published under (and the key its gold label is found by)."""
    return f"{stream.tickers[story.ticker]} (${story.ticker}): {story.text}"


def feeds(stream: Stream) -> dict[str, list]:
    """Return the items of each source: every story once on one source, plus its syndicated copies."""
    from pipeline.demo.feeds import FeedItem

    rng = np.random.default_rng(0)
    items: dict[str, list] = {s: [] for s in SOURCES}
    for n, story in enumerate(stream.stories):
        title = headline(stream, story)
        picks = rng.choice(len(SOURCES), size=1 + story.copies, replace=False)
        for c, pick in enumerate(picks):
            source = SOURCES[int(pick)]
            at = story.at + timedelta(minutes=7 * c)
            link = f"https://{source}.example/{story.ticker.lower()}/{n}"
            items[source].append(FeedItem(title, link, "", stream.now - at))
    return items


def finsent(args: list[str], env: dict[str, str]) -> dict:
    """Return the JSON last line of a ``finsent`` command run in its own process."""
    code = "from pipeline.cli import app; app()"
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"finsent {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_oracle(db_url: str, stream: Stream) -> int:
    """Store the gold labels as the scores of a version of their own, with its rollups; return how many."""
    from pipeline import store
    from pipeline.scoring import rollups
    from pipeline.store import db

    engine = db.get_engine(db_url)
    label_of = {headline(stream, s): s.label for s in stream.stories}
    with engine.begin() as conn:
        store.register_model_version(conn, ORACLE, "gold labels", None, None)
    written, after = 0, 0
    while True:
        with engine.connect() as conn:
            rows = store.pending_articles(conn, ORACLE, after, 2000, 0)
        if not rows:
            break
        after = rows[-1].id
        scores = []
        for a in rows:
            label = label_of.get(a.title, "neutral")
            probs = {n: float(n == label) for n in ("negative", "neutral", "positive")}
            scores.append(
                store.ScoreRow(
                    a.id, "Company | Product News", {}, label, probs, probs["positive"] - probs["negative"]
                )
            )
        with engine.begin() as conn:
            ids = store.insert_scores(conn, ORACLE, scores)
            rollups.refresh_buckets(conn, ORACLE, ids)
        written += len(ids)
    db.dispose_engines()
    return written


def judge(episodes: list[dict], stream: Stream, days: float) -> dict:
    """Return recall, latency, flaps, false alerts and decoy alerts of the ticker episodes."""
    ticker_eps = [e for e in episodes if e["dimension"] == "ticker" and e["value"] in stream.tickers]
    fired = [(e, datetime.fromisoformat(e["fired_at"])) for e in ticker_eps]
    matched: set[int] = set()
    per_storm: list[StormOutcome] = []
    for s in stream.storms:
        mine = [
            (i, t)
            for i, (e, t) in enumerate(fired)
            if e["value"] == s.ticker and s.start <= t <= s.end + 12 * H
        ]
        matched.update(i for i, _ in mine)
        first = min((t for _, t in mine), default=None)
        caught = first is not None and first <= s.end + 6 * H
        per_storm.append(
            {
                "ticker": s.ticker,
                "stories": s.stories,
                "hours": s.hours,
                "negative_share": round(s.negative / s.stories, 2),
                "volume_ratio": round((s.stories / s.hours) / (s.baseline_per_day / 24), 1),
                "caught": caught,
                "latency_h": round((first - s.start) / H, 1) if caught and first else None,
                "episodes": len(mine),
                # A flap: one rule firing again on the storm after it resolved.
                "flaps": len(mine) - len({fired[i][0]["rule"] for i, _ in mine}),
            }
        )
    decoy_alerts, decoy_rules = 0, []
    for d in stream.decoys:
        hits = [
            i for i, (e, t) in enumerate(fired) if e["value"] == d.ticker and d.start <= t <= d.end + 12 * H
        ]
        decoy_alerts += len(hits)
        decoy_rules += [fired[i][0]["rule"] for i in hits]
        matched.update(hits)
    false = len(fired) - len(matched) + decoy_alerts
    latencies = [p["latency_h"] for p in per_storm if p["latency_h"] is not None]
    return {
        "recall": round(sum(p["caught"] for p in per_storm) / max(1, len(per_storm)), 3),
        "false_per_ticker_month": round(false / (len(stream.tickers) * days / 30), 3),
        "median_latency_h": round(statistics.median(latencies), 1) if latencies else None,
        "flaps": sum(p["flaps"] for p in per_storm),
        "decoy_alerts": decoy_alerts,
        "decoy_rules": decoy_rules,
        "false_alerts": false,
        "other_alerts": len(episodes) - len(ticker_eps),
        "storms": per_storm,
    }


def storm_negative_recall(stream: Stream, model: str | None) -> float:
    """Return the share of the storms' negative stories the model calls negative (what it reads)."""
    from models.inference import load

    texts = [headline(stream, s) for s in stream.stories if s.kind == "storm" and s.label == "negative"]
    predictions = load(model).predict(texts) if texts else []
    return round(sum(p.sentiment == "negative" for p in predictions) / max(1, len(texts)), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--tickers", type=int, default=32)
    parser.add_argument("--storms", type=int, default=len(STORM_SHAPES))
    parser.add_argument("--decoys", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--texts", choices=("eval", "train"), default="eval")
    parser.add_argument("--rules", type=Path, default=None, help="Alert rules file (default: shipped).")
    parser.add_argument("--model", default=None, help="Model dir (default: shipped).")
    parser.add_argument("--database-url", default=None, help="Server for the scratch database.")
    parser.add_argument("--json", action="store_true", help="End with one JSON line.")
    args = parser.parse_args()
    if args.days < 20 or args.tickers < args.storms + args.decoys:
        parser.error("need >= 20 days and more tickers than storms + decoys")
    from pipeline.config import Settings
    from pipeline.demo.feedserver import FeedServer

    data_dir = Settings().data_dir
    if data_dir is None:
        parser.error("set FINSENT_DATA_DIR (the labeled news texts)")
    started = time.monotonic()
    stream = build_stream(args, Path(data_dir))
    items = feeds(stream)
    with tempfile.TemporaryDirectory() as tmp, FeedServer() as server:
        from pipeline.demo.feeds import rss_document

        lines = []
        for source, source_items in items.items():
            body = rss_document(source, f"https://{source}.example/", source_items, stream.now)
            lines.append(f"- {{name: {source}, url: '{server.add(f'/{source}.xml', body)}'}}")
        sources = Path(tmp) / "sources.yaml"
        sources.write_text("\n".join(lines) + "\n")
        db_url, embedded = fresh_database(args.database_url, Path(tmp))
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "FINSENT_ALLOWED_HOSTS": server.host,  # the loopback feed server, nothing else private
            "FINSENT_HOME": tmp,
        }
        if args.rules:
            env["FINSENT_ALERT_RULES"] = str(args.rules.resolve())
        try:
            ingested = finsent(["ingest", "--sources", str(sources), "--json"], env)
            score_args = ["score", "--json"] + (["--model", args.model] if args.model else [])
            scored = finsent(score_args, env)
            window = ["--from", (stream.start + 16 * 24 * H).isoformat(), "--to", stream.now.isoformat()]
            model_run = finsent(["backtest", *window, "--json"], env)
            oracle_scores = write_oracle(db_url, stream)
            oracle_run = finsent(["backtest", *window, "--model-version", ORACLE, "--json"], env)
        finally:
            if embedded is None:
                drop_database(db_url)
    judged_days = args.days - 16
    model = judge(model_run["episodes"], stream, judged_days)
    oracle = judge(oracle_run["episodes"], stream, judged_days)
    result = {
        **{k: v for k, v in model.items() if k != "storms"},
        "storm_negatives_called_negative": storm_negative_recall(stream, args.model),
        "model_version": model_run["model_version"],
        "oracle": {k: v for k, v in oracle.items() if k != "storms"},
        "stream": {
            "tickers": len(stream.tickers),
            "days": args.days,
            "judged_days": judged_days,
            "stories": len(stream.stories),
            "background_negative_share": round(
                np.mean([s.label == "negative" for s in stream.stories if s.kind == "background"]), 3
            ),
            "articles_ingested": ingested.get("items_new"),
            "scored": scored.get("scored"),
            "oracle_scored": oracle_scores,
            "texts": args.texts,
            "seed": args.seed,
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    if not args.json:
        print(f"{'storm':8} {'stories':>7} {'hours':>5} {'neg':>5} {'vol x':>6}  model        oracle")
        for m, o in zip(model["storms"], oracle["storms"], strict=True):

            def cell(p: dict) -> str:
                return f"{p['latency_h']:>5.1f} h" if p["caught"] else "missed "

            print(
                f"{m['ticker']:8} {m['stories']:>7} {m['hours']:>5} {m['negative_share']:>5.0%}"
                f" {m['volume_ratio']:>6}  {cell(m):12} {cell(o)}"
            )
    result["per_storm"] = {"model": model["storms"], "oracle": oracle["storms"]}
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
