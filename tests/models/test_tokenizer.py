"""Tests for models.tokenizer: training, round trips, clean-up and classification encoding."""

from __future__ import annotations

from pathlib import Path

from models.tokenizer import (
    EOS,
    clean_text,
    encode_for_classification,
    load_tokenizer,
    save_tokenizer,
    special_ids,
    train_tokenizer,
)

CORPUS = [
    "$ACME shares soar after record profit",
    "Globex misses estimates and cuts guidance",
    "Fed raises rates by a quarter point",
    "Oil prices jump on supply cuts",
] * 10


def test_decode_of_encode_gives_back_the_text_even_unseen_and_non_ascii() -> None:
    tok = train_tokenizer(CORPUS, vocab_size=300, min_frequency=1)
    for text in ["Globex misses estimates", "Zürich bank 株価 📉 +5%", "brand new words entirely"]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids).strip() == text


def test_frequent_words_become_single_tokens() -> None:
    tok = train_tokenizer(CORPUS, vocab_size=1000, min_frequency=1)
    assert tok.encode("estimates", add_special_tokens=False).tokens == ["Ġestimates"]


def test_saved_tokenizer_loads_with_identical_ids(tmp_path: Path) -> None:
    tok = train_tokenizer(CORPUS, vocab_size=300, min_frequency=1)
    save_tokenizer(tok, tmp_path)
    again = load_tokenizer(tmp_path)
    text = "Oil prices soar on Fed cuts"
    assert again.encode(text).ids == tok.encode(text).ids
    assert special_ids(again) == special_ids(tok)


def test_clean_text_drops_urls_and_entities() -> None:
    assert clean_text("Buy &amp; hold  https://t.co/abc123 now\n") == "Buy & hold now"


def test_classification_encoding_truncates_and_ends_with_end_of_text() -> None:
    tok = train_tokenizer(CORPUS, vocab_size=300, min_frequency=1)
    eos = tok.token_to_id(EOS)
    short, long, empty = encode_for_classification(tok, ["Oil prices", "word " * 100, ""], max_length=16)
    assert short[-1] == eos and len(short) < 16
    assert len(long) == 16 and long[-1] == eos
    assert empty == [eos]
