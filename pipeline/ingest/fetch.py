"""Fetch feeds and article pages politely and safely with async httpx.

Every fetch is bounded: connect/read timeouts, a total deadline per source, a body size cap (the body
is streamed and dropped once it is too large), a redirect limit (redirects are followed by hand so each
hop passes the SSRF guard and robots.txt), retries with exponential backoff on 5xx and timeouts, and
global plus per-host concurrency limits. Conditional GET saves the body when nothing changed.
Network and HTTP trouble never raises: it comes back as a FetchResult with ``status="error"``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import math
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Literal
from urllib.parse import urljoin, urlsplit

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from pipeline.config import Settings, get_settings, host_entry
from pipeline.ingest.decode import BadEncoding, BodyTooLarge, BoundedDecoder
from pipeline.ingest.robots import (
    MAX_ROBOTS_BYTES,
    RobotsCache,
    RobotsPolicy,
    agent_token,
    policy_from_response,
    robots_url,
)
from pipeline.ingest.sources import Source, redact_credentials

FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.5"
)
PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.5"
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})

ErrorKind = Literal[
    "timeout", "deadline", "http_status", "too_large", "redirects", "robots", "blocked_host", "network"
]


@dataclass(frozen=True)
class Validators:
    """What the server said identifies this version of the document, for the next conditional GET."""

    etag: str | None = None
    last_modified: str | None = None

    def request_headers(self) -> dict[str, str]:
        """Return the If-None-Match / If-Modified-Since headers these validators call for."""
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


@dataclass
class FetchResult:
    """The outcome of fetching one URL for one source; ``error``/``error_kind`` set when it failed."""

    source: Source
    url: str
    status: Literal["ok", "not_modified", "error"]
    http_status: int | None
    body: bytes
    content_type: str | None
    final_url: str | None
    validators: Validators
    bytes: int
    duration_s: float
    error: str | None = None
    error_kind: str | None = None
    attempts: int = 1


class FetchFailure(Exception):
    """One failed fetch, with the kind of failure; caught inside the fetcher and turned into a result."""

    def __init__(self, kind: ErrorKind, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.http_status = http_status


class TransientFailure(FetchFailure):
    """A failure worth retrying: a 5xx or 429 answer, a timeout or a dropped connection."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        http_status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(kind, message, http_status)
        self.retry_after_s = retry_after_s


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Return the wait a Retry-After header asks for (delta seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _BackoffOrRetryAfter(wait_base):
    """Exponential backoff with jitter, lengthened to the server's Retry-After, never past ``max_s``."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._backoff = wait_exponential_jitter(multiplier=initial_s, max=max_s, jitter=initial_s / 2)
        self._max_s = max_s

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = self._backoff(retry_state)
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        asked = getattr(failure, "retry_after_s", None)
        return min(max(wait, asked or 0.0), self._max_s)


def address_is_public(address: str) -> bool:
    """Return True when an IP address is globally routable (not private, loopback, link-local, ...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


# Instance-metadata services of the large clouds: credentials live there, never a feed.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)


@dataclass(frozen=True)
class HostAllowlist:
    """Non-public hosts that may be fetched: names and addresses allowed exactly, networks as a whole.

    ``FINSENT_ALLOWED_HOSTS`` is the global one; a source's ``allowed_hosts`` widens it for that source.
    """

    names: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> HostAllowlist:
        """Return the allowlist of a comma-separated setting; raise ValueError naming a bad entry."""
        return cls.of(text.split(","), "FINSENT_ALLOWED_HOSTS")

    @classmethod
    def of(cls, entries: Iterable[str], setting: str = "allowed_hosts") -> HostAllowlist:
        """Return the allowlist of ``entries`` (host names, IP addresses, CIDR networks)."""
        names: set[str] = set()
        networks = []
        for entry in (e for e in entries if e.strip()):
            try:
                normal = host_entry(entry)
            except ValueError as exc:
                raise ValueError(f"{setting}: {exc}") from None
            if "/" in normal:
                networks.append(ipaddress.ip_network(normal))
            else:
                names.add(normal)
        return cls(frozenset(names), tuple(networks))

    def merged(self, other: HostAllowlist) -> HostAllowlist:
        """Return the union of both allowlists (a source's entries on top of the global ones)."""
        if not other.names and not other.networks:
            return self
        return HostAllowlist(self.names | other.names, (*self.networks, *other.networks))

    def allows(self, host: str, address: str) -> bool:
        """Return whether ``address`` (which ``host`` resolved to) may be fetched although not public."""
        ip = _ip(address)
        if host.lower() in self.names or str(ip) in self.names:
            return True
        if _link_local_or_metadata(ip):
            return False  # a network never covers these: only an exact entry does
        return any(ip in net for net in self.networks if net.version == ip.version)


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _link_local_or_metadata(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_link_local or ip in METADATA_ADDRESSES


async def check_host(url: str, *, allowed: HostAllowlist | None = None) -> None:
    """Raise FetchFailure unless ``url`` is http(s) and every address its host resolves to may be fetched.

    Public addresses may; any other (private, loopback, reserved) only when ``allowed`` covers it, and a
    link-local or cloud-metadata address only when ``allowed`` names it exactly. Every address the name
    resolves to is checked, so a name with one private record is refused. (The connection resolves the
    name again; a resolver that answers differently the second time is outside what this guard can see.)
    """
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise FetchFailure("blocked_host", f"malformed URL: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise FetchFailure("blocked_host", f"only http and https URLs are fetched, not {parts.scheme!r}")
    if not host:
        raise FetchFailure("blocked_host", "URL has no host")
    allowed = allowed or HostAllowlist()
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchFailure("network", f"cannot resolve host {host!r}: {exc}") from exc
    for info in infos:
        address = str(info[4][0])
        if address_is_public(address) or allowed.allows(host, address):
            continue
        if _link_local_or_metadata(_ip(address)):
            raise FetchFailure(
                "blocked_host",
                f"host {host!r} resolves to link-local or cloud-metadata address {address}: refused "
                "unless the source's allowed_hosts or FINSENT_ALLOWED_HOSTS names it exactly",
            )
        raise FetchFailure(
            "blocked_host",
            f"host {host!r} resolves to non-public address {address} "
            "(list it in the source's allowed_hosts or in FINSENT_ALLOWED_HOSTS to allow)",
        )


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str | None
    final_url: str
    headers: httpx.Headers


# httpcore's pool scans every connection for every queued request, so one pool of 64 connections costs
# far more CPU than 8 pools of 8 (measured: 1,000 loopback feeds at concurrency 64 took ~8x longer).
CONNECTIONS_PER_CLIENT = 8


class Fetcher:
    """An async context manager holding the httpx clients, the robots.txt cache and concurrency limits."""

    def __init__(
        self, settings: Settings | None = None, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings or get_settings()
        self._transport = transport
        self._clients: list[httpx.AsyncClient] = []
        self._next_client = itertools.count()
        self._global = asyncio.Semaphore(self.settings.concurrency)
        self._per_host: dict[str, asyncio.Semaphore] = {}
        self.robots_cache = RobotsCache(self.settings.robots_ttl_s)
        self._robots_locks: dict[str, asyncio.Lock] = {}
        self._agent = agent_token(self.settings.user_agent)
        self._allowed = HostAllowlist.parse(self.settings.allowed_hosts)
        self._scoped: dict[tuple[str, ...], HostAllowlist] = {}

    async def __aenter__(self) -> Fetcher:
        s = self.settings
        # A caller-supplied transport is one pool already: a single client then.
        count = max(1, math.ceil(s.concurrency / CONNECTIONS_PER_CLIENT))
        if self._transport is not None:
            count = 1
        per_client = math.ceil(s.concurrency / count)
        # One TLS context for all clients: loading the CA bundle costs ~50 ms each time.
        tls = httpx.create_ssl_context()
        self._clients = [
            httpx.AsyncClient(
                headers={"User-Agent": s.user_agent},
                timeout=httpx.Timeout(
                    connect=s.connect_timeout_s,
                    read=s.read_timeout_s,
                    write=s.read_timeout_s,
                    pool=s.source_deadline_s,
                ),
                limits=httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client),
                follow_redirects=False,
                verify=tls,
                transport=self._transport,
            )
            for _ in range(count)
        ]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for client in self._clients:
            await client.aclose()
        self._clients = []

    # --- public API --------------------------------------------------------------------------------

    async def fetch_feed(self, source: Source, validators: Validators | None = None) -> FetchResult:
        """Return the result of a (conditional) GET of ``source.url``; never raises on network trouble."""
        return await self._fetch(source, source.url, validators or Validators(), FEED_ACCEPT)

    async def fetch_page(
        self, url: str, *, source_name: str, allowed_hosts: Sequence[str] = ()
    ) -> FetchResult:
        """Return the result of fetching an article page for ``source_name`` (for full-text extraction),
        under that source's ``allowed_hosts``."""
        # Not validated: a page link with a bad scheme must come back as an error result, not raise here.
        source = Source.model_construct(
            name=source_name, url=url, tags=[], fulltext=True, allowed_hosts=list(allowed_hosts)
        )
        return await self._fetch(source, url, Validators(), PAGE_ACCEPT)

    def allowlist(self, source: Source) -> HostAllowlist:
        """Return what ``source`` may fetch beyond public addresses: the global allowlist plus its own.

        Raise ValueError on a bad entry (a Source built without validation).
        """
        key = tuple(source.allowed_hosts)
        scoped = self._scoped.get(key)
        if scoped is None:
            scoped = self._scoped[key] = self._allowed.merged(HostAllowlist.of(key))
        return scoped

    # --- one fetch: deadline, retries, result ------------------------------------------------------

    async def _fetch(self, source: Source, url: str, validators: Validators, accept: str) -> FetchResult:
        if not self._clients:
            raise RuntimeError("Fetcher must be used as 'async with Fetcher(...) as fetcher'")
        # A source holds its host slot, then a global one, for its whole fetch (robots.txt, redirects,
        # retries and backoff included), and its deadline starts once it has them: time queued behind
        # other sources of the same host is not held against it. Host slot first, so a source waiting
        # for a busy host holds no global slot.
        async with self._host_semaphore(url), self._global:
            return await self._fetch_now(source, url, validators, accept)

    async def _fetch_now(self, source: Source, url: str, validators: Validators, accept: str) -> FetchResult:
        s = self.settings
        started = time.monotonic()
        attempts = 0

        def result(status: Literal["ok", "not_modified", "error"], **kw: object) -> FetchResult:
            fields: dict[str, object] = {
                "http_status": None,
                "body": b"",
                "content_type": None,
                "final_url": None,
                "validators": validators,
                "bytes": 0,
                "error": None,
                "error_kind": None,
            }
            fields.update(kw)
            return FetchResult(
                source=source,
                url=url,
                status=status,
                duration_s=time.monotonic() - started,
                attempts=max(attempts, 1),
                **fields,  # type: ignore[arg-type]
            )

        def failed(kind: str, message: str, http_status: int | None = None) -> FetchResult:
            error = redact_credentials(f"{source.name}: {url}: {message}")
            return result("error", error=error, error_kind=kind, http_status=http_status)

        try:
            allowed = self.allowlist(source)
        except ValueError as exc:
            return failed("blocked_host", str(exc))
        try:
            async with asyncio.timeout(s.source_deadline_s):
                retrying = AsyncRetrying(
                    stop=stop_after_attempt(s.retries + 1),
                    wait=_BackoffOrRetryAfter(s.retry_backoff_s, s.retry_backoff_max_s),
                    retry=retry_if_exception_type(TransientFailure),
                    reraise=True,
                )
                async for attempt in retrying:
                    with attempt:
                        attempts += 1
                        response = await self._get_following_redirects(url, validators, accept, allowed)
        except TimeoutError:
            return failed(
                "deadline",
                f"no complete answer within the {s.source_deadline_s:g} s deadline "
                f"(after {attempts} attempt(s))",
            )
        except FetchFailure as exc:
            suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
            return failed(exc.kind, f"{exc}{suffix}", exc.http_status)

        new_validators = Validators(
            etag=response.headers.get("ETag") or None,
            last_modified=response.headers.get("Last-Modified") or None,
        )
        if response.status == 304:
            # A 304 may repeat or refresh the validators; keep the old ones where it says nothing.
            kept = Validators(
                new_validators.etag or validators.etag,
                new_validators.last_modified or validators.last_modified,
            )
            return result("not_modified", http_status=304, final_url=response.final_url, validators=kept)
        return result(
            "ok",
            http_status=response.status,
            body=response.body,
            content_type=response.content_type,
            final_url=response.final_url,
            validators=new_validators,
            bytes=len(response.body),
        )

    # --- one attempt: redirects, guard, robots, size cap --------------------------------------------

    async def _get_following_redirects(
        self, url: str, validators: Validators, accept: str, allowed: HostAllowlist
    ) -> _Response:
        """Return the answer at the end of ``url``'s redirects, each hop checked against ``allowed``."""
        seen: set[str] = set()
        current = url
        for _hop in range(self.settings.max_redirects + 1):
            seen.add(current)
            await check_host(current, allowed=allowed)
            policy = await self._robots_policy(current, allowed)
            if not policy.reachable:
                # RFC 9309: unreachable robots.txt means "do not crawl"; the cause is the network.
                raise TransientFailure("network", f"{policy.reason} for {current}")
            if not policy.allows(current, self._agent):
                raise FetchFailure("robots", f"disallowed by robots.txt ({policy.reason}) for {current}")
            headers = {"Accept": accept}
            # Validators belong to the document at the source URL; send them only there.
            if current == url:
                headers.update(validators.request_headers())
            response = await self._get(current, headers, self.settings.max_body_bytes)
            if response.status in REDIRECT_CODES:
                location = response.headers.get("Location")
                if not location:
                    raise FetchFailure(
                        "http_status", f"HTTP {response.status} without a Location header", response.status
                    )
                target = urljoin(current, location)
                if target in seen:
                    raise FetchFailure("redirects", f"redirect loop: {current} -> {target}")
                current = target
                continue
            if response.status >= 500 or response.status == 429:
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                raise TransientFailure(
                    "http_status", f"HTTP {response.status} from {current}", response.status, retry_after
                )
            if response.status >= 400:
                raise FetchFailure("http_status", f"HTTP {response.status} from {current}", response.status)
            return response
        limit = self.settings.max_redirects
        raise FetchFailure("redirects", f"more than {limit} redirects (last: {current})")

    def _host_semaphore(self, url: str) -> asyncio.Semaphore:
        try:
            host = urlsplit(url).netloc.lower()
        except ValueError:
            host = ""  # a malformed URL; check_host refuses it before any request
        sem = self._per_host.get(host)
        if sem is None:
            sem = self._per_host[host] = asyncio.Semaphore(self.settings.per_host_concurrency)
        return sem

    async def _get(
        self, url: str, headers: dict[str, str], max_bytes: int, *, truncate: bool = False
    ) -> _Response:
        """Return one GET's status, headers and body, streamed and stopped at ``max_bytes``.

        A longer body is a ``too_large`` failure, or with ``truncate`` is cut to its first ``max_bytes``.
        """
        client = self._clients[next(self._next_client) % len(self._clients)]
        try:
            async with client.stream("GET", url, headers=headers) as response:
                # Read even a 304's or a redirect's (empty, small) body: an unread response
                # cannot go back to the pool, and a new connection per poll is slow.
                status = response.status_code
                body = await _read_capped(response, max_bytes, truncate)
                return _Response(
                    status, body, response.headers.get("Content-Type"), str(response.url), response.headers
                )
        except httpx.TimeoutException as exc:
            raise TransientFailure("timeout", f"{type(exc).__name__} talking to {url}") from exc
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError) as exc:
            raise TransientFailure("network", f"connection dropped by {url}: {exc!r}") from exc
        except httpx.DecodingError as exc:
            raise FetchFailure("network", f"cannot decode the body from {url}: {exc}") from exc
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise FetchFailure("network", f"{type(exc).__name__} talking to {url}: {exc}") from exc

    # --- robots.txt ---------------------------------------------------------------------------------

    async def _robots_policy(self, url: str, allowed: HostAllowlist) -> RobotsPolicy:
        """Return the cached or freshly fetched robots.txt policy for the origin of ``url``.

        The cache is shared by sources with different allowlists: an origin's robots.txt is only ever
        asked for after ``url`` itself passed the asking source's allowlist.
        """
        key = robots_url(url)
        policy = self.robots_cache.get(key)
        if policy is not None:
            return policy
        # One fetch per origin even when many sources of that host start at once.
        lock = self._robots_locks.setdefault(key, asyncio.Lock())
        async with lock:
            policy = self.robots_cache.get(key)
            if policy is None:
                policy = await self._fetch_robots(key, allowed)
                if policy.reachable:  # a network failure is retried with the fetch, not remembered
                    self.robots_cache.put(key, policy)
        return policy

    async def _fetch_robots(self, robots: str, allowed: HostAllowlist) -> RobotsPolicy:
        """Return the policy from GETting ``robots`` (following up to 5 redirects, RFC 9309 2.3.1.2)."""
        current = robots
        for _hop in range(6):
            try:
                await check_host(current, allowed=allowed)
                response = await self._get(
                    current, {"Accept": "text/plain, */*;q=0.5"}, MAX_ROBOTS_BYTES, truncate=True
                )
            except FetchFailure as exc:
                return policy_from_response(None, b"", detail=str(exc))
            if response.status in REDIRECT_CODES and response.headers.get("Location"):
                current = urljoin(current, response.headers["Location"])
                continue
            return policy_from_response(response.status, response.body)
        # RFC 9309: more than five redirects may be treated as an unavailable robots.txt (allow all).
        return policy_from_response(404, b"")


async def _read_capped(response: httpx.Response, max_bytes: int, truncate: bool) -> bytes:
    """Return the decoded body, raising ``too_large`` as soon as it passes ``max_bytes``.

    The cap applies to decoded bytes, counted as every Content-Encoding layer produces them
    (``pipeline.decode``), so neither a gzip bomb nor a stack of them (``gzip, gzip``) inflates in memory.
    """
    declared = response.headers.get("Content-Length", "")
    if not truncate and declared.isdigit() and int(declared) > max_bytes:
        raise FetchFailure(
            "too_large",
            f"body of {int(declared):,} bytes is over the {max_bytes:,}-byte cap ({response.url})",
            response.status_code,
        )
    try:
        decoder = BoundedDecoder(response.headers.get("Content-Encoding"), max_bytes, truncate)
        async for chunk in response.aiter_raw():
            decoder.feed(chunk)
            if decoder.full:
                break
        return decoder.finish()
    except BodyTooLarge as exc:
        raise FetchFailure(
            "too_large",
            f"decoded body passed the {max_bytes:,}-byte cap ({response.url})",
            response.status_code,
        ) from exc
    except BadEncoding as exc:
        raise FetchFailure("network", f"cannot decode the body from {response.url}: {exc}") from exc


async def fetch_all(
    sources: list[Source], validators: dict[str, Validators], settings: Settings | None = None
) -> list[FetchResult]:
    """Return one FetchResult per source (same order), fetched concurrently within the configured limits."""
    async with Fetcher(settings) as fetcher:
        return list(
            await asyncio.gather(*(fetcher.fetch_feed(src, validators.get(src.name)) for src in sources))
        )
