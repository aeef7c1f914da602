"""Full-text extraction under a budget: one pathological article page cannot stall ``finsent ingest``.

The real command line in its own process (its main thread takes the alarm; a test runner's own timer
would switch the budget off in-process), a loopback server, a real PostgreSQL. The pathological page
takes seconds of trafilatura per copy; the budget stops each copy at 0.5 s, its article keeps its
summary, and the control article of the same source and the control feed are stored whole.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.demo.feeds import FeedItem, rss_document
from pipeline.demo.feedserver import FeedServer
from tests.ingest.test_run import ARTICLE_PAGE
from tests.ingest.test_workers import pathological_page

NOW = datetime.now(UTC).replace(microsecond=0)
H = timedelta(hours=1)
HUGE_PAGES = 3  # ~6 s of extraction each on one core here, without the budget


@pytest.mark.parametrize("pg_admin_url", ["embedded"], indirect=True)
def test_pathological_pages_are_stopped_at_their_budget_and_the_rest_of_the_run_is_stored(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    with FeedServer() as server:
        huge = server.add("/pages/huge.html", pathological_page(), "text/html; charset=utf-8")
        wrap = server.add("/pages/wrap.html", ARTICLE_PAGE.encode(), "text/html; charset=utf-8")
        items = [
            FeedItem(
                f"Markets wrap {i}: stocks slip as investors weigh data", f"{huge}?copy={i}", "Teaser.", H
            )
            for i in range(HUGE_PAGES)
        ] + [FeedItem("Stocks slip as investors weigh central bank signals", wrap, "Teaser only.", 2 * H)]
        pages = server.add("/pages.xml", rss_document("Pages", server.url, items, NOW))
        control = [
            FeedItem(f"Control story {i}: bond yields edge higher", f"https://c.example/{i}", "Calm.", H)
            for i in range(3)
        ]
        plain = server.add("/control.xml", rss_document("Control", "https://c.example/", control, NOW))
        sources = tmp_path / "sources.yaml"
        sources.write_text(
            f"- {{name: pages, url: '{pages}', fulltext: true, allowed_hosts: [127.0.0.1]}}\n"
            f"- {{name: control, url: '{plain}', allowed_hosts: [127.0.0.1]}}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINSENT_")}
        env |= {
            "DATABASE_URL": db_url,
            "FINSENT_EXTRACT_TIMEOUT_S": "0.5",
            "FINSENT_RETRIES": "0",
            "COLUMNS": "400",  # the table's warning column on one line
        }
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "from pipeline.cli import app; app()",
                "ingest",
                "--sources",
                str(sources),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        seconds = time.monotonic() - started
        huge_requests = server.stats("/pages/huge.html").requests
    assert done.returncode == 0, done.stderr[-3000:]
    assert huge_requests == HUGE_PAGES  # every pathological page was fetched and handed to extraction
    assert seconds < 30
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT s.name, a.url, a.summary, a.body FROM articles a JOIN sources s ON s.id = a.source_id"
            )
        ).all()
    bodies = {r.url: r.body for r in rows if r.name == "pages"}
    assert "parsed fresh comments from central bank officials" in (bodies.pop(wrap) or "")
    assert bodies == {f"{huge}?copy={i}": None for i in range(HUGE_PAGES)}  # kept their summaries only
    assert {r.summary for r in rows if r.name == "pages" and r.url != wrap} == {"Teaser."}
    assert sum(r.name == "control" for r in rows) == 3
    # The table says why, in the source's row.
    assert (
        f"{HUGE_PAGES} article page(s) kept their summary only: {huge}?copy=" in done.stdout
        and "extraction took longer than 0.5 s (FINSENT_EXTRACT_TIMEOUT_S)" in done.stdout
    ), done.stdout
