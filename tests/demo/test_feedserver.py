"""The loopback feed server: validators, conditional answers, redirects, delays and counters."""

from __future__ import annotations

import time

import httpx

from pipeline.demo.feedserver import FeedServer, Route

BODY = b"<rss version='2.0'><channel><title>t</title></channel></rss>"


def test_serves_body_with_etag_and_last_modified() -> None:
    with FeedServer() as server:
        url = server.add("/feed.xml", BODY)
        response = httpx.get(url)
    assert response.status_code == 200 and response.content == BODY
    assert response.headers["Content-Type"] == "application/rss+xml"
    assert response.headers["ETag"].startswith('"') and response.headers["Last-Modified"].endswith("GMT")


def test_matching_etag_gets_304_without_body() -> None:
    with FeedServer() as server:
        url = server.add("/feed.xml", BODY)
        etag = httpx.get(url).headers["ETag"]
        again = httpx.get(url, headers={"If-None-Match": etag})
        other = httpx.get(url, headers={"If-None-Match": '"something-else"'})
        stats = server.stats("/feed.xml")
    assert again.status_code == 304 and again.content == b""
    assert other.status_code == 200
    assert stats.statuses == [200, 304, 200] and stats.bytes_sent == 2 * len(BODY)


def test_if_modified_since_gets_304_only_when_not_newer() -> None:
    with FeedServer() as server:
        url = server.add("/feed.xml", BODY, last_modified="Tue, 03 Mar 2026 10:00:00 GMT")
        same = httpx.get(url, headers={"If-Modified-Since": "Tue, 03 Mar 2026 10:00:00 GMT"})
        older = httpx.get(url, headers={"If-Modified-Since": "Mon, 02 Mar 2026 10:00:00 GMT"})
    assert same.status_code == 304
    assert older.status_code == 200 and older.content == BODY


def test_etag_changes_when_the_body_changes() -> None:
    assert Route(body=b"a").etag != Route(body=b"b").etag
    assert Route(body=b"a").etag == Route(body=b"a").etag


def test_redirect_status_headers_and_unknown_path() -> None:
    routes = {
        "/old": Route(redirect_to="/new", status=301),
        "/new": Route(body=BODY, headers={"X-Test": "1"}),
    }
    with FeedServer(routes) as server:
        moved = httpx.get(server.url + "/old")
        followed = httpx.get(server.url + "/old", follow_redirects=True)
        missing = httpx.get(server.url + "/nope")
        error = httpx.get(server.add("/broken", b"down", status=503))
    assert moved.status_code == 301 and moved.headers["Location"] == "/new"
    assert followed.content == BODY and followed.headers["X-Test"] == "1"
    assert missing.status_code == 404
    assert error.status_code == 503 and error.content == b"down"


def test_latency_and_route_delay_slow_the_answer() -> None:
    with FeedServer(latency_s=0.1) as server:
        url = server.add("/slow", BODY, delay_s=0.2)
        started = time.monotonic()
        httpx.get(url)
        elapsed = time.monotonic() - started
    assert elapsed >= 0.3


def test_counts_requests_and_bytes_per_path_and_resets() -> None:
    with FeedServer() as server:
        a = server.add("/a", BODY)
        b = server.add("/b", BODY * 2)
        with httpx.Client() as client:
            client.get(a)
            client.get(b)
            client.get(b)
        assert server.stats("/a").requests == 1 and server.stats("/b").bytes_sent == 4 * len(BODY)
        assert server.total_requests == 3 and server.total_bytes_sent == 5 * len(BODY)
        server.reset_stats()
        assert server.total_requests == 0


def test_url_is_known_before_start_and_port_is_freed_after_stop() -> None:
    server = FeedServer()
    url = server.add("/feed.xml", BODY)
    assert url.startswith("http://127.0.0.1:")
    with server:
        assert httpx.get(url).content == BODY
    try:
        httpx.get(url, timeout=1)
    except httpx.ConnectError:
        pass
    else:
        raise AssertionError("server still answers after stop()")
