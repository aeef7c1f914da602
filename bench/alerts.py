"""Alert evaluation benchmark: every default rule over 1,000 dimension values x 30 days of hourly rollups.

Writes the rollups into a fresh database (every value has a row every hour: the worst case for the window
sums), then times ``alerts.evaluate`` at the last hours of the history (goal: <= 2 s on 2 cores), and a
7-day hourly backtest over the same rows. A few tickers carry a negative storm at the end, so the timed
evaluations also transition alerts and queue emails.

    python bench/alerts.py --json                       # 1,000 values x 30 days, embedded PostgreSQL
    python bench/alerts.py --values 200 --days 20 --json
    python bench/alerts.py --database-url postgresql://... --json   # a fresh database on that server
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch_db import drop_database, fresh_database

H = timedelta(hours=1)
VERSION = "bench"


def dimension_values(total: int) -> list[tuple[str, str]]:
    """Return ``total`` (dimension, value) pairs: all, 20 topics, 5% sources, the rest tickers."""
    topics = min(20, max(0, total - 1))
    sources = max(0, min(total - 1 - topics, total // 20))
    tickers = total - 1 - topics - sources
    return (
        [("all", "*")]
        + [("topic", f"topic{i:02d}") for i in range(topics)]
        + [("source", f"source{i:03d}") for i in range(sources)]
        + [("ticker", f"TK{i:04d}") for i in range(tickers)]
    )


def rollup_rows(values: list[tuple[str, str]], start: datetime, hours: int, seed: int = 0):
    """Yield (dimension, value, bucket, stories, neg_stories) for every value and hour; storms at the end."""
    rng = np.random.default_rng(seed)
    scale = {"all": 40.0, "topic": 4.0, "source": 2.0, "ticker": 0.6}
    for n, (dim, value) in enumerate(values):
        stories = rng.poisson(scale[dim], hours) + 1  # >= 1: a row in every bucket
        neg = rng.binomial(stories, 0.25)
        if dim == "ticker" and n % 100 == 7:  # one ticker in a hundred: a storm in the last 6 hours
            stories[-6:] += 5
            neg[-6:] = stories[-6:] - 1
        for h in range(hours):
            yield dim, value, start + h * H, int(stories[h]), int(neg[h])


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--values", type=int, default=1000, help="dimension values (all, topics, sources, tickers)"
    )
    parser.add_argument("--days", type=int, default=30, help="days of hourly rollups")
    parser.add_argument("--runs", type=int, default=3, help="timed evaluations (one per last hour)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="server to create a fresh database on (default: a new embedded PostgreSQL)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)

    from pipeline import store
    from pipeline.alerts.backtest import backtest
    from pipeline.alerts.engine import evaluate
    from pipeline.alerts.rules import load_rules
    from pipeline.config import Settings
    from pipeline.store import db

    rules = load_rules(settings=Settings())
    values = dimension_values(args.values)
    hours = args.days * 24
    start = datetime(2026, 10, 1, tzinfo=UTC)
    end = start + hours * H
    with tempfile.TemporaryDirectory(prefix="finsent-bench-") as tmp:
        url, server = fresh_database(args.database_url, Path(tmp))
        try:
            engine = db.get_engine(url)
            db.migrate(engine)
            settings = Settings(database_url=url, home=Path(tmp))
            load_started = time.perf_counter()
            rows = 0
            batch: list[tuple[str, str, datetime, int, int]] = []
            with engine.begin() as conn:
                store.register_model_version(conn, VERSION, "bench", None, None)
                store.activate_model_version(conn, VERSION)
                for row in rollup_rows(values, start, hours):
                    batch.append(row)
                    if len(batch) == 50_000:
                        rows += store.write_story_counts(conn, VERSION, batch)
                        batch.clear()
                rows += store.write_story_counts(conn, VERSION, batch)
            with engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE rollups_hourly")
                conn.commit()
            load_seconds = time.perf_counter() - load_started

            timings, reports = [], []
            for k in range(args.runs, 0, -1):
                now = end - (k - 1) * H
                t0 = time.perf_counter()
                reports.append(evaluate(now, engine=engine, rules=rules, settings=settings))
                timings.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            replay = backtest(end - 7 * 24 * H, end, engine=engine, rules=rules)
            backtest_seconds = time.perf_counter() - t0
        finally:
            db.dispose_engines()
            if server is not None:
                server.cleanup()
            else:
                drop_database(url)

    last = reports[-1]
    result: dict[str, object] = {
        "values": len(values),
        "days": args.days,
        "rollup_rows": rows,
        "rules": len(rules),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "database": "embedded" if args.database_url is None else "given",
        "load_seconds": round(load_seconds, 2),
        "evaluate_seconds": [round(t, 3) for t in timings],
        "evaluate_seconds_median": round(statistics.median(timings), 3),
        "evaluate_goal_seconds": 2.0,
        "evaluate_within_goal": max(timings) <= 2.0,
        "firing_after_last": last.firing,
        "emails_queued": sum(r.emails_queued for r in reports),
        "backtest_hours": replay.evaluations,
        "backtest_seconds": round(backtest_seconds, 2),
        "backtest_fired": replay.fired,
    }
    if not args.json:
        for key, value in result.items():
            print(f"{key:>26}: {value}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
