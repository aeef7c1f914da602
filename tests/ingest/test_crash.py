"""A killed ``finsent ingest`` leaves nothing behind: no worker outlives it, no transaction blocks the next
run, and the next run stores exactly what a clean run stores. Real processes, PostgreSQL and feeds.

Killed while parsing and storing, and killed while still fetching (its parse workers forked, its
connection open, some feeds still arriving).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline import store
from pipeline.demo.feeds import FeedItem, rss_document
from pipeline.ingest.workers import PARALLEL_PARSE_MIN_FEEDS
from tests.fixtures.http_server import FaultyFeedServer
from tests.reliability.test_faults import duplicate_rows, scratch_database, stored_keys

NOW = datetime.now(UTC).replace(microsecond=0)
FEEDS = PARALLEL_PARSE_MIN_FEEDS + 4
ITEMS_PER_FEED = 3


def feed(i: int) -> bytes:
    items = [
        FeedItem(
            f"Company {i} item {j}: shares move on news number {i * 10 + j}",
            f"https://news{i}.example/story-{j}",
            f"Summary of story {j} from feed {i}.",
            timedelta(hours=j + 1),
        )
        for j in range(ITEMS_PER_FEED)
    ]
    return rss_document(f"Feed {i}", f"https://news{i}.example/", items, NOW)


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def grandchildren(pid: int) -> list[int]:
    """Return the run's parse workers: its children (the fork server, the resource tracker) fork them."""
    return [w for c in children(pid) for w in children(c)]


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting to be reaped has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def ingest_command(sources: Path, db_url: str) -> tuple[list[str], dict[str, str]]:
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "FINSENT_ALLOWED_HOSTS": "127.0.0.1",
        "FINSENT_RETRIES": "0",
    }
    code = "from pipeline.cli import app; app()"
    return [sys.executable, "-c", code, "ingest", "--sources", str(sources)], env


def write_sources(server: FaultyFeedServer, path: Path, slow: bool) -> Path:
    lines = []
    for i in range(FEEDS):
        if slow and i == 0:  # one feed drips for ~8 s: the run is caught with its workers started
            url = server.add_faulty(f"/f{i}.xml", feed(i), drip_bytes=64, drip_interval_s=0.2)
        else:
            url = server.add(f"/f{i}.xml", feed(i))
        lines.append(f"- {{name: feed{i}, url: '{url}'}}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_ingest_leaves_no_worker_and_the_next_run_converges(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: ingest parses in its own process, there are no workers to orphan")
    with FaultyFeedServer() as server:
        cmd, env = ingest_command(write_sources(server, tmp_path / "slow.yaml", slow=True), db_url)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(grandchildren(proc.pid)) < 2 and proc.poll() is None:
            time.sleep(0.05)
        assert len(grandchildren(proc.pid)) >= 2, "the run never started its parse workers"
        workers = [*children(proc.pid), *grandchildren(proc.pid)]  # and the fork server, which must go too
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # The workers and their fork server die with it (parent-death signal, end of file), at once.
        end = time.monotonic() + 10
        while time.monotonic() < end and any(alive(w) for w in workers):
            time.sleep(0.05)
        assert not any(alive(w) for w in workers), workers
        # No connection of the killed run lingers on the server.
        name = sa.make_url(db_url).database
        with engine.connect() as conn:
            end = time.monotonic() + 10
            while time.monotonic() < end:
                others = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"
                    ),
                    {"d": name},
                ).scalar_one()
                if not others:
                    break
                time.sleep(0.1)
        assert others == 0
        # The next run finishes promptly and stores exactly what a clean run stores; a rerun adds nothing.
        cmd, env = ingest_command(write_sources(server, tmp_path / "fast.yaml", slow=False), db_url)
        for _run in range(2):
            started = time.monotonic()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-2000:]
            assert time.monotonic() - started < 60
            with engine.connect() as conn:
                articles = conn.execute(sa.text("SELECT count(*) FROM articles")).scalar_one()
                keys = conn.execute(
                    sa.text("SELECT count(DISTINCT canonical_url) FROM articles")
                ).scalar_one()
            assert articles == keys == FEEDS * ITEMS_PER_FEED


SLOW_FEEDS = 4  # drip for ~4 s each, so that the kill lands while they are still being fetched


def dripping(server: FaultyFeedServer, i: int) -> bool:
    """Whether feed ``i`` has been asked for and is still on its way (some of its body sent, not all)."""
    stats = server.stats(f"/f{i}.xml")
    return stats.requests == 1 and 0 < stats.bytes_sent < len(feed(i))


def sessions(engine: Engine, database: str) -> dict[str, int]:
    """Return the other sessions on ``database`` by state ('idle', 'idle in transaction', ...)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT coalesce(state, '?'), count(*) FROM pg_stat_activity"
                " WHERE datname = :d AND pid <> pg_backend_pid() GROUP BY 1"
            ),
            {"d": database},
        ).all()
    return {state: n for state, n in rows}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_ingest_killed_while_fetching_leaves_nothing_and_the_rerun_equals_a_clean_run(
    pg_admin_url: str, db_url: str, engine: Engine, tmp_path: Path
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: ingest parses in its own process, there are no workers to orphan")
    sources = tmp_path / "sources.yaml"
    database = sa.make_url(db_url).database or ""
    with FaultyFeedServer() as server:
        lines = []
        for i in range(FEEDS):
            if i < SLOW_FEEDS:
                url = server.add_faulty(f"/f{i}.xml", feed(i), drip_bytes=64, drip_interval_s=0.2)
            else:
                url = server.add(f"/f{i}.xml", feed(i))
            lines.append(f"- {{name: feed{i}, url: '{url}'}}")
        sources.write_text("\n".join(lines) + "\n")
        cmd, env = ingest_command(sources, db_url)
        env["FINSENT_PER_HOST_CONCURRENCY"] = str(FEEDS)  # one loopback host serves every feed
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            workers: list[int] = []
            started = False
            while time.monotonic() < deadline and proc.poll() is None:
                started = len(grandchildren(proc.pid)) >= 2
                workers = [*children(proc.pid), *grandchildren(proc.pid)]
                fast_done = all(server.stats(f"/f{i}.xml").requests for i in range(SLOW_FEEDS, FEEDS))
                if started and fast_done and all(dripping(server, i) for i in range(SLOW_FEEDS)):
                    break
                time.sleep(0.02)
            assert started and all(dripping(server, i) for i in range(SLOW_FEEDS)), "not fetching"
            with engine.connect() as conn:  # the fetch phase: nothing parsed or stored yet
                assert conn.execute(sa.text("SELECT count(*) FROM fetch_log")).scalar_one() == 0
                assert conn.execute(sa.text("SELECT count(*) FROM articles")).scalar_one() == 0
            assert sessions(engine, database)  # the run is connected
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        cut_short = [i for i in range(SLOW_FEEDS) if server.stats(f"/f{i}.xml").bytes_sent < len(feed(i))]
        assert cut_short, "every slow feed had arrived: the kill did not land while fetching"
        # No worker survives it, and no session of the killed run is left, idle in a transaction or not.
        end = time.monotonic() + 10
        while time.monotonic() < end and any(alive(w) for w in workers):
            time.sleep(0.05)
        assert not any(alive(w) for w in workers), workers
        end = time.monotonic() + 10
        left = sessions(engine, database)
        while time.monotonic() < end and left:
            time.sleep(0.1)
            left = sessions(engine, database)
        assert left == {}
        # The feeds recover; the rerun stores exactly what a clean run stores, and again adds nothing.
        for i in range(SLOW_FEEDS):
            server.add(f"/f{i}.xml", feed(i))
        for _run in range(2):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-2000:]
        with scratch_database(pg_admin_url) as clean_url:
            clean_cmd, clean_env = ingest_command(sources, clean_url)
            clean = subprocess.run(clean_cmd, env=clean_env, capture_output=True, text=True, timeout=120)
            assert clean.returncode == 0, clean.stderr[-2000:]
            clean_rows, clean_keys = stored_keys(clean_url)
    rows, keys = stored_keys(db_url)
    assert clean_rows == FEEDS * ITEMS_PER_FEED
    assert (rows, keys) == (clean_rows, clean_keys)
    assert duplicate_rows(db_url) == 0


def test_the_server_ends_a_guarded_session_left_idle_in_a_transaction(db_url: str, engine: Engine) -> None:
    # What a run killed mid-store looks like to the server: a transaction holding a lock, never ended.
    stuck = engine.connect()
    with stuck.begin():
        store.guard_session(stuck, idle_in_transaction_s=1.0, lock_timeout_s=30.0)
    tx = stuck.begin()
    stuck.execute(sa.text("INSERT INTO sources (name, url) VALUES ('held', 'https://x.example/')"))
    with engine.connect() as other:
        with other.begin():
            store.guard_session(other, idle_in_transaction_s=60.0, lock_timeout_s=30.0)
        started = time.monotonic()
        with other.begin():
            # Waits on the stuck transaction's row lock until the server ends that session (~1 s).
            other.execute(
                sa.text(
                    "INSERT INTO sources (name, url) VALUES ('held', 'https://x.example/')"
                    " ON CONFLICT (name) DO UPDATE SET url = EXCLUDED.url"
                )
            )
        assert time.monotonic() - started < 10
    with pytest.raises(sa.exc.DBAPIError):
        tx.commit()
    stuck.invalidate()
    stuck.close()


def test_a_guarded_statement_gives_up_on_a_lock_after_its_timeout(db_url: str, engine: Engine) -> None:
    holder = engine.connect()
    tx = holder.begin()
    holder.execute(sa.text("LOCK TABLE sources IN ACCESS EXCLUSIVE MODE"))
    try:
        with engine.connect() as waiter:
            with waiter.begin():
                store.guard_session(waiter, idle_in_transaction_s=60.0, lock_timeout_s=0.5)
            started = time.monotonic()
            with pytest.raises(sa.exc.OperationalError, match="lock timeout"), waiter.begin():
                waiter.execute(sa.text("SELECT count(*) FROM sources"))
            assert time.monotonic() - started < 5
    finally:
        tx.rollback()
        holder.close()
