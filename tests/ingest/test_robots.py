"""robots.txt decisions (RFC 9309) and the per-origin cache."""

from __future__ import annotations

from pipeline.ingest.robots import (
    MAX_TTL_S,
    UNREACHABLE_TTL_S,
    RobotsCache,
    agent_token,
    policy_from_response,
    robots_url,
)

RULES = b"""User-agent: finsent
Disallow: /private/
Allow: /private/press/

User-agent: *
Disallow: /
"""


def test_rules_for_our_agent_apply_with_allow_overriding_a_shorter_disallow() -> None:
    policy = policy_from_response(200, RULES)
    assert policy.allows("https://bank.example/feed.xml", "finsent")
    assert not policy.allows("https://bank.example/private/x.xml", "finsent")
    assert policy.allows("https://bank.example/private/press/feed.xml", "finsent")
    assert not policy.allows("https://bank.example/feed.xml", "otherbot")


def test_client_error_means_everything_is_allowed() -> None:
    for status in (401, 403, 404, 410):
        policy = policy_from_response(status, b"")
        assert policy.allows("https://bank.example/anything", "finsent") and policy.reachable


def test_server_error_or_no_answer_means_everything_is_disallowed() -> None:
    assert not policy_from_response(503, b"").allows("https://bank.example/feed", "finsent")
    unreachable = policy_from_response(None, b"", detail="connection refused")
    assert not unreachable.allows("https://bank.example/feed", "finsent")
    assert not unreachable.reachable and "connection refused" in unreachable.reason


def test_robots_url_and_agent_token() -> None:
    assert robots_url("HTTPS://Bank.Example:8443/a/b?c=1") == "https://bank.example:8443/robots.txt"
    assert agent_token("finsent/0.1 (+https://example.org; news monitor)") == "finsent"


def test_cache_keeps_policies_at_most_24_hours() -> None:
    now = [0.0]
    cache = RobotsCache(ttl_s=7 * 24 * 3600, clock=lambda: now[0])
    assert cache.ttl_s == MAX_TTL_S
    cache.put("https://a.example/robots.txt", policy_from_response(200, RULES))
    now[0] = MAX_TTL_S - 1
    assert cache.get("https://a.example/robots.txt") is not None
    now[0] = MAX_TTL_S
    assert cache.get("https://a.example/robots.txt") is None


def test_cache_retries_a_failing_robots_txt_sooner() -> None:
    now = [0.0]
    cache = RobotsCache(clock=lambda: now[0])
    cache.put("https://a.example/robots.txt", policy_from_response(500, b""))
    now[0] = UNREACHABLE_TTL_S
    assert cache.get("https://a.example/robots.txt") is None
