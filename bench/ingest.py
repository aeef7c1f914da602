"""Ingest benchmark: N generated feeds on loopback servers through the real ingest path into a fresh database.

Prints JSON (with --json) with the time of a full poll (every feed new) and of an unchanged poll (every
feed answers 304), and the bytes each cost. The feed servers run in their own process, spread over
several ports so the fetcher treats them as separate hosts (per-host limits apply as in production);
each request waits --latency seconds before it is answered.

    python bench/ingest.py --json                      # 1,000 feeds x 50 items, 50 ms latency
    python bench/ingest.py --feeds 200 --json          # smaller run for a busy machine
    python bench/ingest.py --database-url postgresql://... --json   # a fresh database on that server
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from multiprocessing.connection import Connection
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch_db import drop_database, fresh_database
from pipeline.demo.feeds import FeedItem, rss_document
from pipeline.demo.feedserver import FeedServer

WORDS = [
    "bank",
    "bond",
    "yield",
    "equity",
    "stock",
    "share",
    "market",
    "index",
    "rate",
    "inflation",
    "growth",
    "earnings",
    "revenue",
    "profit",
    "loss",
    "guidance",
    "outlook",
    "forecast",
    "quarter",
    "dividend",
    "buyback",
    "merger",
    "acquisition",
    "deal",
    "stake",
    "investor",
    "analyst",
    "trader",
    "fund",
    "hedge",
    "pension",
    "treasury",
    "credit",
    "spread",
    "default",
    "rating",
    "upgrade",
    "downgrade",
    "currency",
    "dollar",
    "euro",
    "yen",
    "sterling",
    "oil",
    "gas",
    "copper",
    "gold",
    "silver",
    "wheat",
    "supply",
    "demand",
    "tariff",
    "export",
    "import",
    "factory",
    "retail",
    "consumer",
    "spending",
    "wage",
    "jobs",
    "payroll",
    "unemployment",
    "housing",
    "mortgage",
    "lender",
    "deposit",
    "liquidity",
    "capital",
    "reserve",
    "regulator",
    "filing",
    "lawsuit",
    "settlement",
    "probe",
    "fine",
    "chip",
    "software",
    "cloud",
    "data",
    "center",
    "airline",
    "shipping",
    "freight",
    "rail",
    "auto",
    "battery",
    "electric",
    "solar",
    "wind",
    "utility",
    "telecom",
    "media",
    "pharma",
    "drug",
    "trial",
    "approval",
    "vaccine",
    "insurer",
    "premium",
    "claim",
    "bankruptcy",
    "restructuring",
    "layoffs",
    "hiring",
    "ceo",
    "cfo",
    "board",
    "vote",
    "proxy",
    "activist",
    "ipo",
    "listing",
    "debut",
    "shares",
    "surge",
    "slump",
    "rally",
    "slide",
    "jump",
    "fall",
    "rise",
    "climb",
    "drop",
    "steady",
    "volatile",
    "record",
    "high",
    "low",
    "weekly",
    "monthly",
    "annual",
    "fiscal",
    "budget",
    "deficit",
    "stimulus",
    "policy",
    "hawkish",
    "dovish",
    "minutes",
    "statement",
    "speech",
    "testimony",
    "committee",
    "governor",
    "president",
    "minister",
    "election",
    "sanction",
]


class _CountingFeedServer(FeedServer):
    """A FeedServer that also counts response header bytes, so 304 polls are measured as sent."""

    header_bytes = 0

    def respond(
        self,
        handler: BaseHTTPRequestHandler,
        path: str,
        status: int,
        headers: dict[str, str],
        body: bytes,
        send_body: bool = True,
    ) -> None:
        # Status line, Server and Date (added by send_response), our headers, Content-Length, blank line.
        size = len(f"HTTP/1.1 {status} OK\r\nServer: x\r\nDate: Sat, 28 Nov 2026 00:00:00 GMT\r\n")
        size += sum(len(k) + len(v) + 4 for k, v in headers.items()) + 2
        size += 0 if status == 304 else len(f"Content-Length: {len(body)}\r\n")
        with self._lock:
            self.header_bytes += size
        super().respond(handler, path, status, headers, body, send_body)


def _sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def make_feed(feed_no: int, items: int, now: datetime) -> bytes:
    """Return one generated RSS feed of ``items`` distinct items (deterministic per feed number)."""
    rng = random.Random(feed_no)
    entries = [
        FeedItem(
            title=f"{_sentence(rng, 7, 12).capitalize()} ({feed_no}-{i})",
            link=f"https://feed{feed_no}.bench.example/news/{i}-{rng.getrandbits(32):08x}",
            summary=_sentence(rng, 30, 45).capitalize() + ".",
            age=timedelta(minutes=7 * i + rng.randint(0, 6)),
        )
        for i in range(items)
    ]
    return rss_document(f"Bench feed {feed_no}", f"https://feed{feed_no}.bench.example/", entries, now)


def _serve(conn: Connection, feeds: int, items: int, hosts: int, latency: float) -> None:
    """Child process: build the feeds, serve them on ``hosts`` ports, answer stats requests until stopped."""
    now = datetime.now(UTC).replace(microsecond=0)
    servers = [_CountingFeedServer(latency_s=latency) for _ in range(hosts)]
    for server in servers:
        server.start()
    urls = [servers[n % hosts].add(f"/feeds/{n}.rss", make_feed(n, items, now)) for n in range(feeds)]
    conn.send(urls)
    while True:
        command = conn.recv()
        if command == "stats":
            conn.send(
                {
                    "body_bytes": sum(s.total_bytes_sent for s in servers),
                    "header_bytes": sum(s.header_bytes for s in servers),
                    "requests": sum(s.total_requests for s in servers),
                }
            )
        elif command == "reset":
            for s in servers:
                s.reset_stats()
                s.header_bytes = 0
            conn.send("ok")
        else:
            for s in servers:
                s.stop()
            conn.send("stopped")
            return


def _cpu_seconds() -> float:
    """Return user + system CPU seconds of this process and its finished children (the parse workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds each request waits")
    parser.add_argument("--hosts", type=int, default=32, help="loopback ports the feeds are spread over")
    parser.add_argument(
        "--database-url",
        default=None,
        help="server to create a fresh database on (default: a new embedded PostgreSQL)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    parent, child = context.Pipe()
    feeder = context.Process(
        target=_serve, args=(child, args.feeds, args.items, args.hosts, args.latency), daemon=True
    )
    feeder.start()
    urls: list[str] = parent.recv()

    from pipeline.config import Settings
    from pipeline.ingest import run_ingest
    from pipeline.ingest.sources import Source
    from pipeline.store import db

    with tempfile.TemporaryDirectory(prefix="finsent-bench-") as tmp:
        url, server = fresh_database(args.database_url, Path(tmp))
        try:
            engine = db.get_engine(url)
            db.migrate(engine)
            # The feed servers' loopback host(s), and nothing else private.
            feed_hosts = ", ".join(sorted({urlsplit(u).hostname or "" for u in urls}))
            settings = Settings(allowed_hosts=feed_hosts, database_url=url, home=Path(tmp))
            sources = [Source(name=f"bench-{n}", url=u) for n, u in enumerate(urls)]

            cpu_before = _cpu_seconds()
            full = run_ingest(sources, engine=engine, settings=settings)
            full_cpu = _cpu_seconds() - cpu_before
            parent.send("stats")
            full_stats = parent.recv()
            parent.send("reset")
            parent.recv()
            unchanged = run_ingest(sources, engine=engine, settings=settings)
            parent.send("stats")
            unchanged_stats = parent.recv()
            with engine.connect() as conn:
                stored = conn.exec_driver_sql("SELECT count(*) FROM articles").scalar_one()
        finally:
            db.dispose_engines()
            parent.send("stop")
            parent.recv()
            feeder.join(timeout=10)
            if server is not None:
                server.cleanup()
            else:
                drop_database(url)

    full_bytes = full_stats["body_bytes"]
    result: dict[str, object] = {
        "feeds": args.feeds,
        "items_per_feed": args.items,
        "latency_s": args.latency,
        "hosts": args.hosts,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "database": "embedded" if args.database_url is None else "given",
        "seconds": round(full.seconds, 3),
        "feeds_per_s": round(args.feeds / full.seconds, 1),
        "items_per_s": round(full.items_new / full.seconds, 1),
        # CPU the ingest itself used (parse workers included, PostgreSQL not): the load-independent cost.
        "cpu_seconds": round(full_cpu, 2),
        "items_new": full.items_new,
        "articles_stored": stored,
        "sources_failed": full.sources_failed,
        "full_poll_bytes": full_bytes,
        "full_poll_wire_bytes": full_bytes + full_stats["header_bytes"],
        "unchanged_seconds": round(unchanged.seconds, 3),
        "unchanged_not_modified": unchanged.not_modified,
        "unchanged_items_new": unchanged.items_new,
        "unchanged_poll_bytes": unchanged_stats["body_bytes"],
        "unchanged_poll_wire_bytes": unchanged_stats["body_bytes"] + unchanged_stats["header_bytes"],
        "unchanged_share_of_full": round(
            (unchanged_stats["body_bytes"] + unchanged_stats["header_bytes"])
            / max(1, full_bytes + full_stats["header_bytes"]),
            5,
        ),
        "requests_full": full_stats["requests"],
        "requests_unchanged": unchanged_stats["requests"],
    }
    if not args.json:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
