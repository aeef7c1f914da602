"""A small threaded HTTP server on loopback that serves feeds: for the offline demo, tests and benchmarks.

It behaves like a well-run feed host: every route has an ETag (from its body) and a Last-Modified date,
answers conditional requests with 304, and can be given a status code, extra headers, a redirect target
or a delay. It counts requests and body bytes per path so callers can check what went over the wire.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit


def http_date(timestamp: float | None = None) -> str:
    """Return ``timestamp`` (default: now) as an RFC 9110 HTTP date."""
    return formatdate(timestamp if timestamp is not None else time.time(), usegmt=True)


@dataclass
class Route:
    """What one path answers: body, type, validators and optional status, headers, redirect, delay."""

    body: bytes = b""
    content_type: str = "application/rss+xml"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    # A path on this server or a full URL; answered with ``status`` if it is a 3xx, else 302.
    redirect_to: str | None = None
    delay_s: float = 0.0
    last_modified: str = field(default_factory=http_date)

    @property
    def etag(self) -> str:
        """Return a strong ETag derived from the body, so a changed body gets a new one."""
        return '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'


@dataclass
class PathStats:
    """Requests, body bytes sent and the headers of the last request, for one path."""

    requests: int = 0
    bytes_sent: int = 0
    statuses: list[int] = field(default_factory=list)
    last_headers: dict[str, str] = field(default_factory=dict)


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """Return True when an If-None-Match header matches ``etag`` (weak comparison, RFC 9110 13.1.2)."""
    if if_none_match.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in if_none_match.split(","))


def _not_modified_since(if_modified_since: str, last_modified: str) -> bool:
    """Return True when the resource has not changed since the client's copy; unparsable → False."""
    try:
        return parsedate_to_datetime(last_modified) <= parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):
        return False


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive, as real feed hosts do; every answer carries Content-Length.
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def do_GET(self) -> None:
        self.server.feed_server.handle(self, send_body=True)

    def do_HEAD(self) -> None:
        self.server.feed_server.handle(self, send_body=False)

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet by default: tests and benchmarks read counters, not access logs.
        return


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    feed_server: FeedServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (a fetch past its deadline or size cap, a killed run) is
        # normal here; socketserver would print its traceback into whatever output the server shares.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class FeedServer:
    """A threaded HTTP server on loopback serving :class:`Route` objects; use as a context manager."""

    def __init__(
        self,
        routes: dict[str, Route] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
    ) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.host = host
        self.port = port
        self.latency_s = latency_s
        self._stats: dict[str, PathStats] = {}
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Return the base URL, ``http://HOST:PORT`` (binds the socket, so it is known before start)."""
        return f"http://{self.host}:{self._bind().server_address[1]}"

    def _bind(self) -> _HTTPServer:
        if self._httpd is None:
            httpd = _HTTPServer((self.host, self.port), _Handler)
            httpd.feed_server = self
            self._httpd = httpd
        return self._httpd

    def start(self) -> FeedServer:
        """Return self after binding the socket and starting the serving thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._bind().serve_forever, name="feedserver", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._httpd is None:
            return
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- routes and counters ---------------------------------------------------------------------

    def add(self, path: str, body: bytes, content_type: str = "application/rss+xml", **opts: Any) -> str:
        """Return the full URL of ``path`` after serving ``body`` there (``opts`` are Route fields)."""
        if not path.startswith("/"):
            path = "/" + path
        self.routes[path] = Route(body=body, content_type=content_type, **opts)
        return self.url + path

    def stats(self, path: str) -> PathStats:
        """Return a copy of the counters for ``path`` (zeros if it was never requested)."""
        with self._lock:
            s = self._stats.get(path, PathStats())
            return PathStats(s.requests, s.bytes_sent, list(s.statuses), dict(s.last_headers))

    @property
    def total_bytes_sent(self) -> int:
        """Return the body bytes sent over all paths."""
        with self._lock:
            return sum(s.bytes_sent for s in self._stats.values())

    @property
    def total_requests(self) -> int:
        """Return the number of requests over all paths."""
        with self._lock:
            return sum(s.requests for s in self._stats.values())

    def reset_stats(self) -> None:
        """Forget all counters (e.g. between a full and an unchanged poll)."""
        with self._lock:
            self._stats.clear()

    def add_bytes(self, path: str, nbytes: int) -> None:
        """Add ``nbytes`` (may be negative) to the body bytes counted for ``path``."""
        with self._lock:
            self._stats.setdefault(path, PathStats()).bytes_sent += nbytes

    def _record(self, path: str, headers: dict[str, str], status: int, nbytes: int) -> None:
        with self._lock:
            s = self._stats.setdefault(path, PathStats())
            s.requests += 1
            s.bytes_sent += nbytes
            s.statuses.append(status)
            s.last_headers = headers

    # --- serving --------------------------------------------------------------------------------

    def handle(self, handler: BaseHTTPRequestHandler, *, send_body: bool) -> None:
        """Answer one request; subclasses override this to add behaviour and call ``respond``."""
        path = urlsplit(handler.path).path
        route = self.routes.get(path)
        delay = self.latency_s + (route.delay_s if route else 0.0)
        if delay:
            time.sleep(delay)
        if route is None:
            self.respond(handler, path, 404, {"Content-Type": "text/plain"}, b"not found\n", send_body)
            return
        headers = {"ETag": route.etag, "Last-Modified": route.last_modified, **route.headers}
        if route.redirect_to is not None:
            status = route.status if 300 <= route.status < 400 else 302
            self.respond(handler, path, status, {**headers, "Location": route.redirect_to}, b"", send_body)
            return
        inm = handler.headers.get("If-None-Match")
        ims = handler.headers.get("If-Modified-Since")
        # If-None-Match wins over If-Modified-Since when both are sent (RFC 9110 13.2.2).
        unchanged = (
            _etag_matches(inm, route.etag)
            if inm
            else ims is not None and _not_modified_since(ims, route.last_modified)
        )
        if route.status == 200 and unchanged:
            self.respond(handler, path, 304, headers, b"", send_body)
            return
        headers["Content-Type"] = route.content_type
        self.respond(handler, path, route.status, headers, route.body, send_body)

    def respond(
        self,
        handler: BaseHTTPRequestHandler,
        path: str,
        status: int,
        headers: dict[str, str],
        body: bytes,
        send_body: bool = True,
    ) -> None:
        """Send status, headers and body in one go and count them for ``path``."""
        planned = len(body) if send_body and status != 304 else 0
        # Counted before sending: a client that has its answer must find it in the counters.
        self._record(path, dict(handler.headers.items()), status, planned)
        try:
            self.send_head(handler, path, status, headers, len(body))
            if planned:
                handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (timeout, size cap): what it did not take was not sent.
            self.add_bytes(path, -planned)

    @staticmethod
    def send_head(
        handler: BaseHTTPRequestHandler, path: str, status: int, headers: dict[str, str], length: int
    ) -> None:
        """Send the status line and headers, with Content-Length ``length`` (none for a 304)."""
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        if status != 304:
            handler.send_header("Content-Length", str(length))
        handler.end_headers()
