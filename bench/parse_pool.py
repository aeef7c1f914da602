"""Start-up cost of the parse workers: a fork server (what runs use) vs forking the run itself.

    python bench/parse_pool.py --json [--feeds 20] [--repeats 3]

Each try runs in a fresh interpreter, as ``finsent ingest`` does: enter a ParsePool, parse ``--feeds``
small generated feeds (50 items each) in it, leave it. The best of ``--repeats`` wall times counts for
each start method, alternated so both see the same machine. The last line printed is one JSON object:
workers, forkserver_s, fork_s and ratio (forkserver / fork).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent

# One try: the seconds from entering the pool to leaving it, printed with the pool's worker count.
_TRY = """
import multiprocessing, sys, time
from datetime import UTC, datetime
from bench.ingest import make_feed
from pipeline.config import DEFAULT_WATCHLIST
from pipeline.ingest import workers
from pipeline.ingest.fetch import FetchResult, Validators
from pipeline.ingest.sources import Source

if __name__ == "__main__":
    method, feeds = sys.argv[1], int(sys.argv[2])
    if method == "fork":
        workers._worker_context = lambda: multiprocessing.get_context("fork")
    now = datetime.now(UTC)
    results = []
    for i in range(feeds):
        url, body = f"https://f{i}.example/rss", make_feed(i, 50, now)
        results.append(FetchResult(
            Source(name=f"f{i}", url=url), url, "ok", 200, body, "application/rss+xml", url,
            Validators(None, None), len(body), 0.0,
        ))
    started = time.perf_counter()
    with workers.ParsePool(feeds, DEFAULT_WATCHLIST) as pool:
        parsed = sum(len(p.entries) for _, p in pool.prepare_all(results, now))
    print(pool.workers, time.perf_counter() - started, parsed)
"""


def one_try(method: str, feeds: int) -> tuple[int, float]:
    done = subprocess.run(
        [sys.executable, "-c", _TRY, method, str(feeds)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    workers, seconds, _parsed = done.stdout.split()
    return int(workers), float(seconds)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    best = {"forkserver": float("inf"), "fork": float("inf")}
    workers = 0
    for _ in range(args.repeats):
        for method in best:
            workers, seconds = one_try(method, args.feeds)
            best[method] = min(best[method], seconds)
    result = {
        "workers": workers,
        "feeds": args.feeds,
        "forkserver_s": round(best["forkserver"], 3),
        "fork_s": round(best["fork"], 3),
        "ratio": round(best["forkserver"] / best["fork"], 2),
    }
    if not args.json:
        times = f"fork server {best['forkserver']:.2f} s, fork {best['fork']:.2f} s"
        print(f"{workers} workers, {args.feeds} feeds: {times}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
