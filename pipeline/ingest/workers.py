"""The worker processes a large run parses its feeds in, forked before the run connects and dying with it."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from pipeline.ingest.entities import tagger_for
from pipeline.ingest.fetch import FetchResult
from pipeline.ingest.prepare import PreparedFeed, prepare_feed, prepare_job

log = logging.getLogger(__name__)

# Below this many changed feeds, starting worker processes costs more than parsing in-process.
PARALLEL_PARSE_MIN_FEEDS = 16
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when the thread that forked it exits

_WARM_UP_FEED = (
    b"<rss version='2.0'><channel><item><title>Warm up the parser here</title></item></channel></rss>"
)


def _parse_processes(jobs: int) -> int:
    """Return how many worker processes to parse ``jobs`` feeds with (0: parse in this process)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # Airflow/Celery task processes may be daemonic, and daemonic processes cannot have children.
    if jobs < PARALLEL_PARSE_MIN_FEEDS or cpus < 2 or multiprocessing.current_process().daemon:
        return 0
    return min(cpus, 8)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: the kernel kills this worker when the run that forked it dies, even by SIGKILL,
    so no orphan lingers (Linux; elsewhere the check below catches a parent gone before start)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _ready() -> int:
    return os.getpid()


class ParsePool:
    """The worker processes a run parses its feeds in, or none when the run is small.

    Enter it before the run opens its database connection: workers are forked then, so none inherits
    a connection (a worker that outlived its run would keep that connection's transaction and locks
    alive), and each dies with the run. The watchlist and language model are loaded before the fork,
    so the workers start warm.
    """

    def __init__(self, feeds: int, watchlist: Path | str, engine: Engine | None = None) -> None:
        self.workers = _parse_processes(feeds)
        self.watchlist = str(watchlist)
        self.engine = engine
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ParsePool:
        if not self.workers:
            return self
        tagger_for(self.watchlist)
        prepare_feed(
            _WARM_UP_FEED,
            source_name="warm-up",
            url="http://localhost/",
            content_type=None,
            fetched_at=datetime.now(UTC),
            watchlist=self.watchlist,
        )
        if self.engine is not None:
            self.engine.dispose()  # idle pooled connections are closed, not inherited
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=_die_with_parent,
            initargs=(os.getpid(),),
        )
        self._pool.submit(_ready).result()  # with fork, the first task starts every worker now
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def prepare_all(
        self, results: Sequence[FetchResult], fetched_at: datetime
    ) -> Iterator[tuple[FetchResult, PreparedFeed]]:
        """Yield each fetched feed with its prepared entries, in order, parsed by the workers if any."""
        jobs = [
            (r.body, r.source.name, r.final_url or r.url, r.content_type, fetched_at, self.watchlist)
            for r in results
        ]
        if self._pool is None:
            for result, job in zip(results, jobs, strict=True):
                yield result, prepare_job(job)
            return
        chunk = max(1, min(16, len(jobs) // (self.workers * 8)))
        yield from zip(results, self._pool.map(prepare_job, jobs, chunksize=chunk), strict=True)
