"""Fetching against a real HTTP server on loopback: conditional GET, retries, deadlines, limits, guards."""

from __future__ import annotations

import asyncio
import gzip
import resource
import time
import zlib

import brotli
import httpx
import pytest
import zstandard

from pipeline.config import Settings
from pipeline.ingest.fetch import (
    Fetcher,
    FetchResult,
    HostAllowlist,
    Validators,
    address_is_public,
    fetch_all,
    retry_after_seconds,
)
from pipeline.ingest.sources import Source
from tests.fixtures.http_server import FaultyFeedServer

RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Markets</title><link>https://example.com/</link>
<item><title>Stocks rally as inflation cools</title><link>https://example.com/a</link>
<pubDate>Tue, 03 Mar 2026 14:00:00 GMT</pubDate></item>
</channel></rss>
"""


def fetch_one(settings: Settings, source: Source, validators: Validators | None = None) -> FetchResult:
    async def run() -> FetchResult:
        async with Fetcher(settings) as fetcher:
            return await fetcher.fetch_feed(source, validators)

    return asyncio.run(run())


def test_unchanged_feed_costs_one_304_and_no_body(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    source = Source(name="markets", url=feed_server.add("/markets.xml", RSS))

    first = fetch_one(fetch_settings, source)
    assert first.status == "ok" and first.body == RSS and first.bytes == len(RSS)
    assert first.validators.etag and first.validators.last_modified

    second = fetch_one(fetch_settings, source, first.validators)
    assert second.status == "not_modified"
    assert second.http_status == 304 and second.body == b"" and second.bytes == 0
    assert second.validators == first.validators

    stats = feed_server.stats("/markets.xml")
    assert stats.statuses == [200, 304]
    assert stats.bytes_sent == len(RSS)  # the second poll sent no body at all
    assert stats.last_headers["If-None-Match"] == first.validators.etag
    assert stats.last_headers["If-Modified-Since"] == first.validators.last_modified


def test_changed_feed_is_fetched_again_with_new_validators(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    source = Source(name="markets", url=feed_server.add("/markets.xml", RSS))
    first = fetch_one(fetch_settings, source)
    changed = RSS.replace(b"Stocks rally", b"Stocks slump")
    feed_server.add("/markets.xml", changed, last_modified="Wed, 04 Mar 2026 09:00:00 GMT")

    second = fetch_one(fetch_settings, source, first.validators)
    assert second.status == "ok" and second.body == changed
    assert second.validators.etag != first.validators.etag


def test_server_error_then_success_is_retried(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    source = Source(
        name="flaky", url=feed_server.add_faulty("/flaky.xml", RSS, fail_times=2, fail_status=503)
    )
    result = fetch_one(fetch_settings, source)
    assert result.status == "ok" and result.body == RSS
    assert result.attempts == 3
    assert feed_server.stats("/flaky.xml").statuses == [503, 503, 200]


def test_retry_after_from_the_server_lengthens_the_backoff(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    url = feed_server.add_faulty(
        "/busy.xml", RSS, fail_times=1, fail_status=429, fail_headers={"Retry-After": "1"}
    )
    settings = fetch_settings.model_copy(update={"retry_backoff_max_s": 2.0})
    started = time.monotonic()
    result = fetch_one(settings, Source(name="busy", url=url))
    assert result.status == "ok" and result.attempts == 2
    assert time.monotonic() - started >= 1.0  # not the 0.05 s backoff the settings alone give


def test_retry_after_is_capped_by_the_longest_backoff(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    url = feed_server.add_faulty(
        "/busy.xml", RSS, fail_times=1, fail_status=503, fail_headers={"Retry-After": "3600"}
    )
    started = time.monotonic()
    result = fetch_one(fetch_settings, Source(name="busy", url=url))
    assert result.status == "ok"
    assert time.monotonic() - started < fetch_settings.retry_backoff_max_s + 1.0


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Wed, 21 Oct 2026 07:28:00 GMT", now=1792567670.0) == 10.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_persistent_server_error_gives_up_after_the_configured_retries(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    source = Source(
        name="down", url=feed_server.add_faulty("/down.xml", RSS, fail_times=100, fail_status=502)
    )
    result = fetch_one(fetch_settings, source)
    assert result.status == "error" and result.error_kind == "http_status" and result.http_status == 502
    assert feed_server.stats("/down.xml").requests == fetch_settings.retries + 1
    assert result.error is not None and "down" in result.error and source.url in result.error


def test_client_error_is_not_retried(feed_server: FaultyFeedServer, fetch_settings: Settings) -> None:
    source = Source(name="gone", url=feed_server.add("/gone.xml", b"gone", status=410))
    result = fetch_one(fetch_settings, source)
    assert result.status == "error" and result.http_status == 410 and result.error_kind == "http_status"
    assert feed_server.stats("/gone.xml").requests == 1


def test_slow_and_dripping_sources_hit_the_deadline_while_others_succeed(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    settings = fetch_settings.model_copy(update={"source_deadline_s": 1.5, "read_timeout_s": 0.5})
    sources = [
        Source(name="fast", url=feed_server.add("/fast.xml", RSS)),
        # Never answers within the read timeout: each attempt times out, then the deadline ends it.
        Source(name="silent", url=feed_server.add("/silent.xml", RSS, delay_s=5)),
        # Answers at once but sends 20 bytes every 0.2 s: no read timeout fires, only the deadline.
        Source(
            name="drip", url=feed_server.add_faulty("/drip.xml", RSS * 4, drip_bytes=20, drip_interval_s=0.2)
        ),
    ]
    fast, silent, drip = asyncio.run(fetch_all(sources, {}, settings))

    assert fast.status == "ok" and fast.body == RSS and fast.duration_s < 1.0
    assert silent.status == "error" and silent.error_kind == "deadline"
    assert drip.status == "error" and drip.error_kind == "deadline"
    assert drip.duration_s == pytest.approx(1.5, abs=0.5)
    assert drip.error is not None and "drip" in drip.error and "deadline" in drip.error


def test_read_timeout_is_retried_and_reported_as_timeout(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    settings = fetch_settings.model_copy(
        update={"read_timeout_s": 0.2, "source_deadline_s": 5.0, "retries": 1}
    )
    source = Source(name="slow", url=feed_server.add("/slow.xml", RSS, delay_s=0.6))
    result = fetch_one(settings, source)
    assert result.status == "error" and result.error_kind == "timeout"
    assert result.attempts == 2


def test_oversized_body_is_refused(feed_server: FaultyFeedServer, fetch_settings: Settings) -> None:
    big = b"<rss>" + b"x" * (fetch_settings.max_body_bytes + 1) + b"</rss>"
    source = Source(name="huge", url=feed_server.add("/huge.xml", big))
    result = fetch_one(fetch_settings, source)
    assert result.status == "error" and result.error_kind == "too_large" and result.body == b""


def test_compressed_body_is_capped_on_its_decompressed_size(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    # About 1 KB on the wire, 2 MB once decompressed: the cap must stop it while streaming.
    bomb = gzip.compress(b"<rss>" + b" " * 2_000_000)
    url = feed_server.add("/bomb.xml", bomb, headers={"Content-Encoding": "gzip"})
    result = fetch_one(fetch_settings, Source(name="bomb", url=url))
    assert len(bomb) < fetch_settings.max_body_bytes
    assert result.status == "error" and result.error_kind == "too_large"


def stacked_bomb(decoded_bytes: int, codings: tuple[str, ...]) -> bytes:
    """Return zeros of ``decoded_bytes`` encoded by each of ``codings`` in turn, built in 16 MB pieces."""
    first = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip
    block = b"\0" * (1 << 24)
    body = b"".join(first.compress(block) for _ in range(decoded_bytes >> 24)) + first.flush()
    for coding in codings[1:]:
        body = encode(body, coding)
    return body


def encode(body: bytes, coding: str) -> bytes:
    return {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "br": brotli.compress,
        "zstd": zstandard.ZstdCompressor().compress,
    }[coding](body)


@pytest.mark.parametrize(
    "codings", [("gzip", "gzip"), ("gzip", "br"), ("gzip", "zstd", "deflate"), ("gzip", "gzip", "gzip")]
)
def test_stacked_encodings_are_capped_on_what_the_last_layer_decodes(
    feed_server: FaultyFeedServer, fetch_settings: Settings, codings: tuple[str, ...]
) -> None:
    # A few KB on the wire that inflate, layer by layer, to 2 GiB: stopped at the cap, memory flat.
    bomb = stacked_bomb(1 << 31, codings)
    assert len(bomb) < 100_000
    url = feed_server.add("/stacked.xml", bomb, headers={"Content-Encoding": ", ".join(codings)})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = fetch_one(fetch_settings, Source(name="stacked", url=url))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert result.status == "error" and result.error_kind == "too_large", result.error
    assert "decoded body passed the 262,144-byte cap" in (result.error or "")
    assert grown_mb < 100


@pytest.mark.parametrize("codings", [("br",), ("zstd",), ("deflate",), ("gzip", "br", "zstd")])
def test_every_content_coding_decodes_in_any_order(
    feed_server: FaultyFeedServer, fetch_settings: Settings, codings: tuple[str, ...]
) -> None:
    feed = b"<rss><channel><title>t</title></channel></rss>"
    body = feed
    for coding in codings:
        body = encode(body, coding)
    url = feed_server.add("/enc.xml", body, headers={"Content-Encoding": ", ".join(codings)})
    result = fetch_one(fetch_settings, Source(name="enc", url=url))
    assert result.status == "ok" and result.body == feed


def test_an_unknown_content_coding_is_a_clear_error(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    url = feed_server.add("/odd.xml", b"<rss/>", headers={"Content-Encoding": "compress"})
    result = fetch_one(fetch_settings, Source(name="odd", url=url))
    assert result.status == "error" and "unsupported Content-Encoding 'compress'" in (result.error or "")


def test_redirect_loop_is_stopped(feed_server: FaultyFeedServer, fetch_settings: Settings) -> None:
    url = feed_server.add("/a.xml", b"", redirect_to="/b.xml")
    feed_server.add("/b.xml", b"", redirect_to="/a.xml", status=301)
    result = fetch_one(fetch_settings, Source(name="loop", url=url))
    assert result.status == "error" and result.error_kind == "redirects"
    assert feed_server.stats("/a.xml").requests == 1 and feed_server.stats("/b.xml").requests == 1


def test_redirect_chain_longer_than_the_limit_is_refused(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    for i in range(fetch_settings.max_redirects + 2):
        feed_server.add(f"/hop{i}", b"", redirect_to=f"/hop{i + 1}")
    result = fetch_one(fetch_settings, Source(name="chain", url=feed_server.url + "/hop0"))
    assert result.status == "error" and result.error_kind == "redirects"
    assert f"more than {fetch_settings.max_redirects} redirects" in (result.error or "")


def test_redirect_is_followed_to_the_feed(feed_server: FaultyFeedServer, fetch_settings: Settings) -> None:
    url = feed_server.add("/old.xml", b"", redirect_to="/new.xml", status=301)
    feed_server.add("/new.xml", RSS)
    result = fetch_one(fetch_settings, Source(name="moved", url=url))
    assert result.status == "ok" and result.body == RSS
    assert result.final_url == feed_server.url + "/new.xml"


def test_robots_txt_disallow_is_honoured(feed_server: FaultyFeedServer, fetch_settings: Settings) -> None:
    feed_server.add("/robots.txt", b"User-agent: finsent\nDisallow: /private/\n", content_type="text/plain")
    blocked = Source(name="private", url=feed_server.add("/private/feed.xml", RSS))
    allowed = Source(name="public", url=feed_server.add("/public/feed.xml", RSS))

    blocked_result, allowed_result = asyncio.run(fetch_all([blocked, allowed], {}, fetch_settings))

    assert blocked_result.status == "error" and blocked_result.error_kind == "robots"
    assert feed_server.stats("/private/feed.xml").requests == 0
    assert allowed_result.status == "ok"
    assert feed_server.stats("/robots.txt").requests == 1  # fetched once, then cached


def test_robots_txt_server_error_disallows_everything(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    feed_server.add("/robots.txt", b"oops", content_type="text/plain", status=500)
    source = Source(name="feed", url=feed_server.add("/feed.xml", RSS))
    result = fetch_one(fetch_settings, source)
    assert result.status == "error" and result.error_kind == "robots"
    assert feed_server.stats("/feed.xml").requests == 0


def test_missing_robots_txt_allows_everything(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    source = Source(name="feed", url=feed_server.add("/feed.xml", RSS))
    result = fetch_one(fetch_settings, source)
    assert result.status == "ok"
    assert feed_server.stats("/robots.txt").statuses == [404]


def test_loopback_is_refused_unless_allowlisted(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    source = Source(name="internal", url=feed_server.add("/feed.xml", RSS))
    result = fetch_one(fetch_settings.model_copy(update={"allowed_hosts": ""}), source)
    assert result.status == "error" and result.error_kind == "blocked_host"
    assert "127.0.0.1" in (result.error or "") and "internal" in (result.error or "")
    assert feed_server.total_requests == 0  # refused before any connection, robots.txt included


def test_localhost_name_is_refused_after_resolving(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    url = feed_server.add("/feed.xml", RSS).replace("127.0.0.1", "localhost")
    result = fetch_one(fetch_settings.model_copy(update={"allowed_hosts": ""}), Source(name="n", url=url))
    assert result.error_kind == "blocked_host"
    assert feed_server.total_requests == 0


class ToLoopback(httpx.AsyncBaseTransport):
    """Send every request to the loopback server, whatever host its URL names.

    This lets a test use a public address in the URL (which passes the guard) while the bytes still
    only travel to 127.0.0.1.
    """

    def __init__(self, base_url: str) -> None:
        self._base = httpx.URL(base_url)
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http", host=self._base.host, port=self._base.port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def test_redirect_to_a_private_address_is_refused(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    feed_server.add("/feed.xml", RSS)
    feed_server.add("/out.xml", b"", redirect_to=feed_server.url + "/feed.xml")
    settings = fetch_settings.model_copy(update={"allowed_hosts": ""})

    async def run() -> FetchResult:
        async with Fetcher(settings, transport=ToLoopback(feed_server.url)) as fetcher:
            return await fetcher.fetch_feed(Source(name="hop", url="http://93.184.216.34/out.xml"))

    result = asyncio.run(run())
    assert result.status == "error" and result.error_kind == "blocked_host"
    assert feed_server.stats("/out.xml").requests == 1  # the public first hop was fetched ...
    assert feed_server.stats("/feed.xml").requests == 0  # ... the private second hop never was


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.0.10", False),
        ("172.16.5.4", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("100.64.0.1", False),
        ("224.0.0.1", False),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_address_classification(address: str, public: bool) -> None:
    assert address_is_public(address) is public


@pytest.mark.parametrize(
    "url", ["ftp://example.com/file", "http://example.com:99999/x", "http://[nope/x", "http:///x"]
)
def test_unusable_page_url_is_an_error_result_not_an_exception(fetch_settings: Settings, url: str) -> None:
    async def run() -> FetchResult:
        async with Fetcher(fetch_settings) as fetcher:
            return await fetcher.fetch_page(url, source_name="odd")

    result = asyncio.run(run())
    assert result.status == "error" and result.error_kind == "blocked_host"
    assert result.error is not None and result.error.startswith(f"odd: {url}: ")


def test_connection_refused_is_a_network_error(fetch_settings: Settings) -> None:
    with FaultyFeedServer() as server:
        url = server.url + "/feed.xml"
    # The server is stopped: nothing listens on that port any more.
    result = fetch_one(fetch_settings.model_copy(update={"retries": 0}), Source(name="off", url=url))
    assert result.status == "error" and result.error_kind == "network"


def test_user_agent_is_descriptive(feed_server: FaultyFeedServer, fetch_settings: Settings) -> None:
    source = Source(name="ua", url=feed_server.add("/ua.xml", RSS))
    fetch_one(fetch_settings, source)
    agent = feed_server.stats("/ua.xml").last_headers["User-Agent"]
    assert agent.startswith("finsent/") and "+http" in agent


def test_per_host_concurrency_is_bounded(feed_server: FaultyFeedServer, fetch_settings: Settings) -> None:
    settings = fetch_settings.model_copy(update={"per_host_concurrency": 2, "source_deadline_s": 10.0})
    sources = [Source(name=f"s{i}", url=feed_server.add(f"/s{i}.xml", RSS, delay_s=0.3)) for i in range(6)]
    started = time.monotonic()
    results = asyncio.run(fetch_all(sources, {}, settings))
    elapsed = time.monotonic() - started
    assert all(r.status == "ok" for r in results)
    # 6 requests of 0.3 s, two at a time on one host: about three rounds, not one.
    assert elapsed >= 0.85


def test_time_queued_behind_the_same_host_does_not_count_against_the_deadline(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    settings = fetch_settings.model_copy(
        update={"per_host_concurrency": 1, "source_deadline_s": 1.2, "read_timeout_s": 1.0}
    )
    sources = [Source(name=f"q{i}", url=feed_server.add(f"/q{i}.xml", RSS, delay_s=0.7)) for i in range(2)]
    started = time.monotonic()
    results = asyncio.run(fetch_all(sources, {}, settings))
    assert time.monotonic() - started >= 1.4  # one after the other: longer than one deadline in all
    assert [r.status for r in results] == ["ok", "ok"]
    assert all(r.duration_s < 1.2 for r in results)


def test_fetch_page_gets_an_article_page_as_html(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    page = b"<html><body><article><p>Full text of the story.</p></article></body></html>"
    url = feed_server.add("/story.html", page, content_type="text/html; charset=utf-8")

    async def run() -> FetchResult:
        async with Fetcher(fetch_settings) as fetcher:
            return await fetcher.fetch_page(url, source_name="wire")

    result = asyncio.run(run())
    assert result.status == "ok" and result.body == page and result.content_type == "text/html; charset=utf-8"
    assert result.source.name == "wire" and result.final_url == url
    assert feed_server.stats("/story.html").last_headers["Accept"].startswith("text/html")


class Recording(httpx.AsyncBaseTransport):
    """Pass every request on to the network, keeping its URL: what the fetcher tried to reach."""

    def __init__(self) -> None:
        self.urls: list[httpx.URL] = []
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(request.url)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://10.0.0.1/feed.xml", "non-public address 10.0.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "link-local or cloud-metadata address 169.254.169.254"),
        ("http://[fe80::1]/feed.xml", "link-local or cloud-metadata address fe80::1"),
    ],
)
def test_a_redirect_from_an_allowlisted_loopback_feed_is_refused_before_connecting(
    feed_server: FaultyFeedServer, fetch_settings: Settings, target: str, reason: str
) -> None:
    """Allowing the feed's own host allows that host only: where it redirects is checked on its own."""
    assert fetch_settings.allowed_hosts == "127.0.0.1"
    url = feed_server.add("/out.xml", b"", redirect_to=target)
    transport = Recording()

    async def run() -> FetchResult:
        async with Fetcher(fetch_settings, transport=transport) as fetcher:
            return await fetcher.fetch_feed(Source(name="hop", url=url))

    result = asyncio.run(run())
    assert result.status == "error" and result.error_kind == "blocked_host"
    assert reason in (result.error or "") and "FINSENT_ALLOWED_HOSTS" in (result.error or "")
    assert result.attempts == 1  # refused, not retried
    assert feed_server.stats("/out.xml").requests == 1  # the allowed feed was fetched ...
    assert {u.host for u in transport.urls} == {"127.0.0.1"}  # ... and nothing else was even tried


def test_the_allowlist_opens_named_hosts_and_networks_only(
    feed_server: FaultyFeedServer, fetch_settings: Settings
) -> None:
    source = Source(name="internal", url=feed_server.add("/feed.xml", RSS))
    for allowed in ("127.0.0.0/8", "127.0.0.1", "10.0.0.0/8, 127.0.0.1"):
        result = fetch_one(fetch_settings.model_copy(update={"allowed_hosts": allowed}), source)
        assert result.status == "ok", (allowed, result.error)
    refused = fetch_one(fetch_settings.model_copy(update={"allowed_hosts": "10.0.0.0/8"}), source)
    assert refused.error_kind == "blocked_host" and "FINSENT_ALLOWED_HOSTS" in (refused.error or "")


def test_metadata_addresses_need_an_exact_entry_not_a_network() -> None:
    wide = HostAllowlist.parse("169.254.0.0/16, 0.0.0.0/0")
    assert not wide.allows("169.254.169.254", "169.254.169.254")
    assert not wide.allows("metadata.internal", "169.254.169.254")
    assert wide.allows("db.internal", "10.1.2.3")
    exact = HostAllowlist.parse(" 169.254.169.254 ,Feeds.Internal")
    assert exact.allows("169.254.169.254", "169.254.169.254")
    assert exact.allows("feeds.internal", "192.168.1.5")
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not a network"):
        HostAllowlist.parse("10.0.0.0/33")
