"""Scoring throughput: articles/s end to end (database → model → database) vs the model's raw predict.

Both are measured in one run on the same texts, so ``db_overhead`` (raw rate / end-to-end rate) shows
what reading articles, writing scores and keeping the rollups current costs on top of inference.

    python bench/scoring.py --json [--articles 2000] [--batch-size 64] [--model DIR]

Runs in a throwaway database on ``--database-url``'s server (default: DATABASE_URL, else the embedded
one), dropped afterwards. The model is ``--model``, else the shipped default model, else a randomly
initialised classifier of the default size (the speed of a model does not depend on its weights). Texts
are real headlines from the labeled set under FINSENT_DATA_DIR when it is set, else generated ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Run as a script from anywhere: the repository root holds the packages.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa
import torch

from models.data import SENTIMENT_DIR, SPLIT_FILES, read_labeled_csv
from models.inference import Classifier, load
from pipeline import store
from pipeline.config import get_settings
from pipeline.ingest.sources import Source
from pipeline.scoring.score import article_text, score_pending
from pipeline.store import db

SOURCES = ("wire", "daily", "markets", "blog", "press")
TICKERS = ("AAPL", "MSFT", "NVDA", "AMZN", "TSLA", "JPM", "XOM", "GS")


def headlines(count: int, seed: int = 0) -> list[str]:
    """Return ``count`` headlines: the labeled validation set's (repeated as needed) or generated ones."""
    data_dir = get_settings().data_dir
    path = Path(data_dir) / SENTIMENT_DIR / SPLIT_FILES[("sentiment", "valid")] if data_dir else None
    if path is not None and path.is_file():
        pool = [text for text, _ in read_labeled_csv(path)]
    else:
        rng = random.Random(seed)
        subjects = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Cyberdyne"]
        verbs = [
            "beats estimates",
            "misses forecasts",
            "cuts guidance",
            "raises dividend",
            "faces probe",
            "announces buyback",
            "shares slide",
            "shares jump",
        ]
        pool = [
            f"{rng.choice(subjects)} {rng.choice(verbs)} as {rng.choice(subjects)} {rng.choice(verbs)}"
            for _ in range(500)
        ]
    return [pool[i % len(pool)] for i in range(count)]


def random_model_dir(texts: list[str], directory: Path) -> Path:
    """Return a directory holding a randomly initialised classifier of the default size."""
    from models.network import (
        ModelBundle,
        TrunkSpec,
        classifier_from_language_model,
        new_language_model,
        save_bundle,
    )
    from models.tokenizer import train_tokenizer

    torch.manual_seed(0)
    tok = train_tokenizer(texts, vocab_size=8000)
    model = classifier_from_language_model(new_language_model(TrunkSpec(), tok))
    return save_bundle(ModelBundle(model=model, tokenizer=tok, version="bench-random"), directory)


def fill_articles(engine: sa.Engine, texts: list[str], chunk: int = 1000) -> None:
    """Store one article per text, spread over a day, five sources and a few tickers."""
    start = datetime(2026, 11, 2, tzinfo=UTC)
    rng = random.Random(1)
    with engine.begin() as conn:
        sources = store.upsert_sources(
            conn, [Source(name=n, url=f"http://127.0.0.1/{n}.xml") for n in SOURCES]
        )
    for offset in range(0, len(texts), chunk):
        part = texts[offset : offset + chunk]
        with engine.begin() as conn:
            ids = store.allocate_article_ids(conn, len(part))
            rows = []
            for n, (article_id, text) in enumerate(zip(ids, part, strict=True), start=offset):
                published = start + timedelta(seconds=86400 * n // len(texts))
                key = f"bench-{n}"
                rows.append(
                    store.NewArticle(
                        id=article_id,
                        source_id=sources[SOURCES[n % len(SOURCES)]].id,
                        guid=key,
                        url=f"http://127.0.0.1/a/{n}",
                        canonical_url=f"http://127.0.0.1/a/{n}",
                        title=text,
                        summary="",
                        body=None,
                        published_at=published,
                        date_missing=False,
                        fetched_at=published,
                        language="en",
                        content_hash=key,
                        title_hash=key,
                        # Every fifth article is a syndicated copy of the one before it.
                        story_id=article_id - 1 if n % 5 == 4 and n > offset else article_id,
                        tickers=rng.sample(TICKERS, k=rng.randint(0, 2)),
                    )
                )
            store.insert_articles(conn, rows)


def timed_predict(clf: Classifier, texts: list[str], batch_size: int) -> float:
    """Return the seconds ``clf`` takes to classify ``texts``."""
    started = time.perf_counter()
    clf.predict(texts, batch_size=batch_size)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4, help="alternations of raw and end-to-end runs")
    parser.add_argument("--batch-size", type=int, default=get_settings().batch_size)
    parser.add_argument("--model", type=Path, default=None, help="model dir (default: the shipped model)")
    parser.add_argument("--database-url", default=None, help="server to create the throwaway database on")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    threads = get_settings().torch_threads
    if threads:
        torch.set_num_threads(threads)

    texts = headlines(args.articles)
    workdir = Path(tempfile.mkdtemp(prefix="finsent-bench-"))
    model_dir = args.model or get_settings().model_dir
    model_kind = "given" if args.model else "shipped"
    if not (Path(model_dir) / "config.json").is_file():
        model_dir, model_kind = random_model_dir(texts, workdir / "model"), "random-default-size"

    server_url = db.sqlalchemy_url(args.database_url) if args.database_url else db.database_url()
    admin_url = sa.make_url(server_url).set(database="postgres")
    name = f"finsent_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        store.create_database(conn, name)
    try:
        engine = db.get_engine(admin_url.set(database=name).render_as_string(hide_password=False))
        db.migrate(engine)
        fill_articles(engine, texts)

        clf = load(model_dir)
        model_texts = [article_text(t, "", None) for t in texts]
        clf.predict(model_texts[: args.batch_size], batch_size=args.batch_size)  # warm-up: lazy init, caches
        # Rounds alternate raw predict and end-to-end scoring on the same slice of articles, so a busy
        # machine slows both sides alike instead of skewing whichever ran during the busy spell.
        raw_seconds = e2e_seconds = predict_seconds = 0.0
        scored, version = 0, ""
        size = -(-len(texts) // args.rounds)
        for offset in range(0, len(texts), size):
            chunk = model_texts[offset : offset + size]
            raw_seconds += timed_predict(clf, chunk, args.batch_size)
            report = score_pending(engine, model_dir=model_dir, batch_size=args.batch_size, limit=len(chunk))
            e2e_seconds += report.seconds
            predict_seconds += report.predict_seconds
            scored, version = scored + report.scored, report.model_version
        with engine.connect() as conn:
            rollup_rows = conn.execute(sa.text("SELECT count(*) FROM rollups_hourly")).scalar_one()
    finally:
        db.dispose_engines()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    raw_rate = len(texts) / raw_seconds
    e2e_rate = scored / e2e_seconds
    result = {
        "bench": "scoring",
        "articles": len(texts),
        "scored": scored,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "model": model_kind,
        "model_version": version,
        "end_to_end_articles_per_s": round(e2e_rate, 1),
        "raw_predict_articles_per_s": round(raw_rate, 1),
        "db_overhead": round(raw_rate / e2e_rate, 3),
        "end_to_end_seconds": round(e2e_seconds, 3),
        "raw_predict_seconds": round(raw_seconds, 3),
        "predict_seconds_in_end_to_end": round(predict_seconds, 3),
        # Same runs, same moments: the share of end-to-end time spent outside the model.
        "db_share_of_end_to_end": round(1 - predict_seconds / e2e_seconds, 3),
        "rollup_rows": rollup_rows,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    if not args.json:
        for key, value in result.items():
            print(f"{key:32} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
