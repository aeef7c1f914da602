"""The worker processes a large run parses its feeds in, started from a clean process and dying with the run.

Each parse runs under a budget: a feed whose parse takes longer than ``parse_timeout_s`` or (in a worker)
grows the worker's memory by more than ``parse_memory_mb`` fails alone with a one-line error, and a
worker that dies anyway takes only its own feed down: the others are parsed again in a fresh pool.
Full-text extraction of article pages runs the same way, one page at a time, under ``extract_timeout_s``:
a pathological page loses its text (the article keeps its summary) instead of stalling the run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import resource
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from datetime import UTC, datetime
from multiprocessing import forkserver
from pathlib import Path
from typing import TypeVar

from pipeline.ingest.entities import tagger_for
from pipeline.ingest.extract import Extracted, PageJob, extract_job
from pipeline.ingest.fetch import FetchResult
from pipeline.ingest.prepare import MEMORY_ERROR, Job, PreparedFeed, prepare_feed, prepare_job
from pipeline.ingest.sources import without_credentials

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


_IN_WORKER = False  # set in parse worker processes: only they get a memory budget


class ParseBudgetExceeded(BaseException):
    """Raised by the alarm inside a parse that ran past its time budget (a BaseException, so that the
    parser's own ``except Exception`` cannot swallow it)."""


# True while a time_budget block runs: an alarm that comes after the block has ended does nothing.
_budget_running = False
# The alarm repeats at most this often until the block ends: a Python signal handler runs wherever the
# interpreter happens to be, and an exception raised inside a finalizer (``__del__`` of garbage that a
# forked worker inherited) is printed and dropped, so a single alarm can be lost.
ALARM_REPEAT_S = 0.5


class WorkerLost(Exception):
    """A worker hung past its hard limit (``hung``; it was killed) or died; its pool was replaced."""

    def __init__(self, hung: bool) -> None:
        super().__init__("hung" if hung else "died")
        self.hung = hung


T = TypeVar("T")


def _on_alarm(signum: int, frame: object) -> None:
    if _budget_running:
        raise ParseBudgetExceeded


@contextmanager
def time_budget(seconds: float) -> Iterator[bool]:
    """Raise ParseBudgetExceeded in the block after ``seconds`` (and again until it ends); yield whether
    the budget is armed.

    Only the main thread can take a signal, and a timer someone else armed (a test runner's) is left
    alone: the block then runs without a budget.
    """
    global _budget_running
    armed = (
        seconds > 0
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )
    if not armed:
        yield False
        return
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    # A process forked from a thread that blocks SIGALRM inherits that mask: the alarm would never come.
    blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
    _budget_running = True
    signal.setitimer(signal.ITIMER_REAL, seconds, min(seconds, ALARM_REPEAT_S))
    try:
        yield True
    finally:
        _budget_running = False  # first, before anything that lets a pending handler run
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def budgeted_job(job: Job, timeout_s: float, memory_bytes: int = 0) -> PreparedFeed:
    """Return ``prepare_job(job)``, or a PreparedFeed with an error when the parse ran past its budget."""
    name, url = job[1], job[2]
    try:
        with memory_budget(memory_bytes), time_budget(timeout_s):
            return prepare_job(job)
    except MemoryError:
        return PreparedFeed(error=MEMORY_ERROR)
    except ParseBudgetExceeded:
        log.warning("%s: %s: parsing took longer than %s s; skipped", name, url, timeout_s)
        return PreparedFeed(
            error=f"parsing took longer than {timeout_s:g} s (FINSENT_PARSE_TIMEOUT_S); the feed was skipped"
        )


def extract_timeout_error(timeout_s: float) -> str:
    return f"extraction took longer than {timeout_s:g} s (FINSENT_EXTRACT_TIMEOUT_S); stopped"


EXTRACT_MEMORY_ERROR = "extraction needed more memory than FINSENT_PARSE_MEMORY_MB allows; stopped"


def budgeted_extract(page: PageJob, timeout_s: float, memory_bytes: int = 0) -> Extracted:
    """Return ``extract_job(page)``, or an Extracted with an error when it ran past its budget."""
    try:
        with memory_budget(memory_bytes), time_budget(timeout_s):
            return extract_job(page)
    except MemoryError:
        return Extracted(error=f"{page[2]}: {EXTRACT_MEMORY_ERROR}")
    except ParseBudgetExceeded:
        log.warning("%s: %s: extraction took longer than %s s; skipped", page[1], page[2], timeout_s)
        return Extracted(error=f"{page[2]}: {extract_timeout_error(timeout_s)}")


def budgeted_jobs(jobs: list[Job], timeout_s: float, memory_bytes: int) -> list[PreparedFeed]:
    """Return ``budgeted_job`` of each job, each under its own budget (one round trip for a chunk)."""
    return [budgeted_job(job, timeout_s, memory_bytes) for job in jobs]


def _address_space() -> int:
    """Return this process's virtual memory size in bytes (Linux)."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _init_worker(run_pid: int, watchlist: str) -> None:
    """Worker initializer: the kernel kills this worker when its parent (the fork server) dies, which it
    does when the run dies, even by SIGKILL, so no orphan lingers (Linux; elsewhere the check below
    catches a run gone before start). Then the watchlist and language model load, so parsing starts warm."""
    global _IN_WORKER
    _IN_WORKER = True
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # The fork server exits when the last holder of its "alive" pipe does, and hands every child a copy:
    # a worker holding one would keep the server, and so itself, alive after the run is killed.
    server = vars(forkserver._forkserver)  # multiprocessing's own state; where absent, nothing to close
    if server.get("_forkserver_alive_fd") is not None:
        os.close(server["_forkserver_alive_fd"])
        server["_forkserver_alive_fd"] = None
    try:
        os.kill(run_pid, 0)
    except ProcessLookupError:
        os._exit(1)
    if os.getppid() == 1:  # the fork server was already gone when the death signal was set
        os._exit(1)
    _warm_up(watchlist)


def _warm_up(watchlist: str) -> None:
    """Load the watchlist's tagger and the parser's language model, which each feed's parse needs."""
    tagger_for(watchlist)
    prepare_feed(
        _WARM_UP_FEED,
        source_name="warm-up",
        url="http://localhost/",
        content_type=None,
        fetched_at=datetime.now(UTC),
        watchlist=watchlist,
    )


@contextmanager
def memory_budget(extra_bytes: int) -> Iterator[None]:
    """Let the block grow this process's address space by at most ``extra_bytes`` (a MemoryError past
    it), counted from the block's start, so a worker's earlier feeds do not use up a later one's budget.

    Only in parse workers on Linux: the run's own process is never limited.
    """
    if extra_bytes <= 0 or not _IN_WORKER or not sys.platform.startswith("linux"):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space() + extra_bytes
    resource.setrlimit(
        resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard)
    )
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _ready() -> int:
    return os.getpid()


def _worker_context() -> multiprocessing.context.BaseContext:
    """Return the start method of parse workers: a fork server with this module preloaded where there
    is one (Linux, macOS), else the platform's default."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # only read when the fork server starts (once per process)
    return context


class ParsePool:
    """The worker processes a run parses its feeds (and extracts its article pages) in, or none when the
    run is small.

    Workers are forked from a fork server, a small process started afresh with this module preloaded,
    never from the run itself: none inherits the run's database connections (a worker that outlived
    its run would keep a transaction's locks alive), and none inherits the free heap of a long-lived
    process (an Airflow or Celery worker), which the memory budget could not see being used. Each
    worker loads the watchlist and language model once, then parses warm, and dies with the run.
    """

    def __init__(
        self,
        feeds: int,
        watchlist: Path | str,
        *,
        timeout_s: float = 0.0,
        memory_mb: int = 0,
        extract_timeout_s: float = 0.0,
    ) -> None:
        self.workers = _parse_processes(feeds)
        self.watchlist = str(watchlist)
        self.timeout_s = timeout_s
        self.extract_timeout_s = extract_timeout_s
        self.memory_bytes = memory_mb * 1024 * 1024
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ParsePool:
        if not self.workers:
            return self
        self._start()
        return self

    def _start(self) -> None:
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=_worker_context(),
            initializer=_init_worker,
            initargs=(os.getpid(), self.watchlist),
        )
        # Start every worker now (the pool otherwise adds one per submitted task) without waiting: they
        # warm up while the run fetches its feeds.
        for _ in range(self.workers):
            self._pool.submit(_ready)

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def prepare_all(
        self, results: Sequence[FetchResult], fetched_at: datetime
    ) -> Iterator[tuple[FetchResult, PreparedFeed]]:
        """Yield each fetched feed with its prepared entries, in order, parsed by the workers if any."""
        jobs: list[Job] = [
            (
                r.body,
                r.source.name,
                without_credentials(r.final_url or r.url),
                r.content_type,
                fetched_at,
                self.watchlist,
            )
            for r in results
        ]
        if self._pool is None:
            for result, job in zip(results, jobs, strict=True):
                yield result, budgeted_job(job, self.timeout_s)
            return
        pool = self._pool
        size = max(1, min(16, len(jobs) // (self.workers * 8)))  # chunks: fewer round trips
        chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        futures = [pool.submit(budgeted_jobs, chunk, self.timeout_s, self.memory_bytes) for chunk in chunks]
        outcomes = (
            feed
            for chunk, future in zip(chunks, futures, strict=True)
            for feed in self._outcome(chunk, future, pool)
        )
        yield from zip(results, outcomes, strict=True)

    def _hard_limit(self, jobs: int, budget_s: float | None = None) -> float | None:
        """Return how long to wait for ``jobs`` feeds before killing their worker: the second line behind
        the alarm, for a parse stuck where no signal reaches it (a C call that never returns)."""
        budget_s = self.timeout_s if budget_s is None else budget_s
        return None if budget_s <= 0 else jobs * budget_s * 2 + 10

    def _result(self, future: Future[T], timeout: float | None, pool: ProcessPoolExecutor) -> T:
        """Return ``future``'s result; raise WorkerLost when its worker hung past ``timeout`` (then killed)
        or died, once ``pool`` has been replaced."""
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            _kill_workers(pool)
            hung = True
        except BrokenProcessPool:
            hung = False
        if pool is self._pool:
            self._restart()
        raise WorkerLost(hung=hung)

    def _outcome(
        self, chunk: list[Job], future: Future[list[PreparedFeed]], pool: ProcessPoolExecutor
    ) -> list[PreparedFeed]:
        """Return the chunk's PreparedFeeds; when a worker of ``pool`` died or hung, parse each of its jobs
        again, alone, in a fresh pool, so that only the feed that kills or hangs a worker fails."""
        try:
            return self._result(future, self._hard_limit(len(chunk)), pool)
        except WorkerLost:
            return [self._alone(job) for job in chunk]
        except MemoryError:  # raised in the worker outside a parse: passing the bodies or the results
            return [PreparedFeed(error=MEMORY_ERROR) for _ in chunk]

    def _run_alone(self, timeout: float | None, fn: Callable[..., T], *args: object) -> T:
        """Return ``fn(*args)`` run in the pool by itself; raise WorkerLost as ``_result`` does."""
        pool = self._pool
        assert pool is not None
        try:
            future = pool.submit(fn, *args)
        except BrokenProcessPool:
            self._restart()
            raise WorkerLost(hung=False) from None
        return self._result(future, timeout, pool)

    def _alone(self, job: Job) -> PreparedFeed:
        try:
            return self._run_alone(self._hard_limit(1), budgeted_job, job, self.timeout_s, self.memory_bytes)
        except WorkerLost as lost:
            if lost.hung:
                log.warning("%s: %s: parsing hung past its budget; worker killed", job[1], job[2])
                return PreparedFeed(
                    error=f"parsing took longer than {self.timeout_s:g} s (FINSENT_PARSE_TIMEOUT_S) and was "
                    "stopped; the feed was skipped"
                )
            log.warning("%s: %s: the parse worker died on this feed", job[1], job[2])
            return PreparedFeed(
                error="the parse worker died on this feed (memory or a crash in the parser); skipped"
            )
        except MemoryError:
            return PreparedFeed(error=MEMORY_ERROR)

    def extract_all(self, pages: Sequence[PageJob]) -> list[Extracted]:
        """Return each article page's text, in order, each under its own budget, in the workers if any."""
        budget = self.extract_timeout_s
        if self._pool is None:
            return [budgeted_extract(page, budget) for page in pages]
        pool = self._pool
        futures = [pool.submit(budgeted_extract, page, budget, self.memory_bytes) for page in pages]
        return [self._extracted(page, future, pool) for page, future in zip(pages, futures, strict=True)]

    def _extracted(self, page: PageJob, future: Future[Extracted], pool: ProcessPoolExecutor) -> Extracted:
        """Return a page's Extracted; when its worker died or hung, extract it again alone in a fresh pool."""
        try:
            return self._result(future, self._hard_limit(1, self.extract_timeout_s), pool)
        except WorkerLost:
            return self._extract_alone(page)
        except MemoryError:
            return Extracted(error=f"{page[2]}: {EXTRACT_MEMORY_ERROR}")

    def _extract_alone(self, page: PageJob) -> Extracted:
        budget = self.extract_timeout_s
        try:
            return self._run_alone(
                self._hard_limit(1, budget), budgeted_extract, page, budget, self.memory_bytes
            )
        except WorkerLost as lost:
            if lost.hung:
                return Extracted(error=f"{page[2]}: {extract_timeout_error(budget)}; worker killed")
            return Extracted(error=f"{page[2]}: the worker died extracting this page; skipped")
        except MemoryError:
            return Extracted(error=f"{page[2]}: {EXTRACT_MEMORY_ERROR}")

    def _restart(self) -> None:
        """Replace a broken pool; the futures of the broken one all fail and are parsed again alone."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._start()


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """SIGKILL every worker of ``pool`` (its futures then fail with BrokenProcessPool)."""
    # ProcessPoolExecutor keeps its processes in a private dict and offers no way to stop a busy worker.
    for process in list(getattr(pool, "_processes", {}).values()):
        process.kill()
