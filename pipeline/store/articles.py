"""Ingestion's tables: sources, articles and the fetch log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection


class SourceRow(Protocol):
    """What the sources table stores of a configured source (``pipeline.ingest.Source`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def tags(self) -> Sequence[str]: ...
    @property
    def fulltext(self) -> bool: ...


@dataclass(frozen=True)
class SourceState:
    """A source's row id and the validators of its last stored poll."""

    id: int
    name: str
    url: str
    etag: str | None
    last_modified: str | None


def upsert_sources(conn: Connection, sources: Sequence[SourceRow]) -> dict[str, SourceState]:
    """Insert or update ``sources`` by name; return ``{name: SourceState}``.

    A source whose URL changed loses its validators: they belong to the old URL.
    """
    if not sources:
        return {}
    rows = conn.execute(
        sa.text(
            "INSERT INTO sources (name, url, tags, fulltext)"
            " SELECT n, u, CASE WHEN t = '' THEN '{}'::text[] ELSE string_to_array(t, E'\\x1f') END, f"
            " FROM unnest(CAST(:names AS text[]), CAST(:urls AS text[]), CAST(:tags AS text[]),"
            "             CAST(:fulltext AS bool[])) AS s(n, u, t, f)"
            " ON CONFLICT (name) DO UPDATE SET url = EXCLUDED.url, tags = EXCLUDED.tags,"
            "   fulltext = EXCLUDED.fulltext,"
            "   etag = CASE WHEN sources.url = EXCLUDED.url THEN sources.etag END,"
            "   last_modified = CASE WHEN sources.url = EXCLUDED.url THEN sources.last_modified END"
            " RETURNING id, name, url, etag, last_modified"
        ),
        {
            "names": [s.name for s in sources],
            "urls": [s.url for s in sources],
            "tags": ["\x1f".join(s.tags) for s in sources],
            "fulltext": [s.fulltext for s in sources],
        },
    )
    return {r.name: SourceState(r.id, r.name, r.url, r.etag, r.last_modified) for r in rows}


def source_states(conn: Connection) -> dict[str, SourceState]:
    """Return every stored source by name."""
    rows = conn.execute(sa.text("SELECT id, name, url, etag, last_modified FROM sources"))
    return {r.name: SourceState(r.id, r.name, r.url, r.etag, r.last_modified) for r in rows}


def update_source_validators(
    conn: Connection, source_id: int, etag: str | None, last_modified: str | None, fetched_at: datetime
) -> None:
    """Store the validators of a poll whose articles are committed in the same transaction."""
    conn.execute(
        sa.text("UPDATE sources SET etag = :etag, last_modified = :lm, last_fetched_at = :at WHERE id = :id"),
        {"etag": etag, "lm": last_modified, "at": fetched_at, "id": source_id},
    )


@dataclass(frozen=True)
class StoredKey:
    """What the exact-duplicate checks need to know of an article already stored."""

    id: int
    story_id: int
    source_id: int
    published_at: datetime
    title_hash: str
    content_hash: str


@dataclass(frozen=True)
class ExistingKeys:
    """Keys of a batch already stored: canonical URLs, this source's GUIDs and content, titles anywhere."""

    canonical_urls: frozenset[str]
    guids: frozenset[str]
    by_title_hash: dict[str, list[StoredKey]]
    by_content_hash: dict[str, list[StoredKey]]


def existing_keys(
    conn: Connection,
    source_id: int,
    *,
    canonical_urls: Sequence[str],
    guids: Sequence[str],
    title_hashes: Sequence[str],
    content_hashes: Sequence[str],
) -> ExistingKeys:
    """Return which of a batch's keys are already in ``articles`` (URLs across sources, GUIDs per source).

    One round trip: the four lookups are index scans joined with UNION ALL and told apart by ``kind``.
    """
    rows = conn.execute(
        sa.text(
            "SELECT 'url' AS kind, canonical_url AS key, NULL::bigint AS id, NULL::bigint AS story_id,"
            "  NULL::int AS source_id, NULL::timestamptz AS published_at, NULL AS title_hash,"
            "  NULL AS content_hash"
            " FROM articles WHERE canonical_url = ANY(CAST(:urls AS text[]))"
            " UNION ALL"
            " SELECT 'guid', guid, NULL, NULL, NULL, NULL, NULL, NULL"
            " FROM articles WHERE source_id = :sid AND guid = ANY(CAST(:guids AS text[]))"
            " UNION ALL"
            " SELECT 'title', title_hash, id, story_id, source_id, published_at, title_hash, content_hash"
            " FROM articles WHERE title_hash = ANY(CAST(:th AS text[]))"
            " UNION ALL"
            " SELECT 'content', content_hash, id, story_id, source_id, published_at, title_hash, content_hash"
            " FROM articles WHERE source_id = :sid AND content_hash = ANY(CAST(:ch AS text[]))"
        ),
        {
            "sid": source_id,
            "urls": list(canonical_urls),
            "guids": list(guids),
            "th": list(title_hashes),
            "ch": list(content_hashes),
        },
    )
    urls: set[str] = set()
    seen_guids: set[str] = set()
    by_title: dict[str, list[StoredKey]] = {}
    by_content: dict[str, list[StoredKey]] = {}
    for r in rows:
        if r.kind == "url":
            urls.add(r.key)
        elif r.kind == "guid":
            seen_guids.add(r.key)
        else:
            key = StoredKey(r.id, r.story_id, r.source_id, r.published_at, r.title_hash, r.content_hash)
            (by_title if r.kind == "title" else by_content).setdefault(r.key, []).append(key)
    return ExistingKeys(frozenset(urls), frozenset(seen_guids), by_title, by_content)


@dataclass(frozen=True)
class RecentArticle:
    """An article of the near-duplicate window: enough to rebuild the story index."""

    id: int
    story_id: int
    source_id: int
    title: str
    summary: str
    title_hash: str
    published_at: datetime


def recent_articles(conn: Connection, since: datetime) -> list[RecentArticle]:
    """Return the articles fetched or published since ``since``, oldest first."""
    rows = conn.execute(
        sa.text(
            "SELECT id, story_id, source_id, title, summary, title_hash, published_at FROM articles"
            " WHERE fetched_at >= :since OR published_at >= :since ORDER BY id"
        ),
        {"since": since},
    )
    return [RecentArticle(*r) for r in rows]


def allocate_article_ids(conn: Connection, count: int) -> list[int]:
    """Return ``count`` fresh article ids, so a story can point at its first article before it is stored."""
    if count <= 0:
        return []
    rows = conn.execute(
        sa.text("SELECT nextval(pg_get_serial_sequence('articles', 'id')) FROM generate_series(1, :n)"),
        {"n": count},
    )
    return [int(r[0]) for r in rows]


@dataclass
class NewArticle:
    """One article row to insert (``id`` and ``story_id`` already assigned)."""

    id: int
    source_id: int
    guid: str | None
    url: str | None
    canonical_url: str | None
    title: str
    summary: str
    body: str | None
    published_at: datetime
    date_missing: bool
    fetched_at: datetime
    language: str | None
    content_hash: str
    title_hash: str
    story_id: int
    tickers: list[str] = field(default_factory=list)


_ARTICLE_COLUMNS = (
    "id",
    "source_id",
    "guid",
    "url",
    "canonical_url",
    "title",
    "summary",
    "body",
    "published_at",
    "date_missing",
    "fetched_at",
    "language",
    "content_hash",
    "title_hash",
    "story_id",
)


_ARTICLE_TYPES = (
    "bigint",
    "int",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "timestamptz",
    "bool",
    "timestamptz",
    "text",
    "text",
    "text",
    "bigint",
)


def insert_articles(conn: Connection, articles: Sequence[NewArticle]) -> set[int]:
    """Insert ``articles`` in one statement, skipping any that conflict; return the ids actually stored."""
    if not articles:
        return set()
    params: dict[str, list[object]] = {col: [getattr(a, col) for a in articles] for col in _ARTICLE_COLUMNS}
    # Tickers never contain spaces, so one space-joined string per row carries a ragged text[][].
    params["tickers"] = [" ".join(a.tickers) for a in articles]
    arrays = ", ".join(f"CAST(:{c} AS {t}[])" for c, t in zip(_ARTICLE_COLUMNS, _ARTICLE_TYPES, strict=True))
    columns = ", ".join(_ARTICLE_COLUMNS)
    rows = conn.execute(
        sa.text(
            f"INSERT INTO articles ({columns}, tickers)"
            f" SELECT {columns},"
            "   CASE WHEN tickers = '' THEN '{}'::text[] ELSE string_to_array(tickers, ' ') END"
            f" FROM unnest({arrays}, CAST(:tickers AS text[])) AS a({columns}, tickers)"
            " ON CONFLICT DO NOTHING RETURNING id"
        ),
        params,
    )
    return {int(r[0]) for r in rows}


@dataclass
class FetchLogRow:
    """One source's outcome in one ingest run."""

    run_id: str
    source_id: int | None
    started_at: datetime
    status: str
    http_status: int | None
    bytes: int
    items_seen: int
    items_new: int
    duplicates: int
    invalid: int
    filtered: int
    duration_ms: int
    error: str | None


def insert_fetch_logs(conn: Connection, rows: Sequence[FetchLogRow]) -> None:
    """Append many fetch log rows in one statement."""
    if not rows:
        return
    cols = {name: [getattr(r, name) for r in rows] for name in FetchLogRow.__dataclass_fields__}
    conn.execute(
        sa.text(
            "INSERT INTO fetch_log (run_id, source_id, started_at, status, http_status, bytes, items_seen,"
            " items_new, duplicates, invalid, filtered, duration_ms, error)"
            " SELECT * FROM unnest(CAST(:run_id AS uuid[]), CAST(:source_id AS int[]),"
            " CAST(:started_at AS timestamptz[]), CAST(:status AS text[]), CAST(:http_status AS int[]),"
            " CAST(:bytes AS bigint[]), CAST(:items_seen AS int[]), CAST(:items_new AS int[]),"
            " CAST(:duplicates AS int[]), CAST(:invalid AS int[]), CAST(:filtered AS int[]),"
            " CAST(:duration_ms AS int[]), CAST(:error AS text[]))"
        ),
        cols,
    )


def touch_sources(conn: Connection, source_ids: Sequence[int], fetched_at: datetime) -> None:
    """Record that these sources were polled, leaving their validators as they are."""
    conn.execute(
        sa.text("UPDATE sources SET last_fetched_at = :at WHERE id = ANY(CAST(:ids AS int[]))"),
        {"at": fetched_at, "ids": list(source_ids)},
    )


def insert_fetch_log(conn: Connection, row: FetchLogRow) -> None:
    """Append one row to the fetch log."""
    conn.execute(
        sa.text(
            "INSERT INTO fetch_log (run_id, source_id, started_at, status, http_status, bytes, items_seen,"
            " items_new, duplicates, invalid, filtered, duration_ms, error)"
            " VALUES (CAST(:run_id AS uuid), :source_id, :started_at, :status, :http_status, :bytes,"
            " :items_seen, :items_new, :duplicates, :invalid, :filtered, :duration_ms, :error)"
        ),
        asdict(row),
    )


def fetch_log_for_run(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    """Return the fetch log rows of one run with the source name and URL, by source name."""
    rows = conn.execute(
        sa.text(
            "SELECT s.name AS source, s.url, f.* FROM fetch_log f LEFT JOIN sources s ON s.id = f.source_id"
            " WHERE f.run_id = CAST(:run_id AS uuid) ORDER BY s.name"
        ),
        {"run_id": run_id},
    )
    return [dict(r._mapping) for r in rows]


def article_totals(conn: Connection) -> tuple[int, int]:
    """Return ``(articles, distinct stories)`` stored."""
    row = conn.execute(sa.text("SELECT count(*), count(DISTINCT story_id) FROM articles")).one()
    return int(row[0]), int(row[1])


def latest_articles(conn: Connection, limit: int = 10) -> list[dict[str, Any]]:
    """Return the newest ``limit`` articles (by published_at) with their source name."""
    rows = conn.execute(
        sa.text(
            "SELECT a.id, a.story_id, s.name AS source, a.title, a.canonical_url, a.published_at, a.tickers"
            " FROM articles a JOIN sources s ON s.id = a.source_id"
            " ORDER BY a.published_at DESC, a.id DESC LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [dict(r._mapping) for r in rows]
