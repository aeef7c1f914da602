"""Scoring: classify the articles a model version has not scored yet; store scores and rollups per batch.

Each batch is one transaction holding the batch's scores and the recomputed rollup buckets they touch,
so a crash loses at most the batch in flight and a rerun (or a concurrent scorer) never counts twice:
scores are keyed by (article, model version) and rollups are recomputed, not incremented.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from models.inference import Classifier, Prediction, load, title_and_lead
from models.tokenizer import encode_for_classification
from pipeline import store
from pipeline.config import get_settings
from pipeline.scoring import rollups
from pipeline.scoring.registry import ScoringError
from pipeline.store.db import get_engine

log = logging.getLogger(__name__)

# Characters of body text read per article; the classifier sees a few dozen tokens at most anyway.
LEAD_CHARS = 400
# A summary this long already says what the article is about; shorter ones get the body's lead added.
FULL_SUMMARY_CHARS = 120
# Pending articles are read this many batches at a time and batched by text length within the window.
WINDOW_BATCHES = 8
# Stored with a registered version: evaluation metrics if the directory has them, else its training record.
METRICS_FILES = ("metrics.json", "training_summary.json")
_END_PUNCTUATION = (".", "!", "?", ":", ";", "…")


@dataclass(frozen=True)
class BatchReport:
    """What one committed batch did."""

    number: int
    articles: int
    scored: int
    buckets: int
    seconds: float


@dataclass
class ScoreReport:
    """What one scoring run did; ``scored`` counts new score rows only."""

    model_version: str
    scored: int = 0
    batches: int = 0
    seconds: float = 0.0
    read: int = 0
    buckets: int = 0
    predict_seconds: float = 0.0

    @property
    def articles_per_s(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict (with ``articles_per_s``)."""
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        data["predict_seconds"] = round(self.predict_seconds, 3)
        data["articles_per_s"] = round(self.articles_per_s, 1)
        return data


def _squash(text: str | None) -> str:
    return " ".join((text or "").split())


def article_text(title: str, summary: str | None, lead: str | None) -> str:
    """Return the text the classifier reads: the title, then the summary, then the body's lead if needed.

    Feeds often repeat the title as the summary, or the summary as the body's first sentence; repeated
    parts are dropped so the model's few tokens go to new words.
    """
    title, summary, lead = _squash(title), _squash(summary), _squash(lead)
    parts = [title] if title else []
    if summary and summary not in title:
        # A summary that opens with the whole title says everything the title does, and more.
        parts = [summary] if title and summary.startswith(title) else [*parts, summary]
    if lead and len(summary) < FULL_SUMMARY_CHARS:
        for known in (summary, title):
            if known and lead.startswith(known):
                lead = lead[len(known) :].strip()
                break
        if lead and lead not in " ".join(parts):
            parts.append(lead)
    text = ""
    for part in parts:
        if text:
            text += " " if text.endswith(_END_PUNCTUATION) else ". "
        text += part
    return text


def score_row(article_id: int, prediction: Prediction) -> store.ScoreRow:
    """Return the ``scores`` row for ``prediction`` of article ``article_id``."""
    return store.ScoreRow(
        article_id=article_id,
        topic=prediction.topic,
        topic_probs={k: float(v) for k, v in prediction.topic_probs.items()},
        sentiment=prediction.sentiment,
        sentiment_probs={k: float(v) for k, v in prediction.sentiment_probs.items()},
        score=float(prediction.score),
    )


def model_metrics(model_dir: Path) -> dict[str, Any] | None:
    """Return what a model directory records about its quality (the first of ``METRICS_FILES``), or None."""
    for name in METRICS_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ScoringError(f"{path}: not valid JSON: {exc}") from exc
    return None


def load_classifier(model_dir: Path) -> Classifier:
    """Return the classifier in ``model_dir``; raise ScoringError naming the directory if it cannot load."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ScoringError(f"model directory {model_dir} does not exist")
    try:
        return load(model_dir, threads=get_settings().torch_threads)
    except (OSError, ValueError) as exc:
        raise ScoringError(f"cannot load model from {model_dir}: {exc}") from exc


def register_model(engine: Engine, clf: Classifier, model_dir: Path, *, activate: bool = False) -> bool:
    """Register ``clf``'s version (from ``model_dir``); return whether it was new. Optionally activate it."""
    model_dir = Path(model_dir).resolve()
    with engine.begin() as conn:
        new = store.register_model_version(
            conn, clf.version, model_dir.name, str(model_dir), model_metrics(model_dir)
        )
        if activate:
            store.activate_model_version(conn, clf.version)
    if new:
        log.info("registered model version %s from %s", clf.version, model_dir)
    return new


def active_classifier(engine: Engine, model_dir: Path | None = None) -> Classifier:
    """Return the classifier of the active model version, registering and activating one if none is.

    With no active version, ``model_dir`` (default: the ``model_dir`` setting) becomes the active one.
    With an active version, ``model_dir`` may only point at that same version (to say where it lives
    now); scoring with another version is ``rescore``'s job, so that the active scores never mix models.
    """
    with engine.connect() as conn:
        active = store.active_model_version(conn)
        row = store.model_version(conn, active) if active else None
    if row is None:
        chosen = Path(model_dir or get_settings().model_dir)
        clf = load_classifier(chosen)
        register_model(engine, clf, chosen, activate=True)
        log.info("model version %s is now active", clf.version)
        return clf
    if model_dir is not None:
        candidates = [Path(model_dir)]
    else:
        candidates = [Path(p) for p in (row.path, get_settings().model_dir) if p and Path(p).is_dir()]
        if not candidates:
            raise ScoringError(
                f"active model version {row.version} was registered from {row.path}, which does not exist;"
                " pass --model DIR"
            )
    for candidate in candidates:
        clf = load_classifier(candidate)
        if clf.version == row.version:
            if model_dir is not None:
                register_model(engine, clf, candidate)  # remember where the active model lives now
            return clf
    raise ScoringError(
        f"{candidates[-1]} holds model version {clf.version}, but the active version is {row.version}; "
        f"use `finsent rescore --model {candidates[-1]}` then `finsent models activate {clf.version}`"
    )


def token_lengths(clf: Classifier, texts: list[str]) -> list[int]:
    """Return how many tokens the classifier will read of each text.

    Character counts are a poor proxy: links and entities count as characters but are dropped before
    tokenising. Tokenising twice costs a few milliseconds per window; padding waste costs far more.
    """
    bundle = clf.bundle
    return [
        len(ids)
        for ids in encode_for_classification(
            bundle.tokenizer, [title_and_lead(t) for t in texts], bundle.max_length
        )
    ]


def _score_batch(
    engine: Engine, clf: Classifier, articles: list[Any], texts: dict[int, str], report: ScoreReport
) -> BatchReport:
    """Return what classifying ``articles`` and committing their scores and rollup buckets did."""
    started = time.perf_counter()
    predictions = clf.predict([texts[a.id] for a in articles], batch_size=len(articles))
    report.predict_seconds += time.perf_counter() - started
    if len(predictions) != len(articles):
        raise ScoringError(
            f"model {clf.version} returned {len(predictions)} predictions for {len(articles)} texts"
        )
    rows = [score_row(a.id, p) for a, p in zip(articles, predictions, strict=True)]
    with engine.begin() as conn:
        inserted = store.insert_scores(conn, clf.version, rows)
        buckets = rollups.refresh_buckets(conn, clf.version, inserted)
    report.batches += 1
    report.scored += len(inserted)
    report.buckets += buckets
    batch = BatchReport(report.batches, len(articles), len(inserted), buckets, time.perf_counter() - started)
    log.debug(
        "batch %d: %d articles, %d new scores, %d buckets in %.2fs",
        batch.number,
        batch.articles,
        batch.scored,
        batch.buckets,
        batch.seconds,
    )
    return batch


def score_articles(
    engine: Engine,
    clf: Classifier,
    *,
    batch_size: int | None = None,
    limit: int | None = None,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> ScoreReport:
    """Return the report of scoring with ``clf`` the articles its version has not scored (at most ``limit``).

    ``clf``'s version must be registered. ``on_batch`` is called after each committed batch (progress
    display); an exception it raises stops the run with every earlier batch kept.
    """
    batch_size = batch_size or get_settings().batch_size
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    version = clf.version
    report = ScoreReport(model_version=version)
    started = time.perf_counter()
    after_id = 0
    while limit is None or report.read < limit:
        want = (
            batch_size * WINDOW_BATCHES
            if limit is None
            else min(batch_size * WINDOW_BATCHES, limit - report.read)
        )
        with engine.connect() as conn:
            window = store.pending_articles(conn, version, after_id, want, LEAD_CHARS)
        if not window:
            break
        after_id = window[-1].id
        report.read += len(window)
        texts = {a.id: article_text(a.title, a.summary, a.lead) for a in window}
        # Batches of similar length waste little compute on padding (the model pads to a batch's longest).
        lengths = dict(zip(texts, token_lengths(clf, list(texts.values())), strict=True))
        ordered = sorted(window, key=lambda a: lengths[a.id])
        for offset in range(0, len(ordered), batch_size):
            batch = _score_batch(engine, clf, ordered[offset : offset + batch_size], texts, report)
            report.seconds = time.perf_counter() - started
            if on_batch is not None:
                on_batch(batch)
    report.seconds = time.perf_counter() - started
    return report


def score_pending(
    engine: Engine | None = None,
    *,
    model_dir: Path | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> ScoreReport:
    """Return the report of scoring every article the active model version has not scored yet.

    With no active version, ``model_dir`` (default: the ``model_dir`` setting) is registered and made active.
    """
    engine = engine or get_engine()
    clf = active_classifier(engine, Path(model_dir) if model_dir else None)
    report = score_articles(engine, clf, batch_size=batch_size, limit=limit, on_batch=on_batch)
    log.info("scored %d articles with %s in %.1fs", report.scored, report.model_version, report.seconds)
    return report


def rescore(
    engine: Engine | None = None,
    *,
    model_dir: Path,
    batch_size: int | None = None,
    limit: int | None = None,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> ScoreReport:
    """Return the report of scoring all history with the model in ``model_dir``, registered as a new version.

    The active version and its scores stay as they are; ``activate_version`` switches readers over once
    the new version has caught up.
    """
    engine = engine or get_engine()
    clf = load_classifier(Path(model_dir))
    register_model(engine, clf, Path(model_dir))
    report = score_articles(engine, clf, batch_size=batch_size, limit=limit, on_batch=on_batch)
    log.info("rescored %d articles with %s in %.1fs", report.scored, report.model_version, report.seconds)
    return report
