"""robots.txt rules (RFC 9309): what an answer means for crawling, and a per-origin cache with a TTL.

Fetching robots.txt is I/O and lives in pipeline/ingest/fetch.py; this module only decides and remembers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from protego import Protego

# RFC 9309 2.5: crawlers may cache robots.txt, but should not use a cached copy for more than 24 hours.
MAX_TTL_S = 24 * 3600
# RFC 9309 2.5: crawlers must parse at least 500 KiB; more than that may be ignored.
MAX_ROBOTS_BYTES = 500 * 1024
# An unreachable robots.txt means "disallow all", but only until the host is back: retry sooner.
UNREACHABLE_TTL_S = 10 * 60


@dataclass(frozen=True)
class RobotsPolicy:
    """The rules of one origin: parsed robots.txt, or a blanket allow/disallow, and why."""

    rules: Protego | None
    allow_all: bool
    reason: str
    # False when robots.txt could not be fetched at all (network): nothing is crawled, nothing cached.
    reachable: bool = True

    def allows(self, url: str, user_agent: str) -> bool:
        """Return True when ``user_agent`` may fetch ``url`` under this policy."""
        if self.rules is None:
            return self.allow_all
        return bool(self.rules.can_fetch(url, user_agent))


ALLOW_ALL = RobotsPolicy(None, True, "no robots.txt")


def policy_from_response(status: int | None, body: bytes, detail: str = "") -> RobotsPolicy:
    """Return the policy that a robots.txt answer implies (RFC 9309 2.3.1).

    2xx: the parsed rules. 4xx (including 404): no restrictions. 5xx or no answer (``status``
    None): the site is treated as fully disallowed.
    """
    if status is None:
        return RobotsPolicy(None, False, "robots.txt unreachable" + (f" ({detail})" if detail else ""), False)
    if 200 <= status < 300:
        text = body[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
        return RobotsPolicy(Protego.parse(text), True, "robots.txt")
    if 400 <= status < 500:
        return RobotsPolicy(None, True, f"robots.txt answered {status}")
    return RobotsPolicy(None, False, f"robots.txt answered {status}")


def robots_url(url: str) -> str:
    """Return the robots.txt URL for the origin of ``url``."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}/robots.txt"


def agent_token(user_agent: str) -> str:
    """Return the product token robots.txt groups match on (``finsent`` for ``finsent/0.1 (...)``)."""
    return user_agent.split("/", 1)[0].split()[0].strip() or user_agent


class RobotsCache:
    """Policies per origin, each kept for at most its TTL (never more than 24 hours)."""

    def __init__(self, ttl_s: float = MAX_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = min(ttl_s, MAX_TTL_S)
        self._clock = clock
        self._entries: dict[str, tuple[float, RobotsPolicy]] = {}

    def get(self, origin_robots_url: str) -> RobotsPolicy | None:
        """Return the cached policy for a robots.txt URL, or None when absent or expired."""
        entry = self._entries.get(origin_robots_url)
        if entry is None:
            return None
        expires, policy = entry
        if self._clock() >= expires:
            del self._entries[origin_robots_url]
            return None
        return policy

    def put(self, origin_robots_url: str, policy: RobotsPolicy) -> None:
        """Remember ``policy``; an unreachable robots.txt is kept for a shorter time."""
        unreachable = not policy.allow_all and policy.rules is None
        ttl = min(self.ttl_s, UNREACHABLE_TTL_S) if unreachable else self.ttl_s
        self._entries[origin_robots_url] = (self._clock() + ttl, policy)
