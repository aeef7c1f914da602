"""Soak: simulated days of news through the real pipeline: do time, memory and tables stay in line?

Each simulated day, that day's articles are served from a handful of loopback feeds: headlines (with their
lead, where the line has one) from the shared unlabeled news text, syndicated copies of some stories on
other feeds, the tail of each feed's previous day repeated as real feeds do, and, from the second day on,
a negative storm on one watchlist company written from labelled negative headlines. The real
``finsent ingest``, ``finsent score`` and ``finsent alerts --now <end of the day>`` then run, each in its
own process, against a scratch database, with alert emails going to a loopback SMTP server.

Per day it prints articles stored, seconds and throughput of each stage, each stage's peak RSS (the
kernel's high-water mark of its largest process, from wait4, and the sampled peak of its whole process
tree, parse workers included), table sizes and emails received. The last line is one JSON object: totals,
the per-day peak-RSS series and whether they are flat (the last day within 1.25x of the second).

    python bench/soak.py --json                                   # 3 days x 2,000 articles
    python bench/soak.py --days 5 --per-day 20000 --json
    python bench/soak.py --database-url postgresql://... --json   # a fresh database on that server

Each simulated day ages every earlier article's fetch time by a day, as a day of wall-clock time would:
the story index an ingest seeds from the last 72 hours then holds what a daily deployment holds (the two
previous days; ``story_window`` per day), not every article of the run just because it was fetched
minutes ago.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import sqlalchemy as sa
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch_db import drop_database, fresh_database
from pipeline.demo.feeds import FeedItem, rss_document

DAY = timedelta(days=1)
# Headline files of the unlabeled set (see its MANIFEST.md), read in turn: titles, and headlines with leads.
TEXT_FILES = (
    "reuters_news_titles_2007_2016.txt.gz",
    "financial_news_headlines_2017_2020.txt.gz",
    "reuters_headline_lead_2006_2013.txt.gz",
)
COPIES, COPIES_P = [0, 1, 2], [0.75, 0.2, 0.05]  # syndicated copies of a story on other feeds
OVERLAP = 20  # items of a feed's previous day it serves again
STORM_HOURS = 4
TABLES = ("articles", "scores", "rollups_hourly", "fetch_log")
STAGES = ("ingest", "score", "alerts")
FLAT_RATIO = 1.25
CLI = "from pipeline.cli import app; app()"


@dataclass
class Story:
    title: str
    summary: str
    at: datetime
    copies: int


@dataclass
class Stage:
    """One finished stage process: its wall seconds, peak RSS figures and last JSON line."""

    seconds: float
    peak_rss_mb: float
    tree_peak_rss_mb: float
    result: dict[str, Any]


@dataclass
class Day:
    number: int
    end: datetime
    articles: int = 0
    items_seen: int = 0
    story_window: int = 0
    stages: dict[str, Stage] = field(default_factory=dict)
    tables_mb: dict[str, float] = field(default_factory=dict)
    emails: int = 0
    alerts_firing: int = 0

    def as_dict(self) -> dict[str, Any]:
        ingest, score = self.stages["ingest"], self.stages["score"]
        return {
            "day": self.number,
            "end": self.end.isoformat(),
            "articles": self.articles,
            "items_seen": self.items_seen,
            "story_window": self.story_window,
            "seconds": {k: round(s.seconds, 2) for k, s in self.stages.items()},
            "ingest_articles_per_s": round(self.articles / ingest.seconds, 1),
            "score_articles_per_s": round(score.result.get("scored", 0) / score.seconds, 1),
            # Inside the score process: the model's share, and the run without start-up and model load.
            "score_predict_s": score.result.get("predict_seconds"),
            "score_run_s": score.result.get("seconds"),
            "peak_rss_mb": {k: round(s.peak_rss_mb, 1) for k, s in self.stages.items()},
            "tree_peak_rss_mb": {k: round(s.tree_peak_rss_mb, 1) for k, s in self.stages.items()},
            "tables_mb": self.tables_mb,
            "emails": self.emails,
            "alerts_firing": self.alerts_firing,
        }


def text_lines(data_dir: Path) -> Iterator[tuple[str, str]]:
    """Yield (headline, lead) pairs from the unlabeled files in turn, until every file is used up."""

    def one(path: Path) -> Iterator[tuple[str, str]]:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                cut = line.find(". ")
                if 15 <= cut <= 250:
                    yield line[:cut], line[cut + 2 : cut + 500]
                elif len(line) >= 15:
                    yield line[:250], ""

    readers = [one(data_dir / "unlabeled" / name) for name in TEXT_FILES]
    while readers:
        for reader in list(readers):
            pair = next(reader, None)
            if pair is None:
                readers.remove(reader)
            else:
                yield pair


def negative_headlines(data_dir: Path) -> list[str]:
    """Return the negative headlines of the labelled set that training may use (SEntFiN)."""
    with open(data_dir / "headlines" / "sentfin.csv", encoding="utf-8", newline="") as fh:
        return [row["text"] for row in csv.DictReader(fh) if row["label"] == "negative"]


def watchlist_companies() -> list[str]:
    """Return the name each watchlist company is most plainly written under (an alias no common word)."""
    from pipeline.config import Settings

    entries = yaml.safe_load(Path(Settings().watchlist).read_text(encoding="utf-8"))
    names = []
    for e in entries:
        if e.get("kind") == "company":
            plain = [a for a in e.get("aliases", []) if a not in e.get("common", [])]
            names.append(plain[0] if plain else e["name"])
    return names


def day_stories(
    day: int,
    end: datetime,
    per_day: int,
    lines: Iterator[tuple[str, str]],
    storm: tuple[str, list[str]] | None,
    rng: np.random.Generator,
) -> list[Story]:
    """Return one day's stories: business hours busiest, a storm in its last hours; about ``per_day``
    articles once syndicated copies are counted."""
    weights = np.array([3.0 if 12 <= h < 22 else 1.0 for h in range(24)])
    weights /= weights.sum()
    start = end - DAY
    stories: list[Story] = []
    articles = 0
    if storm is not None:
        company, pool = storm
        count = max(6, per_day // 400)
        for i in range(count):
            at = end - timedelta(minutes=int(rng.integers(10, STORM_HOURS * 60)))
            text = pool[(day * count + i) % len(pool)]
            stories.append(Story(f"{company}: {text}", "", at, int(rng.choice(COPIES, p=COPIES_P))))
            articles += 1 + stories[-1].copies
    while articles < per_day:
        title, lead = next(lines)
        hour = int(rng.choice(24, p=weights))
        at = start + timedelta(hours=hour, minutes=int(rng.integers(60)))
        copies = min(int(rng.choice(COPIES, p=COPIES_P)), per_day - articles - 1)
        stories.append(Story(title, lead, at, copies))
        articles += 1 + copies
    return stories


def feed_items(
    day: int, end: datetime, stories: list[Story], feeds: list[str], rng: np.random.Generator
) -> dict[str, list[FeedItem]]:
    """Return each feed's items of the day: every story once, and its copies on other feeds."""
    items: dict[str, list[FeedItem]] = {f: [] for f in feeds}
    for n, story in enumerate(stories):
        picks = rng.choice(len(feeds), size=1 + story.copies, replace=False)
        for c, pick in enumerate(picks):
            at = min(story.at + timedelta(minutes=7 * c), end - timedelta(minutes=1))
            link = f"https://{feeds[int(pick)]}.example/{day}/{n}"
            items[feeds[int(pick)]].append(FeedItem(story.title, link, story.summary, end - at))
    for feed in items.values():
        feed.sort(key=lambda item: item.age)  # newest first, as feeds list them
    return items


def run_stage(args: list[str], env: dict[str, str], workdir: Path) -> Stage:
    """Run one ``finsent`` command in its own process; return its seconds, peak RSS and JSON last line.

    The peak is the kernel's high-water mark of the command's largest process (wait4's ru_maxrss,
    children it waited for included); a sampler adds up the whole process tree every 50 ms.
    """
    out_path, err_path = workdir / "stage.out", workdir / "stage.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", CLI, *args], env=env, stdout=out, stderr=err)
        tree_peak = [0]
        done = threading.Event()

        def sample() -> None:
            try:
                root = psutil.Process(proc.pid)
                while not done.is_set():
                    rss = root.memory_info().rss
                    for child in root.children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            rss += child.memory_info().rss
                    tree_peak[0] = max(tree_peak[0], rss)
                    done.wait(0.05)
            except psutil.Error:
                return  # the process ended between two samples

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    if proc.returncode != 0:
        tail = err_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"finsent {' '.join(args)} failed ({proc.returncode}):\n{tail}")
    last = out_path.read_text(errors="replace").strip().splitlines()[-1]
    peak = usage.ru_maxrss / 1024  # KiB on Linux
    return Stage(seconds, peak, max(peak, tree_peak[0] / 2**20), json.loads(last))


def table_sizes(engine: sa.Engine) -> dict[str, float]:
    with engine.connect() as conn:
        return {
            t: round(
                conn.execute(sa.text("SELECT pg_total_relation_size(:t)"), {"t": t}).scalar_one() / 2**20, 2
            )
            for t in TABLES
        }


def flat(series: list[float]) -> bool | None:
    """Return whether the last day's peak is within FLAT_RATIO of the second day's (None: < 2 days)."""
    return None if len(series) < 2 else series[-1] <= FLAT_RATIO * series[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--per-day", type=int, default=2000, help="Articles per simulated day.")
    parser.add_argument("--feeds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="Model dir (default: shipped).")
    parser.add_argument("--database-url", default=None, help="Server for the scratch database.")
    parser.add_argument("--json", action="store_true", help="End with one JSON line.")
    args = parser.parse_args()
    if args.days < 1 or args.per_day < 10 or not 2 <= args.feeds <= 500:
        parser.error("need --days >= 1, --per-day >= 10 and 2 <= --feeds <= 500")
    from pipeline.config import Settings
    from pipeline.demo.feedserver import FeedServer
    from pipeline.demo.history import DemoMailbox
    from pipeline.store.db import migrate

    # The embedded server's package warns when XDG_RUNTIME_DIR is unset (containers): noise here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    settings = Settings()
    if settings.data_dir is None:
        parser.error("set FINSENT_DATA_DIR (the shared unlabeled news text and labelled headlines)")
    data_dir = Path(settings.data_dir)
    rng = np.random.default_rng(args.seed)
    lines = text_lines(data_dir)
    storm_pool = negative_headlines(data_dir)
    companies = watchlist_companies()
    feeds = [f"desk{i:02d}" for i in range(args.feeds)]
    last_end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    ends = [last_end - (args.days - 1 - d) * DAY for d in range(args.days)]
    started = time.monotonic()
    days: list[Day] = []
    with tempfile.TemporaryDirectory() as tmp, FeedServer() as server, DemoMailbox() as mailbox:
        workdir = Path(tmp)
        sources = workdir / "sources.yaml"
        sources.write_text("".join(f"- {{name: {f}, url: '{server.url}/{f}.xml'}}\n" for f in feeds))
        db_url, embedded = fresh_database(args.database_url, workdir)
        keep = {k: v for k, v in os.environ.items() if not k.startswith("FINSENT_SMTP")}
        env = keep | {
            "DATABASE_URL": db_url,
            "FINSENT_HOME": tmp,
            "FINSENT_ALLOWED_HOSTS": server.host,  # the loopback feed server, nothing else private
            "FINSENT_SMTP_HOST": "127.0.0.1",
            "FINSENT_SMTP_PORT": str(mailbox.port),
            "FINSENT_ALERT_TO": "desk@example.com",
            "FINSENT_ALERT_FROM": "finsent@soak.example",
        }
        engine = sa.create_engine(db_url)
        migrate(engine)  # before the first day, so the bench can read the tables from the start
        tails: dict[str, list[FeedItem]] = {f: [] for f in feeds}
        try:
            for d, end in enumerate(ends):
                day = Day(d + 1, end)
                storm = (companies[d % len(companies)], storm_pool) if d else None
                stories = day_stories(d, end, args.per_day, lines, storm, rng)
                for feed, items in feed_items(d, end, stories, feeds, rng).items():
                    # Yesterday's tail, re-dated from today's end: the same links, so duplicates.
                    shifted = [FeedItem(i.title, i.link, i.summary, i.age + DAY) for i in tails[feed]]
                    body = rss_document(feed, f"https://{feed}.example/", items + shifted, end)
                    if len(body) > settings.max_body_bytes:
                        parser.error(f"{len(body):,}-byte feeds pass FINSENT_MAX_BODY_BYTES: add --feeds")
                    server.add(f"/{feed}.xml", body)
                    tails[feed] = items[:OVERLAP]
                with engine.begin() as conn:  # a day has passed for what earlier days fetched
                    conn.execute(sa.text("UPDATE articles SET fetched_at = fetched_at - :day"), {"day": DAY})
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.execute(sa.text("VACUUM articles"))  # the update's old row versions: not table size
                with engine.connect() as conn:  # what this ingest's story index seeds from
                    day.story_window = conn.execute(
                        sa.text("SELECT count(*) FROM articles WHERE fetched_at >= :s OR published_at >= :s"),
                        {"s": datetime.now(UTC) - timedelta(hours=72)},
                    ).scalar_one()
                day.stages["ingest"] = run_stage(
                    ["ingest", "--sources", str(sources), "--json"], env, workdir
                )
                day.articles = day.stages["ingest"].result["items_new"]
                day.items_seen = day.stages["ingest"].result["items_seen"]
                score = ["score", "--json"] + (["--model", args.model] if args.model else [])
                day.stages["score"] = run_stage(score, env, workdir)
                sent_before = len(mailbox.messages)
                day.stages["alerts"] = run_stage(["alerts", "--now", end.isoformat(), "--json"], env, workdir)
                day.alerts_firing = day.stages["alerts"].result.get("firing", 0)
                day.emails = len(mailbox.messages) - sent_before
                day.tables_mb = table_sizes(engine)
                days.append(day)
                s = day.as_dict()
                print(
                    f"day {day.number}/{args.days} (to {end:%Y-%m-%d %H:%M}): {day.articles:,} stored"
                    f" of {day.items_seen:,} seen"
                    + "".join(
                        f" | {k} {s['seconds'][k]:.1f} s, {s['peak_rss_mb'][k]:.0f} MB"
                        f" (tree {s['tree_peak_rss_mb'][k]:.0f})"
                        for k in STAGES
                    )
                    + f" | {s['ingest_articles_per_s']:.0f}/s in, {s['score_articles_per_s']:.0f}/s scored"
                    f" | {day.emails} emails | MB: "
                    + ", ".join(f"{t} {mb:.1f}" for t, mb in day.tables_mb.items()),
                    flush=True,
                )
        finally:
            engine.dispose()
            if embedded is None:
                drop_database(db_url)
    per_day = [d.as_dict() for d in days]
    series = {k: [d["peak_rss_mb"][k] for d in per_day] for k in STAGES}
    totals = {k: sum(d.stages[k].seconds for d in days) for k in STAGES}
    articles = sum(d.articles for d in days)
    scored = sum(d.stages["score"].result.get("scored", 0) for d in days)
    rss_flat = {k: flat(v) for k, v in series.items()}
    result = {
        "days": args.days,
        "per_day": args.per_day,
        "feeds": args.feeds,
        "articles": articles,
        "scored": scored,
        "emails": sum(d.emails for d in days),
        "stage_seconds": {k: round(v, 1) for k, v in totals.items()},
        "ingest_articles_per_s": round(articles / totals["ingest"], 1),
        "score_articles_per_s": round(scored / totals["score"], 1),
        # The model alone (the score processes' predict time): what a longer run's scoring would cost.
        "predict_articles_per_s": round(
            scored / sum(d.stages["score"].result["predict_seconds"] for d in days), 1
        ),
        "peak_rss_mb": series,
        "tree_peak_rss_mb": {k: [d["tree_peak_rss_mb"][k] for d in per_day] for k in STAGES},
        "rss_flat": rss_flat,
        "flat": None if args.days < 2 else all(bool(v) for v in rss_flat.values()),
        "tables_mb": days[-1].tables_mb,
        "story_window": [d.story_window for d in days],
        "seconds": round(time.monotonic() - started, 1),
        "per_day_report": per_day,
    }
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(
            f"{articles:,} articles in {args.days} days: ingest {result['ingest_articles_per_s']}/s, score"
            f" {result['score_articles_per_s']}/s; peak RSS flat: {result['flat']}; {result['seconds']} s"
        )


if __name__ == "__main__":
    main()
