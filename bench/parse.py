"""Parse speed: the fast RSS 2.0 reader vs feedparser alone, on the same feeds, in the same run.

    python bench/parse.py --json [--feeds 200] [--items 50] [--repeats 3]

Feeds are the ingest benchmark's generated RSS 2.0 documents, plus every recorded real feed in
``$FINSENT_DATA_DIR/feeds`` when that is set. Each path runs ``pipeline.parse.parse_feed`` (decoding,
normalisation and language detection included) over all of them; the best of ``--repeats`` CPU times
counts. The last line printed is one JSON object: items, fast_ms_per_item, feedparser_ms_per_item, ratio
(feedparser / fast), and taken (the share of documents the fast reader took).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import make_feed
from pipeline.ingest.fastrss import read_plain_rss
from pipeline.ingest.parse import FeedError, _to_feedparser_bytes, decode_feed, parse_feed


class ParseResult(TypedDict):
    """The JSON object printed last."""

    documents: int
    items: int
    fast_ms_per_item: float
    feedparser_ms_per_item: float
    ratio: float
    taken: float


def documents(feeds: int, items: int) -> list[bytes]:
    """Return the generated feeds plus the recorded real ones (when the data directory is set)."""
    now = datetime.now(UTC)
    docs = [make_feed(i, items, now) for i in range(feeds)]
    data_dir = os.environ.get("FINSENT_DATA_DIR")
    if data_dir and (Path(data_dir) / "feeds").is_dir():
        docs += [
            p.read_bytes()
            for p in sorted((Path(data_dir) / "feeds").iterdir())
            if p.suffix in (".xml", ".rss")
        ]
    return docs


def cpu_seconds(docs: list[bytes], fast: bool) -> tuple[float, int]:
    """Return the CPU seconds to parse every document, and the items parsed."""
    fetched_at = datetime.now(UTC)
    items = 0
    start = time.process_time()
    for i, body in enumerate(docs):
        try:
            feed = parse_feed(
                body,
                source_name=f"bench{i}",
                url=f"https://bench.example/{i}",
                fetched_at=fetched_at,
                fast=fast,
            )
        except FeedError:
            continue
        items += len(feed.entries)
    return time.process_time() - start, items


def main(argv: list[str] | None = None) -> ParseResult:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    docs = documents(args.feeds, args.items)
    cpu_seconds(docs[:5], fast=True)  # warm-up: the language model and imports load once
    fast, items = min(cpu_seconds(docs, fast=True) for _ in range(args.repeats))
    slow = min(cpu_seconds(docs, fast=False)[0] for _ in range(args.repeats))
    taken = sum(read_plain_rss(_to_feedparser_bytes(decode_feed(d, None)[0])) is not None for d in docs)
    result: ParseResult = {
        "documents": len(docs),
        "items": items,
        "fast_ms_per_item": round(1000 * fast / items, 4),
        "feedparser_ms_per_item": round(1000 * slow / items, 4),
        "ratio": round(slow / fast, 2),
        "taken": round(taken / len(docs), 3),
    }
    print(json.dumps(result) if args.json else result)
    return result


if __name__ == "__main__":
    main()
