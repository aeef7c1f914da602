"""Evaluation on the valid splits: accuracy, macro/weighted F1, confusion, calibration, and a baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from models.data import NEWS_DIR, NEWS_EVAL_FILE, Example, load_news_eval, load_split, news_splits
from models.inference import Classifier
from models.labels import SENTIMENT_NAMES, TOPIC_NAMES
from models.tokenizer import clean_text

TASKS: tuple[str, ...] = ("sentiment", "topic")
# The news hold-outs (fraction, seed): the ones models/recipes/news.yaml selects on.
NEWS_HOLDOUT: tuple[float, int] = (0.2, 0)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Return the ECE: the mean |accuracy - confidence| over equal-width confidence bins, weighted by size."""
    if len(labels) == 0:
        return 0.0
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Return a reliability diagram's points: per equal-width bin of the top probability (non-empty bins),
    its mean confidence, the accuracy of those predictions and how many there are. A calibrated model's
    points lie on the diagonal: of the calls made at 80 % confidence, 80 % are right."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    points = []
    for lo, hi in pairwise(np.linspace(0.0, 1.0, n_bins + 1)):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            points.append(
                {
                    "confidence": float(conf[in_bin].mean()),
                    "accuracy": float(correct[in_bin].mean()),
                    "n": int(in_bin.sum()),
                }
            )
    return points


def task_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float | int]:
    """Return accuracy, macro-F1, weighted-F1, ECE and n of predicted probabilities against labels."""
    pred = probs.argmax(axis=1)
    return {
        "accuracy": float(accuracy_score(labels, pred)),
        "macro_f1": float(f1_score(labels, pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(labels, pred, average="weighted", zero_division=0)),
        "ece": expected_calibration_error(probs, labels),
        "n": len(labels),
    }


def per_class(labels: np.ndarray, probs: np.ndarray, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Return precision, recall and support of each class (recall of ``negative`` is what alerts live on)."""
    ids = list(range(len(names)))
    precision, recall, _, support = precision_recall_fscore_support(
        labels, probs.argmax(1), labels=ids, zero_division=0
    )
    return {
        name: {"precision": float(p), "recall": float(r), "n": int(n)}
        for name, p, r, n in zip(names, precision, recall, support, strict=True)
    }


def labels_of(examples: list[Example], task: str) -> np.ndarray:
    """Return the label ids of ``task`` for ``examples`` (all of which carry that label)."""
    return np.array([e.sentiment if task == "sentiment" else e.topic for e in examples], dtype=np.int64)


def tfidf_vectorizers() -> list[TfidfVectorizer]:
    """Return unfitted word 1-2-gram and character 2-5-gram TF-IDF vectorizers (the baseline's features).

    Words alone leave ~0.015 sentiment weighted-F1 on the table (0.828 vs 0.842 on valid); a baseline
    that flatters the model would hide that, so the baseline and the distillation teacher share these.
    """
    return [
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    ]


def baseline_probabilities(train: list[Example], test: list[Example], task: str, seed: int = 0) -> np.ndarray:
    """Return test class probabilities of word + char TF-IDF and logistic regression fit on ``train``."""
    vectorizers = tfidf_vectorizers()
    train_text = [clean_text(e.text) for e in train]
    test_text = [clean_text(e.text) for e in test]
    x_train = hstack([v.fit_transform(train_text) for v in vectorizers]).tocsr()
    x_test = hstack([v.transform(test_text) for v in vectorizers]).tocsr()
    clf = LogisticRegression(C=10.0, max_iter=3000, random_state=seed)
    clf.fit(x_train, labels_of(train, task))
    n_classes = len(SENTIMENT_NAMES if task == "sentiment" else TOPIC_NAMES)
    probs = np.zeros((len(test), n_classes))
    probs[:, clf.classes_] = clf.predict_proba(x_test)
    return probs


def selection_scores(examples: list[Example], topic_p: np.ndarray, sent_p: np.ndarray) -> dict[str, float]:
    """Return topic accuracy, sentiment weighted-F1 and their mean (the selection score) of row-aligned
    probabilities for ``examples``, each scored on the task it is labeled for.

    With several domains (tweets and news) in ``examples``, the sentiment number is the mean of each
    domain's weighted-F1, so the larger set does not drown the other; each is reported too.
    """
    t_idx = [i for i, e in enumerate(examples) if e.topic is not None]
    topic_y = labels_of([examples[i] for i in t_idx], "topic")
    t_acc = float(np.mean(topic_p[t_idx].argmax(1) == topic_y)) if t_idx else 0.0
    by_domain: dict[str, float] = {}
    for domain in sorted({e.domain for e in examples if e.sentiment is not None}):
        s_idx = [i for i, e in enumerate(examples) if e.sentiment is not None and e.domain == domain]
        y = [examples[i].sentiment for i in s_idx]
        by_domain[domain] = float(f1_score(y, sent_p[s_idx].argmax(1), average="weighted"))
    s_f1 = float(np.mean(list(by_domain.values()))) if by_domain else 0.0
    out = {"topic_accuracy": t_acc, "sentiment_weighted_f1": s_f1, "score": (t_acc + s_f1) / 2}
    if len(by_domain) > 1:
        out.update({f"sentiment_weighted_f1_{d}": v for d, v in by_domain.items()})
    return out


# The number each task is judged by in the model issue.
HEADLINE = {"sentiment": "weighted_f1", "topic": "accuracy"}


def paired_bootstrap(
    labels: np.ndarray, model: np.ndarray, baseline: np.ndarray, metric: str, n: int = 1000, seed: int = 0
) -> dict[str, float | str]:
    """Return the model-minus-baseline gap in ``metric`` with a 95 % paired-bootstrap interval.

    Both predictions are scored on the same resampled examples, so the interval reflects how much of
    the gap one valid split can vouch for; ``p_no_gain`` is the share of resamples where the model is
    not ahead.
    """

    def score(y: np.ndarray, pred: np.ndarray) -> float:
        if metric == "accuracy":
            return float(np.mean(y == pred))
        return float(f1_score(y, pred, average=metric.removesuffix("_f1"), zero_division=0))

    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(n):
        idx = rng.integers(0, len(labels), len(labels))
        gaps.append(score(labels[idx], model[idx]) - score(labels[idx], baseline[idx]))
    low, high = np.percentile(gaps, [2.5, 97.5])
    return {
        "metric": metric,
        "gap": score(labels, model) - score(labels, baseline),
        "ci95_low": float(low),
        "ci95_high": float(high),
        "p_no_gain": float(np.mean(np.array(gaps) <= 0)),
    }


@dataclass
class EvalReport:
    """The ``finsent eval --json`` object plus confusion matrices (rows: true, columns: predicted)."""

    summary: dict
    confusion: dict[str, list[list[int]]] = field(default_factory=dict)
    # Per task, with a baseline: the headline metric's model-minus-baseline gap and its bootstrap interval.
    gaps: dict[str, dict[str, float | str]] = field(default_factory=dict)
    # Per task and news set: reliability diagram points (``reliability_bins``).
    reliability: dict[str, list[dict[str, float]]] = field(default_factory=dict)


def evaluate(
    classifier: Classifier, data_dir: Path, baseline: bool = True, batch_size: int = 64
) -> EvalReport:
    """Return the classifier's metrics on both valid splits and, optionally, the TF-IDF baseline's."""
    summary: dict = {}
    confusion: dict[str, list[list[int]]] = {}
    reliability: dict[str, list[dict[str, float]]] = {}
    base: dict = {}
    gaps: dict[str, dict[str, float | str]] = {}
    gpt_only: dict = {}
    for task in TASKS:
        valid = load_split(data_dir, task, "valid")
        y = labels_of(valid, task)
        which = 0 if task == "topic" else 1  # Classifier.probabilities returns (topic, sentiment)
        texts = [e.text for e in valid]
        probs = classifier.probabilities(texts, batch_size)[which]
        summary[task] = task_metrics(y, probs)
        if classifier.bundle.lexical is not None and classifier.use_lexical:
            # The model mixes in a lexical part: report the GPT alone too, so the mix's share is visible.
            gpt_only[task] = task_metrics(
                y, classifier.probabilities(texts, batch_size, use_lexical=False)[which]
            )
        confusion[task] = confusion_matrix(y, probs.argmax(1), labels=list(range(probs.shape[1]))).tolist()
        reliability[task] = reliability_bins(probs, y)
        if baseline:
            train = load_split(data_dir, task, "train")
            base_probs = baseline_probabilities(train, valid, task)
            base[task] = task_metrics(y, base_probs)
            gaps[task] = paired_bootstrap(y, probs.argmax(1), base_probs.argmax(1), HEADLINE[task])
    if baseline:
        summary["baseline"] = base
    if gpt_only:
        summary["gpt_only"] = gpt_only
    if (Path(data_dir) / NEWS_DIR / NEWS_EVAL_FILE).is_file():
        summary["news"] = evaluate_news(classifier, data_dir, confusion, baseline, batch_size, reliability)
    summary["model_version"] = classifier.version
    return EvalReport(summary, confusion, gaps, reliability)


def evaluate_news(
    classifier: Classifier,
    data_dir: Path,
    confusion: dict[str, list[list[int]]],
    baseline: bool = True,
    batch_size: int = 64,
    reliability: dict[str, list[dict[str, float]]] | None = None,
) -> dict:
    """Return sentiment metrics, per-class precision/recall and the baseline on each news set; add each
    set's confusion matrix to ``confusion`` (and its reliability points to ``reliability``) as
    ``news/<set>``.

    The baseline is the TF-IDF model fit on the tweets plus the fit part of the labeled news: what
    the labels alone give, on the same rows.
    """
    names = SENTIMENT_NAMES
    # SENTiVENT (evaluation only) and the hold-outs of the training-allowed files: the rows a news
    # recipe selects on, never trained on.
    parts = news_splits(data_dir, *NEWS_HOLDOUT)
    sets = {"sentivent_eval": load_news_eval(data_dir)} | {
        f"{n}_heldout": held for n, (_, held) in parts.items()
    }
    base_train: list[Example] = []
    if baseline:
        base_train = load_split(data_dir, "sentiment", "train") + [
            e for fit, _ in parts.values() for e in fit
        ]
    out: dict = {}
    lexical = classifier.bundle.lexical is not None and classifier.use_lexical
    for name, rows in sets.items():
        y = labels_of(rows, "sentiment")
        texts = [e.text for e in rows]
        probs = classifier.probabilities(texts, batch_size)[1]
        entry: dict = {**task_metrics(y, probs), "per_class": per_class(y, probs, names)}
        if lexical:
            gpt = classifier.probabilities(texts, batch_size, use_lexical=False)[1]
            entry["gpt_only"] = {**task_metrics(y, gpt), "per_class": per_class(y, gpt, names)}
        if baseline:
            base_probs = baseline_probabilities(base_train, rows, "sentiment")
            entry["baseline"] = {**task_metrics(y, base_probs), "per_class": per_class(y, base_probs, names)}
        confusion[f"news/{name}"] = confusion_matrix(
            y, probs.argmax(1), labels=list(range(len(names)))
        ).tolist()
        if reliability is not None:
            reliability[f"news/{name}"] = reliability_bins(probs, y)
        out[name] = entry
    return out


def format_report(report: EvalReport, topics: tuple[str, ...], sentiments: tuple[str, ...]) -> str:
    """Return a human-readable table of the metrics and the confusion matrices."""
    lines = [f"model {report.summary['model_version']}"]
    keys = ("accuracy", "macro_f1", "weighted_f1", "ece", "n")
    lines.append(f"{'':22}" + "".join(f"{k:>12}" for k in keys))
    for task in TASKS:
        rows = [(task, report.summary[task])]
        if "gpt_only" in report.summary:
            rows.append((f"{task} (GPT alone)", report.summary["gpt_only"][task]))
        if "baseline" in report.summary:
            rows.append((f"{task} (tfidf+lr)", report.summary["baseline"][task]))
        for name, m in rows:
            cells = (f"{m[k]:>12.4f}" if k != "n" else f"{m[k]:>12}" for k in keys)
            lines.append(f"{name:22}" + "".join(cells))
    for task, gap in report.gaps.items():
        interval = f"{gap['ci95_low']:+.4f} .. {gap['ci95_high']:+.4f}"
        lines.append(
            f"{task} {gap['metric']}: model - baseline = {gap['gap']:+.4f} (95% paired-bootstrap interval "
            f"{interval}; no gain in {gap['p_no_gain']:.0%} of resamples)"
        )
    news = report.summary.get("news", {})
    if news:
        lines.append("\nnews sentiment (tweets are above; negative recall is what alerts live on):")
        lines.append(f"{'':34}" + "".join(f"{k:>12}" for k in ("weighted_f1", "macro_f1", "neg_recall", "n")))
        for name, entry in news.items():
            for label, m in (
                ("", entry),
                (" (GPT alone)", entry.get("gpt_only")),
                (" (tfidf+lr)", entry.get("baseline")),
            ):
                if m is None:
                    continue
                scores = (m["weighted_f1"], m["macro_f1"], m["per_class"]["negative"]["recall"])
                lines.append(f"{name + label:34}" + "".join(f"{v:>12.4f}" for v in scores) + f"{m['n']:>12}")
    matrices = [("sentiment", sentiments), ("topic", topics)] + [(f"news/{n}", sentiments) for n in news]
    for task, names in matrices:
        lines.append(f"\nconfusion matrix, {task} (rows true, columns predicted):")
        for name, row in zip(names, report.confusion[task], strict=True):
            lines.append(f"  {name[:26]:26}" + "".join(f"{v:>5}" for v in row))
    return "\n".join(lines)
