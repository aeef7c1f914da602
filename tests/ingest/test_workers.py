"""pipeline.ingest.workers: each feed's parse and each article page's extraction runs under a time and a
memory budget in real worker processes, and a worker that dies takes no other feed down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime

import psutil
import pytest

from pipeline.config import DEFAULT_WATCHLIST
from pipeline.ingest.fetch import FetchResult, Validators
from pipeline.ingest.sources import Source
from pipeline.ingest.workers import PARALLEL_PARSE_MIN_FEEDS, ParsePool, _parse_processes
from tests.ingest.test_run import ARTICLE_PAGE

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


def pool_workers() -> list[psutil.Process]:
    """Return this process's parse workers: the children of its fork server, which is its child."""
    return [
        w for c in psutil.Process().children() for w in c.children() if w.status() != psutil.STATUS_ZOMBIE
    ]


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
    """Even when the process that enters the pool has a heap with room for the whole feed: workers come
    from a fork server, not from this long-lived test process, so they cannot spend its free heap
    without the budget seeing it (forked from here, a worker once parsed the feed within 16 MB)."""
    spare = [bytes(1000) for _ in range(300_000)]  # ~300 MB of heap ...
    pinned = bytes(1000)  # ... under an object that keeps the allocator from giving it back when freed
    del spare
    with ParsePool(PARALLEL_PARSE_MIN_FEEDS + 1, DEFAULT_WATCHLIST, memory_mb=16) as pool:
        outcome = prepared(pool, feeds(big_items=60_000))  # ~120 MB of parsed entries
    entries, error = outcome.pop("big")
    assert entries == 0 and error is not None and "memory" in error
    assert outcome == {f"small{i}": (5, None) for i in range(PARALLEL_PARSE_MIN_FEEDS)}
    del pinned


def test_within_budget_every_feed_is_parsed() -> None:
    with ParsePool(PARALLEL_PARSE_MIN_FEEDS + 1, DEFAULT_WATCHLIST, timeout_s=60, memory_mb=1024) as pool:
        outcome = prepared(pool, feeds(big_items=2_000))
    assert outcome.pop("big") == (2_000, None)
    assert outcome == {f"small{i}": (5, None) for i in range(PARALLEL_PARSE_MIN_FEEDS)}


def test_a_worker_killed_mid_parse_costs_no_feed() -> None:
    """SIGKILL every worker while the big feed parses: the pool is replaced and every feed, the big one
    included, is parsed again alone and arrives whole."""
    with ParsePool(PARALLEL_PARSE_MIN_FEEDS + 1, DEFAULT_WATCHLIST) as pool:
        workers = pool_workers()
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
        assert len(pool_workers()) == pool.workers  # a fresh pool took over
    assert outcome.pop("big") == (10_000, None)
    assert outcome == {f"small{i}": (5, None) for i in range(PARALLEL_PARSE_MIN_FEEDS)}


def pathological_page(paragraphs: int = 100_000) -> bytes:
    """A 2 MB page of tiny paragraphs: ~6 s of trafilatura on one core here, while a news page takes
    ~50 ms. Extraction must stop it at its budget."""
    return ("<html><body>" + "<p>word word word</p>" * paragraphs + "</body></html>").encode()


def test_an_article_page_that_extracts_past_its_budget_loses_only_its_own_text() -> None:
    pages = [
        (pathological_page(), "pages", "https://pages.example/huge"),
        (ARTICLE_PAGE.encode(), "pages", "https://pages.example/wrap"),
    ]
    with ParsePool(PARALLEL_PARSE_MIN_FEEDS + 1, DEFAULT_WATCHLIST, extract_timeout_s=0.25) as pool:
        assert pool.workers >= 2
        started = time.monotonic()
        huge, wrap = pool.extract_all(pages)
    assert time.monotonic() - started < 30  # the alarm at 0.25 s; else the worker is killed at ~10 s
    assert huge.text is None and huge.error is not None
    assert huge.error.startswith("https://pages.example/huge: extraction took longer than 0.25 s")
    assert wrap.error is None and "central bank officials" in (wrap.text or "")


def test_an_alarm_lost_in_a_finalizer_is_followed_by_another() -> None:
    """A signal handler runs wherever the interpreter is; inside a ``__del__`` its exception is printed
    and dropped, which once let a worker parse a 60,000-item feed to the end past a 0.25 s budget. Real
    process (no test-runner timer, which time_budget leaves alone), a finalizer that is still running
    when the first alarm comes, then a loop that only a second alarm ends."""
    code = textwrap.dedent(
        """
        import time
        from pipeline.ingest.workers import ParseBudgetExceeded, time_budget

        class Finalizer:
            def __del__(self):
                end = time.monotonic() + 0.5
                while time.monotonic() < end:
                    pass

        started = time.monotonic()
        try:
            with time_budget(0.1) as armed:
                assert armed
                Finalizer()  # collected at once: the alarm at 0.1 s comes inside its __del__
                while True:
                    pass
        except ParseBudgetExceeded:
            print(f"stopped after {time.monotonic() - started:.1f} s")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "Exception ignored in" in done.stderr and "ParseBudgetExceeded" in done.stderr
    assert done.stdout.startswith("stopped after ")
    assert float(done.stdout.split()[2]) < 5
