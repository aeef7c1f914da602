"""Tests for models.data: CSV readers, label mapping, hub-layout reader, unlabeled stream, held-out split."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.data import (
    SENTIMENT_NAMES,
    TOPIC_NAMES,
    DataFormatError,
    Example,
    holdout_split,
    iter_unlabeled,
    load_hub_split,
    load_news,
    load_news_eval,
    load_split,
    load_train_examples,
    read_news_csv,
    stratified_split,
    unlabeled_files,
)
from tests.fixtures.models import write_csv, write_news_csv
from tests.shared_data import shared_data_dir


def test_sentiment_ids_map_bearish_negative_bullish_positive_neutral_neutral(tmp_path: Path) -> None:
    rows = [("a", 0), ("b", 1), ("c", 2)]
    path = write_csv(tmp_path / "twitter_financial_news_sentiment" / "sent_valid.csv", rows)
    examples = load_split(tmp_path, "sentiment", "valid")
    assert path.is_file()
    assert [SENTIMENT_NAMES[e.sentiment] for e in examples] == ["negative", "positive", "neutral"]
    assert all(e.topic is None for e in examples)


def test_topic_rows_keep_their_ids_and_have_no_sentiment(tiny_data_dir: Path) -> None:
    examples = load_split(tiny_data_dir, "topic", "train")
    assert {TOPIC_NAMES[e.topic] for e in examples} == {"Fed | Central Banks", "Energy | Oil", "Dividend"}
    assert all(e.sentiment is None for e in examples)


def test_bad_label_error_names_file_and_row(tmp_path: Path) -> None:
    write_csv(tmp_path / "twitter_financial_news_topic" / "topic_train.csv", [("fine", 3), ("broken", 20)])
    with pytest.raises(DataFormatError, match=r"topic_train\.csv row 1: topic label 20"):
        load_split(tmp_path, "topic", "train")


def test_missing_column_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "twitter_financial_news_sentiment" / "sent_train.csv"
    path.parent.mkdir(parents=True)
    path.write_text("tweet,label\nx,1\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="expected columns text,label"):
        load_split(tmp_path, "sentiment", "train")


def test_hub_reader_reads_a_local_file_or_dir_of_the_hub_shape(tmp_path: Path) -> None:
    hub_dir = tmp_path / "twitter-financial-news-sentiment"
    write_csv(hub_dir / "sent_train.csv", [("up", 1), ("down", 0)])
    from_dir = load_hub_split(str(hub_dir), "train")
    from_file = load_hub_split(str(hub_dir / "sent_train.csv"), "train")
    assert from_dir == from_file == [Example("up", sentiment=2), Example("down", sentiment=0)]


def test_unlabeled_files_put_headlines_first_and_skip_resumes_the_stream(tiny_data_dir: Path) -> None:
    files = unlabeled_files(tiny_data_dir / "unlabeled")
    assert files[0].name.startswith("financial_news_headlines")
    everything = list(iter_unlabeled(files))
    assert len(everything) == 400
    assert list(iter_unlabeled(files, skip=250)) == everything[250:]


def test_holdout_split_is_seeded_and_disjoint() -> None:
    examples = [Example(f"text {i}", topic=i % 20) for i in range(100)]
    fit, held = holdout_split(examples, 0.1, seed=3)
    assert len(held) == 10 and len(fit) == 90
    assert not {e.text for e in fit} & {e.text for e in held}
    assert holdout_split(examples, 0.1, seed=3) == (fit, held)


def test_real_train_sets_have_the_documented_sizes() -> None:
    data_dir = shared_data_dir()
    examples = load_train_examples(data_dir)
    assert sum(e.sentiment is not None for e in examples) == 9543
    assert sum(e.topic is not None for e in examples) == 16990
    assert len(load_split(data_dir, "sentiment", "valid")) == 2388


def test_news_rows_read_label_names_and_are_marked_news(tmp_path: Path) -> None:
    path = write_news_csv(
        tmp_path / "n.csv", [("Up 5%", "positive"), ("Flat", "Neutral"), ("Down", "negative")]
    )
    examples = read_news_csv(path)
    assert [SENTIMENT_NAMES[e.sentiment] for e in examples] == ["positive", "neutral", "negative"]
    assert {e.domain for e in examples} == {"news"} and all(e.topic is None for e in examples)


def test_a_news_row_with_an_unknown_label_names_file_and_row(tmp_path: Path) -> None:
    path = write_news_csv(tmp_path / "n.csv", [("ok", "positive"), ("bad", "bullish")])
    with pytest.raises(DataFormatError, match=r"n.csv row 3: label 'bullish'"):
        read_news_csv(path)


def test_stratified_split_holds_out_each_class_by_text_not_by_position() -> None:
    rows = [Example(f"text {i}", sentiment=i % 3, domain="news") for i in range(300)]
    fit, held = stratified_split(rows, 0.2, seed=0)
    assert len(held) == 60 and {e.sentiment for e in held} == {0, 1, 2}
    assert all(sum(e.sentiment == c for e in held) == 20 for c in range(3))
    assert not {e.text for e in fit} & {e.text for e in held}
    # The same rows are held out whatever the file's order, or other rows beside them.
    _, held_reversed = stratified_split(rows[::-1], 0.2, seed=0)
    assert {e.text for e in held_reversed} == {e.text for e in held}
    _, other_seed = stratified_split(rows, 0.2, seed=1)
    assert {e.text for e in other_seed} != {e.text for e in held}


def test_news_splits_partition_each_training_file(tiny_data_dir: Path) -> None:
    fit, held, every = (load_news(tiny_data_dir, split) for split in ("train", "heldout", "all"))
    assert set(every) == {"sentfin", "finentity"}
    for name in every:
        assert sorted(e.text for e in fit[name] + held[name]) == sorted(e.text for e in every[name])
    # 20 % of each class: 10 rows a class -> 2; 4 rows a class -> 1.
    assert (len(held["sentfin"]), len(held["finentity"])) == (6, 3)


def test_real_news_sets_have_the_documented_sizes() -> None:
    data = shared_data_dir("headlines").parent
    every = load_news(data, "all")
    assert (len(every["sentfin"]), len(every["finentity"]), len(load_news_eval(data))) == (9458, 841, 4219)
    held = load_news(data, "heldout")
    assert (len(held["sentfin"]), len(held["finentity"])) == (1892, 167)
