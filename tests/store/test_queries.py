"""Ingestion queries in pipeline.store against real PostgreSQL (embedded and local server)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline import store
from pipeline.ingest.sources import Source
from tests.fixtures.dashboard import SeededDashboard

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _article(article_id: int, source_id: int, n: int, **overrides: object) -> store.NewArticle:
    fields: dict[str, object] = {
        "id": article_id,
        "source_id": source_id,
        "guid": f"guid-{n}",
        "url": f"https://news.example.com/{n}?utm_source=x",
        "canonical_url": f"https://news.example.com/{n}",
        "title": f"Headline number {n}",
        "summary": "Summary text",
        "body": None,
        "published_at": NOW - timedelta(hours=n),
        "date_missing": False,
        "fetched_at": NOW,
        "language": "en",
        "content_hash": f"c{n}",
        "title_hash": f"t{n}",
        "story_id": article_id,
        "tickers": ["AAPL", "BRK.B"] if n % 2 else [],
    }
    fields.update(overrides)
    return store.NewArticle(**fields)  # type: ignore[arg-type]


def _source_id(engine: Engine, name: str = "wire") -> int:
    with engine.begin() as conn:
        return store.upsert_sources(conn, [Source(name=name, url=f"https://{name}.example.com/rss")])[name].id


def _scalar_count(seeded: SeededDashboard, sql: str, **params: object) -> int:
    with seeded.engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


def test_upsert_sources_is_idempotent_and_returns_ids(engine: Engine) -> None:
    sources = [
        Source(name="fed", url="https://fed.example/rss", tags=["central bank", "us"]),
        Source(name="sec", url="https://sec.example/atom", fulltext=True),
    ]
    with engine.begin() as conn:
        first = store.upsert_sources(conn, sources)
    with engine.begin() as conn:
        second = store.upsert_sources(conn, sources)
        rows = conn.execute(sa.text("SELECT name, tags, fulltext FROM sources ORDER BY name")).all()
    assert {n: s.id for n, s in first.items()} == {n: s.id for n, s in second.items()}
    assert [tuple(r) for r in rows] == [("fed", ["central bank", "us"], False), ("sec", [], True)]


def test_changed_source_url_drops_its_validators(engine: Engine) -> None:
    source = Source(name="ecb", url="https://ecb.example/rss")
    with engine.begin() as conn:
        sid = store.upsert_sources(conn, [source])["ecb"].id
        store.update_source_validators(conn, sid, '"abc"', "Sat, 28 Nov 2026 10:00:00 GMT", NOW)
    with engine.begin() as conn:
        same = store.upsert_sources(conn, [source])["ecb"]
    assert (same.etag, same.last_modified) == ('"abc"', "Sat, 28 Nov 2026 10:00:00 GMT")
    with engine.begin() as conn:
        moved = store.upsert_sources(conn, [Source(name="ecb", url="https://ecb.example/new-rss")])["ecb"]
    assert (moved.id, moved.etag, moved.last_modified) == (sid, None, None)


def test_inserting_the_same_articles_twice_stores_them_once(engine: Engine) -> None:
    sid = _source_id(engine)
    with engine.begin() as conn:
        ids = store.allocate_article_ids(conn, 3)
        batch = [_article(i, sid, n) for n, i in enumerate(ids)]
        assert store.insert_articles(conn, batch) == set(ids)
    with engine.begin() as conn:
        again = [_article(i, sid, n) for n, i in enumerate(store.allocate_article_ids(conn, 3))]
        assert store.insert_articles(conn, again) == set()
        assert store.article_totals(conn) == (3, 3)
        tickers = conn.execute(sa.text("SELECT tickers FROM articles ORDER BY id")).scalars().all()
    assert tickers == [[], ["AAPL", "BRK.B"], []]


def test_guid_is_unique_per_source_and_url_across_sources(engine: Engine) -> None:
    wire, other = _source_id(engine, "wire"), _source_id(engine, "other")
    with engine.begin() as conn:
        a, b, c = store.allocate_article_ids(conn, 3)
        stored = store.insert_articles(
            conn,
            [
                _article(a, wire, 1),
                # Same GUID in another source is a different item...
                _article(b, other, 2, guid="guid-1"),
                # ...but the same canonical URL anywhere is the same article.
                _article(c, other, 3, canonical_url="https://news.example.com/1"),
            ],
        )
    assert stored == {a, b}


def test_existing_keys_reports_stored_urls_guids_and_title_matches(engine: Engine) -> None:
    wire, other = _source_id(engine, "wire"), _source_id(engine, "other")
    with engine.begin() as conn:
        (a,) = store.allocate_article_ids(conn, 1)
        store.insert_articles(conn, [_article(a, wire, 1)])
        keys = store.existing_keys(
            conn,
            other,
            canonical_urls=["https://news.example.com/1", "https://news.example.com/9"],
            guids=["guid-1"],
            title_hashes=["t1", "t9"],
            content_hashes=["c1"],
        )
        own = store.existing_keys(
            conn, wire, canonical_urls=[], guids=["guid-1"], title_hashes=[], content_hashes=["c1"]
        )
    assert keys.canonical_urls == {"https://news.example.com/1"}
    assert keys.guids == frozenset()  # GUIDs are only unique within a source
    assert own.guids == {"guid-1"}
    assert [(k.id, k.source_id, k.story_id) for k in keys.by_title_hash["t1"]] == [(a, wire, a)]
    # Content hashes identify key-less entries within their own source only.
    assert keys.by_content_hash == {}
    assert [k.id for k in own.by_content_hash["c1"]] == [a]


def test_recent_articles_covers_the_window_only(engine: Engine) -> None:
    sid = _source_id(engine)
    with engine.begin() as conn:
        old, new = store.allocate_article_ids(conn, 2)
        store.insert_articles(
            conn,
            [
                _article(
                    old, sid, 1, published_at=NOW - timedelta(days=10), fetched_at=NOW - timedelta(days=10)
                ),
                _article(new, sid, 2),
            ],
        )
        recent = store.recent_articles(conn, NOW - timedelta(hours=72))
    assert [r.id for r in recent] == [new]


def test_fetch_log_rows_name_their_source(engine: Engine) -> None:
    sid = _source_id(engine, "boe")
    run_id = str(uuid.uuid4())
    with engine.begin() as conn:
        store.insert_fetch_log(
            conn,
            store.FetchLogRow(
                run_id=run_id,
                source_id=sid,
                started_at=NOW,
                status="error",
                http_status=503,
                bytes=0,
                items_seen=0,
                items_new=0,
                duplicates=0,
                invalid=0,
                filtered=0,
                duration_ms=12,
                error="boe: https://boe.example.com/rss: HTTP 503",
            ),
        )
        rows = store.fetch_log_for_run(conn, run_id)
    assert [(r["source"], r["url"], r["status"], r["http_status"]) for r in rows] == [
        ("boe", "https://boe.example.com/rss", "error", 503)
    ]


def test_topic_search_returns_what_the_general_query_returns(seeded_dashboard: SeededDashboard) -> None:
    # A topic filter alone reads the scores' (topic, sentiment, published_at) index, one branch per pair;
    # any other filter (here every source, which excludes nothing) takes the general query.
    version = seeded_dashboard.plan.version
    end = datetime.now(UTC) + timedelta(minutes=1)
    start = end - timedelta(days=15)
    with seeded_dashboard.engine.connect() as conn:
        every_source = list(conn.execute(sa.text("SELECT name FROM sources")).scalars())
        for topics, sentiments, limit in (
            (["Earnings"], [], 50),
            (["Earnings", "Dividend", "Earnings"], ["negative", "positive"], 300),
            (["Dividend"], ["positive"], 100_000),
        ):
            by_topic = store.search_stories(
                conn, version, start=start, end=end, topics=topics, sentiments=sentiments, limit=limit
            )
            general = store.search_stories(
                conn,
                version,
                start=start,
                end=end,
                topics=topics,
                sentiments=sentiments,
                sources=every_source,
                limit=limit,
            )
            assert by_topic and by_topic == general
            assert len(by_topic) == len({r["id"] for r in by_topic})
    matching = _scalar_count(
        seeded_dashboard,
        "SELECT count(*) FROM articles a JOIN scores s ON s.article_id = a.id AND s.model_version = :v"
        " WHERE a.published_at >= :start AND s.topic = 'Dividend' AND s.sentiment = 'positive'",
        v=version,
        start=start,
    )
    assert len(by_topic) == matching
