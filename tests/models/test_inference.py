"""Tests for models.inference: the Prediction contract, odd inputs, determinism and batching."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.inference import Classifier, Prediction, load, sorted_batches, title_and_lead

ODD_INPUTS = [
    "",
    "   ",
    "Acme shares soar after record profit " * 200,
    "Die Aktie von Siemens fällt nach der Gewinnwarnung",
    "株価が急落 🚀📉💰",
    "\x00\x01 control characters",
]


@pytest.fixture(scope="module")
def clf(tiny_trained_dir: Path) -> Classifier:
    return load(tiny_trained_dir, threads=1)


def test_predictions_follow_the_contract(clf: Classifier) -> None:
    preds = clf.predict(["Oil prices jump on supply cuts", "Globex misses estimates and cuts guidance"])
    assert len(preds) == 2
    for p in preds:
        assert isinstance(p, Prediction)
        assert p.sentiment in ("negative", "neutral", "positive")
        assert set(p.sentiment_probs) == {"negative", "neutral", "positive"}
        assert len(p.topic_probs) == 20 and p.topic == max(p.topic_probs, key=p.topic_probs.get)
        assert sum(p.topic_probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert sum(p.sentiment_probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert p.score == pytest.approx(p.sentiment_probs["positive"] - p.sentiment_probs["negative"])
        assert p.model_version == clf.version


def test_empty_list_gives_no_predictions(clf: Classifier) -> None:
    assert clf.predict([]) == []


def test_empty_long_foreign_and_emoji_texts_each_get_a_prediction(clf: Classifier) -> None:
    preds = clf.predict(ODD_INPUTS)
    assert len(preds) == len(ODD_INPUTS)
    assert all(-1.0 <= p.score <= 1.0 for p in preds)


def test_results_do_not_depend_on_batch_size_or_order(clf: Classifier) -> None:
    texts = ["Fed raises rates", "Crude slides as inventories build this week", "Hooli names a new director"]
    one_by_one = clf.predict(texts, batch_size=1)
    together = clf.predict(list(reversed(texts)), batch_size=64)[::-1]
    for a, b in zip(one_by_one, together, strict=True):
        assert a.topic == b.topic and a.sentiment == b.sentiment
        assert a.score == pytest.approx(b.score, abs=1e-5)


def test_reloading_gives_the_same_version_and_predictions(tiny_trained_dir: Path, clf: Classifier) -> None:
    again = load(tiny_trained_dir)
    assert again.version == clf.version
    assert again.predict(["Oil prices jump"]) == clf.predict(["Oil prices jump"])


def test_the_trained_tiny_model_learned_its_toy_sentiments(clf: Classifier) -> None:
    preds = clf.predict(["$ACME shares soar after record profit", "$ACME shares plunge after profit warning"])
    assert preds[0].score > preds[1].score


def test_long_article_keeps_title_and_lead() -> None:
    article = "Acme profit warning\n\n" + "Acme cut its outlook on weak demand. " * 50
    short = title_and_lead(article, max_chars=120)
    assert short.startswith("Acme profit warning. Acme cut its outlook")
    assert len(short) <= 120
    assert title_and_lead("short headline") == "short headline"


def test_batches_are_sorted_by_length_and_cover_every_item() -> None:
    batches = sorted_batches([3, 9, 1, 7, 5], batch_size=2)
    assert batches == [[1, 3], [4, 0], [2]]


def test_int8_model_gives_valid_close_predictions(tiny_trained_dir: Path, clf: Classifier) -> None:
    quantized = load(tiny_trained_dir, int8=True)
    texts = ["Oil prices jump on supply cuts", "Globex misses estimates and cuts guidance"]
    for q, f in zip(quantized.predict(texts), clf.predict(texts), strict=True):
        assert sum(q.sentiment_probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert q.score == pytest.approx(f.score, abs=0.1)
        assert q.model_version == f.model_version


def test_shipped_default_model_loads_offline_and_fits_the_size_budget() -> None:
    from models.inference import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
        pytest.skip("no shipped model in models/default")
    assert sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir()) <= 25 * 1024 * 1024
    clf = load()
    preds = clf.predict(["Acme shares plunge after profit warning", "Fed holds rates steady"])
    assert clf.version.startswith("finsent-gpt-") and all(p.model_version == clf.version for p in preds)
    alone = clf.predict(["Fed holds rates steady"])[0]
    assert (alone.topic, alone.sentiment) == (preds[1].topic, preds[1].sentiment)
    assert alone.score == pytest.approx(preds[1].score, abs=1e-5)
