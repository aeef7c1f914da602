"""End-to-end ingestion over a real loopback feed server into real PostgreSQL (both servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.config import Settings
from pipeline.demo.feeds import FeedItem, atom_document, rss_document
from pipeline.demo.feedserver import FeedServer
from pipeline.ingest import ingest_sources, run_ingest
from pipeline.ingest.parse import ParsedEntry
from pipeline.ingest.prepare import filter_reason
from pipeline.ingest.run import PAGE_GROUP_SOURCES
from pipeline.ingest.sources import Source, SourcesError
from tests.shared_data import shared_data_dir

NOW = datetime.now(UTC).replace(microsecond=0)
H = timedelta(hours=1)


def _settings() -> Settings:
    # The loopback feed servers' address is the one non-public host allowed.
    return Settings(allowed_hosts="127.0.0.1", retries=0, source_deadline_s=10)


def _items(prefix: str, n: int) -> list[FeedItem]:
    topics = [
        "bond yields",
        "copper mines",
        "retail sales",
        "chip exports",
        "airline fares",
        "crop prices",
        "bank deposits",
        "car recalls",
        "shipping rates",
        "steel tariffs",
    ]
    return [
        FeedItem(
            f"{prefix} report {i}: {topics[i % len(topics)]} move after surprise data number {i}",
            f"https://{prefix}.example/story/{i}",
            f"Unique details {prefix} {i} about {topics[i % len(topics)]}: the index rose {i}.{i} points "
            f"while traders in {prefix} desk {i} priced fresh moves.",
            i * H,
        )
        for i in range(n)
    ]


def _count(engine: Engine, sql: str, **params: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


@pytest.fixture
def server() -> FeedServer:
    with FeedServer() as srv:
        yield srv


def test_broken_feeds_never_stop_the_others(engine: Engine, server: FeedServer) -> None:
    sources = [
        Source(
            name="wire",
            url=server.add(
                "/wire.rss", rss_document("Wire", "https://wire.example/", _items("wire", 5), NOW)
            ),
        ),
        Source(
            name="filings",
            url=server.add(
                "/filings.atom",
                atom_document("Filings", "https://filings.example/", _items("filings", 4), NOW),
                "application/atom+xml",
            ),
        ),
        Source(
            name="maintenance",
            url=server.add("/down.rss", b"<html><head><title>Down</title></head></html>", "text/html"),
        ),
        Source(name="gone", url=server.add("/gone.rss", b"", status=503)),
        Source(name="json", url=server.add("/api.rss", b'{"error": "rate limited"}', "application/json")),
    ]
    report = run_ingest(sources, engine=engine, settings=_settings())

    assert (report.sources_ok, report.sources_failed, report.items_new) == (2, 3, 9)
    assert _count(engine, "SELECT count(*) FROM articles") == 9
    with engine.connect() as conn:
        errors = dict(
            conn.execute(
                sa.text(
                    "SELECT s.name, f.error FROM fetch_log f JOIN sources s ON s.id = f.source_id"
                    " WHERE f.run_id = CAST(:run AS uuid) AND f.status = 'error'"
                ),
                {"run": report.run_id},
            ).all()
        )
    assert set(errors) == {"maintenance", "gone", "json"}
    for name in errors:
        source = next(s for s in sources if s.name == name)
        assert name in errors[name] and source.url in errors[name]
    assert "HTML page" in errors["maintenance"]
    assert "503" in errors["gone"]


def test_the_same_run_twice_adds_no_rows_and_the_second_poll_is_304s(
    engine: Engine, server: FeedServer
) -> None:
    sources = [
        Source(
            name=f"feed{k}",
            url=server.add(
                f"/f{k}.rss",
                rss_document(f"Feed {k}", f"https://feed{k}.example/", _items(f"feed{k}", 6), NOW),
            ),
        )
        for k in range(3)
    ]
    first = run_ingest(sources, engine=engine, settings=_settings())
    rows = _count(engine, "SELECT count(*) FROM articles")
    server.reset_stats()
    second = run_ingest(sources, engine=engine, settings=_settings())

    assert first.items_new == rows == 18
    assert _count(engine, "SELECT count(*) FROM articles") == rows
    assert (second.items_new, second.items_seen, second.not_modified) == (0, 0, 3)
    assert all(server.stats(f"/f{k}.rss").statuses == [304] for k in range(3))
    assert sum(server.stats(f"/f{k}.rss").bytes_sent for k in range(3)) == 0
    assert second.bytes == 0
    assert _count(engine, "SELECT count(*) FROM fetch_log WHERE status = 'not_modified'") == 3


def test_changed_feed_stores_only_its_new_items(engine: Engine, server: FeedServer) -> None:
    items = _items("desk", 4)
    url = server.add("/desk.rss", rss_document("Desk", "https://desk.example/", items, NOW))
    source = Source(name="desk", url=url)
    run_ingest([source], engine=engine, settings=_settings())
    extra = FeedItem(
        "Desk exclusive: central bank weighs emergency liquidity line for brokers",
        "https://desk.example/story/exclusive?utm_source=rss",
        "Officials discussed a standing facility for broker-dealers, people said.",
        0 * H,
    )
    server.add("/desk.rss", rss_document("Desk", "https://desk.example/", [extra, *items], NOW))

    report = run_ingest([source], engine=engine, settings=_settings())

    row = report.sources[0]
    assert (row.status, row.items_seen, row.items_new, row.duplicates) == ("ok", 5, 1, 4)
    assert (
        _count(
            engine,
            "SELECT count(*) FROM articles WHERE canonical_url = :u",
            u="https://desk.example/story/exclusive",
        )
        == 1
    )


def test_every_entry_is_stored_or_counted_with_a_reason(engine: Engine, server: FeedServer) -> None:
    future = (NOW + timedelta(days=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    body = f"""<?xml version="1.0"?><rss version="2.0"><channel><title>Mixed</title>
      <item><title>Fed official says rate path depends on incoming data</title>
            <link>https://mixed.example/a</link><description>Remarks at a conference.</description></item>
      <item><title>Fed official says rate path depends on incoming data</title>
            <link>https://mixed.example/a?utm_campaign=x#top</link></item>
      <item><description>   </description></item>
      <item><title>Quarterly outlook published early by mistake for next month</title>
            <link>https://mixed.example/future</link><pubDate>{future}</pubDate></item>
      <item><title>Treasury auction draws weak demand as yields climb</title>
            <link>https://mixed.example/b</link></item>
    </channel></rss>""".encode()
    source = Source(name="mixed", url=server.add("/mixed.rss", body))

    report = run_ingest([source], engine=engine, settings=_settings())

    row = report.sources[0]
    assert (row.items_seen, row.items_new, row.duplicates, row.invalid, row.filtered) == (5, 2, 1, 1, 1)
    assert row.items_seen == row.items_new + row.duplicates + row.invalid + row.filtered
    with engine.connect() as conn:
        logged = conn.execute(
            sa.text(
                "SELECT items_seen, items_new, duplicates, invalid, filtered FROM fetch_log"
                " WHERE run_id = CAST(:r AS uuid)"
            ),
            {"r": report.run_id},
        ).one()
    assert tuple(logged) == (5, 2, 1, 1, 1)


def test_syndicated_copies_share_a_story_across_sources_and_runs(engine: Engine, server: FeedServer) -> None:
    wire = FeedItem(
        "Regional bank shares tumble as deposit outflows accelerate",
        "https://wire.example/banks/deposits",
        "Shares of U.S. regional lenders dropped sharply after two banks disclosed larger-than-"
        "expected deposit outflows, rekindling memories of the 2023 banking turmoil.",
        2 * H,
    )
    other = FeedItem(
        "Oil falls as OPEC+ signals output increase next year",
        "https://wire.example/oil",
        "Brent crude fell below $70 a barrel after delegates said the group may unwind cuts.",
        3 * H,
    )
    copy = FeedItem(
        "Regional bank stocks tumble as deposit outflows speed up",
        "https://desk.example/news/regional-banks?cmpid=rss",
        "Shares of U.S. regional lenders dropped sharply after two banks disclosed larger than "
        "expected deposit outflows, rekindling memories of the 2023 banking turmoil.",
        1 * H,
    )
    wire_src = Source(
        name="wire",
        url=server.add("/wire.rss", rss_document("W", "https://wire.example/", [wire, other], NOW)),
    )
    desk_src = Source(
        name="desk", url=server.add("/desk.rss", rss_document("D", "https://desk.example/", [copy], NOW))
    )
    run_ingest([wire_src], engine=engine, settings=_settings())
    # A later run, a different source: the copy must find the story through the stored articles.
    run_ingest([desk_src], engine=engine, settings=_settings())

    with engine.connect() as conn:
        story = dict(conn.execute(sa.text("SELECT canonical_url, story_id FROM articles")).all())
        ids = dict(conn.execute(sa.text("SELECT canonical_url, id FROM articles")).all())
    assert story["https://desk.example/news/regional-banks"] == ids["https://wire.example/banks/deposits"]
    assert story["https://wire.example/banks/deposits"] == ids["https://wire.example/banks/deposits"]
    assert story["https://wire.example/oil"] == ids["https://wire.example/oil"]


def test_articles_carry_tickers_language_and_canonical_urls(engine: Engine, server: FeedServer) -> None:
    item = FeedItem(
        "Apple shares slide after iPhone sales miss; $NVDA and $BRK.B steady",
        "https://WIRE.example/markets/apple?utm_source=rss&id=7#comments",
        "Apple Inc shares fell 4% after the company reported weaker revenue in China.",
        H,
    )
    feed = rss_document("W", "https://wire.example/", [item], NOW)
    source = Source(name="wire", url=server.add("/w.rss", feed))
    run_ingest([source], engine=engine, settings=_settings())
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT canonical_url, tickers, language, date_missing, published_at FROM articles")
        ).one()
    assert row.canonical_url == "https://wire.example/markets/apple?id=7"
    assert row.tickers == ["AAPL", "BRK.B", "NVDA"]
    assert row.language == "en"
    assert row.date_missing is False
    assert row.published_at == NOW - H


ARTICLE_PAGE = """<!DOCTYPE html><html><head><title>Markets wrap</title></head><body>
<nav><a href="/">Home</a> <a href="/markets">Markets</a></nav>
<article><h1>Stocks slip as investors weigh central bank signals</h1>
<p>Global equities edged lower on Thursday as investors parsed fresh comments from central bank officials
about the pace of interest rate cuts next year, with technology shares leading the declines.</p>
<p>Microsoft and Nvidia each fell more than one percent, while government bond yields were little changed
after a volatile week in which traders repeatedly reassessed the outlook for monetary policy.</p>
<p>Analysts said the market was likely to stay range-bound until the next inflation report, due on
Wednesday, which could settle the debate about whether price pressures are cooling fast enough.</p>
</article><footer>Copyright Demo Markets</footer></body></html>"""


def test_fulltext_sources_store_the_article_text(engine: Engine, server: FeedServer) -> None:
    page_url = server.add("/articles/wrap.html", ARTICLE_PAGE.encode(), "text/html; charset=utf-8")
    item = FeedItem("Stocks slip as investors weigh central bank signals", page_url, "Teaser only.", H)
    source = Source(
        name="pages", url=server.add("/p.rss", rss_document("P", server.url, [item], NOW)), fulltext=True
    )
    report = run_ingest([source], engine=engine, settings=_settings())
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT body, tickers FROM articles")).one()
    assert report.items_new == 1
    assert "parsed fresh comments from central bank officials" in row.body
    assert "Copyright Demo Markets" not in row.body
    # Tickers come from the full text too.
    assert {"MSFT", "NVDA"} <= set(row.tickers)
    assert report.sources[0].bytes > len(ARTICLE_PAGE)


class CountingPageServer(FeedServer):
    """A feed server that notes, for each article page it is asked for, how many articles the
    database held at that moment."""

    def __init__(self, db_url: str) -> None:
        super().__init__()
        self.engine = sa.create_engine(db_url)
        self.stored_at_request: dict[str, int] = {}

    def handle(self, handler: BaseHTTPRequestHandler, *, send_body: bool) -> None:
        path = urlsplit(handler.path).path
        if path.startswith("/pages/"):
            with self.engine.connect() as conn:
                stored = conn.execute(sa.text("SELECT count(*) FROM articles")).scalar_one()
            self.stored_at_request[path] = stored
        super().handle(handler, send_body=send_body)


def test_fulltext_pages_are_held_a_few_sources_at_a_time(engine: Engine, db_url: str) -> None:
    """Eight full-text sources of three articles: the pages of the first PAGE_GROUP_SOURCES are fetched,
    extracted and stored before any page of the others is asked for, so a run never holds more than
    one group's pages (each up to FINSENT_MAX_BODY_BYTES)."""
    sources, per_source = 8, 3
    with CountingPageServer(db_url) as server:
        specs = []
        for i in range(sources):
            items = []
            for j in range(per_source):
                page = server.add(f"/pages/{i}-{j}.html", ARTICLE_PAGE.encode(), "text/html; charset=utf-8")
                title = f"Desk {i} wrap {j}: stocks slip as investors weigh signals"
                items.append(FeedItem(title, page, "Teaser.", H))
            feed = server.add(f"/d{i}.rss", rss_document(f"D{i}", server.url, items, NOW))
            specs.append(Source(name=f"desk{i}", url=feed, fulltext=True))
        report = run_ingest(specs, engine=engine, settings=_settings())
        seen = dict(server.stored_at_request)
        server.engine.dispose()
    assert report.items_new == sources * per_source
    by_source: dict[str, set[int]] = {}
    for path, stored in seen.items():
        by_source.setdefault(path.removeprefix("/pages/").split("-")[0], set()).add(stored)
    first = sorted(s for s, counts in by_source.items() if counts == {0})
    later = sorted(s for s, counts in by_source.items() if min(counts) >= PAGE_GROUP_SOURCES * per_source)
    assert len(first) == PAGE_GROUP_SOURCES and len(first) + len(later) == sources, by_source


def test_ingest_sources_runs_a_named_subset(engine: Engine, server: FeedServer, tmp_path: Path) -> None:
    a = server.add("/a.rss", rss_document("A", "https://a.example/", _items("alpha", 2), NOW))
    b = server.add("/b.rss", rss_document("B", "https://b.example/", _items("beta", 2), NOW))
    path = tmp_path / "sources.yaml"
    path.write_text(f"- {{name: alpha, url: '{a}'}}\n- {{name: beta, url: '{b}'}}\n")

    report = ingest_sources(["beta"], engine=engine, settings=_settings(), sources_path=path)

    assert [s.name for s in report.sources] == ["beta"]
    assert server.stats("/a.rss").requests == 0
    with pytest.raises(SourcesError, match="no source named 'gamma'"):
        ingest_sources(["gamma"], engine=engine, settings=_settings(), sources_path=path)


def test_report_as_dict_has_the_totals_the_cli_prints(engine: Engine, server: FeedServer) -> None:
    source = Source(
        name="one", url=server.add("/1.rss", rss_document("1", "https://one.example/", _items("one", 3), NOW))
    )
    data = run_ingest([source], engine=engine, settings=_settings()).as_dict()
    assert {"sources_ok", "sources_failed", "items_seen", "items_new", "duplicates", "bytes"} <= set(data)
    assert data["per_source"][0]["name"] == "one"
    assert (data["sources_ok"], data["items_new"]) == (1, 3)


def test_far_future_and_empty_entries_are_filtered() -> None:
    entry = ParsedEntry(
        guid=None,
        url="https://x.example/1",
        canonical_url="https://x.example/1",
        title="T",
        summary="",
        published_at=NOW + timedelta(days=3),
        date_missing=False,
        language=None,
    )
    assert "future" in (filter_reason(entry, NOW) or "")
    entry.published_at = NOW
    assert filter_reason(entry, NOW) is None
    entry.title = ""
    assert filter_reason(entry, NOW) == "no title or summary text"


def _shared_feeds() -> list[Path]:
    return sorted(p for p in shared_data_dir("feeds").iterdir() if p.is_file())


def test_recorded_real_feeds_land_or_fail_per_source(engine: Engine, server: FeedServer) -> None:
    files = _shared_feeds()
    sources = [
        Source(name=p.name, url=server.add(f"/real/{i}", p.read_bytes(), "application/xml"))
        for i, p in enumerate(files)
    ]
    report = run_ingest(sources, engine=engine, settings=_settings())

    assert len(report.sources) == len(files)
    assert report.sources_ok >= len(files) // 2
    assert report.items_new > 50
    for row in report.sources:
        assert row.items_seen == row.items_new + row.duplicates + row.invalid + row.filtered
        if row.status == "error":
            assert row.name in (row.error or "") and row.url in (row.error or "")
    again = run_ingest(sources, engine=engine, settings=_settings())
    assert again.items_new == 0


def test_a_batch_that_fails_to_store_is_fetched_again_next_time(engine: Engine, server: FeedServer) -> None:
    poison = FeedItem("POISON headline the database refuses", "https://bad.example/poison", "x y z", H)
    good = Source(
        name="good",
        url=server.add("/good.rss", rss_document("G", "https://good.example/", _items("good", 3), NOW)),
    )
    bad = Source(
        name="bad",
        url=server.add(
            "/bad.rss", rss_document("B", "https://bad.example/", [*_items("bad", 2), poison], NOW)
        ),
    )
    with engine.begin() as conn:
        # A real failure inside PostgreSQL for one batch: a trigger that rejects one row.
        conn.execute(
            sa.text(
                "CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " IF NEW.title LIKE 'POISON%' THEN RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; END $$"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TRIGGER reject_poison BEFORE INSERT ON articles"
                " FOR EACH ROW EXECUTE FUNCTION reject_poison()"
            )
        )

    first = run_ingest([good, bad], engine=engine, settings=_settings())

    rows = {s.name: s for s in first.sources}
    assert (rows["good"].status, rows["good"].items_new) == ("ok", 3)
    assert rows["bad"].status == "error" and "poisoned row" in (rows["bad"].error or "")
    assert rows["bad"].url in (rows["bad"].error or "")
    with engine.begin() as conn:
        # The whole batch rolled back, validators included, so the next poll is a full fetch.
        assert (
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM articles a JOIN sources s ON s.id = a.source_id"
                    " WHERE s.name = 'bad'"
                )
            ).scalar_one()
            == 0
        )
        assert conn.execute(sa.text("SELECT etag FROM sources WHERE name = 'bad'")).scalar_one() is None
        conn.execute(sa.text("DROP TRIGGER reject_poison ON articles"))

    second = run_ingest([good, bad], engine=engine, settings=_settings())

    rows = {s.name: s for s in second.sources}
    assert rows["good"].status == "not_modified"
    assert (rows["bad"].status, rows["bad"].http_status, rows["bad"].items_new) == ("ok", 200, 3)
