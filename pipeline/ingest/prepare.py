"""One fetched feed → a PreparedFeed: parsed, capped, filtered, ticker-tagged and keyed for dedup.

Pure and picklable: it runs in the parse worker processes (``workers``) as well as in the run's own."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from pipeline.ingest import dedup
from pipeline.ingest.entities import tagger_for
from pipeline.ingest.parse import FeedError, ParsedEntry, parse_feed

log = logging.getLogger(__name__)

MEMORY_ERROR = "parsing needed more memory than FINSENT_PARSE_MEMORY_MB allows; the feed was skipped"

# What a worker gets for one feed: body, source name, URL, content type, fetch time, watchlist path.
Job = tuple[bytes, str, str, str | None, datetime, str]

# Items dated further ahead than this are someone's clock or template error, not news.
MAX_FUTURE = timedelta(days=2)

# A feed may send a megabyte of "headline": stored text is capped (``capped``).
MAX_TITLE_CHARS = 1_000
MAX_SUMMARY_CHARS = 20_000


@dataclass
class PreparedEntry:
    """A parsed entry with everything dedup and storage need."""

    entry: ParsedEntry
    keys: dedup.EntryKeys
    signature: np.ndarray | None
    tickers: list[str]


@dataclass
class PreparedFeed:
    """A feed's usable entries, plus how many were invalid or filtered out and why, or its error."""

    entries: list[PreparedEntry] = field(default_factory=list)
    invalid: list[tuple[int, str]] = field(default_factory=list)
    filtered: list[tuple[int, str]] = field(default_factory=list)
    error: str | None = None
    warning: str | None = None


def capped(entry: ParsedEntry) -> ParsedEntry:
    """Return ``entry`` with a headline of at most MAX_TITLE_CHARS and a summary of at most
    MAX_SUMMARY_CHARS: a feed may send a megabyte of "headline", no page or email should show it."""
    if len(entry.title) <= MAX_TITLE_CHARS and len(entry.summary or "") <= MAX_SUMMARY_CHARS:
        return entry
    title = entry.title if len(entry.title) <= MAX_TITLE_CHARS else entry.title[: MAX_TITLE_CHARS - 1] + "…"
    summary = entry.summary
    if summary and len(summary) > MAX_SUMMARY_CHARS:
        summary = summary[: MAX_SUMMARY_CHARS - 1] + "…"
    return replace(entry, title=title, summary=summary)


def filter_reason(entry: ParsedEntry, fetched_at: datetime) -> str | None:
    """Return why a well-formed entry is not worth storing, or None to keep it."""
    if not entry.title and not entry.summary:
        return "no title or summary text"
    if entry.published_at > fetched_at + MAX_FUTURE:
        return f"dated in the future ({entry.published_at.isoformat()})"
    return None


def entry_keys(entry: ParsedEntry, fp: dedup.Fingerprint) -> dedup.EntryKeys:
    """Return the exact-duplicate keys of a parsed entry."""
    return dedup.EntryKeys(
        canonical_url=entry.canonical_url,
        guid=entry.guid,
        title_hash=fp.title_hash,
        content_hash=fp.content_hash,
        distinctive_title=fp.distinctive_title,
        published_at=entry.published_at,
    )


def prepare_feed(
    body: bytes,
    *,
    source_name: str,
    url: str,
    content_type: str | None,
    fetched_at: datetime,
    watchlist: Path | str,
) -> PreparedFeed:
    """Return a fetched feed parsed, filtered, ticker-tagged and keyed for dedup (``error`` if broken)."""
    try:
        parsed = parse_feed(
            body, source_name=source_name, url=url, fetched_at=fetched_at, content_type=content_type
        )
    except FeedError as exc:
        return PreparedFeed(error=str(exc))
    tagger = tagger_for(watchlist)
    feed = PreparedFeed(invalid=list(parsed.invalid), warning=parsed.warning)
    for i, entry in enumerate(parsed.entries):
        entry = capped(entry)
        reason = filter_reason(entry, fetched_at)
        if reason:
            feed.filtered.append((i, reason))
            continue
        fp = dedup.fingerprint(entry.title, entry.summary)
        feed.entries.append(
            PreparedEntry(
                entry=entry,
                keys=entry_keys(entry, fp),
                signature=fp.signature,
                tickers=tagger.tickers(f"{entry.title}\n{entry.summary}"),
            )
        )
    return feed


def prepare_job(job: Job) -> PreparedFeed:
    """Return one feed prepared; a parser bug or exhausted memory fails that feed alone, with a reason."""
    body, name, url, content_type, fetched_at, watchlist = job
    try:
        return prepare_feed(
            body,
            source_name=name,
            url=url,
            content_type=content_type,
            fetched_at=fetched_at,
            watchlist=watchlist,
        )
    except MemoryError:
        return PreparedFeed(error=MEMORY_ERROR)
    except Exception as exc:  # a parser bug on one hostile document must not end the whole run
        log.exception("%s: %s: parsing failed", name, url)
        return PreparedFeed(error=f"{name}: {url}: parsing failed: {type(exc).__name__}: {exc}")
