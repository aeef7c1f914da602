"""Per-source host allowlists: a source's ``allowed_hosts`` opens non-public hosts and networks for that
source's fetches only (its feed, every redirect hop, its article pages), on top of FINSENT_ALLOWED_HOSTS;
link-local and cloud-metadata addresses still need an exact entry. Real loopback servers and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.config import Settings
from pipeline.demo.feeds import FeedItem, rss_document
from pipeline.demo.feedserver import FeedServer
from pipeline.ingest import run_ingest
from pipeline.ingest.fetch import Fetcher
from pipeline.ingest.sources import Source, SourcesError, load_sources
from tests.ingest.test_run import ARTICLE_PAGE

NOW = datetime.now(UTC).replace(microsecond=0)
H = timedelta(hours=1)
METADATA = "http://169.254.169.254/latest/meta-data/"


# --- the sources file -----------------------------------------------------------------------------------


def test_allowed_hosts_are_read_and_normalised(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(
        "- {name: lab, url: 'http://feeds.lab/rss', allowed_hosts: [Feeds.Lab, 10.20.0.0/16, '[::1]', "
        "10.1.2.3/8, intra_net.lab.]}\n- {name: public, url: 'https://example.com/rss'}\n"
    )
    lab, public = load_sources(path)
    assert lab.allowed_hosts == ["feeds.lab", "10.20.0.0/16", "::1", "10.0.0.0/8", "intra_net.lab"]
    assert public.allowed_hosts == []


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("10.0.0.0/33", "'10.0.0.0/33' is not a network"),
        ("http://feeds.lab/", "'http://feeds.lab/' is not a host name, an IP address or a CIDR network"),
        ("feeds.lab:8080", "'feeds.lab:8080' is not a host name"),
        ("", "'' is not a host name"),
    ],
)
def test_a_bad_allowed_hosts_entry_fails_at_load_time_in_one_line(
    tmp_path: Path, entry: str, says: str
) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(
        "- {name: ok, url: 'https://a.example/rss'}\n"
        f"- {{name: lab, url: 'http://feeds.lab/rss', allowed_hosts: [127.0.0.1, '{entry}']}}\n"
    )
    with pytest.raises(SourcesError) as caught:
        load_sources(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: entry 2 (lab): field 'allowed_hosts': {says}")
    assert "\n" not in message


def test_a_source_allowlist_adds_to_the_global_one_and_never_opens_metadata_by_network() -> None:
    fetcher = Fetcher(Settings(allowed_hosts="10.9.0.0/16"))
    lab = fetcher.allowlist(
        Source(name="lab", url="http://x/", allowed_hosts=["127.0.0.1", "169.254.0.0/16"])
    )
    plain = fetcher.allowlist(Source(name="plain", url="http://x/"))
    assert lab.allows("127.0.0.1", "127.0.0.1") and lab.allows("db", "10.9.1.1")
    assert not plain.allows("127.0.0.1", "127.0.0.1") and plain.allows("db", "10.9.1.1")
    assert not lab.allows("metadata", "169.254.169.254")  # a network never covers link-local
    exact = fetcher.allowlist(Source(name="meta", url="http://x/", allowed_hosts=["169.254.169.254"]))
    assert exact.allows("169.254.169.254", "169.254.169.254")


# --- one real ingest run ----------------------------------------------------------------------------------


@pytest.fixture
def servers() -> Iterator[tuple[FeedServer, FeedServer]]:
    """Two loopback feed servers on different addresses: 127.0.0.1 and 127.0.0.2."""
    with FeedServer() as first, FeedServer(host="127.0.0.2") as second:
        yield first, second


def feed(server: FeedServer, name: str, links: list[str] | None = None) -> str:
    links = links or [f"https://{name}.example/{i}" for i in range(2)]
    items = [
        FeedItem(
            f"{name} story {i}: shares move after results", link, f"Teaser {i} from {name}.", (i + 1) * H
        )
        for i, link in enumerate(links)
    ]
    return server.add(f"/{name}.xml", rss_document(name, f"https://{name}.example/", items, NOW))


def fetch_log(engine: Engine) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT s.name, f.status, f.error FROM fetch_log f JOIN sources s ON s.id = f.source_id")
        ).all()
    return {r.name: (r.status, r.error) for r in rows}


@pytest.mark.parametrize("pg_admin_url", ["embedded"], indirect=True)
def test_each_source_fetches_only_what_its_own_allowlist_opens(
    engine: Engine, servers: tuple[FeedServer, FeedServer]
) -> None:
    first, second = servers
    elsewhere = second.add("/feed.xml", rss_document("Elsewhere", "https://e.example/", [], NOW))
    page = first.add("/pages/wrap.html", ARTICLE_PAGE.encode(), "text/html; charset=utf-8")
    foreign_page = second.add("/pages/wrap.html", ARTICLE_PAGE.encode(), "text/html; charset=utf-8")
    sources = [
        # Its feed and its first article page on 127.0.0.1; its second page on 127.0.0.2 is not its to fetch.
        Source(
            name="scoped",
            url=feed(first, "scoped", [page, foreign_page]),
            fulltext=True,
            allowed_hosts=["127.0.0.1"],
        ),
        Source(name="unscoped", url=feed(first, "unscoped")),
        # Allowed on 127.0.0.1 only; its feed moved to 127.0.0.2.
        Source(
            name="hop-private",
            url=first.add("/moved.xml", b"", redirect_to=elsewhere),
            allowed_hosts=["127.0.0.1"],
        ),
        # The same redirect, for a source allowed the whole loopback network.
        Source(
            name="hop-network",
            url=first.add("/moved-too.xml", b"", redirect_to=elsewhere),
            allowed_hosts=["127.0.0.0/8"],
        ),
        # Allowed every private and link-local network: a redirect to the metadata service is still refused.
        Source(
            name="hop-metadata",
            url=first.add("/meta.xml", b"", redirect_to=METADATA),
            allowed_hosts=["127.0.0.0/8", "169.254.0.0/16", "10.0.0.0/8"],
        ),
    ]
    settings = Settings(allowed_hosts="", retries=0, source_deadline_s=10)

    report = run_ingest(sources, engine=engine, settings=settings)

    logged = fetch_log(engine)
    assert logged["scoped"] == ("ok", None)
    assert logged["hop-network"] == ("ok", None)
    status, error = logged["unscoped"]
    assert status == "error" and error is not None
    assert error == (
        f"unscoped: {sources[1].url}: host '127.0.0.1' resolves to non-public address 127.0.0.1 "
        "(list it in the source's allowed_hosts or in FINSENT_ALLOWED_HOSTS to allow)"
    )
    status, error = logged["hop-private"]
    assert status == "error" and "host '127.0.0.2' resolves to non-public address 127.0.0.2" in (error or "")
    status, error = logged["hop-metadata"]
    assert status == "error" and error is not None
    assert "link-local or cloud-metadata address 169.254.169.254" in error
    assert first.stats("/unscoped.xml").requests == 0  # refused before any connection
    assert second.stats("/feed.xml").requests == 1  # fetched for hop-network only
    with engine.connect() as conn:
        bodies = dict(
            conn.execute(
                sa.text(
                    "SELECT a.url, a.body IS NOT NULL FROM articles a JOIN sources s ON s.id = a.source_id"
                    " WHERE s.name = 'scoped'"
                )
            ).all()
        )
    assert bodies == {page: True, foreign_page: False}  # the foreign page keeps its teaser only
    assert second.stats("/pages/wrap.html").requests == 0
    assert report.items_new == 2
