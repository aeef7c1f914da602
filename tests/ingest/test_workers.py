"""pipeline.ingest.workers: each feed's parse runs under a time and a memory budget in real worker
processes, and a worker that dies takes no other feed down."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime

import psutil
import pytest

from pipeline.config import DEFAULT_WATCHLIST
from pipeline.ingest.fetch import FetchResult, Validators
from pipeline.ingest.sources import Source
from pipeline.ingest.workers import PARALLEL_PARSE_MIN_FEEDS, ParsePool, _parse_processes

NOW = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)

pytestmark = pytest.mark.skipif(
    _parse_processes(PARALLEL_PARSE_MIN_FEEDS) == 0, reason="one CPU: feeds are parsed in-process"
)


def rss(name: str, items: int) -> bytes:
    entries = "".join(
        f"<item><title>{name} company {i} reports results and raises its outlook</title>"
        f"<link>https://{name}.example/{i}</link><description>Shares of company {i} rose.</description>"
        "<pubDate>Mon, 07 Dec 2026 06:00:00 GMT</pubDate></item>"
        for i in range(items)
    )
    channel = f"<channel><title>{name}</title>{entries}</channel>"
    return f"<?xml version='1.0'?><rss version='2.0'>{channel}</rss>".encode()


def fetched(name: str, body: bytes) -> FetchResult:
    url = f"https://{name}.example/feed"
    return FetchResult(
        source=Source(name=name, url=url),
        url=url,
        status="ok",
        http_status=200,
        body=body,
        content_type="application/rss+xml",
        final_url=url,
        validators=Validators(None, None),
        bytes=len(body),
        duration_s=0.0,
    )


def feeds(big_items: int) -> list[FetchResult]:
    """One big feed among enough small ones for the run to use worker processes."""
    small = [fetched(f"small{i}", rss(f"small{i}", 5)) for i in range(PARALLEL_PARSE_MIN_FEEDS)]
    return [*small[:3], fetched("big", rss("big", big_items)), *small[3:]]


def prepared(pool: ParsePool, results: list[FetchResult]) -> dict[str, tuple[int, str | None]]:
    return {r.source.name: (len(p.entries), p.error) for r, p in pool.prepare_all(results, NOW)}


def test_a_feed_that_parses_past_its_time_budget_fails_alone() -> None:
    # ~12 s of parsing on one core here: a machine would need to parse it 50 times faster to finish
    # inside the budget, while a five-item feed parses in a few milliseconds.
    with ParsePool(PARALLEL_PARSE_MIN_FEEDS + 1, DEFAULT_WATCHLIST, timeout_s=0.25) as pool:
        assert pool.workers >= 2
        started = time.monotonic()
        outcome = prepared(pool, feeds(big_items=60_000))
    assert time.monotonic() - started < 60  # the alarm at 0.25 s; else the worker is killed at ~10 s
    entries, error = outcome.pop("big")
    assert entries == 0 and error is not None and "longer than 0.25 s" in error
    assert outcome == {f"small{i}": (5, None) for i in range(PARALLEL_PARSE_MIN_FEEDS)}


def test_a_feed_that_grows_its_worker_past_the_memory_budget_fails_alone() -> None:
    with ParsePool(PARALLEL_PARSE_MIN_FEEDS + 1, DEFAULT_WATCHLIST, memory_mb=16) as pool:
        # ~120 MB of parsed entries: far past 16 MB plus whatever free heap the worker inherited.
        outcome = prepared(pool, feeds(big_items=60_000))
    entries, error = outcome.pop("big")
    assert entries == 0 and error is not None and "memory" in error
    assert outcome == {f"small{i}": (5, None) for i in range(PARALLEL_PARSE_MIN_FEEDS)}


def test_within_budget_every_feed_is_parsed() -> None:
    with ParsePool(PARALLEL_PARSE_MIN_FEEDS + 1, DEFAULT_WATCHLIST, timeout_s=60, memory_mb=1024) as pool:
        outcome = prepared(pool, feeds(big_items=2_000))
    assert outcome.pop("big") == (2_000, None)
    assert outcome == {f"small{i}": (5, None) for i in range(PARALLEL_PARSE_MIN_FEEDS)}


def test_a_worker_killed_mid_parse_costs_no_feed() -> None:
    """SIGKILL every worker while the big feed parses: the pool is replaced and every feed, the big one
    included, is parsed again alone and arrives whole."""
    with ParsePool(PARALLEL_PARSE_MIN_FEEDS + 1, DEFAULT_WATCHLIST) as pool:
        workers = psutil.Process().children()
        assert len(workers) == pool.workers

        def kill_workers_soon() -> None:
            time.sleep(0.5)
            for worker in workers:
                os.kill(worker.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_workers_soon)
        killer.start()
        outcome = prepared(pool, feeds(big_items=10_000))
        killer.join()
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
        assert len(psutil.Process().children()) == pool.workers  # a fresh pool took over
    assert outcome.pop("big") == (10_000, None)
    assert outcome == {f"small{i}": (5, None) for i in range(PARALLEL_PARSE_MIN_FEEDS)}
