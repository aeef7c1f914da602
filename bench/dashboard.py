"""Dashboard query benchmark: p50/p95 of every page's queries at 1M and 10M scored articles.

Seeds a fresh database per size with ``pipeline.seed`` (a year of synthetic but realistic history: the
shipped feeds, watchlist companies, syndicated copies, two storms; COPY, then the real rollup rebuild and
alert evaluation), then runs each page's queries the way a page load does, uncached (the dashboard's
``st.cache_data`` would hide repeats), on a read-only session as the dashboard opens it.
Goal: p95 <= 100 ms per query at 10M articles on 2 cores.

    python bench/dashboard.py --json                          # 1M and 10M, embedded PostgreSQL
    python bench/dashboard.py --rows 200000 --json            # smaller, e.g. on a busy machine
    python bench/dashboard.py --database-url postgresql://... --json   # a fresh database on that server
    python bench/dashboard.py --existing postgresql://.../db --json      # time an already seeded database
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch_db import drop_database, fresh_database

GOAL_P95_MS = 100.0


def page_queries(version: str, now: datetime) -> dict[str, dict[str, Callable[[Any], Any]]]:
    """Return ``{page: {query: fn(conn)}}``: what each page runs on a load with its default filters
    (plus the common filtered variants)."""
    from pipeline import store

    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    two_weeks = day - timedelta(days=13)
    week = day - timedelta(days=6)
    end = now + timedelta(minutes=1)
    storm_start = now - timedelta(hours=8)
    top_topics = (
        "Company | Product News",
        "Earnings",
        "Stock Movement",
        "Markets",
        "General News | Opinion",
        "Stock Commentary",
    )
    return {
        "overview": {
            "filter_values_30d": lambda c: store.dashboard_filter_values(
                c, version, now - timedelta(days=30)
            ),
            "metric_row": lambda c: store.headline_figures(
                c, version, day, now - timedelta(hours=24), now - timedelta(days=15), now
            ),
            "firing_alerts": store.alert_status_counts,
            "index_top_topics_14d": lambda c: store.rollup_series(
                c, version, "topic", top_topics, two_weeks, end, "day"
            ),
            "heatmap_topics_14d": lambda c: store.rollup_series(
                c, version, "topic", None, two_weeks, end, "day"
            ),
            "volume_all_14d": lambda c: store.rollup_series(c, version, "all", None, two_weeks, end, "day"),
            "index_tickers_14d": lambda c: store.rollup_series(
                c, version, "ticker", ("NVDA", "AAPL"), two_weeks, end, "day"
            ),
            "volume_sources_14d": lambda c: store.rollup_series(
                c, version, "source", ("wsj-markets", "cnbc-earnings"), two_weeks, end, "day"
            ),
            "heatmap_topics_90d": lambda c: store.rollup_series(
                c, version, "topic", None, day - timedelta(days=89), end, "day"
            ),
        },
        "alerts": {
            "timeline_14d": lambda c: store.alert_timeline(c, two_weeks, end),
            "evidence_chart": lambda c: store.rollup_series(
                c, version, "ticker", ("NVDA",), storm_start - timedelta(hours=48), end, "hour"
            ),
            "top_stories_ticker_6h": lambda c: store.negative_headlines(
                c, version, "ticker", "NVDA", now - timedelta(hours=6), end, 10
            ),
            "top_stories_all_1h": lambda c: store.negative_headlines(
                c, version, "all", "*", now - timedelta(hours=2), now - timedelta(hours=1), 10
            ),
            "silences": lambda c: store.list_silences(c, now, False),
        },
        "explorer": {
            "latest_7d": lambda c: store.search_stories(c, version, start=week, end=end),
            "text_7d": lambda c: store.search_stories(c, version, start=week, end=end, text="profit warning"),
            "ticker_negative_7d": lambda c: store.search_stories(
                c, version, start=week, end=end, tickers=["AAPL"], sentiments=["negative"]
            ),
            "topic_positive_30d": lambda c: store.search_stories(
                c,
                version,
                start=day - timedelta(days=29),
                end=end,
                topics=["Dividend"],
                sentiments=["positive"],
            ),
            "topic_365d": lambda c: store.search_stories(
                c, version, start=day - timedelta(days=364), end=end, topics=["Earnings"]
            ),
            "text_source_365d": lambda c: store.search_stories(
                c, version, start=day - timedelta(days=364), end=end, text="buyback", sources=["wsj-markets"]
            ),
        },
        "model": {
            "version_history": store.model_version_history,
            "class_totals": lambda c: store.sentiment_totals(c, version),
            "score_histogram": lambda c: store.score_histogram(c, version, 20, 50_000),
        },
    }


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def time_pages(engine: Any, version: str, now: datetime, repeat: int) -> dict[str, Any]:
    """Return per page and query p50/p95 in ms over ``repeat`` page loads (after one warm-up load)."""
    pages = page_queries(version, now)
    samples: dict[str, dict[str, list[float]]] = {p: {q: [] for q in qs} for p, qs in pages.items()}
    page_totals: dict[str, list[float]] = {p: [] for p in pages}
    with engine.connect() as conn:
        for run in range(repeat + 1):
            for page, queries in pages.items():
                total = 0.0
                for name, query in queries.items():
                    started = time.perf_counter()
                    query(conn)
                    elapsed = (time.perf_counter() - started) * 1000
                    conn.rollback()
                    total += elapsed
                    if run:
                        samples[page][name].append(elapsed)
                if run:
                    page_totals[page].append(total)
    result: dict[str, Any] = {}
    for page, page_samples in samples.items():
        result[page] = {
            "page_load_ms": {
                "p50": round(statistics.median(page_totals[page]), 1),
                "p95": round(_percentile(page_totals[page], 0.95), 1),
            },
            "queries": {
                name: {"p50": round(statistics.median(s), 2), "p95": round(_percentile(s, 0.95), 2)}
                for name, s in page_samples.items()
            },
        }
    return result


def run_size(rows: int, days: int, repeat: int, url: str | None, workdir: Path, keep: bool) -> dict[str, Any]:
    """Return seeding and query timings for one database of ``rows`` scored articles."""
    import sqlalchemy as sa

    from pipeline import store
    from pipeline.demo import seed
    from pipeline.store import db

    target, server = fresh_database(url, workdir)
    try:
        engine = db.get_engine(target)
        db.migrate(engine)
        now = datetime.now(UTC)
        plan = seed.demo_plan(rows, days, now=now)
        started = time.perf_counter()
        report = seed.seed(plan, engine)
        seed_s = time.perf_counter() - started
        read_only = sa.create_engine(target, pool_size=1)
        sa.event.listen(read_only, "connect", lambda dbapi, _rec: store.prepare_read_only_session(dbapi))
        timings = time_pages(read_only, plan.version, now.replace(second=0, microsecond=0), repeat)
        with read_only.connect() as conn:
            size = conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
            rollup_rows = conn.execute(sa.text("SELECT count(*) FROM rollups_hourly")).scalar_one()
        read_only.dispose()
        slowest = max(q["p95"] for page in timings.values() for q in page["queries"].values())
        return {
            "rows": rows,
            "articles": report.articles,
            "days": days,
            "rollup_rows": rollup_rows,
            "database_mb": round(size / 2**20),
            "seed_s": round(seed_s, 1),
            "repeat": repeat,
            "pages": timings,
            "slowest_query_p95_ms": slowest,
            "goal_met": slowest <= GOAL_P95_MS,
        }
    finally:
        db.dispose_engines()
        if keep:
            print(f"kept {target}", file=sys.stderr)
        elif server is None:
            drop_database(target)
        elif server is not None:
            server.cleanup()


def time_existing(url: str, repeat: int) -> dict[str, Any]:
    """Return query timings on an already seeded database (e.g. one kept with ``--keep``)."""
    import sqlalchemy as sa

    from pipeline import store

    read_only = sa.create_engine(url, pool_size=1)
    sa.event.listen(read_only, "connect", lambda dbapi, _rec: store.prepare_read_only_session(dbapi))
    with read_only.connect() as conn:
        version = store.dashboard_version(conn)
        articles = conn.execute(sa.text("SELECT count(*) FROM articles")).scalar_one()
        newest = conn.execute(sa.text("SELECT max(published_at) FROM articles")).scalar_one()
    if version is None or newest is None:
        raise SystemExit(f"{url}: nothing seeded")
    # "Now" is the seeded history's end, so the page queries see the same data as on the seeding day.
    now = newest.replace(second=0, microsecond=0) + timedelta(minutes=1)
    timings = time_pages(read_only, version, now, repeat)
    read_only.dispose()
    slowest = max(q["p95"] for page in timings.values() for q in page["queries"].values())
    return {
        "rows": articles,
        "articles": articles,
        "repeat": repeat,
        "pages": timings,
        "slowest_query_p95_ms": slowest,
        "goal_met": slowest <= GOAL_P95_MS,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows",
        default="1000000,10000000",
        help="comma-separated scored-article counts, one database each (default 1M,10M)",
    )
    parser.add_argument("--days", type=int, default=365, help="days of history the articles spread over")
    parser.add_argument("--repeat", type=int, default=20, help="timed page loads per size")
    parser.add_argument("--database-url", help="server to create the databases on (default: embedded)")
    parser.add_argument("--keep", action="store_true", help="keep the seeded databases (given server only)")
    parser.add_argument("--existing", help="time this already seeded database instead of seeding")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.rows.split(",") if n.strip()]
    if args.existing:
        results = [time_existing(args.existing, args.repeat)]
    else:
        with tempfile.TemporaryDirectory(prefix="finsent-bench-") as workdir:
            results = [
                run_size(n, args.days, args.repeat, args.database_url, Path(workdir), args.keep)
                for n in sizes
            ]
    result = {"benchmark": "dashboard", "goal_p95_ms": GOAL_P95_MS, "cpus": os.cpu_count(), "sizes": results}
    if not args.json:
        for size in results:
            print(
                f"{size['rows']:>11,} articles: slowest query p95 {size['slowest_query_p95_ms']} ms",
                file=sys.stderr,
            )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
