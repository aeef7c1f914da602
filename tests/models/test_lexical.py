"""Tests for models.lexical: the TF-IDF part equals scikit-learn's, saves with the GPT and mixes with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import hstack
from sklearn.linear_model import LogisticRegression

from models.evaluate import tfidf_vectorizers
from models.inference import Classifier, load, title_and_lead
from models.lexical import VOCAB_FILE, LexicalModel, from_fitted, mix_probabilities
from models.network import ModelDirError, load_bundle, save_bundle
from models.probs import tempered
from models.tokenizer import clean_text
from tests.fixtures.models import NEGATIVE, NEUTRAL, POSITIVE, TOPICS, tiny_bundle

TEXTS = [*POSITIVE, *NEGATIVE, *NEUTRAL] + [t for t, _ in TOPICS]
SENTIMENT_Y = [2] * len(POSITIVE) + [0] * len(NEGATIVE) + [1] * len(NEUTRAL)
UNSEEN = [
    "Shares of Acme &amp; Co plunge after profit warning https://t.co/x",
    "",
    "日本株が上昇 🚀",
    "Acme profit warning. " + "Shares fell sharply in early trading. " * 2000,
]


def _fitted() -> tuple[list, LogisticRegression, LogisticRegression, LexicalModel]:
    vectorizers = tfidf_vectorizers()
    cleaned = [clean_text(t) for t in TEXTS]
    for v in vectorizers:
        v.fit(cleaned)

    def x(texts: list[str]):
        return hstack([v.transform([clean_text(t) for t in texts]) for v in vectorizers]).tocsr()

    n_sent = len(SENTIMENT_Y)
    sentiment = LogisticRegression(C=10.0, max_iter=2000).fit(x(TEXTS[:n_sent]), SENTIMENT_Y)
    topic = LogisticRegression(C=10.0, max_iter=2000).fit(x(TEXTS[n_sent:]), [y for _, y in TOPICS])
    return vectorizers, topic, sentiment, from_fitted(vectorizers, topic, sentiment, 20, 3)


def test_features_and_probabilities_equal_scikit_learns() -> None:
    vectorizers, topic, sentiment, lexical = _fitted()
    texts = TEXTS + UNSEEN
    expected = hstack([v.transform([clean_text(t) for t in texts]) for v in vectorizers]).toarray()
    assert np.allclose(lexical.features(texts).toarray(), expected, atol=1e-6)
    topic_p, sent_p = lexical.probabilities(texts)
    assert np.allclose(sent_p, sentiment.predict_proba(expected), atol=1e-5)
    # Topics seen by the regression match its probabilities; the others never win.
    assert np.allclose(topic_p[:, topic.classes_], topic.predict_proba(expected), atol=1e-5)
    absent = np.setdiff1d(np.arange(20), topic.classes_)
    assert absent.size and topic_p[:, absent].max() < 1e-9
    assert np.allclose(topic_p.sum(1), 1.0, atol=1e-5) and np.allclose(sent_p.sum(1), 1.0, atol=1e-5)


def test_a_binary_regression_gives_both_classes_their_probabilities() -> None:
    vectorizers, topic, _, _ = _fitted()
    n_pos = len(POSITIVE)
    texts = TEXTS[: n_pos + len(NEGATIVE)]
    x = hstack([v.transform([clean_text(t) for t in texts]) for v in vectorizers]).tocsr()
    binary = LogisticRegression(C=10.0).fit(x, [2] * n_pos + [0] * len(NEGATIVE))
    _, sent_p = from_fitted(vectorizers, topic, binary, 20, 3).probabilities(texts)
    assert np.allclose(sent_p[:, [0, 2]], binary.predict_proba(x), atol=1e-5)
    assert sent_p[:, 1].max() < 1e-9


def test_temperature_softens_and_the_mix_weights_the_gpt_by_its_share() -> None:
    *_, lexical = _fitted()
    _, sharp = lexical.probabilities(UNSEEN)
    lexical.temperatures = (1.0, 4.0)
    _, soft = lexical.probabilities(UNSEEN)
    assert (soft.max(1) <= sharp.max(1) + 1e-6).all() and (soft.argmax(1) == sharp.argmax(1)).all()
    gpt = (np.full((1, 20), 0.05), np.array([[1.0, 0.0, 0.0]]))
    lex = (np.eye(20)[:1], np.array([[0.0, 0.0, 1.0]]))
    topic, sentiment = mix_probabilities(0.25, gpt, lex)
    assert np.allclose(sentiment, [[0.25, 0.0, 0.75]]) and np.isclose(topic[0, 0], 0.25 * 0.05 + 0.75)


def test_a_bundle_with_a_lexical_part_saves_loads_and_mixes(tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    *_, lexical = _fitted()
    lexical.share, lexical.temperatures, lexical.mix_temperatures = 0.3, (1.2, 1.7), (0.9, 0.8)
    bundle = tiny_bundle(tiny_gpt2_dir)
    gpt_only = Classifier(bundle, device="cpu").predict(TEXTS + UNSEEN)
    bundle.lexical = lexical
    save_bundle(bundle, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text(encoding="utf-8"))
    assert config["lexical"]["share"] == 0.3 and config["lexical"]["features"] == {
        name: len(terms) for name, terms in lexical.vocabularies.items()
    }
    loaded = load_bundle(tmp_path / "m")
    assert loaded.lexical is not None and loaded.lexical.temperatures == (1.2, 1.7)
    assert loaded.lexical.mix_temperatures == (0.9, 0.8)
    # Stored in float16: probabilities move a little, labels do not.
    before, after = lexical.probabilities(TEXTS), loaded.lexical.probabilities(TEXTS)
    assert np.allclose(before[1], after[1], atol=2e-3) and (before[1].argmax(1) == after[1].argmax(1)).all()
    mixed = Classifier(loaded, device="cpu").predict(TEXTS + UNSEEN)
    alone = load(tmp_path / "m", device="cpu", use_lexical=False).predict(TEXTS + UNSEEN)
    for g, a, m, text in zip(gpt_only, alone, mixed, TEXTS + UNSEEN, strict=True):
        assert np.allclose(list(g.sentiment_probs.values()), list(a.sentiment_probs.values()), atol=1e-3)
        _, lex_sent = loaded.lexical.probabilities([title_and_lead(text)])  # what the GPT reads, too
        mixed = 0.3 * np.array(list(a.sentiment_probs.values())) + 0.7 * lex_sent[0]
        expected = tempered(mixed[None, :], 0.8)[0]  # the mix's own temperature: sharper, same label
        assert expected.argmax() == mixed.argmax() and expected.max() >= mixed.max() - 1e-6
        assert np.allclose(list(m.sentiment_probs.values()), expected, atol=1e-5)
        assert m.score == pytest.approx(expected[2] - expected[0], abs=1e-5)


def test_a_model_dir_missing_its_vocabulary_is_refused(tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    bundle = tiny_bundle(tiny_gpt2_dir)
    bundle.lexical = _fitted()[3]
    save_bundle(bundle, tmp_path / "m")
    (tmp_path / "m" / VOCAB_FILE).unlink()
    with pytest.raises(ModelDirError, match=VOCAB_FILE):
        load_bundle(tmp_path / "m")
