"""Readers for the labeled Twitter Financial News sets (CSV or hub), labeled news, the unlabeled corpus."""

from __future__ import annotations

import csv
import gzip
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from models.labels import SENTIMENT_FROM_DATASET, SENTIMENT_NAMES, TOPIC_NAMES

SENTIMENT_DIR = "twitter_financial_news_sentiment"
TOPIC_DIR = "twitter_financial_news_topic"
HUB_SENTIMENT = "zeroshot/twitter-financial-news-sentiment"
HUB_TOPIC = "zeroshot/twitter-financial-news-topic"
SPLIT_FILES = {
    ("sentiment", "train"): "sent_train.csv",
    ("sentiment", "valid"): "sent_valid.csv",
    ("topic", "train"): "topic_train.csv",
    ("topic", "valid"): "topic_valid.csv",
}

# Headline-like text first: it resembles the labeled tweets most, so a short pre-training run sees it.
UNLABELED_ORDER: tuple[str, ...] = (
    "financial_news_headlines_2017_2020.txt.gz",
    "stocknet_tweets_2014_2016.txt.gz",
    "reuters_news_titles_2007_2016.txt.gz",
    "reuters_headline_lead_2006_2013.txt.gz",
    "reuters21578_headline_lead_1987.txt.gz",
    "press_release_titles_2007_2015.txt.gz",
)


class DataFormatError(ValueError):
    """A labeled file has a missing column, a bad label or an unknown layout."""


@dataclass(frozen=True)
class Example:
    """One labeled text; a label the source set does not provide is ``None``."""

    text: str
    topic: int | None = None
    sentiment: int | None = None
    domain: str = "tweet"  # "tweet" (the Twitter sets), "news" (headlines/) or "weak" (weakly labeled news)


def read_labeled_csv(path: Path) -> list[tuple[str, int]]:
    """Return ``(text, label)`` rows of a ``text,label`` CSV file."""
    rows: list[tuple[str, int]] = []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"text", "label"} <= set(reader.fieldnames):
            raise DataFormatError(f"{path}: expected columns text,label, got {reader.fieldnames}")
        for lineno, row in enumerate(reader, start=2):
            try:
                rows.append((row["text"], int(row["label"])))
            except (TypeError, ValueError) as exc:
                raise DataFormatError(f"{path} row {lineno}: bad label {row.get('label')!r}") from exc
    return rows


def to_examples(rows: list[tuple[str, int]], task: str, source: str = "") -> list[Example]:
    """Return examples of one task from dataset-id rows, mapping sentiment ids to our order."""
    out: list[Example] = []
    for i, (text, label) in enumerate(rows):
        if task == "sentiment":
            if label not in SENTIMENT_FROM_DATASET:
                raise DataFormatError(f"{source} row {i}: sentiment label {label} not in 0..2")
            out.append(Example(text, sentiment=SENTIMENT_FROM_DATASET[label]))
        elif task == "topic":
            if not 0 <= label < len(TOPIC_NAMES):
                raise DataFormatError(f"{source} row {i}: topic label {label} not in 0..19")
            out.append(Example(text, topic=label))
        else:
            raise ValueError(f"unknown task {task!r}")
    return out


def load_split(data_dir: Path, task: str, split: str) -> list[Example]:
    """Return the examples of ``task`` ('sentiment' or 'topic') and ``split`` ('train' or 'valid')."""
    sub = SENTIMENT_DIR if task == "sentiment" else TOPIC_DIR
    path = Path(data_dir) / sub / SPLIT_FILES[(task, split)]
    if not path.is_file():
        raise FileNotFoundError(f"labeled file {path} not found (is the data directory set right?)")
    return to_examples(read_labeled_csv(path), task, str(path))


def load_hub_split(name_or_path: str, split: str) -> list[Example]:
    """Return the examples of a hub dataset (``zeroshot/twitter-financial-news-*``) or a local copy.

    A local CSV file or a directory holding the hub's CSV files is read directly; otherwise the file
    is downloaded from the hub (needs network and ``HF_HUB_OFFLINE`` unset).
    """
    task = "topic" if "topic" in Path(name_or_path).name.lower() else "sentiment"
    filename = SPLIT_FILES[(task, split)]
    local = Path(name_or_path)
    if local.is_file():
        path = local
    elif local.is_dir():
        path = local / filename
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(name_or_path, filename, repo_type="dataset"))
    return to_examples(read_labeled_csv(path), task, str(path))


def load_train_examples(data_dir: Path) -> list[Example]:
    """Return the sentiment and topic train examples together (each with one label)."""
    return load_split(data_dir, "sentiment", "train") + load_split(data_dir, "topic", "train")


def holdout_split(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Return ``(fit, held_out)``: a seeded random split of ``examples`` for early stopping."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_held = round(len(examples) * fraction)
    held = set(order[:n_held])
    return [e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]


NEWS_DIR = "headlines"
# Labeled news that training may use (MIT and ODC-BY); headlines/MANIFEST.md has their provenance.
NEWS_TRAIN_FILES: tuple[str, ...] = ("sentfin.csv", "finentity.csv")
# Evaluation only (non-commercial licence): never trained, tuned or selected on.
NEWS_EVAL_FILE = "sentivent_eval.csv"


def read_news_csv(path: Path) -> list[Example]:
    """Return the sentiment examples of a ``text,label[,entities]`` news file (labels spelled out)."""
    if not path.is_file():
        raise FileNotFoundError(f"labeled news file {path} not found (is the data directory set right?)")
    out: list[Example] = []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"text", "label"} <= set(reader.fieldnames):
            raise DataFormatError(f"{path}: expected columns text,label, got {reader.fieldnames}")
        for lineno, row in enumerate(reader, start=2):
            label = (row["label"] or "").strip().lower()
            if label not in SENTIMENT_NAMES:
                raise DataFormatError(
                    f"{path} row {lineno}: label {row['label']!r} is not one of {SENTIMENT_NAMES}"
                )
            out.append(Example(row["text"], sentiment=SENTIMENT_NAMES.index(label), domain="news"))
    return out


def stratified_split(
    examples: list[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Return ``(fit, held_out)`` with ``fraction`` of each sentiment class held out, chosen by a seeded
    hash of the text: the same rows whatever else is in the file or in which order."""
    by_class: dict[int | None, list[Example]] = {}
    for e in examples:
        by_class.setdefault(e.sentiment, []).append(e)
    held_ids: set[int] = set()
    for rows in by_class.values():
        ranked = sorted(rows, key=lambda e: hashlib.sha1(f"{seed}:{e.text}".encode()).digest())
        held_ids.update(id(e) for e in ranked[: round(len(rows) * fraction)])
    # Both parts keep the file's order.
    return [e for e in examples if id(e) not in held_ids], [e for e in examples if id(e) in held_ids]


def news_splits(
    data_dir: Path, fraction: float = 0.2, seed: int = 0
) -> dict[str, tuple[list[Example], list[Example]]]:
    """Return per training-allowed news file (``sentfin``, ``finentity``) its ``(fit, held_out)`` parts:
    the stratified ``fraction`` is kept for model selection."""
    return {
        name.removesuffix(".csv"): stratified_split(
            read_news_csv(Path(data_dir) / NEWS_DIR / name), fraction, seed
        )
        for name in NEWS_TRAIN_FILES
    }


def load_news(data_dir: Path, split: str, fraction: float = 0.2, seed: int = 0) -> dict[str, list[Example]]:
    """Return per training-allowed news file its ``split``: 'train' (the fit part), 'heldout' or 'all'."""
    parts = news_splits(data_dir, fraction, seed)
    if split == "all":
        return {name: [*fit, *held] for name, (fit, held) in parts.items()}
    return {name: pair[0 if split == "train" else 1] for name, pair in parts.items()}


def load_news_eval(data_dir: Path) -> list[Example]:
    """Return SENTiVENT's news sentences: for measurement only, never for training or selection."""
    return read_news_csv(Path(data_dir) / NEWS_DIR / NEWS_EVAL_FILE)


def unlabeled_files(directory: Path) -> list[Path]:
    """Return the unlabeled ``.txt.gz`` files of ``directory``, headline-like corpora first."""
    present = {p.name: p for p in sorted(Path(directory).glob("*.txt.gz"))}
    if not present:
        raise FileNotFoundError(f"no .txt.gz files in unlabeled directory {directory}")
    ordered = [present.pop(name) for name in UNLABELED_ORDER if name in present]
    return ordered + list(present.values())


def iter_unlabeled(files: list[Path], skip: int = 0) -> Iterator[str]:
    """Yield the non-empty lines of the gzip text ``files`` in order, skipping the first ``skip`` lines."""
    seen = 0
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                seen += 1
                if seen <= skip:
                    continue
                yield line
