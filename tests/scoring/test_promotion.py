"""Promotion gate on real models and PostgreSQL: a candidate replaces the active model only when no metric
regresses beyond the tolerance, and only after it has scored all stored history."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from models.data import SENTIMENT_DIR, SPLIT_FILES, TOPIC_DIR
from pipeline.scoring import promotion
from pipeline.scoring.score import score_pending
from tests.fixtures.scoring import HEADLINES, add_articles, varied_articles

METRICS = {"accuracy": 0.80, "macro_f1": 0.70, "weighted_f1": 0.78, "ece": 0.05}


def _summary(version: str, **changes: float) -> dict:
    sentiment = dict(METRICS)
    sentiment.update(changes)
    return {"model_version": version, "topic": dict(METRICS), "sentiment": sentiment}


def _active(engine: Engine) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT version FROM model_versions WHERE active")).scalar_one()


def _scored_by(engine: Engine, version: str) -> int:
    with engine.connect() as conn:
        sql = "SELECT count(*) FROM scores WHERE model_version = :v"
        return conn.execute(sa.text(sql), {"v": version}).scalar_one()


def test_regressions_count_only_drops_beyond_the_tolerance_and_a_worse_calibration() -> None:
    current = _summary("a")
    assert promotion.metric_regressions(current, _summary("b", macro_f1=0.695), 0.01) == []
    assert promotion.metric_regressions(current, _summary("b", accuracy=0.90, ece=0.02), 0.01) == []
    assert promotion.metric_regressions(current, _summary("b", macro_f1=0.65, ece=0.08), 0.01) == [
        "sentiment.macro_f1: 0.7000 -> 0.6500",
        "sentiment.ece: 0.0500 -> 0.0800",
    ]


def test_candidate_without_regression_scores_all_history_then_becomes_active(
    engine: Engine, make_tiny_model: Callable[[str, int], Path]
) -> None:
    ids = add_articles(engine, varied_articles(10))
    old, new = make_tiny_model("promo-old", 3), make_tiny_model("promo-new", 4)
    score_pending(engine, model_dir=old)

    evaluation = {"active": _summary("promo-old"), "candidate": _summary("promo-new")}
    result = promotion.promote_if_no_regression(new, evaluation, tolerance=0.01, engine=engine)

    assert result["promoted"] and result["rescored"] == len(ids)
    assert _active(engine) == "promo-new"
    assert _scored_by(engine, "promo-new") == _scored_by(engine, "promo-old") == len(ids)


def test_candidate_that_regresses_is_kept_back_and_scores_nothing(
    engine: Engine, make_tiny_model: Callable[[str, int], Path]
) -> None:
    add_articles(engine, varied_articles(6))
    old, new = make_tiny_model("promo-old", 3), make_tiny_model("promo-new", 4)
    score_pending(engine, model_dir=old)
    evaluation = {"active": _summary("promo-old"), "candidate": _summary("promo-new", weighted_f1=0.70)}

    result = promotion.promote_if_no_regression(new, evaluation, tolerance=0.01, engine=engine)

    assert result == {
        "candidate": "promo-new",
        "active": "promo-old",
        "tolerance": 0.01,
        "promoted": False,
        "regressions": ["sentiment.weighted_f1: 0.7800 -> 0.7000"],
    }
    assert _active(engine) == "promo-old"
    assert _scored_by(engine, "promo-new") == 0


@pytest.fixture
def labeled_dir(tmp_path: Path) -> Path:
    """Return a data directory holding small valid splits in the shared data's layout."""
    for task, sub in (("sentiment", SENTIMENT_DIR), ("topic", TOPIC_DIR)):
        path = tmp_path / sub / SPLIT_FILES[(task, "valid")]
        path.parent.mkdir(parents=True)
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows((text, i % 3) for i, text in enumerate(HEADLINES))
    return tmp_path


def test_candidate_and_active_model_are_evaluated_on_the_same_valid_splits(
    engine: Engine,
    make_tiny_model: Callable[[str, int], Path],
    labeled_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FINSENT_MODEL_DIR", str(make_tiny_model("promo-old", 3)))
    from pipeline.config import get_settings

    get_settings.cache_clear()
    evaluation = promotion.evaluate_against_active(make_tiny_model("promo-new", 4), labeled_dir, engine)

    assert evaluation["active"]["model_version"] == "promo-old"
    assert evaluation["candidate"]["model_version"] == "promo-new"
    for summary in evaluation.values():
        assert summary["sentiment"]["n"] == summary["topic"]["n"] == len(HEADLINES)
        assert 0.0 <= summary["sentiment"]["accuracy"] <= 1.0


def test_evaluation_without_labeled_data_names_the_setting(
    engine: Engine, make_tiny_model: Callable[[str, int], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.config import get_settings

    monkeypatch.delenv("FINSENT_DATA_DIR", raising=False)
    get_settings.cache_clear()
    with pytest.raises(promotion.PromotionError, match="FINSENT_DATA_DIR"):
        promotion.evaluate_against_active(make_tiny_model("promo-new", 4), None, engine)
