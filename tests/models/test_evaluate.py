"""Tests for models.evaluate: metric values, calibration error, baseline, and the report's shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.data import load_split
from models.evaluate import (
    HEADLINE,
    EvalReport,
    baseline_probabilities,
    evaluate,
    expected_calibration_error,
    format_report,
    labels_of,
    paired_bootstrap,
    reliability_bins,
    task_metrics,
)
from models.inference import load
from tests.fixtures.models import TOPICS, sentiment_rows, write_csv
from tests.shared_data import shared_data_dir

METRIC_KEYS = {"accuracy", "macro_f1", "weighted_f1", "ece", "n"}


def test_reliability_points_show_how_often_calls_at_each_confidence_are_right() -> None:
    # 10 calls at 0.9 (9 right), 10 at 0.6 (6 right): both points on the diagonal.
    probs = np.array([[0.9, 0.1]] * 10 + [[0.4, 0.6]] * 10)
    labels = np.array([0] * 9 + [1] + [1] * 6 + [0] * 4)
    points = reliability_bins(probs, labels)
    assert [(round(p["confidence"], 2), round(p["accuracy"], 2), p["n"]) for p in points] == [
        (0.6, 0.6, 10),
        (0.9, 0.9, 10),
    ]
    assert sum(p["n"] for p in reliability_bins(np.full((5, 3), 1 / 3), np.zeros(5, int))) == 5


def test_calibration_error_is_zero_when_confidence_matches_accuracy() -> None:
    probs = np.array([[0.75, 0.25]] * 4)
    labels = np.array([0, 0, 0, 1])  # 75 % right at 75 % confidence
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0)


def test_calibration_error_of_overconfident_predictions() -> None:
    probs = np.array([[1.0, 0.0]] * 4)
    labels = np.array([0, 1, 0, 1])  # 50 % right at 100 % confidence
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5)


def test_task_metrics_values() -> None:
    labels = np.array([0, 0, 1, 2])
    probs = np.eye(3)[[0, 1, 1, 2]]
    m = task_metrics(labels, probs)
    assert set(m) == METRIC_KEYS
    assert m["accuracy"] == pytest.approx(0.75) and m["n"] == 4
    # F1 per class: 0 -> 2/3, 1 -> 2/3, 2 -> 1.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert m["weighted_f1"] == pytest.approx((2 * 2 / 3 + 2 / 3 + 1) / 4)


def test_baseline_learns_the_toy_sentiments(tiny_data_dir: Path) -> None:
    train = load_split(tiny_data_dir, "sentiment", "train")
    valid = load_split(tiny_data_dir, "sentiment", "valid")
    probs = baseline_probabilities(train, valid, "sentiment")
    assert probs.shape == (len(valid), 3)
    assert (probs.argmax(1) == labels_of(valid, "sentiment")).mean() == 1.0


def test_report_has_the_documented_shape(tiny_trained_dir: Path, tiny_data_dir: Path) -> None:
    clf = load(tiny_trained_dir)
    report = evaluate(clf, tiny_data_dir)
    summary = report.summary
    assert set(summary) == {"sentiment", "topic", "baseline", "news", "model_version"}
    assert set(summary["sentiment"]) == set(summary["topic"]) == METRIC_KEYS
    assert set(summary["baseline"]["sentiment"]) == set(summary["baseline"]["topic"]) == METRIC_KEYS
    assert summary["sentiment"]["n"] == 12 and summary["topic"]["n"] == 6
    assert summary["model_version"] == clf.version
    assert np.array(report.confusion["topic"]).sum() == 6
    assert "confusion matrix, topic" in format_report(report, clf.bundle.topics, clf.bundle.sentiments)
    assert set(report.gaps) == {"sentiment", "topic"}
    assert {"sentiment", "topic"} <= set(report.reliability)
    assert sum(p["n"] for p in report.reliability["sentiment"]) == 12
    assert "paired-bootstrap interval" in format_report(report, clf.bundle.topics, clf.bundle.sentiments)


def test_news_section_reports_each_set_per_class_and_beside_the_baseline(
    tiny_trained_dir: Path, tiny_data_dir: Path
) -> None:
    clf = load(tiny_trained_dir)
    report = evaluate(clf, tiny_data_dir)
    news = report.summary["news"]
    # SENTiVENT (evaluation only) and the hold-outs of the training-allowed files; 6 + 6 + 3 rows.
    assert {name: m["n"] for name, m in news.items()} == {
        "sentivent_eval": 6,
        "sentfin_heldout": 6,
        "finentity_heldout": 3,
    }
    for name, m in news.items():
        assert set(m) >= METRIC_KEYS and set(m["per_class"]) == {"negative", "neutral", "positive"}
        assert sum(c["n"] for c in m["per_class"].values()) == m["n"]
        assert set(m["baseline"]) >= METRIC_KEYS and "per_class" in m["baseline"]
        matrix = np.array(report.confusion[f"news/{name}"])
        assert matrix.sum() == m["n"]
        # Recall read off the confusion matrix: the diagonal over the row sums.
        recall = np.diag(matrix) / np.maximum(matrix.sum(1), 1)
        assert [m["per_class"][c]["recall"] for c in ("negative", "neutral", "positive")] == pytest.approx(
            recall
        )
    text = format_report(report, clf.bundle.topics, clf.bundle.sentiments)
    assert "news sentiment" in text and "confusion matrix, news/sentivent_eval" in text


def test_news_section_is_left_out_without_labeled_news(tiny_trained_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_csv(data / "twitter_financial_news_sentiment" / "sent_train.csv", sentiment_rows() * 3)
    write_csv(data / "twitter_financial_news_sentiment" / "sent_valid.csv", sentiment_rows())
    write_csv(data / "twitter_financial_news_topic" / "topic_train.csv", list(TOPICS) * 3)
    write_csv(data / "twitter_financial_news_topic" / "topic_valid.csv", list(TOPICS))
    assert "news" not in evaluate(load(tiny_trained_dir), data, baseline=False).summary


def test_paired_bootstrap_brackets_the_gap_and_sees_a_sure_gain() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 600)
    baseline = np.where(rng.random(600) < 0.7, labels, (labels + 1) % 3)  # right 70 % of the time
    better = np.where(rng.random(600) < 0.5, labels, baseline)  # fixes about half of its errors
    gap = paired_bootstrap(labels, better, baseline, "accuracy", n=300)
    assert gap["ci95_low"] <= gap["gap"] <= gap["ci95_high"]
    assert gap["gap"] > 0.1 and gap["ci95_low"] > 0 and gap["p_no_gain"] == 0.0
    # The same predictions on both sides: no gain in any resample.
    same = paired_bootstrap(labels, baseline, baseline, "weighted_f1", n=50)
    assert same["gap"] == same["ci95_low"] == same["ci95_high"] == 0.0 and same["p_no_gain"] == 1.0


@pytest.fixture(scope="module")
def shipped_eval() -> EvalReport:
    """The shipped model's ``finsent eval`` report on the real valid splits, baseline fit in the same run."""
    return evaluate(load(), shared_data_dir())


@pytest.fixture(scope="module")
def shipped_report(shipped_eval: EvalReport) -> dict:
    return shipped_eval.summary


def test_shipped_model_gives_the_metrics_recorded_beside_it(shipped_report: dict) -> None:
    from models.inference import DEFAULT_MODEL_DIR

    # The numbers in metrics.json (and so in the model card and README) are the ones the model gives.
    recorded = json.loads((DEFAULT_MODEL_DIR / "metrics.json").read_text(encoding="utf-8"))
    for task in ("sentiment", "topic"):
        for metric in ("accuracy", "weighted_f1", "macro_f1"):
            assert shipped_report[task][metric] == pytest.approx(recorded[task][metric], abs=2e-3)
            got, want = shipped_report["gpt_only"][task][metric], recorded["gpt_only"][task][metric]
            assert got == pytest.approx(want, abs=2e-3)


@pytest.mark.parametrize("task", ["topic", "sentiment"])
def test_shipped_model_beats_the_baseline_beyond_the_noise_of_valid(
    shipped_eval: EvalReport, task: str
) -> None:
    # The 95 % paired-bootstrap interval of the gap in the task's headline metric lies above zero.
    gap = shipped_eval.gaps[task]
    assert gap["metric"] == HEADLINE[task] and float(gap["ci95_low"]) > 0, gap


def test_the_lexical_part_lifts_the_gpt_on_both_tasks(shipped_report: dict) -> None:
    for task in ("topic", "sentiment"):
        metric = HEADLINE[task]
        assert shipped_report[task][metric] > shipped_report["gpt_only"][task][metric]


def test_shipped_model_reads_plain_headlines_right() -> None:
    expected = {
        "Acme shares plunge after profit warning": "negative",
        "Globex misses estimates and cuts full-year guidance": "negative",
        "Initech stock tumbles as CEO resigns amid accounting probe": "negative",
        "Hooli shares soar after record quarterly profit": "positive",
        "Acme beats estimates and raises dividend": "positive",
        "Analysts upgrade Globex to buy, stock jumps 8%": "positive",
        "Initech to present at investor conference on Tuesday": "neutral",
        "Globex schedules third-quarter earnings call": "neutral",
    }
    predictions = load().predict(list(expected))
    right = [p.sentiment == want for p, want in zip(predictions, expected.values(), strict=True)]
    assert sum(right) >= 7, dict(zip(expected, [p.sentiment for p in predictions], strict=True))
