"""Every query finsent runs (schema lives in sql/). Functions take a SQLAlchemy Connection; the caller owns
the transaction. Parameters are always bound, never formatted into SQL text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from models.labels import SENTIMENT_NAMES
from pipeline.sources import Source

# --- schema bookkeeping (used by pipeline.db) ------------------------------------------------


def database_exists(conn: Connection, name: str) -> bool:
    """Return whether a database called ``name`` exists on the server."""
    row = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name})
    return row.scalar() is not None


def create_database(conn: Connection, name: str) -> None:
    """Create database ``name`` (an identifier, so quoted, not bound; needs an AUTOCOMMIT connection)."""
    quoted = conn.dialect.identifier_preparer.quote(name)
    conn.exec_driver_sql(f"CREATE DATABASE {quoted}")


def drop_database(conn: Connection, name: str) -> None:
    """Drop database ``name``, ending its sessions (PostgreSQL ≥ 13; needs an AUTOCOMMIT connection)."""
    quoted = conn.dialect.identifier_preparer.quote(name)
    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")


def lock_migrations(conn: Connection, lock_id: int) -> None:
    """Take the session-level advisory lock that serialises concurrent migrators."""
    conn.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})


def unlock_migrations(conn: Connection, lock_id: int) -> None:
    conn.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})


def ensure_migrations_table(conn: Connection) -> None:
    conn.execute(
        sa.text(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
    )


def applied_migrations(conn: Connection) -> dict[str, str]:
    """Return ``{version: checksum}`` of the migrations already applied."""
    rows = conn.execute(sa.text("SELECT version, checksum FROM schema_migrations"))
    return {row.version: row.checksum for row in rows}


def apply_migration_sql(conn: Connection, sql: str) -> None:
    """Run a whole migration file (many statements) on the current transaction."""
    # The raw DB-API cursor without parameters sends the text as is: '%' is no placeholder there.
    conn.connection.dbapi_connection.cursor().execute(sql)


def record_migration(conn: Connection, version: str, name: str, checksum: str) -> None:
    conn.execute(
        sa.text("INSERT INTO schema_migrations (version, name, checksum) VALUES (:v, :n, :c)"),
        {"v": version, "n": name, "c": checksum},
    )


# --- sources, articles, fetch log (ingestion) ------------------------------------------------


@dataclass(frozen=True)
class SourceState:
    """A source's row id and the validators of its last stored poll."""

    id: int
    name: str
    url: str
    etag: str | None
    last_modified: str | None


def upsert_sources(conn: Connection, sources: Sequence[Source]) -> dict[str, SourceState]:
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


def relax_commit_durability(conn: Connection) -> None:
    """Let this session's COMMITs return before their WAL reaches disk (no risk of corruption).

    For ingest batches: articles and the validators that vouch for them commit together, so a batch lost
    in a crash takes its validators with it and is simply fetched again on the next poll.
    """
    conn.execute(sa.text("SET synchronous_commit TO OFF"))


def guard_session(conn: Connection, idle_in_transaction_s: float, lock_timeout_s: float) -> None:
    """Bound what a dead or stuck client of this session can hold: the server ends a transaction left
    idle for ``idle_in_transaction_s``; a statement gives up after ``lock_timeout_s`` waiting for a lock."""
    conn.execute(
        sa.text(
            "SELECT set_config('idle_in_transaction_session_timeout', :idle, false),"
            " set_config('lock_timeout', :lock, false)"
        ),
        {"idle": f"{round(idle_in_transaction_s * 1000)}ms", "lock": f"{round(lock_timeout_s * 1000)}ms"},
    )


def restore_commit_durability(conn: Connection) -> None:
    """Undo :func:`relax_commit_durability` and :func:`guard_session` before the connection goes back to
    the pool."""
    conn.execute(sa.text("RESET synchronous_commit"))
    conn.execute(sa.text("RESET idle_in_transaction_session_timeout"))
    conn.execute(sa.text("RESET lock_timeout"))


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


# --- model versions, scores, rollups (scoring) -----------------------------------------------

# Arbitrary constant naming "rollup writes" for advisory locks (paired with the model version's hash).
_ROLLUP_LOCK_CLASS = 0x726F6C6C


@dataclass(frozen=True)
class ScoreRow:
    """One article's classification by one model version, as stored in ``scores``."""

    article_id: int
    topic: str
    topic_probs: dict[str, float]
    sentiment: str
    sentiment_probs: dict[str, float]
    score: float


def register_model_version(
    conn: Connection, version: str, name: str | None, path: str | None, metrics: dict[str, Any] | None
) -> bool:
    """Insert model version ``version`` (inactive); return whether it is new.

    A known version keeps its row but takes the new path (the model directory moved) and, when given,
    the new metrics.
    """
    row = conn.execute(
        sa.text(
            "INSERT INTO model_versions (version, name, path, metrics)"
            " VALUES (:version, :name, :path, CAST(:metrics AS jsonb))"
            " ON CONFLICT (version) DO UPDATE SET path = COALESCE(EXCLUDED.path, model_versions.path),"
            "   name = COALESCE(EXCLUDED.name, model_versions.name),"
            "   metrics = COALESCE(EXCLUDED.metrics, model_versions.metrics)"
            " RETURNING (xmax = 0) AS inserted"
        ),
        {
            "version": version,
            "name": name,
            "path": path,
            "metrics": None if metrics is None else json.dumps(metrics, sort_keys=True),
        },
    )
    return bool(row.scalar_one())


def model_version(conn: Connection, version: str) -> sa.Row[Any] | None:
    """Return the ``model_versions`` row of ``version``, or None."""
    return conn.execute(
        sa.text(
            "SELECT version, name, path, metrics, created_at, active FROM model_versions WHERE version = :v"
        ),
        {"v": version},
    ).one_or_none()


def active_model_version(conn: Connection) -> str | None:
    """Return the active model version, or None when no version is active yet."""
    return conn.execute(sa.text("SELECT version FROM model_versions WHERE active")).scalar_one_or_none()


def model_versions(conn: Connection) -> list[sa.Row[Any]]:
    """Return every model version with its ``scored`` count, newest first."""
    rows = conn.execute(
        sa.text(
            "SELECT mv.version, mv.name, mv.path, mv.metrics, mv.created_at, mv.active,"
            " (SELECT count(*) FROM scores s WHERE s.model_version = mv.version) AS scored"
            " FROM model_versions mv ORDER BY mv.created_at DESC, mv.version"
        )
    )
    return list(rows)


def activate_model_version(conn: Connection, version: str) -> bool:
    """Make ``version`` the only active model version; return False (changing nothing) if it is unknown."""
    exists = conn.execute(
        sa.text("SELECT 1 FROM model_versions WHERE version = :version FOR UPDATE"), {"version": version}
    ).scalar()
    if exists is None:
        return False
    # Two statements: the partial unique index is checked row by row, so one UPDATE flipping both rows
    # could briefly see two active versions.
    params = {"version": version}
    conn.execute(
        sa.text("UPDATE model_versions SET active = false WHERE active AND version <> :version"), params
    )
    conn.execute(sa.text("UPDATE model_versions SET active = true WHERE version = :version"), params)
    return True


def pending_articles(
    conn: Connection, version: str, after_id: int, limit: int, lead_chars: int
) -> list[sa.Row[Any]]:
    """Return up to ``limit`` articles with id > ``after_id`` that ``version`` has not scored, by id.

    Rows carry ``id``, ``title``, ``summary`` and ``lead`` (the body's first ``lead_chars`` characters).
    """
    rows = conn.execute(
        sa.text(
            "SELECT a.id, a.title, a.summary, left(a.body, :lead_chars) AS lead FROM articles a"
            " WHERE a.id > :after_id AND NOT EXISTS ("
            "   SELECT 1 FROM scores s WHERE s.article_id = a.id AND s.model_version = :version)"
            " ORDER BY a.id LIMIT :limit"
        ),
        {"version": version, "after_id": after_id, "limit": limit, "lead_chars": lead_chars},
    )
    return list(rows)


def count_pending_articles(conn: Connection, version: str) -> int:
    """Return how many articles ``version`` has not scored yet."""
    return conn.execute(
        sa.text(
            "SELECT count(*) FROM articles a WHERE NOT EXISTS ("
            " SELECT 1 FROM scores s WHERE s.article_id = a.id AND s.model_version = :version)"
        ),
        {"version": version},
    ).scalar_one()


def lock_rollups(conn: Connection, version: str) -> None:
    """Serialise writers of ``version``'s scores and rollups until this transaction ends.

    Rollup buckets are recomputed from the scores a transaction can see; two writers recomputing the
    same bucket at once would each miss the other's uncommitted scores.
    """
    conn.execute(
        sa.text("SELECT pg_advisory_xact_lock(:cls, hashtext(:version))"),
        {"cls": _ROLLUP_LOCK_CLASS, "version": version},
    )


def insert_scores(conn: Connection, version: str, rows: Sequence[ScoreRow]) -> list[int]:
    """Insert ``rows`` as ``version``'s scores; return the article ids actually inserted.

    Articles already scored by ``version`` (a rerun, a concurrent scorer) or deleted since they were
    read are skipped, not errors.
    """
    if not rows:
        return []
    result = conn.execute(
        sa.text(
            "INSERT INTO scores (article_id, model_version, topic, topic_probs, sentiment, sentiment_probs,"
            " score, published_at)"
            " SELECT t.article_id, :version, t.topic, CAST(t.topic_probs AS jsonb), t.sentiment,"
            "   CAST(t.sentiment_probs AS jsonb), t.score, a.published_at"
            " FROM unnest(CAST(:ids AS bigint[]), CAST(:topics AS text[]), CAST(:topic_probs AS text[]),"
            "             CAST(:sentiments AS text[]), CAST(:sentiment_probs AS text[]),"
            "             CAST(:scores AS real[]))"
            "   AS t(article_id, topic, topic_probs, sentiment, sentiment_probs, score)"
            " JOIN articles a ON a.id = t.article_id"
            " ON CONFLICT (article_id, model_version) DO NOTHING"
            " RETURNING article_id"
        ),
        {
            "version": version,
            "ids": [r.article_id for r in rows],
            "topics": [r.topic for r in rows],
            "topic_probs": [json.dumps(r.topic_probs, sort_keys=True) for r in rows],
            "sentiments": [r.sentiment for r in rows],
            "sentiment_probs": [json.dumps(r.sentiment_probs, sort_keys=True) for r in rows],
            "scores": [float(r.score) for r in rows],
        },
    )
    return sorted(result.scalars())


# Aggregates the ``score_facts`` rows that {source} selects into rollup rows. Counting happens per
# story first so that ``stories`` and ``neg_stories`` count each near-duplicate cluster once.
_ROLLUP_AGGREGATE = """
INSERT INTO rollups_hourly (model_version, dimension, value, bucket, articles, stories, negative, neutral,
                            positive, neg_stories, score_sum)
SELECT model_version, dimension, value, bucket, sum(n), count(*), sum(neg), sum(neu), sum(pos),
       -- A story is negative when more of its scored copies in the bucket are negative than not.
       count(*) FILTER (WHERE 2 * neg > n), sum(score_sum)
FROM (
    SELECT f.model_version, f.dimension, f.value, f.bucket, f.story_id,
           count(*) AS n,
           count(*) FILTER (WHERE f.sentiment = 'negative') AS neg,
           count(*) FILTER (WHERE f.sentiment = 'neutral') AS neu,
           count(*) FILTER (WHERE f.sentiment = 'positive') AS pos,
           sum(f.score) AS score_sum
    {source}
    GROUP BY f.model_version, f.dimension, f.value, f.bucket, f.story_id
) AS per_story
GROUP BY model_version, dimension, value, bucket
ON CONFLICT (model_version, dimension, value, bucket) DO UPDATE SET
    articles = EXCLUDED.articles, stories = EXCLUDED.stories, negative = EXCLUDED.negative,
    neutral = EXCLUDED.neutral, positive = EXCLUDED.positive, neg_stories = EXCLUDED.neg_stories,
    score_sum = EXCLUDED.score_sum
"""

# The (dimension, value, hour) buckets the given articles fall in, recomputed from all of their scores.
# The articles of the touched hours are found by published_at (indexed) and handed over as an array, so
# the scores are then looked up by primary key: the cost follows the touched hours, not the history.
_REFRESH_BUCKETS = sa.text(
    "WITH touched AS ("
    "  SELECT DISTINCT dimension, value, bucket FROM score_facts"
    "  WHERE model_version = :version AND article_id = ANY(CAST(:ids AS bigint[]))"
    ")"
    + _ROLLUP_AGGREGATE.format(
        source="FROM score_facts f"
        " JOIN touched t ON t.dimension = f.dimension AND t.value = f.value AND t.bucket = f.bucket"
        " WHERE f.model_version = :version AND f.article_id = ANY(ARRAY("
        "   SELECT a.id FROM (SELECT DISTINCT bucket FROM touched) AS h"
        "   JOIN articles a ON a.published_at >= h.bucket AND a.published_at < h.bucket + interval '1 hour'))"
    )
)

_REBUILD_VERSION = sa.text(
    _ROLLUP_AGGREGATE.format(
        source="FROM score_facts f WHERE f.model_version = :version AND f.published_at >= :since"
    )
)


def refresh_rollups(conn: Connection, version: str, article_ids: Sequence[int]) -> int:
    """Recompute ``version``'s rollup buckets that ``article_ids`` fall in; return the buckets written.

    Buckets are recomputed from the stored scores, not incremented, so replaying a batch never counts
    an article twice. Call under ``lock_rollups`` in the transaction that inserted the scores.
    """
    if not article_ids:
        return 0
    # The planner cannot know how few articles an hour holds; its pessimistic estimate would trigger JIT
    # compilation, which costs several times what this small recount does.
    conn.execute(sa.text("SET LOCAL jit = off"))
    return conn.execute(_REFRESH_BUCKETS, {"version": version, "ids": list(article_ids)}).rowcount


def rebuild_rollups(conn: Connection, version: str, since: datetime) -> int:
    """Replace ``version``'s rollup rows from hour ``since`` on with a recount of its scores; return rows."""
    params = {"version": version, "since": since}
    conn.execute(
        sa.text("DELETE FROM rollups_hourly WHERE model_version = :version AND bucket >= :since"), params
    )
    return conn.execute(_REBUILD_VERSION, params).rowcount


def first_article_hour(conn: Connection) -> datetime | None:
    """Return the UTC hour of the oldest stored article's publication, or None when there are none."""
    return conn.execute(sa.text("SELECT date_trunc('hour', min(published_at), 'UTC') FROM articles")).scalar()


def rollup_versions(conn: Connection) -> list[str]:
    """Return every model version that has scores, rollups or a registration."""
    rows = conn.execute(
        sa.text(
            "SELECT version FROM model_versions"
            " UNION SELECT DISTINCT model_version FROM rollups_hourly ORDER BY 1"
        )
    )
    return list(rows.scalars())


# --- alerts, silences, outbox (alerting) ------------------------------------------------------

# Arbitrary constant naming "alert evaluation" for an advisory lock: one evaluator at a time.
_ALERT_LOCK_ID = 0x616C7274


def lock_alert_evaluation(conn: Connection) -> None:
    """Serialise alert evaluations until this transaction ends (two schedulers must not both transition)."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ALERT_LOCK_ID})


def alert_model_version(conn: Connection) -> str | None:
    """Return the model version whose rollups alerts read: the active one, else the latest rolled up."""
    return conn.execute(
        sa.text(
            "SELECT COALESCE("
            " (SELECT version FROM model_versions WHERE active),"
            " (SELECT model_version FROM rollups_hourly ORDER BY bucket DESC LIMIT 1))"
        )
    ).scalar_one_or_none()


def window_counts(
    conn: Connection,
    version: str,
    dimension: str,
    base_start: datetime,
    base_end: datetime,
    win_start: datetime,
    end: datetime,
) -> list[sa.Row[Any]]:
    """Return per value of ``dimension``: stories and neg_stories in [win_start, end) and in the baseline
    [base_start, base_end) as ``stories, neg_stories, base_stories, base_neg`` (a gap between is skipped)."""
    rows = conn.execute(
        sa.text(
            "SELECT value,"
            " COALESCE(sum(stories) FILTER (WHERE bucket >= :win_start), 0)::int AS stories,"
            " COALESCE(sum(neg_stories) FILTER (WHERE bucket >= :win_start), 0)::int AS neg_stories,"
            " COALESCE(sum(stories) FILTER (WHERE bucket < :base_end), 0)::int AS base_stories,"
            " COALESCE(sum(neg_stories) FILTER (WHERE bucket < :base_end), 0)::int AS base_neg"
            " FROM rollups_hourly"
            " WHERE model_version = :version AND dimension = :dimension"
            "   AND bucket >= :base_start AND bucket < :end"
            "   AND (bucket < :base_end OR bucket >= :win_start)"
            " GROUP BY value"
        ),
        {
            "version": version,
            "dimension": dimension,
            "base_start": base_start,
            "base_end": base_end,
            "win_start": win_start,
            "end": end,
        },
    )
    return list(rows)


def write_story_counts(
    conn: Connection,
    version: str,
    rows: Sequence[tuple[str, str, datetime, int, int]],
) -> int:
    """Write ``(dimension, value, bucket, stories, neg_stories)`` straight into rollups_hourly; return rows.

    For recorded or synthetic histories (backtests, benchmarks): each story counts as one article,
    negative or neutral. Existing buckets are replaced.
    """
    if not rows:
        return 0
    return conn.execute(
        sa.text(
            "INSERT INTO rollups_hourly (model_version, dimension, value, bucket, articles, stories,"
            " negative, neutral, positive, neg_stories, score_sum)"
            " SELECT :version, t.dimension, t.value, t.bucket, t.stories, t.stories, t.neg,"
            "   t.stories - t.neg, 0, t.neg, -t.neg::double precision"
            " FROM unnest(CAST(:dimensions AS text[]), CAST(:values AS text[]),"
            "             CAST(:buckets AS timestamptz[]), CAST(:stories AS int[]), CAST(:negs AS int[]))"
            "   AS t(dimension, value, bucket, stories, neg)"
            " ON CONFLICT (model_version, dimension, value, bucket) DO UPDATE SET"
            "   articles = EXCLUDED.articles, stories = EXCLUDED.stories, negative = EXCLUDED.negative,"
            "   neutral = EXCLUDED.neutral, positive = 0, neg_stories = EXCLUDED.neg_stories,"
            "   score_sum = EXCLUDED.score_sum"
        ),
        {
            "version": version,
            "dimensions": [r[0] for r in rows],
            "values": [r[1] for r in rows],
            "buckets": [r[2] for r in rows],
            "stories": [int(r[3]) for r in rows],
            "negs": [int(r[4]) for r in rows],
        },
    ).rowcount


def guid_prefix_last_published(conn: Connection, prefix: str) -> datetime | None:
    """Return the latest published_at of articles whose GUID starts with ``prefix`` (None: none)."""
    return conn.execute(
        sa.text("SELECT max(published_at) FROM articles WHERE starts_with(guid, :prefix)"), {"prefix": prefix}
    ).scalar_one()


def rollup_story_series(
    conn: Connection, version: str, dimension: str, start: datetime, end: datetime
) -> list[sa.Row[Any]]:
    """Return ``value, bucket, stories, neg_stories`` rows of ``dimension`` with start <= bucket < end."""
    rows = conn.execute(
        sa.text(
            "SELECT value, bucket, stories, neg_stories FROM rollups_hourly"
            " WHERE model_version = :version AND dimension = :dimension"
            "   AND bucket >= :start AND bucket < :end AND stories > 0"
        ),
        {"version": version, "dimension": dimension, "start": start, "end": end},
    )
    return list(rows)


def negative_headlines(
    conn: Connection, version: str, dimension: str, value: str, start: datetime, end: datetime, limit: int
) -> list[sa.Row[Any]]:
    """Return the most negative stories of one dimension value published in [start, end), one row per
    story (its most negative copy): ``title, url, source, published_at, score, copies``."""
    rows = conn.execute(
        sa.text(
            "SELECT title, url, source, published_at, score, copies FROM ("
            "  SELECT DISTINCT ON (f.story_id) a.title, COALESCE(a.canonical_url, a.url) AS url,"
            "    src.name AS source, a.published_at, f.score,"
            "    count(*) OVER (PARTITION BY f.story_id) AS copies"
            "  FROM score_facts f"
            "  JOIN articles a ON a.id = f.article_id"
            "  JOIN sources src ON src.id = a.source_id"
            "  WHERE f.model_version = :version AND f.dimension = :dimension AND f.value = :value"
            "    AND f.sentiment = 'negative' AND f.published_at >= :start AND f.published_at < :end"
            "  ORDER BY f.story_id, f.score, a.published_at"
            ") AS per_story ORDER BY score, published_at DESC LIMIT :limit"
        ),
        {
            "version": version,
            "dimension": dimension,
            "value": value,
            "start": start,
            "end": end,
            "limit": limit,
        },
    )
    return list(rows)


_ALERT_STATE_COLUMNS = (
    "fingerprint",
    "rule",
    "dimension",
    "value",
    "status",
    "severity",
    "pending_since",
    "firing_since",
    "last_breach_at",
    "resolved_at",
    "notified",
    "neg_share",
    "baseline",
    "stories",
    "neg_stories",
    "base_stories",
    "p_value",
    "evaluated_at",
    "inhibited_by",
    "expected_negatives",
)


def alert_states(conn: Connection, rules: Sequence[str]) -> list[sa.Row[Any]]:
    """Return the stored alert states of ``rules`` (every column of ``alert_state``)."""
    rows = conn.execute(
        sa.text(f"SELECT {', '.join(_ALERT_STATE_COLUMNS)} FROM alert_state WHERE rule = ANY(:rules)"),
        {"rules": list(rules)},
    )
    return list(rows)


def open_alerts(conn: Connection) -> list[sa.Row[Any]]:
    """Return the pending and firing alert states, firing first."""
    rows = conn.execute(
        sa.text(
            f"SELECT {', '.join(_ALERT_STATE_COLUMNS)} FROM alert_state WHERE status <> 'inactive'"
            " ORDER BY status = 'firing' DESC, rule, dimension, value"
        )
    )
    return list(rows)


def save_alert_state(conn: Connection, state: dict[str, Any]) -> None:
    """Insert or update one ``alert_state`` row; ``state`` has every column of the table."""
    columns = ", ".join(_ALERT_STATE_COLUMNS)
    values = ", ".join(f":{c}" for c in _ALERT_STATE_COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _ALERT_STATE_COLUMNS if c != "fingerprint")
    conn.execute(
        sa.text(
            f"INSERT INTO alert_state ({columns}) VALUES ({values})"
            f" ON CONFLICT (fingerprint) DO UPDATE SET {updates}"
        ),
        {c: state[c] for c in _ALERT_STATE_COLUMNS},
    )


def window_counts_without_tickers(
    conn: Connection,
    version: str,
    dimension: str,
    value: str,
    start: datetime,
    end: datetime,
    tickers: Sequence[str],
) -> tuple[int, int, list[str]]:
    """Return ``(stories, neg_stories, tickers found)`` of one dimension value in [start, end), counted
    as the rollups count them, after dropping every article that names one of ``tickers``; the third
    item lists the ``tickers`` that the dropped articles named.
    """
    row = conn.execute(
        sa.text(
            # One read of the window's articles; "named" marks those that the count leaves out.
            "WITH facts AS MATERIALIZED ("
            "  SELECT f.bucket, f.story_id, f.sentiment, a.tickers,"
            "   a.tickers && CAST(:tickers AS text[]) AS named"
            "  FROM score_facts f JOIN articles a ON a.id = f.article_id"
            "  WHERE f.model_version = :version AND f.dimension = :dimension AND f.value = :value"
            "    AND f.published_at >= :start AND f.published_at < :end"
            "), per_story AS ("
            "  SELECT count(*) FILTER (WHERE NOT named) AS n,"
            "   count(*) FILTER (WHERE NOT named AND sentiment = 'negative') AS neg"
            "  FROM facts GROUP BY bucket, story_id"
            ")"
            " SELECT (SELECT count(*) FROM per_story WHERE n > 0) AS stories,"
            "  (SELECT count(*) FROM per_story WHERE n > 0 AND 2 * neg > n) AS neg_stories,"
            "  ARRAY(SELECT DISTINCT t FROM facts, unnest(facts.tickers) AS t"
            "   WHERE named AND t = ANY(CAST(:tickers AS text[])) ORDER BY t) AS found"
        ),
        {
            "version": version,
            "dimension": dimension,
            "value": value,
            "start": start,
            "end": end,
            "tickers": list(tickers),
        },
    ).one()
    return int(row.stories), int(row.neg_stories), list(row.found)


def insert_alert_event(conn: Connection, event: dict[str, Any]) -> int | None:
    """Record one transition; return its id, or None when this (fingerprint, transition, at) exists."""
    return conn.execute(
        sa.text(
            "INSERT INTO alert_events (fingerprint, transition, at, rule, dimension, value, severity,"
            " neg_share, baseline, stories, neg_stories, base_stories, p_value, expected_negatives,"
            " silenced, inhibited_by)"
            " VALUES (:fingerprint, :transition, :at, :rule, :dimension, :value, :severity, :neg_share,"
            " :baseline, :stories, :neg_stories, :base_stories, :p_value, :expected_negatives,"
            " :silenced, :inhibited_by)"
            " ON CONFLICT (fingerprint, transition, at) DO NOTHING RETURNING id"
        ),
        event,
    ).scalar_one_or_none()


def release_alert_event(conn: Connection, fingerprint: str, fired_at: datetime, at: datetime) -> int | None:
    """Mark the held-back (inhibited or silenced) firing event of ``fingerprint`` at ``fired_at`` released
    at ``at``; return its id, or None when it was released already (a rerun) or does not exist."""
    return conn.execute(
        sa.text(
            "UPDATE alert_events SET released_at = :at"
            " WHERE fingerprint = :fingerprint AND transition = 'firing' AND at = :fired_at"
            "   AND released_at IS NULL RETURNING id"
        ),
        {"fingerprint": fingerprint, "fired_at": fired_at, "at": at},
    ).scalar_one_or_none()


def alert_events(conn: Connection, since: datetime | None = None) -> list[sa.Row[Any]]:
    """Return the recorded transitions at or after ``since`` (all by default), oldest first."""
    rows = conn.execute(
        sa.text(
            "SELECT id, fingerprint, transition, at, rule, dimension, value, severity, neg_share, baseline,"
            " stories, neg_stories, base_stories, p_value, silenced, inhibited_by, released_at, outbox_id"
            " FROM alert_events"
            " WHERE CAST(:since AS timestamptz) IS NULL OR at >= :since ORDER BY at, id"
        ),
        {"since": since},
    )
    return list(rows)


def enqueue_email(conn: Connection, email: dict[str, Any]) -> int:
    """Queue one email (idempotent on ``group_key``); return its outbox id, new or existing."""
    new_id = conn.execute(
        sa.text(
            "INSERT INTO alert_outbox (group_key, message_id, transition, recipients, subject, body_text,"
            " body_html, next_attempt_at)"
            " VALUES (:group_key, :message_id, :transition, :recipients, :subject, :body_text, :body_html,"
            " :next_attempt_at)"
            " ON CONFLICT (group_key) DO NOTHING RETURNING id"
        ),
        email,
    ).scalar_one_or_none()
    if new_id is not None:
        return int(new_id)
    return int(
        conn.execute(
            sa.text("SELECT id FROM alert_outbox WHERE group_key = :group_key"),
            {"group_key": email["group_key"]},
        ).scalar_one()
    )


def link_events_to_email(conn: Connection, event_ids: Sequence[int], outbox_id: int) -> None:
    """Record which outbox email announces the transitions ``event_ids``."""
    conn.execute(
        sa.text("UPDATE alert_events SET outbox_id = :outbox_id WHERE id = ANY(:ids)"),
        {"outbox_id": outbox_id, "ids": list(event_ids)},
    )


def release_stale_claims(conn: Connection, claimed_before: datetime) -> int:
    """Mark emails claimed before ``claimed_before`` and never recorded as ``unconfirmed``; return how many.

    Their sender stopped (crashed) after claiming; the server may or may not have the message, so they
    are not resent automatically (a duplicate alert email is the failure this outbox exists to prevent).
    """
    return conn.execute(
        sa.text(
            "UPDATE alert_outbox SET status = 'unconfirmed',"
            " last_error = COALESCE(last_error || '; ', '') || 'sender stopped after claiming at '"
            "   || claimed_at::text || '; delivery not confirmed, not resent'"
            " WHERE status = 'sending' AND claimed_at < :claimed_before"
        ),
        {"claimed_before": claimed_before},
    ).rowcount


def claim_due_email(conn: Connection, now: datetime) -> sa.Row[Any] | None:
    """Claim the oldest pending email due at ``now`` (status ``sending``, one more attempt); return it."""
    return conn.execute(
        sa.text(
            "UPDATE alert_outbox SET status = 'sending', claimed_at = :now, attempts = attempts + 1"
            " WHERE id = (SELECT id FROM alert_outbox WHERE status = 'pending' AND next_attempt_at <= :now"
            "             ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, message_id, transition, recipients, subject, body_text, body_html, attempts,"
            "   created_at"
        ),
        {"now": now},
    ).one_or_none()


def mark_email_sent(conn: Connection, outbox_id: int, now: datetime) -> None:
    """Record that the SMTP server accepted email ``outbox_id``."""
    conn.execute(
        sa.text(
            "UPDATE alert_outbox SET status = 'sent', sent_at = :now, last_error = NULL"
            " WHERE id = :id AND status = 'sending'"
        ),
        {"id": outbox_id, "now": now},
    )


def mark_email_unsent(conn: Connection, outbox_id: int, error: str, next_attempt_at: datetime | None) -> None:
    """Record an attempt that surely did not deliver: retry at ``next_attempt_at`` (None: give up)."""
    conn.execute(
        sa.text(
            "UPDATE alert_outbox SET last_error = :error, claimed_at = NULL,"
            " status = CASE WHEN CAST(:next AS timestamptz) IS NULL THEN 'failed' ELSE 'pending' END,"
            " next_attempt_at = COALESCE(CAST(:next AS timestamptz), next_attempt_at)"
            " WHERE id = :id AND status = 'sending'"
        ),
        {"id": outbox_id, "error": error, "next": next_attempt_at},
    )


def mark_email_unconfirmed(conn: Connection, outbox_id: int, error: str) -> None:
    """Record an attempt that failed after the message was handed over: it is not resent automatically."""
    conn.execute(
        sa.text(
            "UPDATE alert_outbox SET status = 'unconfirmed', last_error = :error"
            " WHERE id = :id AND status = 'sending'"
        ),
        {"id": outbox_id, "error": error},
    )


def outbox_counts(conn: Connection) -> dict[str, int]:
    """Return ``{status: emails}`` over the whole outbox."""
    rows = conn.execute(sa.text("SELECT status, count(*) FROM alert_outbox GROUP BY status"))
    return {status: int(n) for status, n in rows}


def outbox_emails(conn: Connection, status: str | None = None) -> list[sa.Row[Any]]:
    """Return every outbox email (or those in ``status``) with its delivery bookkeeping, oldest first."""
    rows = conn.execute(
        sa.text(
            "SELECT id, group_key, message_id, transition, recipients, subject, body_text, body_html, status,"
            " attempts, next_attempt_at, claimed_at, sent_at, last_error, created_at"
            " FROM alert_outbox WHERE CAST(:status AS text) IS NULL OR status = :status ORDER BY id"
        ),
        {"status": status},
    )
    return list(rows)


def requeue_email(conn: Connection, outbox_id: int, now: datetime) -> str | None:
    """Return the status email ``outbox_id`` had (None: no such email); a ``failed`` or ``unconfirmed``
    one goes back to ``pending`` with its attempts reset, any other is left as it is."""
    return conn.execute(
        sa.text(
            "WITH old AS (SELECT id, status FROM alert_outbox WHERE id = :id FOR UPDATE),"
            " requeued AS ("
            "   UPDATE alert_outbox AS o SET status = 'pending', attempts = 0, next_attempt_at = :now,"
            "   claimed_at = NULL,"
            "   last_error = COALESCE(o.last_error || '; ', '') || 'requeued by an operator at ' || :now_text"
            "   FROM old WHERE o.id = old.id AND old.status IN ('failed', 'unconfirmed') RETURNING o.id)"
            " SELECT status FROM old"
        ),
        {"id": outbox_id, "now": now, "now_text": now.isoformat(timespec="seconds")},
    ).scalar_one_or_none()


def add_silence(
    conn: Connection,
    *,
    rule: str | None,
    dimension: str | None,
    value: str | None,
    starts_at: datetime,
    ends_at: datetime,
    comment: str,
    created_by: str | None,
) -> int:
    """Insert a silence; return its id."""
    return int(
        conn.execute(
            sa.text(
                "INSERT INTO alert_silences (rule, dimension, value, starts_at, ends_at, comment, created_by)"
                " VALUES (:rule, :dimension, :value, :starts_at, :ends_at, :comment, :created_by)"
                " RETURNING id"
            ),
            {
                "rule": rule,
                "dimension": dimension,
                "value": value,
                "starts_at": starts_at,
                "ends_at": ends_at,
                "comment": comment,
                "created_by": created_by,
            },
        ).scalar_one()
    )


_SILENCE_COLUMNS = (
    "id, rule, dimension, value, starts_at, ends_at, comment, created_by, created_at, expired_at"
)


def active_silences(conn: Connection, at: datetime) -> list[sa.Row[Any]]:
    """Return the silences in force at ``at``."""
    rows = conn.execute(
        sa.text(
            f"SELECT {_SILENCE_COLUMNS} FROM alert_silences"
            " WHERE starts_at <= :at AND ends_at > :at AND (expired_at IS NULL OR expired_at > :at)"
            " ORDER BY id"
        ),
        {"at": at},
    )
    return list(rows)


def silences(conn: Connection, now: datetime, include_expired: bool) -> list[sa.Row[Any]]:
    """Return silences not yet over at ``now`` (or all of them), by start."""
    rows = conn.execute(
        sa.text(
            f"SELECT {_SILENCE_COLUMNS} FROM alert_silences"
            " WHERE :all OR (ends_at > :now AND (expired_at IS NULL OR expired_at > :now))"
            " ORDER BY starts_at, id"
        ),
        {"now": now, "all": include_expired},
    )
    return list(rows)


def expire_silence(conn: Connection, silence_id: int, now: datetime) -> bool:
    """End silence ``silence_id`` at ``now``; return False when there is no such silence still in force."""
    return (
        conn.execute(
            sa.text(
                "UPDATE alert_silences SET expired_at = :now"
                " WHERE id = :id AND ends_at > :now AND (expired_at IS NULL OR expired_at > :now)"
            ),
            {"id": silence_id, "now": now},
        ).rowcount
        == 1
    )


# --- maintenance: retention, rollup consistency, statistics ---------------------------------------


def delete_articles_before(conn: Connection, cutoff: datetime, limit: int) -> int:
    """Return how many articles from before ``cutoff`` were deleted (at most ``limit``, scores cascade)."""
    result = conn.execute(
        sa.text(
            "DELETE FROM articles WHERE id IN ("
            " SELECT id FROM articles WHERE published_at < :cutoff ORDER BY published_at LIMIT :limit)"
        ),
        {"cutoff": cutoff, "limit": limit},
    )
    return result.rowcount


def delete_fetch_log_before(conn: Connection, cutoff: datetime) -> int:
    """Return how many fetch log rows of fetches started before ``cutoff`` were deleted."""
    result = conn.execute(sa.text("DELETE FROM fetch_log WHERE started_at < :cutoff"), {"cutoff": cutoff})
    return result.rowcount


def rollup_mismatches(conn: Connection, since: datetime, limit: int) -> list[sa.Row]:
    """Return up to ``limit`` rollup rows from ``since`` on whose counts differ from a recount of the scores.

    Each row has the key (model_version, dimension, value, bucket) and the expected (recounted) and
    stored ``articles``, ``stories``, ``negative``, ``neutral``, ``positive``; a missing side is NULL.
    ``since`` should be on the hour so no bucket is half counted.
    """
    rows = conn.execute(
        sa.text(
            """
            WITH expected AS (
                SELECT model_version, dimension, value, bucket,
                       count(*) AS articles,
                       count(DISTINCT story_id) AS stories,
                       count(*) FILTER (WHERE sentiment = 'negative') AS negative,
                       count(*) FILTER (WHERE sentiment = 'neutral') AS neutral,
                       count(*) FILTER (WHERE sentiment = 'positive') AS positive
                FROM score_facts
                WHERE published_at >= :since
                GROUP BY model_version, dimension, value, bucket
            ), stored AS (
                SELECT model_version, dimension, value, bucket, articles, stories, negative, neutral, positive
                FROM rollups_hourly
                WHERE bucket >= :since
            )
            SELECT model_version, dimension, value, bucket,
                   e.articles AS expected_articles, s.articles AS stored_articles,
                   e.stories AS expected_stories, s.stories AS stored_stories,
                   e.negative AS expected_negative, s.negative AS stored_negative,
                   e.neutral AS expected_neutral, s.neutral AS stored_neutral,
                   e.positive AS expected_positive, s.positive AS stored_positive
            FROM expected e
            FULL JOIN stored s USING (model_version, dimension, value, bucket)
            WHERE (e.articles, e.stories, e.negative, e.neutral, e.positive)
                  IS DISTINCT FROM (s.articles, s.stories, s.negative, s.neutral, s.positive)
              -- an emptied bucket left at zero is consistent with no scores at all
              AND NOT (e.articles IS NULL AND s.articles = 0)
            ORDER BY bucket, model_version, dimension, value
            LIMIT :limit
            """
        ),
        {"since": since, "limit": limit},
    )
    return list(rows)


def analyze_tables(conn: Connection) -> list[str]:
    """Refresh the planner statistics of the tables the dashboard and alerts query; return their names."""
    tables = ["sources", "articles", "fetch_log", "scores", "rollups_hourly"]
    # ANALYZE takes no bound parameters; the names are this module's constants, not input.
    conn.exec_driver_sql(f"ANALYZE {', '.join(tables)}")
    return tables


# --- dashboard (read-only) -------------------------------------------------------------------
# Every dashboard read goes through these functions on a read-only session; only the silence form writes,
# through pipeline.alerts.add_silence on the normal engine. Charts read rollups_hourly (one row per
# model version, dimension value and hour), never a scan of the scores.

DASHBOARD_ROLE = "finsent_readonly"
# Memory per sort or bitmap in a dashboard session. A text search for a common word collects every match
# in a bitmap before the time sort (~300k at 10M articles); at PostgreSQL's 4 MB default the bitmap
# turns lossy and every article on those pages is re-read and re-parsed (6.4 s instead of 0.16 s).
DASHBOARD_WORK_MEM = "64MB"
_GRAINS = ("hour", "day")
# websearch_to_tsquery accepts what people type into a search box: words, "quoted phrases", or, -not.
_TEXT_MATCH = (
    "to_tsvector('english'::regconfig, a.title || ' ' || a.summary)"
    " @@ websearch_to_tsquery('english'::regconfig, :q)"
)


def prepare_read_only_session(dbapi_connection: Any) -> bool:
    """Return whether a new DB-API connection took the read-only role; its transactions are read-only
    and its sorts and bitmaps get ``DASHBOARD_WORK_MEM``.

    Called once per pooled connection. A user who is not a member of ``finsent_readonly`` (or a server
    where the role could not be created) keeps its own role but still cannot write.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cursor.execute("SELECT set_config('work_mem', %(mem)s, false)", {"mem": DASHBOARD_WORK_MEM})
        cursor.execute(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(role)s)"
            " THEN pg_has_role(current_user, %(role)s, 'MEMBER') ELSE false END",
            {"role": DASHBOARD_ROLE},
        )
        member = bool(cursor.fetchone()[0])
        if member:
            # A role name is an identifier, not a value: this module's constant, never input.
            cursor.execute(f"SET ROLE {DASHBOARD_ROLE}")
    finally:
        cursor.close()
    dbapi_connection.commit()
    return member


def session_is_read_only(conn: Connection) -> tuple[str, bool]:
    """Return ``(current role, whether transactions default to read-only)`` of this session."""
    row = conn.execute(
        sa.text("SELECT current_user, current_setting('default_transaction_read_only') = 'on'")
    ).one()
    return str(row[0]), bool(row[1])


def dashboard_version(conn: Connection) -> str | None:
    """Return the model version the dashboard shows: the active one, else the latest rolled up."""
    return alert_model_version(conn)


def dashboard_filter_values(conn: Connection, version: str, since: datetime) -> dict[str, list[str]]:
    """Return ``{dimension: values}`` for the filters: topics and tickers seen since ``since`` (busiest
    first, from the rollups) and every configured source (by name)."""
    rows = conn.execute(
        sa.text(
            "SELECT dimension, value, sum(articles) AS n FROM rollups_hourly"
            " WHERE model_version = :version AND dimension IN ('topic', 'ticker') AND bucket >= :since"
            " GROUP BY dimension, value ORDER BY dimension, n DESC, value"
        ),
        {"version": version, "since": since},
    )
    values: dict[str, list[str]] = {"topic": [], "ticker": [], "source": []}
    for r in rows:
        values[r.dimension].append(r.value)
    values["source"] = list(conn.execute(sa.text("SELECT name FROM sources ORDER BY name")).scalars())
    return values


def rollup_series(
    conn: Connection,
    version: str,
    dimension: str,
    values: Sequence[str] | None,
    start: datetime,
    end: datetime,
    grain: str,
) -> list[dict[str, Any]]:
    """Return per value and period (``grain`` hour or day, UTC) of [start, end) the summed rollup counts.

    Rows: ``value, period, articles, stories, negative, neutral, positive, neg_stories, score_sum``.
    ``values`` None means every value of the dimension.
    """
    if grain not in _GRAINS:
        raise ValueError(f"grain must be one of {_GRAINS}, got {grain!r}")
    rows = conn.execute(
        sa.text(
            "SELECT value, date_trunc(:grain, bucket, 'UTC') AS period,"
            " sum(articles)::int AS articles, sum(stories)::int AS stories,"
            " sum(negative)::int AS negative, sum(neutral)::int AS neutral,"
            " sum(positive)::int AS positive, sum(neg_stories)::int AS neg_stories,"
            " sum(score_sum) AS score_sum"
            " FROM rollups_hourly"
            " WHERE model_version = :version AND dimension = :dimension"
            "   AND bucket >= :start AND bucket < :end"
            "   AND (CAST(:values AS text[]) IS NULL OR value = ANY(CAST(:values AS text[])))"
            " GROUP BY value, period ORDER BY period, value"
        ),
        {
            "grain": grain,
            "version": version,
            "dimension": dimension,
            "start": start,
            "end": end,
            "values": None if values is None else list(values),
        },
    )
    return [dict(r._mapping) for r in rows]


def headline_figures(
    conn: Connection,
    version: str,
    day_start: datetime,
    window_start: datetime,
    base_start: datetime,
    end: datetime,
) -> dict[str, Any]:
    """Return the Overview's metric row from the ``all`` rollups.

    ``articles_today`` and ``stories_today`` count [day_start, end); ``stories``/``neg_stories`` the
    window [window_start, end) and ``base_stories``/``base_neg`` the baseline [base_start, window_start).
    """
    row = conn.execute(
        sa.text(
            "SELECT"
            " COALESCE(sum(articles) FILTER (WHERE bucket >= :day_start), 0)::int AS articles_today,"
            " COALESCE(sum(stories) FILTER (WHERE bucket >= :day_start), 0)::int AS stories_today,"
            " COALESCE(sum(stories) FILTER (WHERE bucket >= :window_start), 0)::int AS stories,"
            " COALESCE(sum(neg_stories) FILTER (WHERE bucket >= :window_start), 0)::int AS neg_stories,"
            " COALESCE(sum(stories) FILTER (WHERE bucket < :window_start), 0)::int AS base_stories,"
            " COALESCE(sum(neg_stories) FILTER (WHERE bucket < :window_start), 0)::int AS base_neg"
            " FROM rollups_hourly"
            " WHERE model_version = :version AND dimension = 'all'"
            "   AND bucket >= LEAST(:base_start, :day_start) AND bucket < :end"
        ),
        {
            "version": version,
            "day_start": day_start,
            "window_start": window_start,
            "base_start": base_start,
            "end": end,
        },
    ).one()
    return dict(row._mapping)


def alert_status_counts(conn: Connection) -> dict[str, int]:
    """Return ``{status: alerts}`` of the pending and firing alerts."""
    rows = conn.execute(
        sa.text("SELECT status, count(*) FROM alert_state WHERE status <> 'inactive' GROUP BY status")
    )
    return {status: int(n) for status, n in rows}


def alert_timeline(conn: Connection, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Return every firing period that overlaps [start, end), newest first.

    Rows: ``fingerprint, rule, dimension, value, severity, fired_at, resolved_at`` (None while still
    firing), ``status`` (firing/resolved), the figures at firing (``neg_share, baseline, stories,
    neg_stories, base_stories, p_value, expected_negatives``: what a count rule expected), whether its
    email was ``silenced`` (by a silence or an
    inhibition), ``inhibited_by``: the tickers whose firing alerts explained it, comma-joined ('' if
    none), and ``released_at``: when a held-back (inhibited or silenced) firing was emailed after all.
    """
    rows = conn.execute(
        sa.text(
            "SELECT fingerprint, rule, dimension, value, severity, at AS fired_at,"
            " CASE WHEN next_transition = 'resolved' THEN next_at END AS resolved_at,"
            " CASE WHEN next_transition = 'resolved' THEN 'resolved' ELSE 'firing' END AS status,"
            " neg_share, baseline, stories, neg_stories, base_stories, p_value, expected_negatives, silenced,"
            " array_to_string(inhibited_by, ', ') AS inhibited_by, released_at"
            " FROM ("
            "  SELECT e.*, lead(e.at) OVER w AS next_at, lead(e.transition) OVER w AS next_transition"
            "  FROM alert_events e WHERE e.at < :end"
            "  WINDOW w AS (PARTITION BY e.fingerprint ORDER BY e.at, e.id)"
            " ) AS paired"
            " WHERE transition = 'firing'"
            "   AND (next_transition IS DISTINCT FROM 'resolved' OR next_at >= :start)"
            " ORDER BY fired_at DESC, fingerprint"
        ),
        {"start": start, "end": end},
    )
    return [dict(r._mapping) for r in rows]


# The Explorer's columns; {t} is the table whose published_at (the same value) the query orders by.
_STORY_COLUMNS = (
    "a.id, a.story_id, {t}.published_at, src.name AS source, a.title,"
    " COALESCE(a.canonical_url, a.url) AS url, a.tickers, s.topic, s.sentiment, s.score"
)


def search_stories(
    conn: Connection,
    version: str,
    *,
    start: datetime,
    end: datetime,
    text: str | None = None,
    tickers: Sequence[str] = (),
    topics: Sequence[str] = (),
    sentiments: Sequence[str] = (),
    sources: Sequence[str] = (),
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Return up to ``limit`` scored articles published in [start, end) that match every given filter,
    newest first.

    ``text`` matches words of the title and summary (web-search syntax); each list matches any of its
    items (``tickers``: articles naming any of them). Rows: ``id, story_id, published_at, source, title,
    url, tickers, topic, sentiment, score``.
    """
    q = text.strip() if text and text.strip() else None
    if topics and not (q or tickers or sources):
        return _search_by_topic(conn, version, start, end, topics, sentiments, limit)
    rows = conn.execute(
        sa.text(
            f"SELECT {_STORY_COLUMNS.format(t='a')}"
            " FROM articles a"
            " JOIN scores s ON s.article_id = a.id AND s.model_version = :version"
            " JOIN sources src ON src.id = a.source_id"
            " WHERE a.published_at >= :start AND a.published_at < :end"
            f"  AND (CAST(:q AS text) IS NULL OR {_TEXT_MATCH})"
            "   AND (CAST(:tickers AS text[]) IS NULL OR a.tickers && CAST(:tickers AS text[]))"
            "   AND (CAST(:topics AS text[]) IS NULL OR s.topic = ANY(CAST(:topics AS text[])))"
            "   AND (CAST(:sentiments AS text[]) IS NULL OR s.sentiment = ANY(CAST(:sentiments AS text[])))"
            "   AND (CAST(:sources AS text[]) IS NULL OR src.name = ANY(CAST(:sources AS text[])))"
            " ORDER BY a.published_at DESC, a.id DESC LIMIT :limit"
        ),
        {
            "version": version,
            "start": start,
            "end": end,
            "q": q,
            "tickers": list(tickers) or None,
            "topics": list(topics) or None,
            "sentiments": list(sentiments) or None,
            "sources": list(sources) or None,
            "limit": limit,
        },
    )
    return [dict(r._mapping) for r in rows]


def _search_by_topic(
    conn: Connection,
    version: str,
    start: datetime,
    end: datetime,
    topics: Sequence[str],
    sentiments: Sequence[str],
    limit: int,
) -> list[dict[str, Any]]:
    """``search_stories`` filtered by topic (and sentiment) only: newest first from the scores' index.

    The index on (version, topic, sentiment, published_at) reads each (topic, sentiment) pair newest
    first, so one branch per pair, merged, stops after ``limit`` rows, however rare the topic or long the
    range. (One query with ``topic = ANY(...)`` would have to collect every match before sorting.)
    """
    pairs = [(t, snt) for t in dict.fromkeys(topics) for snt in dict.fromkeys(sentiments or SENTIMENT_NAMES)]
    params: dict[str, Any] = {"version": version, "start": start, "end": end, "limit": limit}
    branches = []
    for i, (topic, sentiment) in enumerate(pairs):
        params[f"topic_{i}"], params[f"sentiment_{i}"] = topic, sentiment
        branches.append(
            f"(SELECT {_STORY_COLUMNS.format(t='s')}"
            " FROM scores s"
            " JOIN articles a ON a.id = s.article_id"
            " JOIN sources src ON src.id = a.source_id"
            f" WHERE s.model_version = :version AND s.topic = :topic_{i} AND s.sentiment = :sentiment_{i}"
            "   AND s.published_at >= :start AND s.published_at < :end"
            " ORDER BY s.published_at DESC, s.article_id DESC LIMIT :limit)"
        )
    rows = conn.execute(
        sa.text(
            "SELECT * FROM (" + " UNION ALL ".join(branches) + ") AS newest"
            " ORDER BY published_at DESC, id DESC LIMIT :limit"
        ),
        params,
    )
    return [dict(r._mapping) for r in rows]


def model_version_history(conn: Connection) -> list[dict[str, Any]]:
    """Return every model version, newest first, with the articles its rollups count (``articles``).

    Rows: ``version, name, path, metrics, created_at, active, articles, first_bucket, last_bucket``.
    """
    rows = conn.execute(
        sa.text(
            "SELECT mv.version, mv.name, mv.path, mv.metrics, mv.created_at, mv.active,"
            " COALESCE(r.articles, 0)::bigint AS articles, r.first_bucket, r.last_bucket"
            " FROM model_versions mv LEFT JOIN ("
            "   SELECT model_version, sum(articles) AS articles, min(bucket) AS first_bucket,"
            "          max(bucket) AS last_bucket"
            "   FROM rollups_hourly WHERE dimension = 'all' GROUP BY model_version"
            " ) r ON r.model_version = mv.version"
            " ORDER BY mv.active DESC, mv.created_at DESC, mv.version"
        )
    )
    return [dict(r._mapping) for r in rows]


def sentiment_totals(conn: Connection, version: str) -> dict[str, Any]:
    """Return ``articles, negative, neutral, positive, score_sum`` over all of ``version``'s rollups."""
    row = conn.execute(
        sa.text(
            "SELECT COALESCE(sum(articles), 0)::bigint AS articles,"
            " COALESCE(sum(negative), 0)::bigint AS negative, COALESCE(sum(neutral), 0)::bigint AS neutral,"
            " COALESCE(sum(positive), 0)::bigint AS positive, COALESCE(sum(score_sum), 0) AS score_sum"
            " FROM rollups_hourly WHERE model_version = :version AND dimension = 'all'"
        ),
        {"version": version},
    ).one()
    return dict(row._mapping)


def score_histogram(conn: Connection, version: str, bins: int, max_rows: int) -> dict[str, Any]:
    """Return a histogram of ``version``'s scores over [-1, 1] in ``bins`` equal bins.

    Counts come from a block sample of about ``max_rows`` score rows (all rows when the table is smaller),
    so the page stays fast at any size: ``{"sample_percent": p, "counts": [n per bin]}``.
    """
    estimate = conn.execute(
        sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST('scores' AS regclass)")
    ).scalar_one()
    percent = 100.0 if estimate <= max_rows else max(0.01, 100.0 * max_rows / float(estimate))
    rows = conn.execute(
        sa.text(
            "SELECT LEAST(width_bucket(score, -1, 1, :bins), :bins) AS bin, count(*) AS n"
            " FROM scores TABLESAMPLE SYSTEM (:percent) REPEATABLE (7)"
            " WHERE model_version = :version GROUP BY 1"
        ),
        {"bins": bins, "percent": percent, "version": version},
    )
    counts = [0] * bins
    for r in rows:
        counts[max(1, int(r.bin)) - 1] += int(r.n)
    return {"sample_percent": percent, "counts": counts}


# Seeding synthetic history (tests, the dashboard benchmark): bulk loads through COPY.
_COPY_TABLES = {
    "articles": (
        "id",
        "source_id",
        "guid",
        "url",
        "canonical_url",
        "title",
        "summary",
        "published_at",
        "fetched_at",
        "language",
        "content_hash",
        "title_hash",
        "story_id",
        "tickers",
    ),
    "scores": (
        "article_id",
        "model_version",
        "topic",
        "topic_probs",
        "sentiment",
        "sentiment_probs",
        "score",
        "scored_at",
        "published_at",
    ),
}


def copy_rows(conn: Connection, table: str, stream: Any) -> int:
    """Return the rows COPYed into ``table`` (articles or scores) from a CSV stream of its seed columns."""
    if table not in _COPY_TABLES:
        raise ValueError(f"copy_rows loads {sorted(_COPY_TABLES)}, not {table!r}")
    columns = ", ".join(_COPY_TABLES[table])
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)", stream)
        return int(cursor.rowcount)
    finally:
        cursor.close()


def seed_columns(table: str) -> tuple[str, ...]:
    """Return the column order ``copy_rows`` expects for ``table``."""
    return _COPY_TABLES[table]


def vacuum_analyze(conn: Connection, tables: Sequence[str]) -> None:
    """VACUUM ANALYZE ``tables`` after a bulk load (needs an AUTOCOMMIT connection).

    Sets the visibility map, so the dashboard's covering indexes answer with index-only scans at once
    instead of after the next autovacuum.
    """
    for table in tables:
        if table not in ("articles", "scores", "rollups_hourly", "sources"):
            raise ValueError(f"vacuum_analyze: {table!r} is not a seeded table")
        conn.exec_driver_sql(f"VACUUM ANALYZE {table}")


def sync_article_ids(conn: Connection) -> None:
    """Move the article id sequence past the highest stored id (after COPY with explicit ids)."""
    conn.execute(
        sa.text(
            "SELECT setval(pg_get_serial_sequence('articles', 'id'),"
            " GREATEST((SELECT max(id) FROM articles), 1))"
        )
    )
