"""The training and hold-out sets of a recipe that reads news: tweets, labeled news and weak labels."""

from __future__ import annotations

import gzip
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.data import Example, holdout_split, load_train_examples, news_splits
from models.labels import SENTIMENT_NAMES
from models.training.recipe import Recipe
from models.training.weak import combine, finance_lexicon, source_quality, split_lead, votes_for

# (texts) -> sentiment probabilities (N, 3) in SENTIMENT_NAMES order: the classifier that votes.
SentimentProbs = Callable[[list[str]], np.ndarray]


@dataclass
class TrainingSets:
    """What fine-tuning, calibration and the lexical part learn from (``fit``) and select on (``held``)."""

    fit: list[Example]
    held: list[Example]
    summary: dict


def sample_lines(files: list[Path], n: int, seed: int) -> list[str]:
    """Return about ``n`` lines drawn evenly over ``files`` (seeded); 'headline. lead' lines come split."""
    rng = random.Random(seed)
    per_file = n // max(1, len(files))
    out: list[str] = []
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            lines = [line.strip() for line in fh if line.strip()]
        for line in rng.sample(lines, min(per_file, len(lines))):
            out.extend(split_lead(line))
    return out


def weak_examples(
    texts: list[str],
    probs: np.ndarray | None,
    recipe: Recipe,
) -> tuple[list[Example], Counter[int]]:
    """Return the weakly labeled examples of ``texts`` (at most ``weak_per_class`` per class, seeded) and
    how many lines each class had before the cap."""
    spec = recipe.news
    votes = votes_for(texts, probs, finance_lexicon(), spec.lexicon_threshold, spec.model_confidence)
    by_class: dict[int, list[str]] = {}
    for text, vote in zip(texts, votes, strict=True):
        label = combine(vote)
        if label is not None:
            by_class.setdefault(label, []).append(text)
    rng = random.Random(recipe.seed)
    out: list[Example] = []
    for label, rows in sorted(by_class.items()):
        keep = rng.sample(rows, min(spec.weak_per_class, len(rows)))
        out.extend(Example(t, sentiment=label, domain="weak") for t in keep)
    rng.shuffle(out)
    return out, Counter({k: len(v) for k, v in by_class.items()})


def training_sets(
    recipe: Recipe,
    data_dir: Path,
    unlabeled_dir: Path | None,
    sentiment_probs: SentimentProbs | None,
    log: Callable[[str], None] = print,
) -> TrainingSets:
    """Return the fit and hold-out sets of ``recipe``: the tweets' seeded hold-out as always, plus (news
    recipes) each news file's stratified hold-out; labeled news and weak labels join the fit set only.

    ``sentiment_probs`` (the base classifier) casts the model's vote on the weak lines; without it only
    the rules and the lexicon vote, and no line is labeled neutral.
    """
    tweets = load_train_examples(data_dir)
    fit, held = holdout_split(tweets, recipe.finetune.holdout_fraction, recipe.seed)
    spec = recipe.news
    summary: dict = {}
    parts = news_splits(data_dir, spec.holdout_fraction, recipe.seed)
    news_held = [e for _, rows in parts.values() for e in rows]
    if spec.labeled:
        for name, (rows, _) in parts.items():
            fit.extend(rows)
            summary[name] = {"fit": len(rows)}
    held.extend(news_held)
    summary["heldout"] = {"tweet": len(held) - len(news_held), "news": len(news_held)}
    if spec.weak_lines > 0:
        if unlabeled_dir is None:
            raise ValueError("news.weak_lines needs an unlabeled-text directory")
        files = [Path(unlabeled_dir) / name for name in spec.weak_files]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"news.weak_files not found: {missing}")
        texts = sample_lines(files, spec.weak_lines, recipe.seed)
        log(f"weak labels: voting on {len(texts):,} unlabeled news lines")
        probs = sentiment_probs(texts) if sentiment_probs is not None else None
        weak, before_cap = weak_examples(texts, probs, recipe)
        fit.extend(weak)
        # How good each voter is, measured on the held-out labeled news (never on evaluation data).
        held_probs = sentiment_probs([e.text for e in news_held]) if sentiment_probs is not None else None
        quality = source_quality(
            votes_for(
                [e.text for e in news_held],
                held_probs,
                finance_lexicon(),
                spec.lexicon_threshold,
                spec.model_confidence,
            ),
            [e.sentiment for e in news_held if e.sentiment is not None],
        )
        kept = Counter(e.sentiment for e in weak if e.sentiment is not None)  # every weak example has one
        summary["weak"] = {
            "lines": len(texts),
            "labeled": {SENTIMENT_NAMES[k]: v for k, v in sorted(before_cap.items())},
            "kept": {SENTIMENT_NAMES[k]: v for k, v in sorted(kept.items())},
            "quality_on_news_heldout": quality,
        }
        log(f"weak labels: {summary['weak']}")
    return TrainingSets(fit, held, summary)
