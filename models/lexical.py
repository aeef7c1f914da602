"""The lexical half of the classifier: word and character n-gram TF-IDF with one linear layer per task.

The 5M-parameter GPT and a TF-IDF model of the same tweets are about equally good at sentiment and err
on different tweets, so the average of their probabilities beats both. This module holds the TF-IDF
part: its vocabularies, IDF weights and per-task weights are saved beside the GPT's in the model
directory, and ``models.inference`` mixes its probabilities with the GPT's by the model's ``share``.

The features are those of the evaluation baseline (``models.evaluate.tfidf_vectorizers``), recomputed
here from the stored vocabularies: scikit-learn's analyzers and TF-IDF formula written out, so a saved
model needs no pickled estimator and inference does not import scikit-learn (~160 MB per process).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from scipy.sparse import csr_matrix, hstack

from models.probs import softmax, tempered
from models.tokenizer import clean_text

WEIGHTS_FILE = "lexical.safetensors"
VOCAB_FILE = "lexical_vocab.json"
# The baseline's two feature blocks: (name, analyzer, n-gram range). Each block is L2-normalised alone.
BLOCKS: tuple[tuple[str, str, tuple[int, int]], ...] = (("word", "word", (1, 2)), ("char", "char_wb", (2, 5)))
# A class absent from the data the regression was fit on gets this logit bias: probability ~0, never argmax.
ABSENT_BIAS = -30.0
# scikit-learn's default token pattern and its char_wb whitespace folding.
_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_SPACES = re.compile(r"\s\s+")


def word_ngrams(text: str, ngrams: tuple[int, int]) -> list[str]:
    """Return the word n-grams of lower-cased ``text`` as scikit-learn's ``analyzer="word"`` makes them."""
    tokens = _TOKEN.findall(text.lower())
    lo, hi = ngrams
    grams = list(tokens) if lo == 1 else []
    for n in range(max(lo, 2), min(hi, len(tokens)) + 1):
        grams += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return grams


def char_wb_ngrams(text: str, ngrams: tuple[int, int]) -> list[str]:
    """Return the character n-grams inside word boundaries (each word padded with a space on both sides)
    of lower-cased ``text``, as scikit-learn's ``analyzer="char_wb"`` makes them."""
    grams = []
    for word in _SPACES.sub(" ", text.lower()).split():
        w = f" {word} "
        for n in range(ngrams[0], ngrams[1] + 1):
            grams += [w[i : i + n] for i in range(max(len(w) - n + 1, 1))]
            if len(w) <= n:  # a short word yields itself once, not once per n
                break
    return grams


ANALYZERS: dict[str, Callable[[str, tuple[int, int]], list[str]]] = {
    "word": word_ngrams,
    "char_wb": char_wb_ngrams,
}


@dataclass
class LexicalModel:
    """TF-IDF features and a linear layer per task; ``share`` is the GPT's weight in the mix."""

    vocabularies: dict[str, list[str]]  # block name -> terms in column order
    idf: np.ndarray  # (n_features,), both blocks in BLOCKS order
    topic_weight: np.ndarray  # (n_topics, n_features)
    topic_bias: np.ndarray  # (n_topics,)
    sentiment_weight: np.ndarray  # (n_sentiments, n_features)
    sentiment_bias: np.ndarray  # (n_sentiments,)
    share: float = 0.5
    temperatures: tuple[float, float] = (1.0, 1.0)  # (topic, sentiment) logit divisors of this part
    # Of the mixed probabilities: an average of two calibrated models is under-confident (T < 1 sharpens).
    mix_temperatures: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        self._index = [{term: i for i, term in enumerate(self.vocabularies[name])} for name, _, _ in BLOCKS]
        bounds = np.cumsum([0, *(len(index) for index in self._index)])
        self._idf = [self.idf[lo:hi].astype(np.float64) for lo, hi in pairwise(bounds)]

    @property
    def n_parameters(self) -> int:
        """Return the number of learned weights (IDF is a statistic of the data, not counted)."""
        parts = (self.topic_weight, self.topic_bias, self.sentiment_weight, self.sentiment_bias)
        return sum(a.size for a in parts)

    def features(self, texts: list[str]) -> csr_matrix:
        """Return the (N, n_features) TF-IDF matrix: sublinear counts times IDF, L2-normalised per block."""
        cleaned = [clean_text(t) for t in texts]
        blocks = []
        for (_, analyzer, ngrams), index, idf in zip(BLOCKS, self._index, self._idf, strict=True):
            indptr: list[int] = [0]
            indices: list[int | None] = []  # never None: out-of-vocabulary n-grams are popped from counts
            tf: list[int] = []
            for text in cleaned:
                counts = Counter(map(index.get, ANALYZERS[analyzer](text, ngrams)))
                counts.pop(None, None)  # n-grams outside the vocabulary
                indices += counts.keys()
                tf += counts.values()
                indptr.append(len(indices))
            cols = np.asarray(indices, dtype=np.int64)
            data = (1.0 + np.log(np.asarray(tf, dtype=np.float64))) * idf[cols]  # sublinear TF x IDF
            x = csr_matrix((data, cols, indptr), shape=(len(cleaned), len(index)))
            norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
            x.data /= np.repeat(np.where(norms > 0, norms, 1.0), np.diff(x.indptr))  # L2 per row
            blocks.append(x)
        return hstack(blocks).tocsr()

    def logits(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(topic logits (N, n_topics), sentiment logits (N, n_sentiments))``, unscaled."""
        x = self.features(texts)
        return x @ self.topic_weight.T + self.topic_bias, x @ self.sentiment_weight.T + self.sentiment_bias

    def probabilities(
        self, texts: list[str], logits: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(topic probs (N, n_topics), sentiment probs (N, n_sentiments))``, temperature-scaled;
        from ``logits`` of ``texts`` when given (so trying temperatures needs one feature pass)."""
        topic, sentiment = self.logits(texts) if logits is None else logits
        return softmax(topic / self.temperatures[0]), softmax(sentiment / self.temperatures[1])

    def mix(
        self, texts: list[str], gpt_topic: np.ndarray, gpt_sentiment: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the GPT's probabilities averaged with this model's, the GPT weighted by ``share``, then
        temperature-scaled by ``mix_temperatures`` (which changes no label)."""
        topic, sentiment = mix_probabilities(
            self.share, (gpt_topic, gpt_sentiment), self.probabilities(texts)
        )
        return tempered(topic, self.mix_temperatures[0]), tempered(sentiment, self.mix_temperatures[1])

    def config(self) -> dict[str, Any]:
        """Return the settings stored under ``"lexical"`` in the model's ``config.json``."""
        return {
            "share": self.share,
            "temperatures": {"topic": self.temperatures[0], "sentiment": self.temperatures[1]},
            "mix_temperatures": {"topic": self.mix_temperatures[0], "sentiment": self.mix_temperatures[1]},
            "blocks": [{"name": n, "analyzer": a, "ngram_range": list(r)} for n, a, r in BLOCKS],
            "features": {name: len(self.vocabularies[name]) for name, _, _ in BLOCKS},
        }

    def save(self, directory: Path) -> None:
        """Write the weights (float16, IDF float32) and the vocabularies into ``directory``."""
        tensors: dict[str, np.ndarray] = {
            "idf": self.idf.astype(np.float32),
            "topic.weight": self.topic_weight.astype(np.float16),
            "topic.bias": self.topic_bias.astype(np.float32),
            "sentiment.weight": self.sentiment_weight.astype(np.float16),
            "sentiment.bias": self.sentiment_bias.astype(np.float32),
        }
        save_file(tensors, str(Path(directory) / WEIGHTS_FILE))
        (Path(directory) / VOCAB_FILE).write_text(
            json.dumps(self.vocabularies, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8"
        )


def mix_probabilities(
    share: float, gpt: tuple[np.ndarray, np.ndarray], lexical: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(topic, sentiment)`` probabilities: the GPT's times ``share`` plus the lexical model's
    times ``1 - share``."""
    topic, sentiment = (share * g + (1 - share) * x for g, x in zip(gpt, lexical, strict=True))
    return topic, sentiment


def load_lexical(directory: Path, config: dict[str, Any]) -> LexicalModel:
    """Return the lexical model saved in ``directory``, given the ``"lexical"`` section of its config."""
    tensors = load_file(str(Path(directory) / WEIGHTS_FILE))
    vocabularies = json.loads((Path(directory) / VOCAB_FILE).read_text(encoding="utf-8"))
    temps, mix_temps = config.get("temperatures", {}), config.get("mix_temperatures", {})
    return LexicalModel(
        vocabularies={name: vocabularies[name] for name, _, _ in BLOCKS},
        idf=tensors["idf"],
        topic_weight=tensors["topic.weight"].astype(np.float32),
        topic_bias=tensors["topic.bias"],
        sentiment_weight=tensors["sentiment.weight"].astype(np.float32),
        sentiment_bias=tensors["sentiment.bias"],
        share=float(config["share"]),
        temperatures=(float(temps.get("topic", 1.0)), float(temps.get("sentiment", 1.0))),
        mix_temperatures=(float(mix_temps.get("topic", 1.0)), float(mix_temps.get("sentiment", 1.0))),
    )


def from_fitted(
    vectorizers: list[Any], topic_lr: Any, sentiment_lr: Any, n_topics: int, n_sentiments: int
) -> LexicalModel:
    """Return a LexicalModel from fitted scikit-learn parts: TF-IDF vectorizers in BLOCKS order (the
    baseline's settings) and one logistic regression per task over their stacked features."""
    for v, (name, analyzer, ngrams) in zip(vectorizers, BLOCKS, strict=True):
        if v.analyzer != analyzer or tuple(v.ngram_range) != ngrams or not v.sublinear_tf:
            raise ValueError(f"vectorizer of block {name!r} is not a sublinear {analyzer} {ngrams} TF-IDF")
    vocabularies = {}
    for v, (name, _, _) in zip(vectorizers, BLOCKS, strict=True):
        terms = [""] * len(v.vocabulary_)
        for term, i in v.vocabulary_.items():
            terms[i] = term
        vocabularies[name] = terms
    idf = np.concatenate([v.idf_ for v in vectorizers]).astype(np.float32)

    def dense(lr: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
        weight = np.zeros((n, idf.size), dtype=np.float32)
        bias = np.full(n, ABSENT_BIAS, dtype=np.float32)
        classes = np.asarray(lr.classes_)
        if len(classes) == 2:  # a binary regression stores one row: the second class's log-odds
            weight[classes[1]], bias[classes[1]] = lr.coef_[0], lr.intercept_[0]
            weight[classes[0]], bias[classes[0]] = 0.0, 0.0
        else:
            weight[classes], bias[classes] = lr.coef_, lr.intercept_
        return weight, bias

    topic_w, topic_b = dense(topic_lr, n_topics)
    sent_w, sent_b = dense(sentiment_lr, n_sentiments)
    return LexicalModel(vocabularies, idf, topic_w, topic_b, sent_w, sent_b)
