"""Faults a deployment meets, each with real components: PostgreSQL going away in the middle of
``finsent ingest`` (the server stopped, or its backends terminated), SMTP down for hours, and secrets
(database, SMTP and feed passwords) that must never reach an error line, a log, the outbox or a table.

The ingest cases run the real CLI in its own process against a loopback feed server with enough feeds
for the parse pool to fork, and compare what the rerun leaves with a clean run into a fresh database.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from pipeline import store
from pipeline.alerts import Rule, deliver_outbox, evaluate, load_rules, notify
from pipeline.config import Settings
from pipeline.demo.feeds import FeedItem, rss_document
from pipeline.demo.feedserver import FeedServer
from pipeline.ingest.workers import PARALLEL_PARSE_MIN_FEEDS
from pipeline.store import db
from tests.fixtures.postgres import end_sessions, local_server_stopped, require_local_cluster
from tests.fixtures.smtp_server import SmtpCatcher, SmtpServer, free_port
from tests.ingest.test_run import ARTICLE_PAGE

NOW = datetime.now(UTC).replace(microsecond=0)
H = timedelta(hours=1)
FEEDS = PARALLEL_PARSE_MIN_FEEDS + 4  # enough changed feeds for the run to fork its parse workers
ITEMS = 12
PAGES = 2  # articles of the full-text source, stored only after their pages arrive
CLI = "from pipeline.cli import app; app()"


def finsent(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """Start the real ``finsent`` command line in its own process."""
    return subprocess.Popen(
        [sys.executable, "-c", CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``finsent`` command line to its end in its own process."""
    return subprocess.run(
        [sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True, timeout=180
    )


@contextmanager
def started(env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[str]]:
    """Yield a running ``finsent`` process; kill it on the way out if a failed check left it running."""
    proc = finsent(env, *args)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def cli_env(**extra: str) -> dict[str, str]:
    """Return this process's environment without any finsent setting, plus ``extra``."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("FINSENT_") and k != "DATABASE_URL"}
    return keep | {"FINSENT_ALLOWED_HOSTS": "127.0.0.1", "FINSENT_RETRIES": "0"} | extra


def count(url: str, sql: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar_one())
    finally:
        engine.dispose()


def stored_keys(url: str) -> tuple[int, set[tuple[str, str]]]:
    """Return (article rows, the set of (source, GUID) they carry)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT s.name, a.guid FROM articles a JOIN sources s ON s.id = a.source_id")
            ).all()
    finally:
        engine.dispose()
    return len(rows), {(r.name, r.guid) for r in rows}


def duplicate_rows(url: str) -> int:
    """Return article rows beyond one per (source, GUID) and one per canonical URL."""
    return count(
        url,
        "SELECT (count(*) - count(DISTINCT (source_id, guid))) + (count(*) - count(DISTINCT canonical_url))"
        " FROM articles",
    )


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """Yield the URL of a new empty database on the server of ``admin_url``; drop it afterwards."""
    name = f"finsent_fault_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


class GatedFeedServer(FeedServer):
    """A feed server that holds its answers on ``gated`` paths until ``gate`` is set: the run waits
    there, its connection idle, while the test takes the database away."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gated: set[str] = set()

    def __enter__(self) -> GatedFeedServer:
        self.start()
        return self

    def handle(self, handler: BaseHTTPRequestHandler, *, send_body: bool) -> None:
        if urlsplit(handler.path).path in self.gated:
            self.gate.wait(timeout=60)
        super().handle(handler, send_body=send_body)


class FeedSet:
    """FEEDS quick feeds of ITEMS stories each, plus one full-text source whose article pages are held
    at the server: the quick feeds are stored while the run waits on those pages, which is when the
    database goes away; the pages follow once the test opens the gate."""

    def __init__(self, server: GatedFeedServer, path: Path) -> None:
        lines = []
        for i in range(FEEDS):
            items = [
                FeedItem(
                    f"Company {i} story {j}: shares move after results number {i * 100 + j}",
                    f"https://news{i}.example/story-{j}",
                    f"Details of story {j} from desk {i}: revenue rose {i}.{j} percent.",
                    (j + 1) * H,
                    guid=f"feed{i}-{j}",
                )
                for j in range(ITEMS)
            ]
            url = server.add(f"/f{i}.xml", rss_document(f"Feed {i}", f"https://news{i}.example/", items, NOW))
            lines.append(f"- {{name: feed{i}, url: '{url}'}}")
        pages = []
        for j in range(PAGES):
            page = server.add(f"/pages/{j}.html", ARTICLE_PAGE.encode(), "text/html; charset=utf-8")
            server.gated.add(f"/pages/{j}.html")
            pages.append(
                FeedItem(f"Markets wrap {j}: stocks slip as investors weigh signals", page, "Teaser.", H)
            )
        url = server.add("/slow.xml", rss_document("Slow", server.url, pages, NOW))
        lines.append(f"- {{name: slow, url: '{url}', fulltext: true}}")
        path.write_text("\n".join(lines) + "\n")
        self.path = path
        self.quick_articles = FEEDS * ITEMS
        self.all_articles = FEEDS * ITEMS + PAGES


def wait_for_articles(url: str, wanted: int, run: subprocess.Popen[str], timeout_s: float = 90) -> None:
    """Wait until ``wanted`` articles are stored while ``run`` is still going, its parse workers alive."""
    engine = sa.create_engine(url)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert run.poll() is None, run.communicate()
            with engine.connect() as conn:
                if conn.execute(sa.text("SELECT count(*) FROM articles")).scalar_one() >= wanted:
                    workers = psutil.Process(run.pid).children(recursive=True)
                    assert len([w for w in workers if w.ppid() != run.pid]) >= 2, "no parse workers started"
                    return
            time.sleep(0.05)
        raise AssertionError(f"fewer than {wanted} articles after {timeout_s} s")
    finally:
        engine.dispose()


def assert_converged(url: str, clean_url: str, feeds: FeedSet) -> None:
    """The database at ``url`` holds exactly the articles of the clean run at ``clean_url``."""
    rows, keys = stored_keys(url)
    clean_rows, clean_keys = stored_keys(clean_url)
    assert clean_rows == feeds.all_articles
    assert (rows, keys) == (clean_rows, clean_keys)
    assert duplicate_rows(url) == 0
    assert count(url, "SELECT count(*) FROM articles WHERE body IS NOT NULL") == PAGES


def embedded_url(env: dict[str, str]) -> str:
    """Return the embedded server's URL, asked of a child process (no exit hook in this one)."""
    code = "from pipeline.store import db; print(db.database_url())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def assert_rerun_converges(env: dict[str, str], url: str, clean_admin_url: str, feeds: FeedSet) -> None:
    """Rerun the ingest; then compare with a clean run into a fresh database on ``clean_admin_url``."""
    rerun = cli(env, "ingest", "--sources", str(feeds.path))
    assert rerun.returncode == 0, rerun.stderr
    with scratch_database(clean_admin_url) as clean_url:
        clean = cli(cli_env(DATABASE_URL=clean_url), "ingest", "--sources", str(feeds.path))
        assert clean.returncode == 0, clean.stderr
        assert_converged(url, clean_url, feeds)


def assert_one_line_error(run: subprocess.Popen[str]) -> str:
    """Return the one stderr line the failed ``run`` ended with, after checking that it is just that."""
    out, err = run.communicate(timeout=120)
    assert run.returncode != 0, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot use the database at "), err
    assert "Traceback" not in err + out
    return lines[0]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="stops the server by pid")
def test_postgres_stopped_mid_ingest_fails_in_one_line_and_the_rerun_equals_a_clean_run(
    tmp_path: Path, embedded_server_url: str
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: ingest parses in its own process, there is no parse pool")
    home = tmp_path / "home"
    env = cli_env(FINSENT_HOME=str(home))
    settings = Settings(home=home)
    try:
        migrated = cli(env, "db", "migrate")
        assert migrated.returncode == 0, migrated.stderr
        url = embedded_url(env)
        with GatedFeedServer() as server:
            feeds = FeedSet(server, tmp_path / "sources.yaml")
            with started(env, "ingest", "--sources", str(feeds.path)) as run:
                wait_for_articles(url, feeds.quick_articles, run)
                assert db.stop_embedded_server(settings) is not None  # its full-text pages are held back
                server.gate.set()
                assert "embedded PostgreSQL" in assert_one_line_error(run)
            # The rerun starts the server again.
            assert_rerun_converges(env, url, embedded_server_url, feeds)
    finally:
        db.stop_embedded_server(settings)


@pytest.mark.slow
@pytest.mark.parametrize("outage", ["sessions ended", "server stopped"])
@pytest.mark.parametrize("pg_admin_url", ["local"], indirect=True)
def test_the_shared_server_lost_mid_ingest_and_the_rerun_equals_a_clean_run(
    tmp_path: Path, pg_admin_url: str, db_url: str, outage: str
) -> None:
    """The server on 127.0.0.1:5432, while the run waits on article pages: its sessions ended
    (pg_terminate_backend, as an administrator or a pooler does) with the server left running, or the
    server itself stopped (fast shutdown) and started again. One line, and the rerun converges."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: ingest parses in its own process, there is no parse pool")
    if outage == "server stopped":
        require_local_cluster()
    env = cli_env(DATABASE_URL=db_url)
    name = str(sa.make_url(db_url).database)
    with GatedFeedServer() as server:
        feeds = FeedSet(server, tmp_path / "sources.yaml")
        with started(env, "ingest", "--sources", str(feeds.path)) as run:
            wait_for_articles(db_url, feeds.quick_articles, run)
            with ExitStack() as outage_lasts:
                if outage == "server stopped":
                    outage_lasts.enter_context(local_server_stopped())
                else:  # the run's connection, idle while its full-text pages are held back
                    assert end_sessions(pg_admin_url, name) >= 1
                server.gate.set()
                assert f"/{name} (DATABASE_URL)" in assert_one_line_error(run)
        assert count(db_url, "SELECT count(*) FROM articles") == feeds.quick_articles
        assert_rerun_converges(env, db_url, pg_admin_url, feeds)


# --- SMTP down for hours ------------------------------------------------------------------------------

VERSION = "faults-test"
RULES_YAML = (
    "rules:\n"
    "  - {name: ticker-1h, dimension: ticker, window: 1h, baseline: 3d, for: 1h, keep_firing_for: 2h,"
    " cooldown: 6h, min_stories: 5, min_rise: 0.2, alpha: 0.001, severity: critical}\n"
)
# Hours well behind the wall clock: `finsent alerts` delivers by the wall clock, so everything the
# simulated hours queued is due when the real command runs.
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 14 * H


def hours(start: datetime, end: datetime) -> list[datetime]:
    return [start + i * H for i in range((end - start) // H)]


def seed_storm(engine: sa.Engine, rules_path: Path) -> list[Rule]:
    """Store four calm days for three tickers and a three-hour negative storm on ACME ending at T0;
    return the rules of ``rules_path`` (one ticker rule that fires on it)."""
    with engine.begin() as conn:
        store.register_model_version(conn, VERSION, "test", None, None)
        store.activate_model_version(conn, VERSION)
        calm = [
            ("ticker", v, t, 4, 1) for v in ("ACME", "GLBX", "INIT") for t in hours(T0 - 96 * H, T0 + 12 * H)
        ]
        store.write_story_counts(conn, VERSION, calm)
        store.write_story_counts(
            conn, VERSION, [("ticker", "ACME", t, 8, 8) for t in hours(T0 - 2 * H, T0 + H)]
        )
    rules_path.write_text(RULES_YAML)
    return load_rules(rules_path)


def outbox(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return store.outbox_emails(conn)


def alerts_env(db_url: str, port: int, rules_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a `finsent alerts` run against ``db_url``, mailing the SMTP server on ``port``;
    the same sender and recipient as ``smtp_settings``."""
    return cli_env(
        DATABASE_URL=db_url,
        FINSENT_SMTP_HOST="127.0.0.1",
        FINSENT_SMTP_PORT=str(port),
        FINSENT_ALERT_TO="desk@example.com",
        FINSENT_ALERT_FROM="finsent@alerts.test",
        FINSENT_ALERT_RULES=str(rules_path),
        **extra,
    )


def smtp_settings(port: int, **extra: Any) -> Settings:
    return Settings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        alert_to="desk@example.com",
        alert_from="finsent@alerts.test",
        **extra,
    )


@pytest.mark.parametrize("pg_admin_url", ["embedded"], indirect=True)
def test_smtp_down_for_hours_then_back_delivers_each_queued_email_exactly_once(
    engine: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    rules = seed_storm(engine, tmp_path / "rules.yaml")
    catcher = SmtpCatcher("127.0.0.1", free_port())  # nothing listens there for the next nine hours
    settings = smtp_settings(catcher.port)
    evaluate(T0 - H, engine=engine, rules=rules, settings=settings)  # pending
    attempts: dict[int, int] = {}
    capped = False
    for step in hours(T0, T0 + 9 * H):  # the hourly alerts run: evaluate, then deliver what is due
        evaluate(step, engine=engine, rules=rules, settings=settings)
        report = deliver_outbox(engine=engine, settings=settings, now=step)
        assert report.sent == 0 and report.failed == 0
        for row in outbox(engine):
            attempts[row.id] = attempts.get(row.id, 0) + 1  # due every hour: the backoff is capped at 1 h
            assert (row.status, row.attempts) == ("pending", attempts[row.id])
            assert row.last_error.startswith(f"attempt {row.attempts}: SMTP 127.0.0.1:{catcher.port}")
            assert "cannot connect" in row.last_error
            assert row.next_attempt_at - step == notify.retry_delay(row.attempts) <= notify.RETRY_MAX
            capped |= row.next_attempt_at - step == notify.RETRY_MAX
    queued = outbox(engine)
    assert capped and max(attempts.values()) == 9  # nine hours down, still queued, never given up
    assert {row.transition for row in queued} == {"firing", "resolved"}  # the storm came and went

    env = alerts_env(db_url, catcher.port, tmp_path / "rules.yaml")
    server = SmtpServer(catcher)
    server.start()
    try:
        back = cli(env, "alerts", "--now", (T0 + 9 * H).isoformat(), "--json")
        assert back.returncode == 0, back.stderr
        assert json.loads(back.stdout.strip().splitlines()[-1])["emails_sent"] == len(queued)
        again = cli(env, "alerts", "--now", (T0 + 10 * H).isoformat(), "--json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout.strip().splitlines()[-1])["emails_sent"] == 0
    finally:
        server.stop()
    rows = outbox(engine)
    assert [r.id for r in rows] == [r.id for r in queued] and {r.status for r in rows} == {"sent"}
    received = sorted(m["Message-ID"] for m in catcher.messages())
    assert received == sorted(r.message_id for r in rows)  # one message per queued email, none twice


@dataclass
class KillingCatcher(SmtpCatcher):
    """Takes each message, then SIGKILLs ``victim`` (the sender) before answering: the server has the
    email, the sender never learns it, and nothing of the sender's runs after."""

    victim: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        if self.victim:
            os.kill(self.victim, signal.SIGKILL)
        return answer


@pytest.mark.parametrize("pg_admin_url", ["embedded"], indirect=True)
def test_alerts_killed_between_the_server_taking_an_email_and_marking_it_sent_never_send_it_twice(
    engine: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    rules = seed_storm(engine, tmp_path / "rules.yaml")
    catcher = KillingCatcher("127.0.0.1", free_port())
    settings = smtp_settings(catcher.port)
    evaluate(T0 - H, engine=engine, rules=rules, settings=settings)  # queued; the CLI run fires it
    env = alerts_env(db_url, catcher.port, tmp_path / "rules.yaml")
    server = SmtpServer(catcher)
    server.start()
    try:
        run = finsent(env, "alerts", "--now", T0.isoformat(), "--json")
        catcher.victim = run.pid  # set long before the first DATA: the command takes seconds to start
        assert run.wait(timeout=120) == -signal.SIGKILL
        catcher.victim = 0
        (taken,) = catcher.messages()
        claimed = [r for r in outbox(engine) if r.status == "sending"]
        assert [r.message_id for r in claimed] == [taken["Message-ID"]]  # claimed, never marked sent

        # A later pass, once the claim's lease has run out: that email is unconfirmed, not sent again;
        # the rest go out once each.
        later = datetime.now(UTC) + notify.CLAIM_LEASE + timedelta(minutes=1)
        report = deliver_outbox(engine=engine, settings=settings, now=later)
        assert report.unconfirmed == 1
        again = deliver_outbox(engine=engine, settings=settings, now=later + notify.RETRY_MAX)
        assert again.sent == 0 and again.unconfirmed == 1
    finally:
        server.stop()
    rows = outbox(engine)
    status = {r.message_id: r.status for r in rows}
    assert status.pop(taken["Message-ID"]) == "unconfirmed"
    assert set(status.values()) <= {"sent"}
    received = [m["Message-ID"] for m in catcher.messages()]
    assert sorted(received) == sorted([taken["Message-ID"], *status])  # each email once, none twice


@pytest.mark.parametrize("pg_admin_url", ["embedded"], indirect=True)
def test_an_email_outlives_six_hours_of_smtp_outage_even_retried_at_every_due_time(
    engine: sa.Engine, tmp_path: Path
) -> None:
    """The tightest retry schedule (a delivery pass at every due time) gives up after MAX_ATTEMPTS; that
    must not come within the first six hours of an outage."""
    rules = seed_storm(engine, tmp_path / "rules.yaml")
    settings = smtp_settings(free_port())
    evaluate(T0 - H, engine=engine, rules=rules, settings=settings)
    evaluate(T0, engine=engine, rules=rules, settings=settings)
    (row,) = outbox(engine)
    now = row.next_attempt_at
    while row.status == "pending":
        deliver_outbox(engine=engine, settings=settings, now=now)
        (row,) = outbox(engine)
        if row.status == "pending":
            assert row.next_attempt_at - now == notify.retry_delay(row.attempts)
            now = row.next_attempt_at
    gave_up_after = now - T0
    assert row.status == "failed" and row.attempts == notify.MAX_ATTEMPTS
    assert gave_up_after == sum((notify.retry_delay(n) for n in range(1, notify.MAX_ATTEMPTS)), timedelta())
    assert gave_up_after >= 6 * H


# --- secrets --------------------------------------------------------------------------------------------

DB_PASSWORD = "s3cret-db-pw"
SMTP_PASSWORD = "s3cret-smtp-pw"
FEED_PASSWORD = "s3cret-feed-pw"
UNREACHABLE_DB = f"postgresql://finsent:{DB_PASSWORD}@127.0.0.1:1/x"
DB_COMMANDS = [
    ["db", "migrate"],
    ["ingest", "--sources", "{sources}"],
    ["run", "--sources", "{sources}"],
    ["score"],
    ["rescore", "--model", "models/default"],
    ["rebuild-rollups"],
    ["models", "list"],
    ["models", "activate", "v1"],
    ["alerts"],
    ["backtest", "--from", "2026-11-01T00:00:00Z", "--to", "2026-11-02T00:00:00Z"],
    ["silence", "add", "--value", "ACME", "--for", "1h"],
    ["silence", "list"],
    ["silence", "expire", "1"],
    ["outbox", "list", "--json"],
    ["outbox", "requeue", "1"],
]


def secret_forms(password: str, user: str = "") -> list[str]:
    """Return ``password`` as written and as an SMTP AUTH PLAIN or HTTP Basic exchange carries it."""
    forms = [password, base64.b64encode(password.encode()).decode()]
    if user:
        forms += [base64.b64encode(f"\0{user}\0{password}".encode()).decode()]
        forms += [base64.b64encode(f"{user}:{password}".encode()).decode()]
    return forms


def assert_no_secret(text: str, password: str, user: str = "") -> None:
    for form in secret_forms(password, user):
        assert form not in text, (
            f"secret found: ...{text[max(0, text.find(form) - 200) : text.find(form) + 50]}"
        )


@pytest.mark.slow  # 15 processes; those that load the model first take ~5 s each
@pytest.mark.parametrize("command", DB_COMMANDS, ids=" ".join)
def test_a_database_password_never_reaches_the_error_line(command: list[str], tmp_path: Path) -> None:
    sources = tmp_path / "sources.yaml"
    sources.write_text("- {name: local, url: 'http://127.0.0.1:1/feed.xml'}\n")
    args = [a.format(sources=sources) for a in command]
    run = cli(cli_env(DATABASE_URL=UNREACHABLE_DB, FINSENT_HOME=str(tmp_path / "home")), *args)
    out, err = run.stdout, run.stderr
    assert run.returncode == 1, (out, err)
    assert out.strip() == "" and len(err.strip().splitlines()) == 1, (out, err)
    assert err.startswith("error: cannot use the database at 127.0.0.1:1/x (DATABASE_URL): "), err
    assert "Traceback" not in err
    assert_no_secret(out + err, DB_PASSWORD)


def test_db_status_names_the_database_but_not_its_password(tmp_path: Path) -> None:
    status = cli(cli_env(DATABASE_URL=UNREACHABLE_DB, FINSENT_HOME=str(tmp_path / "home")), "db", "status")
    assert status.returncode == 0 and "127.0.0.1:1/x" in status.stdout, status.stderr
    assert_no_secret(status.stdout + status.stderr, DB_PASSWORD)


@dataclass
class RefusingAuth:
    """An aiosmtpd authenticator that refuses every login, counting the attempts it saw."""

    logins: list[str] = field(default_factory=list)

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        self.logins.append(mechanism)
        return AuthResult(success=False, handled=False)


@pytest.mark.parametrize("smtp", ["refuses-login", "down"])
@pytest.mark.parametrize("pg_admin_url", ["embedded"], indirect=True)
def test_the_smtp_password_never_reaches_the_outbox_its_listing_or_the_logs(
    smtp: str, engine: sa.Engine, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = seed_storm(engine, tmp_path / "rules.yaml")
    port = free_port()
    settings = smtp_settings(port, smtp_user="alerts", smtp_password=SMTP_PASSWORD)
    evaluate(T0 - H, engine=engine, rules=rules, settings=settings)  # pending; the CLI run fires it
    env = alerts_env(
        db_url, port, tmp_path / "rules.yaml", FINSENT_SMTP_USER="alerts", FINSENT_SMTP_PASSWORD=SMTP_PASSWORD
    )
    auth = RefusingAuth()
    catcher = SmtpCatcher("127.0.0.1", port)
    controller = None
    if smtp == "refuses-login":  # AUTH offered without TLS, so that the password is really sent
        controller = Controller(
            catcher, hostname="127.0.0.1", port=port, authenticator=auth, auth_require_tls=False
        )
        controller.start()
    try:
        texts = []
        for args in (
            ["alerts", "--now", T0.isoformat(), "--json"],
            ["outbox", "list", "--json"],
            ["outbox", "list"],
        ):
            run = cli(env, *args)
            assert run.returncode == 0, run.stderr
            texts.append(run.stdout + run.stderr)
        # A later pass in this process, every logger recording down to DEBUG.
        with caplog.at_level(logging.DEBUG):
            later = datetime.now(UTC) + 2 * notify.RETRY_MAX
            assert deliver_outbox(engine=engine, settings=settings, now=later).retried == 1
    finally:
        if controller is not None:
            controller.stop()
    (row,) = outbox(engine)
    assert row.status == "pending" and row.attempts == 2 and catcher.received == []
    # A refused login names itself (the address is right, the credentials are not), not "cannot connect".
    expected = "login refused for user 'alerts' (535)" if smtp == "refuses-login" else "cannot connect"
    assert expected in row.last_error and expected in texts[1] and expected in caplog.text
    if smtp == "refuses-login":
        assert auth.logins.count("PLAIN") == 2  # the password was really offered, on each attempt
    for text in [
        *texts,
        caplog.text,
        row.last_error,
        json.dumps(notify.list_outbox(engine=engine), default=str),
    ]:
        assert_no_secret(text, SMTP_PASSWORD, "alerts")


@pytest.mark.parametrize("pg_admin_url", ["local"], indirect=True)
def test_a_feed_password_never_reaches_fetch_log_sources_articles_or_output(
    db_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    with FeedServer() as server:
        login = f"http://reader:{FEED_PASSWORD}@127.0.0.1:{server.url.rsplit(':', 1)[1]}"
        # No channel link: relative item links resolve against the feed's own URL, login and all.
        items = [
            FeedItem("Acme shares rise after record quarterly profit", "/story/1", "Relative link.", H),
            FeedItem("Globex cuts outlook as demand slows", f"{server.url}/story/2", "Absolute.", 2 * H),
        ]
        server.add("/feed.xml", rss_document("Feed", "", items, NOW))
        server.add("/page.xml", b"<html><body>not a feed</body></html>", "text/html")
        sources = tmp_path / "sources.yaml"
        sources.write_text(
            f"- {{name: good, url: '{login}/feed.xml'}}\n"
            f"- {{name: missing, url: '{login}/missing.xml'}}\n"
            f"- {{name: html, url: '{login}/page.xml'}}\n"
            f"- {{name: down, url: 'http://reader:{FEED_PASSWORD}@127.0.0.1:1/feed.xml'}}\n"
        )
        run = cli(cli_env(DATABASE_URL=db_url), "ingest", "--sources", str(sources), "--json")
        out, err = run.stdout, run.stderr
        authorization = server.stats("/feed.xml").last_headers.get("Authorization")
        base = server.url
    assert run.returncode == 0, err
    assert authorization == "Basic " + base64.b64encode(f"reader:{FEED_PASSWORD}".encode()).decode()
    with engine.connect() as conn:
        tables = {
            table: [r[0] for r in conn.execute(sa.text(f"SELECT t::text FROM {table} t"))]
            for table in ("sources", "fetch_log", "articles")
        }
        errors: dict[str, str | None] = dict(
            conn.execute(
                sa.text("SELECT s.name, f.error FROM fetch_log f JOIN sources s ON s.id = f.source_id")
            ).all()
        )
        links = sorted(conn.execute(sa.text("SELECT url FROM articles")).scalars())
    assert len(tables["sources"]) == len(tables["fetch_log"]) == 4 and len(tables["articles"]) == 2
    assert errors["good"] is None and all(errors[n] for n in ("missing", "html", "down"))
    assert "http://***@127.0.0.1" in (errors["missing"] or "")  # says which feed, without its login
    assert links == [f"{base}/story/1", f"{base}/story/2"]
    for text in [out + err, *(row for rows in tables.values() for row in rows)]:
        assert_no_secret(text, FEED_PASSWORD, "reader")
