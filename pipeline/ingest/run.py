"""Ingest: poll the sources, parse, tag tickers, deduplicate and store articles; log every poll.

One run: upsert the sources, fetch them all with their stored validators (conditional GET), parse each
changed feed (in worker processes when there are many), drop exact duplicates (canonical URL, GUID per
source, title/content hash), give each new article the story of its earliest near-duplicate, and store
each source's batch in one transaction together with its new validators and its fetch_log row. One
broken feed never stops the others; running the same ingest twice adds nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline import store
from pipeline.config import Settings, get_settings
from pipeline.ingest import dedup
from pipeline.ingest.entities import tagger_for
from pipeline.ingest.extract import PageJob
from pipeline.ingest.fetch import Fetcher, FetchResult, Validators, fetch_all
from pipeline.ingest.prepare import PreparedEntry, PreparedFeed
from pipeline.ingest.report import IngestReport, SourceReport
from pipeline.ingest.sources import Source, SourcesError, load_sources, redact_credentials
from pipeline.ingest.workers import ParsePool
from pipeline.store.db import get_engine

log = logging.getLogger(__name__)

# Articles fetched or published this recently seed the near-duplicate index, so stories span runs.
STORY_WINDOW = timedelta(hours=72)

# Article pages fetched per full-text source per run: a feed of 200 teasers must not cost 200 pages.
MAX_FULLTEXT_PER_SOURCE = 10
# Full-text sources whose pages are in memory at once (each page up to FINSENT_MAX_BODY_BYTES).
PAGE_GROUP_SOURCES = 4


def _run_async(coro: Any) -> Any:
    """Return the result of a coroutine from synchronous code."""
    return asyncio.run(coro) if inspect.iscoroutine(coro) else coro


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class _Run:
    """State of one ingest run: the story index and the exact keys taken so far."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.run_id = str(uuid.uuid4())
        self.taken = dedup.BatchKeys()
        self._index: dedup.StoryIndex | None = None
        self._conn: Connection | None = None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """Yield the run's one connection inside a new transaction, reconnecting if the last one broke.

        One connection for the whole run saves a pool checkout (and its liveness ping) per source.
        """
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            if self._conn is not None:
                self._conn.close()
            self._conn = self.engine.connect()
            with self._conn.begin():
                store.relax_commit_durability(self._conn)
                store.guard_session(
                    self._conn, self.settings.idle_in_transaction_timeout_s, self.settings.lock_timeout_s
                )
        with self._conn.begin():
            yield self._conn

    def close(self) -> None:
        """Give the connection back to the pool with its settings restored."""
        if self._conn is None:
            return
        try:
            if not self._conn.closed and not self._conn.invalidated:
                with self._conn.begin():
                    store.restore_commit_durability(self._conn)
        finally:
            self._conn.close()
            self._conn = None

    def story_index(self, conn: Connection, now: datetime) -> dedup.StoryIndex:
        """Return the near-duplicate index, seeded (on first use) from the last STORY_WINDOW's articles."""
        if self._index is None:
            index = dedup.StoryIndex()
            recent = store.recent_articles(conn, now - STORY_WINDOW)
            for art in recent:
                title_key = art.title_hash if dedup.title_is_distinctive(art.title) else None
                index.add(
                    art.id,
                    art.story_id,
                    dedup.signature(art.title, art.summary),
                    title_key=title_key,
                    published_at=art.published_at,
                )
            self._index = index
        return self._index

    # --- one source --------------------------------------------------------------------------

    def select_new(
        self, conn: Connection, source_id: int, feed: PreparedFeed
    ) -> tuple[list[PreparedEntry], int]:
        """Return the entries not stored yet (earliest first) and how many were exact duplicates."""
        entries = feed.entries
        distinctive = [p.keys.title_hash for p in entries if p.keys.distinctive_title]
        existing = store.existing_keys(
            conn,
            source_id,
            canonical_urls=[p.keys.canonical_url for p in entries if p.keys.canonical_url],
            guids=[p.keys.guid for p in entries if p.keys.guid],
            title_hashes=distinctive,
            content_hashes=[p.keys.content_hash for p in entries],
        )
        self.taken.canonical_urls |= existing.canonical_urls
        self.taken.guids |= {(source_id, g) for g in existing.guids}
        for rows in existing.by_content_hash.values():
            for k in rows:
                self.taken.contents.setdefault((k.source_id, k.content_hash), []).append(k.published_at)
        order = sorted(range(len(entries)), key=lambda i: entries[i].entry.published_at)
        new_positions, dups = dedup.split_duplicates(
            source_id, ((i, entries[i].keys) for i in order), self.taken
        )
        # Headlines stored by other sources outside the index window still join their story.
        if existing.by_title_hash and new_positions:
            index = self.story_index(conn, datetime.now(UTC))
            for rows in existing.by_title_hash.values():
                for k in rows:
                    index.add(k.id, k.story_id, None, title_key=k.title_hash, published_at=k.published_at)
        return [entries[i] for i in new_positions], len(dups)

    def write(
        self,
        conn: Connection,
        source_id: int,
        new: list[PreparedEntry],
        fetched_at: datetime,
    ) -> tuple[int, list[tuple[int, str | None]]]:
        """Store ``new`` with story ids; return (stored count, index entries added) for rollback."""
        index = self.story_index(conn, fetched_at)
        ids = store.allocate_article_ids(conn, len(new))
        rows: list[store.NewArticle] = []
        added: list[tuple[int, str | None]] = []
        for article_id, prepared in zip(ids, new, strict=True):
            entry, keys = prepared.entry, prepared.keys
            title_key = keys.title_hash if keys.distinctive_title else None
            story = index.find_story(prepared.signature, title_key=title_key, published_at=entry.published_at)
            story_id = story if story is not None else article_id
            rows.append(
                store.NewArticle(
                    id=article_id,
                    source_id=source_id,
                    guid=entry.guid,
                    url=entry.url,
                    canonical_url=entry.canonical_url,
                    title=entry.title,
                    summary=entry.summary,
                    body=entry.body,
                    published_at=entry.published_at,
                    date_missing=entry.date_missing,
                    fetched_at=fetched_at,
                    language=entry.language,
                    content_hash=keys.content_hash,
                    title_hash=keys.title_hash,
                    story_id=story_id,
                    tickers=prepared.tickers,
                )
            )
            # Added now so later copies in this same batch find the story too.
            index.add(
                article_id, story_id, prepared.signature, title_key=title_key, published_at=entry.published_at
            )
            added.append((article_id, title_key))
        stored = store.insert_articles(conn, rows)
        # Rows skipped by ON CONFLICT were stored meanwhile by a concurrent run: duplicates, not stories.
        for article_id, title_key in added:
            if article_id not in stored:
                index.discard(article_id, title_key)
        return len(stored), [a for a in added if a[0] in stored]

    def forget(self, added: Iterable[tuple[int, str | None]]) -> None:
        if self._index is not None:
            for article_id, title_key in added:
                self._index.discard(article_id, title_key)


def _log_row(
    run_id: str, source_id: int | None, started_at: datetime, report: SourceReport
) -> store.FetchLogRow:
    return store.FetchLogRow(
        run_id=run_id,
        source_id=source_id,
        started_at=started_at,
        status=report.status,
        http_status=report.http_status,
        bytes=report.bytes,
        items_seen=report.items_seen,
        items_new=report.items_new,
        duplicates=report.duplicates,
        invalid=report.invalid,
        filtered=report.filtered,
        duration_ms=report.duration_ms,
        error=report.error,
    )


# One fetched article page: its source, the entry it belongs to, and what extraction gets.
_Page = tuple[Source, PreparedEntry, PageJob]


async def _fetch_pages(
    wanted: list[tuple[Source, list[PreparedEntry]]], settings: Settings
) -> tuple[list[_Page], dict[str, int]]:
    """Return the article pages fetched for the wanted entries, and page bytes fetched per source.

    Each page is fetched under its source's ``allowed_hosts``. Extraction comes after, outside the
    event loop, so that its time budget can interrupt it (``ParsePool.extract_all``).
    """
    page_bytes: dict[str, int] = {}
    pages: list[_Page] = []
    async with Fetcher(settings) as fetcher:

        async def one(source: Source, prepared: PreparedEntry) -> None:
            url = prepared.entry.url
            if not url:
                return
            result = await fetcher.fetch_page(
                url, source_name=source.name, allowed_hosts=source.allowed_hosts
            )
            page_bytes[source.name] = page_bytes.get(source.name, 0) + result.bytes
            if result.status != "ok":
                log.info("full text skipped: %s", result.error)
                return
            pages.append((source, prepared, (result.body, source.name, result.final_url or url)))

        await asyncio.gather(*(one(source, p) for source, entries in wanted for p in entries))
    return pages, page_bytes


def _extract_pages(pages: list[_Page], pool: ParsePool) -> dict[str, list[str]]:
    """Fill in ``entry.body`` from each page's main text; return the extraction errors per source
    (the articles concerned keep their summaries)."""
    errors: dict[str, list[str]] = {}
    for (source, prepared, _job), extracted in zip(
        pages, pool.extract_all([job for _s, _p, job in pages]), strict=True
    ):
        if extracted.text:
            prepared.entry.body = extracted.text
        elif extracted.error:
            errors.setdefault(source.name, []).append(extracted.error)
    return errors


def _with_extraction_warning(rep: SourceReport, errors: list[str]) -> None:
    """Add the source's extraction failures to its report's warning, in one line."""
    if not errors:
        return
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    first = redact_credentials(" ".join(errors[0].split()))
    note = f"{len(errors)} article page(s) kept their summary only: {first}{more}"
    rep.warning = f"{rep.warning}; {note}" if rep.warning else note


def _ingest(sources: list[Source], engine: Engine, settings: Settings) -> IngestReport:
    pool = ParsePool(
        len(sources),
        settings.watchlist,
        timeout_s=settings.parse_timeout_s,
        memory_mb=settings.parse_memory_mb,
        extract_timeout_s=settings.extract_timeout_s,
    )
    with pool:
        run = _Run(engine, settings)
        try:
            return _ingest_run(run, sources, settings, pool)
        finally:
            run.close()


def _ingest_run(run: _Run, sources: list[Source], settings: Settings, pool: ParsePool) -> IngestReport:
    started = time.monotonic()
    report = IngestReport(run_id=run.run_id)
    started_at = datetime.now(UTC)
    with run.transaction() as conn:
        # Stored without a login that a feed URL may carry; the fetch uses ``sources`` as given.
        public = [s.model_copy(update={"url": redact_credentials(s.url)}) for s in sources]
        states = store.upsert_sources(conn, public)
    validators = {name: Validators(s.etag, s.last_modified) for name, s in states.items()}
    results: list[FetchResult] = _run_async(fetch_all(sources, validators, settings))
    fetched_at = datetime.now(UTC)
    reports: dict[str, SourceReport] = {}

    # Sources with nothing to store (304s, errors) are logged together in one transaction at the end.
    pending_logs: list[store.FetchLogRow] = []
    unchanged_ids: list[int] = []

    def finish(result: FetchResult, rep: SourceReport, conn: Connection | None = None) -> None:
        rep.duration_ms = _ms(result.duration_s) + rep.duration_ms
        row = _log_row(run.run_id, states[rep.name].id, started_at, rep)
        if conn is not None:
            store.insert_fetch_log(conn, row)
        else:
            pending_logs.append(row)
            if rep.status == "not_modified":
                unchanged_ids.append(states[rep.name].id)
        reports[rep.name] = rep

    changed: list[FetchResult] = []
    for result in results:
        rep = SourceReport(
            name=result.source.name,
            url=redact_credentials(result.source.url),
            status=result.status,
            http_status=result.http_status,
            bytes=result.bytes,
            error=result.error,
        )
        if result.status == "ok":
            changed.append(result)
        else:
            finish(result, rep)

    deferred: list[tuple[FetchResult, SourceReport, PreparedFeed, list[PreparedEntry]]] = []
    for result, feed in pool.prepare_all(changed, fetched_at):
        t0 = time.monotonic()
        source = result.source
        source_id = states[source.name].id
        rep = SourceReport(
            name=source.name,
            url=redact_credentials(source.url),
            status="ok",
            http_status=result.http_status,
            bytes=result.bytes,
            warning=feed.warning,
        )
        if feed.error:
            rep.status, rep.error = "error", feed.error
            finish(result, rep)
            continue
        rep.invalid, rep.filtered = len(feed.invalid), len(feed.filtered)
        rep.items_seen = len(feed.entries) + rep.invalid + rep.filtered
        if source.fulltext:
            with run.transaction() as conn:
                new, rep.duplicates = run.select_new(conn, source_id, feed)
            rep.duration_ms = _ms(time.monotonic() - t0)
            deferred.append((result, rep, feed, new))
            continue
        _store_batch(run, result, rep, feed, None, states[source.name].id, fetched_at, t0, finish)

    # Full-text sources a few at a time: each group's pages are fetched, extracted and stored before the
    # next group's are fetched, so a run holds at most PAGE_GROUP_SOURCES * MAX_FULLTEXT_PER_SOURCE pages.
    tagger = tagger_for(str(settings.watchlist))
    for start in range(0, len(deferred), PAGE_GROUP_SOURCES):
        group = deferred[start : start + PAGE_GROUP_SOURCES]
        wanted = [(r.source, new[:MAX_FULLTEXT_PER_SOURCE]) for r, _rep, _feed, new in group]
        pages, page_bytes = _run_async(_fetch_pages(wanted, settings))
        extraction_errors = _extract_pages(pages, pool)
        del pages  # the page bodies: only their extracted text is kept
        for result, rep, feed, new in group:
            t0 = time.monotonic()
            rep.bytes += page_bytes.get(result.source.name, 0)
            _with_extraction_warning(rep, extraction_errors.get(result.source.name, []))
            for prepared in new:
                if prepared.entry.body:
                    text = f"{prepared.entry.title}\n{prepared.entry.summary}\n{prepared.entry.body}"
                    prepared.tickers = tagger.tickers(text)
            _store_batch(run, result, rep, feed, new, states[result.source.name].id, fetched_at, t0, finish)

    with run.transaction() as conn:
        store.touch_sources(conn, unchanged_ids, fetched_at)
        store.insert_fetch_logs(conn, pending_logs)
    report.sources = [reports[s.name] for s in sources if s.name in reports]
    report.seconds = time.monotonic() - started
    return report


def _store_batch(
    run: _Run,
    result: FetchResult,
    rep: SourceReport,
    feed: PreparedFeed,
    new: list[PreparedEntry] | None,
    source_id: int,
    fetched_at: datetime,
    t0: float,
    finish: Callable[..., None],
) -> None:
    """Store one source's batch, validators and fetch_log row in one transaction; log a failure instead."""
    added: list[tuple[int, str | None]] = []
    try:
        with run.transaction() as conn:
            if new is None:
                new, rep.duplicates = run.select_new(conn, source_id, feed)
            stored, added = run.write(conn, source_id, new, fetched_at)
            rep.items_new = stored
            rep.duplicates += len(new) - stored
            # Validators go in the same transaction as the articles: a 304 later can only mean "stored".
            store.update_source_validators(
                conn, source_id, result.validators.etag, result.validators.last_modified, fetched_at
            )
            rep.duration_ms += _ms(time.monotonic() - t0)
            finish(result, rep, conn)
    except sa.exc.SQLAlchemyError as exc:
        run.forget(added)
        if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
            # The connection is gone (server stopped, restarted or failed over, session terminated): no
            # later batch would fare better, so the run ends here in one line instead of one multi-line
            # error per remaining source. What it did not store keeps its old validators: refetched next run.
            raise
        detail = getattr(exc, "orig", None) or exc
        log.error("%s: %s: storing the batch failed: %s", rep.name, rep.url, detail)
        failed = SourceReport(
            name=rep.name,
            url=rep.url,
            status="error",
            http_status=rep.http_status,
            bytes=rep.bytes,
            items_seen=rep.items_seen,
            invalid=rep.invalid,
            filtered=rep.filtered,
            duration_ms=rep.duration_ms,
            error=f"{rep.name}: {rep.url}: storing the batch failed: {detail}",
        )
        finish(result, failed)


def run_ingest(
    sources: Sequence[Source] | None = None, *, engine: Engine | None = None, settings: Settings | None = None
) -> IngestReport:
    """Return the report of one ingest run over ``sources`` (default: the configured sources file)."""
    settings = settings or get_settings()
    chosen = list(sources) if sources is not None else load_sources(settings.sources)
    names = [s.name for s in chosen]
    if len(names) != len(set(names)):
        repeated = sorted(n for n in set(names) if names.count(n) > 1)
        raise SourcesError(f"source names must be unique: {repeated}")
    return _ingest(chosen, engine or get_engine(), settings)


def ingest_sources(
    names_or_sources: Iterable[str | Source],
    *,
    engine: Engine | None = None,
    settings: Settings | None = None,
    sources_path: Path | str | None = None,
) -> IngestReport:
    """Return the report of ingesting a subset of sources, given as Source objects or names in the file."""
    settings = settings or get_settings()
    wanted = list(names_or_sources)
    known: dict[str, Source] | None = None
    chosen: list[Source] = []
    for item in wanted:
        if isinstance(item, Source):
            chosen.append(item)
            continue
        if known is None:
            path = sources_path or settings.sources
            known = {s.name: s for s in load_sources(path)}
        if item not in known:
            raise SourcesError(f"{sources_path or settings.sources}: no source named {item!r}")
        chosen.append(known[item])
    return run_ingest(chosen, engine=engine, settings=settings)


def source_batches(sources: Sequence[Source], size: int) -> list[list[str]]:
    """Return the source names split into batches of ``size`` (what a scheduler maps tasks over)."""
    names = [s.name for s in sources]
    return [names[i : i + size] for i in range(0, len(names), size)]
